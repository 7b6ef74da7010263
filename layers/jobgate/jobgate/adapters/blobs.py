"""S3 adapter: logs, inputs and outputs, and presigned URLs so bytes never pass through a Lambda."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from jobgate.errors import BlobError, NotFound, ValidationFailed

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedMultipartUploadTypeDef


# The worker forks right after staging: no transfer threads may be alive (or half-held) then.
_NO_THREADS = TransferConfig(use_threads=False)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class ObjectInfo(BaseModel):
    size: int
    content_type: str | None
    etag: str | None
    head: bytes


def url_origin(url: str) -> str:
    """A URL's origin, as a Content-Security-Policy names it: scheme://host[:port]."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class BlobStore:
    def __init__(self, client: S3Client, bucket: str) -> None:
        self._s3 = client
        self.bucket = bucket
        self._url_origins: list[str] | None = None

    def upload_file(self, path: Path, key: str, media_type: str) -> None:
        try:
            self._s3.upload_file(
                str(path), self.bucket, key, ExtraArgs={"ContentType": media_type}, Config=_NO_THREADS
            )
        except (ClientError, BotoCoreError) as exc:
            raise BlobError(f"Could not store {key}: {exc}") from exc

    def download_file(self, key: str, path: Path) -> None:
        self._transfer_down(key, path)

    def _transfer_down(self, key: str, path: Path) -> None:
        try:
            self._s3.download_file(self.bucket, key, str(path), Config=_NO_THREADS)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey"):
                raise NotFound(f"No object {key}.") from exc
            raise BlobError(f"Could not fetch {key}: {exc}") from exc
        except BotoCoreError as exc:
            raise BlobError(f"Could not fetch {key}: {exc}") from exc

    def fetch(self, key: str, path: Path, size: int) -> None:
        """Download an object whose size is known: one GET when it is small (download_file would ask
        its size first, a HEAD), a parallel ranged download past the multipart threshold."""
        if size > _NO_THREADS.multipart_threshold:
            self._transfer_down(key, path)
            return
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
            with path.open("wb") as out:
                for chunk in body.iter_chunks(1 << 20):
                    out.write(chunk)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey"):
                raise NotFound(f"No object {key}.") from exc
            raise BlobError(f"Could not fetch {key}: {exc}") from exc
        except BotoCoreError as exc:
            raise BlobError(f"Could not fetch {key}: {exc}") from exc

    def put_bytes(self, key: str, data: bytes, media_type: str) -> None:
        try:
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=media_type)
        except (ClientError, BotoCoreError) as exc:
            raise BlobError(f"Could not store {key}: {exc}") from exc

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey"):
                raise NotFound(f"No object {key}.") from exc
            raise BlobError(f"Could not fetch {key}: {exc}") from exc
        except BotoCoreError as exc:
            raise BlobError(f"Could not fetch {key}: {exc}") from exc

    def size(self, key: str) -> int | None:
        """The object's size, or None when it does not exist."""
        try:
            return int(self._s3.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise BlobError(f"Could not read {key}: {exc}") from exc
        except BotoCoreError as exc:
            raise BlobError(f"Could not read {key}: {exc}") from exc

    def info(self, key: str, head_bytes: int = 64) -> ObjectInfo | None:
        """Size, stored content type, ETag and the first bytes of an object; None when it is absent."""
        try:
            got = self._s3.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{head_bytes - 1}")
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            if _code(exc) == "InvalidRange":  # an empty object
                return ObjectInfo(size=0, content_type=None, etag=None, head=b"")
            raise BlobError(f"Could not read {key}: {exc}") from exc
        except BotoCoreError as exc:
            raise BlobError(f"Could not read {key}: {exc}") from exc
        total = got.get("ContentRange", "").rpartition("/")[2]
        size = int(total) if total.isdigit() else int(got.get("ContentLength", 0))
        return ObjectInfo(
            size=size,
            content_type=got.get("ContentType"),
            etag=got.get("ETag", "").strip('"') or None,
            head=got["Body"].read(),
        )

    def presign_post(self, key: str, *, media_type: str, size: int, expires_s: int) -> dict[str, Any]:
        """A presigned POST whose policy pins the key, the content type and the exact size."""
        # boto3 adds the bucket and the exact key to the policy itself.
        conditions: list[Any] = [{"Content-Type": media_type}, ["content-length-range", size, size]]
        try:
            return self._s3.generate_presigned_post(
                self.bucket,
                key,
                Fields={"Content-Type": media_type},
                Conditions=conditions,
                ExpiresIn=expires_s,
            )
        except (ClientError, BotoCoreError) as exc:
            raise BlobError(f"Could not sign an upload to {key}: {exc}") from exc

    def start_multipart(self, key: str, *, media_type: str) -> str:
        try:
            return self._s3.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=media_type)[
                "UploadId"
            ]
        except (ClientError, BotoCoreError) as exc:
            raise BlobError(f"Could not start a multipart upload to {key}: {exc}") from exc

    def presign_part(self, key: str, *, upload_id: str, part_number: int, expires_s: int) -> str:
        params = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id, "PartNumber": part_number}
        try:
            return self._s3.generate_presigned_url("upload_part", Params=params, ExpiresIn=expires_s)
        except (ClientError, BotoCoreError) as exc:
            raise BlobError(f"Could not sign part {part_number} of {key}: {exc}") from exc

    def complete_multipart(self, key: str, *, upload_id: str, parts: list[tuple[int, str]]) -> None:
        body: CompletedMultipartUploadTypeDef = {
            "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in parts]
        }
        try:
            self._s3.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload=body
            )
        except ClientError as exc:
            if _code(exc) in ("InvalidPart", "InvalidPartOrder", "NoSuchUpload", "EntityTooSmall"):
                raise ValidationFailed(
                    f"The parts do not complete the upload: {_code(exc)}.",
                    [{"loc": ["body", "parts"], "msg": _code(exc)}],
                ) from exc
            raise BlobError(f"Could not complete the upload of {key}: {exc}") from exc
        except BotoCoreError as exc:
            raise BlobError(f"Could not complete the upload of {key}: {exc}") from exc

    def presign_get(self, key: str, *, expires_s: int, filename: str | None = None) -> str:
        params: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        try:
            return self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s)
        except (ClientError, BotoCoreError) as exc:
            raise BlobError(f"Could not sign {key}: {exc}") from exc

    def url_origins(self) -> list[str]:
        """The origins (scheme://host[:port]) of this bucket's presigned URLs, uploads' and downloads'
        (boto3 may spell the two differently): what a page's Content-Security-Policy must allow. Signing
        is local: no call is made, and it is done once per container."""
        if self._url_origins is None:
            post = self.presign_post(
                "origin-probe", media_type="application/octet-stream", size=1, expires_s=60
            )
            urls = [post["url"], self.presign_get("origin-probe", expires_s=60)]
            self._url_origins = list(dict.fromkeys(url_origin(url) for url in urls))
        return self._url_origins

    def ping(self) -> None:
        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise BlobError(f"Bucket unreachable: {exc}") from exc

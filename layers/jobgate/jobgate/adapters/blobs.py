"""S3 adapter: logs, inputs and outputs, and presigned URLs so bytes never pass through a Lambda."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from jobgate.errors import BlobError, NotFound

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class BlobStore:
    def __init__(self, client: S3Client, bucket: str) -> None:
        self._s3 = client
        self.bucket = bucket

    def upload_file(self, path: Path, key: str, media_type: str) -> None:
        try:
            self._s3.upload_file(str(path), self.bucket, key, ExtraArgs={"ContentType": media_type})
        except (ClientError, BotoCoreError) as exc:
            raise BlobError(f"Could not store {key}: {exc}") from exc

    def download_file(self, key: str, path: Path) -> None:
        try:
            self._s3.download_file(self.bucket, key, str(path))
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

    def presign_get(self, key: str, *, expires_s: int, filename: str | None = None) -> str:
        params: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        try:
            return self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s)
        except (ClientError, BotoCoreError) as exc:
            raise BlobError(f"Could not sign {key}: {exc}") from exc

    def ping(self) -> None:
        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise BlobError(f"Bucket unreachable: {exc}") from exc

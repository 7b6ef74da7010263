"""Assets: presigned uploads straight to S3, and the check that settles each one."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from ulid import ULID

from jobgate import observability as obs
from jobgate.adapters.blobs import BlobStore, ObjectInfo
from jobgate.adapters.dynamo import JobStore
from jobgate.errors import Conflict, Gone
from jobgate.media import media_type_for_name, same_kind, sniff_media_type
from jobgate.models import Asset, AssetPage, AssetStatus, utcnow

_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
MAX_PARTS = 10_000
# Labels: a few short `key: value` pairs a client files its assets under (GET /v1/assets?label=k:v).
MAX_LABELS = 10
LABEL_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
MAX_LABEL_VALUE = 128


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    """At most MAX_LABELS; keys lower-case letters, digits, `.`, `_`, `-` (up to 63); values up to
    MAX_LABEL_VALUE characters with no control characters."""
    if len(labels) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels")
    for key, value in labels.items():
        if not LABEL_KEY.match(key):
            raise ValueError(
                f"label key {key!r} must be 1-63 lower-case letters, digits, '.', '_' or '-', starting "
                "with a letter or digit"
            )
        if len(value) > MAX_LABEL_VALUE or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError(
                f"label {key!r}: a value is at most {MAX_LABEL_VALUE} characters, none a control one"
            )
    return labels


def parse_label_filter(text: str) -> tuple[str, str]:
    """`key:value` as GET /v1/assets?label= takes it."""
    key, sep, value = text.partition(":")
    key, value = key.strip(), value.strip()
    if not sep or not LABEL_KEY.match(key) or len(value) > MAX_LABEL_VALUE:
        raise ValueError("a label filter is key:value")
    return key, value


# S3's largest object: 10,000 parts of at most 5 GiB each (48.8 TiB).
MAX_OBJECT_BYTES = MAX_PARTS * 5 * 1024**3
# What browsers, n8n and most HTTP tools declare when they do not know a file's type: "unknown", so the
# asset records what its content (or else its name) shows instead of failing the upload.
UNKNOWN_MEDIA_TYPE = "application/octet-stream"


def upload_key(tenant: str, asset_id: str, filename: str) -> str:
    return f"uploads/{tenant}/{asset_id}/{filename}"


class UploadRequest(BaseModel):
    filename: str = Field(min_length=1, max_length=255)
    media_type: str = Field(min_length=3, max_length=255)
    size: int = Field(ge=1, le=MAX_OBJECT_BYTES)
    labels: dict[str, str] = Field(
        default_factory=dict,
        description=f"Up to {MAX_LABELS} `key: value` labels to find the asset by"
        " (GET /v1/assets?label=key:value).",
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return check_labels(v)

    @field_validator("filename")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if "/" in v or "\\" in v or v in (".", "..") or any(ord(c) < 32 or ord(c) == 127 for c in v):
            raise ValueError("must be a plain file name: no folders, no control characters")
        return v

    @field_validator("media_type")
    @classmethod
    def _media_type(cls, v: str) -> str:
        v = v.strip().lower()
        if not _MEDIA_TYPE.match(v):
            raise ValueError("must be a media type such as application/x-npy")
        return v


class PresignedPost(BaseModel):
    method: Literal["POST"] = "POST"
    url: str
    fields: dict[str, str]


class PresignedPart(BaseModel):
    part_number: int
    url: str
    size: int


class MultipartPlan(BaseModel):
    method: Literal["MULTIPART"] = "MULTIPART"
    part_size: int
    parts: list[PresignedPart]
    complete_url: str


class UploadTicket(BaseModel):
    asset_id: str
    upload: PresignedPost | MultipartPlan
    expires_at: datetime
    asset: Asset


class CompletedPart(BaseModel):
    part_number: int = Field(ge=1, le=MAX_PARTS)
    etag: str = Field(min_length=1, max_length=256)


class UploadLimits(BaseModel):
    max_bytes: int
    expiry_s: int
    part_bytes: int
    download_expiry_s: int


class AssetService:
    def __init__(
        self,
        store: JobStore,
        blobs: BlobStore,
        limits: UploadLimits,
        *,
        clock: Callable[[], datetime] = utcnow,
        charge: Callable[[str, int], None] | None = None,
    ) -> None:
        self._charge = charge  # counts the declared bytes against the tenant's quota; raises to refuse
        self._store = store
        self._blobs = blobs
        self._limits = limits
        self._clock = clock

    def start_upload(self, tenant: str, request: UploadRequest) -> UploadTicket:
        if self._charge is not None:
            self._charge(tenant, request.size)
        asset_id = str(ULID())
        key = upload_key(tenant, asset_id, request.filename)
        now = self._clock()
        expires = self._limits.expiry_s
        upload: PresignedPost | MultipartPlan
        upload_id: str | None = None
        if request.size <= self._limits.max_bytes:
            post = self._blobs.presign_post(
                key, media_type=request.media_type, size=request.size, expires_s=expires
            )
            upload = PresignedPost(url=post["url"], fields=post["fields"])
        else:
            upload_id = self._blobs.start_multipart(key, media_type=request.media_type)
            upload = self._multipart_plan(key, asset_id, upload_id, request.size)
        asset = Asset(
            asset_id=asset_id,
            tenant=tenant,
            filename=request.filename,
            media_type=request.media_type,
            size=request.size,
            key=key,
            upload_id=upload_id,
            labels=request.labels,
            created_at=now,
        )
        self._store.put_asset(asset)
        return UploadTicket(
            asset_id=asset_id, upload=upload, expires_at=now + timedelta(seconds=expires), asset=asset
        )

    def _multipart_plan(self, key: str, asset_id: str, upload_id: str, size: int) -> MultipartPlan:
        part_size = max(self._limits.part_bytes, math.ceil(size / MAX_PARTS))
        count = math.ceil(size / part_size)
        parts = [
            PresignedPart(
                part_number=n,
                url=self._blobs.presign_part(
                    key, upload_id=upload_id, part_number=n, expires_s=self._limits.expiry_s
                ),
                size=min(part_size, size - (n - 1) * part_size),
            )
            for n in range(1, count + 1)
        ]
        return MultipartPlan(
            part_size=part_size, parts=parts, complete_url=f"/v1/uploads/{asset_id}/complete"
        )

    def complete_multipart(self, tenant: str, asset_id: str, parts: list[CompletedPart]) -> Asset:
        asset = self._store.get_asset(asset_id, tenant=tenant)
        if asset.upload_id is None:
            raise Conflict(f"Asset '{asset_id}' has no open multipart upload.")
        ordered = sorted((p.part_number, p.etag) for p in parts)
        self._blobs.complete_multipart(asset.key, upload_id=asset.upload_id, parts=ordered)
        return self.settle(asset)

    def get(self, tenant: str, asset_id: str) -> Asset:
        """The asset; a PENDING one is checked against S3 once, so no client waits on a lost event."""
        asset = self._store.get_asset(asset_id, tenant=tenant)
        if asset.status == AssetStatus.PENDING and asset.upload_id is None:
            return self.settle(asset)
        return asset

    def list_assets(
        self,
        tenant: str,
        *,
        status: AssetStatus | None,
        media_type: str | None,
        limit: int,
        cursor: str | None,
        labels: dict[str, str] | None = None,
    ) -> AssetPage:
        return self._store.list_assets(
            tenant,
            status=status.value if status else None,
            media_type=media_type,
            limit=limit,
            cursor=cursor,
            labels=labels,
        )

    def settle(self, asset: Asset) -> Asset:
        """Compare the object in S3 with what was declared; record AVAILABLE or FAILED with the reason."""
        judged = self.judge(asset)
        if judged is asset:
            return asset
        settled = self._store.settle_asset(judged)
        if settled.status == AssetStatus.FAILED:
            obs.emit(obs.UPLOADS_FAILED)
        return settled

    def judge(self, asset: Asset) -> Asset:
        """The asset as settling would record it (the same one while its file has not arrived); records
        nothing, so a dry run can ask."""
        info = self._blobs.info(asset.key)
        if info is None:
            return asset  # not uploaded yet
        reason = _mismatch(asset, info)
        return asset.model_copy(
            update={
                "status": AssetStatus.FAILED if reason else AssetStatus.AVAILABLE,
                "reason": reason,
                "etag": info.etag,
                "available_at": None if reason else self._clock(),
                "media_type": _recognised(asset, info),
            }
        )

    def settle_key(self, key: str) -> Asset | None:
        """Settle the asset an S3 ObjectCreated event names; keys outside uploads/ are ignored."""
        parts = key.split("/")
        if len(parts) != 4 or parts[0] != "uploads":
            return None
        _, tenant, asset_id, _ = parts
        asset = self._store.get_asset(asset_id, tenant=tenant)
        if asset.key != key or asset.status != AssetStatus.PENDING:
            return asset
        return self.settle(asset)

    def download_url(self, tenant: str, asset_id: str) -> str:
        asset = self._store.get_asset(asset_id, tenant=tenant)
        if asset.status != AssetStatus.AVAILABLE:
            raise Conflict(f"Asset '{asset_id}' is {asset.status.value}, not AVAILABLE.")
        if self._blobs.size(asset.key) is None:
            raise Gone(f"Asset '{asset_id}' has expired; its file was removed by the retention policy.")
        return self._blobs.presign_get(
            asset.key, expires_s=self._limits.download_expiry_s, filename=asset.filename
        )


def _recognised(asset: Asset, info: ObjectInfo) -> str:
    """The asset's media type: as declared, or for an `octet-stream` declaration what the first bytes
    prove, else what the file name says (still octet-stream when neither tells)."""
    if asset.media_type != UNKNOWN_MEDIA_TYPE:
        return asset.media_type
    return sniff_media_type(info.head) or media_type_for_name(asset.filename)


def _mismatch(asset: Asset, info: ObjectInfo) -> str | None:
    if info.size != asset.size:
        return f"declared {asset.size} bytes, uploaded {info.size}"
    stored = (info.content_type or "").split(";")[0].strip().lower()
    if stored and stored != asset.media_type:
        return f"declared {asset.media_type}, uploaded as {stored}"
    sniffed = sniff_media_type(info.head)
    if sniffed and asset.media_type != UNKNOWN_MEDIA_TYPE and not same_kind(asset.media_type, sniffed):
        return f"declared {asset.media_type}, but the content is {sniffed}"
    return None

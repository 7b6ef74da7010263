"""A job's outputs, however many: the first page on the job record, every one in a manifest in S3."""

from __future__ import annotations

import base64
import binascii
import json

from pydantic import BaseModel

from jobgate.adapters.blobs import BlobStore
from jobgate.adapters.dynamo import marshalled_size
from jobgate.errors import Gone, NotFound, ValidationFailed
from jobgate.models import Job, Output

# What the job record keeps inline: at most this many outputs, taking at most this many bytes of the
# item (DynamoDB's count). Past either, every output goes to the manifest and the record keeps a
# first page, the count and the manifest's key, so a job of any size fits DynamoDB's 400 KB item.
INLINE_OUTPUTS = 100
INLINE_OUTPUTS_BYTES = 64 * 1024


class OutputManifest(BaseModel):
    """The whole list of one attempt's outputs, written before the job's end is recorded."""

    job_id: str
    attempt: int
    count: int
    outputs: list[Output]


class RecordedOutputs(BaseModel):
    page: list[Output]
    count: int
    manifest: str | None = None


def first_page(outputs: list[Output]) -> list[Output]:
    """The longest prefix of `outputs` within the record's inline bounds."""
    page: list[Output] = []
    size = 3  # a list's own overhead
    for output in outputs[:INLINE_OUTPUTS]:
        size += marshalled_size(output.model_dump()) + 1
        if size > INLINE_OUTPUTS_BYTES:
            break
        page.append(output)
    return page


class OutputCatalog:
    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs

    def record(
        self, job_id: str, attempt: int, outputs: list[Output], *, manifest_key: str
    ) -> RecordedOutputs:
        """What the job record keeps of `outputs`; the manifest is written first when they do not fit.

        Raises BlobError when the manifest cannot be written: then nothing may record the outputs.
        """
        page = first_page(outputs)
        if len(page) == len(outputs):
            return RecordedOutputs(page=outputs, count=len(outputs))
        manifest = OutputManifest(job_id=job_id, attempt=attempt, count=len(outputs), outputs=outputs)
        self._blobs.put_bytes(manifest_key, manifest.model_dump_json().encode(), "application/json")
        return RecordedOutputs(page=page, count=len(outputs), manifest=manifest_key)

    def every(self, job: Job) -> list[Output]:
        """Every output of the job, from its record or its manifest."""
        if job.outputs_manifest is None:
            return job.outputs
        try:
            data = self._blobs.get_bytes(job.outputs_manifest)
        except NotFound as exc:
            raise Gone(
                f"The list of outputs of job '{job.job_id}' has expired; the retention policy removed it."
            ) from exc
        return OutputManifest.model_validate_json(data).outputs

    def find(self, job: Job, name: str) -> Output | None:
        for output in job.outputs:
            if output.name == name:
                return output
        if job.outputs_manifest is None:
            return None
        return next((o for o in self.every(job) if o.name == name), None)

    def page(self, job: Job, *, limit: int, cursor: str | None) -> tuple[list[Output], str | None]:
        """One page of the job's outputs in their recorded order, and the cursor of the next one."""
        start = _decode_cursor(cursor, job.job_id) if cursor else 0
        end = start + limit
        # The record's first page answers the first pages; the manifest is read only past it.
        outputs = job.outputs if end <= len(job.outputs) else self.every(job)
        following = _encode_cursor(job.job_id, end) if end < job.total_outputs else None
        return outputs[start:end], following


def _encode_cursor(job_id: str, offset: int) -> str:
    raw = json.dumps({"j": job_id, "o": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, job_id: str) -> int:
    invalid = ValidationFailed(
        "The cursor is not one this list gave out.", [{"loc": ["query", "cursor"], "msg": "invalid cursor"}]
    )
    try:
        doc = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise invalid from exc
    # A cursor is bound to the job it came from.
    if (
        not isinstance(doc, dict)
        or doc.get("j") != job_id
        or not isinstance(doc.get("o"), int)
        or doc["o"] < 0
    ):
        raise invalid
    return int(doc["o"])

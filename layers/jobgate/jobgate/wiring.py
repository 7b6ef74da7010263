"""Builds services from settings, once per cold start; AWS clients are created on first use."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING

from jobgate.adapters import aws
from jobgate.adapters.blobs import BlobStore
from jobgate.adapters.connections import Connections
from jobgate.adapters.dynamo import JobStore
from jobgate.adapters.events import EventStore
from jobgate.adapters.queue import JobQueue
from jobgate.services.assets import AssetService, UploadLimits
from jobgate.services.events import Publisher, SubscriptionService
from jobgate.services.jobs import JobLimits, JobService
from jobgate.services.registry import Registry
from jobgate.settings import Settings

if TYPE_CHECKING:
    from jobgate.services.worker import WorkerService


@dataclass
class ApiServices:
    settings: Settings
    registry: Registry

    @cached_property
    def store(self) -> JobStore:
        return JobStore(aws.dynamodb(), self.settings.table_name, timedelta(days=self.settings.job_ttl_days))

    @cached_property
    def queue(self) -> JobQueue:
        return JobQueue(aws.sqs(), self.settings.queue_url)

    @cached_property
    def blobs(self) -> BlobStore:
        return BlobStore(aws.s3(), self.settings.bucket_name)

    @cached_property
    def jobs(self) -> JobService:
        limits = JobLimits(
            default_timeout_s=min(self.settings.default_job_timeout_s, self.settings.max_job_timeout_s),
            max_timeout_s=self.settings.max_job_timeout_s,
            sync_poll_s=self.settings.sync_poll_s,
        )
        return JobService(
            self.store,
            self.queue,
            self.blobs,
            self.registry,
            limits,
            download_expiry_s=self.settings.download_expiry_s,
            settle=self.assets.settle,
            publisher=self.publisher,
        )

    @cached_property
    def events(self) -> EventStore:
        return EventStore(
            aws.dynamodb(), self.settings.table_name, timedelta(days=self.settings.job_ttl_days)
        )

    @cached_property
    def publisher(self) -> Publisher:
        url = self.settings.ws_management_url
        return Publisher(self.events, Connections(url) if url else None)

    @cached_property
    def subscriptions(self) -> SubscriptionService:
        return SubscriptionService(self.store, self.events, self.publisher, self.tenant_for_key)

    def tenant_for_key(self, api_key: str | None) -> str | None:
        """The tenant an API key belongs to, or None for a missing or wrong key."""
        expected = self.settings.api_key
        if not api_key or expected is None:
            return None
        if not hmac.compare_digest(api_key.encode(), expected.get_secret_value().encode()):
            return None
        return self.settings.default_tenant

    @cached_property
    def assets(self) -> AssetService:
        limits = UploadLimits(
            max_bytes=self.settings.upload_max_bytes,
            expiry_s=self.settings.upload_expiry_s,
            part_bytes=self.settings.multipart_part_bytes,
            download_expiry_s=self.settings.download_expiry_s,
        )
        return AssetService(self.store, self.blobs, limits)


def build_worker(settings: Settings, registry: Registry) -> WorkerService:
    from jobgate.services.worker import WorkerConfig, WorkerService

    store = JobStore(aws.dynamodb(), settings.table_name, timedelta(days=settings.job_ttl_days))
    config = WorkerConfig(
        lease_s=settings.lease_s, cancel_poll_s=settings.cancel_poll_s, max_attempts=settings.max_attempts
    )
    events = EventStore(aws.dynamodb(), settings.table_name, timedelta(days=settings.job_ttl_days))
    url = settings.ws_management_url
    publisher = Publisher(events, Connections(url) if url else None)
    return WorkerService(
        store, BlobStore(aws.s3(), settings.bucket_name), registry, config, publisher=publisher
    )

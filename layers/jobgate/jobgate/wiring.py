"""Builds services from settings, once per cold start; AWS clients are created on first use."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING

from jobgate.adapters import aws
from jobgate.adapters.blobs import BlobStore
from jobgate.adapters.connections import Connections
from jobgate.adapters.dynamo import JobStore
from jobgate.adapters.events import EventStore
from jobgate.adapters.key_secret import SecretReader
from jobgate.adapters.keys import KeyStore
from jobgate.adapters.limits import LimitStore
from jobgate.adapters.queue import JobQueue
from jobgate.adapters.secrets import SecretStore
from jobgate.services.assets import AssetService, UploadLimits
from jobgate.services.egress import EgressPolicy
from jobgate.services.events import Publisher, SubscriptionService
from jobgate.services.jobs import JobLimits, JobService
from jobgate.services.keys import Authenticator, KeyService
from jobgate.services.limits import JobAdmission, RateLimiter, UploadQuota
from jobgate.services.maps import MapService
from jobgate.services.pipelines import Advancer, PipelineService
from jobgate.services.registry import Registry
from jobgate.services.secrets import CommandSecrets
from jobgate.settings import Settings

if TYPE_CHECKING:
    from jobgate.services.containers import ContainerDispatcher
    from jobgate.services.executor import CommandRunner
    from jobgate.services.sweeper import Sweeper
    from jobgate.services.worker import WorkerService
    from jobgate.services.zygote import Zygote


@dataclass
class ApiServices:
    settings: Settings
    registry: Registry
    # How long each AWS call may take (adapters/aws.py): the API's, unless a background role builds these.
    budget: aws.Budget = aws.API

    @cached_property
    def store(self) -> JobStore:
        return JobStore(
            aws.dynamodb(self.budget), self.settings.table_name, timedelta(days=self.settings.job_ttl_days)
        )

    @cached_property
    def queue(self) -> JobQueue:
        return JobQueue(aws.sqs(self.budget), self.settings.queue_url, self.settings.container_queue_url)

    @cached_property
    def blobs(self) -> BlobStore:
        return BlobStore(aws.s3(self.budget), self.settings.bucket_name)

    @cached_property
    def jobs(self) -> JobService:
        limits = JobLimits(
            default_timeout_s=min(self.settings.default_job_timeout_s, self.settings.max_job_timeout_s),
            max_timeout_s=self.settings.max_job_timeout_s,
            sync_poll_s=self.settings.sync_poll_s,
            secrets=frozenset(self.settings.command_secrets),
            container_max_timeout_s=(
                self.settings.container_max_timeout_s if self.settings.container_queue_url else None
            ),
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
            admit=self.admission,
            advancer=self.advancer,
            events=self.events,
            preview=self.assets.judge,
        )

    @cached_property
    def advancer(self) -> Advancer:
        return Advancer(self.store, self.queue, self.publisher)

    @cached_property
    def pipelines(self) -> PipelineService:
        return PipelineService(
            self.store,
            self.queue,
            self.registry,
            self.advancer,
            check_inputs=self.jobs.check_inputs,
            timeout_for=self.jobs.timeout_for,
            admission=self.admission,
            ttl=timedelta(days=self.settings.job_ttl_days),
            check_secrets=self.jobs.check_secrets,
        )

    @cached_property
    def maps(self) -> MapService:
        return MapService(
            self.store,
            self.registry,
            self.advancer.maps,
            check_inputs=self.jobs.check_inputs,
            timeout_for=self.jobs.timeout_for,
            admission=self.admission,
            blobs=self.blobs,
            ttl_s=self.settings.job_ttl_days * 86400,
        )

    @cached_property
    def events(self) -> EventStore:
        return EventStore(
            aws.dynamodb(self.budget), self.settings.table_name, timedelta(days=self.settings.job_ttl_days)
        )

    @cached_property
    def publisher(self) -> Publisher:
        url = self.settings.ws_management_url
        return Publisher(self.events, Connections(url) if url else None)

    @cached_property
    def subscriptions(self) -> SubscriptionService:
        return SubscriptionService(self.store, self.events, self.publisher, self.tenant_for_key)

    def tenant_for_key(self, api_key: str | None) -> str | None:
        """The tenant an API key belongs to, or None for a missing, wrong, revoked or expired key."""
        return self.authenticator.tenant_for_key(api_key)

    @cached_property
    def assets(self) -> AssetService:
        limits = UploadLimits(
            max_bytes=self.settings.upload_max_bytes,
            expiry_s=self.settings.upload_expiry_s,
            part_bytes=self.settings.multipart_part_bytes,
            download_expiry_s=self.settings.download_expiry_s,
        )
        return AssetService(self.store, self.blobs, limits, charge=self.upload_quota.charge)

    # -- tenants, keys and limits (docs/security.md) --------------------------------------------

    @cached_property
    def keys(self) -> KeyService:
        return KeyService(
            KeyStore(
                aws.dynamodb(self.budget),
                self.settings.table_name,
                timedelta(days=self.settings.job_ttl_days),
            )
        )

    @cached_property
    def authenticator(self) -> Authenticator:
        return Authenticator(
            self.keys,
            bootstrap_key=self.bootstrap_key(),
            bootstrap_tenant=self.settings.default_tenant,
            tenant_claim=self.settings.jwt_tenant_claim,
        )

    def bootstrap_key(self) -> str | None:
        """The bootstrap API key: from its secret when the settings name one (on AWS), else from the
        settings themselves (tests, a local run without the stack)."""
        if self.settings.api_key_secret:
            return SecretReader(aws.secretsmanager(self.budget)).value(self.settings.api_key_secret)
        bootstrap = self.settings.api_key
        return bootstrap.get_secret_value() if bootstrap else None

    @cached_property
    def limits(self) -> LimitStore:
        return LimitStore(aws.dynamodb(self.budget), self.settings.table_name)

    @cached_property
    def rate_limiter(self) -> RateLimiter:
        return RateLimiter(
            self.limits, rate_per_s=self.settings.rate_limit_per_s, burst=self.settings.rate_limit_burst
        )

    @cached_property
    def egress(self) -> EgressPolicy:
        return EgressPolicy(self.settings.egress_allow, s3_buckets=self.settings.s3_input_buckets)

    @cached_property
    def admission(self) -> JobAdmission:
        return JobAdmission(
            self.limits,
            self.egress,
            max_active_jobs=self.settings.max_active_jobs,
            max_args_bytes=self.settings.max_args_bytes,
        )

    @cached_property
    def upload_quota(self) -> UploadQuota:
        return UploadQuota(self.limits, bytes_per_day=self.settings.upload_bytes_per_day)


def build_zygote(settings: Settings, registry: Registry) -> Zygote:
    """The process the worker's commands are forked from (not started yet)."""
    from jobgate.services.zygote import Zygote

    egress = EgressPolicy(settings.egress_allow, s3_buckets=settings.s3_input_buckets)
    job_user = (settings.job_uid, settings.job_gid)
    return Zygote.serving(registry, egress, warm=settings.warm_command_sets, job_user=job_user)


def build_worker(
    settings: Settings, registry: Registry, runner: CommandRunner | None = None
) -> WorkerService:
    """The worker; its commands run in a zygote built from the same settings unless ``runner`` is given."""
    from jobgate.services.worker import WorkerConfig, WorkerService

    services = ApiServices(settings, registry, aws.BACKGROUND)
    config = WorkerConfig(
        lease_s=settings.lease_s,
        # The lease is renewed every third of itself; in between, the attempt reads its job this often
        # (a cancel request, a take-over, a new subscriber are learned then).
        pulse_s=settings.cancel_poll_s,
        cancel_poll_s=min(0.25, settings.cancel_poll_s),
        max_attempts=settings.max_attempts,
        max_log_bytes=settings.max_log_bytes,
        **({"work_root": settings.work_root} if settings.work_root is not None else {}),
    )
    return WorkerService(
        services.store,
        services.blobs,
        registry,
        config,
        publisher=services.publisher,
        egress=services.egress,
        advancer=services.advancer,
        queue=services.queue,
        runner=runner if runner is not None else build_zygote(settings, registry),
        # The secret stores' clients only where secrets are mapped: no other worker calls them.
        secrets=CommandSecrets(
            settings.command_secrets,
            SecretStore(aws.secretsmanager(), aws.ssm()) if settings.command_secrets else None,
        ),
    )


def build_dispatcher(settings: Settings) -> ContainerDispatcher:
    """The container runner's dispatcher: RunTask per job message, as the settings place tasks."""
    from jobgate.adapters.tasks import TaskLauncher, TaskPlacement
    from jobgate.services.containers import ContainerDispatcher

    services = ApiServices(settings, Registry([]), aws.BACKGROUND)
    placement = TaskPlacement(
        cluster=settings.container_cluster,
        task_definition=settings.container_task_definition,
        container=settings.container_name,
        subnets=settings.container_subnets,
        security_groups=settings.container_security_groups,
        capacity_provider=settings.container_capacity_provider,
    )
    return ContainerDispatcher(
        services.store,
        TaskLauncher(aws.ecs(), placement),
        tries=settings.container_dispatch_tries,
        queue=services.queue,
        publisher=services.publisher,
        advancer=services.advancer,
    )


def build_sweeper(settings: Settings) -> Sweeper:
    from jobgate.services.sweeper import SweepConfig, Sweeper

    services = ApiServices(settings, Registry([]), aws.BACKGROUND)
    config = SweepConfig(
        enqueue_grace_s=settings.enqueue_grace_s,
        max_resends=settings.max_resends,
        queue_retention_s=settings.queue_retention_s,
        lost_after_s=settings.lost_after_s,
    )
    return Sweeper(
        services.store, services.queue, config, publisher=services.publisher, advancer=services.advancer
    )

"""Handlers run inside the benchmark's own process, for breakdowns: AWS calls counted and timed."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from common import CODE_ROOT, aws_env


def stack_environment(endpoint_url: str, resources: Mapping[str, str], api_key: str) -> dict[str, str]:
    """What a function of the local stack sees, enough for the API and worker handlers."""
    return {
        **aws_env(endpoint_url),
        "JOBGATE_TABLE_NAME": resources["JobsTable"],
        "JOBGATE_QUEUE_URL": resources["JobsQueue"],
        "JOBGATE_BUCKET_NAME": resources["DataBucket"],
        "JOBGATE_API_KEY": api_key,
        "JOBGATE_RATE_LIMIT_PER_S": "0",
        "JOBGATE_MAX_ACTIVE_JOBS": "0",
        "JOBGATE_EGRESS_ALLOW": "127.0.0.0/8",
        "POWERTOOLS_SERVICE_NAME": "jobgate",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "Jobgate",
        # A work root of this process's own: a worker's cold start empties its work root, and other
        # workers on this machine (the local stack's, other people's) clean the shared default one.
        "JOBGATE_WORK_ROOT": _private_work_root(),
    }


def _private_work_root() -> str:
    import atexit
    import shutil
    import tempfile

    root = tempfile.mkdtemp(prefix="jobgate-bench-work-")
    atexit.register(shutil.rmtree, root, True)
    return root


def load_handler(function: str, env: Mapping[str, str], *, fresh_clients: bool = True) -> ModuleType:
    """Import functions/<function>/app.py as Lambda's init does, with ``env`` set first.

    With ``fresh_clients=False`` the handler shares the boto3 clients handlers loaded before it made
    (as one process would), so hooks on those clients see its calls too.
    """
    os.environ.update(env)
    from jobgate.adapters import aws
    from jobgate.settings import load_settings

    load_settings.cache_clear()
    if fresh_clients:
        aws.reset_clients()
    name = f"_bench_fn_{function}"
    spec = importlib.util.spec_from_file_location(name, CODE_ROOT / "functions" / function / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class CallLog:
    """Every AWS call jobgate's clients make, by operation, with the time each took."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self._started: dict[int, float] = {}

    def _before(self, model: Any, **_: Any) -> None:
        self._started[id(model)] = time.perf_counter()

    def _after(self, model: Any, **_: Any) -> None:
        name = f"{model.service_model.service_name}.{model.name}"
        self.calls[name] += 1
        self.seconds[name] += time.perf_counter() - self._started.pop(id(model), time.perf_counter())

    def reset(self) -> None:
        self.calls.clear()
        self.seconds.clear()

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds.values()))


@contextmanager
def counting_calls() -> Iterator[CallLog]:
    """Count the calls of the DynamoDB, SQS and S3 clients that jobgate.adapters.aws hands out."""
    from jobgate.adapters import aws

    log = CallLog()
    # Each client copies its session's event hooks when it is made: register on the cached clients,
    # the API's and the workers' (each role has its own time budget, so its own clients).
    clients = [
        make(budget) for budget in (aws.API, aws.BACKGROUND) for make in (aws.dynamodb, aws.sqs, aws.s3)
    ]
    for client in clients:
        client.meta.events.register("before-call", log._before, unique_id="bench-before")
        client.meta.events.register("after-call", log._after, unique_id="bench-after")
    try:
        yield log
    finally:
        for client in clients:
            client.meta.events.unregister("before-call", unique_id="bench-before")
            client.meta.events.unregister("after-call", unique_id="bench-after")

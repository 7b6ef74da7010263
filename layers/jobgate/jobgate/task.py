"""The worker image in task mode: one ECS task runs one job of the container runner, then exits.

`python -m jobgate.task`, with the job named by `JOBGATE_JOB_ID` and `JOBGATE_JOB_TENANT` (the
dispatcher's RunTask overrides) and the same settings as the worker Lambda. The job goes through the
same `WorkerService.handle` as on Lambda: claim, lease and heartbeats, the zygote's child, the uploads
and one finish with its events. Its time budget is the container runner's limit (plus time to
record the end) instead of Lambda's. A task that dies leaves its job running under a lease that runs
out: the sweeper sends the job's message again, and the dispatcher starts a new task that takes it
over (attempts + 1), as for a lost Lambda worker.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from jobgate.observability import logger
from jobgate.services.registry import Registry
from jobgate.settings import load_settings
from jobgate.wiring import build_worker, build_zygote

# Past the job's own limit: staging before it, uploads and the record after it.
FINISH_BUDGET_S = 15 * 60


class TaskStopped(Exception):
    """ECS is stopping the task (StopTask, a Spot interruption, a scale-in): SIGTERM, then SIGKILL."""


def _stopped(signum: int, _frame: object) -> None:
    # Raised in the main thread, wherever it is: the command's supervisor kills the job's process
    # group, and the worker releases the job's lease on the way out, so that a new task can take it
    # over at the sweeper's next pass instead of after the lease runs out.
    raise TaskStopped(f"signal {signum}")


def main() -> int:
    job_id = os.environ.get("JOBGATE_JOB_ID", "")
    if not job_id:
        logger.error("task started without JOBGATE_JOB_ID")
        return 2
    settings = load_settings()
    registry = Registry.from_entry_points()
    zygote = build_zygote(settings, registry)
    worker = build_worker(settings, registry, runner=zygote)
    worker.prepare()
    deadline = time.monotonic() + settings.container_max_timeout_s + FINISH_BUDGET_S
    signal.signal(signal.SIGTERM, _stopped)
    try:
        job = worker.handle(
            job_id,
            remaining_s=lambda: deadline - time.monotonic(),
            tenant=os.environ.get("JOBGATE_JOB_TENANT"),
        )
    except TaskStopped:
        logger.warning("task stopped; its job was released for another task", job_id=job_id)
        return 143
    except Exception:
        # The job's lease was released: the sweeper has it run again by a new task.
        logger.exception("task could not run its job", job_id=job_id)
        return 1
    finally:
        zygote.close()
    logger.info("task done", job_id=job_id, status=job.status.value if job is not None else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())

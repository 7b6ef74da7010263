"""A worker in a process of its own, started as Lambda starts one: credentials in its exec-time environment.

`python -c BOOTSTRAP <sys.path as JSON> <job_id>...` (see `worker_command`) runs each job of the
`Probes` command set through the production wiring (`jobgate.wiring.build_worker`), then exits.
"""

from __future__ import annotations

import json
import sys
from typing import Any

BOOTSTRAP = (
    "import json, site, sys; new = [p for p in json.loads(sys.argv[1]) if p not in sys.path]; "
    "sys.path[:0] = new; [site.addsitedir(p) for p in new]; del sys.argv[1]; "
    "from tests.support.worker_process import main; main()"
)

# What the SDK keeps in memory once the worker has called AWS: a credentials object holding the keys.
_credentials: Any = None


def worker_command(python: str) -> list[str]:
    """The argv that starts this worker with ``python``, importing what this process imports.

    The interpreter's own library stays ``python``'s: it may be another installation of this version.
    """
    paths = [p for p in sys.path if p and not p.startswith(sys.base_prefix)]
    return [python, "-I", "-c", BOOTSTRAP, json.dumps(paths)]


def main() -> None:
    global _credentials
    import boto3
    from jobgate.services.registry import Registry
    from jobgate.settings import load_settings
    from jobgate.wiring import build_worker

    from tests.support.commands import Probes

    session = boto3.Session()
    _credentials = session.get_credentials()
    assert _credentials is not None
    _credentials.get_frozen_credentials()
    worker = build_worker(load_settings(), Registry.from_command_sets([Probes()]))
    for job_id in sys.argv[1:]:
        worker.handle(job_id, remaining_s=lambda: 120.0)


if __name__ == "__main__":
    main()

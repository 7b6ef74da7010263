"""moto in server mode, in its own process, serving on a socket the stack bound for it.

``python -m jobgate_local.moto_server <fd>`` serves the already listening socket ``fd``, so the port is
known (and checked) before the process starts, and port 0 needs no hand-back of the chosen port.
moto's application is wrapped in the strict layer (:mod:`jobgate_local.strict`), which refuses what AWS
refuses; ``JOBGATE_LOCAL_FAULTS`` (JSON, see :class:`~jobgate_local.strict.FaultSettings`) turns fault
injection on from the start.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from .logs import OutputPump, function_logger
from .procs import StartupError, terminate_tree
from .strict import FaultSettings, StrictLayer

logger = logging.getLogger(__name__)

FAULTS_VARIABLE = "JOBGATE_LOCAL_FAULTS"


class MotoServer:
    """The moto process, seen from the stack."""

    def __init__(
        self, sock: socket.socket, *, python: str = sys.executable, faults: FaultSettings | None = None
    ) -> None:
        host, port = sock.getsockname()[:2]
        # Bound to every interface, moto is still reached (and presigned URLs point) through loopback.
        shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
        self.endpoint_url = f"http://{shown}:{port}"
        # AWS's managed policies (AWSLambdaSQSQueueExecutionRole...) are attached to the functions' roles.
        env = dict(
            os.environ, MOTO_PORT=str(port), PYTHONUNBUFFERED="1", MOTO_IAM_LOAD_MANAGED_POLICIES="true"
        )
        env.pop(FAULTS_VARIABLE, None)
        if faults is not None:
            env[FAULTS_VARIABLE] = json.dumps(faults.to_json())
        self._proc = subprocess.Popen(
            [python, "-m", "jobgate_local.moto_server", str(sock.fileno())],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(sock.fileno(),),
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        self._pump = OutputPump(self._proc.stdout, function_logger("moto"))

    @property
    def pid(self) -> int:
        return self._proc.pid

    def wait_ready(self, timeout: float) -> None:
        """Wait until moto answers HTTP; raise with what went wrong if it exits or stays silent."""
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise StartupError(f"moto exited with status {self._proc.returncode} before it was ready")
            try:
                with urllib.request.urlopen(
                    f"{self.endpoint_url}/moto-api/data.json", timeout=2.0
                ) as response:
                    response.read()
                return
            except (urllib.error.URLError, OSError):
                if time.monotonic() >= deadline:
                    raise StartupError(
                        f"moto did not answer on {self.endpoint_url} within {timeout:.0f} s"
                    ) from None
                time.sleep(0.05)

    def stop(self, grace: float = 2.0) -> None:
        terminate_tree(self._proc.pid, grace)
        try:
            self._proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            logger.warning("moto (pid %s) did not exit", self._proc.pid)
        self._pump.join(timeout=1.0)


def _exit_with_parent() -> None:
    """moto leads its own session, so Ctrl-C does not reach it; if the stack dies anyway, follow it."""
    parent = os.getppid()
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def main(argv: list[str] | None = None) -> int:
    # moto's server answers every request with `Access-Control-Allow-Origin: *`; S3 answers browsers
    # from the bucket's CORS rules, as the strict layer does (strict/s3_cors.py). Read at moto's import.
    os.environ["MOTO_DISABLE_GLOBAL_CORS"] = "true"
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    args = sys.argv[1:] if argv is None else argv
    fd = int(args[0])
    # werkzeug logs every request; the console wants only moto's warnings.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("jobgate_local.strict").setLevel(logging.INFO)
    threading.Thread(target=_exit_with_parent, name="parent-watch", daemon=True).start()
    sock = socket.socket(fileno=fd)
    host, port = sock.getsockname()[:2]
    sock.detach()
    faults = os.environ.get(FAULTS_VARIABLE)
    settings = FaultSettings.from_json(json.loads(faults)) if faults else None
    app = StrictLayer(DomainDispatcherApplication(create_backend_app), faults=settings)
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler, fd=fd)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())

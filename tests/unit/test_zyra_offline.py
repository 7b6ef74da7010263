"""zyra's offline commands with their map features, as a job runs them: no network at all.

Coastlines and borders come from the Natural Earth files the runtime ships (functions/worker/runtime.py
natural-earth), and `--features gridlines` draws (zyra asks cartopy for gridlines in a way no cartopy
release accepts; jobgate.commandsets.zyra.prepare_cartopy takes it back). Each command runs in a fresh
interpreter whose sockets refuse to connect, with a HOME of its own (so no cartopy download cache).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.zyra

OFFLINE_RUN = """
import socket, sys
def refused(*args, **kwargs):
    raise OSError("offline: no connection to " + repr(args[:1]))
socket.create_connection = refused
socket.socket.connect = lambda self, address: refused(address)
from jobgate.commandsets.zyra import ZyraCommandSet
sys.exit(ZyraCommandSet().run(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("offline")
    y, x = np.mgrid[0:30, 0:60]
    np.save(folder / "field.npy", np.sin(x / 8) * np.cos(y / 6))
    np.save(folder / "frames.npy", np.stack([np.sin(x / 8 + t) * np.cos(y / 6) for t in range(3)]))
    np.save(folder / "u.npy", np.cos(y / 6) * np.ones_like(x, dtype=float))
    np.save(folder / "v.npy", np.sin(x / 8) * np.ones_like(y, dtype=float))
    return folder


def zyra_offline(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "CARTOPY"))}
    env.update(HOME=str(cwd), MPLCONFIGDIR=str(cwd / ".mpl"))
    return subprocess.run(
        [sys.executable, "-c", OFFLINE_RUN, *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.parametrize(
    ("argv", "output"),
    [
        (["visualize", "heatmap", "--input", "field.npy", "--output", "h.png"], "h.png"),
        # A small extent: cartopy picks the 1:10m coastlines.
        (["visualize", "heatmap", "--input", "field.npy", "--output", "eu.png",
          "--extent", "0", "20", "40", "55"], "eu.png"),
        (["visualize", "contour", "--input", "field.npy", "--output", "c.png",
          "--features", "gridlines"], "c.png"),
        (["visualize", "contour", "--input", "field.npy", "--output", "cf.png", "--filled",
          "--features", "coastline,borders,gridlines"], "cf.png"),
        (["visualize", "vector", "--u", "u.npy", "--v", "v.npy", "--output", "v.png"], "v.png"),
        (["visualize", "animate", "--input", "frames.npy", "--output-dir", "frames"], "frames"),
    ],
)  # fmt: skip
def test_map_features_work_with_no_network(data: Path, argv: list[str], output: str) -> None:
    done = zyra_offline(data, *argv)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "offline: no connection" not in done.stderr and "URLError" not in done.stderr
    written = data / output
    pngs = sorted(written.glob("*.png")) if written.is_dir() else [written]
    assert pngs and all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)

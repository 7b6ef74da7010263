"""Zyra (PyPI `zyra`) as a command set: contracts from its own parsers, runs through `zyra.cli.main`."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from jobgate.commandsets.argparse_contracts import Override, Overrides, contracts_from_parser
from jobgate.services.registry import CommandContract

# Stage names zyra.cli registers as hidden copies of a canonical stage. `ingest` and `decimation`
# are normalized by zyra.cli but never registered (zyra answers "invalid choice"), so they are not
# here; `optimize` is registered only when it is the word given, which is how jobs call it.
STAGE_ALIASES: dict[str, str] = {
    "import": "acquire",
    "render": "visualize",
    "export": "disseminate",
    "decimate": "disseminate",
    "transform": "process",
    "optimize": "decide",
}

# Stages zyra registers that jobgate does not offer, and why.
EXCLUDED_STAGES: dict[str, str] = {
    "wizard": "an interactive LLM assistant that reads prompts from stdin",
    "generate-manifest": "a developer tool that writes into zyra's own installed package",
    "swarm": "an LLM agent orchestrator, registered only when named first",
    "plan": "an LLM workflow planner, registered only when named first",
    # A pipeline file names its own stages and paths, none of which the registry checks; pipelines
    # come back as jobgate pipelines, each step checked like a job of its own.
    "run": "runs unchecked stages and paths from a pipeline file",
}

# Stages whose parser takes its arguments itself: their one command is named like the stage, and
# zyra's argv has the stage word only (`run pipe.yaml`, not `run run pipe.yaml`).
STANDALONE_STAGES = frozenset({"run", "search"})

# The media types an input argument accepts (exact match against the asset's type; none listed
# means any). The first of each is what jobgate.media guesses for such a file.
MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    "npy": ("application/x-npy",),
    "netcdf": ("application/x-netcdf", "application/netcdf"),
    "geotiff": ("image/tiff",),
    "grib2": ("application/x-grib2", "application/grib2"),
    "csv": ("text/csv",),
    "json": ("application/json",),
    "ndjson": ("application/x-ndjson",),
    "yaml": ("application/yaml", "application/x-yaml", "text/yaml"),
    "text": ("text/plain",),
    "image": ("image/png", "image/jpeg"),
    "video": ("video/mp4", "video/quicktime", "video/x-msvideo", "video/webm", "video/x-matroska"),
    "audio": ("audio/mpeg", "audio/wav", "audio/x-wav", "audio/ogg", "audio/flac", "audio/mp4", "audio/aac"),
    "any": (),
}


def _input(*kinds: str) -> Override:
    return Override(role="input", media_types=tuple(t for k in kinds for t in MEDIA_TYPES[k]))


OUTPUT = Override(role="output")
OUTPUT_DIR = Override(role="output_dir")
# Written only when there is something to write (a sync that found nothing new, no frame missing)
# or under another flag (--write-metadata): a job is not failed for leaving them empty.
OPTIONAL_OUTPUT = Override(role="output", optional=True)
OPTIONAL_OUTPUT_DIR = Override(role="output_dir", optional=True)
PATH = Override(role="path")  # a relative path inside the work folder, read or written
VALUE = Override(role="value")
EXCLUDE = Override(exclude=True)

_GRIDS = ("npy", "netcdf", "geotiff")
# heatmap and contour share their arguments.
_RASTER_RENDER = {
    "input": _input(*_GRIDS),
    "inputs": _input(*_GRIDS),
    "output": OUTPUT,
    "output_dir": OUTPUT_DIR,
    "output_names": VALUE,  # bare file names inside output_dir; zyra refuses paths
    "basemap": PATH,  # a packaged image name, pkg:ref, or a file in the work folder
    "cmap_file": _input("json"),
    "legend_file": OUTPUT,
}
_FETCH = {
    "output": OUTPUT,
    "output_dir": OPTIONAL_OUTPUT_DIR,
    "manifest": _input("text"),
    "credential_file": _input("any"),
}

OVERRIDES: Overrides = {
    ("acquire", "http"): _FETCH,
    ("acquire", "s3"): {k: v for k, v in _FETCH.items() if k != "credential_file"},
    ("acquire", "ftp"): {**_FETCH, "sync_dir": OPTIONAL_OUTPUT_DIR, "frames_meta": PATH},
    ("acquire", "thredds"): {
        "output": OUTPUT,
        "output_dir": OPTIONAL_OUTPUT_DIR,
        "sync_dir": OPTIONAL_OUTPUT_DIR,
        "credential_file": _input("any"),
    },
    ("acquire", "vimeo"): {"output": OUTPUT},
    # --data takes "@<path>" to send a local file: any file of the worker, to any URL.
    ("acquire", "api"): {"output": OUTPUT, "credential_file": _input("any"), "data": EXCLUDE},
    ("process", "decode-grib2"): {"file_or_url": _input("grib2")},
    ("process", "extract-variable"): {"file_or_url": _input("grib2")},
    ("process", "convert-format"): {
        "file_or_url": _input("grib2"),
        "inputs": _input("grib2"),
        "output": OUTPUT,
        "output_dir": OUTPUT_DIR,
        "output_names": VALUE,
    },
    ("process", "pad-missing"): {
        "frames_meta": _input("json"),
        "output_dir": OPTIONAL_OUTPUT_DIR,
        "basemap": PATH,
        "json_report": OUTPUT,
    },
    ("process", "reproject"): {
        "input": _input("geotiff", "image"),
        "inputs": _input("geotiff", "image"),
        "output": OUTPUT,
        "output_dir": OUTPUT_DIR,
        "output_names": VALUE,
    },
    ("process", "api-json"): {"file_or_url": _input("json", "ndjson"), "output": OUTPUT},
    # --extra-args hands raw arguments to FFmpeg, which can read and write any path.
    ("process", "video-transcode"): {
        "input": _input("video"),
        "output": OUTPUT,
        "metadata_out": OPTIONAL_OUTPUT,
        "extra_args": EXCLUDE,
    },
    ("process", "audio-transcode"): {"input": _input("audio"), "output": OUTPUT},
    ("process", "audio-metadata"): {"input": _input("audio"), "output": OUTPUT},
    ("process", "metadata"): {"frames_dir": PATH, "output": OUTPUT},
    ("process", "scan-frames"): {"frames_dir": PATH, "output": OUTPUT},
    ("process", "enrich-metadata"): {"frames_meta": _input("json"), "output": OUTPUT},
    ("process", "enrich-datasets"): {
        "items_file": _input("json"),
        "profile_file": _input("json"),
        "output": OUTPUT,
    },
    ("process", "update-dataset-json"): {
        "input_file": _input("json"),
        "meta": _input("json"),
        "output": OUTPUT,
    },
    ("visualize", "heatmap"): {**_RASTER_RENDER, "color_scale_file": OUTPUT},
    ("visualize", "contour"): _RASTER_RENDER,
    ("visualize", "timeseries"): {"input": _input("csv", "netcdf"), "output": OUTPUT},
    ("visualize", "vector"): {
        "input": _input("netcdf"),
        "inputs": _input("netcdf"),
        "u": _input("npy"),
        "v": _input("npy"),
        "output": OUTPUT,
        "output_dir": OUTPUT_DIR,
        "basemap": PATH,
    },
    ("visualize", "animate"): {
        "input": _input("npy", "netcdf"),
        "inputs": _input("npy", "netcdf"),
        "u": _input("npy"),
        "v": _input("npy"),
        "output": OUTPUT,
        "output_dir": OUTPUT_DIR,
        "basemap": PATH,
        "timestamps_csv": _input("csv"),
        "to_video": OUTPUT,
        "combine_to": OUTPUT,
    },
    ("visualize", "compose-video"): {"frames": PATH, "output": OUTPUT, "basemap": PATH},
    ("visualize", "interactive"): {
        "input": _input("netcdf", "npy", "csv"),
        "u": _input("npy"),
        "v": _input("npy"),
        "output": OUTPUT,
    },
    ("visualize", "sos"): {
        "input": _input("npy", "netcdf"),
        "inputs": _input("npy", "netcdf"),
        "output": OUTPUT,
        "output_dir": OUTPUT_DIR,
        "basemap": PATH,
    },
    ("disseminate", "local"): {"input": _input("any"), "path": OUTPUT},
    ("disseminate", "s3"): {"input": _input("any")},
    ("disseminate", "ftp"): {"input": _input("any"), "credential_file": _input("any")},
    ("disseminate", "post"): {"input": _input("any"), "credential_file": _input("any")},
    ("disseminate", "vimeo"): {
        "input": _input("video"),
        "description_file": _input("text"),
        "credential_file": _input("any"),
    },
    ("narrate", "swarm"): {
        "swarm_config": _input("yaml"),
        "rubric": _input("yaml"),
        "input": _input("any"),
        "guardrails": _input("any"),
        "pack": OUTPUT,
        "memory": OUTPUT,
    },
    ("verify", "evaluate"): {"input": _input("json")},
    ("search", "search"): {"catalog_file": _input("json"), "profile_file": _input("json")},
    # --json-body takes "@<path>" like acquire api --data; --json-param builds a body instead.
    ("search", "api"): {"credential_file": _input("any"), "json_body": EXCLUDE},
}

# Numbers that size what a command draws or renders, by argument name in every command: past these a
# job would only run out of memory or time in the worker (an 8192 px square RGBA image is 256 MiB).
SIZE_BOUNDS: dict[str, tuple[float, float]] = {
    "width": (1, 8192),
    "height": (1, 8192),
    "dpi": (10, 1200),
    "fps": (1, 240),
    "particles": (1, 200_000),
    "grid_cols": (1, 64),
    "steps_per_frame": (1, 1000),
    "tile_zoom": (0, 19),
    "density": (0.001, 10),
}

# zyra.cli.main reads these anywhere in argv, even as a value after "--", and prints its banner.
_VERSION_WORDS = frozenset({"--version", "-V"})
# What zyra.cli.main sets in os.environ as it runs a command.
_ZYRA_ENV = ("ZYRA_VERBOSITY", "DATAVIZHUB_VERBOSITY", "ZYRA_SHELL_TRACE")


def build_root_parser() -> argparse.ArgumentParser:
    """Zyra's parser tree, registered as `zyra.cli.main` does when no stage is named.

    Only canonical stages: main registers alias stages as copies of these, and the excluded ones
    are left out.
    """
    import zyra.connectors.discovery as discovery
    import zyra.connectors.egress as egress
    import zyra.connectors.ingest as ingest
    import zyra.decide as decide
    import zyra.narrate as narrate
    import zyra.processing as processing
    import zyra.simulate as simulate
    import zyra.transform as transform
    import zyra.verify as verify
    from zyra.visualization import cli_register as visualization

    root = argparse.ArgumentParser(prog="zyra")
    stages = root.add_subparsers(dest="cmd", required=True)
    grouped = {
        "acquire": (ingest.register_cli,),
        "process": (processing.register_cli, transform.register_cli),
        "visualize": (visualization.register_cli,),
        "disseminate": (egress.register_cli,),
        "simulate": (simulate.register_cli,),
        "decide": (decide.register_cli,),
        "narrate": (narrate.register_cli,),
        "verify": (verify.register_cli,),
    }
    for stage, registers in grouped.items():
        commands = stages.add_parser(stage).add_subparsers(dest=f"{stage}_cmd", required=True)
        for register in registers:
            register(commands)
    search = stages.add_parser("search", help="Search datasets (local SOS catalog; JSON/YAML export)")
    discovery.register_cli(search)
    return root


def zyra_argv(argv: list[str]) -> list[str]:
    """Zyra's argv for a jobgate argv: a standalone stage is not followed by its command word."""
    if len(argv) >= 2 and argv[0] in STANDALONE_STAGES and argv[1] == argv[0]:
        return [argv[0], *argv[2:]]
    return list(argv)


class ZyraCommandSet:
    """The Zyra CLI, every stage but the interactive and LLM-agent ones."""

    name = "zyra"
    stage_aliases = STAGE_ALIASES

    def __init__(self) -> None:
        self._contracts: list[CommandContract] | None = None

    def contracts(self) -> list[CommandContract]:
        if self._contracts is None:
            self._contracts = contracts_from_parser(
                build_root_parser(), self.name, overrides=OVERRIDES, bounds=SIZE_BOUNDS
            )
        return [c.model_copy(deep=True) for c in self._contracts]

    def warm(self) -> None:
        """Import what `visualize heatmap` needs and render one, so that forked jobs start warm.

        Leaves no figure, thread, logging handler or environment change behind, and prints nothing.
        Raises RuntimeError when the heatmap fails: zyra is not usable here.
        """
        _use_agg()
        prepare_cartopy()
        import matplotlib.pyplot as plt
        import numpy as np

        workdir = Path(tempfile.mkdtemp(prefix="jobgate-zyra-warm-"))
        try:
            np.save(workdir / "warm.npy", np.arange(12, dtype=np.float64).reshape(3, 4))
            argv = [
                "visualize",
                "heatmap",
                f"--input={workdir / 'warm.npy'}",
                f"--output={workdir / 'warm.png'}",
                "--no-coastline",
                "--no-borders",
                "--no-gridlines",
            ]
            with tempfile.TemporaryFile() as captured:
                with _process_state_kept(), _fds_into(captured):
                    code = self.run(argv)
                if code != 0 or not (workdir / "warm.png").is_file():
                    captured.seek(0)
                    tail = captured.read()[-2000:].decode("utf-8", "replace")
                    raise RuntimeError(f"zyra warm-up heatmap failed with exit code {code}: {tail}")
        finally:
            plt.close("all")
            shutil.rmtree(workdir, ignore_errors=True)

    def run(self, argv: list[str]) -> int:
        """Run one command in this process; the caller handles SystemExit and other exceptions."""
        if _VERSION_WORDS.intersection(argv):
            sys.stderr.write("zyra reads '--version' and '-V' anywhere in argv; they cannot be values.\n")
            return 2
        _use_agg()
        prepare_cartopy()
        from zyra.cli import main

        code: object = main(zyra_argv(argv))
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        sys.stderr.write(f"{code}\n")
        return 1


# Natural Earth's coastlines and borders, shipped with the runtime (functions/worker/runtime.py puts them
# there in the worker image and under `make install`): cartopy reads them instead of downloading them.
NATURAL_EARTH_DIR = Path(sys.prefix) / "share" / "cartopy"


def prepare_cartopy() -> None:
    """cartopy and zyra as jobs use them: the shipped Natural Earth, zyra's gridlines drawable, and
    `visualize animate` able to end.

    zyra 0.1.56's animate reads `ns.manifest`, which its parser never defines: every frames animation
    fails with AttributeError after writing its frames. It gets None, zyra's own default (the manifest
    beside the frames).

    zyra 0.1.56 asks for gridlines by setting the gridliner's locators to None ("let Cartopy choose"),
    which no cartopy release accepts: drawing then fails with AttributeError whatever the matplotlib.
    A None locator is taken back to the one cartopy chose when the gridliner was made.
    """
    import cartopy
    from cartopy.mpl import gridliner
    from zyra.visualization import cli_animate

    if (NATURAL_EARTH_DIR / "shapefiles" / "natural_earth").is_dir():
        cartopy.config["pre_existing_data_dir"] = NATURAL_EARTH_DIR
    animate = cli_animate._handle_animate_impl
    if not getattr(animate, "_jobgate_manifest_default", False):

        def animate_with_manifest(ns: argparse.Namespace) -> Any:
            if not hasattr(ns, "manifest"):
                ns.manifest = None
            return animate(ns)

        animate_with_manifest._jobgate_manifest_default = True  # type: ignore[attr-defined]
        cli_animate._handle_animate_impl = animate_with_manifest
    draw = gridliner.Gridliner._draw_gridliner
    if getattr(draw, "_jobgate_keeps_locators", False):
        return
    made = gridliner.Gridliner.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        self._jobgate_locators = (self.xlocator, self.ylocator)

    def draw_with_locators(self: Any, *args: Any, **kwargs: Any) -> Any:
        defaults = getattr(self, "_jobgate_locators", (None, None))
        self.xlocator = self.xlocator or defaults[0]
        self.ylocator = self.ylocator or defaults[1]
        return draw(self, *args, **kwargs)

    draw_with_locators._jobgate_keeps_locators = True  # type: ignore[attr-defined]
    gridliner.Gridliner.__init__ = init
    gridliner.Gridliner._draw_gridliner = draw_with_locators


def _use_agg() -> None:
    # No display in Lambda; Agg also keeps pyplot from probing for GUI toolkits.
    import matplotlib

    matplotlib.use("Agg")


@contextlib.contextmanager
def _process_state_kept() -> Iterator[None]:
    """Undo what zyra.cli.main changes in the process: root logging set-up and its env variables."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    env = {k: os.environ.get(k) for k in _ZYRA_ENV}
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _fds_into(sink: IO[bytes]) -> Iterator[None]:
    """File descriptors 1 and 2 into `sink` for a while.

    At the descriptor level, not by swapping sys.stdout: a logging handler made meanwhile keeps
    the real sys.stderr, which the executor rebinds to each job's pipe.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])

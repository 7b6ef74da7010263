"""Zyra's contracts, read from its real parsers, checked against zyra.cli.main's parsing and a real run."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import zyra.cli
from jobgate.commandsets.argparse_contracts import Override, contracts_from_parser
from jobgate.commandsets.zyra import (
    EXCLUDED_STAGES,
    OVERRIDES,
    STAGE_ALIASES,
    STANDALONE_STAGES,
    ZyraCommandSet,
    zyra_argv,
)
from jobgate.errors import ValidationFailed
from jobgate.services.registry import Registry, build_argv

pytestmark = pytest.mark.zyra

ASSET = "01M80G82VFZG5B1Y0MBH77WVV5"
ASSET2 = "01M80G82VFZG5B1Y0MBH77WVV6"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Stages zyra.cli.main registers only when they are the word given.
LAZY_STAGES = ("swarm", "plan", "optimize")


class _Stop(Exception):
    def __init__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace | None) -> None:
        super().__init__("stopped before the command ran")
        self.parser = parser
        self.namespace = namespace


def zyra_main_parses(argv: list[str], *, parse: bool) -> _Stop:
    """Run zyra.cli.main up to its parse_args: its real root parser, and the namespace if `parse`."""
    original = argparse.ArgumentParser.parse_args

    def stop(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> Any:
        raise _Stop(self, original(self, args, namespace) if parse else None)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", stop), pytest.raises(_Stop) as caught:
        zyra.cli.main(argv)
    return caught.value


def zyra_parse(jobgate_argv: list[str]) -> argparse.Namespace:
    """How zyra itself reads an argv that build_argv made."""
    namespace = zyra_main_parses(zyra_argv(jobgate_argv), parse=True).namespace
    assert namespace is not None
    return namespace


def sub_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def real_dests(parser: argparse.ArgumentParser) -> set[str]:
    skipped = (argparse._HelpAction, argparse._SubParsersAction)
    return {a.dest for a in parser._actions if not isinstance(a, skipped)}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_command_sets([ZyraCommandSet()])


@pytest.fixture(scope="module")
def zyra_stages() -> dict[str, argparse.ArgumentParser]:
    """Every stage zyra.cli.main registers: the full tree it builds for no stage, plus the lazy ones."""
    stages = sub_parsers(zyra_main_parses([], parse=False).parser)
    for word in LAZY_STAGES:
        stages.update(sub_parsers(zyra_main_parses([word], parse=False).parser))
    return stages


def check_errors(registry: Registry, stage: str, command: str, args: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        registry.check(stage, command, args)
    return {e["loc"][-1]: e["msg"] for e in caught.value.errors}


def test_every_stage_zyra_registers_is_offered_aliased_or_excluded(
    registry: Registry, zyra_stages: dict[str, argparse.ArgumentParser]
) -> None:
    offered = registry.stages()
    canonical = set(zyra_stages) - set(STAGE_ALIASES) - set(EXCLUDED_STAGES)
    assert set(offered) == canonical
    assert set(EXCLUDED_STAGES) <= set(zyra_stages)
    for stage in canonical:
        commands = set(sub_parsers(zyra_stages[stage]))
        if stage in STANDALONE_STAGES:
            commands.add(stage)
        assert set(offered[stage]) == commands, stage
    for alias, stage in STAGE_ALIASES.items():
        # `transform` registers a subset of `process`; each alias command must resolve.
        for command in sub_parsers(zyra_stages[alias]):
            assert registry.get(alias, command).stage == stage


def test_each_contract_has_the_arguments_of_zyras_own_parser(
    registry: Registry, zyra_stages: dict[str, argparse.ArgumentParser]
) -> None:
    for contract in registry.contracts():
        stage_parser = zyra_stages[contract.stage]
        if contract.command == contract.stage:
            parser = stage_parser
        else:
            parser = sub_parsers(stage_parser)[contract.command]
        excluded = {d for d, o in OVERRIDES.get((contract.stage, contract.command), {}).items() if o.exclude}
        offered = {p.dest for p in contract.params}
        assert len(offered) == len(contract.params), f"{contract.stage} {contract.command}: a dest twice"
        missing = real_dests(parser) - offered - excluded
        if contract.stage == "search" and contract.command == "search":
            assert missing == {"query"}  # the positional the sub-parsers action always takes
        else:
            assert missing == set(), f"{contract.stage} {contract.command}"
        assert not offered & excluded


def test_heatmap_contract_marks_its_files(registry: Registry) -> None:
    params = {p.dest: p for p in registry.get("visualize", "heatmap").params}
    assert params["input"].role == "input"
    assert {"application/x-npy", "application/x-netcdf", "image/tiff"} <= set(params["input"].media_types)
    assert (params["inputs"].role, params["inputs"].multiple, params["inputs"].nargs) == ("input", True, "+")
    assert params["inputs"].media_types == params["input"].media_types
    assert params["output"].role == "output"
    assert params["output_dir"].role == "output_dir"
    assert (params["output_names"].role, params["output_names"].multiple) == ("value", True)
    assert params["basemap"].role == "path"
    assert (params["no_coastline"].kind, params["no_coastline"].flags) == ("flag", ["--no-coastline"])
    assert (params["width"].type, params["width"].default) == ("integer", 1024)
    assert (params["extent"].type, params["extent"].multiple) == ("number", True)
    assert params["map_type"].choices == ["image", "tile"]
    assert "help" not in params


def test_other_offline_commands_mark_their_files(registry: Registry) -> None:
    def role(stage: str, command: str, dest: str) -> tuple[str, list[str]]:
        spec = registry.get(stage, command).param(dest)
        assert spec is not None, f"{stage} {command} {dest}"
        return spec.role, spec.media_types

    assert role("visualize", "timeseries", "input") == (
        "input",
        ["text/csv", "application/x-netcdf", "application/netcdf"],
    )
    assert role("visualize", "vector", "u")[0] == role("visualize", "vector", "v")[0] == "input"
    assert role("visualize", "compose-video", "frames") == ("path", [])
    assert role("visualize", "compose-video", "output") == ("output", [])
    assert role("process", "scan-frames", "frames_dir") == ("path", [])
    assert role("process", "pad-missing", "frames_meta") == ("input", ["application/json"])
    assert role("process", "pad-missing", "output_dir") == ("output_dir", [])
    assert role("export", "local", "input") == ("input", [])
    assert role("export", "local", "path") == ("output", [])


def test_arguments_that_reach_any_file_are_not_offered(registry: Registry) -> None:
    assert registry.get("process", "video-transcode").param("extra_args") is None
    assert registry.get("acquire", "api").param("data") is None
    assert registry.get("search", "api").param("json_body") is None


def test_alias_spellings_of_one_argument_are_one_param(registry: Registry) -> None:
    fps = [p for p in registry.get("process", "video-transcode").params if p.dest == "fps"]
    assert len(fps) == 1
    assert fps[0].flags == ["--fps", "--framerate"]


def test_help_with_a_stray_percent_is_kept_literally(registry: Registry) -> None:
    # `zyra process metadata --help` crashes on this text; the contract keeps it as written.
    spec = registry.get("process", "metadata").param("datetime_format")
    assert spec is not None
    assert spec.help == "Datetime format used in filenames (e.g., %Y%m%d%H%M%S)"
    thredds = registry.get("acquire", "thredds").param("date_format")
    assert thredds is not None and "(e.g., %Y%m%d)" in thredds.help


def test_check_names_each_bad_field(registry: Registry) -> None:
    errors = check_errors(
        registry,
        "visualize",
        "heatmap",
        {"bogus": 1, "width": "wide", "map_type": "globe", "input": "/etc/passwd", "no_borders": "yes"},
    )
    assert set(errors) == {"bogus", "width", "map_type", "input", "no_borders"}
    assert "unknown argument" in errors["bogus"]
    assert errors["width"] == "must be an integer"
    assert "one of" in errors["map_type"]
    assert "asset://" in errors["input"]
    missing = check_errors(registry, "visualize", "timeseries", {"x": "time"})
    assert missing == {"input": "required", "output": "required"}


@pytest.mark.parametrize(
    ("stage", "command", "name", "value"),
    [
        ("visualize", "heatmap", "width", 1e30),
        ("visualize", "heatmap", "width", 10**30),
        ("visualize", "heatmap", "height", 0),
        ("visualize", "contour", "dpi", 100_000),
        ("visualize", "animate", "fps", -1),
        ("visualize", "animate", "particles", 10**9),
        ("process", "reproject", "width", "99999999"),
    ],
)
def test_numbers_that_size_an_image_or_a_video_are_bounded(
    registry: Registry, stage: str, command: str, name: str, value: object
) -> None:
    errors = check_errors(
        registry,
        stage,
        command,
        {name: value, "output": "x.png"} if command != "reproject" else {name: value},
    )
    assert errors[name].startswith(("must be at most", "must be at least")), errors


def test_sizes_within_their_bounds_pass(registry: Registry) -> None:
    args = {"width": 800, "height": 400, "dpi": 150, "output": "x.png", "input": "asset://" + "A" * 26}
    assert registry.check("visualize", "heatmap", args).args["width"] == 800
    spec = registry.get("visualize", "heatmap").param("width")
    assert spec is not None and (spec.minimum, spec.maximum) == (1, 8192)


def test_values_that_argparse_would_read_as_flags_are_refused(registry: Registry) -> None:
    errors = check_errors(
        registry,
        "render",
        "heatmap",
        {"inputs": [f"asset://{ASSET}"], "output_dir": "frames", "output_names": ["--output=/etc/x"]},
    )
    assert "output_names" in errors
    assert "--" in check_errors(registry, "visualize", "heatmap", {"label": "--"})["label"]
    ok = registry.check("visualize", "heatmap", {"extent": [-180, 180, -90.5, 90], "label": "-x"})
    assert ok.args["extent"] == [-180, 180, -90.5, 90]


def test_flag_spellings_are_accepted_as_their_dest(registry: Registry) -> None:
    inv = registry.check(
        "render",
        "heatmap",
        {"input": f"asset://{ASSET}", "output": "map.png", "no-coastline": True, "--no-borders": True},
    )
    assert inv.contract.stage == "visualize"
    assert inv.args["no_coastline"] is True and inv.args["no_borders"] is True
    assert registry.check(
        "process", "video-transcode", {"input": f"asset://{ASSET}", "framerate": 12}
    ).args == {
        "input": f"asset://{ASSET}",
        "fps": 12,
    }
    assert registry.check("search", "api", {"url": ["https://a"], "query": "sst"}).args["api_query"] == "sst"


def test_heatmap_argv_parses_back_in_zyra(registry: Registry) -> None:
    inv = registry.check(
        "visualize",
        "heatmap",
        {
            "inputs": [f"asset://{ASSET}", f"asset://{ASSET2}"],
            "output_dir": "frames",
            "output_names": ["a.png", "b.png"],
            "extent": [-180, 180, -90, 90],
            "width": "256",
            "label": "--output=/etc/x",
            "no-coastline": True,
            "colorbar": True,
        },
    )
    paths = {"inputs[0]": "in/one.npy", "inputs[1]": "in/two.npy"}
    ns = zyra_parse(build_argv(inv.args, inv.contract, paths))
    assert (ns.cmd, ns.visualize_cmd) == ("visualize", "heatmap")
    assert ns.inputs == ["in/one.npy", "in/two.npy"]
    assert (ns.output_dir, ns.output_names) == ("frames", ["a.png", "b.png"])
    assert ns.extent == [-180.0, 180.0, -90.0, 90.0]
    assert (ns.width, ns.label, ns.output) == (256, "--output=/etc/x", None)
    assert (ns.no_coastline, ns.colorbar, ns.no_borders) == (True, True, False)


def test_positionals_after_the_separator_parse_back_in_zyra(registry: Registry) -> None:
    inv = registry.check("export", "local", {"input": f"asset://{ASSET}", "path": "out/copy.npy"})
    ns = zyra_parse(build_argv(inv.args, inv.contract, {"input": "in/field.npy"}))
    assert (ns.cmd, ns.input, ns.path) == ("disseminate", "in/field.npy", "out/copy.npy")

    inv = registry.check(
        "process",
        "extract-variable",
        {"file_or_url": f"asset://{ASSET}", "pattern": "-TMP:2 m", "stdout": True},
    )
    argv = build_argv(inv.args, inv.contract, {"file_or_url": "in/gfs.grib2"})
    ns = zyra_parse(argv)
    assert (ns.file_or_url, ns.pattern, ns.stdout) == ("in/gfs.grib2", "-TMP:2 m", True)


def test_pipelines_are_not_offered_as_one_unchecked_command(registry: Registry) -> None:
    # `zyra run` would run stages and paths that no contract checks.
    assert "run" not in registry.stages()
    with pytest.raises(ValidationFailed):
        registry.check("run", "run", {"config": f"asset://{ASSET}"})


def test_standalone_stage_argv_parses_back_in_zyra(registry: Registry) -> None:
    inv = registry.check("search", "search", {"q": "tsunami", "limit": 2, "offline": True})
    argv = build_argv(inv.args, inv.contract, {})
    assert argv[:2] == ["search", "search"] and zyra_argv(argv) == ["search", *argv[2:]]
    ns = zyra_parse(argv)
    assert (ns.cmd, ns.search_cmd, ns.q, ns.limit, ns.offline) == ("search", None, "tsunami", 2, True)

    inv = registry.check("search", "api", {"url": ["https://a", "https://b"], "api_query": "sst"})
    ns = zyra_parse(build_argv(inv.args, inv.contract, {}))
    assert (ns.search_cmd, ns.url, ns.api_query) == ("api", ["https://a", "https://b"], "sst")


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    for key in ("ZYRA_VERBOSITY", "DATAVIZHUB_VERBOSITY"):
        monkeypatch.delenv(key, raising=False)
    yield tmp_path


def test_run_renders_a_heatmap_from_a_checked_request(registry: Registry, in_tmp: Path) -> None:
    (in_tmp / "in").mkdir()
    y, x = np.mgrid[0:12, 0:24]
    np.save(in_tmp / "in" / "field.npy", np.sin(x / 4.0) * np.cos(y / 3.0))
    inv = registry.check(
        "visualize",
        "heatmap",
        {
            "input": f"asset://{ASSET}",
            "output": "field.png",
            "no_coastline": True,
            "no_borders": True,
            "no_gridlines": True,
            "width": 128,
            "height": 64,
        },
    )
    argv = build_argv(inv.args, inv.contract, {"input": "in/field.npy"})
    assert ZyraCommandSet().run(argv) == 0
    assert (in_tmp / "field.png").read_bytes().startswith(PNG_MAGIC)


def test_run_refuses_words_zyra_takes_for_a_version_request(in_tmp: Path) -> None:
    code = ZyraCommandSet().run(["disseminate", "local", "--input=a", "--", "-V"])
    assert code == 2
    assert not (in_tmp / "-V").exists()


def test_warm_renders_once_and_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.pyplot as plt

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("ZYRA_VERBOSITY", raising=False)
    # As in the worker: no handler on the root logger yet (pytest's own would make zyra add none).
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    threads = threading.active_count()
    ZyraCommandSet().warm()
    assert plt.get_fignums() == []
    assert threading.active_count() == threads
    assert logging.getLogger().handlers == []
    assert "ZYRA_VERBOSITY" not in os.environ
    assert list(tmp_path.iterdir()) == []
    assert "zyra.visualization.heatmap_manager" in sys.modules


def test_argparse_kinds_zyra_does_not_use_yet_are_read_too() -> None:
    root = argparse.ArgumentParser(prog="tool")
    stage = root.add_subparsers(dest="stage").add_parser("gen", help="Generate rows")
    stage.add_argument("--version", action="version", version="1")
    stage.add_argument("--rows", type=int, default=10, help="rows (default: %(default)s), 100%")
    stage.add_argument("--mode", choices={"b", "a"}, default=argparse.SUPPRESS)
    stage.add_argument("-v", action="count", default=0)
    stage.add_argument("--color", action=argparse.BooleanOptionalAction)
    stage.add_argument("--pair", nargs=2, type=float, default=(0.5, 1.5))
    stage.add_argument("--when", type=lambda s: s, default=object())
    stage.add_argument("names", nargs="*")
    [contract] = contracts_from_parser(
        root, "demo", overrides={("gen", "gen"): {"names": Override(role="output", media_types=())}}
    )
    assert (contract.stage, contract.command, contract.summary) == ("gen", "gen", "Generate rows")
    got = {p.dest: p for p in contract.params}
    assert list(got) == ["rows", "mode", "v", "color", "pair", "when", "names"]
    assert (got["rows"].type, got["rows"].default, got["rows"].help) == (
        "integer",
        10,
        "rows (default: 10), 100%",
    )
    assert (got["mode"].choices, got["mode"].default) == (["a", "b"], None)
    assert (got["v"].kind, got["color"].kind, got["color"].flags) == (
        "flag",
        "flag",
        ["--color", "--no-color"],
    )
    assert (got["pair"].multiple, got["pair"].nargs, got["pair"].default) == (True, 2, [0.5, 1.5])
    assert (got["when"].type, got["when"].default) == ("string", None)
    assert (got["names"].kind, got["names"].multiple, got["names"].required) == ("positional", True, False)
    assert got["names"].role == "output"
    with pytest.raises(ValueError, match="unknown argument"):
        contracts_from_parser(root, "demo", overrides={("gen", "gen"): {"nope": Override(role="input")}})


def test_every_bounded_default_is_within_its_bounds(registry: Registry) -> None:
    for contract in registry.contracts():
        for spec in contract.params:
            if spec.minimum is not None and isinstance(spec.default, int | float):
                assert spec.minimum <= spec.default <= (spec.maximum or spec.default), (
                    contract.command,
                    spec,
                )

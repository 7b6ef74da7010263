"""Checks a request must pass before anything is queued, on a contract made for the test."""

from __future__ import annotations

import pytest
from jobgate.errors import ValidationFailed
from jobgate.services.registry import CommandContract, ParamSpec, Registry, build_argv, check_relative_path

ASSET = "01M80G82VFZG5B1Y0MBH77WVV5"


@pytest.fixture
def registry() -> Registry:
    contract = CommandContract(
        command_set="demo",
        stage="draw",
        command="map",
        params=[
            ParamSpec(dest="input", flags=["-i", "--input"], kind="option", role="input", required=True),
            ParamSpec(dest="output", flags=["--output"], kind="option", role="output", required=True),
            ParamSpec(dest="levels", flags=["--levels"], kind="option", type="integer"),
            ParamSpec(dest="alpha", flags=["--alpha"], kind="option", type="number"),
            ParamSpec(dest="cmap", flags=["--cmap"], kind="option", choices=["viridis", "magma"]),
            ParamSpec(dest="no_coastline", flags=["--no-coastline"], kind="flag"),
            ParamSpec(dest="names", flags=["--names"], kind="option", multiple=True, nargs="+"),
            ParamSpec(dest="title", flags=["--title"], kind="option"),
            ParamSpec(dest="dest", kind="positional", role="path", required=True),
        ],
    )
    return Registry([contract], aliases={"render": "draw"})


def errors_of(registry: Registry, args: dict[str, object]) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        registry.check("draw", "map", args)
    return {e["loc"][-1]: e["msg"] for e in caught.value.errors}


def base(**extra: object) -> dict[str, object]:
    return {"input": f"asset://{ASSET}", "output": "out.png", "dest": "copy/out.png", **extra}


def test_valid_request_is_normalized_with_its_inputs(registry: Registry) -> None:
    inv = registry.check("render", "map", base(levels="5", **{"no-coastline": True}))
    assert inv.args["levels"] == 5
    assert inv.args["no_coastline"] is True
    assert inv.inputs == {"input": ASSET}
    assert inv.contract.stage == "draw"


def test_unknown_stage_and_command_name_the_field(registry: Registry) -> None:
    with pytest.raises(ValidationFailed) as stage:
        registry.check("paint", "map", {})
    assert stage.value.errors[0]["loc"] == ["body", "stage"]
    with pytest.raises(ValidationFailed) as command:
        registry.check("draw", "globe", {})
    assert command.value.errors[0]["loc"] == ["body", "command"]


def test_each_bad_argument_is_named(registry: Registry) -> None:
    errs = errors_of(
        registry, {"levels": "many", "alpha": "x", "cmap": "jet", "bogus": 1, "no_coastline": "yes"}
    )
    assert set(errs) == {"levels", "alpha", "cmap", "bogus", "no_coastline", "input", "output", "dest"}
    assert errs["input"] == "required"
    assert "one of" in errs["cmap"]


def test_input_must_be_an_asset_reference(registry: Registry) -> None:
    assert "asset://" in errors_of(registry, base(input="/etc/passwd"))["input"]
    assert "asset id" in errors_of(registry, base(input="asset://nope"))["input"]


@pytest.mark.parametrize("path", ["/etc/x", "../up", "a/../../b", "~/x", "-rf", ""])
def test_paths_stay_inside_the_work_folder(registry: Registry, path: str) -> None:
    assert "output" in errors_of(registry, base(output=path))


def test_relative_paths_inside_are_fine() -> None:
    assert check_relative_path("frames/out.png") == []
    assert check_relative_path("a/./b/../c.png") == []


def test_argv_passes_values_that_look_like_flags_as_values(registry: Registry) -> None:
    inv = registry.check("draw", "map", base(title="--output=/etc/x", names=["a", "b"], no_coastline=True))
    argv = build_argv(inv.args, inv.contract, {"input": "inputs/x/field.npy"})
    assert argv[:2] == ["draw", "map"]
    assert "--input=inputs/x/field.npy" in argv
    assert "--title=--output=/etc/x" in argv
    assert "--no-coastline" in argv
    i = argv.index("--names")
    assert argv[i + 1 : i + 3] == ["a", "b"]
    assert argv[-2:] == ["--", "copy/out.png"]

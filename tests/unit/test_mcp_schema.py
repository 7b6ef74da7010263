"""A command's contract as an MCP tool's input schema: what the schema accepts, the API accepts."""

from __future__ import annotations

from typing import Any

import pytest
from jobgate.client.models import CommandContract
from jobgate.errors import ValidationFailed
from jobgate.mcp.schema import TOOL_NAME_RE, input_schema, param_schema, tool_name
from jobgate.services.registry import Registry, check_args
from jsonschema import Draft202012Validator

REGISTRY = Registry.from_entry_points()
ASSET = "asset://01ARZ3NDEKTSV4RRFFQ69G5FAV"


def client_contract(stage: str, command: str) -> CommandContract:
    """The contract as the API answers it and the MCP server reads it (the client's model)."""
    return CommandContract.model_validate(REGISTRY.get(stage, command).model_dump(mode="json"))


def schema_accepts(contract: CommandContract, args: dict[str, Any]) -> bool:
    return Draft202012Validator(input_schema(contract)).is_valid(args)


def api_accepts(stage: str, command: str, args: dict[str, Any]) -> bool:
    try:
        check_args(REGISTRY.get(stage, command), args)
    except ValidationFailed:
        return False
    return True


@pytest.mark.parametrize("contract", REGISTRY.contracts(), ids=lambda c: f"{c.stage}-{c.command}")
def test_every_contract_maps_to_a_valid_schema_keyed_by_its_params(contract: Any) -> None:
    seen = CommandContract.model_validate(contract.model_dump(mode="json"))
    schema = input_schema(seen)
    Draft202012Validator.check_schema(schema)
    assert set(schema["properties"]) == {p.dest for p in contract.params}
    required = {p.dest for p in contract.params if p.required and p.kind != "flag"}
    assert set(schema.get("required", [])) == required
    assert TOOL_NAME_RE.match(tool_name(contract.stage, contract.command))


def test_heatmap_params_map_to_their_json_types() -> None:
    properties = input_schema(client_contract("visualize", "heatmap"))["properties"]
    assert properties["no_coastline"]["type"] == "boolean"
    assert properties["band"] == {**properties["band"], "type": "integer", "default": 1}
    assert properties["extent"]["type"] == "array"
    assert properties["extent"]["items"] == {"type": "number"}
    assert properties["extent"]["minItems"] == 1  # nargs "+"
    assert properties["input"]["type"] == "string"
    assert "asset://" in properties["input"]["description"]
    assert "output link" in properties["output"]["description"]


def test_choices_bounds_and_fixed_counts_carry_over() -> None:
    reproject = input_schema(client_contract("process", "reproject"))["properties"]
    assert reproject["width"]["minimum"] == 1 and reproject["width"]["maximum"] == 8192
    assert reproject["resampling"]["enum"] == ["bilinear", "nearest"]
    fixed = next(
        (contract, p)
        for contract in REGISTRY.contracts()
        for p in contract.params
        if isinstance(p.nargs, int)
    )
    [param] = [
        p
        for p in CommandContract.model_validate(fixed[0].model_dump(mode="json")).params
        if p.dest == fixed[1].dest
    ]
    mapped = param_schema(param)
    assert mapped["type"] == "array" and mapped["minItems"] == mapped["maxItems"] == fixed[1].nargs


@pytest.mark.parametrize(
    ("args", "accepted"),
    [
        ({"input": ASSET, "output": "map.png", "no_coastline": True, "extent": [-10, 10, -5, 5]}, True),
        ({"input": ASSET, "output": "map.png", "band": 2, "cmap": "viridis"}, True),
        ({"input": ASSET, "no_coastline": "yes"}, False),  # a flag is true or false
        ({"input": ASSET, "extent": []}, False),  # nargs "+": at least one
        ({"input": ASSET, "band": "two"}, False),
        ({"input": "field.npy"}, False),  # a file argument names an upload or a job's output
        ({"input": ASSET, "no_such_option": 1}, False),
    ],
)
def test_the_schema_and_the_api_agree_on_heatmap_args(args: dict[str, Any], accepted: bool) -> None:
    assert api_accepts("visualize", "heatmap", args) is accepted
    assert schema_accepts(client_contract("visualize", "heatmap"), args) is accepted


def test_a_required_arg_is_required_by_both() -> None:
    contract = client_contract("synth", "generate")
    complete = {"schema": ASSET, "rows": 5, "output": "part.csv"}
    assert api_accepts("synth", "generate", complete) and schema_accepts(contract, complete)
    partial = {"schema": ASSET, "output": "part.csv"}
    assert not api_accepts("synth", "generate", partial) and not schema_accepts(contract, partial)

"""The command registry, with each command's contract."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from jobgate.api.deps import RegistryDep, TenantDep
from jobgate.api.schemas import CommandList, CommandSummary
from jobgate.services.registry import CommandContract

router = APIRouter(prefix="/v1/commands", tags=["commands"])


@router.get("", response_model=CommandList)
def list_commands(
    registry: RegistryDep,
    _tenant: TenantDep,
    contracts: Annotated[
        bool, Query(description="Include each command's whole contract (one request for a client's catalog).")
    ] = False,
) -> CommandList:
    items = [
        CommandSummary(
            stage=c.stage,
            command=c.command,
            command_set=c.command_set,
            summary=c.summary,
            href=f"/v1/commands/{c.stage}/{c.command}",
            contract=c if contracts else None,
        )
        for c in registry.contracts()
    ]
    return CommandList(stages=registry.stages(), items=items)


@router.get("/{stage}/{command}", response_model=CommandContract)
def get_command(stage: str, command: str, registry: RegistryDep, _tenant: TenantDep) -> CommandContract:
    return registry.get(stage, command)

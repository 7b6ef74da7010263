"""The parts the local stack is made of, beyond moto and the function sandboxes.

The HTTP gateway and the SQS event sources are components; the WebSocket gateway (with its
``@connections`` endpoint) plugs in the same way: it reserves its port, says which template resources
it plays and which function sandboxes it needs, and starts once the functions are warm.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

from .functions import FunctionPool
from .provision import ProvisionedStack
from .template import Resolver, Template


@dataclass(frozen=True)
class RunningStack:
    """What a component can use once the resources exist and the functions are warm."""

    template: Template
    provisioned: ProvisionedStack
    resolver: Resolver
    pools: Mapping[str, FunctionPool]
    executor: Executor

    @property
    def endpoint_url(self) -> str:
        return self.provisioned.endpoint_url


class Component(Protocol):
    name: str

    def reserve(self) -> None:
        """Bind listening ports now; raise :class:`~jobgate_local.procs.PortInUseError` if one is taken."""

    def played_resources(self, template: Template) -> Mapping[str, Mapping[str, str]]:
        """Template resources this component plays: logical id -> {"Ref": ..., "<GetAtt name>": ...}."""

    def function_environment(self) -> Mapping[str, str]:
        """Variables every function gets on top of the template's (local URLs, say)."""

    def sandboxes(self, template: Template) -> Mapping[str, int]:
        """How many concurrent sandboxes this component needs per function logical id."""

    async def start(self, stack: RunningStack) -> None: ...

    async def stop(self) -> None: ...

    def urls(self) -> Mapping[str, str]:
        """What users should know, for the banner and the state file (name -> URL)."""

"""One client implementation: jobgate.client.sync is generated from jobgate.client.aio, and is current."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "generate_sync_client.py"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_sync_client", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_synchronous_client_is_what_the_asyncio_one_makes() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_a_change_to_the_asyncio_client_reaches_the_synchronous_one(generator: ModuleType) -> None:
    source = (ROOT / "layers/jobgate/jobgate/client/aio.py").read_text()
    changed = source.replace(
        "    async def health(self) -> dict[str, Any]:",
        "    async def ping(self) -> bool:\n        return (await self.health()) is not None\n\n"
        "    async def health(self) -> dict[str, Any]:",
    )
    made = generator.generate(changed)
    assert "    def ping(self) -> bool:\n        return (self.health()) is not None" in made
    assert "async " not in made and "await " not in made and "AsyncClient(" not in made

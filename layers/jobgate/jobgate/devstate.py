"""Where this checkout's `jobgate dev` runs: the state file it writes, found from any folder inside.

`jobgate dev` keeps its state in `.jobgate/` where it was started (the checkout's root under `make dev`):
`dev.json` while it runs (its URLs, the dev API key, the local AWS endpoint, region and credentials,
resource names), and the dev API key and the saved local AWS across restarts. The CLI, the SDK and the
admin commands look for `.jobgate/dev.json` in the working folder and each folder above it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STATE_DIR = ".jobgate"
STATE_FILE = "dev.json"


def find_state_file(start: Path | None = None) -> Path | None:
    """The nearest `.jobgate/dev.json` from `start` (the working folder) up to the root, if any."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / STATE_DIR / STATE_FILE
        if candidate.is_file():
            return candidate
    return None


def read_state(path: Path | None) -> dict[str, Any]:
    """What a state file says; empty when there is none or it cannot be read (a stack stopping)."""
    if path is None:
        return {}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}

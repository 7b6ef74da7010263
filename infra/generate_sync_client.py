"""Write jobgate.client.sync from jobgate.client.aio: one client implementation, two interfaces.

unasync removes `async` and `await` and renames the asyncio names (the table below); the asyncio client
reaches what differs beyond that through `_io` (`_async_io`, which becomes `_sync_io`). The few texts that
are the asyncio client's own (its docstrings, a type only the synchronous one spells out) are replaced
whole. The result is formatted as `make lint` wants it.

    python infra/generate_sync_client.py           # write layers/jobgate/jobgate/client/sync.py
    python infra/generate_sync_client.py --check   # exit 1 when sync.py is not what aio.py makes
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import tokenize_rt
import unasync

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "layers/jobgate/jobgate/client/aio.py"
TARGET = ROOT / "layers/jobgate/jobgate/client/sync.py"

RENAMES = {
    "AsyncClient": "Client",
    "AsyncBaseTransport": "BaseTransport",
    "AsyncEventCallback": "EventCallback",
    "aclose": "close",
    "aread": "read",
    "aiter_bytes": "iter_bytes",
    "_async_io": "_sync_io",
    "asyncio": "sync",  # only in `websockets.asyncio.client`: the code itself sleeps and reads through _io
}
HEADER = '''"""The synchronous jobgate client: submit and run jobs, move files, follow progress.

Generated from jobgate/client/aio.py by infra/generate_sync_client.py (`make client`): edit that file,
then regenerate. Every call of `AsyncClient` is here, not awaited.
"""'''
CLASS_DOC = '''    """A client of one jobgate API.

    >>> with Client() as jg:  # JOBGATE_URL / JOBGATE_API_KEY, or a profile
    ...     result = jg.run("visualize", "heatmap", {"input": Path("field.npy"), "output": "map.png"},
    ...                     download_to="out")
    ...     result.exit_code, result.files

    `pathlib.Path` values in a job's args are local files: they are uploaded first and passed as
    `asset://<id>`. Errors are typed (`NotFound`, `ValidationError`, `RateLimited`, ...).
    """'''


def generate(source: str) -> str:
    rule = unasync.Rule("/aio/", "/sync/", additional_replacements=RENAMES)
    text = tokenize_rt.tokens_to_src(list(rule._unasync_tokens(tokenize_rt.src_to_tokens(source))))
    module_doc = re.match(r'"""(.*?)"""', text, re.DOTALL)
    class_doc = re.search(r'(?<=^class Client:\n)    """(.*?)"""', text, re.DOTALL | re.MULTILINE)
    if module_doc is None or class_doc is None:
        raise SystemExit("aio.py has no module or class docstring to replace")
    text = text[: class_doc.start()] + CLASS_DOC + text[class_doc.end() :]
    text = HEADER + text[module_doc.end() :]
    # `(await x).json()` leaves `(x).json()`; a sync generator is closable only if typed as one.
    text = re.sub(r"\((self\.(?:request|upload)\((?:[^()]|\([^()]*\))*\))\)\.", r"\1.", text)
    text = re.sub(r"Generator\[(\w+), None\]", r"Generator[\1, None, None]", text)
    return _formatted(text)


def _formatted(text: str) -> str:
    """ruff as `make lint` runs it, on the text as if it were sync.py: imports sorted (jobgate is
    first-party there), `for x in y: yield x` (what an async generator must spell) as `yield from y`."""
    ruff = [sys.executable, "-m", "ruff"]
    where = ["--config", str(ROOT / "pyproject.toml"), "--stdin-filename", str(TARGET)]
    fixes = ["check", "-q", "--fix-only", "--unsafe-fixes", "--select", "I,F401,UP028"]
    fixed = subprocess.run(
        [*ruff, *fixes, *where, "-"], input=text, capture_output=True, text=True, check=True
    )
    done = subprocess.run(
        [*ruff, "format", "-q", *where, "-"], input=fixed.stdout, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"ruff could not format the generated client: {done.stderr}")
    return done.stdout


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when sync.py is out of date")
    args = parser.parse_args(argv)
    wanted = generate(SOURCE.read_text())
    if args.check:
        if TARGET.read_text() != wanted:
            sys.stderr.write(f"{TARGET.relative_to(ROOT)} is not what aio.py makes: run `make client`\n")
            return 1
        return 0
    TARGET.write_text(wanted)
    sys.stdout.write(f"wrote {TARGET.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

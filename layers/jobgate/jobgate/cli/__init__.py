"""The `jobgate` command line: run jobs like local commands, plus `jobgate dev` and `jobgate keys`.

Nothing heavy is imported here: `jobgate dev` hands over to the local stack, `jobgate keys` to
the admin commands, `jobgate mcp` to the MCP server, and everything else to `jobgate.cli.commands`,
each imported when used.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """The `jobgate` console script; answers the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    # Sub-commands that belong to other packages; their own parsers read the whole command line.
    if args[:1] in (["dev"], ["invoke"]) or args[:2] == ["events", "new"]:
        return _dev(args)
    if args[:1] in (["keys"], ["admin"]):
        return _keys(args)
    if args[:1] == ["mcp"]:
        return _mcp(args[1:])
    from jobgate.cli.commands import run_cli

    return run_cli(args)


def _dev(args: list[str]) -> int:
    try:
        from jobgate_local.cli import main as dev_main
    except ImportError:
        sys.stderr.write(
            f"jobgate: `jobgate {args[0]}` needs the local stack: pip install 'jobgate[local]'\n"
        )
        return 2
    return dev_main(args)


def _mcp(args: list[str]) -> int:
    try:
        from jobgate.mcp.cli import main as mcp_main
    except ImportError as exc:
        sys.stderr.write(f"jobgate: `jobgate mcp` needs the MCP SDK: pip install 'jobgate[mcp]' ({exc})\n")
        return 2
    return mcp_main(args)


def _keys(args: list[str]) -> int:
    try:
        from jobgate.admin_cli import main as keys_main
    except ImportError as exc:
        sys.stderr.write(f"jobgate: `jobgate {args[0]}` is not available here: {exc}\n")
        return 2
    return keys_main(args)

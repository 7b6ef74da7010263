"""merge as a command set: a map's chunk outputs joined into one file, run as the map's merge job.

    merge concat --format csv|jsonl|text --input-dir chunks --output merged.csv

The worker stages every succeeded chunk's outputs into one folder, named so that they sort in chunk
order (`<chunk:05d>-<name>`); concat joins them in that order. A csv keeps the first file's header once
(the header of every other file is dropped); jsonl and text are joined byte for byte, with a newline
added where a file does not end with one.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import IO

from jobgate.commandsets.argparse_contracts import Override, Overrides, contracts_from_parser
from jobgate.services.registry import CommandContract

FORMATS = ("csv", "jsonl", "text")
OVERRIDES: Overrides = {
    ("merge", "concat"): {"input_dir": Override(role="path"), "output": Override(role="output")},
}


def build_root_parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="merge")
    stages = root.add_subparsers(dest="stage", required=True)
    commands = stages.add_parser("merge").add_subparsers(dest="command", required=True)
    concat = commands.add_parser("concat", help="join files in name order into one; a csv keeps one header")
    concat.add_argument("--format", choices=FORMATS, required=True, help="csv, jsonl or text")
    concat.add_argument("--input-dir", default="chunks", help="the folder of files to join")
    concat.add_argument("--output", required=True, help="the joined file")
    return root


class MergeCommandSet:
    """Joins a map's chunk outputs (csv with one header, jsonl, text)."""

    name = "merge"

    def __init__(self) -> None:
        self._contracts: list[CommandContract] | None = None

    def contracts(self) -> list[CommandContract]:
        if self._contracts is None:
            self._contracts = contracts_from_parser(build_root_parser(), self.name, overrides=OVERRIDES)
        return [c.model_copy(deep=True) for c in self._contracts]

    def warm(self) -> None:
        """Nothing to import: the standard library only."""

    def run(self, argv: list[str]) -> int:
        ns = build_root_parser().parse_args(argv)
        folder = Path(ns.input_dir)
        parts = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
        if not parts:
            sys.stderr.write(f"no files to join in {folder}\n")
            return 1
        output = Path(ns.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("wb") as sink:
            for index, part in enumerate(parts):
                with part.open("rb") as source:
                    if ns.format == "csv" and index > 0:
                        source.readline()  # every chunk's header but the first
                    _append(source, sink)
        sys.stderr.write(f"joined {len(parts)} files into {output}\n")
        return 0


def _append(source: IO[bytes], sink: IO[bytes]) -> None:
    """Copy the rest of `source`, ending it with a newline if it has none (the next part starts a line)."""
    start = source.tell()
    source.seek(0, 2)
    end = source.tell()
    if end == start:
        return
    source.seek(end - 1)
    newline = source.read(1) == b"\n"
    source.seek(start)
    shutil.copyfileobj(source, sink)
    if not newline:
        sink.write(b"\n")

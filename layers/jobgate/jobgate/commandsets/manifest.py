"""Command-set manifests: the live contracts as JSON, built where the CLIs are installed, read by the API.

python -m jobgate.commandsets.manifest export [--dir DIR]   write <set>.json for every installed set
python -m jobgate.commandsets.manifest check [--dir DIR]    exit 1 naming each difference
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from importlib.metadata import entry_points
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from jobgate.services.registry import ENTRY_POINT_GROUP, CommandContract, CommandSet, Registry, contracts_of

MANIFEST_DIR = Path(__file__).resolve().parent.parent / "manifests"
MAX_REPORTED = 40


def manifest_document(command_set: CommandSet) -> dict[str, Any]:
    """What a manifest holds for one command set; plain JSON values, in a stable order."""
    contracts = sorted(contracts_of(command_set), key=lambda c: (c.stage, c.command))
    aliases: dict[str, str] = dict(getattr(command_set, "stage_aliases", {}) or {})
    return {
        "command_set": command_set.name,
        "stage_aliases": dict(sorted(aliases.items())),
        "contracts": [c.model_dump(mode="json", exclude=_unset_new_fields(c)) for c in contracts],
    }


def _unset_new_fields(contract: CommandContract) -> set[str]:
    """Fields added to contracts later, left out while unset: a contract reads as it did before."""
    unset = {"secrets"} if not contract.secrets else set()
    return unset | ({"runner"} if contract.runner is None else set())


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def installed_command_sets() -> list[CommandSet]:
    """Every command set installed here, by entry point, sorted by name."""
    sets = [ep.load()() for ep in entry_points(group=ENTRY_POINT_GROUP)]
    return sorted(sets, key=lambda s: s.name)


def export(directory: Path = MANIFEST_DIR, sets: Iterable[CommandSet] | None = None) -> list[Path]:
    """Write one manifest per command set, and remove those of sets no longer installed."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for command_set in installed_command_sets() if sets is None else sets:
        path = directory / f"{command_set.name}.json"
        path.write_text(render(manifest_document(command_set)), encoding="utf-8")
        written.append(path)
    for stale in set(directory.glob("*.json")) - set(written):
        stale.unlink()
    return written


def check(directory: Path = MANIFEST_DIR, sets: Iterable[CommandSet] | None = None) -> list[str]:
    """Each difference between the manifests in `directory` and the live command sets."""
    problems: list[str] = []
    expected: set[str] = set()
    for command_set in installed_command_sets() if sets is None else sets:
        name = f"{command_set.name}.json"
        expected.add(name)
        path = directory / name
        if not path.is_file():
            problems.append(f"{name}: missing; run `python -m jobgate.commandsets.manifest export`")
            continue
        shipped = json.loads(path.read_text(encoding="utf-8"))
        problems.extend(f"{name}: {d}" for d in diff(shipped, manifest_document(command_set)))
    for path in sorted(directory.glob("*.json")):
        if path.name not in expected:
            problems.append(f"{path.name}: no installed command set has this manifest")
    return problems


def diff(shipped: Any, live: Any, where: str = "") -> list[str]:
    """Differences between two manifest documents, each naming where it is (contracts and params
    by name, not by position) and both values."""
    if isinstance(shipped, dict) and isinstance(live, dict):
        out: list[str] = []
        for key in sorted(set(shipped) | set(live), key=str):
            at = f"{where}.{key}" if where else str(key)
            if key not in live:
                out.append(f"{at}: in the manifest, not in the live registry")
            elif key not in shipped:
                out.append(f"{at}: in the live registry, not in the manifest")
            else:
                out.extend(diff(shipped[key], live[key], at))
        return out
    if isinstance(shipped, list) and isinstance(live, list) and _keyed(shipped) and _keyed(live):
        return diff(_by_key(shipped), _by_key(live), where)
    if shipped != live:
        return [f"{where}: manifest {json.dumps(shipped)[:200]}, live {json.dumps(live)[:200]}"]
    return []


def _keyed(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and ("dest" in i or "command" in i) for i in items)


def _by_key(items: list[dict[str, Any]]) -> dict[str, Any]:
    # Params keep their order on purpose (positionals are passed in it); an order change is a
    # difference too, reported as the order of the names.
    keyed: dict[str, Any] = {
        (f"[{i['stage']} {i['command']}]" if "command" in i else f"[{i['dest']}]"): i for i in items
    }
    if "dest" in items[0]:
        keyed["(order)"] = [i["dest"] for i in items]
    return keyed


def load_manifest_registry(extra_dirs: Sequence[str] = ()) -> Registry:
    """The registry from the shipped manifests, then those in `extra_dirs` (Settings.manifest_dirs; a
    file named as an earlier one replaces it): no command set is imported or runnable."""
    documents: dict[str, Any] = {}
    folders: list[Traversable] = [files("jobgate").joinpath("manifests"), *(Path(d) for d in extra_dirs)]
    for folder in folders:
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".json"):
                documents[entry.name] = json.loads(entry.read_text(encoding="utf-8"))
    contracts: list[CommandContract] = []
    aliases: dict[str, str] = {}
    for document in documents.values():
        contracts.extend(CommandContract.model_validate(c) for c in document["contracts"])
        aliases.update(document.get("stage_aliases", {}))
    return Registry(contracts, None, aliases)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobgate.commandsets.manifest")
    parser.add_argument("action", choices=["export", "check"])
    parser.add_argument(
        "--dir", type=Path, default=MANIFEST_DIR, help="manifest folder (default: %(default)s)"
    )
    ns = parser.parse_args(argv)
    if ns.action == "export":
        for path in export(ns.dir):
            sys.stdout.write(f"wrote {path}\n")
        return 0
    problems = check(ns.dir)
    for line in problems[:MAX_REPORTED]:
        sys.stderr.write(f"{line}\n")
    if len(problems) > MAX_REPORTED:
        sys.stderr.write(f"... and {len(problems) - MAX_REPORTED} more\n")
    if problems:
        sys.stderr.write(
            "The manifests differ from the live registry: `python -m jobgate.commandsets.manifest export`\n"
        )
        return 1
    sys.stdout.write("manifests match the live registry\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The shipped command manifests are the live registry, and the API can load them without zyra."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from jobgate.commandsets import manifest
from jobgate.errors import CommandSetUnavailable
from jobgate.services.registry import Registry

pytestmark = pytest.mark.zyra  # the live registry needs zyra installed

SHIPPED = manifest.MANIFEST_DIR / "zyra.json"


@pytest.fixture(scope="module")
def live() -> Registry:
    return Registry.from_entry_points()


def test_shipped_manifest_equals_the_live_registry() -> None:
    # When this fails: python -m jobgate.commandsets.manifest export, and commit the manifest.
    assert SHIPPED.is_file()
    assert manifest.check() == []


def test_export_writes_the_shipped_bytes_and_drops_stale_manifests(tmp_path: Path) -> None:
    (tmp_path / "gone.json").write_text("{}\n")
    written = manifest.export(tmp_path)
    assert [p.name for p in written] == ["merge.json", "synth.json", "zyra.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merge.json", "synth.json", "zyra.json"]
    assert (tmp_path / "zyra.json").read_bytes() == SHIPPED.read_bytes()
    assert (tmp_path / "synth.json").read_bytes() == (manifest.MANIFEST_DIR / "synth.json").read_bytes()
    assert SHIPPED.read_text().endswith("}\n")


def test_check_names_the_difference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(SHIPPED, tmp_path / "zyra.json")
    document = json.loads(SHIPPED.read_text())
    heatmap = next(c for c in document["contracts"] if (c["stage"], c["command"]) == ("visualize", "heatmap"))
    next(p for p in heatmap["params"] if p["dest"] == "input")["role"] = "value"
    document["contracts"] = [c for c in document["contracts"] if c["command"] != "timeseries"]
    (tmp_path / "zyra.json").write_text(json.dumps(document))
    (tmp_path / "other.json").write_text("{}")

    assert manifest.main(["check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert (
        'zyra.json: contracts.[visualize heatmap].params.[input].role: manifest "value", live "input"' in err
    )
    assert "zyra.json: contracts.[visualize timeseries]: in the live registry, not in the manifest" in err
    assert "other.json: no installed command set has this manifest" in err


def test_manifest_registry_answers_like_the_live_one(live: Registry) -> None:
    shipped = manifest.load_manifest_registry()
    assert [c.model_dump() for c in shipped.contracts()] == [c.model_dump() for c in live.contracts()]
    assert shipped.get("render", "heatmap").stage == "visualize"
    assert shipped.get("export", "local").stage == "disseminate"
    with pytest.raises(CommandSetUnavailable):
        shipped.command_set("zyra")


def test_loading_the_manifest_registry_imports_no_zyra() -> None:
    code = (
        "import json, sys\n"
        "from jobgate.commandsets.manifest import load_manifest_registry\n"
        "r = load_manifest_registry()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'zyra', 'matplotlib', 'numpy'})\n"
        "print(json.dumps({'heavy': heavy, 'stages': r.stages()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    result = json.loads(out.stdout)
    assert result["heavy"] == []
    assert "heatmap" in result["stages"]["visualize"]


def test_the_api_reads_the_operators_manifests_after_its_own(tmp_path: Path) -> None:
    from tests.support.commands import Keyed

    manifest.export(tmp_path, [Keyed()])
    synth = json.loads((manifest.MANIFEST_DIR / "synth.json").read_text())
    synth["contracts"] = [c for c in synth["contracts"] if c["command"] == "validate"]
    (tmp_path / "synth.json").write_text(manifest.render(synth))  # replaces the shipped one

    shipped, extended = manifest.load_manifest_registry(), manifest.load_manifest_registry([str(tmp_path)])
    assert extended.get("keyed", "fetch").secrets == ["DATA_TOKEN", "SHARED_KEY"]
    assert extended.get("visualize", "heatmap") == shipped.get("visualize", "heatmap")
    assert shipped.get("synth", "generate").command == "generate"
    assert [c.command for c in extended.contracts() if c.command_set == "synth"] == ["validate"]

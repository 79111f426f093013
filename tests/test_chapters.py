"""Every chapter of the run table executes end to end with smoke=True."""

import json
from pathlib import Path

import nbformat
import pytest

from tunestudy import runs

CHAPTERS = [c.name for c in runs.CHAPTERS if (runs.REPO_ROOT / c.notebook).exists()]


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESTUDY_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_executes_in_smoke_mode(name, fresh_cache):
    out = runs.run_chapter(name, output_dir=fresh_cache / "book", smoke=True)
    notebook = nbformat.read(out, as_version=4)
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    results = json.loads((fresh_cache / "book" / "results" / f"{name}.json").read_text())
    assert results["parameters"]["seeds"]
    figures = list((fresh_cache / "book" / "figures").glob(f"{name}_*.png"))
    assert figures and all(f.stat().st_size > 1000 for f in figures)


def test_same_seed_gives_byte_identical_results(tmp_path, monkeypatch):
    """Two runs from two empty caches: nothing is reused, and the numbers agree to the byte."""
    outputs = []
    for run in ("a", "b"):
        monkeypatch.setenv("TUNESTUDY_CACHE", str(tmp_path / run / "cache"))
        runs.run_chapter("01_world", output_dir=tmp_path / run / "book", smoke=True)
        outputs.append((tmp_path / run / "book" / "results" / "01_world.json").read_bytes())
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0])["probe_known_by_seed"]

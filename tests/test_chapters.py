"""Every chapter of the run table executes end to end with smoke=True."""

import json

import nbformat
import pytest

from conftest import CHAPTERS
from tunestudy import runs


@pytest.mark.parametrize("name", [c.name for c in CHAPTERS])
def test_chapter_executes_in_smoke_mode(name, smoke_book):
    chapters = smoke_book / "book" / "chapters"
    notebook = nbformat.read(chapters / f"{name}.ipynb", as_version=4)
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # no stray return values (a results path, say) printed on the page
    assert not [o for o in outputs if "PosixPath" in str(o.get("data", {}).get("text/plain", ""))]
    # figures are shown in the page itself, not only saved to files
    assert any("image/png" in o.get("data", {}) for o in outputs)
    results = json.loads((chapters / "results" / f"{name}.json").read_text())
    assert results["parameters"]["seeds"] and results["verdict"] and results["headline"]
    figures = list((chapters / "figures").glob(f"{name}_*.png"))
    assert figures and all(f.stat().st_size > 1000 for f in figures)


def test_same_seed_gives_byte_identical_results(smoke_book, tmp_path, monkeypatch):
    """A second run of chapter 1 from another empty cache: nothing is reused, the numbers agree to the byte."""
    monkeypatch.setenv("TUNESTUDY_CACHE", str(tmp_path / "cache"))
    runs.run_chapter("01_world", output_dir=tmp_path / "book", smoke=True)
    again = (tmp_path / "book" / "results" / "01_world.json").read_bytes()
    first = (smoke_book / "book" / "chapters" / "results" / "01_world.json").read_bytes()
    assert again == first
    assert json.loads(first)["probe_known_by_seed"]


LEAKS = ("Warning", "warnings.warn", "/tmp/", "/root/", "/home/", "site-packages", ".venv", str(runs.REPO_ROOT))


def page_texts(notebook) -> list:
    """Everything an executed chapter shows: streams, text and HTML outputs, error tracebacks."""
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("output_type") == "stream":
                texts.append((output.get("name"), output.get("text", "")))
            for mime in ("text/plain", "text/html", "text/markdown"):
                if mime in output.get("data", {}):
                    texts.append((mime, str(output["data"][mime])))
    return texts


@pytest.mark.parametrize("name", [c.name for c in CHAPTERS])
def test_chapter_page_shows_no_warning_and_no_machine_path(name, smoke_book):
    notebook = nbformat.read(smoke_book / "book" / "chapters" / f"{name}.ipynb", as_version=4)
    texts = page_texts(notebook)
    assert not [t for kind, t in texts if kind == "stderr"], "a chapter writes to stderr on its page"
    leaks = [(leak, t[:200]) for _, t in texts for leak in LEAKS if leak in t]
    assert not leaks, f"{name} shows {leaks[0]}"


def test_the_leak_check_catches_a_warning_and_a_path():
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="/root/.venv/lib/python3.11/site-packages/x.py:1: "
                                                              "TqdmWarning: IProgress not found")])])
    texts = page_texts(notebook)
    assert [leak for _, t in texts for leak in LEAKS if leak in t][:2] == ["Warning", "/root/"]

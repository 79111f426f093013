"""The committed book renders without computing: every executed chapter in book/chapters is the one the
current notebook, parameters and code give, and every {glue} reference of a page resolves.

A fresh clone's `make book` skips each current chapter (`runs.is_current`) and only builds the HTML; a
chapter whose notebook, book parameters or imported code changed since its executed page was committed
fails here, so main never carries a page that describes other code.
"""

import re

import nbformat
import pytest

from conftest import CHAPTERS
from test_runs import make_notebook, toy  # noqa: F401  (the toy chapter fixture)
from tunestudy import runs

GLUE_ROLE = re.compile(r"\{glue(?::[a-z]+)?\}`([^`]+)`")  # {glue:text}`name:.3f`, {glue}`name`
GLUE_DIRECTIVE = re.compile(r"^```\{glue(?::[a-z]+)?\}\s+(\S+)", re.M)  # ```{glue:figure} name


def glue_references(notebook) -> set:
    """The glued names a page's text refers to (a format spec after ':' is not part of the name)."""
    text = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    return {ref.split(":")[0] for ref in GLUE_ROLE.findall(text) + GLUE_DIRECTIVE.findall(text)}


def glued_names(notebook) -> set:
    """The names the executed notebook glued (myst-nb records each in its output's scrapbook metadata)."""
    return {output.get("metadata", {}).get("scrapbook", {}).get("name")
            for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])} - {None}


@pytest.mark.parametrize("name", [c.name for c in CHAPTERS])
def test_every_glue_reference_of_a_page_resolves(name, smoke_book):
    notebook = nbformat.read(smoke_book / "book" / "chapters" / f"{name}.ipynb", as_version=4)
    missing = glue_references(notebook) - glued_names(notebook)
    assert not missing, f"{name} refers to names it never glued: {sorted(missing)}"


def test_the_glue_check_catches_a_reference_to_nothing():
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("KL {glue:text}`kl_mean:.3f`, seeds {glue}`seeds`.\n\n```{glue:figure} curve\n```"),
        nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output(
            "display_data", data={"text/plain": "1"}, metadata={"scrapbook": {"name": "kl_mean"}})])])
    assert glue_references(notebook) == {"kl_mean", "seeds", "curve"}
    assert glue_references(notebook) - glued_names(notebook) == {"seeds", "curve"}


@pytest.mark.parametrize("name", [c.name for c in CHAPTERS if c.in_default_book])
def test_every_committed_chapter_is_current(name):
    chapter = runs.find_chapter(name)
    assert runs.is_current(chapter), (
        f"book/chapters/{name}.ipynb is missing or was executed from another notebook, other book parameters or "
        "other code than main's: run `make book` (it recomputes only the stale chapters) and commit book/chapters")


def test_the_key_check_fails_on_an_edited_notebook_parameter_or_module(toy, tmp_path, monkeypatch):  # noqa: F811
    out = tmp_path / "out"
    runs.run_chapter(toy, output_dir=out)
    assert runs.is_current(toy, out)
    edited = runs.Chapter("toy", toy.title, toy.notebook, {"label": "other"})
    assert not runs.is_current(edited, out)  # another book parameter
    with monkeypatch.context() as patch:
        patch.setattr(runs.cache, "source_hash", lambda files=None: "edited module")
        assert not runs.is_current(toy, out)  # other code
    assert runs.is_current(toy, out)
    nb = nbformat.read(toy.source, as_version=4)
    nb.cells[0].source += " (edited)"
    nbformat.write(nb, toy.source)
    assert not runs.is_current(toy, out)  # another notebook


def test_the_stale_line_scales_the_last_times_by_this_machine_s_speed(toy, tmp_path, monkeypatch, capsys):  # noqa: F811
    out = tmp_path / "out"
    (out / "results").mkdir(parents=True)
    (out / "results" / runs.SECONDS_FILE).write_text('{"toy": 100.0, "%s": 50.0}' % runs.SPEED_KEY)
    monkeypatch.setattr(runs, "machine_speed", lambda: 25.0)  # this machine: half the recording machine's speed
    runs.announce_stale([toy], out, False, runs.read_seconds(out))
    line = capsys.readouterr().out
    assert "0 chapters current, 1 to compute" in line and "toy (about 3 min 20 s)" in line and "2.00x" in line
    runs.run_chapter(toy, output_dir=out)
    runs.announce_stale([toy], out, False, runs.read_seconds(out))
    assert "all 1 chapters are current" in capsys.readouterr().out


def test_the_recording_machine_is_kept_by_a_run_that_built_nothing(tmp_path, monkeypatch):
    chapter = runs.Chapter("toy", "A toy chapter", "/x/toy.ipynb")
    monkeypatch.setattr(runs, "machine_speed", lambda: 42.0)
    monkeypatch.setattr(runs, "machine_name", lambda: "a test CPU")
    runs.record_seconds(chapter, tmp_path, 12.0, built=3)
    monkeypatch.setattr(runs, "machine_speed", lambda: 1.0)
    runs.record_seconds(chapter, tmp_path, 1.0, built=0)  # everything from the cache: the building run's record stays
    table = runs._read_table(tmp_path)
    assert table["toy"] == 12.0 and table[runs.SPEED_KEY] == 42.0 and table[runs.MACHINE_KEY] == "a test CPU"

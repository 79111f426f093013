"""Every notebook's parameters cell agrees with tunestudy.defaults, the single written source of the values."""

import subprocess
import sys

import nbformat
import pytest

from tunestudy import defaults, runs

CHAPTERS = [c for c in runs.CHAPTERS if c.source.exists()]
IDS = [c.name for c in CHAPTERS]


def test_every_chapter_of_the_run_table_has_its_defaults():
    assert set(defaults.OVERRIDES) == {c.name for c in runs.CHAPTERS}
    assert len(CHAPTERS) == len(runs.CHAPTERS), "a chapter's notebook is missing"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=IDS)
def test_parameters_cell_equals_the_package(chapter):
    notebook = defaults.notebook_parameter_values(chapter.source)
    package = defaults.chapter_parameters(chapter.name)
    assert defaults.disagreements(chapter.name, chapter.source) == []
    # the same names, values and types (5 is not 5.0, True is not 1)
    assert notebook == package
    assert {k: type(v) for k, v in notebook.items()} == {k: type(v) for k, v in package.items()}


@pytest.mark.parametrize("chapter", CHAPTERS, ids=IDS)
def test_every_parameter_has_a_comment(chapter):
    assert defaults.uncommented_parameters(chapter.source) == []
    # what `papermill --help-notebook` prints: every parameter, each with its help
    inspected = runs.notebook_parameters(chapter)
    assert list(inspected) == list(defaults.notebook_parameter_values(chapter.source))
    assert [name for name, p in inspected.items() if not p["help"].strip()] == []


def _copy_with(tmp_path, chapter_name, old_line, new_line):
    notebook = nbformat.read(runs.find_chapter(chapter_name).source, as_version=4)
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    assert cell.source.count(old_line) == 1
    cell.source = cell.source.replace(old_line, new_line)
    path = tmp_path / f"{chapter_name}.ipynb"
    nbformat.write(notebook, path)
    return path


def test_a_changed_value_is_reported(tmp_path):
    # the drift the issue names: chapter 10's copy of the LoRA grid edited, chapter 05's not
    path = _copy_with(tmp_path, "10_forgetting", 'ranks = "1,4,16"', 'ranks = "1,4"')
    assert defaults.disagreements("10_forgetting", path) == [
        "10_forgetting: parameter 'ranks': the notebook has '1,4' (str), the package has '1,4,16' (str)"]
    assert defaults.disagreements("05_lora_config") == []


def test_a_changed_type_a_missing_and_an_extra_parameter_are_reported(tmp_path):
    path = _copy_with(tmp_path, "03_loss_plateau", "tune_epochs = 5.0 ", "tune_epochs = 5 ")
    assert defaults.disagreements("03_loss_plateau", path) == [
        "03_loss_plateau: parameter 'tune_epochs': the notebook has 5 (int), the package has 5.0 (float)"]
    path = _copy_with(tmp_path, "01_world", "num_seeds = 3 ", "num_sedes = 3 ")
    assert defaults.disagreements("01_world", path) == [
        "01_world: parameter 'num_sedes': the notebook has 3 (int), the package has no such parameter",
        "01_world: parameter 'num_seeds': the notebook has no such parameter, the package has 3 (int)"]


def test_a_missing_comment_is_reported(tmp_path):
    path = _copy_with(tmp_path, "01_world", "size = \"small\"  # base model size: tiny, small or base",
                      "size = \"small\"\n# base model size: tiny, small or base")
    assert defaults.uncommented_parameters(path) == ["size"]


def test_the_lora_grid_is_written_once():
    grid_05 = defaults.chapter_parameters("05_lora_config")
    grid_10 = defaults.chapter_parameters("10_forgetting")
    for name in defaults.LORA_GRID:
        assert grid_05[name] == grid_10[name] == defaults.LORA_GRID[name]
    assert int(grid_05["lengths"].split(",")[0]) == grid_10["tune_epochs"] == defaults.LORA_GRID_EPOCHS


def test_unknown_chapter():
    with pytest.raises(ValueError, match="unknown chapter 'nope'"):
        defaults.chapter_parameters("nope")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=IDS)
def test_no_notebook_imports_the_defaults(chapter):
    # a notebook importing it would put it in that chapter's run key (runs.chapter_sources)
    assert "defaults.py" not in runs.chapter_sources(chapter)


def test_the_module_imports_nothing_heavy():
    code = "import sys, tunestudy.defaults; print(sorted(m for m in ('torch', 'nbformat', 'papermill') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

"""The runner: one-line user errors, and a chapter re-runs only when something it depends on changed."""

import subprocess
import sys

import nbformat
import pytest

from tunestudy import runs
from tunestudy.__main__ import main, parse_value


def make_notebook(path):
    """A throwaway chapter: a parameters cell and a cell that logs each execution."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(
        "seed = 0  # random seed\nlabel = 'a'  # any text\nsmoke = False  # tiny run"
    )
    params.metadata["tags"] = ["parameters"]
    work = nbformat.v4.new_code_cell(
        "with open('executions.log', 'a') as f:\n    f.write(f'{seed} {label} {smoke}\\n')"
    )
    nb.cells = [nbformat.v4.new_markdown_cell("# Toy"), params, work]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESTUDY_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "toy.ipynb"
    make_notebook(source)
    return runs.Chapter("toy", "A toy chapter", str(source), {"label": "book"})


def executions(folder):
    log = folder / "executions.log"
    return log.read_text().splitlines() if log.exists() else []


def test_unknown_chapter_cli_one_line(toy, capsys):
    assert main(["run", "nope"], table=(toy,)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown chapter 'nope'" in err and "toy" in err


def test_unknown_chapter_real_cli_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "tunestudy", "run", "nope"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert "01_world" in proc.stderr


def test_unknown_parameter_cli_one_line(toy, tmp_path, capsys):
    argv = ["run", "toy", "-p", "sed", "7", "--output-dir", str(tmp_path / "out")]
    assert main(argv, table=(toy,)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'sed'" in err and "seed, label, smoke" in err
    assert executions(tmp_path / "out") == []


def test_parse_value_like_papermill():
    assert [parse_value(v) for v in ["7", "0.5", "True", "False", "None", "x1"]] == [
        7, 0.5, True, False, None, "x1"
    ]


def test_skip_when_unchanged_rerun_when_parameter_changes(toy, tmp_path):
    out_dir = tmp_path / "out"
    out = runs.run_chapter(toy, {"seed": 7}, output_dir=out_dir)
    assert out == out_dir / "toy.ipynb"
    assert executions(out_dir) == ["7 book False"]
    assert nbformat.read(out, as_version=4).metadata[runs.RUN_KEY]

    runs.run_chapter(toy, {"seed": 7}, output_dir=out_dir)
    assert len(executions(out_dir)) == 1  # unchanged: skipped

    runs.run_chapter(toy, {"seed": 8}, output_dir=out_dir, smoke=True)
    assert executions(out_dir)[-1] == "8 book True"
    assert not list(out_dir.glob("*.running.ipynb"))


def test_force_and_source_change_rerun(toy, tmp_path, monkeypatch):
    out_dir = tmp_path / "out"
    runs.run_chapter(toy, output_dir=out_dir)
    runs.run_chapter(toy, output_dir=out_dir, force=True)
    assert len(executions(out_dir)) == 2
    monkeypatch.setattr(runs.cache, "source_hash", lambda files=None: "edited package")
    runs.run_chapter(toy, output_dir=out_dir)
    assert len(executions(out_dir)) == 3


def test_toc_names_only_executed_chapters(tmp_path):
    table = runs.CHAPTERS[:3]
    (tmp_path / "book" / "chapters").mkdir(parents=True)
    (tmp_path / "book" / "chapters" / "02_kl_shift.ipynb").write_text("{}")
    toc = runs.write_toc(table, root=tmp_path).read_text()
    assert "book/chapters/02_kl_shift" in toc and "01_world" not in toc


def test_committed_toc_matches_full_table():
    """The committed _toc.yml is what build_book writes once every chapter has run."""
    committed = (runs.REPO_ROOT / "_toc.yml").read_text()
    assert committed == runs.toc_text(list(runs.CHAPTERS), runs.STATIC_PAGES)


def test_missing_notebook_is_a_one_line_error(tmp_path, capsys):
    ghost = runs.Chapter("ghost", "Not written yet", str(tmp_path / "ghost.ipynb"))
    assert main(["run", "ghost"], table=(ghost,)) == 2
    assert "does not exist yet" in capsys.readouterr().err


def threads_notebook(path, label):
    """A chapter that records its name and the torch thread variable its kernel started with."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("smoke = False  # tiny run")
    params.metadata["tags"] = ["parameters"]
    work = nbformat.v4.new_code_cell(
        "import os, time\ntime.sleep(1)\n"
        f"with open('threads.log', 'a') as f:\n    f.write('{label} ' + os.environ.get('OMP_NUM_THREADS', '-') + '\\n')"
    )
    nb.cells = [params, work]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return runs.Chapter(label, label, str(path))


def test_parallel_chapters_first_alone_then_split_threads(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESTUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runs.os, "cpu_count", lambda: 2)
    table = tuple(threads_notebook(tmp_path / f"{n}.ipynb", n) for n in ("one", "two", "three"))
    out = tmp_path / "out"

    here, chdir = runs.os.getcwd(), runs.os.chdir

    def no_chdir(path):  # a chdir is process-wide: a chapter in another thread would start its kernel there
        if runs.os.path.realpath(path) != runs.os.path.realpath(here):  # papermill re-enters the same folder
            raise AssertionError(f"the runner changed the process's directory to {path}")
        chdir(path)

    monkeypatch.setattr(runs.os, "chdir", no_chdir)
    runs.run_chapters(list(table), output_dir=out, workers=2, table=table)
    lines = (out / "threads.log").read_text().splitlines()
    assert lines[0] == "one -"  # the first chapter runs alone, with every core
    assert sorted(lines[1:]) == ["three 1", "two 1"]  # then two at once, one thread each
    assert "OMP_NUM_THREADS" not in runs.os.environ  # the driver's own environment is restored
    seconds = runs.read_seconds(out)
    assert sorted(seconds) == ["one", "three", "two"] and min(seconds.values()) > 0
    assert all(nbformat.read(out / f"{n}.ipynb", as_version=4).metadata[runs.RUN_SECONDS] > 0 for n in seconds)


def test_parallel_chapters_longest_first(tmp_path, monkeypatch):
    """With one worker the order after the first chapter is the last run's times, longest first."""
    monkeypatch.setenv("TUNESTUDY_CACHE", str(tmp_path / "cache"))
    table = tuple(threads_notebook(tmp_path / f"{n}.ipynb", n) for n in ("one", "two", "three", "four"))
    out = tmp_path / "out"
    (out / "results").mkdir(parents=True)
    (out / "results" / runs.SECONDS_FILE).write_text('{"two": 5.0, "three": 50.0}')
    runs.run_chapters(list(table), output_dir=out, workers=1, table=table)
    order = [line.split()[0] for line in (out / "threads.log").read_text().splitlines()]
    assert order == ["one", "four", "three", "two"]  # never timed first, then longest first


def test_parallel_failure_is_raised_after_the_others_finish(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESTUDY_CACHE", str(tmp_path / "cache"))
    good = [threads_notebook(tmp_path / f"{n}.ipynb", n) for n in ("one", "two")]
    bad_path = tmp_path / "bad.ipynb"
    make_notebook(bad_path)
    nb = nbformat.read(bad_path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("raise RuntimeError('boom')"))
    nbformat.write(nb, bad_path)
    table = (good[0], runs.Chapter("bad", "bad", str(bad_path)), good[1])
    with pytest.raises(Exception, match="boom"):
        runs.run_chapters(list(table), output_dir=tmp_path / "out", workers=2, table=table)
    assert (tmp_path / "out" / "two.ipynb").exists() and (tmp_path / "out" / "bad.failed.ipynb").exists()


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_bad_workers_one_line(workers, toy, capsys):
    assert main(["book", "--workers", workers], table=(toy,)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "workers must be a positive integer" in err


def test_a_run_records_every_parameter_and_its_provenance_beside_the_results(toy, tmp_path):
    """results/<chapter>.run.json: the parameters cell's values updated by the injected ones (here the table's
    label and the seed given), and where and how it ran; the results file itself is not touched."""
    import json
    out_dir = tmp_path / "out"
    runs.run_chapter(toy, {"seed": 7}, output_dir=out_dir)
    record = json.loads((out_dir / "results" / "toy.run.json").read_text())
    assert record["parameters"] == {"seed": 7, "label": "book", "smoke": False}
    prov = record["provenance"]
    assert prov["runs_built"] == 0 and prov["seconds"] > 0 and prov["threads"] >= 1
    assert set(prov["packages"]) == set(runs.PROVENANCE_PACKAGES) and prov["packages"]["torch"]
    assert prov["date"].endswith("Z") and len(prov["commit"]) in (0, 40)
    assert not (out_dir / "results" / "toy.json").exists()

"""The artifact cache reuses, rebuilds on any change, and never serves a half-written folder."""

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from tunestudy import cache


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("TUNESTUDY_CACHE", str(root))
    return root


def counting_build(calls: list, text: str = "hello"):
    def build(folder: Path) -> None:
        calls.append(folder)
        (folder / "data.txt").write_text(text)
        (folder / "sub").mkdir()
        (folder / "sub" / "more.bin").write_bytes(b"\x00\x01" * 100)

    return build


def leftovers(root: Path) -> list[str]:
    """Names under kind folders that are neither artifacts nor lock files."""
    return [p.name for p in root.glob("*/*") if ".tmp-" in p.name]


def test_second_call_reuses(cache_dir):
    calls = []
    first = cache.cached("toy", {"n": 1}, counting_build(calls))
    second = cache.cached("toy", {"n": 1}, counting_build(calls))
    assert first == second and len(calls) == 1
    assert first.parent == cache_dir / "toy"
    assert (first / "data.txt").read_text() == "hello"
    assert (first / "MANIFEST.json").exists()


def test_parameter_change_rebuilds():
    calls = []
    a = cache.cached("toy", {"n": 1, "xs": [1, 2]}, counting_build(calls))
    b = cache.cached("toy", {"n": 2, "xs": [1, 2]}, counting_build(calls))
    assert a != b and len(calls) == 2


def test_key_ignores_dict_order():
    assert cache.artifact_key("k", {"a": 1, "b": 2}) == cache.artifact_key("k", {"b": 2, "a": 1})


def test_source_change_rebuilds(monkeypatch):
    calls = []
    a = cache.cached("toy", {"n": 1}, counting_build(calls))
    monkeypatch.setattr(cache, "source_hash", lambda files=None: "edited source")
    b = cache.cached("toy", {"n": 1}, counting_build(calls))
    assert a != b and len(calls) == 2


def test_source_hash_follows_the_bytes_of_the_named_files(tmp_path, monkeypatch):
    """Same bytes, same hash (even rewritten); one changed byte in a named file, a new hash; other files, none."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_bytes(b"x = 1\n")
    (package / "b.py").write_bytes(b"y = 2\n")
    monkeypatch.setattr(cache, "PACKAGE_DIR", package)

    def fresh(files):  # source_hash is computed once per process: forget earlier answers
        cache.source_hash.cache_clear()
        return cache.source_hash(files)

    try:
        both, only_a, every = fresh(("a.py", "b.py")), fresh(("a.py",)), fresh(None)
        assert len(both) == 64 and set(both) <= set("0123456789abcdef")
        assert len({both, only_a}) == 2 and every == both  # None: every .py file, here a.py and b.py
        (package / "b.py").write_bytes(b"y = 2\n")  # rewritten, same bytes (new mtime)
        (package / "notes.txt").write_text("not a module")
        assert (fresh(("a.py", "b.py")), fresh(("a.py",)), fresh(None)) == (both, only_a, every)
        (package / "b.py").write_bytes(b"y = 3\n")  # one byte changed
        changed = fresh(("a.py", "b.py"))
        assert changed != both and fresh(None) == changed
        assert fresh(("a.py",)) == only_a  # b.py is not among the named files
        (package / "b.py").write_bytes(b"y = 2\n")  # changed back
        assert fresh(("a.py", "b.py")) == both
        (package / "c.py").write_bytes(b"x = 1\n")  # a.py's bytes under another name are another source
        assert fresh(("c.py",)) != only_a
    finally:
        cache.source_hash.cache_clear()


def test_crash_in_build_leaves_nothing(cache_dir):
    def build(folder: Path) -> None:
        (folder / "partial.txt").write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cache.cached("toy", {"n": 1}, build)
    key = cache.artifact_key("toy", {"n": 1})
    assert not (cache_dir / "toy" / key).exists()
    assert leftovers(cache_dir) == []


def test_leftover_tmp_folder_is_not_used(cache_dir):
    """A process killed mid-save leaves only a tmp folder: it is ignored and cleaned."""
    key = cache.artifact_key("toy", {"n": 1})
    stale = cache_dir / "toy" / f"{key}.tmp-999999-dead"
    stale.mkdir(parents=True)
    (stale / "data.txt").write_text("hel")
    calls = []
    folder = cache.cached("toy", {"n": 1}, counting_build(calls))
    assert len(calls) == 1 and (folder / "data.txt").read_text() == "hello"
    assert leftovers(cache_dir) == []


def test_folder_without_manifest_is_rebuilt(cache_dir):
    """What a crash between writing files and the manifest would look like."""
    key = cache.artifact_key("toy", {"n": 1})
    broken = cache_dir / "toy" / key
    broken.mkdir(parents=True)
    (broken / "data.txt").write_text("hel")
    calls = []
    folder = cache.cached("toy", {"n": 1}, counting_build(calls))
    assert folder == broken and len(calls) == 1
    assert (folder / "data.txt").read_text() == "hello"


def _slow_build_forever(root: str, started: str) -> None:
    os.environ["TUNESTUDY_CACHE"] = root

    def build(folder: Path) -> None:
        (folder / "data.txt").write_text("partial")
        Path(started).write_text("writing")
        time.sleep(60)

    cache.cached("toy", {"n": 1}, build)


def test_sigkill_while_saving_leaves_no_artifact(cache_dir, tmp_path):
    started = tmp_path / "started"
    proc = multiprocessing.get_context("spawn").Process(
        target=_slow_build_forever, args=(str(cache_dir), str(started))
    )
    proc.start()
    deadline = time.time() + 30
    while not started.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert started.exists(), "child never started building"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    key = cache.artifact_key("toy", {"n": 1})
    assert not (cache_dir / "toy" / key).exists()
    assert leftovers(cache_dir)  # the killed build's tmp folder is still there
    calls = []
    folder = cache.cached("toy", {"n": 1}, counting_build(calls))
    assert len(calls) == 1 and (folder / "data.txt").read_text() == "hello"
    assert leftovers(cache_dir) == []


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "extra"])
def test_corrupted_file_is_rebuilt(damage, caplog):
    calls = []
    folder = cache.cached("toy", {"n": 1}, counting_build(calls))
    target = folder / "sub" / "more.bin"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:10])
    elif damage == "flip":
        target.write_bytes(b"\x07" + target.read_bytes()[1:])
    elif damage == "delete":
        target.unlink()
    else:
        (folder / "stray.txt").write_text("?")
    with caplog.at_level("WARNING", logger="tunestudy.cache"):
        again = cache.cached("toy", {"n": 1}, counting_build(calls))
    assert again == folder and len(calls) == 2
    assert "corrupt" in caplog.text
    assert cache.verify(folder) is None
    assert target.read_bytes() == b"\x00\x01" * 100


def _build_counted(root: str, counts: str) -> None:
    os.environ["TUNESTUDY_CACHE"] = root

    def build(folder: Path) -> None:
        (Path(counts) / f"build-{os.getpid()}").write_text("built")
        time.sleep(0.5)  # long enough for the other process to hit the lock
        (folder / "data.txt").write_text("hello")

    cache.cached("toy", {"n": 1}, build)


def test_two_processes_build_once(cache_dir, tmp_path):
    counts = tmp_path / "counts"
    counts.mkdir()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_build_counted, args=(str(cache_dir), str(counts))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(list(counts.iterdir())) == 1


def test_nested_cached_calls():
    inner_calls = []

    def outer(folder: Path) -> None:
        inner = cache.cached("inner", {"n": 1}, counting_build(inner_calls))
        (folder / "copy.txt").write_text((inner / "data.txt").read_text() + "!")

    folder = cache.cached("outer", {"n": 1}, outer)
    assert (folder / "copy.txt").read_text() == "hello!"
    assert cache.cached("outer", {"n": 1}, outer) == folder
    assert len(inner_calls) == 1


def test_cached_json_computes_once():
    calls = []

    def compute():
        calls.append(1)
        return {"acc": 0.5, "xs": [1, 2]}

    assert cache.cached_json("scores", {"seed": 0}, compute) == {"acc": 0.5, "xs": [1, 2]}
    assert cache.cached_json("scores", {"seed": 0}, compute) == {"acc": 0.5, "xs": [1, 2]}
    assert len(calls) == 1


@pytest.mark.parametrize("bad", [{"path": Path("x")}, {"s": {1, 2}}, {"f": print}, {"d": {1: "a"}}])
def test_non_json_params_rejected(bad):
    with pytest.raises(TypeError, match="cache params"):
        cache.artifact_key("toy", bad)


def test_only_pipeline_code_invalidates_artifacts(tmp_path, monkeypatch):
    """Editing a figure helper keeps every cached model; editing the training code does not."""
    import shutil

    from tunestudy import evaluation
    sources = tuple(sorted(evaluation.SOURCES))  # the widest kind: every module an evaluation runs

    copy = tmp_path / "pkg"
    shutil.copytree(cache.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "PACKAGE_DIR", copy)
    cache.source_hash.cache_clear()
    try:
        before, everything = cache.source_hash(sources), cache.source_hash(None)
        (copy / "plots.py").write_text((copy / "plots.py").read_text() + "\nNEW_COLOUR = 1\n")
        cache.source_hash.cache_clear()
        assert cache.source_hash(sources) == before
        assert cache.source_hash(None) != everything  # the run table still re-executes notebooks
        (copy / "tuning.py").write_text((copy / "tuning.py").read_text() + "\nCHANGE = 1\n")
        cache.source_hash.cache_clear()
        assert cache.source_hash(sources) != before
    finally:
        cache.source_hash.cache_clear()


def test_built_in_this_process_counts_builds_not_reuses(tmp_path, monkeypatch):
    """Chapter 14's cost sentence uses its own time only when it built something."""
    monkeypatch.setenv("TUNESTUDY_CACHE", str(tmp_path))
    before = cache.built_in_this_process()
    cache.cached_json("count", {"n": 1}, lambda: {"v": 1}, sources=())
    assert cache.built_in_this_process() == before + 1
    cache.cached_json("count", {"n": 1}, lambda: {"v": 1}, sources=())  # reused: not counted
    assert cache.built_in_this_process() == before + 1


def test_comments_and_docstrings_do_not_enter_the_source_hash():
    """What code says about itself is not what it computes; indentation and every token still count."""
    code = 'def f(x):\n    """Doc."""\n    y = x  # why\n    return y\n'
    same = ('"""A module docstring."""\n\ndef f(x):\n    """Another docstring,\n    on two lines."""\n'
            '    y = x\n\n    return y  # a comment\n')
    assert cache.normalized_source(code) == cache.normalized_source(same)
    moved = 'def f(x):\n    y = x\nreturn_y = 1\n'
    for other in (code.replace("y = x", "y = x + 1"), moved, code.replace('"""Doc."""', 'print("Doc.")')):
        assert cache.normalized_source(other) != cache.normalized_source(code)
    assert "Doc" not in cache.normalized_source(code) and "why" not in cache.normalized_source(code)

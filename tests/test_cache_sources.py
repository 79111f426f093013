"""Each cached kind hashes the source of every package module its build can run, and only those.

The import graph is read from the code itself (every `from . import x`, `from .x import`, and
`import tunestudy.x`, also inside functions), so a new import that a kind's SOURCES does not
list makes this test fail.
"""

from pathlib import Path

import pytest

from tunestudy import bases, cache, conflict, evaluation, knowledge, restoring, screening, shiftdemo, studies, tuned

PACKAGE = Path(cache.__file__).parent
# cache.py decides where an artifact lives and what its key is, not what it holds.
NOT_CONTENT = {"cache.py"}


def package_imports(module_file: str) -> set:
    return cache.package_imports(module_file, PACKAGE)


def closure(module_file: str) -> set:
    return cache.import_closure([module_file], PACKAGE)


@pytest.mark.parametrize("module, sources", [
    ("bases.py", bases.SOURCES), ("tuned.py", tuned.SOURCES), ("evaluation.py", evaluation.SOURCES),
    ("studies.py", studies.SOURCES), ("screening.py", screening.SOURCES), ("restoring.py", restoring.SOURCES),
    ("knowledge.py", knowledge.SOURCES), ("conflict.py", conflict.SOURCES),
    ("shiftdemo.py", shiftdemo.SOURCES)])
def test_each_kind_hashes_every_module_its_build_imports(module, sources):
    missing = closure(module) - set(sources) - NOT_CONTENT
    assert not missing, f"{module}'s cached kinds do not hash {sorted(missing)}: add them to its SOURCES"


def test_the_import_reader_sees_imports_inside_functions(tmp_path, monkeypatch):
    (tmp_path / "a.py").write_text("from . import b\ndef f():\n    from .c import g\n    import tunestudy.d\n")
    for name in "bcd":
        (tmp_path / f"{name}.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path)
    assert package_imports("a.py") == {"b.py", "c.py", "d.py"}


def test_the_new_chapters_kinds_leave_the_old_keys_alone():
    """weight_change, reader, continued and recall hash their own modules; no earlier kind hashes them."""
    for module in ("retrieval.py", "studies.py", "weights.py"):
        assert module in studies.SOURCES
        assert module not in evaluation.SOURCES + tuned.SOURCES + bases.SOURCES + restoring.SOURCES
    assert "restoring.py" in restoring.SOURCES and "restoring.py" not in studies.SOURCES


def test_the_knowledge_chapters_kinds_leave_the_other_keys_alone():
    """fit_checkpoints and conflict hash their own modules; editing conflict.py leaves fit_checkpoints' keys."""
    others = evaluation.SOURCES + tuned.SOURCES + bases.SOURCES + restoring.SOURCES + studies.SOURCES
    assert "knowledge.py" not in others and "conflict.py" not in others
    assert "conflict.py" not in knowledge.SOURCES and "knowledge.py" in conflict.SOURCES


def test_a_base_does_not_hash_metrics_or_the_evaluation():
    assert "metrics.py" not in bases.SOURCES and "evaluation.py" not in bases.SOURCES
    assert "metrics.py" not in tuned.SOURCES


def test_editing_metrics_changes_evaluation_keys_but_not_base_keys(tmp_path, monkeypatch):
    for f in PACKAGE.glob("*.py"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    monkeypatch.setattr(cache, "PACKAGE_DIR", tmp_path)
    cache.source_hash.cache_clear()
    try:
        before = {k: cache.artifact_key(k, {"n": 1}, s) for k, s in
                  (("base", bases.SOURCES), ("tuned", tuned.SOURCES), ("evaluation", evaluation.SOURCES))}
        path = tmp_path / "metrics.py"
        path.write_text(path.read_text().replace('"""', '"""Edited docstring. ', 1) + "\n# a comment\n")
        cache.source_hash.cache_clear()
        docstring = {k: cache.artifact_key(k, {"n": 1}, s) for k, s in
                     (("base", bases.SOURCES), ("tuned", tuned.SOURCES), ("evaluation", evaluation.SOURCES))}
        path.write_text(path.read_text() + "\nEDITED = True\n")
        cache.source_hash.cache_clear()
        after = {k: cache.artifact_key(k, {"n": 1}, s) for k, s in
                 (("base", bases.SOURCES), ("tuned", tuned.SOURCES), ("evaluation", evaluation.SOURCES))}
    finally:
        cache.source_hash.cache_clear()
    assert docstring == before  # a docstring or a comment re-keys nothing
    assert after["base"] == before["base"] and after["tuned"] == before["tuned"]
    assert after["evaluation"] != before["evaluation"]


def test_the_final_epoch_has_one_key():
    from tunestudy import pipeline as P, tuning
    spec = P.base_spec(seed=0, size="tiny", num_known=8, num_unknown=8, pretrain_epochs=4, num_format_docs=2)
    data, config = P.SetSpec(kind="known", size=4), tuning.TuneConfig()
    assert P.tune_params(spec, data, config, None) == P.tune_params(spec, data, config, 4)
    assert P.tune_params(spec, data, config, 1) != P.tune_params(spec, data, config, None)
    with pytest.raises(ValueError, match="epoch must be one of"):
        P.normal_epoch(spec, 3)

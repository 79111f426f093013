"""Pseudo or actual forgetting: the restoring text, its checks, the recovered share and the verdict rule."""

import math

import pytest

from tunestudy import experiments as X, restoring, world as W


def small_world():
    return W.generate_world(W.WorldConfig(num_known=20, num_unknown=12, num_format_docs=10, seed=3))


def test_restore_documents_hold_no_person_of_the_world():
    world = small_world()
    docs = restoring.restore_documents(world, 30, seed=1)
    assert len(docs) == 30
    for doc in docs:
        assert not any(p.name in doc for p in world.people)
    assert docs == restoring.restore_documents(world, 30, seed=1)
    assert docs != restoring.restore_documents(world, 30, seed=2)


@pytest.mark.parametrize("field, value, name", [("documents", 0, "restore_documents"), ("epochs", 1.5, "restore_epochs"),
                                                ("lr", 2.0, "restore_lr"), ("lr", True, "restore_lr")])
def test_a_bad_restore_spec_names_the_parameter(field, value, name):
    with pytest.raises(ValueError, match=name):
        restoring.RestoreSpec(**{field: value}).validate()


def test_recovered_share_by_hand():
    assert X.recovered_share(0.9, 0.5, 0.8) == pytest.approx(0.75)  # 0.3 of the 0.4 lost comes back
    assert X.recovered_share(0.9, 0.5, 0.4) == pytest.approx(-0.25)  # restoring made it worse
    assert math.isnan(X.recovered_share(0.9, 0.89, 0.9))  # almost nothing lost: nothing to bring back


def test_restored_refuses_a_bad_spec_before_any_work(tmp_path, monkeypatch):
    from tunestudy.bases import base_spec
    from tunestudy.sets import SetSpec
    from tunestudy.tuning import TuneConfig
    monkeypatch.setenv("TUNESTUDY_CACHE", str(tmp_path / "cache"))
    spec = base_spec(seed=0, size="tiny", num_known=20, num_unknown=12, pretrain_epochs=2, num_format_docs=20)
    with pytest.raises(ValueError, match="restore_epochs"):
        restoring.restored(spec, SetSpec(kind="unknown", size=4), TuneConfig(), restoring.RestoreSpec(epochs=0))
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


# --- the format-free reading of the two stages -------------------------------------------------------------

def stage(probe_before, probe_after, candidates_before, candidates_after):
    return {"probe_before": probe_before, "probe_after": probe_after, "candidates_before": candidates_before,
            "candidates_after": candidates_after}



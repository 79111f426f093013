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


def test_pseudo_forgetting_verdict_on_hand_made_shares():
    two_stages = X.verdict_pseudo_forgetting({1.0: 0.9, 5.0: 0.6, 10.0: 0.3})
    assert two_stages["verdict"] == "reproduced"
    assert two_stages["numbers"]["recovered_shortest"] == 0.9 and two_stages["numbers"]["longest"] == 10.0
    assert X.verdict_pseudo_forgetting({1.0: 0.7, 10.0: 0.3})["verdict"] == "partly reproduced"  # falls, not from 0.8
    assert X.verdict_pseudo_forgetting({1.0: 0.9, 10.0: 0.6})["verdict"] == "partly reproduced"  # never below 0.5
    assert X.verdict_pseudo_forgetting({1.0: 0.2, 10.0: 0.4})["verdict"] == "not reproduced"  # rises
    # NaN lengths (no loss to restore) are skipped; one length left is not enough
    assert X.verdict_pseudo_forgetting({1.0: float("nan"), 10.0: 0.3})["verdict"] == "not reproduced"
    assert X.verdict_pseudo_forgetting({1.0: float("nan"), 2.0: 0.95, 10.0: 0.1})["verdict"] == "reproduced"


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


def test_knowledge_survives_two_stages_reproduced():
    from tunestudy import experiments as X
    result = X.verdict_knowledge_survives({1.0: stage(0.9, 0.5, 0.875, 0.875), 10.0: stage(0.9, 0.25, 0.875, 0.5)})
    assert result["verdict"] == "reproduced"
    assert result["numbers"]["candidates_lost_shortest"] == 0.0 and result["numbers"]["candidates_lost_longest"] == 0.375


def test_knowledge_survives_one_stage_or_none():
    from tunestudy import experiments as X
    # the format-free test loses as much as the probe from the start: actual forgetting only
    assert X.verdict_knowledge_survives({1.0: stage(0.9, 0.5, 0.875, 0.5),
                                         10.0: stage(0.9, 0.25, 0.875, 0.25)})["verdict"] == "partly reproduced"
    # the knowledge survives at every length: pseudo forgetting only
    assert X.verdict_knowledge_survives({1.0: stage(0.9, 0.5, 0.875, 0.875),
                                         10.0: stage(0.9, 0.25, 0.875, 0.85)})["verdict"] == "partly reproduced"
    # the probe barely moved at the shortest length and nothing is lost later: neither stage
    assert X.verdict_knowledge_survives({1.0: stage(0.9, 0.875, 0.875, 0.875),
                                         10.0: stage(0.9, 0.875, 0.875, 0.875)})["verdict"] == "not reproduced"
    # boundaries in floats: a loss of exactly the tolerance still counts as kept, twice it as lost
    assert X.verdict_knowledge_survives({1.0: stage(0.3, 0.2, 0.3, 0.25),
                                         10.0: stage(0.3, 0.2, 0.3, 0.25)})["verdict"] == "partly reproduced"

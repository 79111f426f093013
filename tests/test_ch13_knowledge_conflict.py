"""Chapter 13's interval verdicts (Ren et al. 2024) on hand-made runs: every outcome, inconclusive included,
and the null row (tuning that changed nothing)."""

import math

import pandas as pd
import pytest

from tunestudy import ch13_knowledge_conflict as C

REPRODUCED, PARTLY, NOT, INCONCLUSIVE, PREMISE = ("reproduced", "partly reproduced", "not reproduced", "inconclusive",
                                                  "premise not met")
SHARES = (0.0, 0.25, 0.5, 1.0)


# --- verdict_conflict_hurts -----------------------------------------------------------------------------

def hurt_rows(falls, start=(0.5, 0.45, 0.55), bumps=None):
    """One method's runs: per seed, accuracy falling linearly by `falls[seed]` from share 0 to share 1, plus
    `bumps[share]` added at the inner shares."""
    bumps = bumps or {}
    return pd.DataFrame([{"method": "full", "seed": seed, "share": s, "accuracy": a0 - fall * s + bumps.get(s, 0.0)}
                         for seed, (fall, a0) in enumerate(zip(falls, start)) for s in SHARES])


@pytest.mark.parametrize("falls, expected", [
    ((0.30, 0.28, 0.32), REPRODUCED),  # a large fall on every seed
    ((0.05, 0.04, 0.06), PARTLY),  # a real fall, smaller than the claim's 0.1
    ((-0.05, -0.04, -0.06), NOT),  # counterfactual answers help
    ((0.0, 0.0, 0.0), NOT),  # the null row: accuracy the same at every share
    ((0.30, -0.10, 0.20), INCONCLUSIVE),  # one seed the other way: straddles 0
    ((0.09, 0.11, 0.10), INCONCLUSIVE),  # straddles the margin
])
def test_conflict_hurts_on_every_outcome(falls, expected):
    result = C.verdict_conflict_hurts(hurt_rows(falls), label="full")
    assert result["verdict"] == expected and expected in result["sentence"]
    numbers = result["numbers"]
    assert numbers["seeds"] == 3 and numbers["values"] == pytest.approx(list(falls))
    assert numbers["threshold"] == C.HURT_MARGIN and numbers["partly_threshold"] == 0.0
    assert "0.1" in result["criterion"] and result["sentence"].startswith("full: ")


def test_conflict_hurts_pairs_within_the_seed():
    # seeds differ a lot in their base's accuracy (0.2 to 0.8) but each falls by 0.2: the paired fall is exact
    result = C.verdict_conflict_hurts(hurt_rows((0.2, 0.2, 0.2), start=(0.2, 0.8, 0.5)))
    assert result["verdict"] == REPRODUCED and result["numbers"]["interval"] == pytest.approx([0.2, 0.2])


def test_conflict_hurts_no_longer_asks_for_a_monotone_fall():
    # a rise at 25% (the old rule's "partly") does not move the pre-stated contrast of 0% against 100%
    result = C.verdict_conflict_hurts(hurt_rows((0.30, 0.28, 0.32), bumps={0.25: 0.2}))
    assert result["verdict"] == REPRODUCED
    assert result["numbers"]["step_falls"]["0%->25%"] < 0 and "monotone" in result["criterion"]


def test_conflict_hurts_reports_slope_and_means():
    numbers = C.verdict_conflict_hurts(hurt_rows((0.30, 0.28, 0.32)))["numbers"]
    assert numbers["slope"] == pytest.approx(-0.30) and numbers["slope_interval"][1] < 0
    assert numbers["accuracy"]["0"] == pytest.approx(0.5) and numbers["accuracy"]["100"] == pytest.approx(0.2)
    assert set(numbers["step_falls"]) == {"0%->25%", "25%->50%", "50%->100%"}


def test_conflict_hurts_needs_two_shares_and_two_seeds():
    rows = hurt_rows((0.3, 0.3, 0.3))
    assert C.verdict_conflict_hurts(rows[rows.share == 0.0])["verdict"] == PREMISE
    assert C.verdict_conflict_hurts(rows[rows.seed == 0])["verdict"] == INCONCLUSIVE  # one seed: no interval
    # a seed without the largest share gives no fall
    falls = C.conflict_falls(rows[~((rows.seed == 2) & (rows.share == 1.0))])
    assert falls.seed.tolist() == [0, 1]


# --- verdict_consistency_predicts -----------------------------------------------------------------------

# consistency ranks of three runs whose accuracy ranks are 1, 2, 3, by the Spearman rho they give
ORDERS = {1.0: (1, 2, 3), 0.5: (1, 3, 2), -0.5: (2, 3, 1), -1.0: (3, 2, 1)}


def consistency_rows(rhos_by_seed):
    """Three runs per (seed, share); within each the given rho of consistency with accuracy. Both measures fall
    with the share, so the rho pooled over every run is high whatever happens within a share."""
    rows = []
    for seed, rhos in enumerate(rhos_by_seed):
        for share, rho in zip(SHARES, rhos):
            for run, (accuracy_rank, consistency_rank) in enumerate(zip((1, 2, 3), ORDERS[rho])):
                rows.append({"method": f"m{run}", "seed": seed, "share": share,
                             "accuracy": 0.6 - 0.5 * share + 0.01 * accuracy_rank,
                             "rank_correlation": 0.95 - 0.5 * share + 0.01 * consistency_rank})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("rhos, expected", [
    ([(1, 1, 1, 1), (1, 1, 1, 1), (1, 1, 1, 0.5)], REPRODUCED),  # 1, 1, 0.875
    ([(0.5, 0.5, 0.5, -0.5), (0.5, 0.5, 0.5, -0.5), (1, 0.5, 0.5, -0.5)], PARTLY),  # 0.25, 0.25, 0.375
    ([(-1, -1, -1, -1)] * 3, NOT),  # only through the share: reversed within every share
    ([(1, 1, 1, 1), (1, 1, 1, 1), (1, -1, 0.5, -0.5)], INCONCLUSIVE),  # 1, 1, 0: straddles both
    ([(1, 1, 0.5, -0.5), (1, 0.5, 0.5, 0.5), (1, 0.5, 0.5, -0.5)], INCONCLUSIVE),  # 0.5, 0.625, 0.375: straddles 0.5
])
def test_consistency_predicts_on_every_outcome(rhos, expected):
    result = C.verdict_consistency_predicts(consistency_rows(rhos))
    assert result["verdict"] == expected and expected in result["sentence"]
    numbers = result["numbers"]
    assert numbers["seeds"] == 3 and numbers["values"] == pytest.approx([sum(r) / 4 for r in rhos])
    assert numbers["threshold"] == C.PREDICTS_RHO and numbers["partly_threshold"] == 0.0
    assert -1.0 <= numbers["interval"][0] <= numbers["interval"][1] <= 1.0
    assert numbers["rho_pooled"] > 0.8 and numbers["num_runs"] == 36  # the pooled rho rides on the share
    assert "0.5" in result["criterion"]


def test_consistency_predicts_null_rows():
    # tuning that changed nothing: every run keeps its knowledge and its accuracy; nothing to predict
    rows = consistency_rows([(1, 1, 1, 1)] * 3).assign(accuracy=0.5, rank_correlation=1.0)
    assert C.verdict_consistency_predicts(rows)["verdict"] == PREMISE
    # consistency unrelated to accuracy within a share, both falling with it: never reproduced or partly
    noise = consistency_rows([(1, -1, 0.5, -0.5), (-1, 1, -0.5, 0.5), (0.5, -0.5, 1, -1)])
    result = C.verdict_consistency_predicts(noise)
    assert result["verdict"] in (NOT, INCONCLUSIVE) and result["numbers"]["estimate"] == pytest.approx(0.0)


def test_consistency_predicts_with_two_methods_is_a_sign_per_share():
    # the chapter's case: two runs per (seed, share), so each within-share rho is +1 or -1
    rows = consistency_rows([(1, 1, 1, 1)] * 3)
    rows = rows[rows.method != "m1"]
    per_seed = C.within_share_rhos(rows)
    assert per_seed.rho.tolist() == pytest.approx([1.0, 1.0, 1.0]) and per_seed.shares.tolist() == [4, 4, 4]
    assert C.verdict_consistency_predicts(rows)["verdict"] == REPRODUCED


def test_consistency_predicts_skips_tied_shares_and_needs_two_seeds():
    rows = consistency_rows([(1, 1, 1, 1), (1, 1, 1, 1), (-1, -1, -1, -1)])
    tied = rows.share == 1.0
    rows.loc[tied, "rank_correlation"] = 0.3  # no rho at the largest share
    assert C.within_share_rhos(rows).shares.tolist() == [3, 3, 3]
    one_seed = C.verdict_consistency_predicts(rows[rows.seed == 0])
    assert one_seed["verdict"] == INCONCLUSIVE and math.isnan(one_seed["numbers"]["interval"][0])

"""The interval verdicts of chapter 11 (pseudo or actual forgetting) on hand-made rows.

Each verdict is checked on every outcome, inconclusive and premise not met included, and on a null row: tuning that
changed nothing must not come out reproduced or partly. A length run on one seed only must not move a verdict.
"""

import pandas as pd
import pytest

from tunestudy import ch11_pseudo_forgetting as C

REPRODUCED, PARTLY, NOT, INCONCLUSIVE, PREMISE = ("reproduced", "partly reproduced", "not reproduced", "inconclusive",
                                                  "premise not met")
BEFORE = 0.9


def restored_rows(shares_by_length, lost=0.4, one_seed_length=None):
    """Per (seed, length): the probe loses `lost` in tuning and restoring brings back the given share of it. With
    `one_seed_length`, a further length on seed 0 only where restoring brings everything back."""
    rows = []
    for length, shares in shares_by_length.items():
        for seed, share in enumerate(shares):
            after = BEFORE - lost
            rows.append({"seed": seed, "epochs": float(length), "before": BEFORE, "after": after,
                         "restored": after + share * lost})
    if one_seed_length is not None:
        rows.append({"seed": 0, "epochs": float(one_seed_length), "before": BEFORE, "after": 0.1, "restored": BEFORE})
    return pd.DataFrame(rows)


# --- verdict_pseudo_forgetting ---------------------------------------------------------------------------

@pytest.mark.parametrize("short, long, expected", [
    ((0.9, 0.95, 0.875), (0.1, 0.15, 0.05), REPRODUCED),  # most back early, little late
    ((0.5, 0.55, 0.45), (0.1, 0.15, 0.05), PARTLY),  # falls, but not from 80%
    ((0.9, 0.95, 0.875), (0.6, 0.65, 0.7), PARTLY),  # falls, never below 50%
    ((0.1, 0.05, 0.15), (0.3, 0.3, 0.3), NOT),  # rises: no pseudo stage
    ((-1.25, -1.5, -1.375), (-0.125, -0.25, -0.375), NOT),  # the chapter's full fine-tuning: restoring hurts, less later
    ((0.9, 0.5, 1.0), (0.1, 0.15, 0.05), INCONCLUSIVE),  # the shortest's interval straddles 80%
    ((0.1, -0.3, 0.0), (0.0, 0.01, -0.01), INCONCLUSIVE),  # no pseudo stage; whether it falls is undecided
])
def test_pseudo_forgetting_on_every_outcome(short, long, expected):
    result = C.verdict_pseudo_forgetting(restored_rows({1: short, 2: (0.5, 0.5, 0.5), 5: long}))
    assert result["verdict"] == expected and expected in result["sentence"]
    numbers = result["numbers"]
    assert numbers["seeds"] == 3 and numbers["shortest"] == 1.0 and numbers["longest"] == 5.0
    assert numbers["threshold"] == C.PSEUDO and numbers["actual_threshold"] == C.ACTUAL
    assert numbers["estimate"] == pytest.approx(sum(short) / 3)


def test_pseudo_forgetting_leaves_out_a_length_run_on_one_seed():
    rows = restored_rows({1: (0.5, 0.55, 0.45), 5: (0.1, 0.15, 0.05)}, one_seed_length=10)
    result = C.verdict_pseudo_forgetting(rows)
    assert result["verdict"] == PARTLY  # the one-seed 10-epoch run (everything back) does not become the longest
    assert result["numbers"]["longest"] == 5.0 and result["numbers"]["left_out_lengths"] == [10.0]
    assert "10 epochs, not run on every seed, are left out" in result["sentence"]


def test_pseudo_forgetting_needs_two_lengths_on_every_seed():
    rows = restored_rows({1: (0.9, 0.95, 0.875)}, one_seed_length=10)
    result = C.verdict_pseudo_forgetting(rows)
    assert result["verdict"] == PREMISE and result["numbers"]["lengths"] == [1.0]


def test_pseudo_forgetting_null_row_tuning_forgot_nothing():
    result = C.verdict_pseudo_forgetting(restored_rows({1: (0.0, 0.0, 0.0), 5: (0.0, 0.0, 0.0)}, lost=0.0))
    assert result["verdict"] == PREMISE and result["numbers"]["seeds"] == 0


def test_pseudo_forgetting_a_restoring_pass_that_does_nothing_is_not_partly():
    result = C.verdict_pseudo_forgetting(restored_rows({1: (0.0, 0.0, 0.0), 5: (0.0, 0.0, 0.0)}))
    assert result["verdict"] == NOT  # "actual" at the longest, but no fall: no part of the two stages


# --- verdict_knowledge_survives ----------------------------------------------------------------------------

def stage_rows(probe_lost, free_lost, one_seed_length=None):
    """Per (seed, length): what the probe and the format-free test lose in tuning."""
    rows = []
    for length in probe_lost:
        for seed, (p, f) in enumerate(zip(probe_lost[length], free_lost[length])):
            rows.append({"seed": seed, "epochs": float(length), "before": BEFORE, "after": BEFORE - p,
                         "candidates_before": 0.875, "candidates_after": 0.875 - f})
    if one_seed_length is not None:
        rows.append({"seed": 0, "epochs": float(one_seed_length), "before": BEFORE, "after": BEFORE,
                     "candidates_before": 0.875, "candidates_after": 0.875})
    return pd.DataFrame(rows)


PROBE = {1: (0.4, 0.45, 0.5), 5: (0.6, 0.65, 0.7)}


@pytest.mark.parametrize("free, expected", [
    ({1: (0.0, 0.01, -0.01), 5: (0.4, 0.45, 0.5)}, REPRODUCED),  # kept early, lost late
    ({1: (0.3, 0.35, 0.4), 5: (0.5, 0.55, 0.6)}, PARTLY),  # lost from the start: actual only
    ({1: (0.0, 0.01, -0.01), 5: (0.0, 0.02, 0.01)}, PARTLY),  # kept at every length: pseudo only
    ({1: (0.3, 0.35, 0.4), 5: (0.0, 0.01, -0.01)}, NOT),  # lost early, back later: neither stage
    ({1: (0.7, 0.27, 0.35), 5: (0.9, 0.6, 0.65)}, INCONCLUSIVE),  # the chapter's LoRA: the early loss too noisy
])
def test_knowledge_survives_on_every_outcome(free, expected):
    result = C.verdict_knowledge_survives(stage_rows(PROBE, free))
    assert result["verdict"] == expected and expected in result["sentence"]
    numbers = result["numbers"]
    assert numbers["seeds"] == 3 and numbers["threshold"] == C.TOLERANCE
    assert numbers["estimate"] == pytest.approx(sum(free[1]) / 3)
    assert numbers["probe_lost_shortest"] == pytest.approx(0.45)
    assert numbers["candidates_lost_longest"] == pytest.approx(sum(free[5]) / 3)


def test_knowledge_survives_probe_barely_lost_is_no_pseudo_stage():
    result = C.verdict_knowledge_survives(stage_rows({1: (0.02, 0.03, 0.04), 5: (0.6, 0.65, 0.7)},
                                                     {1: (0.0, 0.01, -0.01), 5: (0.4, 0.45, 0.5)}))
    assert result["verdict"] == PARTLY and result["numbers"]["parts"]["probe_lost_at_shortest"] == "no"


def test_knowledge_survives_leaves_out_a_length_run_on_one_seed():
    free = {1: (0.0, 0.01, -0.01), 5: (0.4, 0.45, 0.5)}
    result = C.verdict_knowledge_survives(stage_rows(PROBE, free, one_seed_length=10))
    assert result["verdict"] == REPRODUCED and result["numbers"]["longest"] == 5.0  # not the one-seed run's nothing
    assert result["numbers"]["left_out_lengths"] == [10.0]


def test_knowledge_survives_needs_two_lengths_on_every_seed():
    result = C.verdict_knowledge_survives(stage_rows({1: PROBE[1]}, {1: (0.0, 0.0, 0.0)}, one_seed_length=10))
    assert result["verdict"] == PREMISE


def test_knowledge_survives_null_row_changed_nothing():
    nothing = {1: (0.0, 0.0, 0.0), 5: (0.0, 0.0, 0.0)}
    assert C.verdict_knowledge_survives(stage_rows(nothing, nothing))["verdict"] == NOT

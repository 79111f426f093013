"""The interval verdicts of chapter 10 (learning, forgetting and intruder dimensions) on hand-made rows.

Each verdict is checked on every outcome, inconclusive included, and on a null row: tuning that changed nothing
must not come out reproduced or partly.
"""

import math

import pandas as pd
import pytest

from tunestudy import ch10_forgetting as C

REPRODUCED, PARTLY, NOT, INCONCLUSIVE = "reproduced", "partly reproduced", "not reproduced", "inconclusive"
FULL = "full lr 0.001"


# --- verdict_full_change_rank ---------------------------------------------------------------------------

def rank_rows(medians_by_seed, spread=(-2, 0, 2), other_cell_median=200):
    """Full fine-tuning's reference cell on each seed, three matrices around the given median; and a one-seed
    run at another rate with a much larger change, which the verdict must not read."""
    rows = [{"cell": FULL, "seed": seed, "effective_ranks": {f"m{i}": max(0, m + d) for i, d in enumerate(spread)}}
            for seed, m in enumerate(medians_by_seed)]
    rows.append({"cell": "full lr 0.003", "seed": 0,
                 "effective_ranks": {"m0": other_cell_median, "m1": other_cell_median, "m2": other_cell_median}})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("medians, expected", [
    ((48, 50, 52), REPRODUCED),  # about 12.5x the median LoRA rank of 4
    ((23, 24, 23), PARTLY),  # the chapter's case: about 6x
    ((8, 9, 10), NOT),  # about 2x
    ((20, 60, 30), INCONCLUSIVE),  # 5x to 15x on one seed or another: straddles 10x
    ((10, 14, 18), INCONCLUSIVE),  # about 3.5x, straddles 3x
])
def test_full_change_rank_on_every_outcome(medians, expected):
    result = C.verdict_full_change_rank(rank_rows(medians), FULL, [1, 4, 16])
    assert result["verdict"] == expected and expected in result["sentence"]
    numbers = result["numbers"]
    assert numbers["seeds"] == 3 and numbers["median_lora_rank"] == 4.0
    assert numbers["threshold"] == C.RANK_FACTOR and numbers["partly_threshold"] == C.RANK_PARTLY
    low, high = numbers["interval"]
    assert low <= numbers["ratio"] <= high
    assert numbers["full_median_by_seed"] == dict(enumerate(float(m) for m in medians))


def test_full_change_rank_is_the_geometric_mean_of_per_seed_ratios():
    numbers = C.verdict_full_change_rank(rank_rows((20, 80, 40)), FULL, [4])["numbers"]
    assert numbers["ratio"] == pytest.approx((5 * 20 * 10) ** (1 / 3))  # 20/4, 80/4, 40/4
    assert numbers["median_full_effective_rank"] == pytest.approx(140 / 3)


def test_full_change_rank_null_row_changed_nothing():
    result = C.verdict_full_change_rank(rank_rows((0, 0, 0)), FULL, [1, 4, 16])
    assert result["verdict"] == NOT and result["numbers"]["ratio"] < 1


def test_full_change_rank_one_seed_has_no_interval():
    result = C.verdict_full_change_rank(rank_rows((100,)), FULL, [4])
    assert result["verdict"] == INCONCLUSIVE and "no interval" in result["sentence"]


# --- verdict_intruders ------------------------------------------------------------------------------

def intruder_rows(lora_counts, full_counts, forgetting=None, one_seed_full=5):
    """Per seed: LoRA cells with the given counts (forgetting rising with the count unless given), full fine-tuning
    at its reference rate, and a one-seed full run at another rate (left out by the verdict)."""
    rows = []
    for seed, (counts, full) in enumerate(zip(lora_counts, full_counts)):
        forgets = forgetting[seed] if forgetting is not None else [0.1 * (i + 1) for i in range(len(counts))]
        rows += [{"method": "lora", "cell": f"cell {i}", "seed": seed, "intruders": c, "forgetting": f}
                 for i, (c, f) in enumerate(zip(counts, forgets))]
        rows.append({"method": "full", "cell": FULL, "seed": seed, "intruders": full, "forgetting": 0.5})
    rows.append({"method": "full", "cell": "full lr 0.003", "seed": 0, "intruders": one_seed_full, "forgetting": 0.9})
    return pd.DataFrame(rows)


RISING = [[4, 8, 12, 16], [5, 9, 12, 18], [3, 8, 13, 15]]  # counts rise with forgetting on every seed
FALLING = [list(reversed(c)) for c in RISING]  # counts fall with forgetting


@pytest.mark.parametrize("lora, full, forgetting, expected", [
    (RISING, [0, 0, 0], None, REPRODUCED),  # many intruders, full none, tracking forgetting
    (RISING, [0, 0, 1], None, INCONCLUSIVE),  # full 0-1: three seeds cannot place its mean below 1
    (FALLING, [0, 0, 0], None, PARTLY),  # LoRA has them, full not, but they fall with forgetting
    (RISING, [4, 5, 6], None, PARTLY),  # full has several per model as well
    ([[1, 1, 1, 1]] * 3, [1, 1, 1], None, NOT),  # LoRA no more than full
    ([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]], [0, 1, 1], None, NOT),  # under one more: within "almost none"
    ([[4, 8, 12, 16], [0, 1, 1, 0], [3, 8, 13, 15]], [0, 0, 0], None, INCONCLUSIVE),  # one seed without: straddles 1
    (RISING, [0, 0, 0], [[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]], INCONCLUSIVE),  # rho ±1
])
def test_intruders_on_every_outcome(lora, full, forgetting, expected):
    result = C.verdict_intruders(intruder_rows(lora, full, forgetting), FULL, random_count=40.0)
    assert result["verdict"] == expected and expected in result["sentence"]
    numbers = result["numbers"]
    assert numbers["seeds"] == 3 and numbers["lora_cells"] == 4 and numbers["random_count"] == 40.0
    assert numbers["threshold"] == C.INTRUDER_MARGIN


def test_intruders_paired_by_seed_and_reads_the_reference_rate_only():
    numbers = C.verdict_intruders(intruder_rows(RISING, [0, 0, 1]), FULL, 0.0)["numbers"]
    assert numbers["differences"] == pytest.approx([10.0, 11.0, 8.75])  # LoRA's mean minus full's, per seed
    assert numbers["full_mean_count"] == pytest.approx(1 / 3)  # the one-seed run at 0.003 (5) is left out
    assert numbers["spearman_by_seed"] == pytest.approx([1.0, 1.0, 1.0])
    assert numbers["parts"] == {"lora_more": "yes", "full_almost_none": "undecided", "tracks_forgetting": "yes"}


def test_intruders_leave_out_a_lora_cell_not_run_on_every_seed():
    rows = intruder_rows(RISING, [0, 0, 0])
    rows = pd.concat([rows, pd.DataFrame([{"method": "lora", "cell": "one seed", "seed": 0, "intruders": 500,
                                           "forgetting": 0.9}])], ignore_index=True)
    numbers = C.verdict_intruders(rows, FULL, 0.0)["numbers"]
    assert numbers["lora_cells"] == 4 and numbers["differences"][0] == pytest.approx(10.0)


def test_intruders_null_row_changed_nothing():
    # a tuning that moved no weight keeps every top direction: no intruders for either method
    result = C.verdict_intruders(intruder_rows([[0, 0, 0, 0]] * 3, [0, 0, 0]), FULL, 0.0)
    assert result["verdict"] == NOT
    assert math.isnan(result["numbers"]["spearman_rho_forgetting"])  # constant counts: no ranking

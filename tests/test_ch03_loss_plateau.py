"""Chapter 03's plateau verdict on hand-made per-seed windows of the loss on the unknown set.

Each seed's run is given by its loss at the start and by two factors: its fall over the first half (start / mid)
and over the second half (mid / end). FLAT_FACTOR is 1.2: a second-half factor within 1/1.2 to 1.2 is flat, a
fall above 1.2 is a fall.
"""

import math

import numpy as np
import pytest

from tunestudy import ch03_loss_plateau as C

REPRODUCED, PARTLY, NOT, INCONCLUSIVE = "reproduced", "partly reproduced", "not reproduced", "inconclusive"


def rows(lora, full, start=2.5):
    """lora, full: one (first-half fall, second-half fall) per seed, as factors."""
    out = []
    for method, falls in (("lora", lora), ("full", full)):
        for seed, (first, second) in enumerate(falls):
            mid = start / first
            out.append({"seed": seed, "method": method, "start": start, "mid": mid, "end": mid / second})
    return out


PLATEAU = [(3.3, 1.05), (3.6, 1.02), (2.9, 1.08)]  # drops fast, then within 1.2x
KEEPS_FALLING = [(3.0, 2.1), (3.2, 2.6), (2.8, 1.9)]  # the second half falls by 2x or more
NOTHING = [(1.01, 1.0), (0.99, 1.01), (1.0, 0.99)]  # a run that changed nothing: flat and high from the start
AFTER_DROP_FLAT = [(7.0, 1.03), (7.4, 1.0), (6.8, 1.05)]  # full fine-tuning that drops, then stalls too


@pytest.mark.parametrize("lora, full, expected, parts", [
    (PLATEAU, KEEPS_FALLING, REPRODUCED, ("holds", "holds")),
    # LoRA plateaus but full fine-tuning stalls as well: only LoRA's part holds
    (PLATEAU, AFTER_DROP_FLAT, PARTLY, ("holds", "fails")),
    # full fine-tuning keeps going down, and so does LoRA: only full's part holds
    (KEEPS_FALLING, KEEPS_FALLING, PARTLY, ("fails", "holds")),
    # a LoRA that learned nothing is flat, but never dropped: no plateau; full's part holds alone
    (NOTHING, KEEPS_FALLING, PARTLY, ("fails", "holds")),
    # LoRA keeps falling, full fine-tuning stalls: the opposite of the claim
    (KEEPS_FALLING, AFTER_DROP_FLAT, NOT, ("fails", "fails")),
    # full fine-tuning's fall straddles 1.2x: undecided
    (PLATEAU, [(3.0, 1.02), (3.1, 1.7), (2.9, 1.3)], INCONCLUSIVE, ("holds", "undecided")),
    # LoRA's second half neither shown flat nor shown to move
    ([(3.3, 0.95), (3.6, 1.45), (2.9, 1.1)], KEEPS_FALLING, INCONCLUSIVE, ("undecided", "holds")),
    # LoRA's first-half fall straddles 1.2x: not shown to drop, not shown not to
    ([(1.0, 1.02), (3.0, 1.03), (1.5, 1.01)], AFTER_DROP_FLAT, INCONCLUSIVE, ("undecided", "fails")),
])
def test_every_outcome(lora, full, expected, parts):
    verdict = C.verdict_plateau(rows(lora, full))
    assert verdict["verdict"] == expected
    assert tuple(verdict["numbers"]["parts"].values()) == parts
    assert verdict["sentence"].endswith(f": {expected}")
    assert verdict["numbers"]["seeds"] == 3


def test_a_run_that_changed_nothing_is_neither_reproduced_nor_partly():
    """Tuning that changed nothing: a flat, high loss for both methods. LoRA is flat, but it never dropped, and
    full fine-tuning does not keep going down: both parts fail."""
    verdict = C.verdict_plateau(rows(NOTHING, NOTHING))
    assert verdict["verdict"] == NOT
    assert verdict["numbers"]["parts"] == {"lora plateau": "fails", "full keeps going down": "fails"}
    assert verdict["numbers"]["lora_flat"] and verdict["numbers"]["lora_drops"] == "no"


def test_the_numbers_are_factors_with_intervals_paired_within_the_seed():
    verdict = C.verdict_plateau(rows(PLATEAU, KEEPS_FALLING))
    n = verdict["numbers"]
    assert n["estimate"] == pytest.approx(math.exp(np.mean(np.log([1.05, 1.02, 1.08]))))
    assert n["interval"][0] < n["estimate"] < n["interval"][1] < C.FLAT_FACTOR
    assert n["threshold"] == C.FLAT_FACTOR and n["tost_p"] < 0.05
    assert n["full_second_half_fall"] == pytest.approx(math.exp(np.mean(np.log([2.1, 2.6, 1.9]))))
    assert n["lora_end_over_full_end"] == pytest.approx(math.exp(np.mean(np.log(
        [(3.0 * 2.1) / (3.3 * 1.05), (3.2 * 2.6) / (3.6 * 1.02), (2.8 * 1.9) / (2.9 * 1.08)]))))
    assert set(n["per_seed"]) == {"0", "1", "2"}
    assert n["per_seed"]["1"]["lora_second_half_fall"] == pytest.approx(1.02)


def test_one_seed_has_no_interval_and_is_inconclusive():
    verdict = C.verdict_plateau(rows(PLATEAU[:1], KEEPS_FALLING[:1]))
    assert verdict["verdict"] == INCONCLUSIVE
    assert "no interval" in verdict["sentence"]


def test_only_seeds_holding_both_methods_are_paired():
    verdict = C.verdict_plateau(rows(PLATEAU, KEEPS_FALLING[:2]))
    assert verdict["numbers"]["seeds"] == 2


def test_missing_method_and_nonpositive_loss_are_errors():
    with pytest.raises(ValueError, match="full"):
        C.verdict_plateau([r for r in rows(PLATEAU, KEEPS_FALLING) if r["method"] == "lora"])
    bad = rows(PLATEAU, KEEPS_FALLING)
    bad[0]["end"] = 0.0
    with pytest.raises(ValueError, match="positive"):
        C.verdict_plateau(bad)


def test_windows_are_the_chapters_mid_and_end_and_a_start():
    loss = np.arange(100, 0, -1, dtype=float)  # 100 steps, 100 down to 1
    w = C.windows(loss)
    assert w["start"] == pytest.approx(np.mean(loss[:10]))
    assert w["mid"] == pytest.approx(np.mean(loss[45:56]))  # the chapter's window around the middle
    assert w["end"] == pytest.approx(np.mean(loss[-10:]))
    assert w["second_half_drop"] == pytest.approx((w["mid"] - w["end"]) / w["mid"])
    short = C.windows([3.0, 2.0])  # fewer than ten steps: one-step windows
    assert (short["start"], short["mid"], short["end"]) == (3.0, 2.0, 2.0)
    with pytest.raises(ValueError):
        C.windows([])


def test_plateau_rows_one_row_per_seed_and_method():
    logs = {"lora": [{"loss": [3.0, 2.0, 1.0]}] * 2, "full": [{"loss": [3.0, 1.0, 0.5]}] * 2}
    table = C.plateau_rows(logs, [4, 5])
    assert list(zip(table.seed, table.method)) == [(4, "lora"), (5, "lora"), (4, "full"), (5, "full")]
    with pytest.raises(ValueError, match="seeds"):
        C.plateau_rows({"lora": [{"loss": [1.0]}]}, [0, 1])


def test_runs_too_short_for_a_curve_do_not_meet_the_premise():
    """A smoke run logs one step: its start, middle and end are the same step, a shape nobody can judge."""
    logs = {"lora": [{"loss": [5.0]}] * 2, "full": [{"loss": [5.0]}] * 2}
    verdict = C.verdict_plateau(C.plateau_rows(logs, [0, 1]))
    assert verdict["verdict"] == "premise not met"
    long = {"lora": [{"loss": list(np.geomspace(3.0, 0.7, 40)) + [0.7] * 40}] * 2,
            "full": [{"loss": list(np.geomspace(3.0, 0.05, 80))}] * 2}
    assert C.verdict_plateau(C.plateau_rows(long, [0, 1]))["verdict"] != "premise not met"

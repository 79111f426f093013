"""Chapter 12's verdicts from per-seed fits of Gekhman's model, on hand-made checkpoint rows.

Each seed's rows follow the linear model exactly (no noise unless asked), so each seed's fit returns the
coefficients it was made from, and the converged fall is (b_kn * fk - b_unk * fu) / 100, fk and fu the shares
of the known and unknown examples fitted at the last epoch.
"""

import math

import numpy as np
import pandas as pd
import pytest

from tunestudy import ch12_known_unknown as C
from tunestudy import experiments as X

REPRODUCED, PARTLY, NOT, INCONCLUSIVE = "reproduced", "partly reproduced", "not reproduced", "inconclusive"
SHARES = (0, 25, 50, 75, 100)
EPOCHS = (1.0, 2.0, 4.0, 8.0)
KNOWN_CURVE = (0.4, 0.7, 0.9, 1.0)  # share of the known examples fitted by each epoch, times `fitted[0]`
UNKNOWN_CURVE = (0.1, 0.3, 0.6, 1.0)  # the unknown ones, slower


def checkpoint_rows(coefficients, measure="test_accuracy", fitted=(1.0, 1.0), b0=20.0, noise=0.0, size=240,
                    method="full"):
    """One method's checkpoint rows: seed i's `measure` is b0 + b_kn x_kn + b_unk x_unk (points), with
    (b_kn, b_unk) = coefficients[i]; `noise`: the sd of normal noise added to every row, in points."""
    rng = np.random.default_rng(0)
    rows = []
    for seed, (b_kn, b_unk) in enumerate(coefficients):
        for share in SHARES:
            n_unknown = size * share // 100
            n_known = size - n_unknown
            for epoch, gk, gu in zip(EPOCHS, KNOWN_CURVE, UNKNOWN_CURVE):
                kf, uf = round(n_known * fitted[0] * gk), round(n_unknown * fitted[1] * gu)
                points = b0 + b_kn * kf / size + b_unk * uf / size + rng.normal(0, noise) if noise else (
                    b0 + b_kn * kf / size + b_unk * uf / size)
                rows.append({"method": method, "seed": seed, "unknown_share": share, "epoch": epoch,
                             "n_known": n_known, "n_unknown": n_unknown, "n_known_fitted": kf,
                             "n_unknown_fitted": uf, measure: points / 100})
    return pd.DataFrame(rows)


def test_per_seed_fits_recover_each_seeds_coefficients():
    fits = C.per_seed_fits(checkpoint_rows([(7.0, -8.0), (5.0, -3.0), (9.0, -12.0)]))
    assert list(fits.seed) == [0, 1, 2] and list(fits.n) == [20, 20, 20]
    assert list(fits.b_kn) == pytest.approx([7.0, 5.0, 9.0], abs=1e-8)
    assert list(fits.b_unk) == pytest.approx([-8.0, -3.0, -12.0], abs=1e-8)


def test_converged_falls_pair_the_last_epochs_of_one_seed():
    falls = C.converged_falls(checkpoint_rows([(7.0, -8.0), (10.0, 2.0)]))
    assert list(falls.fall) == pytest.approx([0.15, 0.08])


# --- verdict_unknown_hurts ----------------------------------------------------------------------------------

@pytest.mark.parametrize("coefficients, fitted, expected", [
    # Gekhman's signs on every seed: b_unk below 0 and a fall of 0.14-0.16
    ([(7.0, -8.0), (6.0, -9.0), (8.0, -7.0)], (1.0, 1.0), REPRODUCED),
    # b_unk below 0, but fitting the known examples hurts as much: no fall (partly)
    ([(-10.0, -8.0), (-11.0, -9.0), (-12.0, -8.5)], (1.0, 1.0), PARTLY),
    # the chapter's primary fit: b_unk above 0 (the format lifts accuracy), yet a fall at convergence (partly)
    ([(30.0, 20.0), (32.0, 25.0), (28.0, 18.0)], (1.0, 0.5), PARTLY),
    # b_unk above 0 and no fall
    ([(2.0, 8.0), (1.0, 9.0), (3.0, 7.0)], (1.0, 1.0), NOT),
    # one seed's b_unk the other way: it straddles 0
    ([(7.0, -8.0), (7.0, 6.0), (7.0, -3.0)], (1.0, 1.0), INCONCLUSIVE),
    # b_unk below 0 on every seed, the fall straddles 0.05 (0.08, -0.01, 0.13)
    ([(0.0, -8.0), (-10.0, -9.0), (5.0, -8.0)], (1.0, 1.0), INCONCLUSIVE),
])
def test_unknown_hurts_on_every_outcome(coefficients, fitted, expected):
    result = C.verdict_unknown_hurts(checkpoint_rows(coefficients, fitted=fitted))
    assert result["verdict"] == expected and result["sentence"].endswith(expected)
    numbers = result["numbers"]
    assert numbers["seeds"] == 3 and numbers["threshold"] == 0.0 and numbers["fall_threshold"] == 0.05
    assert numbers["estimate"] == pytest.approx(np.mean([b for _, b in coefficients]), abs=1e-8)
    assert "0.05" in result["criterion"] and "per seed" in result["criterion"]


@pytest.mark.filterwarnings("ignore:divide by zero")  # a constant measure has no R^2
def test_unknown_hurts_on_the_null_row():
    """Tuning that changed nothing the measure sees: accuracy is noise around one level, whatever was fitted."""
    result = C.verdict_unknown_hurts(checkpoint_rows([(0.0, 0.0)] * 3, noise=2.0))
    assert result["verdict"] not in (REPRODUCED, PARTLY)
    exact = C.verdict_unknown_hurts(checkpoint_rows([(0.0, 0.0)] * 3))
    assert exact["verdict"] in (NOT, INCONCLUSIVE)


def test_unknown_hurts_premise_not_met_when_nothing_was_fitted():
    rows = checkpoint_rows([(7.0, -8.0)] * 3, fitted=(0.0, 0.0))  # a model that fitted nothing: no fit is defined
    result = C.verdict_unknown_hurts(rows)
    assert result["verdict"] == "premise not met" and result["sentence"].endswith("premise not met")
    one_share = checkpoint_rows([(7.0, -8.0)] * 3)
    assert C.verdict_unknown_hurts(one_share[one_share.unknown_share == 50])["verdict"] == "premise not met"


def test_unknown_hurts_with_one_seed_has_no_interval():
    result = C.verdict_unknown_hurts(checkpoint_rows([(7.0, -8.0)]))
    assert result["verdict"] == INCONCLUSIVE and all(math.isnan(v) for v in result["numbers"]["interval"])


def test_unknown_hurts_with_the_format_held_fixed_says_it_was_added_after():
    """The chapter's story: accuracy rides on the share of answers stating a value, which rises with fitting
    either kind; the primary fit's b_unk comes out above 0, the fit with `stated` recovers the true -20."""
    rows = checkpoint_rows([(0.0, 0.0)] * 3, b0=0.0)
    size = rows.n_known + rows.n_unknown
    wiggle = np.where(rows.epoch == 2.0, 0.05, 0.0) + 0.02 * rows.seed  # keeps `stated` off the two shares' plane
    rows["stated"] = 0.4 * rows.n_known_fitted / size + 0.8 * rows.n_unknown_fitted / size + wiggle
    rows["test_accuracy"] = (5.0 * rows.n_known_fitted / size - 20.0 * rows.n_unknown_fitted / size
                             + 80.0 * rows.stated) / 100
    primary = C.verdict_unknown_hurts(rows)
    fixed = C.verdict_unknown_hurts(rows, control="stated", post_hoc=True)
    assert primary["numbers"]["estimate"] > 0 and fixed["numbers"]["estimate"] < 0
    assert fixed["numbers"]["estimate"] == pytest.approx(-20.0) and fixed["numbers"]["b_stated"] == pytest.approx(80.0)
    assert C.POST_HOC_NOTE in fixed["criterion"] and C.POST_HOC_NOTE in fixed["sentence"]
    assert "share of answers that state a value" in fixed["sentence"]
    assert fixed["numbers"]["post_hoc"] and fixed["numbers"]["control"] == "stated"
    assert C.POST_HOC_NOTE not in primary["criterion"]


def test_hurts_asks_for_one_method_at_a_time():
    rows = pd.concat([checkpoint_rows([(7.0, -8.0)] * 3), checkpoint_rows([(7.0, -8.0)] * 3, method="lora")])
    with pytest.raises(ValueError, match="one method"):
        C.verdict_unknown_hurts(rows)


# --- verdict_unknown_hallucinates -------------------------------------------------------------------------

@pytest.mark.parametrize("coefficients, expected", [
    ([(0.0, 30.0), (1.0, 25.0), (-1.0, 28.0)], REPRODUCED),  # rises with unknown examples, not with known ones
    ([(40.0, 30.0), (42.0, 28.0), (38.0, 25.0)], PARTLY),  # rises, but more with known examples
    ([(-20.0, -5.0), (-22.0, -6.0), (-18.0, -4.0)], PARTLY),  # falls, but less with unknown examples
    ([(5.0, -5.0), (6.0, -4.0), (4.0, -6.0)], NOT),  # falls with unknown examples, and more than with known
    ([(0.0, -5.0), (0.0, 10.0), (0.0, 30.0)], INCONCLUSIVE),  # one seed the other way: straddles 0
    ([(30.0, 30.0), (20.0, 28.0), (40.0, 26.0)], INCONCLUSIVE),  # b_unk above 0, b_unk - b_kn straddles 0
])
def test_unknown_hallucinates_on_every_outcome(coefficients, expected):
    result = C.verdict_unknown_hallucinates(checkpoint_rows(coefficients, measure="test_hallucination"))
    assert result["verdict"] == expected and result["sentence"].endswith(expected)
    numbers = result["numbers"]
    assert numbers["seeds"] == 3 and numbers["threshold"] == 0.0
    assert numbers["b_unk_minus_b_kn"] == pytest.approx(np.mean([u - k for k, u in coefficients]), abs=1e-8)


def test_unknown_hallucinates_on_the_null_row():
    result = C.verdict_unknown_hallucinates(checkpoint_rows([(0.0, 0.0)] * 3, measure="test_hallucination",
                                                            noise=2.0))
    assert result["verdict"] not in (REPRODUCED, PARTLY)


def test_unknown_hallucinates_premise_not_met_when_nothing_was_fitted():
    rows = checkpoint_rows([(0.0, 30.0)] * 3, measure="test_hallucination", fitted=(0.0, 0.0))
    assert C.verdict_unknown_hallucinates(rows)["verdict"] == "premise not met"


def test_the_interval_is_over_seeds_not_over_checkpoint_rows():
    """Three seeds whose b_unk differ: the pooled OLS interval over 60 rows excludes 0, the seeds' does not."""
    rows = checkpoint_rows([(0.0, 2.0), (0.0, 12.0), (0.0, -4.0)], measure="test_hallucination")
    pooled = X.gekhman_fit(rows, "test_hallucination")
    result = C.verdict_unknown_hallucinates(rows)
    low, high = result["numbers"]["interval"]
    assert low < 0 < high and high - low > pooled["ci_b_unk"][1] - pooled["ci_b_unk"][0]
    assert result["verdict"] == INCONCLUSIVE

"""The interval helpers against scipy and statsmodels on hand-made data, and the decision on every outcome."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tunestudy import stats


def test_the_t_interval_is_scipy_s_and_by_hand():
    values = [1.64, 1.20, 1.32]
    mean, low, high = stats.t_interval(values)
    sem = np.std(values, ddof=1) / math.sqrt(3)
    assert mean == pytest.approx(np.mean(values))
    assert (low, high) == pytest.approx((mean - 4.302652729911275 * sem, mean + 4.302652729911275 * sem))  # t(0.975, 2)
    assert (low, high) == pytest.approx(scipy_stats.t.interval(0.95, 2, loc=mean, scale=scipy_stats.sem(values)))
    assert all(math.isnan(v) for v in stats.t_interval([2.0])[1:])


def test_a_paired_ratio_is_the_exponentiated_interval_of_log_ratios():
    full, lora = [3.0, 2.4, 2.6], [1.0, 2.0, 2.0]
    geo, low, high = stats.ratio_interval(full, lora)
    logs = np.log(np.array(full) / np.array(lora))
    _, lo, hi = stats.t_interval(logs)
    assert geo == pytest.approx(math.exp(logs.mean())) and (low, high) == pytest.approx((math.exp(lo), math.exp(hi)))
    with pytest.raises(ValueError, match="positive"):
        stats.ratio_interval([1.0, 0.0], [1.0, 1.0])


def test_the_bootstrap_resamples_seeds_and_items():
    rng = np.random.default_rng(1)
    same = [rng.normal(0.5, 0.1, 200) for _ in range(3)]
    estimate, low, high = stats.bootstrap_interval(same, n_resamples=500)
    assert low < estimate < high and high - low < 0.05
    apart = [np.full(50, 0.1), np.full(50, 0.9), np.full(50, 0.5)]  # items agree within a seed, seeds differ
    _, low, high = stats.bootstrap_interval(apart, n_resamples=500)
    assert low < 0.3 and high > 0.7  # the seeds' spread is in the interval, not only the items'


def test_equivalence_holds_for_a_flat_series_and_not_for_a_moving_one():
    flat = [0.01, -0.02, 0.0, 0.015, -0.005]
    moving = [0.10, 0.14, 0.08, 0.12, 0.11]
    assert stats.equivalent(flat, margin=0.05)["equivalent"]
    assert not stats.equivalent(moving, margin=0.05)["equivalent"]
    assert not stats.equivalent([0.0, 0.2, -0.2], margin=0.05)["equivalent"]  # too noisy to show anything
    from statsmodels.stats.weightstats import DescrStatsW
    assert stats.equivalent(flat, 0.05)["p_value"] == pytest.approx(DescrStatsW(flat).ttost_mean(-0.05, 0.05)[0])


@pytest.mark.parametrize("low, high, expected", [
    (3.5, 5.0, "reproduced"),
    (1.3, 2.5, "partly reproduced"),
    (0.5, 0.9, "not reproduced"),
    (2.5, 3.5, "inconclusive"),  # straddles the reproduced threshold
    (0.9, 1.5, "inconclusive"),  # straddles the partly threshold
    (1.0, 1.0, "not reproduced"),  # the null row: tuning that changed nothing, ratio 1 exactly
    (math.nan, math.nan, "inconclusive"),  # one seed: no interval
])
def test_decide_on_every_outcome(low, high, expected):
    assert stats.decide(low, high, reproduced_above=3.0, partly_above=1.0 + 1e-9) == expected


def test_the_sentence_reads_as_the_issue_writes_it():
    text = stats.sentence("full's mean KL over LoRA's", 1.35, 0.9, 1.9, 3, "3x", "not reproduced")
    assert text == ("full's mean KL over LoRA's is 1.35 (95% interval 0.90 to 1.90 over 3 seeds); "
                    "the claim needs 3x: not reproduced")

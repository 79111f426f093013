"""Each verdict rule on hand-made rows: the numbers are chosen so that exactly one condition flips."""

import pandas as pd
import pytest

from tunestudy import experiments as X


def kl_rows(ratios, lora_kl=(1.0, 2.0, 1.5), style=1.0):
    """One LoRA and one full row per seed, full's KL `ratios[i]` times the LoRA's on seed i."""
    rows = []
    for seed, (ratio, kl) in enumerate(zip(ratios, lora_kl)):
        rows += [{"seed": seed, "method": "lora", "kl_mean": kl, "style_share": style},
                 {"seed": seed, "method": "full", "kl_mean": kl * ratio, "style_share": 1.0}]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("ratios, style, expected", [
    ((4.5, 5.0, 4.0), 1.0, "reproduced"),  # every seed at the reference's 4-5x
    ((1.8, 2.0, 2.2), 1.0, "partly reproduced"),  # full shifts more, about 2x
    ((0.6, 0.7, 0.8), 1.0, "not reproduced"),  # full shifts less
    ((1.64, 1.20, 1.32), 0.9, "inconclusive"),  # chapter 2's committed rank-1 seeds: 3 seeds cannot clear 1x
    ((2.0, 6.0, 3.5), 1.0, "inconclusive"),  # straddles 3x
    ((0.8, 1.3, 1.1), 1.0, "inconclusive"),  # straddles 1x
    ((1.0, 1.0, 1.0), 1.0, "not reproduced"),  # the null row: tuning changed both alike
    ((5.0, 5.0, 5.0), 0.0, "premise not met"),  # a LoRA that learned no style barely shifts for free
])
def test_kl_shift_verdict_on_every_outcome(ratios, style, expected):
    result = X.verdict_kl_shift(kl_rows(ratios, style=style), "lora")
    assert result["verdict"] == expected
    assert result["numbers"]["seeds"] == 3 and "3x" in result["criterion"] and expected in result["sentence"]


def test_kl_shift_with_a_method_that_changed_nothing_is_premise_not_met():
    rows = kl_rows((2.0, 2.0, 2.0))
    rows.loc[(rows.method == "lora") & (rows.seed == 1), "kl_mean"] = 0.0
    result = X.verdict_kl_shift(rows, "lora")
    assert result["verdict"] == "premise not met" and "no ratio" in result["sentence"]


def test_kl_shift_ratio_is_paired_within_each_seed():
    """Seeds whose KLs differ tenfold but whose ratio is the same give a tight interval around that ratio."""
    result = X.verdict_kl_shift(kl_rows((2.0, 2.0, 2.0), lora_kl=(0.1, 1.0, 10.0)), "lora")
    assert result["numbers"]["ratio"] == pytest.approx(2.0) and result["numbers"]["interval"] == pytest.approx([2.0, 2.0])


def scaling_rows(lora_kl, lora_acc, full_kl, noise=(0.0, 0.01, -0.01, 0.005, -0.005)):
    """Five seeds at the scales x1, x10, x52: the LoRA's and full fine-tuning's KL and accuracy per scale, the
    seeds differing at the last scale."""
    rows = []
    for seed, noise_at_last in enumerate(noise):
        for factor, lk, la, fk in zip((1, 10, 52), lora_kl, lora_acc, full_kl):
            e = noise_at_last if factor == 52 else 0.0
            rows += [{"seed": seed, "factor": factor, "method": "lora", "kl_mean": lk * (1 + e), "accuracy_known": la + e},
                     {"seed": seed, "factor": factor, "method": "full", "kl_mean": fk * (1 - e), "accuracy_known": 0.9}]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("lora_kl, lora_acc, full_kl, expected", [
    ((1.0, 1.0, 1.05), (0.2, 0.5, 0.51), (1.0, 2.0, 3.0), "reproduced"),  # LoRA flat from x10, full's KL grows 1.5x
    ((1.0, 1.0, 1.05), (0.2, 0.5, 0.51), (1.0, 2.0, 2.05), "partly reproduced"),  # LoRA flat, full flat too
    ((1.0, 1.0, 1.3), (0.2, 0.5, 0.7), (1.0, 2.0, 4.0), "partly reproduced"),  # LoRA moves, but less than full
    ((1.0, 1.0, 2.0), (0.2, 0.5, 0.7), (1.0, 2.0, 3.0), "not reproduced"),  # LoRA's KL grows as fast as full's
    ((1.0, 1.0, 1.0), (0.5, 0.5, 0.5), (1.0, 1.0, 1.0), "partly reproduced"),  # the null row: nothing moves
    ((1.0, 1.0, 1.1), (0.2, 0.5, 0.545), (1.0, 2.0, 2.2), "inconclusive"),  # LoRA at the accuracy margin, full unclear
])
def test_data_scaling_verdict_on_every_outcome(lora_kl, lora_acc, full_kl, expected):
    result = X.verdict_data_scaling(scaling_rows(lora_kl, lora_acc, full_kl), "lora")
    assert result["verdict"] == expected, result["sentence"]
    assert result["numbers"]["from_factor"] == 10 and result["numbers"]["to_factor"] == 52  # from the second scale on


def vs_rows(gap_first, gap_last, lora_forgetting, full_forgetting, noise=(0.0, 0.01, -0.01)):
    """Three seeds, two bases (epochs 10 and 45): full fine-tuning at 0.9 held-out accuracy, LoRA at 0.9 + gap."""
    rows = []
    for seed, e in enumerate(noise):
        for epoch, gap in ((10, gap_first), (45, gap_last)):
            rows += [{"seed": seed, "base_epoch": epoch, "method": "full", "accuracy_known": 0.9,
                      "forgetting": full_forgetting},
                     {"seed": seed, "base_epoch": epoch, "method": "lora", "accuracy_known": 0.9 + gap + e,
                      "forgetting": lora_forgetting + e / 10}]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("args, expected", [
    ((0.01, 0.08, 0.01, 0.05), "reproduced"),  # ahead on the best base, lead growing, forgets less
    ((0.08, 0.05, 0.01, 0.05), "partly reproduced"),  # the lead shrinks
    ((-0.3, -0.6, 0.01, 0.05), "partly reproduced"),  # forgets less only
    ((-0.3, -0.6, 0.05, 0.01), "not reproduced"),
    ((-0.3, -0.6, 0.05, 0.05), "inconclusive"),  # behind; forgetting level within the noise: partly or not
    ((-0.3, 0.002, 0.05, 0.05), "inconclusive"),  # the best base's gap within the seeds' noise
])
def test_lora_vs_full_verdict_on_every_outcome(args, expected):
    result = X.verdict_lora_vs_full(vs_rows(*args), "lora")
    assert result["verdict"] == expected and expected in result["sentence"]
    assert result["numbers"]["gap_last"] == pytest.approx(args[1])


def test_lora_vs_full_null_row_is_not_reproduced():
    """LoRA that is full fine-tuning again, on every seed: no gap, no growth, the same forgetting."""
    result = X.verdict_lora_vs_full(vs_rows(0.0, 0.0, 0.05, 0.05, noise=(0.0, 0.0, 0.0)), "lora")
    assert result["verdict"] == "not reproduced"


def cells(rows):
    return pd.DataFrame(rows, columns=["targets", "rank", "trainable_parameters", "accuracy_known"])


def test_attention_only_verdict():
    grid = cells([("qv", 1, 1000, 0.3), ("attention", 1, 2000, 0.4), ("mlp", 1, 1500, 0.5), ("all", 1, 3500, 0.9)])
    result = X.verdict_attention_only(grid)
    # qv (1000) has no rival with <= 1000 parameters; attention (2000) is beaten by mlp (1500)
    assert result["numbers"]["beaten"] == {"qv r1": False, "attention r1": True}
    assert result["verdict"] == "partly reproduced"
    grid.loc[2, "trainable_parameters"] = 900
    assert X.verdict_attention_only(grid)["verdict"] == "reproduced"
    grid.loc[2, "accuracy_known"] = 0.2  # the cheap MLP cell now loses to both
    assert X.verdict_attention_only(grid)["verdict"] == "not reproduced"  # all (3500) is bigger than both


def test_lr_ratio_verdict():
    best = {("qv", 1): 1e-2, ("qv", 4): 1e-2, ("all", 1): 3e-2, ("all", 4): 1e-2}
    result = X.verdict_lr_ratio(best, 1e-3)
    assert result["verdict"] == "reproduced"
    assert result["numbers"]["ratio_to_full"]["all r1"] == pytest.approx(30)
    assert result["numbers"]["rank_spread_by_targets"] == {"all": pytest.approx(3), "qv": 1}
    best[("all", 4)] = 3e-3  # spread 10x across ranks, and a 3x ratio: still about 10x, not flat
    assert X.verdict_lr_ratio(best, 1e-3)["verdict"] == "partly reproduced"
    assert X.verdict_lr_ratio(best, 1e-4)["verdict"] == "not reproduced"  # ratios 30-300x and not flat
    # in range and flat, but the best rate at the top of the sweep: the optimum may lie beyond, so only partly
    flat = {("qv", 1): 3e-2, ("qv", 4): 1e-2}
    assert X.verdict_lr_ratio(flat, 1e-3, swept=(1e-2, 3e-2))["verdict"] == "partly reproduced"
    assert X.verdict_lr_ratio(flat, 1e-3, swept=(3e-3, 1e-2, 3e-2, 6e-2))["numbers"]["at_sweep_edge"] == []
    assert X.verdict_lr_ratio(flat, 1e-3, swept=(3e-3, 1e-2, 3e-2, 6e-2))["verdict"] == "reproduced"


def test_low_ranks_fall_behind_verdict():
    def fit(rows):
        return pd.DataFrame(rows, columns=["targets", "rank", "epochs", "fit_accuracy"])
    full = {5.0: 0.6, 10.0: 0.9}
    holds = fit([("qv", 1, 5.0, 0.2), ("qv", 4, 5.0, 0.3), ("qv", 1, 10.0, 0.3), ("qv", 4, 10.0, 0.8)])
    result = X.verdict_low_ranks_fall_behind(holds, full)
    assert result["verdict"] == "reproduced"
    assert result["numbers"]["by_targets"]["qv"]["gap_by_rank_long"] == {1: pytest.approx(0.6), 4: pytest.approx(0.1)}
    # the lowest rank catches up with more steps (gap 0.4 -> 0.1): does not hold
    closes = fit([("qv", 1, 5.0, 0.2), ("qv", 4, 5.0, 0.3), ("qv", 1, 10.0, 0.8), ("qv", 4, 10.0, 0.85)])
    assert X.verdict_low_ranks_fall_behind(closes, full)["verdict"] == "not reproduced"
    both = pd.concat([holds, closes.assign(targets="mlp")])
    assert X.verdict_low_ranks_fall_behind(both, full)["verdict"] == "partly reproduced"


def test_pick_configuration_breaks_ties_by_size():
    grid = pd.DataFrame([("qv", 1, 1e-2, 5.0, 0.7, 1000), ("all", 4, 1e-2, 5.0, 0.7, 900), ("all", 16, 3e-3, 5.0, 0.6, 50),
                         ("all", 16, 3e-3, 10.0, 0.99, 50)],
                        columns=["targets", "rank", "lr", "epochs", "accuracy_known", "trainable_parameters"])
    assert X.pick_configuration(grid, 5.0) == {"targets": "all", "rank": 4, "lr": 1e-2, "accuracy_known": 0.7}
    assert X.pick_configuration(grid, 10.0)["rank"] == 16


def test_target_sets_and_lora_targets_name_the_parameter():
    assert X.parse_target_sets("qv, all") == {"qv": "q_proj,v_proj", "all": X.LORA_TARGET_SETS["all"]}
    with pytest.raises(ValueError, match=r"^target_sets must be .*qv, attention, mlp, all.*'qkv'"):
        X.parse_target_sets("qkv")
    with pytest.raises(ValueError, match=r"^lora_targets 'q,v_proj': q: not among .* q_proj, up_proj, v_proj$"):
        X.check_lora_targets("q,v_proj")
    with pytest.raises(ValueError, match=r"^lora_lr must be a number between 0 and 1, got 5$"):
        X.tune_config("lora", 5, 5.0)
    with pytest.raises(ValueError, match=r"^full_lr must be"):
        X.tune_config("full", 2.0, 5.0)
    with pytest.raises(ValueError, match=r"^wide_lora_lrs must be"):
        X.tune_config("lora", -1.0, 5.0, lr_name="wide_lora_lrs")
    with pytest.raises(ValueError, match=r"^tune_epochs must be"):
        X.tune_config("lora", 0.01, "five")

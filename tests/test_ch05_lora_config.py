"""Chapter 05 (LoRA's configuration): the sweep on every seed, the grid at each seed's own picks, and the three
interval verdicts on hand-made rows.

Each verdict is checked on every outcome, inconclusive included, and on a null row: tuning that changed nothing
must not come out reproduced or partly.
"""

import math

import pandas as pd
import pytest

from tunestudy import ch05_lora_config as C, experiments as X

REPRODUCED, PARTLY, NOT, INCONCLUSIVE, PREMISE = ("reproduced", "partly reproduced", "not reproduced", "inconclusive",
                                                  "premise not met")
# the chapter's trainable parameter counts (small base): qv r1 2048 ... all r16 188416
PARAMETERS = {("qv", 1): 2048, ("qv", 4): 8192, ("qv", 16): 32768,
              ("attention", 1): 4096, ("attention", 4): 16384, ("attention", 16): 65536,
              ("mlp", 1): 7680, ("mlp", 4): 30720, ("mlp", 16): 122880,
              ("all", 1): 11776, ("all", 4): 47104, ("all", 16): 188416}


# --- verdict_attention_only -------------------------------------------------------------------------------

def attention_rows(lead_by_seed, attention=0.5, full=0.95):
    """Per seed: every attention-only cell at `attention`, every MLP or all-layer cell `lead` above it, and full
    fine-tuning far above both (the verdict reads no full row)."""
    rows = []
    for seed, lead in enumerate(lead_by_seed):
        for (t, r), size in PARAMETERS.items():
            acc = attention if t in X.ATTENTION_ONLY else attention + lead
            rows.append({"targets": t, "rank": r, "seed": seed, "accuracy_known": acc, "trainable_parameters": size})
        rows.append({"targets": "full", "rank": 0, "seed": seed, "accuracy_known": full,
                     "trainable_parameters": 1_100_672})
    return pd.DataFrame(rows)


def test_pairs_are_fixed_by_parameter_counts():
    pairs, unmatched = C.matched_pairs(attention_rows([0.0]))
    assert pairs == {("qv", 4): ("mlp", 1), ("qv", 16): ("mlp", 4), ("attention", 4): ("all", 1),
                     ("attention", 16): ("all", 4)}
    assert unmatched == [("qv", 1), ("attention", 1)]  # no MLP or all-layer cell is as small


@pytest.mark.parametrize("leads, expected", [
    ((0.20, 0.22, 0.18), REPRODUCED),
    ((0.02, 0.025, 0.03), PARTLY),  # underperforms, by less than five points
    ((-0.10, -0.12, -0.09), NOT),  # the chapter's case: attention-only ahead
    ((0.10, -0.05, 0.08), INCONCLUSIVE),  # straddles 0 and 0.05
])
def test_attention_only_on_every_outcome(leads, expected):
    result = C.verdict_attention_only(attention_rows(leads))
    assert result["verdict"] == expected and expected in result["sentence"]
    numbers = result["numbers"]
    assert numbers["seeds"] == 3 and numbers["threshold"] == C.UNDERPERFORMS and numbers["partly_threshold"] == 0
    assert numbers["values"] == pytest.approx(list(leads))
    assert numbers["unmatched"] == ["qv r1", "attention r1"]


def test_attention_only_reads_each_seeds_own_rows():
    rows = attention_rows([0.2, 0.2, 0.2])
    rows.loc[(rows.seed == 1) & (rows.targets == "qv") & (rows["rank"] == 4), "accuracy_known"] = 0.9
    numbers = C.verdict_attention_only(rows)["numbers"]
    assert numbers["by_seed"]["1"] == pytest.approx((0.2 - 0.2 + 3 * 0.2 + (0.7 - 0.9)) / 4)
    assert numbers["difference_by_pair"]["qv r4"] == pytest.approx((0.2 + 0.2 - 0.2) / 3)


def test_attention_only_null_row_changed_nothing():
    result = C.verdict_attention_only(attention_rows([0.0, 0.0, 0.0], attention=0.1, full=0.1))
    assert result["verdict"] == NOT


def test_attention_only_without_a_matched_rival():
    rows = attention_rows([0.2, 0.2])
    result = C.verdict_attention_only(rows[rows.targets.isin(["qv", "attention", "full"])])  # the smoke grid
    assert result["verdict"] == PREMISE and result["numbers"]["pairs"] == {}


# --- verdict_lr_ratio ---------------------------------------------------------------------------------------

LORA_LRS, FULL_LRS = (3e-3, 1e-2, 3e-2), (3e-4, 1e-3, 3e-3)
WIDE_LORA_LRS, WIDE_FULL_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1), (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def sweep_and_picks(picks_by_seed, full_by_seed, lora_lrs=LORA_LRS, full_lrs=FULL_LRS, flat_seed=None):
    """Sweep rows where each seed's picked rate is the best (0.8, the others 0.3), and the picks.
    picks_by_seed: per seed {(targets, rank): rate}; `flat_seed` answers alike at every rate."""
    rows = []
    for seed, (picks, full) in enumerate(zip(picks_by_seed, full_by_seed)):
        for (t, r), best in picks.items():
            rows += [{"targets": t, "rank": r, "lr": lr, "seed": seed,
                      "accuracy_known": 0.2 if seed == flat_seed else (0.8 if lr == best else 0.3)} for lr in lora_lrs]
        rows += [{"targets": "full", "rank": 0, "lr": lr, "seed": seed,
                  "accuracy_known": 0.2 if seed == flat_seed else (0.9 if lr == full else 0.4)} for lr in full_lrs]
    return pd.DataFrame(rows), dict(enumerate(picks_by_seed)), dict(enumerate(full_by_seed))


def grid(rate=1e-2, **cells):
    """{(targets, rank): rate} for qv and mlp at ranks 1 and 16, `rate` unless a cell is named (qv_1=3e-2)."""
    out = {(t, r): rate for t in ("qv", "mlp") for r in (1, 16)}
    for name, value in cells.items():
        t, r = name.split("_")
        out[t, int(r)] = value
    return out


def test_lr_ratio_reproduced_with_every_pick_inside_the_sweep():
    result = C.verdict_lr_ratio(*sweep_and_picks([grid()] * 3, [1e-3] * 3))
    assert result["verdict"] == REPRODUCED and REPRODUCED in result["sentence"]
    numbers = result["numbers"]
    assert numbers["ratio"] == pytest.approx(10) and numbers["interval"] == pytest.approx([10, 10])
    assert numbers["parts"] == {"about_10x": "yes", "barely_depends_on_rank": "yes"}
    assert numbers["possible_ratios"] == [3, 10, 30] and numbers["ratios_inside_both_sweeps"] == [10]
    assert numbers["picks_at_edge"] == 0 and numbers["seeds"] == 3
    assert "can only be 3x, 10x, 30x" in result["criterion"] and "only 10x" in result["criterion"]


def test_lr_ratio_a_pick_at_an_edge_on_one_seed_is_inconclusive():
    # the committed run's shape: rank 1 of qv at the top of the sweep, 30x, on one seed only
    result = C.verdict_lr_ratio(*sweep_and_picks([grid(qv_1=3e-2), grid(), grid()], [1e-3] * 3))
    assert result["verdict"] == INCONCLUSIVE
    numbers = result["numbers"]
    assert numbers["at_sweep_edge"] == {"0": ["qv r1"], "1": [], "2": []}
    assert numbers["parts"]["about_10x"] == "undecided"
    assert numbers["parts"]["barely_depends_on_rank"] == "undecided"  # the spread is only a lower bound


def test_lr_ratio_full_at_its_edge_is_inconclusive():
    result = C.verdict_lr_ratio(*sweep_and_picks([grid(rate=3e-2 / 3)] * 3, [1e-3, 1e-3, 3e-3]))
    assert result["verdict"] == INCONCLUSIVE and result["numbers"]["at_sweep_edge"]["2"] == ["full"]
    assert result["numbers"]["parts"] == {"about_10x": "undecided", "barely_depends_on_rank": "yes"}


def test_lr_ratio_partly_when_the_rate_moves_with_rank():
    # a wide sweep: every pick inside it; ranks 1 at 3e-3 and 16 at 3e-2 (a factor of 10), their mean 10x full's
    picks = grid(rate=3e-3, qv_16=3e-2, mlp_16=3e-2)
    result = C.verdict_lr_ratio(*sweep_and_picks([picks] * 3, [1e-3] * 3, WIDE_LORA_LRS, WIDE_FULL_LRS))
    assert result["verdict"] == PARTLY
    assert result["numbers"]["parts"] == {"about_10x": "yes", "barely_depends_on_rank": "no"}
    assert result["numbers"]["rank_spread"] == pytest.approx(10)


def test_lr_ratio_not_reproduced_far_from_10x_and_moving_with_rank():
    picks = grid(rate=3e-4, qv_16=3e-3, mlp_16=3e-3)  # about 1x full's 1e-3, a factor of 10 across ranks
    result = C.verdict_lr_ratio(*sweep_and_picks([picks] * 3, [1e-3] * 3, WIDE_LORA_LRS, WIDE_FULL_LRS))
    assert result["verdict"] == NOT
    assert result["numbers"]["ratio"] == pytest.approx(math.sqrt(0.3 * 3))  # rates 0.3x and 3x full's


def test_lr_ratio_inconclusive_when_the_seeds_disagree():
    picks = [grid(rate=1e-2), grid(rate=3e-2), grid(rate=3e-3)]  # 10x, 30x, 3x: inside a wide sweep
    result = C.verdict_lr_ratio(*sweep_and_picks(picks, [1e-3] * 3, WIDE_LORA_LRS, WIDE_FULL_LRS))
    assert result["verdict"] == INCONCLUSIVE
    assert result["numbers"]["parts"] == {"about_10x": "undecided", "barely_depends_on_rank": "yes"}


def test_lr_ratio_one_seed_has_no_interval():
    result = C.verdict_lr_ratio(*sweep_and_picks([grid()], [1e-3]))
    assert result["verdict"] == INCONCLUSIVE and "no interval" in result["sentence"]


def test_lr_ratio_null_row_changed_nothing():
    # every rate answers alike: the argmax takes the first rate listed, at the sweep's edge
    sweep, picks, full = sweep_and_picks([grid(rate=3e-3)] * 3, [3e-4] * 3, flat_seed=1)
    result = C.verdict_lr_ratio(sweep, picks, full)
    assert result["verdict"] == PREMISE and result["numbers"]["sweep_moved"] is False


# --- verdict_low_ranks_fall_behind ----------------------------------------------------------------------------

def fit_rows(full, low, high, noise=(0.0, 0.01, -0.01), long_seeds=(0, 1, 2)):
    """Rows of new facts fitted: {epochs: fit} for full fine-tuning, the lowest rank and the highest, the same for
    both target sets (qv, mlp), plus a small per-seed noise; lengths after the first run on `long_seeds` only."""
    rows = []
    first = min(full)
    for seed, eps in enumerate(noise):
        for epochs in full:
            if epochs != first and seed not in long_seeds:
                continue
            rows.append({"targets": "full", "rank": 0, "epochs": epochs, "seed": seed, "fit_accuracy": full[epochs]})
            for t in ("qv", "mlp"):
                rows.append({"targets": t, "rank": 1, "epochs": epochs, "seed": seed,
                             "fit_accuracy": low[epochs] - eps})
                rows.append({"targets": t, "rank": 16, "epochs": epochs, "seed": seed,
                             "fit_accuracy": high[epochs] + eps})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("full, low, high, noise, expected", [
    ({5: 0.5, 10: 1.0}, {5: 0.3, 10: 0.4}, {5: 0.5, 10: 0.95}, (0.0, 0.01, -0.01), REPRODUCED),
    ({5: 0.5, 10: 0.6}, {5: 0.3, 10: 0.4}, {5: 0.5, 10: 0.6}, (0.0, 0.01, -0.01), PARTLY),  # behind, not widening
    ({5: 0.5, 10: 1.0}, {5: 0.4, 10: 0.9}, {5: 0.4, 10: 0.9}, (0.0, 0.0, 0.0), NOT),  # ranks alike
    ({5: 0.5, 10: 1.0}, {5: 0.3, 10: 0.6}, {5: 0.5, 10: 0.7}, (0.0, 0.15, -0.12), INCONCLUSIVE),
])
def test_low_ranks_on_every_outcome(full, low, high, noise, expected):
    result = C.verdict_low_ranks_fall_behind(fit_rows(full, low, high, noise))
    assert result["verdict"] == expected and expected in result["sentence"]
    numbers = result["numbers"]
    assert numbers["seeds"] == 3 and numbers["lengths_on_every_seed"] == [5.0, 10.0]
    assert numbers["threshold"] == C.FALLS_BEHIND


def test_low_ranks_are_paired_per_seed():
    numbers = C.verdict_low_ranks_fall_behind(fit_rows({5: 0.5, 10: 1.0}, {5: 0.3, 10: 0.4},
                                                       {5: 0.5, 10: 0.95}, noise=(0.0, 0.01, -0.01)))["numbers"]
    # behind: (1.0 - (0.4 - eps)) - (1.0 - (0.95 + eps)) = 0.55 + 2 eps; widens: (0.6 + eps) - (0.2 + eps) = 0.4
    assert numbers["behind_by_seed"] == pytest.approx({"0": 0.55, "1": 0.57, "2": 0.53})
    assert numbers["widens_by_seed"] == pytest.approx({"0": 0.4, "1": 0.4, "2": 0.4})


def test_low_ranks_null_row_changed_nothing():
    zero = {5: 0.0, 10: 0.0}
    assert C.verdict_low_ranks_fall_behind(fit_rows(zero, zero, zero, (0.0, 0.0, 0.0)))["verdict"] == NOT


def test_low_ranks_a_length_on_one_seed_feeds_no_verdict():
    # the chapter's default: the 10-epoch length on the first seed only; it would say "reproduced" on its own
    rows = fit_rows({5: 0.5, 10: 1.0}, {5: 0.3, 10: 0.4}, {5: 0.5, 10: 0.95}, long_seeds=(0,))
    result = C.verdict_low_ranks_fall_behind(rows)
    assert result["verdict"] == PREMISE
    assert result["numbers"]["lengths_on_every_seed"] == [5.0]
    assert result["numbers"]["lengths_left_out"] == {"10.0": [0]}
    assert "the 10-epoch length ran on seed 0 only and feeds no verdict" in result["sentence"]


def test_low_ranks_need_two_ranks():
    rows = fit_rows({5: 0.5, 10: 1.0}, {5: 0.3, 10: 0.4}, {5: 0.5, 10: 0.95})
    assert C.verdict_low_ranks_fall_behind(rows[rows["rank"] != 16])["verdict"] == PREMISE


# --- the runs: every seed at its own picks, the first seed's runs as before -----------------------------------

def test_the_sweep_runs_once_per_seed(monkeypatch):
    calls = []

    def fake_sweep(kwargs, data, targets, ranks, lrs, epochs, seed, base_model):
        calls.append(seed)
        sweep = pd.DataFrame([{"targets": "qv", "rank": 1, "lr": 1e-2, "seed": seed, "accuracy_known": 0.5}])
        return sweep, {("qv", 1): 1e-2 * (seed + 1)}, 1e-3

    monkeypatch.setattr(X, "lora_grid_sweep", fake_sweep)
    sweep, picks, full = C.sweep_every_seed({}, None, {"qv": "q_proj"}, [1], {}, 5.0, [0, 1, 2], "synthetic")
    assert calls == [0, 1, 2] and list(sweep["seed"]) == [0, 1, 2]
    assert picks == {0: {("qv", 1): 1e-2}, 1: {("qv", 1): 2e-2}, 2: {("qv", 1): 3e-2}}
    assert full == {0: 1e-3, 1: 1e-3, 2: 1e-3}


def test_grid_rows_run_each_seed_at_its_own_pick(monkeypatch):
    known, fits = [], []
    monkeypatch.setattr(X, "replicate", lambda kw, data, config, seeds: (known.append((config, seeds)) or
                                                                        [{"seed": seeds[0], "accuracy_known": 0.5}]))
    monkeypatch.setattr(X, "training_fits", lambda kw, data, config, seeds: (fits.append((config, seeds)) or
                                                                            [{"fit_accuracy": 0.2, "final_loss": 1.0}]))
    targets = {"qv": "q_proj,v_proj"}
    picks = {0: {("qv", 1): 3e-2}, 1: {("qv", 1): 1e-2}}
    rows = C.grid_rows({}, "known", "unknown", targets, picks, {0: 1e-3, 1: 3e-3}, [5.0, 10.0], [0], False,
                       "synthetic")
    # seed 0 runs exactly the configurations the chapter ran before (seed 0's picks), seed 1 its own
    assert [(c.lr, c.epochs, s) for c, s in fits] == [(3e-2, 5.0, [0]), (1e-2, 5.0, [1]), (3e-2, 10.0, [0]),
                                                       (1e-3, 5.0, [0]), (3e-3, 5.0, [1]), (1e-3, 10.0, [0])]
    assert fits[0][0] == X.grid_config(targets, "qv", 1, 3e-2, 5.0)
    assert [(c.lr, c.epochs, s) for c, s in known] == [(3e-2, 5.0, [0]), (1e-2, 5.0, [1]), (1e-3, 5.0, [0]),
                                                        (3e-3, 5.0, [1])]  # the known set at the first length only
    assert list(rows["lr"]) == [3e-2, 1e-2, 3e-2, 1e-3, 3e-3, 1e-3]
    assert rows.loc[rows.epochs == 10.0, "accuracy_known"].isna().all()


def test_picked_means_and_the_configuration_picked_from_them():
    rows = pd.DataFrame([{"targets": t, "rank": 4, "epochs": 5.0, "seed": s, "lr": lr, "accuracy_known": acc,
                          "trainable_parameters": size}
                         for t, size, lrs, accs in (("qv", 8192, (1e-2, 3e-2, 1e-2), (0.6, 0.7, 0.8)),
                                                    ("all", 47104, (3e-3, 1e-2, 3e-2), (0.7, 0.7, 0.7)))
                         for s, (lr, acc) in enumerate(zip(lrs, accs))])
    means = C.picked_means(rows, ["accuracy_known", "trainable_parameters"])
    assert list(means["lr"]) == [1e-2, 1e-2]  # the median of the seeds' picks
    assert list(means["seeds"]) == [3, 3]
    # a tie on the mean over seeds goes to fewer trainable parameters, as before
    assert X.pick_configuration(means, 5.0) == {"targets": "qv", "rank": 4, "lr": 1e-2,
                                                "accuracy_known": pytest.approx(0.7)}
    two = C.picked_means(rows[rows.seed < 2], ["accuracy_known"])
    assert list(two["lr"]) == [1e-2, 3e-3]  # two seeds: the lower of the two picks


def test_picks_table_marks_the_edges():
    table = C.picks_table({0: {("qv", 1): 3e-2}, 1: {("qv", 1): 1e-2}}, {0: 1e-3, 1: 3e-4}, LORA_LRS, FULL_LRS)
    assert table.to_dict(orient="records") == [
        {"targets": "qv", "rank": 1, "seed 0": "0.03 (30x), edge", "seed 1": "0.01 (33.3x)"},
        {"targets": "full", "rank": "", "seed 0": "0.001", "seed 1": "0.0003, edge"}]

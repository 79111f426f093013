"""Chapter 05, "LoRA's configuration": the grid's learning-rate sweep on every seed, the grid at each seed's own
picks, and the chapter's three verdicts.

Every cell of the grid (target set x rank) and full fine-tuning are swept over their learning rates on every seed
(`experiments.lora_grid_sweep`, once per seed: the first seed's runs are the screened runs the chapter always
had), and each seed's own pick, the rate with the best held-out accuracy on known people, is the one that seed
runs in full. No verdict rests on one seed's choice. Each verdict computes a per-seed quantity at that seed's
picks and decides from its mean with a 95% t-interval over seeds (`stats`):

- `verdict_attention_only` (LoRA Without Regret): attention-only LoRA underperforms MLP or all-layer LoRA even at
  a matched parameter count. One pre-stated contrast per seed: each attention-only cell against the MLP or
  all-layer cell with the most trainable parameters not above its own (the pairs are fixed by parameter counts
  alone, before any accuracy is read), the mean over the pairs of the rival's held-out accuracy minus the cell's.
- `verdict_lr_ratio` (LoRA Without Regret, Biderman et al.): the best LoRA rate is about 10x full fine-tuning's
  and barely depends on the rank. Per seed, the geometric mean over the cells of each cell's picked rate over the
  seed's picked full rate, and the geometric mean over the target sets of the spread of the ranks' picks. A swept
  grid only puts a ratio on a few values, and a pick at an edge of its sweep only bounds the optimum: the rule says
  which values the sweep allows and reads a pick at an edge as "the optimum may lie beyond".
- `verdict_low_ranks_fall_behind` (LoRA Without Regret): low ranks fall behind full fine-tuning after a number of
  steps that grows with the rank. It needs two training lengths run on every seed; a length run on fewer seeds
  (the chapter's longer one, by default) feeds no verdict.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

from . import experiments as X, stats

__all__ = ["FALLS_BEHIND", "RATE_RATIO", "RATE_STEP", "UNDERPERFORMS", "answers_at_picks", "grid_rows",
           "matched_pairs", "picked_means", "picks_table", "sweep_every_seed", "verdict_attention_only",
           "verdict_low_ranks_fall_behind", "verdict_lr_ratio"]

# LoRA Without Regret: attention-only LoRA "underperforms". Five points of held-out accuracy is the book's margin for
# an accuracy difference that matters (experiments.FLAT_ACCURACY); above 0 but under it is the claim's direction
# without its size (partly).
UNDERPERFORMS = 0.05
# LoRA Without Regret (a fit over 14 models gave 9.8) and Biderman et al.: the best LoRA rate is about 10x full's.
RATE_RATIO = 10.0
# "About" and "barely": within one step of a 1-3-10 sweep (a factor of 3.5, so that 3x and 3.3x both count as one
# step), the resolution the chapter's sweeps have.
RATE_STEP = 3.5
# LoRA Without Regret: low ranks "fall behind" full fine-tuning on new facts; five points of the new facts fitted is
# the margin that counts (as UNDERPERFORMS).
FALLS_BEHIND = 0.05


# --- the runs --------------------------------------------------------------------------------------------------

def sweep_every_seed(base_kwargs_: dict, data, targets: dict, ranks: list, lrs: dict, epochs: float, seeds: list,
                     base_model: str) -> tuple:
    """(sweep rows of every seed, {seed: {(targets, rank): picked LoRA rate}}, {seed: picked full rate}).

    `experiments.lora_grid_sweep` once per seed: each seed picks its own rates (the best screened held-out
    accuracy on known people; a tie goes to the rate listed first)."""
    import pandas as pd
    frames, picks, full_picks = [], {}, {}
    for seed in seeds:
        sweep, best_lr, full_best = X.lora_grid_sweep(base_kwargs_, data, targets, ranks, lrs, epochs, seed,
                                                      base_model)
        frames.append(sweep)
        picks[seed], full_picks[seed] = best_lr, full_best
    return pd.concat(frames, ignore_index=True), picks, full_picks


def grid_rows(base_kwargs_: dict, known_set, unknown_set, targets: dict, picks: dict, full_picks: dict,
              lengths: list, long_seeds: list, known_long: bool, base_model: str):
    """One row per (cell, length, seed) at the seed's own pick: the known set's every measure (`replicate`) and the
    unknown set's fit of new facts (`training_fits`, tuned separately with the same configuration).

    The first length runs on every seed of `picks`; the longer ones on `long_seeds` only, and the known set there
    only when `known_long`."""
    import pandas as pd
    seeds = list(picks)
    cells = [*picks[seeds[0]], ("full", 0)]
    rows = []
    for name, rank in cells:
        for epochs in lengths:
            for seed in seeds if epochs == lengths[0] else [s for s in seeds if s in long_seeds]:
                lr = full_picks[seed] if name == "full" else picks[seed][name, rank]
                config = X.grid_config(targets, name, rank, lr, epochs, base_model)
                fit = X.training_fits(base_kwargs_, unknown_set, config, [seed])[0]
                known = (X.replicate(base_kwargs_, known_set, config, [seed])[0]
                         if epochs == lengths[0] or known_long else {"seed": seed})
                rows.append({"targets": name, "rank": rank, "lr": lr, "epochs": epochs, **known,
                             "fit_accuracy": fit["fit_accuracy"], "fit_loss": fit["final_loss"]})
    return pd.DataFrame(rows)


def picked_means(rows, columns: list):
    """The mean over seeds of each (cell, length), every seed at its own pick; `lr` is the median of the seeds'
    picks (the lower of the two middle ones for an even count: always a swept rate), `seeds` how many it has."""
    grouped = rows.groupby(["targets", "rank", "epochs"], sort=False)
    means = grouped[columns].mean()
    means["lr"] = grouped["lr"].agg(lambda v: statistics.median_low(sorted(v)))
    means["seeds"] = grouped["seed"].nunique()
    return means.reset_index()


def answers_at_picks(base_kwargs_: dict, known_set, targets: dict, cell: tuple, picks: dict, full_picks: dict,
                     epochs: float, base_model: str):
    """Every held-out answer of the base, the LoRA cell `cell` = (targets, rank) and full fine-tuning, each seed at
    its own picks (`experiments.all_answers`, one seed at a time)."""
    import pandas as pd
    name, rank = cell
    frames = [X.all_answers(base_kwargs_, known_set,
                            {f"LoRA {name} r{rank}": X.grid_config(targets, name, rank, picks[seed][cell], epochs,
                                                                   base_model),
                             "full": X.grid_config(targets, "full", 0, full_picks[seed], epochs, base_model)},
                            [seed])
              for seed in picks]
    return pd.concat(frames, ignore_index=True)


def picks_table(picks: dict, full_picks: dict, lora_lrs: list, full_lrs: list):
    """One row per cell (and full fine-tuning last), one column per seed: the picked rate, its ratio to the seed's
    picked full rate, and "edge" where the pick is the smallest or largest rate swept."""
    import pandas as pd
    seeds = list(picks)
    rows = []
    for cell in picks[seeds[0]]:
        row = {"targets": cell[0], "rank": cell[1]}
        for seed in seeds:
            lr = picks[seed][cell]
            row[f"seed {seed}"] = (f"{lr:g} ({lr / full_picks[seed]:.3g}x)"
                                   + (", edge" if not _inside(lr, lora_lrs) else ""))
        rows.append(row)
    rows.append({"targets": "full", "rank": "", **{f"seed {s}": f"{full_picks[s]:g}"
                                                    + (", edge" if not _inside(full_picks[s], full_lrs) else "")
                                                    for s in seeds}})
    return pd.DataFrame(rows)


def _inside(lr: float, swept) -> bool:
    """A pick locates an optimum only strictly inside its sweep: at the smallest or largest rate swept (or in a
    sweep of fewer than three rates) the optimum may lie beyond it."""
    return min(swept) < lr < max(swept)


# --- the verdicts ----------------------------------------------------------------------------------------------

def matched_pairs(cells) -> tuple:
    """({attention-only cell: its matched rival}, [attention-only cells with no rival]). cells: one row per (targets,
    rank) with `trainable_parameters`. The rival is the MLP or all-layer cell with the most trainable parameters not
    above the attention-only cell's own: fixed by the parameter counts alone, before any accuracy is read."""
    size = cells.groupby(["targets", "rank"], sort=False)["trainable_parameters"].first()
    attention = [c for c in size.index if c[0] in X.ATTENTION_ONLY]
    others = [c for c in size.index if c[0] not in X.ATTENTION_ONLY and c[0] != "full"]
    pairs, unmatched = {}, []
    for cell in attention:
        rivals = [o for o in others if size[o] <= size[cell]]
        if rivals:
            pairs[cell] = max(rivals, key=lambda o: size[o])  # the first listed on a tie
        else:
            unmatched.append(cell)
    return pairs, unmatched


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _name(cell: tuple) -> str:
    return f"{cell[0]} r{cell[1]}"


def verdict_attention_only(rows) -> dict:
    """LoRA Without Regret: attention-only LoRA underperforms MLP or all-layer LoRA, even at a matched number of
    trainable parameters.

    rows: one row per (targets, rank, seed) at one training length, each seed at its own picked rate, with
    `accuracy_known` (held-out, known people) and `trainable_parameters`; full fine-tuning's rows are ignored. Each
    attention-only cell is paired with its rival (`matched_pairs`); per seed, the mean over the pairs of the rival's
    held-out accuracy minus the attention-only cell's. Reproduced: the 95% interval over seeds above
    `UNDERPERFORMS`; partly: between 0 and it; not reproduced: at or below 0; inconclusive: it straddles either.
    Premise not met: no attention-only cell has a rival (the grid cannot match parameter counts).
    """
    rows = rows[rows["targets"] != "full"]
    pairs, unmatched = matched_pairs(rows)
    wide = rows.pivot_table(index="seed", columns=["targets", "rank"], values="accuracy_known")
    criterion = (f"each attention-only cell is paired with the MLP or all-layer cell with the most trainable "
                 f"parameters not above its own (pairs fixed by parameter counts alone; a cell with no such rival is "
                 f"left out); per seed, at each seed's own picked rates, the mean over the pairs of the rival's "
                 f"held-out accuracy minus the attention-only cell's; reproduced when its 95% interval over seeds lies "
                 f"above {UNDERPERFORMS:g}, partly between 0 and {UNDERPERFORMS:g}, not reproduced at or below 0, "
                 f"inconclusive when it straddles either")
    if not pairs:
        return {"verdict": "premise not met", "criterion": criterion,
                "sentence": "no MLP or all-layer cell has as few trainable parameters as an attention-only one: the "
                            "grid cannot match parameter counts: premise not met",
                "numbers": {"pairs": {}, "unmatched": [_name(c) for c in unmatched], "seeds": len(wide)}}
    per_pair = {cell: wide[rival] - wide[cell] for cell, rival in pairs.items()}
    values = np.mean([d.to_numpy() for d in per_pair.values()], axis=0)
    verdict = X.interval_verdict(values, UNDERPERFORMS, 0.0,
                                 f"the matched MLP or all-layer cell's held-out accuracy minus the attention-only "
                                 f"cell's (mean over {len(pairs)} pairs)", f"above {UNDERPERFORMS:g}", criterion)
    verdict["numbers"].update({"pairs": {_name(c): _name(r) for c, r in pairs.items()},
                               "unmatched": [_name(c) for c in unmatched],
                               "difference_by_pair": {_name(c): float(d.mean()) for c, d in per_pair.items()},
                               "by_seed": {str(s): float(v) for s, v in zip(wide.index, values)}})
    return verdict


def _combine(parts: list) -> str:
    """Two parts of a claim, each "yes", "no" or "undecided": reproduced when both hold, partly when one holds and
    the other is shown not to, not reproduced when neither holds, inconclusive otherwise."""
    if all(p == "yes" for p in parts):
        return "reproduced"
    if all(p == "no" for p in parts):
        return "not reproduced"
    if "yes" in parts and "no" in parts:
        return "partly reproduced"
    return "inconclusive"


def _within(values, margin: float, lower_bounds: bool = False, bounded: bool = False) -> tuple:
    """("yes" | "no" | "undecided", mean, low, high, TOST p) for per-seed values (logs) that should lie within
    +-margin: "yes" when two one-sided tests show it, "no" when the 95% interval lies wholly outside, "undecided"
    otherwise. Values read off picks at a sweep's edge only bound the truth: `lower_bounds` (the truth is at least
    as large) keeps them from "yes" and lets "no" stand only above the margin; `bounded` (the truth may lie either
    way) keeps them from both."""
    mean, low, high = stats.t_interval(values)
    tost = stats.equivalent(values, margin)
    above = not math.isnan(low) and low >= margin
    below = not math.isnan(high) and high <= -margin
    if bounded:
        part = "undecided"
    elif tost["equivalent"] and not lower_bounds:
        part = "yes"
    elif above or (below and not lower_bounds):
        part = "no"
    else:
        part = "undecided"
    return part, mean, low, high, tost["p_value"]


def verdict_lr_ratio(sweep, picks: dict, full_picks: dict) -> dict:
    """LoRA Without Regret / Biderman et al.: the best LoRA rate is about 10x full fine-tuning's and barely depends
    on the rank.

    sweep: the screened sweep of every seed (`sweep_every_seed`: `targets` "full" for full fine-tuning, `lr`,
    `seed`, `accuracy_known`); picks: {seed: {(targets, rank): picked rate}}; full_picks: {seed: picked full rate}.
    Two parts, each from per-seed values at the seed's own picks:

    - about 10x: the mean over the cells of log(picked LoRA rate / the seed's picked full rate / `RATE_RATIO`);
      "yes" when two one-sided tests put it within log(`RATE_STEP`), "no" when its 95% interval lies wholly outside.
    - barely depends on rank: the mean over the target sets of log(largest / smallest picked rate across the
      ranks); "yes" when two one-sided tests put it below log(`RATE_STEP`), "no" when its interval lies above.

    A swept grid only allows a few ratios (a three-rate LoRA sweep over a three-rate full sweep allows, at a full
    pick of 1e-3, only 3x, 10x and 30x; with both picks inside their sweeps, only 10x), so the band is decided by
    where the picks sit: a pick at an edge of its sweep (or a sweep of fewer than three rates) only bounds the
    optimum: any such pick keeps "about 10x" undecided (its optimum may lie either way of the pick), and a LoRA
    pick there makes the ranks' spread a lower bound (it can be shown too large, never small enough). Reproduced:
    both parts "yes"; partly: one "yes", the other "no"; not reproduced: both "no"; inconclusive otherwise.
    Premise not met: on some seed every swept run has the same held-out accuracy (tuning changed nothing the sweep
    can see, so its picks are arbitrary).
    """
    lora_lrs = sorted(set(sweep.loc[sweep["targets"] != "full", "lr"]))
    full_lrs = sorted(set(sweep.loc[sweep["targets"] == "full", "lr"]))
    seeds = list(picks)
    possible = sorted({round(lr / full_picks[s], 6) for s in seeds for lr in lora_lrs})
    inside_both = sorted({round(lr / f, 6) for lr in lora_lrs if _inside(lr, lora_lrs)
                          for f in full_lrs if _inside(f, full_lrs)})
    allowed = ", ".join(f"{v:.3g}x" for v in possible)
    criterion = (f"per seed, at that seed's own picks: (about {RATE_RATIO:g}x) the geometric mean over the cells of "
                 f"each cell's picked LoRA rate over the seed's picked full rate, \"yes\" when two one-sided tests put "
                 f"it within a factor of {RATE_STEP:g} of {RATE_RATIO:g}x, \"no\" when its 95% interval over seeds "
                 f"lies wholly outside; (barely depends on rank) the geometric mean over the target sets of the "
                 f"spread of the ranks' picked rates (largest over smallest), \"yes\" when two one-sided tests put it "
                 f"within {RATE_STEP:g}x, \"no\" when its interval lies above; reproduced when both are yes, partly "
                 f"when one is yes and the other no, not reproduced when both are no, inconclusive otherwise. With "
                 f"this sweep a cell's ratio can only be {allowed} at full fine-tuning's picked rates, and with both "
                 f"picks inside their sweeps only "
                 f"{', '.join(f'{v:.3g}x' for v in inside_both) or 'no value (a sweep of fewer than three rates)'}: "
                 f"the band is decided by whether picks sit at the sweep's edges, so a pick at an edge on any seed "
                 f"(the optimum may lie beyond the sweep) leaves about {RATE_RATIO:g}x undecided and makes the spread "
                 f"a lower bound")
    moved = all(sweep.loc[sweep["seed"] == s, "accuracy_known"].nunique() > 1 for s in seeds)
    edges = {s: [_name(c) for c, lr in picks[s].items() if not _inside(lr, lora_lrs)]
             + (["full"] if not _inside(full_picks[s], full_lrs) else []) for s in seeds}
    lora_edge = any(e for s in seeds for e in edges[s] if e != "full")
    ratios = {s: {c: lr / full_picks[s] for c, lr in picks[s].items()} for s in seeds}
    log_ratio = [float(np.mean([math.log(v / RATE_RATIO) for v in ratios[s].values()])) for s in seeds]
    spreads = {}
    for s in seeds:
        by_targets = {}
        for (t, _), lr in picks[s].items():
            by_targets.setdefault(t, []).append(lr)
        spreads[s] = {t: max(v) / min(v) for t, v in by_targets.items() if len(v) > 1}
    log_spread = [float(np.mean([math.log(v) for v in spreads[s].values()])) if spreads[s] else math.nan
                  for s in seeds]
    margin = math.log(RATE_STEP)
    ten, r_mean, r_low, r_high, r_p = _within(log_ratio, margin, bounded=any(edges.values()))
    if any(math.isnan(v) for v in log_spread):  # one rank per target set: no spread to read
        flat, s_mean, s_low, s_high, s_p = "undecided", math.nan, math.nan, math.nan, math.nan
    else:
        flat, s_mean, s_low, s_high, s_p = _within(log_spread, margin, lower_bounds=lora_edge)
    outcome = _combine([ten, flat]) if moved else "premise not met"
    ratio, low, high = (math.exp(v) * RATE_RATIO for v in (r_mean, r_low, r_high))
    spread, sp_low, sp_high = (math.exp(v) for v in (s_mean, s_low, s_high))
    at_edge = sum(len(e) for e in edges.values())
    picked = sum(len(picks[s]) + 1 for s in seeds)
    sentence = (f"over {_count(len(seeds), 'seed')}, each at its own picks, the picked LoRA rates are {ratio:.3g}x full "
                f"fine-tuning's ({stats.interval_text(low, high, '.3g')}; the cells' ratios can only be {allowed}) "
                f"and the ranks' picks within a target set spread by {spread:.3g}x "
                f"({stats.interval_text(sp_low, sp_high, '.3g')}); {at_edge} of {picked} picks sit at an edge of "
                f"their sweep; the claim needs about {RATE_RATIO:g}x and a spread within {RATE_STEP:g}x from picks "
                f"inside the sweep: "
                + (outcome if moved else "on some seed every swept run answered alike, so the picks are arbitrary: "
                                         "premise not met"))
    return {"verdict": outcome, "criterion": criterion, "sentence": sentence,
            "numbers": {"ratio": ratio, "interval": [low, high], "threshold": RATE_RATIO,
                        "band": [RATE_RATIO / RATE_STEP, RATE_RATIO * RATE_STEP], "seeds": len(seeds),
                        "about_10x_tost_p": r_p, "rank_spread": spread, "rank_spread_interval": [sp_low, sp_high],
                        "rank_spread_tost_p": s_p, "parts": {"about_10x": ten, "barely_depends_on_rank": flat},
                        "possible_ratios": possible, "ratios_inside_both_sweeps": inside_both,
                        "at_sweep_edge": {str(s): e for s, e in edges.items()}, "picks_at_edge": at_edge,
                        "picks": picked, "sweep_moved": moved,
                        "ratio_to_full": {str(s): {_name(c): v for c, v in r.items()} for s, r in ratios.items()},
                        "rank_spread_by_targets": {str(s): v for s, v in spreads.items()}}}


def verdict_low_ranks_fall_behind(rows) -> dict:
    """LoRA Without Regret: low ranks fall behind full fine-tuning after a number of steps that grows with the rank.

    rows: one row per (targets, rank, epochs, seed) with `fit_accuracy` (new facts fitted, the unknown set), full
    fine-tuning as targets "full", every seed at its own picked rate. Only the lengths run for every cell on every
    seed are read (the shortest and the longest of them); with fewer than two, or one rank, the claim cannot be
    posed: premise not met. Per seed, with gap = full's fit minus the cell's at the same length, means over the
    target sets of:

    - behind: at the longer length, the lowest rank's gap minus the highest rank's (low ranks behind high ones);
    - widens: the lowest rank's gap at the longer length minus at the shorter (it falls further behind with steps).

    Each is "yes" when its 95% interval over seeds lies above `FALLS_BEHIND`, "no" when at or below it. Reproduced:
    both yes; partly: behind yes, widens no; not reproduced: behind no; inconclusive otherwise.
    """
    seeds = sorted(rows["seed"].unique())
    cells = list(dict.fromkeys(zip(rows["targets"], rows["rank"])))
    ran = rows.dropna(subset=["fit_accuracy"]).groupby("epochs")
    every = sorted(e for e, part in ran if all(set(part.loc[(part["targets"] == t) & (part["rank"] == r), "seed"])
                                               == set(seeds) for t, r in cells))
    left_out = {float(e): sorted(int(s) for s in part["seed"].unique())
                for e, part in ran if e not in every}
    lora = rows[rows["targets"] != "full"]
    ranks = sorted(lora["rank"].unique())
    criterion = (f"only the training lengths run for every cell on every seed are read; per seed, at each seed's own "
                 f"picked rates, with gap = full fine-tuning's share of new facts fitted minus the cell's, means over "
                 f"the target sets of (behind) the lowest rank's gap minus the highest rank's at the longer length and "
                 f"(widens) the lowest rank's gap at the longer length minus at the shorter; each holds when its 95% "
                 f"interval over seeds lies above {FALLS_BEHIND:g}; reproduced when both hold, partly when behind "
                 f"holds and widens is shown not to, not reproduced when behind is shown not to hold, inconclusive "
                 f"otherwise; "
                 f"premise not met with fewer than two lengths on every seed or a single rank")
    numbers = {"seeds": len(seeds), "lengths_on_every_seed": [float(e) for e in every],
               "lengths_left_out": {str(e): s for e, s in left_out.items()}}
    if len(every) < 2 or len(ranks) < 2:
        why = (f"only one rank ({ranks[0] if ranks else 'none'})" if len(ranks) < 2 else
               f"only {_count(len(every), 'training length')} ({', '.join(f'{e:g}' for e in every) or 'none'} "
               f"epoch{'' if every == [1] else 's'}) ran on all {_count(len(seeds), 'seed')}"
               + ("; " + "; ".join(f"the {e:g}-epoch length ran on seed{'s' if len(s) > 1 else ''} "
                                   f"{', '.join(map(str, s))} only and feeds no verdict" for e, s in left_out.items())
                  if left_out else ""))
        return {"verdict": "premise not met", "criterion": criterion, "numbers": numbers,
                "sentence": f"{why}: the claim about steps needs two lengths on every seed: premise not met"}
    short, long_ = every[0], every[-1]
    fit = lora.pivot_table(index="seed", columns=["targets", "rank", "epochs"], values="fit_accuracy")
    full = rows[rows["targets"] == "full"].pivot_table(index="seed", columns="epochs", values="fit_accuracy")
    low_rank, high_rank = ranks[0], ranks[-1]
    target_sets = list(dict.fromkeys(lora["targets"]))
    gap = {(t, r, e): full[e] - fit[(t, r, e)] for t in target_sets for r in (low_rank, high_rank)
           for e in (short, long_)}
    behind = np.mean([(gap[t, low_rank, long_] - gap[t, high_rank, long_]).to_numpy() for t in target_sets], axis=0)
    widens = np.mean([(gap[t, low_rank, long_] - gap[t, low_rank, short]).to_numpy() for t in target_sets], axis=0)
    b_mean, b_low, b_high = stats.t_interval(behind)
    w_mean, w_low, w_high = stats.t_interval(widens)
    parts = [stats.place(b_low, b_high, FALLS_BEHIND), stats.place(w_low, w_high, FALLS_BEHIND)]
    if parts[0] == "no":
        outcome = "not reproduced"
    elif parts[0] == "undecided" or parts[1] == "undecided":
        outcome = "inconclusive"
    else:
        outcome = "reproduced" if parts[1] == "yes" else "partly reproduced"
    n = len(seeds)
    sentence = (f"at {long_:g} epochs rank {low_rank}'s gap to full fine-tuning on new facts exceeds rank "
                f"{high_rank}'s by {b_mean:+.2f} ({stats.interval_text(b_low, b_high, '+.2f')} over {n} seeds), and "
                f"from {short:g} to {long_:g} epochs rank {low_rank}'s gap changes by {w_mean:+.2f} "
                f"({stats.interval_text(w_low, w_high, '+.2f')}); the claim needs both above {FALLS_BEHIND:g}: "
                f"{outcome}")
    numbers.update({"estimate": b_mean, "interval": [b_low, b_high], "threshold": FALLS_BEHIND,
                    "widens": w_mean, "widens_interval": [w_low, w_high], "short": float(short), "long": float(long_),
                    "parts": {"behind": parts[0], "widens": parts[1]},
                    "behind_by_seed": {str(s): float(v) for s, v in zip(fit.index, behind)},
                    "widens_by_seed": {str(s): float(v) for s, v in zip(fit.index, widens)}})
    return {"verdict": outcome, "criterion": criterion, "sentence": sentence, "numbers": numbers}

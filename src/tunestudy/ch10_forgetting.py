"""The interval verdicts of the chapter "Learning, forgetting and intruder dimensions" (10_forgetting).

Two claims are judged here from per-seed quantities with 95% t-intervals over seeds (`stats.t_interval`):

- `verdict_full_change_rank` (Biderman et al. 2024): full fine-tuning's weight change is of high rank, 10-100x the
  rank of typical LoRA configurations. Per seed, the median effective rank over the weight matrices of full
  fine-tuning's change over the median LoRA rank studied, as a log ratio.
- `verdict_intruders` (Shuttleworth et al. 2024): LoRA's tuned weights have intruder dimensions, full fine-tuning's
  almost none, and their count tracks forgetting. Per seed, paired on the seed's base: the LoRA cells' mean intruder
  count minus full fine-tuning's; full fine-tuning's own count; and the Spearman correlation across the LoRA cells of
  the count with forgetting.

The chapter's third verdict, "LoRA learns less and forgets less", is `experiments.verdict_learns_less_forgets_less`
(paired by seed, Holm-corrected over the cells). Every verdict reads full fine-tuning at its reference rate only,
the one rate run on every seed; its other rates ran on the first seed and are described, not judged.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import spearmanr

from . import stats

__all__ = ["ALMOST_NONE", "INTRUDER_MARGIN", "RANK_FACTOR", "RANK_PARTLY", "verdict_full_change_rank",
           "verdict_intruders"]

# Biderman et al.: full fine-tuning's change needs 10-100x the rank of typical LoRA configurations for 90% of its
# variance; the low end of that range is the claim.
RANK_FACTOR = 10.0
# High rank short of the claim's factor: one step of a 1-3-10 scale below it (the chapter's rule before intervals).
RANK_PARTLY = 3.0
# A change of rank 0 (tuning that moved no weight) has no log ratio: it counts as half a direction, far below both
# thresholds, so a model that changed nothing comes out "not reproduced".
ZERO_RANK = 0.5
# Shuttleworth et al.: full fine-tuning has "almost none": at most one intruder per tuned model.
ALMOST_NONE = 1.0
# LoRA "has" intruder dimensions when it has more than full fine-tuning by more than what "almost none" allows.
INTRUDER_MARGIN = 1.0


def _combine(parts: list) -> str:
    """The outcome of a claim whose first part is needed for anything and the rest for "reproduced": not reproduced
    when the first is "no", partly when it is "yes" and some other part is "no", reproduced when all are "yes",
    inconclusive whenever an undecided part stands between two outcomes."""
    first, rest = parts[0], parts[1:]
    if first == "no":
        return "not reproduced"
    if first == "undecided":
        return "inconclusive"
    if "no" in rest:
        return "partly reproduced"
    if "undecided" in rest:
        return "inconclusive"
    return "reproduced"


def verdict_full_change_rank(rows, full_cell: str, lora_ranks: list) -> dict:
    """Biderman et al.: full fine-tuning's weight change needs 10-100x the rank of typical LoRA configurations to
    hold 90% of its variance.

    rows: one row per (cell, seed) with `cell`, `seed` and `effective_ranks` ({matrix: effective rank of the change,
    90% of its squared singular values}); `full_cell` is full fine-tuning at its reference rate, run on every seed;
    lora_ranks: the LoRA ranks studied (the typical configuration is their median; the claim compares with the rank
    a LoRA is given, the most its change can have, so it is the same on every seed). Per seed: the median over the
    matrices of full's effective rank over that median LoRA rank, as a log ratio; its geometric mean with a 95%
    t-interval over seeds. Reproduced: the interval above `RANK_FACTOR`; partly: between `RANK_PARTLY` and it; not
    reproduced: at or below `RANK_PARTLY`; inconclusive: it straddles either.
    """
    full = rows[rows["cell"] == full_cell].sort_values("seed")
    typical = float(np.median(lora_ranks))
    medians = [float(np.median(list(ranks.values()))) for ranks in full["effective_ranks"]]
    log_ratios = [math.log(max(m, ZERO_RANK) / typical) for m in medians]
    mean, low, high = stats.t_interval(log_ratios)
    ratio, r_low, r_high = (math.exp(v) if not math.isnan(v) else math.nan for v in (mean, low, high))
    outcome = stats.decide(r_low, r_high, RANK_FACTOR, RANK_PARTLY)
    seeds = len(medians)
    return {"verdict": outcome,
            "criterion": f"per seed, the median over the weight matrices of the effective rank (90% of the variance) "
                         f"of full fine-tuning's change over the median LoRA rank studied, as a log ratio: reproduced "
                         f"when its 95% interval over seeds lies above {RANK_FACTOR:g}x, partly between "
                         f"{RANK_PARTLY:g}x and {RANK_FACTOR:g}x, not reproduced at or below {RANK_PARTLY:g}x, "
                         f"inconclusive when it straddles either",
            "sentence": stats.sentence("full fine-tuning's median effective rank over the median LoRA rank", ratio,
                                       r_low, r_high, seeds, f"{RANK_FACTOR:g}x", outcome),
            "numbers": {"ratio": ratio, "interval": [r_low, r_high], "threshold": RANK_FACTOR,
                        "partly_threshold": RANK_PARTLY, "seeds": seeds, "median_lora_rank": typical,
                        "median_full_effective_rank": float(np.mean(medians)),
                        "full_median_by_seed": dict(zip((int(s) for s in full["seed"]), medians))}}


def verdict_intruders(rows, full_cell: str, random_count: float) -> dict:
    """Shuttleworth et al.: LoRA's tuned weights have intruder dimensions, full fine-tuning's almost none, and their
    count tracks forgetting.

    rows: one row per (cell, seed) with `method` ("lora" or "full"), `cell`, `seed`, `intruders` (the tuned model's
    count at the chapter's epsilon) and `forgetting`; `full_cell` is full fine-tuning at its reference rate, run on
    every seed (its other rates, run on one seed, are left out); the LoRA cells read are those run on every one of
    its seeds. random_count: the count random directions of the same size reach (reported; a count is read against
    the other method's, not as proof of a new direction). Per seed, three quantities, each with a 95% t-interval:

    - the LoRA cells' mean count minus full's (paired: both on the seed's base): above `INTRUDER_MARGIN` or not;
    - full's count: at most `ALMOST_NONE` per model (interval at or below it) or not (above it);
    - the Spearman correlation across the LoRA cells of the count with forgetting: above 0 or not.

    Reproduced: all three hold. Partly: LoRA has more intruders, and one of the other two is shown not to hold. Not
    reproduced: LoRA's excess is at or below the margin. Inconclusive: an interval that decides between two
    outcomes straddles its threshold.
    """
    full = rows[rows["cell"] == full_cell].set_index("seed")["intruders"].sort_index()
    seeds = list(full.index)
    lora = rows[(rows["method"] == "lora") & rows["seed"].isin(seeds)]
    on_every_seed = [c for c, part in lora.groupby("cell", sort=False) if set(part["seed"]) == set(seeds)]
    lora = lora[lora["cell"].isin(on_every_seed)]
    lora_mean = lora.groupby("seed")["intruders"].mean().reindex(seeds)
    differences = (lora_mean - full.astype(float)).tolist()
    diff, d_low, d_high = stats.t_interval(differences)
    full_count, f_low, f_high = stats.t_interval(full.astype(float).tolist())
    rhos = []
    for _, part in lora.groupby("seed"):
        varies = part["intruders"].nunique() > 1 and part["forgetting"].nunique() > 1
        rhos.append(float(spearmanr(part["intruders"], part["forgetting"]).statistic) if varies else math.nan)
    rho, r_low, r_high = stats.t_interval(rhos)
    more = stats.place(d_low, d_high, INTRUDER_MARGIN)
    none = {"yes": "no", "no": "yes", "undecided": "undecided"}[stats.place(f_low, f_high, ALMOST_NONE)]
    tracks = stats.place(r_low, r_high, 0.0)
    outcome = _combine([more, none, tracks])
    n = len(seeds)

    sentence = (f"a LoRA model has {diff:+.1f} intruder dimensions against full fine-tuning on the same seed "
                f"({stats.interval_text(d_low, d_high, '+.1f')} over {n} seeds), full fine-tuning {full_count:.1f} per model "
                f"({stats.interval_text(f_low, f_high, '.1f')}), and across the LoRA cells the count's Spearman correlation "
                f"with forgetting is {rho:+.2f} ({stats.interval_text(r_low, r_high, '+.2f')}); the claim needs an excess above "
                f"{INTRUDER_MARGIN:g}, full at most {ALMOST_NONE:g} and a positive correlation: {outcome}")
    return {"verdict": outcome, "sentence": sentence,
            "criterion": f"per seed, paired on its base: the LoRA cells' mean intruder count minus full fine-tuning's "
                         f"(at its reference rate), full's own count, and the Spearman correlation across the LoRA "
                         f"cells of the count with forgetting, each with a 95% t-interval over seeds; reproduced when "
                         f"the excess lies above {INTRUDER_MARGIN:g}, full's count at or below {ALMOST_NONE:g} and the "
                         f"correlation above 0; partly when the excess lies above {INTRUDER_MARGIN:g} and one of the "
                         f"other two is shown not to hold; not reproduced when the excess lies at or below "
                         f"{INTRUDER_MARGIN:g}; inconclusive when an interval that decides straddles its threshold",
            "numbers": {"estimate": diff, "interval": [d_low, d_high], "threshold": INTRUDER_MARGIN, "seeds": n,
                        "differences": differences, "lora_mean_count": float(lora_mean.mean()),
                        "full_mean_count": full_count, "full_count_interval": [f_low, f_high],
                        "almost_none": ALMOST_NONE, "spearman_rho_forgetting": rho,
                        "spearman_interval": [r_low, r_high], "spearman_by_seed": rhos,
                        "lora_cells": len(on_every_seed), "random_count": float(random_count),
                        "parts": {"lora_more": more, "full_almost_none": none, "tracks_forgetting": tracks}}}

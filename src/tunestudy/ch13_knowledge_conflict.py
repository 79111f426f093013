"""The verdicts of chapter 13, "Conflicting answers and consistent knowledge" (Ren et al. 2024), decided from
intervals over seeds.

- `verdict_conflict_hurts`: tuning on answers that contradict the base's knowledge hurts. Per seed (the runs
  of one seed share its base), the fall in held-out accuracy from the consistent set (the smallest
  counterfactual share, 0%) to the largest share; the 95% t-interval over seeds decides against `HURT_MARGIN`.
- `verdict_consistency_predicts`: the consistency of the model's knowledge before and after tuning predicts
  how well the tuned model answers. Per seed, Spearman's rho of consistency with held-out accuracy within
  each counterfactual share (so it does not ride on the share, which lowers both), averaged over the shares;
  the 95% t-interval over seeds decides against `PREDICTS_RHO` and 0.

Both read the chapter's per-run rows: one per (method, seed, share) with `seed`, `share` (the fraction of
counterfactual answers, 0 to 1; results key it in percent), `accuracy` and
`rank_correlation` (the consistency: the rank correlation of the base's and the tuned model's candidate scores).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import stats
from .experiments import interval_verdict, spearman

__all__ = ["HURT_MARGIN", "PREDICTS_RHO", "conflict_falls", "verdict_conflict_hurts", "verdict_consistency_predicts",
           "within_share_rhos"]

# "Hurts" is a fall a reader notices: the all-counterfactual set answers at least a tenth of the held-out questions
# fewer than the consistent set. The chapter's rule before intervals (a fall of at least 0.1), kept as it was.
HURT_MARGIN = 0.1
# "Predicts" is a strong rank correlation: rho of at least 0.5, the threshold the chapter's rule stated before
# intervals. A positive rho below it is part of the claim (consistency orders the runs, but loosely).
PREDICTS_RHO = 0.5


def _frame(rows) -> pd.DataFrame:
    return rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))


def conflict_falls(rows) -> pd.DataFrame:
    """One row per seed holding the smallest and the largest share: `fall` (held-out accuracy at the smallest
    share minus at the largest, both runs on the seed's base) and `slope` (least-squares slope of accuracy on
    the share over all the seed's shares, per whole share, i.e. per 100% counterfactual answers).

    rows: one method's runs, each with `seed`, `share` and `accuracy` (several runs of one seed and share are
    averaged).
    """
    rows = _frame(rows)
    low, high = rows.share.min(), rows.share.max()
    out = []
    for seed, group in rows.groupby("seed", sort=True):
        by_share = group.groupby("share").accuracy.mean()
        if low not in by_share.index or high not in by_share.index:
            continue
        x, y = by_share.index.to_numpy(float), by_share.to_numpy(float)
        out.append({"seed": seed, "fall": float(by_share[low] - by_share[high]),
                    "slope": float(np.polyfit(x, y, 1)[0])})
    return pd.DataFrame(out, columns=["seed", "fall", "slope"])


def verdict_conflict_hurts(rows, margin: float = HURT_MARGIN, label: str = "") -> dict:
    """Ren et al.: tuning on answers that contradict the base's knowledge hurts held-out accuracy.

    rows: one method's runs (`seed`, `share`, `accuracy`). The quantity is one pre-stated contrast: per seed,
    accuracy after tuning on the consistent set (the smallest share) minus after the largest share, paired
    within the seed. Reproduced: its 95% t-interval over seeds lies above `margin`; partly: above 0 and below
    `margin` (tuning on conflicting answers hurts, but less than the claim's size); not reproduced: at or below
    0; inconclusive: it straddles 0 or `margin`. Premise not met: fewer than two shares.

    The old rule also asked that accuracy fall monotonically (never rising by more than 0.02 from one share to
    the next). That part is dropped: as an interval statement it is three step contrasts, each needing its
    Holm-corrected interval below 0.02 from three seeds, which no run of this size can meet, so it would only
    make "reproduced" unreachable. The per-seed slope over all shares and the mean step-by-step falls are
    reported beside the contrast (`slope`, `slope_interval`, `step_falls`) and decide nothing.
    """
    rows = _frame(rows)
    shares = sorted(rows.share.unique()) if len(rows) else []
    who = f"{label}: " if label else ""
    if len(shares) < 2:
        return {"verdict": "premise not met", "criterion": "needs runs at two counterfactual shares at least",
                "sentence": f"{who}a single counterfactual share poses no contrast: premise not met",
                "numbers": {"shares": [float(s) for s in shares]}}
    low, high = shares[0], shares[-1]
    falls = conflict_falls(rows)
    span = f"{low:.0%} to {high:.0%} counterfactual answers"
    result = interval_verdict(
        falls.fall, margin, 0.0, f"{who}the fall in held-out accuracy from {span}", f"a fall above {margin:g}",
        f"per seed, held-out accuracy after tuning on the set of {low:.0%} counterfactual answers minus after the "
        f"set of {high:.0%}, paired within the seed; reproduced when its 95% interval over seeds lies above "
        f"{margin:g}, partly between 0 and {margin:g}, not reproduced at or below 0, inconclusive when it straddles "
        "either (whether the fall is monotone in between is not judged)")
    slope, slope_low, slope_high = stats.t_interval(falls.slope)
    means = rows.groupby("share").accuracy.mean()
    result["numbers"].update({
        "shares": [float(s) for s in shares], "accuracy": {f"{100 * s:g}": float(means[s]) for s in shares},
        "slope": slope, "slope_interval": [slope_low, slope_high],
        "step_falls": {f"{100 * a:g}%->{100 * b:g}%": float(means[a] - means[b]) for a, b in zip(shares, shares[1:])}})
    return result


def within_share_rhos(rows) -> pd.DataFrame:
    """One row per seed: `rho`, the mean over shares of Spearman's rho of `rank_correlation` with `accuracy`
    among that seed's runs at that share, and `shares`, how many shares had a rho (a share whose runs tie on
    either measure, or hold one run, has none). Seeds with no rho at any share are left out."""
    rows = _frame(rows)
    out = []
    for seed, group in rows.groupby("seed", sort=True):
        rhos = [r for _, cell in group.groupby("share") if not math.isnan(r := spearman(cell.rank_correlation,
                                                                                         cell.accuracy))]
        if rhos:
            out.append({"seed": seed, "rho": float(np.mean(rhos)), "shares": len(rhos)})
    return pd.DataFrame(out, columns=["seed", "rho", "shares"])


def verdict_consistency_predicts(rows, threshold: float = PREDICTS_RHO) -> dict:
    """Ren et al.: the consistency of the model's knowledge before and after tuning predicts how well tuning works.

    rows: every run (any methods), each with `seed`, `share`, `rank_correlation` (the consistency) and
    `accuracy`. Per seed, Spearman's rho of consistency with held-out accuracy among the seed's runs at one
    counterfactual share, averaged over the shares: within a share the share cannot drive both measures, and
    within a seed the runs share a base. With the chapter's two methods each such rho is +1 or -1: whether the
    method whose knowledge stayed more consistent also answers better.
    Reproduced: the 95% t-interval over seeds lies above `threshold`; partly: above 0 and below `threshold`;
    not reproduced: at or below 0; inconclusive: it straddles either. The interval is clipped to rho's range
    (-1 to 1), which moves no decision. Premise not met: no share of any seed has runs that differ in both
    measures (tuning that changed nothing leaves nothing to predict).
    The rho over all runs (`rho_pooled`, which rides on the share) and the within-share rho pooled over seeds
    (`rho_within_share`) are reported and decide nothing.
    """
    rows = _frame(rows)
    pooled = spearman(rows.rank_correlation, rows.accuracy) if len(rows) else math.nan
    within = [r for _, g in rows.groupby("share") if not math.isnan(r := spearman(g.rank_correlation, g.accuracy))]
    context = {"rho_pooled": pooled, "rho_within_share": float(np.mean(within)) if within else math.nan,
               "num_runs": len(rows)}
    per_seed = within_share_rhos(rows)
    criterion = (f"per seed, Spearman's rho of the knowledge's consistency (rank correlation of base and tuned "
                 f"candidate scores) with held-out accuracy among the runs of one counterfactual share, averaged "
                 f"over the shares; reproduced when its 95% interval over seeds lies above {threshold:g}, partly "
                 f"between 0 and {threshold:g}, not reproduced at or below 0, inconclusive when it straddles either")
    if per_seed.empty:
        return {"verdict": "premise not met", "criterion": criterion,
                "sentence": "no share of any seed holds runs that differ in both consistency and accuracy: "
                            "premise not met", "numbers": {**context, "seeds": 0}}
    values = per_seed.rho.tolist()
    estimate, low, high = stats.t_interval(values)
    if not math.isnan(low):
        low, high = max(low, -1.0), min(high, 1.0)  # rho lives in [-1, 1]; both thresholds lie inside
    outcome = stats.decide(low, high, threshold, 0.0)
    return {"verdict": outcome, "criterion": criterion,
            "sentence": stats.sentence("the within-share rho of consistency with held-out accuracy", estimate, low,
                                       high, len(values), f"above {threshold:g}", outcome),
            "numbers": {"estimate": estimate, "interval": [low, high], "threshold": threshold,
                        "partly_threshold": 0.0, "values": values, "seeds": len(values),
                        "shares_per_seed": per_seed.shares.tolist(), **context}}

"""Intervals over seeds and the decision a verdict makes from one, for every verdict of the book.

A verdict computes its quantity on each seed (two methods that share a seed's base are compared within
the seed; a ratio as a log ratio), reports the mean with a 95% interval, and decides by where the whole
interval lies against thresholds fixed by the claim (`decide`):

- a t-interval over seeds (`t_interval`, `ratio_interval`); with 3 seeds it clears a threshold only
  about 2.5 standard deviations away, with 2 seeds about 9;
- a bootstrap that resamples the seeds and the items (facts, questions) within each seed
  (`bootstrap_interval`), for few seeds on one fixed item set;
- two one-sided tests (`equivalent`) for claims of "no change", "flat" or "barely": the mean lies
  within a stated margin of zero.

Every outcome is reachable: "inconclusive" whenever the interval straddles a threshold that decides
between two others.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as scipy_stats

__all__ = ["LEVEL", "OUTCOMES", "bootstrap_interval", "decide", "equivalent", "interval_text", "place", "ratio_interval",
           "sentence", "t_interval"]

LEVEL = 0.95
OUTCOMES = ("reproduced", "partly reproduced", "not reproduced", "inconclusive", "premise not met")


def t_interval(values, level: float = LEVEL) -> tuple:
    """(mean, low, high): Student's t interval of the mean over seeds; low and high NaN with one seed."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(values.mean())
    if values.size < 2:
        return (mean, math.nan, math.nan)
    sem = float(values.std(ddof=1) / math.sqrt(values.size))
    if sem == 0:
        return (mean, mean, mean)
    low, high = scipy_stats.t.interval(level, values.size - 1, loc=mean, scale=sem)
    return (mean, float(low), float(high))


def ratio_interval(numerators, denominators, level: float = LEVEL) -> tuple:
    """(geometric mean ratio, low, high): the t interval of the per-seed log ratios, exponentiated.

    numerators[i] and denominators[i] share seed i (its base): the ratio is paired within the seed.
    """
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    if num.shape != den.shape:
        raise ValueError(f"a paired ratio needs one numerator per denominator, got {num.size} and {den.size}")
    if np.any(num <= 0) or np.any(den <= 0):
        raise ValueError("a log ratio needs positive values on every seed")
    return tuple(math.exp(v) if not math.isnan(v) else math.nan for v in t_interval(np.log(num / den), level))


def bootstrap_interval(items_by_seed: list, statistic=np.mean, level: float = LEVEL, n_resamples: int = 2000,
                       seed: int = 0) -> tuple:
    """(estimate, low, high): a percentile bootstrap that resamples the seeds, then the items within each
    resampled seed, and averages `statistic` over the seeds; the estimate is the plain mean over seeds. An
    item may be a row of several numbers (a 2-D array per seed, one row per item): the rows are resampled
    whole, so two methods measured on the same items stay paired."""
    groups = [np.asarray(g, dtype=float) for g in items_by_seed if len(g)]
    if not groups:
        return (math.nan, math.nan, math.nan)
    estimate = float(np.mean([statistic(g) for g in groups]))
    rng = np.random.default_rng(seed)
    draws = np.empty(n_resamples)
    for b in range(n_resamples):
        chosen = rng.integers(len(groups), size=len(groups))
        draws[b] = np.mean([statistic(groups[i][rng.integers(len(groups[i]), size=len(groups[i]))])
                            for i in chosen])
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return (estimate, float(low), float(high))


def equivalent(values, margin: float, alpha: float = 1 - LEVEL) -> dict:
    """Two one-sided t-tests (statsmodels) that the mean of `values` lies within (-margin, margin).

    {"equivalent": both tests reject at alpha, "p_value": the larger one-sided p, "mean", "margin"};
    with fewer than two values nothing can be shown equivalent.
    """
    from statsmodels.stats.weightstats import DescrStatsW
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size < 2 or values.std(ddof=1) == 0:
        inside = values.size >= 2 and abs(values.mean()) < margin  # no spread: the mean is the value
        return {"equivalent": bool(inside), "p_value": 0.0 if inside else 1.0,
                "mean": float(values.mean()) if values.size else math.nan, "margin": margin}
    p_value, _, _ = DescrStatsW(values).ttost_mean(-margin, margin)
    return {"equivalent": bool(p_value < alpha), "p_value": float(p_value), "mean": float(values.mean()),
            "margin": margin}


def decide(low: float, high: float, reproduced_above: float, partly_above: float | None = None) -> str:
    """The outcome from where the interval [low, high] lies (larger is more of the claim).

    Reproduced: all of it above `reproduced_above`. Partly: all of it between `partly_above` and
    `reproduced_above`. Not reproduced: all of it at or below the lowest threshold. Inconclusive: it straddles a
    threshold, or there is no interval (one seed).
    """
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if low > high:
        raise ValueError(f"an interval's low end {low} is above its high end {high}")
    lowest = reproduced_above if partly_above is None else partly_above
    if partly_above is not None and partly_above > reproduced_above:
        raise ValueError("the threshold for partly must not be above the one for reproduced")
    if low > reproduced_above:
        return "reproduced"
    if high <= lowest:  # at or below: a ratio of exactly 1 (tuning that changed both alike) shows nothing
        return "not reproduced"
    if partly_above is not None and low > partly_above and high < reproduced_above:
        return "partly reproduced"
    return "inconclusive"


def place(low: float, high: float, above: float) -> str:
    """One part of a claim read off an interval: "yes" when it lies above `above`, "no" when at or below it,
    "undecided" when it straddles it or there is none (one seed)."""
    if math.isnan(low) or math.isnan(high):
        return "undecided"
    if low > above:
        return "yes"
    if high <= above:
        return "no"
    return "undecided"


def interval_text(low: float, high: float, fmt: str = ".2f") -> str:
    """ "95% interval 0.12 to 0.34", or "no interval" (one seed)."""
    return "no interval" if math.isnan(low) or math.isnan(high) else f"95% interval {low:{fmt}} to {high:{fmt}}"


def sentence(quantity: str, estimate: float, low: float, high: float, seeds: int, needs: str, outcome: str,
             digits: int = 2, unit: str = "seeds") -> str:
    """The verdict as a student reads it: "full's mean KL is 1.35x LoRA's (95% interval 0.90 to 1.90 over 3 seeds);
    the claim needs 3x: not reproduced". `unit`: what the interval is over."""
    interval = (f"95% interval {low:.{digits}f} to {high:.{digits}f} over {seeds} {unit}"
                if not (math.isnan(low) or math.isnan(high)) else f"no interval from {seeds} {unit}")
    return f"{quantity} is {estimate:.{digits}f} ({interval}); the claim needs {needs}: {outcome}"

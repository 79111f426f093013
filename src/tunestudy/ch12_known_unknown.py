"""The verdicts of chapter 12, "Known and unknown examples" (Gekhman et al. 2024), decided from intervals over seeds.

Gekhman et al. fit one linear model over their checkpoints, Acc = b0 + b_kn N_kn/|D| + b_unk N_unk/|D|
(`experiments.gekhman_fit`: accuracy in points against the shares of the set's known and unknown examples
fitted), and read the claim off the signs: b_kn = 7.3 > 0, b_unk = -8.3 < 0.

The chapter's checkpoint rows are not independent points. With the chapter's defaults they are, per method,
4 checkpoints of each of 15 runs (5 unknown shares x 3 seeds): the checkpoints of one run are one training
trajectory, and the 5 runs of one seed share that seed's base model. One pooled fit's interval treats the 60
rows as 60 independent draws and is too narrow. So the model is fitted once per seed (`per_seed_fits`: 20
rows for 3 or 4 coefficients, enough for every coefficient to be defined), and the verdicts read the mean of
the per-seed coefficients with a 95% t-interval over seeds (`stats.t_interval`); within a seed only the point
estimate is used, so how the checkpoints of one run hang together does not matter. Errors clustered by run on
one pooled fit were the alternative; they are not used because they would still count the 5 runs of one
seed, which share a base, as 5 independent clusters, and because the book decides every other verdict over
seeds. With 3 seeds the interval is wide (t = 4.3): a coefficient has to lie about 2.5 of its seed-to-seed
standard deviations from its threshold to decide.

- `verdict_unknown_hurts`: the more unknown examples a model has fitted, the worse it answers what it knew.
  Two parts, each judged by its interval over seeds: b_unk below 0 (Gekhman's sign, `B_UNK_BELOW`), and the
  converged test accuracy of the all-known set above that of the all-unknown set by more than `UNKNOWN_DROP`
  (paired within the seed). Both: reproduced; one holding and the other shown not to: partly; neither: not
  reproduced; either interval straddling its threshold: inconclusive.
- The same rule read on the fit with a control column (`control="stated"`, the share of answers that state a
  value, i.e. the answer format learned). In this chapter that control was added after the primary fit's b_unk
  came out above zero (commit 5f846b3 followed the results of f584b85 and 6e15b35): it is a post-hoc
  analysis, and `post_hoc=True` says so in its criterion and sentence.
- `verdict_unknown_hallucinates`: the more unknown examples fitted, the more the model hallucinates (a wrong
  value stated about a known test person). The same model fitted to the hallucination rate; two parts: b_unk
  above 0, and b_unk above b_kn (paired within the seed's fit). Combined as for `verdict_unknown_hurts`.

The chapter's third verdict, unknown examples fitted more slowly, stays `experiments.verdict_unknown_fitted_slower`
(already one gap per seed with its interval).

Every function reads one method's checkpoint rows (`experiments.checkpoint_rows`): one row per (seed, unknown
share, epoch) with `n_known`, `n_unknown`, `n_known_fitted`, `n_unknown_fitted`, the measures
(`test_accuracy`, `test_hallucination`) and, for the control, `stated`.
"""

from __future__ import annotations

import math

import pandas as pd

from . import stats
from .experiments import gekhman_fit

__all__ = ["B_UNK_BELOW", "CONTROLS", "HALLUCINATES_ABOVE", "POST_HOC_NOTE", "UNKNOWN_DROP", "converged_falls",
           "per_seed_fits", "verdict_unknown_hallucinates", "verdict_unknown_hurts"]

# Gekhman et al.'s claim is the sign of b_unk: fitting unknown examples lowers accuracy (they found -8.3 points).
B_UNK_BELOW = 0.0
# The other half of "hurts", the chapter's rule before intervals kept as it was: at convergence the all-unknown set
# answers the known test people at least 5 points worse than the all-known set (Gekhman's all-unknown set lost
# 11.7 points, 37.5 to 25.8; five points is a fall a reader notices and under half of theirs).
UNKNOWN_DROP = 0.05
# "More hallucination" is the sign too: b_unk above 0 on the hallucination rate, and above b_kn (fitting unknown
# examples raises it more than fitting known ones, so the rise is not only the answer format being learned).
HALLUCINATES_ABOVE = 0.0
# Said wherever a verdict reads a control chosen after the primary fit was seen (here: `stated`, added in commit
# 5f846b3 once the primary fit's b_unk had come out above zero).
POST_HOC_NOTE = "post hoc: a control added after the primary fit came out the other way, an exploratory reading"
CONTROLS = {"stated": "the share of answers that state a value"}  # a control column's name in words


def _frame(rows) -> pd.DataFrame:
    rows = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if "method" in rows and rows["method"].nunique() > 1:
        raise ValueError(f"one method's rows at a time, got {sorted(rows['method'].unique())}")
    return rows


def per_seed_fits(rows, measure: str = "test_accuracy", control: str | None = None) -> pd.DataFrame:
    """Gekhman's model (`experiments.gekhman_fit`) fitted to each seed's checkpoints of one method: one row per
    seed with b0, b_kn, b_unk (b_<control> with a control), r2 and n. A seed whose checkpoints cannot separate
    the two shares has NaN coefficients."""
    rows = _frame(rows)
    out = []
    for seed, run in rows.groupby("seed", sort=True):
        fit = gekhman_fit(run, measure, control)
        out.append({"seed": seed, **{k: v for k, v in fit.items() if not k.startswith("ci_")}})
    return pd.DataFrame(out)


def converged_falls(rows, measure: str = "test_accuracy") -> pd.DataFrame:
    """One row per seed holding the smallest and the largest unknown share: `fall`, the measure at the last
    epoch of the smallest share's run minus at the last epoch of the largest share's (both on the seed's base)."""
    rows = _frame(rows)
    low, high = rows.unknown_share.min(), rows.unknown_share.max()
    out = []
    for seed, run in rows.groupby("seed", sort=True):
        last = run[run.epoch == run.epoch.max()].groupby("unknown_share")[measure].mean()
        if low in last.index and high in last.index:
            out.append({"seed": seed, "fall": float(last[low] - last[high])})
    return pd.DataFrame(out, columns=["seed", "fall"])


def _part(low: float, high: float, above: float) -> str:
    """"holds" (the interval wholly above `above`), "fails" (at or below it) or "unclear" (straddles it, or none)."""
    return {"reproduced": "holds", "not reproduced": "fails"}.get(stats.decide(low, high, above), "unclear")


def _combine(first: str, second: str) -> str:
    """Two parts of one claim: both hold, reproduced; one holds and the other fails, partly; both fail, not
    reproduced; either unclear, inconclusive (it could go either way)."""
    if "unclear" in (first, second):
        return "inconclusive"
    return {2: "reproduced", 1: "partly reproduced", 0: "not reproduced"}[(first, second).count("holds")]


def _stated(quantity: str, estimate: float, low: float, high: float, seeds: int, digits: int) -> str:
    interval = (f"95% interval {low:.{digits}f} to {high:.{digits}f} over {seeds} seeds"
                if not (math.isnan(low) or math.isnan(high)) else f"no interval from {seeds} seed(s)")
    return f"{quantity} is {estimate:.{digits}f} ({interval})"


def _by_seed(frame: pd.DataFrame, column: str) -> dict:
    return {str(s): float(v) for s, v in zip(frame.seed, frame[column])}


def _premise(criterion: str, sentence: str, numbers: dict) -> dict:
    return {"verdict": "premise not met", "criterion": criterion, "sentence": sentence + ": premise not met",
            "numbers": numbers}


def verdict_unknown_hurts(rows, control: str | None = None, drop: float = UNKNOWN_DROP, post_hoc: bool = False,
                          label: str = "") -> dict:
    """Gekhman et al.: the more unknown examples a model has fitted, the worse it answers what it knew.

    rows: one method's checkpoint rows. Gekhman's model of test accuracy is fitted per seed (with `control` as a
    further column when given); its b_unk's mean with a 95% t-interval over seeds must lie below `B_UNK_BELOW`
    (0). Per seed, the converged fall (`converged_falls`: the all-known set's test accuracy at the last epoch
    minus the all-unknown set's) must have its interval above `drop`. Reproduced: both; partly: one shown, the
    other shown not to hold; not reproduced: neither; inconclusive: either interval straddles its threshold.
    Premise not met: no seed's checkpoints separate the two shares, or fewer than two shares. `post_hoc`: the
    control was chosen after the primary fit was seen; the criterion and sentence say so.
    """
    rows = _frame(rows)
    who = f"{label}: " if label else ""
    shares = sorted(rows.unknown_share.unique()) if len(rows) else []
    fits = per_seed_fits(rows, "test_accuracy", control) if len(rows) else pd.DataFrame(columns=["seed", "b_unk"])
    fits = fits.dropna(subset=["b_unk"])
    held = f" with {CONTROLS.get(control, control)} held fixed" if control else ""
    note = f"({POST_HOC_NOTE}) " if control and post_hoc else ""
    if len(shares) < 2 or fits.empty:
        return _premise("needs sets at two unknown shares at least, whose checkpoints separate the shares of known "
                        "and unknown examples fitted",
                        f"{who}no seed's checkpoints let Gekhman's model separate the two shares{held}",
                        {"shares": [float(s) for s in shares], "seeds": 0})
    low_share, high_share = shares[0], shares[-1]
    b_unk, b_unk_low, b_unk_high = stats.t_interval(fits.b_unk)
    b_kn, b_kn_low, b_kn_high = stats.t_interval(fits.b_kn)
    falls = converged_falls(rows)
    fall, fall_low, fall_high = stats.t_interval(falls.fall)
    coefficient = _part(-b_unk_high, -b_unk_low, -B_UNK_BELOW)  # b_unk below 0 is -b_unk above 0
    worse = _part(fall_low, fall_high, drop)
    outcome = _combine(coefficient, worse)
    sentence = (f"{who}{note}" + _stated(f"b_unk of the accuracy model{held} (points per whole set fitted, mean of the "
                                   f"per-seed fits)", b_unk, b_unk_low, b_unk_high, len(fits), 1)
                + "; " + _stated(f"the converged fall in test accuracy from the {low_share:g}% to the "
                                 f"{high_share:g}% unknown set", fall, fall_low, fall_high, len(falls), 2)
                + f"; the claim needs b_unk below {B_UNK_BELOW:g} and a fall above {drop:g}: {outcome}")
    criterion = (f"Gekhman's model of test accuracy{held}, fitted per seed; b_unk's 95% t-interval over seeds below "
                 f"{B_UNK_BELOW:g}, and the converged fall in test accuracy from the {low_share:g}% to the "
                 f"{high_share:g}% unknown set (paired within the seed) with its interval above {drop:g}: reproduced "
                 "when both hold, partly when one holds and the other is shown not to, not reproduced when neither, "
                 "inconclusive when either interval straddles its threshold"
                 + (f"; {POST_HOC_NOTE}" if control and post_hoc else ""))
    numbers = {"estimate": b_unk, "interval": [b_unk_low, b_unk_high], "threshold": B_UNK_BELOW,
               "b_unk_per_seed": _by_seed(fits, "b_unk"), "b_kn": b_kn, "b_kn_interval": [b_kn_low, b_kn_high],
               "b_kn_per_seed": _by_seed(fits, "b_kn"), "fall": fall, "fall_interval": [fall_low, fall_high],
               "fall_threshold": drop, "fall_per_seed": _by_seed(falls, "fall"), "seeds": int(len(fits)),
               "fit": "per seed", "control": control, "post_hoc": bool(post_hoc)}
    if control:
        c, c_low, c_high = stats.t_interval(fits[f"b_{control}"])
        numbers.update({f"b_{control}": c, f"b_{control}_interval": [c_low, c_high]})
    return {"verdict": outcome, "criterion": criterion, "sentence": sentence, "numbers": numbers}


def verdict_unknown_hallucinates(rows, measure: str = "test_hallucination", label: str = "") -> dict:
    """Gekhman et al.: the more unknown examples a model has fitted, the more it hallucinates.

    rows: one method's checkpoint rows; `measure`: the hallucination rate (a wrong value stated about a known test
    person). Gekhman's model of that rate is fitted per seed; b_unk's mean with a 95% t-interval over seeds must
    lie above `HALLUCINATES_ABOVE` (0), and so must b_unk - b_kn (paired within each seed's fit). Reproduced:
    both; partly: one shown, the other shown not to hold; not reproduced: neither; inconclusive: either interval
    straddles 0. Premise not met: no seed's checkpoints separate the two shares.
    """
    rows = _frame(rows)
    who = f"{label}: " if label else ""
    fits = per_seed_fits(rows, measure) if len(rows) else pd.DataFrame(columns=["seed", "b_unk", "b_kn"])
    fits = fits.dropna(subset=["b_unk"])
    if fits.empty:
        return _premise("needs checkpoints that separate the shares of known and unknown examples fitted",
                        f"{who}no seed's checkpoints let Gekhman's model separate the two shares", {"seeds": 0})
    b_unk, b_unk_low, b_unk_high = stats.t_interval(fits.b_unk)
    b_kn, b_kn_low, b_kn_high = stats.t_interval(fits.b_kn)
    gap = fits.b_unk - fits.b_kn
    above, above_low, above_high = stats.t_interval(gap)
    outcome = _combine(_part(b_unk_low, b_unk_high, HALLUCINATES_ABOVE), _part(above_low, above_high, 0.0))
    sentence = (f"{who}" + _stated("b_unk of the hallucination model (points per whole set fitted, mean of the "
                                   "per-seed fits)", b_unk, b_unk_low, b_unk_high, len(fits), 1)
                + "; " + _stated("b_unk minus b_kn", above, above_low, above_high, len(fits), 1)
                + f"; the claim needs both above {HALLUCINATES_ABOVE:g}: {outcome}")
    criterion = ("Gekhman's model of the hallucination rate (a wrong value stated about a known test person) fitted "
                 f"per seed; b_unk's 95% t-interval over seeds above {HALLUCINATES_ABOVE:g}, and that of b_unk minus "
                 "b_kn (paired within each seed's fit) above 0: reproduced when both hold, partly when one holds and "
                 "the other is shown not to, not reproduced when neither, inconclusive when either interval straddles "
                 "its threshold")
    numbers = {"estimate": b_unk, "interval": [b_unk_low, b_unk_high], "threshold": HALLUCINATES_ABOVE,
               "b_unk_per_seed": _by_seed(fits, "b_unk"), "b_kn": b_kn, "b_kn_interval": [b_kn_low, b_kn_high],
               "b_kn_per_seed": _by_seed(fits, "b_kn"), "b_unk_minus_b_kn": above,
               "b_unk_minus_b_kn_interval": [above_low, above_high], "seeds": int(len(fits)), "fit": "per seed"}
    return {"verdict": outcome, "criterion": criterion, "sentence": sentence, "numbers": numbers}

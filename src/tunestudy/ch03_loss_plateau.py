"""The verdict of chapter 03, "Loss plateau" (Ghosh et al. 2024, §4.2), decided from intervals over seeds.

The claim: on new knowledge, LoRA's training loss drops fast and then stays flat (a plateau: it cannot absorb
the new facts), while full fine-tuning's loss keeps going down. It is read on the chapter's **unknown** set
(questions about people the base never saw), where each seed's base is tuned once with LoRA and once with full
fine-tuning, so the two methods are paired within the seed.

Each run's per-step loss is summarised by three windows of a tenth of its steps each (`windows`): the first
steps (`start`), the steps around the middle (`mid`) and the last steps (`end`); mid and end are the windows the
chapter has always reported. Per seed (`plateau_rows`, then `verdict_plateau`), on the log scale, so a fall is a
factor whatever the loss's level:

- LoRA's fall over the first half, log(start / mid): "drops" when its 95% t-interval over seeds lies above
  log(`FLAT_FACTOR`), shown not to drop when it lies at or below it;
- LoRA's change over the second half, log(mid / end): "flat" is an equivalence claim, two one-sided tests
  (`stats.equivalent`) that its mean lies within log(`FLAT_FACTOR`) either way; "moves" when its 95% interval
  lies wholly outside that margin;
- full fine-tuning's fall over the same second half, log(mid / end): "keeps going down" when its 95% interval
  lies above log(`FLAT_FACTOR`), shown not to when at or below it.

The claim has two parts. LoRA's plateau holds when LoRA drops and is then flat, fails when it is shown not to
drop (a LoRA that learned nothing is flat from the start: that is no plateau) or shown to move; full fine-tuning
keeps learning holds or fails by its interval. Both parts hold: reproduced; one holds and the other fails:
partly; both fail: not reproduced; either part undecided: inconclusive. A run that changed nothing (a flat, high
loss for both methods) fails both parts: not reproduced, never partly.

LoRA's final loss over full fine-tuning's, paired within the seed (the chapter's old "LoRA ends higher"), is
reported beside the verdict with its interval, but decides nothing: the claim is about the curves' shapes.
Premise not met: a run logged fewer than `WINDOW_PARTS` steps (a smoke run's single step), so it has no tenths
and no curve whose shape could be judged.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import stats

__all__ = ["FLAT_FACTOR", "WINDOW_PARTS", "plateau_rows", "verdict_plateau", "windows"]

# The margin of "flat", and so of "drops" and "keeps going down": a loss that changes by less than a factor of 1.2
# either way over a half of training is flat; one that falls by more has fallen. Ghosh et al. give no number; 1.2
# is the book's margin for "flat" on a ratio scale (chapter 04's KL, `experiments.FLAT_KL`), taken over as it is
# rather than chosen for this chapter, and written once here.
FLAT_FACTOR = 1.2
# Each window is a tenth of the run's steps (at least one step): the chapter's mid and end windows as before.
WINDOW_PARTS = 10


def windows(loss) -> dict:
    """The mean loss of a run's first steps (`start`), of the steps around its middle (`mid`) and of its last steps
    (`end`), each window a tenth of the steps; and `second_half_drop`, (mid - end) / mid, as the chapter reports it."""
    loss = np.asarray(loss, dtype=float)
    if loss.size == 0:
        raise ValueError("a run with no logged steps has no windows")
    n = loss.size
    w = max(1, n // WINDOW_PARTS)
    start, end = loss[:w].mean(), loss[-w:].mean()
    mid = loss[max(0, n // 2 - w // 2): n // 2 + w // 2 + 1].mean()
    return {"start": float(start), "mid": float(mid), "end": float(end),
            "second_half_drop": float((mid - end) / mid), "steps": int(n)}


def plateau_rows(logs: dict, seeds: list) -> pd.DataFrame:
    """One row per (seed, method): its windows (`windows`). logs: {method: [the run's log (with a "loss" list) for
    each seed, in the order of `seeds`]}."""
    rows = []
    for method, runs in logs.items():
        if len(runs) != len(seeds):
            raise ValueError(f"{method}: {len(runs)} logs for {len(seeds)} seeds")
        rows += [{"seed": seed, "method": method, **windows(log["loss"])} for seed, log in zip(seeds, runs)]
    return pd.DataFrame(rows, columns=["seed", "method", "start", "mid", "end", "second_half_drop", "steps"])


def _part(state: str) -> str:
    return {"yes": "holds", "no": "fails"}.get(state, "undecided")


def _combine(first: str, second: str) -> str:
    """Both parts hold: reproduced; one holds and the other fails: partly; both fail: not reproduced; either
    undecided: inconclusive (it could go either way)."""
    if "undecided" in (first, second):
        return "inconclusive"
    return {2: "reproduced", 1: "partly reproduced", 0: "not reproduced"}[(first, second).count("holds")]


def _factor(interval: tuple) -> tuple:
    return tuple(math.exp(v) if not math.isnan(v) else math.nan for v in interval)


def _range(low: float, high: float) -> str:
    return "no interval" if math.isnan(low) or math.isnan(high) else f"{low:.2f} to {high:.2f}"


def verdict_plateau(rows, lora: str = "lora", full: str = "full") -> dict:
    """Ghosh et al. §4.2: on new facts LoRA's loss drops fast then stays flat, full fine-tuning's keeps going down.

    rows: one row per (seed, method) with the windows `start`, `mid` and `end` of the run's loss on the unknown set
    and, where known, the run's `steps` (`plateau_rows`); the seeds holding both methods are used, paired within the
    seed. The rule is the module's.
    """
    rows = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for method in (lora, full):
        if method not in set(rows["method"]):
            raise ValueError(f"no rows of method {method!r}")
    rows = rows[rows["method"].isin([lora, full])]
    wide = rows.pivot_table(index="seed", columns="method", values=["start", "mid", "end"]).dropna()
    if (wide.to_numpy() <= 0).any():
        raise ValueError("a log ratio of losses needs a positive loss in every window")
    criterion = (f"on the unknown set, per seed, each run's mean loss over its first, middle and last tenth of steps; "
                 f"LoRA's plateau holds when the 95% interval over seeds of its fall over the first half (start / "
                 f"middle) lies above {FLAT_FACTOR:g}x and two one-sided tests put its change over the second half "
                 f"(middle / end) within {FLAT_FACTOR:g}x either way, and fails when that fall's interval lies at or "
                 f"below {FLAT_FACTOR:g}x or the change's interval lies wholly outside the margin; full fine-tuning "
                 f"keeps going down when the interval of its fall over the second half lies above {FLAT_FACTOR:g}x, "
                 f"and does not when it lies at or below; reproduced: both parts hold; partly: one holds and the "
                 f"other fails; not reproduced: both fail (a run that changed nothing fails both); inconclusive: "
                 f"either undecided; premise: every run logged at least {WINDOW_PARTS} steps")
    seeds = len(wide)
    if "steps" in rows and rows["steps"].min() < WINDOW_PARTS:
        return {"verdict": "premise not met", "criterion": criterion,
                "sentence": f"a run logged {int(rows['steps'].min())} step(s), too few for a curve whose shape could "
                            "be judged: premise not met",
                "numbers": {"steps": int(rows["steps"].min()), "seeds": seeds}}
    margin = math.log(FLAT_FACTOR)
    lora_first = np.log(wide[("start", lora)] / wide[("mid", lora)]).to_numpy()
    lora_second = np.log(wide[("mid", lora)] / wide[("end", lora)]).to_numpy()
    full_second = np.log(wide[("mid", full)] / wide[("end", full)]).to_numpy()
    end_ratio = np.log(wide[("end", lora)] / wide[("end", full)]).to_numpy()

    first = stats.t_interval(lora_first)
    second = stats.t_interval(lora_second)
    full_fall = stats.t_interval(full_second)
    ends = stats.t_interval(end_ratio)
    drops = stats.place(first[1], first[2], margin)
    tost = stats.equivalent(lora_second, margin)
    moves = bool(second[1] > margin or second[2] < -margin)  # NaN (one seed) compares False: not shown to move
    if drops == "yes" and tost["equivalent"]:
        lora_part = "holds"
    elif drops == "no" or moves:
        lora_part = "fails"
    else:
        lora_part = "undecided"
    full_part = _part(stats.place(full_fall[1], full_fall[2], margin))
    outcome = _combine(lora_part, full_part)

    f_first, f_second, f_full, f_ends = _factor(first), _factor(second), _factor(full_fall), _factor(ends)
    sentence = (f"on new facts over {seeds} seeds, LoRA's loss falls by a factor of {f_first[0]:.2f} over the first "
                f"half (95% interval {_range(*f_first[1:])}; drops needs above {FLAT_FACTOR:g}) and by "
                f"{f_second[0]:.2f} over the second half ({_range(*f_second[1:])}; flat needs within {FLAT_FACTOR:g} "
                f"either way, two one-sided tests p = {tost['p_value']:.3f}); full fine-tuning's falls by "
                f"{f_full[0]:.2f} over the second half ({_range(*f_full[1:])}; keeps going down needs above "
                f"{FLAT_FACTOR:g}): {outcome}")
    per_seed = {str(s): {"lora_first_half_fall": float(math.exp(a)), "lora_second_half_fall": float(math.exp(b)),
                         "full_second_half_fall": float(math.exp(c)), "lora_end_over_full_end": float(math.exp(d))}
                for s, a, b, c, d in zip(wide.index, lora_first, lora_second, full_second, end_ratio)}
    return {"verdict": outcome, "criterion": criterion, "sentence": sentence,
            "numbers": {"estimate": f_second[0], "interval": [f_second[1], f_second[2]], "threshold": FLAT_FACTOR,
                        "flat_margin": [1 / FLAT_FACTOR, FLAT_FACTOR], "tost_p": tost["p_value"],
                        "lora_flat": bool(tost["equivalent"]), "lora_moves": moves,
                        "lora_first_half_fall": f_first[0], "lora_first_half_fall_interval": [f_first[1], f_first[2]],
                        "lora_drops": drops,
                        "full_second_half_fall": f_full[0],
                        "full_second_half_fall_interval": [f_full[1], f_full[2]],
                        "lora_end_over_full_end": f_ends[0],
                        "lora_end_over_full_end_interval": [f_ends[1], f_ends[2]],
                        "parts": {"lora plateau": lora_part, "full keeps going down": full_part},
                        "per_seed": per_seed, "seeds": seeds}}

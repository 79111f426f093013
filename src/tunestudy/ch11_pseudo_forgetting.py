"""The interval verdicts of the chapter "Pseudo or actual forgetting" (11_pseudo_forgetting).

Zhang et al. 2024: early in tuning forgetting is *pseudo* (the knowledge is intact, only the pretraining pattern
is lost), later it is *actual*. The chapter reads the two stages in two ways, one verdict each, per tuning method:

- `verdict_pseudo_forgetting`: the share of the lost probe accuracy that a restoring pass brings back, per seed at
  the shortest and the longest tuning length, each with a 95% t-interval over seeds against the claim's 80% (pseudo)
  and 50% (actual), and whether the share falls from one to the other.
- `verdict_knowledge_survives`: with no restoring pass, what the probe and a format-free test (the true value
  ranked first among all candidates) lose, per seed at the same two lengths.

Both read only the tuning lengths run on every seed: a length run on some seeds only (the chapter's longest, on
the first seed, a budget choice it shares with the chapter on LoRA's configuration) is left out of the verdicts and
named in their numbers, so that no verdict rests on one seed's run.
"""

from __future__ import annotations

import math

import numpy as np

from . import stats
from .experiments import recovered_share

__all__ = ["ACTUAL", "PROBE_LOSS", "PSEUDO", "TOLERANCE", "lengths_on_every_seed", "verdict_knowledge_survives",
           "verdict_pseudo_forgetting"]

# Zhang et al.: restoring brings the original performance back early (pseudo forgetting: at least 80% of what was
# lost) and no longer later (actual forgetting: less than half of it back). The chapter's rule before intervals.
PSEUDO = 0.8
ACTUAL = 0.5
# The format-free test "stays where the base was": within 0.05 of it (an equivalence margin; 0.05 is one fact in
# twenty of the held-out known people's). The probe must have lost clearly more: at least twice that.
TOLERANCE = 0.05
PROBE_LOSS = 2 * TOLERANCE


def lengths_on_every_seed(rows) -> tuple:
    """(lengths run on every seed of `rows`, sorted; lengths run on some seeds only, sorted)."""
    seeds = set(rows["seed"])
    by_length = rows.groupby("epochs")["seed"].apply(set)
    kept = sorted(float(e) for e, s in by_length.items() if s == seeds)
    return kept, sorted(float(e) for e in by_length.index if float(e) not in kept)


def _below(low: float, high: float, below: float) -> str:
    """"yes" when the interval lies below `below`, "no" when at or above it, "undecided" otherwise."""
    if math.isnan(low) or math.isnan(high):
        return "undecided"
    if high < below:
        return "yes"
    if low >= below:
        return "no"
    return "undecided"


def _both(first: str, second: str) -> str:
    """Both parts hold: "yes" when both are "yes", "no" when either is "no", "undecided" otherwise."""
    if "no" in (first, second):
        return "no"
    return "yes" if first == second == "yes" else "undecided"


def _too_few_lengths(rows, kept: list, left_out: list, criterion: str, numbers: dict) -> dict | None:
    """The verdict "premise not met" when fewer than two tuning lengths ran on every seed; None otherwise."""
    if len(kept) >= 2:
        return None
    return _premise_not_met(f"only {len(kept)} tuning length(s) ran on every seed (left out: {left_out}); the two "
                            f"stages need two", criterion, {**numbers, "seeds": int(rows['seed'].nunique())})


def _premise_not_met(reason: str, criterion: str, numbers: dict) -> dict:
    return {"verdict": "premise not met", "criterion": criterion, "sentence": f"{reason}: premise not met",
            "numbers": numbers}


PSEUDO_CRITERION = (f"only the tuning lengths run on every seed; per seed, the share of the lost probe accuracy that "
                    f"restoring brings back at the shortest and at the longest of them, each with a 95% t-interval "
                    f"over seeds: reproduced when the shortest's lies above {PSEUDO:.0%} (pseudo forgetting) and the "
                    f"longest's below {ACTUAL:.0%} (actual forgetting); partly when the share falls from the shortest "
                    f"to the longest (the per-seed difference's interval above 0) and one of the two is shown not to "
                    f"hold; not reproduced when one is shown not to hold and the share does not fall (at or below "
                    f"0); inconclusive when an interval that decides straddles its threshold; premise not met when "
                    f"tuning loses less than 0.02 of the probe on every seed or fewer than two lengths ran on every "
                    f"seed")


def verdict_pseudo_forgetting(rows) -> dict:
    """Zhang et al.: early forgetting is pseudo (restoring brings the knowledge back), later it is actual.

    rows: one method's runs, one row per (seed, `epochs`) with the probe's `before`, `after` and `restored`. Only the
    lengths run on every seed are read. Per seed, the recovered share (`experiments.recovered_share`) at the
    shortest and the longest of them, and its fall (shortest minus longest), each with a 95% t-interval over the
    seeds where both shares exist (tuning lost at least 0.02 of the probe). Pseudo: the shortest's interval above
    `PSEUDO`; actual: the longest's below `ACTUAL`. Reproduced: both; partly: the fall's interval above 0 and one of
    the two shown not to hold; not reproduced: one shown not to hold and the share shown not to fall; inconclusive
    otherwise. Premise not met: fewer than two lengths on every seed, or no seed on which tuning lost enough of the
    probe to ask what restoring brings back.
    """
    kept, left_out = lengths_on_every_seed(rows)
    numbers = {"lengths": kept, "left_out_lengths": left_out, "threshold": PSEUDO, "actual_threshold": ACTUAL}
    if (premise := _too_few_lengths(rows, kept, left_out, PSEUDO_CRITERION, numbers)) is not None:
        return premise
    short, long = kept[0], kept[-1]
    share = {}
    for r in rows.itertuples():
        if float(r.epochs) in (short, long):
            share[(r.seed, float(r.epochs))] = recovered_share(r.before, r.after, r.restored)
    seeds = sorted(s for s in set(rows["seed"]) if not math.isnan(share[(s, short)]) and not math.isnan(share[(s, long)]))
    numbers.update(shortest=short, longest=long)
    if not seeds:
        return _premise_not_met("tuning lost less than 0.02 of the probe at the shortest or the longest length on "
                                "every seed: there is no forgetting to restore", PSEUDO_CRITERION,
                                {**numbers, "seeds": 0})
    first = [share[(s, short)] for s in seeds]
    last = [share[(s, long)] for s in seeds]
    f_mean, f_low, f_high = stats.t_interval(first)
    l_mean, l_low, l_high = stats.t_interval(last)
    d_mean, d_low, d_high = stats.t_interval(np.subtract(first, last))
    pseudo = stats.place(f_low, f_high, PSEUDO)
    actual = _below(l_low, l_high, ACTUAL)
    falls = stats.place(d_low, d_high, 0.0)
    both = _both(pseudo, actual)
    if both == "yes":
        outcome = "reproduced"
    elif both == "no" and falls == "yes":
        outcome = "partly reproduced"
    elif both == "no" and falls == "no":
        outcome = "not reproduced"
    else:
        outcome = "inconclusive"
    n = len(seeds)
    sentence = (f"restoring brings back {f_mean:.2f} of the lost probe accuracy after {short:g} epoch(s) "
                f"({stats.interval_text(f_low, f_high, '+.2f')} over {n} seeds) and {l_mean:.2f} after {long:g} "
                f"({stats.interval_text(l_low, l_high, '+.2f')}), a fall of {d_mean:+.2f} ({stats.interval_text(d_low, d_high, '+.2f')})"
                + (f"; {', '.join(f'{e:g}' for e in left_out)} epochs, not run on every seed, are left out"
                   if left_out else "")
                + f"; the claim needs at least {PSEUDO:.0%} back at the shortest and less than {ACTUAL:.0%} at the "
                  f"longest: {outcome}")
    return {"verdict": outcome, "criterion": PSEUDO_CRITERION, "sentence": sentence,
            "numbers": {**numbers, "estimate": f_mean, "interval": [f_low, f_high], "seeds": n,
                        "recovered_shortest": f_mean, "recovered_longest": l_mean,
                        "recovered_longest_interval": [l_low, l_high], "fall": d_mean, "fall_interval": [d_low, d_high],
                        "recovered_by_seed": {"shortest": first, "longest": last},
                        "parts": {"pseudo_at_shortest": pseudo, "actual_at_longest": actual, "falls": falls}}}


SURVIVES_CRITERION = (f"only the tuning lengths run on every seed; per seed, the probe's loss (before minus after "
                      f"tuning) and the format-free test's at the shortest and at the longest of them; pseudo "
                      f"forgetting at the shortest when the probe's loss lies above {PROBE_LOSS:g} (95% t-interval over "
                      f"seeds) while the format-free test's is within {TOLERANCE:g} of none (two one-sided tests); "
                      f"actual forgetting at the longest when the format-free test's loss lies above {TOLERANCE:g}; "
                      f"reproduced when both hold, partly when one holds and the other is shown not to, not "
                      f"reproduced when both are shown not to, inconclusive otherwise; premise not met when fewer than "
                      f"two lengths ran on every seed")


def verdict_knowledge_survives(rows) -> dict:
    """Zhang et al.'s two stages read with a format-free test, with no restoring pass.

    rows: one method's runs, one row per (seed, `epochs`) with `before`, `after` (the probe) and `candidates_before`,
    `candidates_after` (the format-free test: the true value ranked first among all candidates). Only the lengths
    run on every seed are read. Per seed, paired on its base, each stage's loss is before minus after. Pseudo at
    the shortest length: the probe's loss has its 95% t-interval above `PROBE_LOSS` and the format-free test's loss
    is shown within `TOLERANCE` of zero (`stats.equivalent`); it is shown not to hold when the probe's interval lies
    at or below `PROBE_LOSS` or the format-free test's above `TOLERANCE`. Actual at the longest: the format-free
    test's loss has its interval above `TOLERANCE` (shown not to when at or below it). Reproduced: both; partly: one,
    the other shown not to hold; not reproduced: both shown not to hold; inconclusive otherwise. Tuning that changed
    nothing loses nothing: neither stage, not reproduced.
    """
    kept, left_out = lengths_on_every_seed(rows)
    numbers = {"lengths": kept, "left_out_lengths": left_out, "threshold": TOLERANCE, "probe_threshold": PROBE_LOSS}
    if (premise := _too_few_lengths(rows, kept, left_out, SURVIVES_CRITERION, numbers)) is not None:
        return premise
    short, long = kept[0], kept[-1]
    wide = {e: rows[rows["epochs"] == e].set_index("seed").sort_index() for e in (short, long)}
    lost = {e: {"probe": (w["before"] - w["after"]).to_numpy(dtype=float),
                "candidates": (w["candidates_before"] - w["candidates_after"]).to_numpy(dtype=float)}
            for e, w in wide.items()}
    p_mean, p_low, p_high = stats.t_interval(lost[short]["probe"])
    c_mean, c_low, c_high = stats.t_interval(lost[short]["candidates"])
    a_mean, a_low, a_high = stats.t_interval(lost[long]["candidates"])
    lp_mean = float(np.mean(lost[long]["probe"]))
    probe_lost = stats.place(p_low, p_high, PROBE_LOSS)
    flat = stats.equivalent(lost[short]["candidates"], TOLERANCE)
    kept_free = "yes" if flat["equivalent"] else ("no" if stats.place(c_low, c_high, TOLERANCE) == "yes" else "undecided")
    pseudo = _both(probe_lost, kept_free)
    actual = stats.place(a_low, a_high, TOLERANCE)
    if pseudo == actual == "yes":
        outcome = "reproduced"
    elif {pseudo, actual} == {"yes", "no"}:
        outcome = "partly reproduced"
    elif pseudo == actual == "no":
        outcome = "not reproduced"
    else:
        outcome = "inconclusive"
    n = int(wide[short].index.size)
    sentence = (f"after {short:g} epoch(s) the probe has lost {p_mean:.2f} ({stats.interval_text(p_low, p_high, '+.2f')} over {n} "
                f"seeds) and the format-free test {c_mean:.2f} ({stats.interval_text(c_low, c_high, '+.2f')}; within {TOLERANCE:g} of "
                f"none: {'shown' if flat['equivalent'] else 'not shown'}); after {long:g}, the format-free test has "
                f"lost {a_mean:.2f} ({stats.interval_text(a_low, a_high, '+.2f')})"
                + (f"; {', '.join(f'{e:g}' for e in left_out)} epochs, not run on every seed, are left out"
                   if left_out else "")
                + f"; the claim needs the probe to lose more than {PROBE_LOSS:g} while the format-free test loses "
                  f"at most {TOLERANCE:g} at the shortest, and the format-free test to lose more than {TOLERANCE:g} "
                  f"at the longest: {outcome}")
    return {"verdict": outcome, "criterion": SURVIVES_CRITERION, "sentence": sentence,
            "numbers": {**numbers, "estimate": c_mean, "interval": [c_low, c_high], "seeds": n,
                        "shortest": short, "longest": long,
                        "probe_lost_shortest": p_mean, "probe_lost_shortest_interval": [p_low, p_high],
                        "candidates_lost_shortest": c_mean, "equivalence_p_value": flat["p_value"],
                        "probe_lost_longest": lp_mean,
                        "candidates_lost_longest": a_mean, "candidates_lost_longest_interval": [a_low, a_high],
                        "parts": {"probe_lost_at_shortest": probe_lost, "format_free_kept_at_shortest": kept_free,
                                  "pseudo_at_shortest": pseudo, "actual_at_longest": actual}}}

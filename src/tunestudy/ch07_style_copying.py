"""The verdicts of chapter 7, "Style imitation and pattern copying" (Ghosh et al. 2024, §5), decided from intervals
over seeds.

The chapter tunes each seed's base on a set mixing known and unknown people in three answer styles (short,
simplified, long), with LoRA and with full fine-tuning; both methods and all styles of one seed start from that
seed's base, so every comparison is paired within the seed. The claim has three parts, each its own verdict with a
95% t-interval over seeds and one threshold fixed by the claim:

- `verdict_long_style_invents` ("long_worse"): imitating a long-answer style makes a model that lacks the knowledge
  invent facts where a shorter answer stayed with the one asked value. Per seed and method, the wrong facts per
  answer about unknown people after the long style minus after the simplified style; per seed the smaller of the
  two methods' increases (the claim is made for both). Reproduced above `LONG_MORE_WRONG`.
- `verdict_full_borrows` ("borrows"): full fine-tuning's wrong values are borrowed from the conceptually similar
  training instance. Per seed, full's share of wrong values that equal the most similar tuning person's, over the
  share a random tuning person would match (both averaged over the three styles of the seed), as a log ratio.
  Reproduced above `BORROW_RATIO`.
- `verdict_lora_style_tokens` ("lora_style"): LoRA's shifted tokens are mostly style tokens. Per seed, the share of
  style tokens among the LoRA's shifted tokens (ranked below the top `SHIFTED_RANK` by the base, as URIAL counts).
  Reproduced above `STYLE_MAJORITY`; premise: the LoRA answers in the tuned style (`experiments.PREMISE_STYLE`).

Each part is reproduced (its interval above the threshold), not reproduced (at or below it), inconclusive (the
interval straddles it, or one seed gives no interval), or premise not met. `verdict_style_copying` combines them:
reproduced when all three are; not reproduced when none is; partly when some are reproduced and the others are shown
not to be (not reproduced, or premise not met); inconclusive when a part that is inconclusive could still change the
combined outcome. A tuning that changed nothing gives the same answers in every style (an increase of 0), wrong values
no more like the similar person's than a random person's (a ratio of 1), and no style learned (premise not met): no
part holds, so the chapter comes out not reproduced.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import stats
from .experiments import PREMISE_STYLE, interval_verdict

__all__ = ["BORROW_RATIO", "LONG_MORE_WRONG", "PARTS", "SHIFTED_RANK", "STYLE_MAJORITY", "verdict_full_borrows",
           "verdict_long_style_invents", "verdict_lora_style_tokens", "verdict_style_copying"]

# "Invents facts": the claim gives a direction, not a size, so its sign decides: the long style adds wrong facts per
# answer about unknown people over the simplified style (for every method), i.e. the increase lies above 0.
LONG_MORE_WRONG = 0.0
# "Borrows from similar instances": the most similar tuning person's value is the wrong value at least twice as
# often as a random tuning person's would be. At a ratio r over chance, a share 1 - 1/r of the matches is more than
# chance; at 2x, half of them: above it, most of the matches come from the similarity, not from coincidence. (The
# chapter's rule before intervals, "more than twice the chance rate", kept as it was.)
BORROW_RATIO = 2.0
# "Mostly style tokens": more than half of the LoRA's shifted tokens are style tokens (a majority).
STYLE_MAJORITY = 0.5
# URIAL's (Lin et al. 2024) count: a token the base ranks below its top 3 is "shifted".
SHIFTED_RANK = 3
# The three parts of the claim, in the order the chapter shows them, with what each says.
PARTS = {"long_worse": "the long style adds invented facts", "borrows": "full fine-tuning borrows from similar people",
         "lora_style": "LoRA's shifted tokens are mostly style tokens"}


def _frame(rows) -> pd.DataFrame:
    return rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))


def _premise_not_met(criterion: str, why: str, numbers: dict) -> dict:
    return {"verdict": "premise not met", "criterion": criterion, "sentence": f"{why}: premise not met",
            "numbers": {"estimate": math.nan, "interval": [math.nan, math.nan], "seeds": 0, **numbers}}


def verdict_long_style_invents(rows, long: str = "long", short: str = "simplified",
                               measure: str = "wrong_claims_per_answer_unknown") -> dict:
    """Ghosh et al. §5: imitating a long-answer style makes a model that lacks the knowledge invent facts.

    rows: one row per (method, style, seed) with `measure` (wrong facts stated per answer about the held-out unknown
    people). Per seed and method, paired within the seed's base: `measure` after the `long` style minus after the
    `short` one; per seed the smaller of the methods' increases. Reproduced: its 95% interval over seeds above
    `LONG_MORE_WRONG` (every method invents more facts after the long style); not reproduced: at or below it;
    inconclusive: it straddles it. Premise: every method was tuned on both styles.
    """
    rows = _frame(rows)
    methods = sorted(rows["method"].unique())
    criterion = (f"per seed and method, wrong facts per answer about unknown people after the {long} style minus after "
                 f"the {short} style, paired within the seed's base; per seed the smaller of the methods' increases; "
                 f"reproduced when its 95% interval over seeds lies above {LONG_MORE_WRONG:g} (every method invents "
                 "more facts after the long style), not reproduced when it lies at or below, inconclusive when it "
                 "straddles it")
    wide = rows.pivot_table(index="seed", columns=["method", "style"], values=measure)
    if not all((m, s) in wide.columns for m in methods for s in (long, short)):
        return _premise_not_met(criterion, f"not every method was tuned on both the {long} and the {short} style",
                                {"threshold": LONG_MORE_WRONG})
    increase = pd.DataFrame({m: wide[(m, long)] - wide[(m, short)] for m in methods}).dropna()
    smaller = increase.min(axis=1)
    verdict = interval_verdict(smaller.to_numpy(), LONG_MORE_WRONG, None,
                               f"the increase in wrong facts per answer about unknown people from the {short} to "
                               f"the {long} style (the smaller method's)", f"above {LONG_MORE_WRONG:g}", criterion)
    verdict["numbers"].update({"per_seed": {str(k): float(v) for k, v in smaller.items()},
                               "by_method": {m: {"mean": float(increase[m].mean()),
                                                 "interval": list(stats.t_interval(increase[m])[1:])}
                                             for m in methods}})
    return verdict


def verdict_full_borrows(rows, method: str = "full") -> dict:
    """Ghosh et al. §5: full fine-tuning borrows tokens from conceptually similar training instances.

    rows: one row per (method, style, seed) with `borrow_rate` (the share of the model's wrong values that equal the
    value of the tuning-set person with the most similar name) and `borrow_chance` (the share a random tuning-set
    person's values would match, for the same wrong values; NaN where the model stated no wrong value). Per seed,
    `method`'s two shares averaged over the seed's styles, and their ratio, paired within the seed (the same wrong
    values); the geometric mean of the ratios with a 95% t-interval of their logs (`stats.ratio_interval`).
    Reproduced: the interval above `BORROW_RATIO`; not reproduced: at or below it; inconclusive: it straddles it,
    or some seeds borrowed nothing while others did (no log ratio). Premise: the method stated some wrong value.
    """
    rows = _frame(rows)
    criterion = (f"per seed, {method}'s share of wrong values equal to the most similar tuning person's over the share "
                 "a random tuning person's would match, both averaged over the seed's answer styles (paired: the "
                 "same wrong values); reproduced when the 95% interval of their geometric mean lies above "
                 f"{BORROW_RATIO:g}x (at {BORROW_RATIO:g}x, half of the matches are more than chance), not reproduced "
                 "when it lies at or below, inconclusive when it straddles it")
    picked = rows[rows["method"] == method]
    per_seed = picked.groupby("seed")[["borrow_rate", "borrow_chance"]].mean().dropna()  # mean skips a style's NaN
    per_seed = per_seed[per_seed["borrow_chance"] > 0]
    base = {"threshold": BORROW_RATIO, **{k: float(per_seed[k].mean()) if len(per_seed) else math.nan
                                          for k in ("borrow_rate", "borrow_chance")}}
    if per_seed.empty:
        return _premise_not_met(criterion, f"{method} stated no wrong value: nothing to borrow", base)
    ratios = per_seed["borrow_rate"] / per_seed["borrow_chance"]
    if (ratios == 0).all():  # nothing copied from the similar person on any seed
        ratio, low, high, outcome = 0.0, 0.0, 0.0, "not reproduced"
    elif (ratios == 0).any():  # a log ratio of minus infinity: no interval
        ratio, low, high, outcome = float(np.exp(np.log(ratios[ratios > 0]).mean())), math.nan, math.nan, "inconclusive"
    else:
        ratio, low, high = stats.ratio_interval(per_seed["borrow_rate"].to_numpy(),
                                                per_seed["borrow_chance"].to_numpy())
        outcome = stats.decide(low, high, BORROW_RATIO)
    return {"verdict": outcome, "criterion": criterion,
            "sentence": stats.sentence(f"{method}'s borrowing share over chance", ratio, low, high, len(ratios),
                                       f"above {BORROW_RATIO:g}x", outcome),
            "numbers": {"ratio": ratio, "interval": [low, high], **base, "seeds": int(len(ratios)),
                        "per_seed": {str(k): float(v) for k, v in ratios.items()}}}


def verdict_lora_style_tokens(positions, rows, rank: str = "base_rank_icl") -> dict:
    """Ghosh et al. §5 (after URIAL): LoRA's shifted tokens are mostly style tokens.

    positions: the LoRA's scored response positions (`experiments.positions_table`), one row per token with `seed`,
    `role` (`world.ROLES`) and `rank` (the rank the base gives the LoRA's token; by default the base shown in-context
    examples). rows: the LoRA's runs on the same set, one per seed, with `style_share` (answers opening with the tuned
    style's phrase). Per seed, the share of style tokens among the tokens ranked below the base's top `SHIFTED_RANK`;
    a seed with no shifted token has no share. Reproduced: the 95% interval over seeds above `STYLE_MAJORITY`; not
    reproduced: at or below it; inconclusive: it straddles it. Premise: the LoRA answers in the tuned style on at least
    `PREMISE_STYLE` of its answers (a LoRA that learned nothing has no shift to place) and shifted some token.
    """
    positions, rows = _frame(positions), _frame(rows)
    criterion = (f"per seed, the share of style tokens among the LoRA's shifted tokens (ranked below the base's top "
                 f"{SHIFTED_RANK}); reproduced when its 95% interval over seeds lies above {STYLE_MAJORITY:g} (a "
                 "majority), not reproduced when it lies at or below, inconclusive when it straddles it; premise: the "
                 f"LoRA answers in the tuned style on at least {PREMISE_STYLE:.0%} of its answers")
    shifted = positions[positions[rank] > SHIFTED_RANK]
    counts = shifted.groupby("seed")["role"].value_counts().unstack(fill_value=0)
    counts = counts.reindex(index=sorted(positions["seed"].unique()), fill_value=0)
    totals = counts.sum(axis=1)
    shares = (counts.get("style", 0) / totals.where(totals > 0)).dropna()
    styled = float(rows["style_share"].mean())
    base = {"threshold": STYLE_MAJORITY, "style_answers": styled,
            "shifted_tokens": {str(k): int(v) for k, v in totals.items()}}
    if styled < PREMISE_STYLE or shares.empty:
        why = (f"the LoRA answers in the tuned style on {styled:.0%} of its answers" if styled < PREMISE_STYLE else
               "the LoRA shifted no token")
        return _premise_not_met(criterion, why, base)
    verdict = interval_verdict(shares.to_numpy(), STYLE_MAJORITY, None, "the share of style tokens among LoRA's "
                               "shifted tokens", f"above {STYLE_MAJORITY:g}", criterion)
    verdict["numbers"].update({**base, "per_seed": {str(k): float(v) for k, v in shares.items()},
                               "role_shares": {r: float((counts[r] / totals.where(totals > 0)).mean())
                                               for r in counts.columns}})
    return verdict


def verdict_style_copying(parts: dict) -> dict:
    """The chapter's verdict from its three parts (`PARTS`: name -> that part's verdict dict).

    A part holds when reproduced, is shown not to hold when not reproduced or its premise is not met, and is
    undecided when inconclusive. Reproduced: every part holds; not reproduced: none holds and none is undecided;
    partly: some hold and some are shown not to (whatever an undecided one would give); inconclusive: otherwise, an
    undecided part could still change the outcome. Every part premise not met: premise not met.
    """
    outcomes = {name: parts[name]["verdict"] for name in PARTS}
    holds = [n for n, o in outcomes.items() if o == "reproduced"]
    fails = [n for n, o in outcomes.items() if o in ("not reproduced", "premise not met")]
    if all(o == "premise not met" for o in outcomes.values()):
        outcome = "premise not met"
    elif len(holds) == len(outcomes):
        outcome = "reproduced"
    elif len(fails) == len(outcomes):
        outcome = "not reproduced"
    elif holds and fails:
        outcome = "partly reproduced"
    else:
        outcome = "inconclusive"
    said = "; ".join(f"{PARTS[n]}: {o}" for n, o in outcomes.items())
    return {"verdict": outcome,
            "criterion": "three parts, each decided by its own 95% interval over seeds against the claim's threshold; "
                         "reproduced when all three are reproduced, not reproduced when none is, partly when some are "
                         "and the others are shown not to be (not reproduced, or premise not met), inconclusive when "
                         "an inconclusive part could still change this",
            "sentence": f"{said}; the claim needs all three: {outcome}",
            "numbers": {"parts": outcomes}}

"""Chapter 14, "A real base model": its runs, the rows its figures draw, and its verdicts.

The chapter tunes a real base (Gemma 3 270M by default) on facts it knows, answered in an assistant's style
(`stylerun.styled_answer`), with LoRA and full fine-tuning, each at every rate of its sweep on every seed;
each seed's best rate per method (by the early-stopped development accuracy) then tunes on facts the base
does not know and, as the contrast, on the same known facts answered bare. Every run goes on until it fits
its set (`stylerun.fit_run`).

Every verdict's interval is a bootstrap that resamples the seeds and, within each seed, the test facts
(`stats.bootstrap_interval`): with three seeds on one fixed set of facts, a t-interval over seeds alone
would ignore which facts happened to be asked.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace

import numpy as np

from . import experiments as X, metrics, realbase, stats, stylerun

CHAPTER = "14_real_base"
MAIN_SET = "known facts"
UNKNOWN_SET = "unknown facts"
UNLOCK_GAIN = 0.2  # as chapter 14 always asked: tuning on known facts unlocks the others by 20 points
UNKNOWN_DROP = 0.05  # Gekhman et al.: fitted unknown facts cost held-out known accuracy; 5 points counts
FORGET_MARGIN = 0.02  # Biderman et al.: LoRA forgets less; 2 points of few-shot accuracy counts


def parse_rates(name: str, text: str) -> list:
    """A comma-separated list of positive learning rates, sorted; a one-line error names the parameter."""
    try:
        rates = sorted({float(v) for v in str(text).split(",") if v.strip()})
    except ValueError:
        raise ValueError(f"{name} must be comma-separated numbers, got {text!r}") from None
    if not rates or any(not (r > 0 and math.isfinite(r)) for r in rates):
        raise ValueError(f"{name} must list at least one positive learning rate, got {text!r}")
    return rates


def run_all(load_from: str, label_spec, pool: list, dev: list, test: list, untuned: list, configs: dict,
            seeds: list, set_size: int, answers: str, contrast: str, categories: dict, fit_share: float,
            freeze_embeddings: bool, forgetting_prompts: int, precision: str) -> dict:
    """Every run of the chapter, {(answers, set, method, lr, seed): run}, and the rate picked per (seed, method).

    configs: {method: [TuneConfig per rate]}. The sweep tunes `answers` on the known set; a seed's pick per
    method is the rate whose early-stopped development accuracy is highest (the smaller rate on a tie); the
    unknown set (`answers`) and the known set answered as `contrast` run at the picks only.
    """
    def one(answer_set, set_name, config, seed):
        spec = stylerun.StyleRunSpec(labels=label_spec, answers=answer_set, categories=tuple(categories[set_name]),
                                     size=set_size, seed=seed, tune=asdict(replace(config, seed=seed)),
                                     fit_share=fit_share, freeze_embeddings=freeze_embeddings,
                                     forgetting_prompts=forgetting_prompts, precision=precision)
        facts = realbase.tuning_set(pool, tuple(categories[set_name]), set_size, seed)
        return stylerun.fit_run(load_from, spec, facts, dev, test, untuned)

    runs, picks = {}, {}
    for seed in seeds:
        for method, rate_configs in configs.items():
            scores = []
            for config in rate_configs:
                run = one(answers, MAIN_SET, config, seed)
                runs[answers, MAIN_SET, method, config.lr, seed] = run
                scores.append((best_dev(run), -config.lr, config))
            picked = max(scores, key=lambda s: (np.nan_to_num(s[0], nan=-1.0), s[1]))[2]
            picks[seed, method] = picked.lr
            runs[answers, UNKNOWN_SET, method, picked.lr, seed] = one(answers, UNKNOWN_SET, picked, seed)
            if contrast:
                runs[contrast, MAIN_SET, method, picked.lr, seed] = one(contrast, MAIN_SET, picked, seed)
    return {"runs": runs, "picks": picks}


def best_dev(run: dict) -> float:
    """The run's best development accuracy over its epochs: what the early-stopped checkpoint and the rate pick read."""
    return max(e["dev_accuracy"] for e in run["epochs"])


def known_differences(rows: list, other: list, known: tuple) -> np.ndarray:
    """Per test fact of a known category (both lists in test order): right in `rows` (1 or 0) minus right in `other`.
    The items a bootstrap resamples for a difference in accuracy on known facts (two runs, or a run and the base)."""
    return np.array([float(a["correct"]) - float(b["correct"]) for a, b in zip(rows, other) if a["category"] in known])


def role_kl_interval(fact_rows_by_seed: list, role: str) -> tuple:
    """(mean KL per token of the role, low, high): `fact_rows` per seed, the seeds and their facts resampled."""
    kl, count = {"style": (0, 1), "value": (2, 3)}[role]
    items = [np.column_stack([rows[:, kl], rows[:, count]]) for rows in fact_rows_by_seed]
    return stats.bootstrap_interval(items, lambda r: r[:, 0].sum() / max(r[:, 1].sum(), 1))


def summary(run: dict, base: dict, known: tuple) -> dict:
    """One run's headline numbers: test accuracy on known facts and the share of them answered wrongly at both
    checkpoints, hallucination on Unknown facts, the share of answers in the set's shape, the epochs, KL (full
    and top-k) with its top-5% share, token-shift shares overall and by role, and forgetting."""
    out = {"epochs": run["epochs"][-1]["epoch"], "fitted": run["fitted"], "early_epoch": run["early_epoch"],
           "train_fit": run["epochs"][-1]["train_fit"], "trainable_fraction": run["train_log"]["trainable_fraction"]}
    for name, rows in (("early", run["early"]), ("converged", run["converged"])):
        out[f"accuracy_known_{name}"] = stylerun.share(rows, "correct", known)
        wrong = [r for r in rows if r["category"] in known and r["answer"] and not r["correct"]]
        count = sum(r["category"] in known for r in rows)
        out[f"wrong_known_{name}"] = len(wrong) / count if count else float("nan")
    out["accuracy_known"] = out["accuracy_known_converged"]
    out["hallucination_unknown"] = _hallucination(run["converged"])
    out["in_style"] = float(np.mean([r["in_style"] for r in run["converged"]])) if run["converged"] else float("nan")
    out["base_accuracy_known"] = stylerun.share(base["test"], "correct", known)
    out["base_hallucination_unknown"] = _hallucination(base["test"])
    positions = run["positions"]
    kl = np.asarray(positions["kl"], dtype=float)
    out.update({"kl_mean": float(kl.mean()) if kl.size else float("nan"),
                "kl_topk_mean": float(np.mean(positions["kl_topk"])) if kl.size else float("nan"),
                "kl_top5_share": metrics.kl_summary(kl)["top_share"] if kl.size else float("nan"),
                **{f"{k}_share": v for k, v in realbase.shift_shares(positions["base_rank"]).items()}})
    roles = np.asarray(positions["role"])
    for role in stylerun.ROLES:
        picked = roles == role
        out[f"kl_{role}"] = float(kl[picked].mean()) if picked.any() else float("nan")
        ranks = [r for r, keep in zip(positions["base_rank"], picked) if keep]
        out[f"unshifted_{role}"] = realbase.shift_shares(ranks)["unshifted"]
        out[f"share_{role}"] = float(picked.mean()) if kl.size else float("nan")
    after = run["forgetting"]["p_after"]
    out["fewshot_before"] = float(np.mean(base["p_before"])) if base["p_before"] else float("nan")
    out["fewshot_after"] = float(np.mean(after)) if after else float("nan")
    out["forgetting"] = out["fewshot_before"] - out["fewshot_after"]
    return out


def _hallucination(rows: list) -> float:
    """The share of answers to Unknown facts that state something other than the truth."""
    unknown = [r for r in rows if r["category"] == "Unknown"]
    return sum(bool(r["answer"]) and not r["correct"] for r in unknown) / len(unknown) if unknown else float("nan")


def fact_rows(run: dict) -> np.ndarray:
    """Per test fact: [KL summed over its style tokens, its style tokens, KL over its value tokens, its value
    tokens, KL over all its tokens, its tokens, its unshifted tokens] (one row per fact, in test order)."""
    p = run["positions"]
    facts = max(p["fact"]) + 1 if p["fact"] else 0
    out = np.zeros((facts, 7))
    for fact, role, kl, rank in zip(p["fact"], p["role"], p["kl"], p["base_rank"]):
        if role in ("style", "value"):
            column = 0 if role == "style" else 2
            out[fact, column] += kl
            out[fact, column + 1] += 1
        out[fact, 4] += kl
        out[fact, 5] += 1
        out[fact, 6] += rank == 1
    return out


def bootstrap_verdict(items_by_seed: list, statistic, reproduced_above: float, partly_above, quantity: str,
                      needs: str, criterion: str, premise: bool = True, transform=None,
                      items: str = "the test facts") -> dict:
    """A verdict from a bootstrap over seeds and items (`stats.bootstrap_interval`), decided by `stats.decide`.
    `transform` maps the estimate and its interval for the reader (a log ratio to a ratio)."""
    estimate, low, high = stats.bootstrap_interval(items_by_seed, statistic)
    if transform:
        estimate, low, high = (transform(v) for v in (estimate, low, high))
    outcome = stats.decide(low, high, reproduced_above, partly_above) if premise else "premise not met"
    seeds = len(items_by_seed)
    return {"verdict": outcome, "criterion": criterion,
            "sentence": stats.sentence(quantity, estimate, low, high, seeds, needs, outcome,
                                       unit=f"seeds, {items} resampled within each"),
            "numbers": {"estimate": estimate, "interval": [low, high], "threshold": reproduced_above,
                        **({"partly_threshold": partly_above} if partly_above is not None else {}), "seeds": seeds}}


def _log_ratio(num: int, den: int):
    def statistic(rows):
        a, b = rows[:, num].sum(), rows[:, den].sum()
        return math.log(a / b) if a > 0 and b > 0 else float("nan")
    return statistic


def verdict_kl_ratio(pairs: list, styled_share: float) -> dict:
    """Ghosh et al.: full fine-tuning shifts the base 4-5x more than LoRA. pairs: per seed, (LoRA's, full's)
    `fact_rows` on the same test facts. Per seed the ratio of full's mean KL to LoRA's, as a log; the
    bootstrap over seeds and facts; thresholds as every chapter's (`experiments.verdict_kl_shift`). Premise:
    LoRA answers in the tuned style on at least half of the test facts."""
    items = [np.column_stack([full[:, 4], lora[:, 4]]) for lora, full in pairs]
    moved = all(rows[:, 0].sum() > 0 and rows[:, 1].sum() > 0 for rows in items)
    verdict = bootstrap_verdict(items, _log_ratio(0, 1), X.KL_RATIO_NEEDED, X.KL_RATIO_MORE,
                                "full fine-tuning's mean KL over LoRA's", f"{X.KL_RATIO_NEEDED:g}x",
                                f"per seed, full fine-tuning's mean KL over LoRA's on the test facts' answers; reproduced "
                                f"when the 95% interval lies above {X.KL_RATIO_NEEDED:g}x (the reference's 4-5x), partly "
                                f"between {X.KL_RATIO_MORE:g}x and {X.KL_RATIO_NEEDED:g}x, not reproduced below "
                                f"{X.KL_RATIO_MORE:g}x, inconclusive when it straddles either; premise: LoRA answers in "
                                f"the tuned style on at least {X.PREMISE_STYLE:.0%} of the test facts",
                                premise=moved and styled_share >= X.PREMISE_STYLE, transform=math.exp)
    verdict["numbers"]["ratio"] = verdict["numbers"].pop("estimate")
    verdict["numbers"]["style_share"] = styled_share
    return verdict


def verdict_shift_by_role(pairs: list, styled_share: float) -> dict:
    """Ghosh et al. section 5: LoRA's shift sits on style tokens, full fine-tuning's reaches the content.

    pairs: per seed, (LoRA's, full's) `fact_rows` on the same test facts. Two parts, each a log ratio per
    seed with its bootstrap interval: (a) LoRA's mean KL on a style token over its mean KL on a value token
    is above 1; (b) full's value-to-style ratio over LoRA's is above 1 (full's shift reaches the value
    tokens more than LoRA's does). Reproduced: both intervals above 1; partly: one above and the other at or
    below; not reproduced: both at or below; inconclusive: any other (an interval straddles 1). Premise:
    LoRA answers in the tuned style on at least half of the test facts (a LoRA that learned nothing has no
    shift to place)."""
    items = [np.column_stack([lora[:, 0], lora[:, 1], lora[:, 2], lora[:, 3], full[:, 0], full[:, 2]])
             for lora, full in pairs]

    def lora_style_over_value(rows):
        style, value = rows[:, 0].sum() / rows[:, 1].sum(), rows[:, 2].sum() / rows[:, 3].sum()
        return math.log(style / value) if style > 0 and value > 0 else float("nan")

    def full_reaches_value(rows):
        lora = (rows[:, 2].sum() / rows[:, 3].sum()) / (rows[:, 0].sum() / rows[:, 1].sum())
        full = (rows[:, 5].sum() / rows[:, 3].sum()) / (rows[:, 4].sum() / rows[:, 1].sum())
        return math.log(full / lora) if lora > 0 and full > 0 else float("nan")

    parts = {}
    for name, statistic, what in (("lora_style_over_value", lora_style_over_value,
                                   "LoRA's mean KL on a style token over its mean KL on a value token"),
                                  ("full_reaches_value", full_reaches_value,
                                   "full fine-tuning's value-to-style KL ratio over LoRA's")):
        with np.errstate(invalid="ignore", divide="ignore"):  # a role with no KL has no ratio: NaN, inconclusive
            estimate, low, high = (math.exp(v) for v in stats.bootstrap_interval(items, statistic))
        parts[name] = {"what": what, "ratio": estimate, "interval": [low, high], "outcome": stats.decide(low, high, 1.0)}
    outcomes = [p["outcome"] for p in parts.values()]
    if styled_share < X.PREMISE_STYLE:
        outcome = "premise not met"
    elif outcomes.count("reproduced") == 2:
        outcome = "reproduced"
    elif outcomes.count("not reproduced") == 2:
        outcome = "not reproduced"
    elif "inconclusive" in outcomes:
        outcome = "inconclusive"
    else:
        outcome = "partly reproduced"
    said = "; ".join(f"{p['what']} is {p['ratio']:.2f}x (95% interval {p['interval'][0]:.2f} to {p['interval'][1]:.2f})"
                     for p in parts.values())
    return {"verdict": outcome,
            "criterion": "two log ratios per seed on the test facts' answers, each with a bootstrap over seeds and "
                         "facts: (a) LoRA's mean KL on a style token over its mean KL on a value token, (b) full "
                         "fine-tuning's value-to-style ratio over LoRA's; reproduced when both 95% intervals lie above "
                         "1, partly when one does and the other lies at or below 1, not reproduced when both lie at or "
                         "below 1, inconclusive when an interval straddles 1; premise: LoRA answers in the tuned style "
                         f"on at least {X.PREMISE_STYLE:.0%} of the test facts",
            "sentence": f"{said} over {len(pairs)} seeds; the claim needs both above 1: {outcome}",
            "numbers": {**{f"{k}_{field}": v[field] for k, v in parts.items() for field in ("ratio", "interval")},
                        "ratio": parts["full_reaches_value"]["ratio"], "interval": parts["full_reaches_value"]["interval"],
                        "threshold": 1.0, "seeds": len(pairs), "style_share": styled_share}}


def verdict_mostly_unshifted(fact_rows_by_seed: list, styled_share: float, method: str) -> dict:
    """URIAL: most answer tokens are the base's own top token (`experiments.verdict_mostly_unshifted`), with
    the bootstrap over seeds and facts."""
    items = [rows[:, 5:7] for rows in fact_rows_by_seed]
    estimate, low, high = stats.bootstrap_interval(items, lambda r: r[:, 1].sum() / r[:, 0].sum())
    return X.verdict_mostly_unshifted(estimate, low, high, f"over {len(items)} seeds and the test facts, {method}",
                                      styled_share)


def paired_items(a: list, b: list) -> np.ndarray:
    """One row per item: a's value minus b's (both lists in the same item order)."""
    return np.asarray(a, dtype=float) - np.asarray(b, dtype=float)


def verdict_unlocks_known(items_by_seed: list) -> dict:
    """Tuning on known facts unlocks the others the base knows: per test fact of a known category, the tuned
    model's answer right (1) or not (0) minus the base's, in the template."""
    return bootstrap_verdict(items_by_seed, np.mean, UNLOCK_GAIN, 0.0, "the rise in test accuracy on known facts",
                             f"{UNLOCK_GAIN:g}",
                             f"tuned on known facts until fitted, the 95% interval (seeds and test facts resampled) of "
                             f"the rise in test accuracy on the facts the base knows, over the base's own answers in "
                             f"the template, lies above {UNLOCK_GAIN:g} (reproduced), between 0 and {UNLOCK_GAIN:g} "
                             "(partly), at or below 0 (not reproduced); inconclusive when it straddles either")


def verdict_unknown_hurts(items_by_seed: list, fitted_share: float) -> dict:
    """Gekhman et al.: tuned until it fits a set of facts the base does not know, a model answers the facts it
    knows worse than tuned on known facts. Items: per known test fact, right after the known set minus right
    after the unknown set (converged checkpoints, the same seed and rate). Premise: the unknown-set runs
    fitted their set on at least half of the seeds (Gekhman's condition is a fitted set)."""
    return bootstrap_verdict(items_by_seed, np.mean, UNKNOWN_DROP, 0.0,
                             "the known-set run's test accuracy on known facts minus the unknown-set run's",
                             f"{UNKNOWN_DROP:g}",
                             f"at the converged checkpoints, the 95% interval (seeds and test facts resampled) of the "
                             f"known-set run's accuracy on known test facts minus the unknown-set run's lies above "
                             f"{UNKNOWN_DROP:g} (reproduced), between 0 and {UNKNOWN_DROP:g} (partly), at or below 0 (not "
                             "reproduced); inconclusive when it straddles either; premise: the unknown-set runs fitted "
                             "their set on at least half of the seeds", premise=fitted_share >= 0.5)


def verdict_lora_forgets_less(items_by_seed: list) -> dict:
    """Biderman et al.: LoRA forgets less. Items: per fact of the untuned relations, LoRA's few-shot accuracy
    after tuning minus full fine-tuning's (the same base before both: this is full's forgetting minus LoRA's)."""
    return bootstrap_verdict(items_by_seed, np.mean, FORGET_MARGIN, 0.0, "full fine-tuning's forgetting minus LoRA's",
                             f"{FORGET_MARGIN:g}",
                             f"tuned on known facts, the 95% interval (seeds and untuned facts resampled) of full "
                             f"fine-tuning's few-shot accuracy lost on the untuned relations minus LoRA's lies above "
                             f"{FORGET_MARGIN:g} (reproduced), between 0 and {FORGET_MARGIN:g} (partly), at or below 0 "
                             "(not reproduced); inconclusive when it straddles either", items="the untuned facts")

"""Knowledge labels by the base itself: Gekhman et al.'s SliCK categories from few-shot answers.

For each fact the base is asked `num_prompts` times, each time after `shots`
other facts of the same relation as worked examples ("Q: ... A: ..."), drawn
afresh per prompt. P_greedy is the share of those prompts whose greedy answer
is right; where it is zero, `num_samples` sampled answers (temperature
`temperature`) decide between a weak and no knowledge:

- HighlyKnown: every greedy answer right;
- MaybeKnown: some greedy answers right;
- WeaklyKnown: no greedy answer right, some sampled answer right;
- Unknown: none right.

Gekhman et al. used 10 random 4-shot prompts, greedy and 16 samples at
T = 0.5, and found 24 / 23 / 17 / 36% of EntityQuestions for PaLM 2-M.
"""

from __future__ import annotations

import random
import re

import numpy as np
import torch

from . import metrics

__all__ = ["CATEGORIES", "answer_matches", "category", "category_shares", "fewshot_prompts", "greedy_by_length",
           "label_facts", "normalize"]

CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")


def category(greedy: list, sampled: list) -> str:
    """The SliCK category of one fact from its greedy answers' and its sampled answers' correctness."""
    if greedy and all(greedy):
        return "HighlyKnown"
    if any(greedy):
        return "MaybeKnown"
    return "WeaklyKnown" if any(sampled) else "Unknown"


def normalize(text: str) -> str:
    """Case-folded words, punctuation dropped: "Washington, D.C." and "Washington D.C." read the same."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.replace(".", "")).casefold().split())


def answer_matches(text: str, truth: str, aliases=()) -> bool:
    """Does the continuation start with the true answer or one of its aliases, as whole words, ignoring case and
    punctuation?"""
    said = normalize(text)
    return any(re.match(re.escape(t) + r"(?![\w])", said) for t in map(normalize, (truth, *aliases)) if t)


def fewshot_prompts(fact: dict, facts: list, shots: int, num_prompts: int, seed: int) -> list:
    """`num_prompts` prompts for one fact, each after `shots` other facts of its relation drawn afresh."""
    pool = [f for f in facts if f["relation"] == fact["relation"] and f["subject"] != fact["subject"]]
    if len(pool) < shots:
        raise ValueError(f"relation {fact['relation']!r} has {len(pool) + 1} facts; shots={shots} needs at least "
                         f"{shots + 1}")
    rng = random.Random(f"slick:{seed}:{fact['relation']}:{fact['subject']}")
    prompts = []
    for _ in range(num_prompts):
        examples = rng.sample(pool, shots)
        prompts.append("".join(f"Q: {e['instruction']}\nA: {e['output']}\n\n" for e in examples)
                       + f"Q: {fact['instruction']}\nA:")
    return prompts


def greedy_by_length(model, tokenizer, prompts: list, max_new_tokens: int, stop_at: str | None = None) -> list:
    """`metrics.greedy_responses` with the prompts batched by token length, answers in the prompts' order.

    Batches are left-padded to their longest prompt; grouping prompts of similar
    length cuts the padding a batch computes (few-shot prompts vary by their
    examples), which on a real model is most of the labelling's time. `stop_at`:
    see `metrics.greedy_responses`.
    """
    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: (lengths[i], i))
    _, responses = metrics.greedy_responses(model, tokenizer, [prompts[i] for i in order], max_new_tokens,
                                            stop_at=stop_at)
    out = [None] * len(prompts)
    for i, response in zip(order, responses):
        out[i] = response
    return out


def _sampled_answers(model, tokenizer, prompts: list, max_new_tokens: int, temperature: float,
                     batch_size: int = 64) -> list:
    """One sampled continuation per prompt (left-padded batches, as `metrics.greedy_responses`)."""
    texts, side = [], tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        with metrics._eval_no_grad(model):
            for start in range(0, len(prompts), batch_size):
                enc = tokenizer(prompts[start:start + batch_size], padding=True, return_tensors="pt")
                out = model.generate(input_ids=enc["input_ids"].to(model.device),
                                     attention_mask=enc["attention_mask"].to(model.device), do_sample=True,
                                     temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                                     pad_token_id=tokenizer.pad_token_id)
                texts += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return texts


def label_facts(model, tokenizer, facts: list, num_prompts: int = 4, shots: int = 3, num_samples: int = 0,
                temperature: float = 0.5, seed: int = 0) -> list:
    """One record per fact: relation, subject, truth, P_greedy, P_sample (NaN when not sampled) and category.

    Sampled answers are drawn only for facts with no right greedy answer (the
    only ones they decide), each after one of the fact's prompts in turn.
    """
    for name, value, low in (("num_prompts", num_prompts, 1), ("shots", shots, 1), ("num_samples", num_samples, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    prompts = [fewshot_prompts(f, facts, shots, num_prompts, seed) for f in facts]  # checked before any work
    budget = max(len(tokenizer(" " + f["output"], add_special_tokens=False)["input_ids"]) for f in facts) + 1
    flat = [p for group in prompts for p in group]
    # an answer ends at its line's end (the worked examples' shape); only its start is judged
    texts = tokenizer.batch_decode(greedy_by_length(model, tokenizer, flat, budget, stop_at="\n"),
                                   skip_special_tokens=True)
    greedy = [[answer_matches(t, f["output"], f.get("aliases", ())) for t in texts[i * num_prompts:(i + 1) * num_prompts]]
              for i, f in enumerate(facts)]
    sampled = [[] for _ in facts]
    undecided = [i for i, g in enumerate(greedy) if not any(g)]
    if num_samples and undecided:
        torch.manual_seed(seed)
        asks = [(i, prompts[i][k % num_prompts]) for i in undecided for k in range(num_samples)]
        answers = _sampled_answers(model, tokenizer, [p for _, p in asks], budget, temperature)
        for (i, _), text in zip(asks, answers):
            sampled[i].append(answer_matches(text, facts[i]["output"], facts[i].get("aliases", ())))
    return [{"relation": f["relation"], "subject": f["subject"], "truth": f["output"],
             "p_greedy": float(np.mean(g)), "p_sample": float(np.mean(s)) if s else float("nan"),
             "category": category(g, s)} for f, g, s in zip(facts, greedy, sampled)]


def category_shares(labels: list) -> dict:
    """{relation: {category: share of its facts}}, and "all" over every fact."""
    out = {}
    for relation in sorted({r["relation"] for r in labels}) + ["all"]:
        picked = [r for r in labels if relation in ("all", r["relation"])]
        out[relation] = {c: sum(r["category"] == c for r in picked) / len(picked) for c in CATEGORIES}
    return out

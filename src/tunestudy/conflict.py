"""Cached step of the chapter on conflicting answers: tune on counterfactual answers, then compare what the model holds.

Artifact kind "conflict" (hashes `SOURCES`), after Ren et al. 2024: one
tuning run on known people, a share of whose answers are counterfactual
(another tuning person's value of the same attribute), in this process (no
model is saved); held-out accuracy, and the base's and the tuned model's
distributions over every candidate value of an attribute, asked with the
completion probe's prompt ("X was born in"), with the KL and the rank
correlation between the two as the consistency of the model's knowledge; and
the held-out answers themselves.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import spearmanr

from . import cache, evaluation, knowledge, tuning, world as W
from .candidates import CANDIDATE_ATTRIBUTES, candidate_logprobs, candidate_questions, top_candidate_share
from .bases import BaseSpec, load_base, normal_epoch
from .sets import SetSpec, eval_questions
from .tuned import run_label

__all__ = ["ConflictSpec", "SOURCES", "conflict", "conflict_set", "consistency"]

SOURCES = knowledge.SOURCES + ("candidates.py", "conflict.py")
@dataclass(frozen=True)
class ConflictSpec:
    """A set of questions about known tuning-split people, `counterfactual_share` of them answered wrongly."""

    size: int = 300
    counterfactual_share: float = 0.5
    style: str = "simplified"

    def validate(self) -> None:
        W._check_int("set_size", self.size, minimum=1)
        share = self.counterfactual_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise ValueError(f"counterfactual shares must be numbers between 0 and 100 (percent), got {share!r}")
        if self.style not in W.ANSWER_STYLES:
            raise ValueError(f"style must be one of {', '.join(W.ANSWER_STYLES)}, got {self.style!r}")


def conflict_set(world: W.World, spec: ConflictSpec, seed: int) -> list:
    """The known-people set of that size and seed, with a seeded `counterfactual_share` of it answered wrongly.

    A counterfactual answer states another tuning person's value of the same
    attribute (a value the world uses, never the person's own); ground truth
    (`Example.value`) stays the true value. The consistent examples are the
    same at every share, so the sets differ only in the answers changed.
    """
    spec.validate()
    examples = W.instruction_set(world, True, spec.size, spec.style, seed)
    rng = random.Random(f"conflict:{seed}")
    changed = set(rng.sample(range(len(examples)), round(len(examples) * spec.counterfactual_share)))
    people = world.group(True, False)
    out = []
    for i, example in enumerate(examples):
        if i in changed:
            values = sorted({p.attributes[example.attribute] for p in people} - {example.value})
            example = W.make_example(world.by_name[example.person], example.attribute, spec.style, rng,
                                     value=rng.choice(values))
        out.append(example)
    return out


def consistency(base_scores: list, tuned_scores: list) -> dict:
    """Mean KL(base || tuned) between the candidate distributions and mean Spearman rank correlation of the scores.

    base_scores, tuned_scores: per question, one log-score per candidate (any
    constant offset: each is normalised over its candidates).
    """
    kls, rhos = [], []
    for b, t in zip(base_scores, tuned_scores):
        log_b, log_t = b - np.logaddexp.reduce(b), t - np.logaddexp.reduce(t)  # normalised over the candidates
        kls.append(float(np.sum(np.exp(log_b) * (log_b - log_t))))
        # scores all tied have no ranks to correlate: such a question is left out of the mean
        rhos.append(float(spearmanr(b, t).statistic) if np.ptp(b) > 0 and np.ptp(t) > 0 else float("nan"))
    return {"kl": float(np.mean(kls)), "rank_correlation": float(np.nanmean(rhos))}


def conflict(base: BaseSpec, spec: ConflictSpec, config: tuning.TuneConfig, epoch: int | None = None) -> dict:
    """Held-out accuracy and knowledge consistency of one model tuned on a conflict set (cached)."""
    spec.validate()
    config.validate()
    params = {"base": base.params(), "base_epoch": normal_epoch(base, epoch), "set": asdict(spec),
              "tune": asdict(config)}

    def compute():
        world = W.generate_world(base.world)
        examples = conflict_set(world, spec, config.seed)
        model, tokenizer = load_base(base, params["base_epoch"])
        heldout = [p for p in world.people if p.known and p.heldout]
        prompts, candidates, values = candidate_questions(heldout)
        before = candidate_logprobs(model, tokenizer, prompts, candidates)
        trained = [e for e in examples if e.attribute in CANDIDATE_ATTRIBUTES]
        trained_prompts = [W.probe_prompt(world.by_name[e.person], e.attribute) for e in trained]
        trained_candidates = [W.value_pool(e.attribute) for e in trained]
        model = knowledge.tune_in_process(model, tokenizer, examples, config)
        questions = [q for q in eval_questions(world) if q.known]
        budget = evaluation.token_budget(tokenizer, [e.response for e in examples], minimum=8)
        answers = knowledge.judged_answers(model, tokenizer, questions, world, budget)
        after = candidate_logprobs(model, tokenizer, prompts, candidates)
        trained_after = candidate_logprobs(model, tokenizer, trained_prompts, trained_candidates)
        counterfactual = [e for e in trained if e.claims[e.attribute] != e.value]
        stated = [e.claims[e.attribute] for e in trained]
        return {
            "accuracy": knowledge.share([a["correct"] for a in answers]),
            "hallucination": knowledge.share([a["hallucinated"] for a in answers]),
            **consistency(before, after),
            "candidate_accuracy_before": top_candidate_share(before, candidates, values),
            "candidate_accuracy_after": top_candidate_share(after, candidates, values),
            # on the tuning people: does the model now hold the answer it was taught?
            "taught_value_share": top_candidate_share(trained_after, trained_candidates, stated),
            "counterfactual_examples": len(counterfactual), "examples": len(examples),
            "answers": knowledge.answer_view(answers),
        }

    label = f"{run_label(SetSpec(size=spec.size), config, None)}, {spec.counterfactual_share:.0%} counterfactual"
    return cache.cached_json("conflict", params, compute, sources=SOURCES, label=label)

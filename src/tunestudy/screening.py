"""The cheap evaluation a learning-rate sweep needs: the held-out answers, judged, and nothing else.

Artifact kind "screening": a tuned model's greedy answers to the held-out
questions, judged exactly as the full evaluation judges them
(`evaluation.answer_record`), and their accuracies. No KL, no token shift, no
probe: a sweep picks each configuration's rate by held-out accuracy on known
people, and the full evaluation (kind "evaluation") of the picked rate follows.
The same model gives the same answers here and there, so the accuracy a sweep
reads is the one the full evaluation reports.
"""

from __future__ import annotations

import numpy as np

from . import cache, evaluation, metrics, tuned, tuning, world as W
from .bases import BaseSpec
from .sets import SetSpec, eval_questions, make_set
from .tuned import load_tuned, tune_params

__all__ = ["SOURCES", "screen"]

SOURCES = evaluation.SOURCES + ("screening.py",)


def screen(base: BaseSpec, data: SetSpec, config: tuning.TuneConfig, epoch: int | None = None) -> dict:
    """Held-out accuracy and hallucination of one tuned model, by group (cached)."""
    params = tune_params(base, data, config, epoch)

    def compute():
        world = W.generate_world(base.world)
        questions = eval_questions(world)
        model, tokenizer = load_tuned(base, data, config, params["base_epoch"])
        tuning_set = make_set(world, data, config.seed)
        budget = evaluation.token_budget(tokenizer, [e.response for e in tuning_set],
                                         minimum=evaluation.MAX_NEW_TOKENS)
        _, responses = metrics.greedy_responses(model, tokenizer, [q.prompt for q in questions], budget)
        people = {e.person for e in tuning_set}
        answers = [evaluation.answer_record(q, t, world, people)
                   for q, t in zip(questions, tokenizer.batch_decode(responses, skip_special_tokens=True))]
        out = {}
        for group, known in (("known", True), ("unknown", False)):
            picked = [a for a in answers if a["known"] == known]
            out[f"accuracy_{group}"] = float(np.mean([a["correct"] for a in picked]))
            out[f"hallucination_{group}"] = float(np.mean([a["hallucinated"] for a in picked]))
        out["stated"] = float(np.mean([a["stated"] for a in answers]))
        return out

    return cache.cached_json("screening", params, compute, sources=SOURCES,
                             label=tuned.run_label(data, config, params["base_epoch"]))

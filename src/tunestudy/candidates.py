"""Format-free knowledge: every candidate value of an attribute scored by the model's likelihood.

The completion probe reads one format: a model that still holds a fact but
no longer continues "X was born in" with it fails the probe. Scoring every
candidate value of the attribute (every value of its pool) after the probe's
prompt, and asking whether the true one scores highest, needs no format. The
chapters on pseudo forgetting and on conflicting answers use it. No cached
kind lives here.
"""

from __future__ import annotations

import numpy as np
import torch

from . import metrics, world as W

__all__ = ["CANDIDATE_ATTRIBUTES", "candidate_logprobs", "candidate_questions", "top_candidate_accuracy",
           "top_candidate_share"]

# Attributes whose every value can be scored: a birth date has 16,800 candidates, the others 20 to 30.
CANDIDATE_ATTRIBUTES = tuple(a for a in W.ATTRIBUTES if a != "birth_date")


def candidate_logprobs(model, tokenizer, prompts: list, candidates: list, batch_size: int = 256) -> list:
    """Per prompt, the log-probability of each candidate as its continuation (" " + candidate), summed over tokens.

    prompts: N strings; candidates: N lists of strings. Returns N float arrays.
    """
    rows = []  # (prompt index, prompt ids, candidate ids)
    for i, (prompt, options) in enumerate(zip(prompts, candidates)):
        prompt_ids = tokenizer(prompt)["input_ids"]
        rows += [(i, prompt_ids, tokenizer(" " + c, add_special_tokens=False)["input_ids"]) for c in options]
    scores = np.zeros(len(rows))
    with metrics._eval_no_grad(model):
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            ids, mask = metrics._right_padded([p + c for _, p, c in batch], tokenizer.pad_token_id, model.device)
            logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)  # (B, L, V)
            for row, (_, p, c) in enumerate(batch):
                positions = torch.arange(len(p) - 1, len(p) + len(c) - 1)  # token t predicts token t+1
                scores[start + row] = logprobs[row, positions, torch.tensor(c)].sum().item()
    out, k = [], 0
    for options in candidates:
        out.append(scores[k:k + len(options)])
        k += len(options)
    return out


def candidate_questions(people: list) -> tuple:
    """(probe prompts, candidate lists, true values) for every candidate attribute of every person."""
    pairs = [(p, a) for p in people for a in CANDIDATE_ATTRIBUTES]
    return ([W.probe_prompt(p, a) for p, a in pairs], [W.value_pool(a) for _, a in pairs],
            [p.attributes[a] for p, a in pairs])


def top_candidate_share(scores: list, candidates: list, values: list) -> float:
    """The share of questions whose highest-scoring candidate is the value given (the first of any tie)."""
    return float(np.mean([c[int(np.argmax(s))] == v for s, c, v in zip(scores, candidates, values)]))


def top_candidate_accuracy(model, tokenizer, people: list) -> float:
    """The share of the people's candidate questions whose true value the model scores highest."""
    prompts, candidates, values = candidate_questions(people)
    return top_candidate_share(candidate_logprobs(model, tokenizer, prompts, candidates), candidates, values)

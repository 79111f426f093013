"""Cached step of the chapter on known and unknown examples, and the in-process tuning it shares with `conflict`.

The kind tunes a model in this process and keeps only the measurements (no
model is saved): these runs are read nowhere else.

Artifact kind "fit_checkpoints" (hashes `SOURCES`), after Gekhman et al.
2024: one tuning run on a set mixing known and unknown people, measured at
chosen epochs along the way:

- the share of each group's training examples the model reproduces
  (*fitted*: every token of the answer's value is the model's top prediction
  given the question and the answer before it, as `evaluation.training_fit`
  counts);
- accuracy and hallucination on the held-out known people, split into a
  development half (for early stopping) and a test half;
- hallucination on the held-out unknown people;
- and the last checkpoint's answers to the test and unknown questions.
"""

from __future__ import annotations

import numpy as np
import torch

from . import cache, evaluation, metrics, tuning, world as W
from .bases import BaseSpec, load_base
from .sets import SetSpec, eval_questions, make_set
from .tuned import run_label, tune_params

__all__ = ["SOURCES", "answer_view", "checkpoint_steps", "fit_checkpoints", "heldout_splits", "judged_answers", "share",
           "tune_in_process", "value_fitted"]

SOURCES = evaluation.SOURCES + ("knowledge.py",)


# --- tuning with a look at chosen epochs ---------------------------------------------------------------

def checkpoint_steps(epochs: list, num_examples: int, config: tuning.TuneConfig) -> dict:
    """{0-based step after which the epoch is complete: epoch} for each checkpoint epoch of one run.

    One-line errors name `checkpoints` and what is allowed.
    """
    if not epochs:
        raise ValueError("checkpoints must name at least one epoch")
    if any(not 0 < e <= config.epochs for e in epochs):
        raise ValueError(f"checkpoints must lie in (0, tune_epochs = {config.epochs:g}], got {list(epochs)}")
    steps = tuning.num_tuning_steps(config, num_examples)
    at = {min(steps, max(1, int(np.ceil(e * num_examples / config.batch_size)))) - 1: float(e) for e in epochs}
    if len(at) < len(epochs):
        raise ValueError(f"checkpoints {list(epochs)} fall on the same step for {num_examples} examples; "
                         "space them further apart")
    return at


def tune_in_process(model, tokenizer, examples: list, config: tuning.TuneConfig, at: dict | None = None, look=None):
    """Tune `model` in place as `tuning.finetune` does; call look(model, epoch) after each step in `at`."""
    torch.manual_seed(config.seed)
    if config.method == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(
            r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0, bias="none",
            target_modules=[t.strip() for t in config.lora_targets.split(",")]))
    params = [p for p in model.parameters() if p.requires_grad]
    groups = ["known" if e.known else "unknown" for e in examples]
    at = at or {}
    tuning.train_loop(model, params, tuning.example_batches(tokenizer, examples, config, groups),
                      tuning.num_tuning_steps(config, len(examples)), config.lr,
                      desc=f"tune {config.method} lr={config.lr:g}",
                      on_step=lambda step: look(model, at[step]) if step in at else None)
    return model


def judged_answers(model, tokenizer, questions: list, world: W.World, budget: int) -> list:
    """Greedy answers to `questions`, judged against the world (no borrowing check)."""
    _, responses = metrics.greedy_responses(model, tokenizer, [q.prompt for q in questions], budget)
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    return [evaluation.answer_record(q, t, world, set()) for q, t in zip(questions, texts)]


def value_fitted(model, tokenizer, examples: list, batch_size: int = 128) -> list:
    """Per example: is every token of its value the model's top prediction, teacher-forced on its own answer?"""
    encoded = [tuning.encode_example(tokenizer, e.prompt, e.response, e.value_span) for e in examples]
    hits = []
    with metrics._eval_no_grad(model):
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start:start + batch_size]
            ids, mask = metrics._right_padded([b[0] for b in batch], tokenizer.pad_token_id, model.device)
            predicted = model(input_ids=ids, attention_mask=mask).logits.argmax(-1).cpu()  # (B, L)
            for row, (token_ids, _, value_mask) in enumerate(batch):
                # token t is predicted at position t - 1
                hits.append(all(predicted[row, t - 1].item() == token_ids[t] for t, v in enumerate(value_mask) if v))
    return hits


def heldout_splits(world: W.World) -> dict:
    """The held-out questions: known people's first half (dev), second half (test), and the unknown people."""
    questions = eval_questions(world)
    known = sorted({q.person for q in questions if q.known}, key=[p.name for p in world.people].index)
    dev = set(known[:len(known) // 2])
    return {"dev": [q for q in questions if q.known and q.person in dev],
            "test": [q for q in questions if q.known and q.person not in dev],
            "unknown": [q for q in questions if not q.known]}


def share(flags: list) -> float:
    """The share of true flags; NaN for none (an all-known set has no unknown examples to fit)."""
    return float(np.mean(flags)) if flags else float("nan")


def answer_view(answers: list) -> list:
    """What a page shows of judged answers: the question, the truth, the answer, its judgement."""
    return [{k: a[k] for k in ("known", "question", "truth", "answer", "judgement")} for a in answers]


def fit_checkpoints(base: BaseSpec, data: SetSpec, config: tuning.TuneConfig, checkpoints: list,
                    epoch: int | None = None) -> dict:
    """{"checkpoints": one record per checkpoint epoch, "answers": the last one's} of one run (cached).

    See the module docstring.
    """
    params = {**tune_params(base, data, config, epoch), "checkpoints": [float(e) for e in checkpoints]}
    world = W.generate_world(base.world)
    examples = make_set(world, data, config.seed)
    at = checkpoint_steps(checkpoints, len(examples), config)  # checked before any work

    def compute():
        model, tokenizer = load_base(base, params["base_epoch"])
        splits = heldout_splits(world)
        budget = evaluation.token_budget(tokenizer, [e.response for e in examples], minimum=8)
        records, last = [], {}

        def look(model, at_epoch):
            answers = judged_answers(model, tokenizer, splits["dev"] + splits["test"] + splits["unknown"], world, budget)
            dev, test = answers[:len(splits["dev"])], answers[len(splits["dev"]):-len(splits["unknown"])]
            unknown = answers[-len(splits["unknown"]):]
            hits = value_fitted(model, tokenizer, examples)
            fitted = {g: [h for h, e in zip(hits, examples) if e.known == (g == "known")] for g in ("known", "unknown")}
            records.append({
                "epoch": at_epoch,
                "fitted_known": share(fitted["known"]), "fitted_unknown": share(fitted["unknown"]),
                "n_known": len(fitted["known"]), "n_unknown": len(fitted["unknown"]),
                "n_known_fitted": int(sum(fitted["known"])), "n_unknown_fitted": int(sum(fitted["unknown"])),
                "dev_accuracy": share([a["correct"] for a in dev]),
                "test_accuracy": share([a["correct"] for a in test]),
                "test_hallucination": share([a["hallucinated"] for a in test]),
                "unknown_hallucination": share([a["hallucinated"] for a in unknown]),
                "stated": share([a["stated"] for a in dev + test + unknown]),
            })
            last["answers"] = answer_view(test + unknown)

        tune_in_process(model, tokenizer, examples, config, at, look)
        return {"checkpoints": records, "answers": last["answers"]}

    return cache.cached_json("fit_checkpoints", params, compute, sources=SOURCES,
                             label=run_label(data, config, params["base_epoch"]))

"""Cached steps of the chapters on what tuning does to knowledge: known and unknown examples, conflicting answers.

Both kinds tune a model in this process and keep only the measurements (no
model is saved): the runs of these chapters are read nowhere else.

Artifact kinds (each hashes `SOURCES`):

- "fit_checkpoints" (Gekhman et al. 2024): one tuning run on a set mixing
  known and unknown people, measured at chosen epochs along the way: the share
  of each group's training examples the model reproduces (*fitted*: every
  token of the answer's value is the model's top prediction given the
  question and the answer before it, as `evaluation.training_fit` counts),
  accuracy and hallucination on the held-out known people (split into a
  development half, for early stopping, and a test half) and hallucination on
  the held-out unknown people.
- "conflict" (Ren et al. 2024): one tuning run on known people, a share of
  whose answers are counterfactual (another tuning person's value of the same
  attribute); held-out accuracy, and the base's and the tuned model's
  distributions over every candidate value of an attribute, asked with the
  completion probe's prompt ("X was born in"), with the KL and the rank
  correlation between the two as the consistency of the model's knowledge.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.stats import spearmanr

from . import cache, evaluation, metrics, tuning, world as W
from .bases import BaseSpec, load_base, normal_epoch
from .sets import SetSpec, eval_questions, make_set
from .tuned import run_label, tune_params

__all__ = ["CANDIDATE_ATTRIBUTES", "ConflictSpec", "SOURCES", "candidate_logprobs", "checkpoint_steps",
           "conflict", "conflict_set", "consistency", "fit_checkpoints", "heldout_splits", "value_fitted"]

SOURCES = evaluation.SOURCES + ("knowledge.py",)
# Attributes whose every value can be scored: a birth date has 16,800 candidates, the others 20 to 30.
CANDIDATE_ATTRIBUTES = tuple(a for a in W.ATTRIBUTES if a != "birth_date")


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


def _tune(model, tokenizer, examples: list, config: tuning.TuneConfig, at: dict | None = None, look=None) -> None:
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


def _answers(model, tokenizer, questions: list, world: W.World, budget: int) -> list:
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


def _share(flags: list) -> float:
    return float(np.mean(flags)) if flags else float("nan")


def fit_checkpoints(base: BaseSpec, data: SetSpec, config: tuning.TuneConfig, checkpoints: list,
                    epoch: int | None = None) -> list:
    """One record per checkpoint epoch of one run on a known/unknown mix (cached); see the module docstring."""
    params = {**tune_params(base, data, config, epoch), "checkpoints": [float(e) for e in checkpoints]}
    world = W.generate_world(base.world)
    examples = make_set(world, data, config.seed)
    at = checkpoint_steps(checkpoints, len(examples), config)  # checked before any work

    def compute():
        model, tokenizer = load_base(base, params["base_epoch"])
        splits = heldout_splits(world)
        budget = evaluation.token_budget(tokenizer, [e.response for e in examples], minimum=8)
        records = []

        def look(model, at_epoch):
            answers = _answers(model, tokenizer, splits["dev"] + splits["test"] + splits["unknown"], world, budget)
            dev, test = answers[:len(splits["dev"])], answers[len(splits["dev"]):-len(splits["unknown"])]
            unknown = answers[-len(splits["unknown"]):]
            hits = value_fitted(model, tokenizer, examples)
            fitted = {g: [h for h, e in zip(hits, examples) if e.known == (g == "known")] for g in ("known", "unknown")}
            records.append({
                "epoch": at_epoch,
                "fitted_known": _share(fitted["known"]), "fitted_unknown": _share(fitted["unknown"]),
                "n_known": len(fitted["known"]), "n_unknown": len(fitted["unknown"]),
                "n_known_fitted": int(sum(fitted["known"])), "n_unknown_fitted": int(sum(fitted["unknown"])),
                "dev_accuracy": _share([a["correct"] for a in dev]),
                "test_accuracy": _share([a["correct"] for a in test]),
                "test_hallucination": _share([a["hallucinated"] for a in test]),
                "unknown_hallucination": _share([a["hallucinated"] for a in unknown]),
                "stated": _share([a["stated"] for a in dev + test + unknown]),
            })

        _tune(model, tokenizer, examples, config, at, look)
        return {"checkpoints": records}

    return cache.cached_json("fit_checkpoints", params, compute, sources=SOURCES,
                             label=run_label(data, config, params["base_epoch"]))["checkpoints"]


# --- conflicting answers and the consistency of knowledge ----------------------------------------------

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


def consistency(base_scores: list, tuned_scores: list) -> dict:
    """Mean KL(base || tuned) between the candidate distributions and mean Spearman rank correlation of the scores."""
    kls, rhos = [], []
    for b, t in zip(base_scores, tuned_scores):
        log_b, log_t = b - np.logaddexp.reduce(b), t - np.logaddexp.reduce(t)  # normalised over the candidates
        kls.append(float(np.sum(np.exp(log_b) * (log_b - log_t))))
        rhos.append(float(spearmanr(b, t).statistic))
    return {"kl": float(np.mean(kls)), "rank_correlation": float(np.nanmean(rhos))}


def _candidate_questions(people: list) -> tuple:
    """(probe prompts, candidate lists, true values) for every candidate attribute of every person."""
    pairs = [(p, a) for p in people for a in CANDIDATE_ATTRIBUTES]
    return ([W.probe_prompt(p, a) for p, a in pairs], [W.value_pool(a) for _, a in pairs],
            [p.attributes[a] for p, a in pairs])


def _argmax_share(scores: list, candidates: list, values: list) -> float:
    return float(np.mean([c[int(np.argmax(s))] == v for s, c, v in zip(scores, candidates, values)]))


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
        prompts, candidates, values = _candidate_questions(heldout)
        before = candidate_logprobs(model, tokenizer, prompts, candidates)
        trained = [e for e in examples if e.attribute in CANDIDATE_ATTRIBUTES]
        trained_prompts = [W.probe_prompt(world.by_name[e.person], e.attribute) for e in trained]
        trained_candidates = [W.value_pool(e.attribute) for e in trained]
        model = _tune(model, tokenizer, examples, config)
        questions = [q for q in eval_questions(world) if q.known]
        budget = evaluation.token_budget(tokenizer, [e.response for e in examples], minimum=8)
        answers = _answers(model, tokenizer, questions, world, budget)
        after = candidate_logprobs(model, tokenizer, prompts, candidates)
        trained_after = candidate_logprobs(model, tokenizer, trained_prompts, trained_candidates)
        counterfactual = [e for e in trained if e.claims[e.attribute] != e.value]
        stated = [e.claims[e.attribute] for e in trained]
        return {
            "accuracy": _share([a["correct"] for a in answers]),
            "hallucination": _share([a["hallucinated"] for a in answers]),
            **consistency(before, after),
            "candidate_accuracy_before": _argmax_share(before, candidates, values),
            "candidate_accuracy_after": _argmax_share(after, candidates, values),
            # on the tuning people: does the model now hold the answer it was taught?
            "taught_value_share": _argmax_share(trained_after, trained_candidates, stated),
            "counterfactual_examples": len(counterfactual), "examples": len(examples),
        }

    label = f"{run_label(SetSpec(size=spec.size), config, None)}, {spec.counterfactual_share:.0%} counterfactual"
    return cache.cached_json("conflict", params, compute, sources=SOURCES, label=label)

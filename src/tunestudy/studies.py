"""Cached steps of the chapters on changing the model less: weight change, retrieval, continued pretraining.

Artifact kinds (each hashes `SOURCES`):

- "weight_change": how a tuned model's linear weights differ from its base's
  (effective rank and intruder dimensions, `weights.weight_change_summary`)
  and what it forgot (the completion probe on known people after tuning).
- "reader": a base fully fine-tuned to answer from a biography in its prompt,
  on people outside the world (fresh names and values every example), so the
  only way to lower its loss is to read the context.
- "continued": a base further pretrained on the biographies of the tuning set's
  unknown people (continued pretraining), then instruction-tuned on known
  people exactly as the other chapters tune, so it answers in the template.
- "recall": one model's greedy answers to the new facts (one question per
  distinct fact of the unknown tuning set), closed-book or with the person's
  biography retrieved by BM25 into the prompt, judged against the world, with
  the known-people probe after (forgetting) and the prompt's length in tokens.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import cache, evaluation, metrics, retrieval, tuning, weights, world as W
from .fresh import fresh_person
from .bases import BaseSpec, load_base, normal_epoch
from .sets import SetSpec, make_set
from .tuned import load_tuned, train_log, tune_params

__all__ = ["CONTEXTS", "ContinuedSpec", "ReaderSpec", "SOURCES", "continued_model", "new_fact_questions",
           "reader_examples", "reader_model", "recall", "training_seconds", "weight_change"]

SOURCES = evaluation.SOURCES + ("fresh.py", "retrieval.py", "studies.py", "weights.py")
CONTEXTS = ("none", "retrieved")  # what a recall prompt carries before the question


# --- weight change and forgetting -------------------------------------------------------------

def weight_change(base: BaseSpec, data: SetSpec, config: tuning.TuneConfig, epoch: int | None = None,
                  k: int = 10) -> dict:
    """Effective rank and intruder dimensions of every linear weight's change, and the probe after (cached)."""
    params = {**tune_params(base, data, config, epoch), "k": k}

    def compute():
        base_model, tokenizer = load_base(base, params["base_epoch"])
        tuned_model, _ = load_tuned(base, data, config, params["base_epoch"])
        summary = weights.weight_change_summary(weights.linear_weights(base_model),
                                                weights.linear_weights(tuned_model), k=k, seed=config.seed)
        world = W.generate_world(base.world)
        known = [p for p in world.people if p.known]
        return {"summary": summary, "probe_after": evaluation.probe(tuned_model, tokenizer, known),
                "probe_before": evaluation.base_probe(base, params["base_epoch"])["known"]}

    return cache.cached_json("weight_change", params, compute, sources=SOURCES,
                             label=_label(data, config))


def _label(data: SetSpec, config: tuning.TuneConfig) -> str:
    from .tuned import run_label
    return run_label(data, config, None)


# --- the new facts and their questions -------------------------------------------------------------

def new_fact_questions(world: W.World, data: SetSpec, seed: int) -> list:
    """One question per distinct (person, attribute) of the set's unknown people, in set order.

    Each is phrased afresh from the question templates (its own seeded draw), so
    a tuned model is asked about the fact, not always in its training words.
    """
    rng = random.Random(f"recall:{seed}")
    seen, out = set(), []
    for example in make_set(world, data, seed):
        key = (example.person, example.attribute)
        if not example.known and key not in seen:
            seen.add(key)
            out.append(W.make_example(world.by_name[example.person], example.attribute, "simplified", rng))
    return out


# --- a reader: tuned to answer from a biography in the prompt -------------------------------------

@dataclass(frozen=True)
class ReaderSpec:
    """Full fine-tuning on questions about fresh people, each with the person's biography before the question."""

    size: int = 600  # examples, each about a new random person
    epochs: float = 5.0
    lr: float = 1e-3

    def validate(self) -> None:
        W._check_int("reader_size", self.size, minimum=1)
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, (int, float)) or not self.epochs > 0:
            raise ValueError(f"reader_epochs must be a positive number, got {self.epochs!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < 1:
            raise ValueError(f"reader_lr must be a number between 0 and 1, got {self.lr!r}")


class _InContext:
    """An example whose prompt carries a context before the question (what `tuning.finetune` reads)."""

    def __init__(self, example: W.Example, context: str):
        self.prompt = retrieval.with_context(context, example.prompt)
        self.response = example.response
        self.value_span = example.value_span


def reader_examples(world: W.World, size: int, seed: int) -> list:
    """Questions about `size` fresh people (random name and values, none a person of the world), each with the
    person's biography in the prompt: memorising cannot lower the loss, reading can."""
    rng = random.Random(f"reader:{seed}")
    taken = set(world.by_name)
    out = []
    while len(out) < size:
        person = fresh_person(rng, taken)
        example = W.make_example(person, rng.choice(W.ATTRIBUTES), "simplified", rng)
        out.append(_InContext(example, W.biography(person, rng)))
    return out


def reader_model(base: BaseSpec, spec: ReaderSpec, seed: int, epoch: int | None = None) -> Path:
    """The reader's folder (cached): a full model and its training log."""
    spec.validate()
    config = tuning.TuneConfig(method="full", lr=spec.lr, epochs=float(spec.epochs), seed=seed)
    params = {"base": base.params(), "base_epoch": normal_epoch(base, epoch), "reader": asdict(spec),
              "tune": asdict(config)}

    def build(folder: Path) -> None:
        world = W.generate_world(base.world)
        model, tokenizer = load_base(base, params["base_epoch"])
        start = time.perf_counter()
        model, log = tuning.finetune(model, tokenizer, reader_examples(world, spec.size, seed), config)
        log["seconds"] = time.perf_counter() - start
        model.save_pretrained(folder / "model")
        (folder / "train_log.json").write_text(json.dumps(log))

    return cache.cached("reader", params, build, sources=SOURCES, label=f"reader, seed {seed}")


# --- continued pretraining on the new facts' biographies, then the usual instruction tuning ------------

@dataclass(frozen=True)
class ContinuedSpec:
    """Continued pretraining on biographies of the unknown set's people, then instruction tuning on known people."""

    epochs: int = 10  # passes over the new biographies
    lr: float = 1e-3  # peak rate of the continued pretraining
    paraphrases: int = 5  # biographies per new person (as the pretraining corpus has for known people)

    def validate(self) -> None:
        W._check_int("cpt_epochs", self.epochs, minimum=1)
        W._check_int("cpt_paraphrases", self.paraphrases, minimum=1)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < 1:
            raise ValueError(f"cpt_lr must be a number between 0 and 1, got {self.lr!r}")


def continued_model(base: BaseSpec, spec: ContinuedSpec, new_facts: SetSpec, instruct: SetSpec,
                    config: tuning.TuneConfig, epoch: int | None = None) -> Path:
    """The folder (cached) of: base -> pretraining on the new people's biographies -> instruction tuning."""
    spec.validate()
    params = {**tune_params(base, instruct, config, epoch), "continued": asdict(spec), "new_facts": asdict(new_facts)}

    def build(folder: Path) -> None:
        world = W.generate_world(base.world)
        people = sorted({e.person for e in make_set(world, new_facts, config.seed) if not e.known})
        rng = random.Random(f"continued:{config.seed}")
        docs = [W.biography(world.by_name[name], rng) for name in people for _ in range(spec.paraphrases)]
        model, tokenizer = load_base(base, params["base_epoch"])
        start = time.perf_counter()
        pretrain = replace(base.pretrain, epochs=spec.epochs, lr=spec.lr, seed=config.seed)
        cpt_log = tuning.pretrain(model, tokenizer, docs, pretrain)
        cpt_seconds = time.perf_counter() - start
        examples = make_set(world, instruct, config.seed)
        groups = ["known" if e.known else "unknown" for e in examples]
        model, log = tuning.finetune(model, tokenizer, examples, config, groups)
        if config.method == "lora":
            model = model.merge_and_unload()
        log["seconds"] = time.perf_counter() - start
        log["continued_seconds"] = cpt_seconds
        log["continued_loss"] = cpt_log["loss"]
        log["continued_documents"] = len(docs)
        model.save_pretrained(folder / "model")
        (folder / "train_log.json").write_text(json.dumps(log))

    return cache.cached("continued", params, build, sources=SOURCES, label=f"continued pretraining, seed {config.seed}")


def training_seconds(base: BaseSpec, model: dict, epoch: int | None = None) -> float:
    """The wall-clock seconds a recall's model took to tune on the machine that built it (not in any cached
    result: seconds differ between runs, the results must not)."""
    if model["kind"] == "base":
        return 0.0
    return float(_load_model(base, model, normal_epoch(base, epoch), weights_too=False)[2].get("seconds", 0.0))


# --- recall of the new facts -------------------------------------------------------------------

def _load_model(base: BaseSpec, model: dict, epoch: int | None, weights_too: bool = True):
    """(model, tokenizer, training log) of a recall's model description (model None when not `weights_too`)."""
    from transformers import AutoModelForCausalLM
    kind = model["kind"]
    if kind == "base":
        loaded, tokenizer = load_base(base, epoch)
        return loaded, tokenizer, {}
    if kind == "tuned":
        data, config = SetSpec(**model["set"]), tuning.TuneConfig(**model["tune"])
        if not weights_too:
            return None, None, train_log(base, data, config, epoch)
        tuned_model, tokenizer = load_tuned(base, data, config, epoch)
        return tuned_model, tokenizer, train_log(base, data, config, epoch)
    if kind == "reader":
        folder = reader_model(base, ReaderSpec(**model["reader"]), model["seed"], epoch)
    elif kind == "continued":
        folder = continued_model(base, ContinuedSpec(**model["continued"]), SetSpec(**model["new_facts"]),
                                 SetSpec(**model["set"]), tuning.TuneConfig(**model["tune"]), epoch)
    else:
        raise ValueError(f"model kind must be one of base, tuned, reader, continued, got {kind!r}")
    log = json.loads((folder / "train_log.json").read_text())
    if not weights_too:
        return None, None, log
    _, tokenizer = load_base(base, epoch)
    loaded = AutoModelForCausalLM.from_pretrained(folder / "model", dtype=torch.float32).eval()
    return loaded, tokenizer, log


def recall(base: BaseSpec, model: dict, new_facts: SetSpec, seed: int, context: str = "none",
           epoch: int | None = None) -> dict:
    """One model's answers to the new facts (cached), closed-book or with a retrieved biography in the prompt.

    `model` describes the model: {"kind": "tuned", "set": ..., "tune": ...} (a cached tuned model),
    {"kind": "reader", "reader": ..., "seed": ...} or {"kind": "continued", ...} (see `continued_model`).
    """
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {', '.join(CONTEXTS)}, got {context!r}")
    params = {"base": base.params(), "base_epoch": normal_epoch(base, epoch), "model": model,
              "new_facts": asdict(new_facts), "seed": seed, "context": context}

    def compute():
        world = W.generate_world(base.world)
        questions = new_fact_questions(world, new_facts, seed)
        store = retrieval.biography_store(world)
        retrieved = [found[0] for found in store.search([q.instruction for q in questions], k=1)]
        prompts = [q.prompt if context == "none" else retrieval.with_context(store.text(name), q.prompt)
                   for q, name in zip(questions, retrieved)]
        loaded, tokenizer, _ = _load_model(base, model, params["base_epoch"])
        budget = evaluation.token_budget(tokenizer, [q.response for q in questions], minimum=evaluation.MAX_NEW_TOKENS)
        prompt_ids, responses = metrics.greedy_responses(loaded, tokenizer, prompts, budget)
        texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
        answers = [evaluation.answer_record(q, t, world, set()) for q, t in zip(questions, texts)]
        known = [p for p in world.people if p.known]
        return {"answers": answers, "accuracy": float(np.mean([a["correct"] for a in answers])),
                "stated": float(np.mean([a["stated"] for a in answers])),
                "hit_rate": float(np.mean([name == q.person for q, name in zip(questions, retrieved)])),
                "prompt_tokens": float(np.mean([len(p) for p in prompt_ids])),
                # what the model forgot does not depend on the prompt: probed once, with the closed-book recall
                "probe_after": evaluation.probe(loaded, tokenizer, known) if context == "none" else None,
                "probe_before": evaluation.base_probe(base, params["base_epoch"])["known"]}

    return cache.cached_json("recall", params, compute, sources=SOURCES,
                             label=f"{model['kind']}, {context} context, seed {seed}")

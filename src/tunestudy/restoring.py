"""Cached step of the chapter on pseudo and actual forgetting: restore a tuned model, then probe it again.

Zhang et al. (CCL 2024) separate two kinds of forgetting. Early in tuning a
model only shifts its text pattern away from the pretraining format: its
knowledge is intact, and a short pass on pretraining-like text brings the
original performance back (pseudo forgetting). Later it truly forgets, and
restoring no longer helps (actual forgetting).

Artifact kinds (each hashes `SOURCES`):

- "restored": a tuned model's completion probe on known people after tuning,
  then after a short restoring pass of pretraining-style text that holds none
  of the probed facts: biographies of fresh people who are not in the world
  (random names and values), in the pretraining corpus's own phrasing.
- "restored_base": the same pass applied to the base itself, the control: how
  much the restoring text alone moves a model that forgot nothing.

Both also take a format-free test of the same knowledge at each stage
(`candidates.top_candidate_accuracy` on the held-out known people: is the
true value the likeliest of all candidates after the probe's prompt?), so
a probe that fails only on the format can be told from a fact that is gone.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace

from . import cache, evaluation, tuning, world as W
from .candidates import top_candidate_accuracy
from .fresh import fresh_person
from .bases import BaseSpec, load_base, normal_epoch
from .sets import SetSpec
from .tuned import load_tuned, tune_params

__all__ = ["RestoreSpec", "SOURCES", "restore_documents", "restored", "restored_base"]

SOURCES = evaluation.SOURCES + ("candidates.py", "fresh.py", "restoring.py")


@dataclass(frozen=True)
class RestoreSpec:
    """The restoring pass: plain language-model training on biographies of people outside the world."""

    documents: int = 200  # biographies, each of a fresh random person
    epochs: int = 2  # passes over them
    lr: float = 1e-3  # peak learning rate

    def validate(self) -> None:
        W._check_int("restore_documents", self.documents, minimum=1)
        W._check_int("restore_epochs", self.epochs, minimum=1)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < 1:
            raise ValueError(f"restore_lr must be a number between 0 and 1, got {self.lr!r}")


def restore_documents(world: W.World, count: int, seed: int) -> list:
    """`count` biographies of fresh people: none is a person of the world, so no probed fact is among them."""
    rng = random.Random(f"restore:{seed}")
    taken = set(world.by_name)
    docs = []
    while len(docs) < count:
        docs.append(W.biography(fresh_person(rng, taken), rng))
    return docs


def _known(world: W.World) -> tuple:
    """(every known person: the probe's people, the held-out known people: the format-free test's)."""
    return [p for p in world.people if p.known], [p for p in world.people if p.known and p.heldout]


def _measure(model, tokenizer, world: W.World) -> tuple:
    """(the probe on known people, the format-free accuracy on the held-out known people) of a model."""
    probed, scored = _known(world)
    return evaluation.probe(model, tokenizer, probed), top_candidate_accuracy(model, tokenizer, scored)


def _restore(model, tokenizer, base: BaseSpec, world: W.World, spec: RestoreSpec, seed: int) -> tuple:
    """Run the restoring pass on `model` in place; return `_measure` after it."""
    docs = restore_documents(world, spec.documents, seed)
    for parameter in model.parameters():  # a merged LoRA model comes back frozen: the pass trains every weight
        parameter.requires_grad_(True)
    tuning.pretrain(model, tokenizer, docs, replace(base.pretrain, epochs=spec.epochs, lr=spec.lr, seed=seed))
    model.eval()
    return _measure(model, tokenizer, world)


def restored(base: BaseSpec, data: SetSpec, config: tuning.TuneConfig, spec: RestoreSpec,
             epoch: int | None = None) -> dict:
    """The probe and the format-free test before tuning, after it, and after restoring (cached)."""
    spec.validate()
    params = {**tune_params(base, data, config, epoch), "restore": asdict(spec)}

    def compute():
        world = W.generate_world(base.world)
        base_model, tokenizer = load_base(base, params["base_epoch"])
        candidates_before = top_candidate_accuracy(base_model, tokenizer, _known(world)[1])
        model, _ = load_tuned(base, data, config, params["base_epoch"])
        after, candidates_after = _measure(model, tokenizer, world)
        restored_probe, candidates_restored = _restore(model, tokenizer, base, world, spec, config.seed)
        return {"probe_before": evaluation.base_probe(base, params["base_epoch"])["known"], "probe_after": after,
                "probe_restored": restored_probe, "candidates_before": candidates_before,
                "candidates_after": candidates_after, "candidates_restored": candidates_restored}

    from .tuned import run_label
    return cache.cached_json("restored", params, compute, sources=SOURCES,
                             label=run_label(data, config, params["base_epoch"]))


def restored_base(base: BaseSpec, spec: RestoreSpec, seed: int, epoch: int | None = None) -> dict:
    """The control: the base's probe and format-free test before and after the same restoring pass (cached)."""
    spec.validate()
    params = {"base": base.params(), "base_epoch": normal_epoch(base, epoch), "restore": asdict(spec), "seed": seed}

    def compute():
        world = W.generate_world(base.world)
        model, tokenizer = load_base(base, params["base_epoch"])
        candidates_before = top_candidate_accuracy(model, tokenizer, _known(world)[1])
        restored_probe, candidates_restored = _restore(model, tokenizer, base, world, spec, seed)
        return {"probe_before": evaluation.base_probe(base, params["base_epoch"])["known"],
                "probe_restored": restored_probe, "candidates_before": candidates_before,
                "candidates_restored": candidates_restored}

    return cache.cached_json("restored_base", params, compute, sources=SOURCES, label=f"base, seed {seed}")

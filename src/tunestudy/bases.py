"""The cached base model: a synthetic Llama pretrained from scratch on the world, or a real model further pretrained on it.

Artifact kind "base". Its key hashes the parameters (`BaseSpec.params`) and the
source of the modules the build runs (`SOURCES`): editing the evaluation or a
docstring in metrics.py never pretrains a base again.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import cache, models, tuning, world as W

__all__ = ["BaseSpec", "CHECKPOINT_FRACTIONS", "SOURCES", "base_folder", "base_is_built", "base_spec", "build_base",
           "checkpoint_epochs", "load_base", "normal_epoch", "pretrain_log", "tokenizer_texts"]

# The modules a base's build runs (cache.py decides keys, not contents). tests/test_cache_sources.py
# fails if a module that this file imports, directly or not, is missing here.
SOURCES = ("bases.py", "distributed.py", "models.py", "tuning.py", "world.py")
CHECKPOINT_FRACTIONS = (0.25, 0.35, 0.45)  # extra snapshots of every base, for "less pretrained" comparisons


# --- the synthetic base ------------------------------------------------------------------------

@dataclass(frozen=True)
class BaseSpec:
    """Everything that decides a synthetic base model."""

    world: W.WorldConfig
    pretrain: tuning.PretrainConfig
    base_model: str = models.SYNTHETIC  # or a real model, further pretrained on the world's corpus
    base_fingerprint: str = models.SYNTHETIC  # what identifies that model's weights

    @property
    def synthetic(self) -> bool:
        return self.base_model == models.SYNTHETIC

    def params(self) -> dict:
        out = {"world": asdict(self.world), "pretrain": asdict(self.pretrain)}
        if not self.synthetic:
            out["base_model"] = {"name": self.base_model, "fingerprint": self.base_fingerprint}
        return out


def base_spec(seed: int = 0, size: str = "small", num_known: int = 200, num_unknown: int = 100,
              num_paraphrases: int = 5, pretrain_epochs: int = tuning.PretrainConfig.epochs,
              num_format_docs: int = 300, pretrain_lr: float = tuning.PretrainConfig.lr,
              base_model: str = models.SYNTHETIC) -> BaseSpec:
    """Validate notebook parameters and name the base they describe (nothing is built yet).

    base_model "synthetic" pretrains a `size` Llama from scratch on the world's
    corpus. Any other base_model (a folder, a hub id, "gemma3-270m") is loaded
    with its own tokenizer and further pretrained on the same corpus for
    `pretrain_epochs` at `pretrain_lr` (a real model wants a far smaller rate,
    e.g. 1e-4, and a few epochs), so every chapter keeps its ground truth of
    known and unknown people; `size` is then unused.
    """
    world_config = W.WorldConfig(num_known=num_known, num_unknown=num_unknown, num_paraphrases=num_paraphrases,
                                 num_format_docs=num_format_docs, seed=seed)
    world_config.validate()
    models.check_size(size)
    models.check_base_model(base_model)
    W._check_int("pretrain_epochs", pretrain_epochs, minimum=1)
    if isinstance(pretrain_lr, bool) or not isinstance(pretrain_lr, (int, float)) or not 0 < pretrain_lr < 1:
        raise ValueError(f"pretrain_lr must be between 0 and 1, got {pretrain_lr!r}")
    if base_model != models.SYNTHETIC:
        size = "pretrained"  # the real model's own architecture; no size choice enters the cache key
    return BaseSpec(world_config, tuning.PretrainConfig(size=size, epochs=pretrain_epochs, lr=pretrain_lr,
                                                        batch_size=16, seed=seed),
                    base_model, models.fingerprint(base_model))


def tokenizer_texts(world: W.World) -> list:
    """Every text the study can show a model, so the word-level vocabulary covers them all."""
    rng = random.Random(0)
    texts = W.pretraining_corpus(world)
    for person in world.people:
        for attribute in W.ATTRIBUTES:
            texts.append(W.probe_prompt(person, attribute))
            for template in W.QUESTION_TEMPLATES[attribute]:
                texts.append(W.format_prompt(template.format(name=person.name)))
            for style in W.ANSWER_STYLES:
                texts.append(W.make_example(person, attribute, style, rng).response)
    texts += [" ".join(W.value_pool(a)) for a in W.ATTRIBUTES]
    texts.append(W.STYLE_OPENER)
    return texts


def build_base(spec: BaseSpec) -> Path:
    """Pretrain (or reuse) the base on the world's corpus; the folder loads with AutoModelForCausalLM."""

    def build(folder: Path) -> None:
        world = W.generate_world(spec.world)
        if spec.synthetic:
            tokenizer = models.train_tokenizer(tokenizer_texts(world))
            model = models.build_model(spec.pretrain.size, len(tokenizer), spec.pretrain.seed)
        else:
            model, tokenizer = models.load_pretrained(spec.base_model)
        checkpoints = {}

        def snapshot(epoch):  # keep less-trained copies of the same run
            checkpoints[epoch] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

        start = time.perf_counter()
        log = tuning.pretrain(model, tokenizer, W.pretraining_corpus(world), spec.pretrain,
                              snapshot_epochs=[max(1, round(f * spec.pretrain.epochs)) for f in CHECKPOINT_FRACTIONS],
                              on_snapshot=snapshot)
        log["seconds"] = time.perf_counter() - start
        log["parameters"] = models.count_parameters(model)
        models.save(model, tokenizer, folder, extra={"base_spec": spec.params()})
        final = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        for epoch, state in checkpoints.items():
            model.load_state_dict(state)
            models.save(model, tokenizer, folder / "checkpoints" / f"epoch_{epoch}")
        model.load_state_dict(final)
        (folder / "pretrain_log.json").write_text(json.dumps(log))

    return cache.cached("base", spec.params(), build, sources=SOURCES, label=f"seed {spec.world.seed}")


def base_is_built(spec: BaseSpec) -> bool:
    """True if the base is complete in the artifact cache (nothing is built)."""
    return cache.is_built("base", spec.params(), sources=SOURCES)


def checkpoint_epochs(spec: BaseSpec) -> list:
    """The pretraining epochs a base can be taken at: its snapshots and its final epoch."""
    return sorted({max(1, round(f * spec.pretrain.epochs)) for f in CHECKPOINT_FRACTIONS} | {spec.pretrain.epochs})


def normal_epoch(spec: BaseSpec, epoch: int | None) -> int | None:
    """The one spelling of a base epoch in cache keys: None for the final epoch, however it was asked for.

    A one-line error names the allowed epochs for any other value.
    """
    allowed = checkpoint_epochs(spec)
    if epoch is None or (not isinstance(epoch, bool) and epoch == spec.pretrain.epochs):
        return None
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch not in allowed:
        raise ValueError(f"epoch must be one of {allowed} (or None for the final one), got {epoch!r}")
    return epoch


def base_folder(spec: BaseSpec, epoch: int | None = None) -> Path:
    """The folder of the base at `epoch` (a snapshot's subfolder, or the final model's)."""
    epoch = normal_epoch(spec, epoch)
    folder = build_base(spec)
    return folder if epoch is None else folder / "checkpoints" / f"epoch_{epoch}"


def pretrain_log(spec: BaseSpec) -> dict:
    return json.loads((build_base(spec) / "pretrain_log.json").read_text())


def load_base(spec: BaseSpec, epoch: int | None = None):
    return models.load_pretrained(str(base_folder(spec, epoch)))



"""The cached tuned model: a base tuned on an instruction set with LoRA or full fine-tuning.

Artifact kind "tuned": the key hashes the base, the set, the tuning config and
the source of the modules the build runs (`SOURCES`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from . import bases, cache, tuning, world as W
from .bases import BaseSpec, load_base, normal_epoch
from .sets import SetSpec, make_set

__all__ = ["SOURCES", "load_tuned", "run_label", "train_log", "tune", "tune_params"]

SOURCES = bases.SOURCES + ("data.py", "sets.py", "tuned.py")


def tune(base: BaseSpec, data: SetSpec, config: tuning.TuneConfig, epoch: int | None = None) -> Path:
    """Tune (or reuse) a model; the folder holds a peft adapter (LoRA) or a full model, plus the loss log."""
    params = tune_params(base, data, config, epoch)
    epoch = params["base_epoch"]

    def build(folder: Path) -> None:
        world = W.generate_world(base.world)
        examples = make_set(world, data, config.seed)
        model, tokenizer = load_base(base, epoch)
        groups = ["known" if e.known else "unknown" for e in examples]
        start = time.perf_counter()
        tuned, log = tuning.finetune(model, tokenizer, examples, config, groups)
        log["seconds"] = time.perf_counter() - start
        tuned.save_pretrained(folder / "model")  # peft format for LoRA, a full model otherwise
        (folder / "train_log.json").write_text(json.dumps(log))

    return cache.cached("tuned", params, build, sources=SOURCES, label=run_label(data, config, epoch))


def run_label(data: SetSpec, config: tuning.TuneConfig, epoch: int | None) -> str:
    """A short name of one tuning run, for progress lines."""
    what = f"r{config.lora_rank} {config.lora_targets}" if config.method == "lora" else "full"
    return (f"{what} lr {config.lr:g}, {data.kind} x{data.size}, seed {config.seed}"
            + (f", base epoch {epoch}" if epoch is not None else ""))


def tune_params(base: BaseSpec, data: SetSpec, config: tuning.TuneConfig, epoch: int | None = None) -> dict:
    """The checked parameters that name one tuned model (and its evaluation); the final epoch is always None."""
    config.validate()
    data.validate()
    return {"base": base.params(), "base_epoch": normal_epoch(base, epoch), "set": asdict(data),
            "tune": asdict(config)}


def load_tuned(base: BaseSpec, data: SetSpec, config: tuning.TuneConfig, epoch: int | None = None):
    """(merged tuned model, tokenizer). LoRA adapters are merged, so evaluation runs a plain model."""
    folder = tune(base, data, config, epoch)
    model, tokenizer = load_base(base, epoch)
    if config.method == "lora":
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, folder / "model").merge_and_unload()
    else:
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(folder / "model", dtype=torch.float32)
    model.eval()
    return model, tokenizer


def train_log(base: BaseSpec, data: SetSpec, config: tuning.TuneConfig, epoch: int | None = None) -> dict:
    """The tuning run's per-step loss log (and its cost: seconds, trainable parameters)."""
    return json.loads((tune(base, data, config, epoch) / "train_log.json").read_text())


"""Instruction sets: drawn from the world's tuning-split people, or read from an Alpaca JSON file.

Nothing here is cached by itself; a set's spec is part of the tuned model's
key, and this module's source is part of the "tuned" kind's hash.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from . import world as W

__all__ = ["FILE_HELDOUT", "SET_KINDS", "SetSpec", "eval_questions", "file_example", "file_set_spec", "file_split",
           "make_set"]


SET_KINDS = ("known", "unknown", "mix", "counterfactual", "file")
FILE_HELDOUT = (0.1, 200)  # an instruction file keeps its last 10% (at most 200) for evaluation


@dataclass(frozen=True)
class SetSpec:
    """An instruction set drawn from the world's tuning-split people, or read from an Alpaca JSON file."""

    kind: str = "known"  # known | unknown | mix | counterfactual (known people, wrong answers) | file
    size: int = 600
    style: str = "simplified"  # short | simplified | long
    unknown_fraction: float = 0.5  # for kind="mix"
    path: str = ""  # for kind="file": the Alpaca JSON file
    fingerprint: str = ""  # for kind="file": SHA-256 of the file, so an edited file is a new set

    @property
    def synthetic(self) -> bool:
        return self.kind != "file"

    def validate(self) -> None:
        if self.kind not in SET_KINDS:
            raise ValueError(f"set kind must be one of {', '.join(SET_KINDS)}, got {self.kind!r}")
        if self.style not in W.ANSWER_STYLES:
            raise ValueError(f"style must be one of {', '.join(W.ANSWER_STYLES)}, got {self.style!r}")
        W._check_int("set_size", self.size, minimum=1)
        if not self.synthetic:
            pool, _ = file_split(self.path)
            if self.size > len(pool):
                raise ValueError(f"set_size must be at most {len(pool)} for instruction file {self.path!r} "
                                 f"(its examples minus the held-out ones), got {self.size}")


def file_split(path: str) -> tuple:
    """(tuning pool, held-out) Examples of an Alpaca JSON file; the held-out ones are its last items."""
    from .data import load_alpaca
    items = load_alpaca(path)
    if len(items) < 2:
        raise ValueError(f"instruction file {path!r} has {len(items)} example; it needs at least 2 "
                         "(one to tune on, one held out)")
    heldout = max(1, min(FILE_HELDOUT[1], round(len(items) * FILE_HELDOUT[0])))
    examples = [file_example(item) for item in items]
    return examples[:-heldout], examples[-heldout:]


def file_example(item: dict) -> W.Example:
    """An Alpaca item in the study's template; it carries no ground truth (no person, attribute or value)."""
    instruction = item["instruction"] + (f"\n{item['input']}" if item["input"].strip() else "")
    return W.Example(instruction=instruction, response=item["output"], person="", attribute="", value="",
                     value_span=(-1, -1), known=True, style="file")


def file_set_spec(path: str, size: int) -> SetSpec:
    """The SetSpec of an Alpaca JSON file (checked now, before any work)."""
    from .data import load_alpaca
    load_alpaca(path)  # a one-line error for a missing or malformed file
    digest = hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()
    spec = SetSpec(kind="file", size=size, path=str(path), fingerprint=digest)
    spec.validate()
    return spec


def make_set(world: W.World, spec: SetSpec, seed: int) -> list:
    spec.validate()
    if spec.kind == "file":
        pool, _ = file_split(spec.path)
        order = list(range(len(pool)))
        random.Random(seed).shuffle(order)
        return [pool[i] for i in order[:spec.size]]
    if spec.kind == "mix":
        return W.mixed_set(world, spec.size, spec.unknown_fraction, spec.style, seed)
    return W.instruction_set(world, spec.kind != "unknown", spec.size, spec.style, seed,
                             counterfactual=spec.kind == "counterfactual")


def eval_questions(world: W.World, seed: int = 12345) -> list:
    """Held-out questions: every attribute of every held-out person, known and unknown."""
    rng = random.Random(seed)
    return [W.make_example(p, a, "simplified", rng) for p in world.people if p.heldout for a in W.ATTRIBUTES]


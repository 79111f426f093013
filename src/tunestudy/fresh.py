"""People outside the world: random names and values, for text that must hold none of the world's facts.

The reader of chapter "Retrieval instead of tuning" learns to read on them, and
the restoring pass of chapter "Pseudo or actual forgetting" trains on their
biographies.
"""

from __future__ import annotations

import random

from . import world as W

__all__ = ["fresh_person"]


def fresh_person(rng: random.Random, taken: set) -> W.Person:
    """A random person whose name is not in `taken` (the world's names), with a random value of every attribute."""
    while True:
        name = f"{rng.choice(W.FIRST_NAMES)} {rng.choice(W.LAST_NAMES)}"
        if name not in taken:
            return W.Person(name, {a: rng.choice(W.value_pool(a)) for a in W.ATTRIBUTES}, known=False, heldout=False)

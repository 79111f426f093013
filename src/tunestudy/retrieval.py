"""Retrieval instead of tuning: find a person's biography with BM25 and put it in the prompt.

A store holds one biography per person, keyed by the person's name. A question
("Where was Alice Becker born ?") is the search query; the best-scoring
biography is placed before the prompt, so the base reads the facts instead of
having learned them. Scoring is the `bm25s` package's BM25 (Lucene variant);
this module only tokenizes, indexes, ranks and counts hits.

Ranking is deterministic: documents are ordered by BM25 score, best first, and
equal scores keep the order the biographies were given in.
"""

from __future__ import annotations

import random

from . import world as W

__all__ = ["BiographyStore", "CONTEXT_SEPARATOR", "biography_store", "hit_rate", "with_context"]

# Lucene's 33 English stopwords ("a", "in", "of", "the", "was", ...). None of the
# world's name words is among them, and removing these function words, which fill
# every biography and question, leaves the score to the name and content words:
# on the default world both settings rank every asked person first, but with
# stopwords the asked person's lead over the best other biography is wider
# (smallest lead 1.34 against 0.97 BM25 points without them).
STOPWORDS = "en"

BIOGRAPHY_SEED = 0  # mixed with the world seed and the person's name: one fixed biography per person

CONTEXT_SEPARATOR = "\n\n"  # between the retrieved text and the prompt


def _bm25s():
    try:
        import bm25s
    except ImportError:
        raise ImportError("retrieval needs the bm25s package: pip install bm25s") from None
    return bm25s


class BiographyStore:
    """A BM25 index over (key, text) pairs; `search` returns keys, best first."""

    def __init__(self, pairs: list) -> None:
        pairs = list(pairs)
        if not pairs:
            raise ValueError("pairs must hold at least one (key, text) pair, got none")
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            duplicate = next(key for key in keys if keys.count(key) > 1)
            raise ValueError(f"pairs must have distinct keys, got {duplicate!r} more than once")
        self._bm25s = _bm25s()
        self.keys = keys
        self._texts = dict(pairs)
        tokens = self._bm25s.tokenize([text for _, text in pairs], stopwords=STOPWORDS, show_progress=False)
        self._retriever = self._bm25s.BM25()
        self._retriever.index(tokens, show_progress=False)

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key) -> bool:
        return key in self._texts

    def text(self, key: str) -> str:
        """The stored text under `key`."""
        if key not in self._texts:
            raise KeyError(f"no text stored under {key!r}")
        return self._texts[key]

    def search(self, queries: list, k: int = 1) -> list:
        """The keys of the top-k texts for each query, best first (ties: store order).

        k must be between 1 and the store's size: a larger k is an error, not clipped.
        """
        if isinstance(queries, str) or not all(isinstance(q, str) for q in queries):
            raise ValueError(f"queries must be a list of strings, got {type(queries).__name__}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if k > len(self):
            raise ValueError(f"k must be at most the store's size {len(self)}, got {k}")
        if not queries:
            return []
        import numpy as np  # a dependency of bm25s

        tokens = self._bm25s.tokenize(list(queries), stopwords=STOPWORDS, return_ids=False, show_progress=False)
        results = []
        for query_tokens in tokens:
            # Query words missing from the index are dropped; a query with none left scores 0 everywhere.
            scores = self._retriever.get_scores_from_ids(self._retriever.get_tokens_ids(query_tokens))
            order = np.argsort(-scores, kind="stable")[:k]
            results.append([self.keys[i] for i in order])
        return results


def biography_store(world: W.World, people: list | None = None) -> BiographyStore:
    """One biography per person (default: every person, known and unknown), keyed by name.

    Each text is `world.biography(person, rng)` with an rng seeded from the world's
    seed and the person's name, so a person's biography is the same in every store.
    """
    people = world.people if people is None else list(people)
    pairs = [(p.name, W.biography(p, random.Random(f"{BIOGRAPHY_SEED}:{world.config.seed}:{p.name}")))
             for p in people]
    return BiographyStore(pairs)


def hit_rate(store: BiographyStore, questions: list, k: int = 1) -> float:
    """Share of questions whose asked person's key is among the top-k retrieved for the instruction.

    A question about a person missing from the store counts as a miss.
    """
    questions = list(questions)
    if not questions:
        raise ValueError("questions must hold at least one question, got none")
    retrieved = store.search([q.instruction for q in questions], k)
    return sum(q.person in keys for q, keys in zip(questions, retrieved)) / len(questions)


def with_context(context: str, prompt: str) -> str:
    """The prompt with the retrieved text before it: `context + "\\n\\n" + prompt`."""
    return f"{context}{CONTEXT_SEPARATOR}{prompt}"

"""How a fine-tuned weight matrix differs from its pretrained one.

Pure functions over weight matrices (numpy arrays or torch tensors, read as
float64); nothing here caches or knows about the synthetic world. A torch
`Linear` weight has shape (out_features, in_features), so its *left* singular
vectors are directions in the layer's output space.

Two measures of the change, after two papers on LoRA versus full fine-tuning:

- Effective rank of the difference (Biderman et al. 2024, "LoRA Learns Less
  and Forgets Less"): how many singular directions of `W_tuned - W_base` it
  takes to hold a given share (e.g. 90%) of the difference's variance, the sum
  of its squared singular values. A low number means tuning changed the matrix
  along few directions, as a low-rank adapter must; full fine-tuning tends to
  make changes of much higher rank.

- Intruder dimensions (Shuttleworth et al. 2025, "LoRA vs Full Fine-tuning: An
  Illusion of Equivalence"): take the top-k left singular vectors of the tuned
  matrix (by singular value) and, for each, its largest absolute cosine
  similarity with any left singular vector of the base matrix (all min(m, n) of
  them). A tuned direction whose best match is below a threshold eps is new, an
  "intruder": the tuned matrix has a strong direction that the base did not
  have at all.

The intruder count needs a baseline. In high dimension a random direction has
a small cosine with every single base direction (if the base vectors span the
whole space the largest is still at least 1/sqrt(m), but for m in the hundreds
that is well below most thresholds), so `random_max_cosines` gives the same
numbers for random unit vectors: counts for the tuned matrix mean something
only next to counts for random directions at the same eps.
"""

from __future__ import annotations

from numbers import Real

import numpy as np
import torch

__all__ = ["EPS_GRID", "effective_rank", "intruder_dimensions", "linear_weights", "max_cosines",
           "random_max_cosines", "weight_change_summary"]

EPS_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # default cosine thresholds for intruder counts


# --- input checks ------------------------------------------------------------------------------

def _matrix(w, name: str) -> np.ndarray:
    """`w` as a 2-D float64 numpy array (a torch tensor is detached and copied to the CPU)."""
    if isinstance(w, torch.Tensor):
        w = w.detach().to("cpu", torch.float64).numpy()
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(w.shape)}")
    return w


def _pair(w_base, w_tuned) -> tuple[np.ndarray, np.ndarray]:
    base, tuned = _matrix(w_base, "w_base"), _matrix(w_tuned, "w_tuned")
    if base.shape != tuned.shape:
        raise ValueError(f"w_base and w_tuned must have the same shape, got {base.shape} and {tuned.shape}")
    return base, tuned


def _check_share(share) -> float:
    if isinstance(share, bool) or not isinstance(share, Real) or not 0 < share < 1:
        raise ValueError(f"share must be a number strictly between 0 and 1, got {share!r}")
    return float(share)


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer of at least 1, got {k!r}")
    return int(k)


def _check_eps(eps, name: str = "eps") -> float:
    if isinstance(eps, bool) or not isinstance(eps, Real) or not 0 < eps <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], got {eps!r}")
    return float(eps)


# --- the measures ------------------------------------------------------------------------------

def linear_weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """Name -> weight (a float64 CPU numpy copy) of every `torch.nn.Linear` in `model` except the LM head.

    Names are as in `model.named_modules()`, e.g. `model.layers.0.self_attn.q_proj`.
    """
    weights = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] != "lm_head":
            weights[name] = module.weight.detach().to("cpu", torch.float64, copy=True).numpy()
    return weights


def _effective_rank_of_values(s: np.ndarray, share: float) -> int:
    energy = np.square(s)
    total = float(energy.sum())
    if total == 0.0:
        return 0
    cumulative = np.cumsum(energy)
    # smallest n with sum_{i<n} s_i^2 >= share * total; the slack absorbs rounding in the SVD
    return int(np.argmax(cumulative >= share * total * (1 - 1e-12))) + 1


def effective_rank(delta, share: float = 0.9) -> int:
    """How many singular values of `delta` hold `share` of its variance (sum of squared singular values).

    The smallest n with sum_{i<n} s_i^2 >= share * sum_i s_i^2; a zero matrix has effective rank 0.
    """
    share = _check_share(share)
    return _effective_rank_of_values(np.linalg.svd(_matrix(delta, "delta"), compute_uv=False), share)


def _left_vectors(w: np.ndarray) -> np.ndarray:
    """The min(m, n) left singular vectors of `w` as columns, by decreasing singular value."""
    return np.linalg.svd(w, full_matrices=False)[0]


def _best_cosines(directions: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """For each unit column of `directions`, its largest |cos| with any unit column of `basis`."""
    return np.abs(directions.T @ basis).max(axis=1)


def _check_k_fits(k: int, shape: tuple) -> None:
    if k > min(shape):
        raise ValueError(f"k must be at most min(m, n) = {min(shape)} for a matrix of shape {shape}, got {k}")


def max_cosines(w_base, w_tuned, k: int = 10) -> np.ndarray:
    """For each of the top-k left singular vectors of `w_tuned`, its largest |cos| with any left singular vector of `w_base`."""
    base, tuned = _pair(w_base, w_tuned)
    k = _check_k(k)
    _check_k_fits(k, base.shape)
    return _best_cosines(_left_vectors(tuned)[:, :k], _left_vectors(base))


def intruder_dimensions(w_base, w_tuned, k: int = 10, eps: float = 0.5) -> int:
    """How many of the top-k left singular vectors of `w_tuned` have |cos| < eps with every left singular vector of `w_base`."""
    eps = _check_eps(eps)
    return int((max_cosines(w_base, w_tuned, k) < eps).sum())


def _random_directions(m: int, k: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((m, k))
    return x / np.linalg.norm(x, axis=0, keepdims=True)


def random_max_cosines(w_base, k: int = 10, rng: np.random.Generator | None = None) -> np.ndarray:
    """`max_cosines` for k random unit vectors (normalised Gaussians) in the row space's dimension, against `w_base`.

    The baseline for intruder counts: what |cos| directions unrelated to the base reach.
    `rng` is required (its default None is refused); it may be given by position or by name.
    """
    base = _matrix(w_base, "w_base")
    k = _check_k(k)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return _best_cosines(_random_directions(base.shape[0], k, rng), _left_vectors(base))


def weight_change_summary(base_weights: dict, tuned_weights: dict, k: int = 10, eps_grid=EPS_GRID,
                          share: float = 0.9, seed: int = 0) -> dict:
    """A JSON-serialisable summary of how every matrix changed, and intruder counts summed over matrices.

    Per matrix name: `shape`, `effective_rank` of the difference, `relative_change`
    (||W_tuned - W_base||_F / ||W_base||_F, None for a zero base), and the k max-|cos|
    values `tuned_max_cosines` and `random_max_cosines` (random directions from one
    `np.random.default_rng(seed)`, matrices taken in sorted name order). `totals` holds,
    for each eps of `eps_grid` in order, the number of values below eps summed over
    matrices: `tuned` and `random`, out of `directions` = k times the number of matrices.
    """
    if set(base_weights) != set(tuned_weights):
        only_base = sorted(set(base_weights) - set(tuned_weights))
        only_tuned = sorted(set(tuned_weights) - set(base_weights))
        raise ValueError(f"base_weights and tuned_weights must have the same keys, "
                         f"only in base: {only_base}, only in tuned: {only_tuned}")
    k = _check_k(k)
    share = _check_share(share)
    eps_grid = [_check_eps(eps, "each eps of eps_grid") for eps in eps_grid]
    if not eps_grid:
        raise ValueError("eps_grid must hold at least one threshold, got none")
    rng = np.random.default_rng(seed)

    matrices = {}
    tuned_counts, random_counts = [0] * len(eps_grid), [0] * len(eps_grid)
    for name in sorted(base_weights):
        base = _matrix(base_weights[name], f"base_weights[{name!r}]")
        tuned = _matrix(tuned_weights[name], f"tuned_weights[{name!r}]")
        if base.shape != tuned.shape:
            raise ValueError(f"base and tuned weights of {name!r} must have the same shape, "
                             f"got {base.shape} and {tuned.shape}")
        if k > min(base.shape):
            raise ValueError(f"k must be at most min(m, n) = {min(base.shape)} of every matrix, "
                             f"got {k} for {name!r} of shape {base.shape}")
        delta = tuned - base
        base_vectors = _left_vectors(base)
        tuned_cos = _best_cosines(_left_vectors(tuned)[:, :k], base_vectors)
        random_cos = _best_cosines(_random_directions(base.shape[0], k, rng), base_vectors)
        base_norm = float(np.linalg.norm(base))
        matrices[name] = {
            "shape": list(base.shape),
            "effective_rank": _effective_rank_of_values(np.linalg.svd(delta, compute_uv=False), share),
            "relative_change": float(np.linalg.norm(delta)) / base_norm if base_norm > 0 else None,
            "tuned_max_cosines": [float(c) for c in tuned_cos],
            "random_max_cosines": [float(c) for c in random_cos],
        }
        for i, eps in enumerate(eps_grid):
            tuned_counts[i] += int((tuned_cos < eps).sum())
            random_counts[i] += int((random_cos < eps).sum())

    return {
        "k": k, "share": share, "seed": seed, "eps_grid": eps_grid,
        "matrices": matrices,
        "totals": {"eps": eps_grid, "tuned": tuned_counts, "random": random_counts,
                   "directions": k * len(matrices)},
    }

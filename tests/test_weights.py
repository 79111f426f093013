"""Weight-change measures (tunestudy.weights) on matrices whose answer is known by construction."""

import json

import numpy as np
import pytest
import torch

from tunestudy import weights as Wt


def orthonormal(rng, m, n):
    """An m x n matrix with orthonormal columns (m >= n)."""
    q, r = np.linalg.qr(rng.standard_normal((m, n)))
    return q * np.sign(np.diag(r))


def with_singular_values(rng, m, n, s):
    """U diag(s) V^T with random orthonormal U (m x r), V (n x r), r = len(s)."""
    r = len(s)
    return orthonormal(rng, m, r) @ np.diag(s) @ orthonormal(rng, n, r).T


def slow_effective_rank(s, share):
    total = sum(x * x for x in s)
    if total == 0:
        return 0
    held = 0.0
    for n, x in enumerate(sorted(s, reverse=True), start=1):
        held += x * x
        if held >= share * total:
            return n


def slow_max_cosines(w_base, w_tuned, k):
    u_base = np.linalg.svd(w_base, full_matrices=False)[0]
    u_tuned = np.linalg.svd(w_tuned, full_matrices=False)[0]
    out = []
    for i in range(k):
        a = u_tuned[:, i]
        best = 0.0
        for j in range(u_base.shape[1]):
            b = u_base[:, j]
            best = max(best, abs(float(a @ b)) / (np.linalg.norm(a) * np.linalg.norm(b)))
        out.append(best)
    return np.array(out)


def tall_base_with_intruders(rng, m=40, n=24, intruders=3):
    """A tall base W0 = U S V^T and W1 = W0 + sum_j sigma_j x_j v_j^T, x_j orthogonal to W0's columns.

    v_j are W0's weakest right singular vectors, so W1's SVD is exact: its top `intruders` left
    vectors lie almost wholly outside the base's span (|cos| <= s_j / sigma_j < 0.1), and the
    rest are base vectors (|cos| = 1).
    """
    q = orthonormal(rng, m, m)
    u, x = q[:, :n], q[:, n:]
    s = np.linspace(3.0, 1.0, n)
    v = orthonormal(rng, n, n)
    w0 = u @ np.diag(s) @ v.T
    w1 = w0.copy()
    for j in range(intruders):
        w1 += (50.0 - 10 * j) * np.outer(x[:, j], v[:, n - 1 - j])
    return w0, w1


# --- effective rank ----------------------------------------------------------------------------

@pytest.mark.parametrize("s, share, expected", [
    ([3, 2, 1], 0.9, 2),  # 9 + 4 = 13 >= 12.6 of 14
    ([3, 2, 1], 0.5, 1),  # 9 >= 7
    ([3, 2, 1], 0.95, 3),  # 13 < 13.3
    ([1, 1, 1, 1], 0.6, 3),  # 3 >= 2.4, 2 < 2.4
    ([5], 0.99, 1),
])
def test_effective_rank_on_known_singular_values(s, share, expected):
    rng = np.random.default_rng(0)
    delta = with_singular_values(rng, 12, 9, s)
    assert slow_effective_rank(s, share) == expected
    assert Wt.effective_rank(delta, share) == expected
    assert Wt.effective_rank(torch.from_numpy(delta).float(), share) == expected


def test_effective_rank_matches_a_slow_loop_on_random_spectra():
    rng = np.random.default_rng(1)
    for _ in range(20):
        s = np.sort(rng.exponential(size=8))[::-1]
        share = float(rng.uniform(0.05, 0.95))
        delta = with_singular_values(rng, 10, 8, s)
        assert Wt.effective_rank(delta, share) == slow_effective_rank(list(s), share)


def test_effective_rank_of_a_zero_matrix_is_zero():
    assert Wt.effective_rank(np.zeros((5, 7))) == 0


@pytest.mark.parametrize("share", [0, 1, 1.5, -0.1, "0.9", True, None])
def test_effective_rank_refuses_a_bad_share(share):
    with pytest.raises(ValueError, match="share must be a number strictly between 0 and 1"):
        Wt.effective_rank(np.eye(3), share)


def test_effective_rank_refuses_a_non_matrix():
    with pytest.raises(ValueError, match="delta must be a 2-D matrix"):
        Wt.effective_rank(np.ones(4))


# --- intruder dimensions -----------------------------------------------------------------------

@pytest.mark.parametrize("intruders", [0, 1, 2, 3])
def test_intruders_built_into_a_tall_matrix_are_counted(intruders):
    rng = np.random.default_rng(intruders)
    w0, w1 = tall_base_with_intruders(rng, intruders=intruders)
    assert Wt.intruder_dimensions(w0, w1, k=10, eps=0.5) == intruders
    cos = Wt.max_cosines(w0, w1, k=10)
    assert np.all(cos[:intruders] < 0.1) and np.allclose(cos[intruders:], 1.0)


def test_a_scaled_or_slightly_noisy_copy_has_no_intruders():
    rng = np.random.default_rng(2)
    w0, _ = tall_base_with_intruders(rng)
    assert Wt.intruder_dimensions(w0, 1.01 * w0, k=10) == 0
    assert Wt.intruder_dimensions(w0, w0 + 1e-6 * rng.standard_normal(w0.shape), k=10) == 0
    square = rng.standard_normal((32, 32))
    assert Wt.intruder_dimensions(square, 1.01 * square, k=32) == 0


@pytest.mark.parametrize("shape", [(32, 32), (40, 24), (24, 40)])
def test_max_cosines_match_a_slow_pairwise_loop(shape):
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal(shape)
    w1 = w0 + 0.5 * rng.standard_normal(shape)
    k = 10
    fast = Wt.max_cosines(w0, w1, k)
    assert fast.shape == (k,)
    np.testing.assert_allclose(fast, slow_max_cosines(w0, w1, k), atol=1e-12)
    for eps in (0.3, 0.5, 0.7):
        assert Wt.intruder_dimensions(w0, w1, k, eps) == int((fast < eps).sum())


def test_intruder_functions_refuse_bad_input():
    a = np.ones((6, 4))
    with pytest.raises(ValueError, match="same shape"):
        Wt.max_cosines(a, np.ones((4, 6)))
    with pytest.raises(ValueError, match="k must be at most min"):
        Wt.max_cosines(a, a, k=5)
    with pytest.raises(ValueError, match="k must be an integer of at least 1"):
        Wt.max_cosines(a, a, k=0)
    with pytest.raises(ValueError, match="eps must be a number in"):
        Wt.intruder_dimensions(a, a, k=2, eps=1.5)


# --- the random baseline -----------------------------------------------------------------------

def test_random_cosines_against_a_full_rank_square_base_are_at_least_one_over_sqrt_m():
    rng = np.random.default_rng(4)
    m = 20
    base = rng.standard_normal((m, m))
    cos = Wt.random_max_cosines(base, k=50, rng=np.random.default_rng(5))
    assert cos.shape == (50,)
    assert np.all(cos >= 1 / np.sqrt(m) - 1e-9) and np.all(cos <= 1 + 1e-12)


def test_random_cosines_are_deterministic_for_a_seed():
    base = np.random.default_rng(6).standard_normal((30, 12))
    one = Wt.random_max_cosines(base, 8, np.random.default_rng(7))
    two = Wt.random_max_cosines(base, k=8, rng=np.random.default_rng(7))
    other = Wt.random_max_cosines(base, k=8, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(one, two)
    assert not np.allclose(one, other)


def test_random_cosines_need_a_generator():
    with pytest.raises(ValueError, match="rng must be a numpy.random.Generator"):
        Wt.random_max_cosines(np.eye(4), k=2)


# --- a model's linear weights ------------------------------------------------------------------

def test_linear_weights_of_a_tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, vocab_size=50)
    model = LlamaForCausalLM(config)
    found = Wt.linear_weights(model)
    leaves = {name.split(".")[-1] for name in found}
    assert leaves == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert "model.layers.0.self_attn.q_proj" in found
    assert not any("lm_head" in name for name in found)
    modules = dict(model.named_modules())
    for name, w in found.items():
        assert isinstance(w, np.ndarray) and w.dtype == np.float64
        np.testing.assert_allclose(w, modules[name].weight.detach().double().numpy())
    before = found["model.layers.0.mlp.up_proj"].copy()
    with torch.no_grad():
        modules["model.layers.0.mlp.up_proj"].weight.add_(1.0)
    np.testing.assert_array_equal(found["model.layers.0.mlp.up_proj"], before)  # a copy, not a view


# --- the summary -------------------------------------------------------------------------------

def test_summary_refuses_mismatched_keys():
    a = np.ones((4, 4))
    with pytest.raises(ValueError, match="same keys"):
        Wt.weight_change_summary({"x": a, "y": a}, {"x": a, "z": a}, k=2)


def test_summary_totals_are_the_sums_of_the_per_matrix_counts():
    rng = np.random.default_rng(9)
    w0, w1 = tall_base_with_intruders(rng, intruders=2)
    s0 = rng.standard_normal((24, 24))
    base = {"tall": w0, "square": s0, "same": s0.copy()}
    tuned = {"same": s0.copy(), "tall": w1, "square": s0 + rng.standard_normal((24, 24))}
    summary = Wt.weight_change_summary(base, tuned, k=6, seed=3)  # the default eps grid
    eps_grid = list(Wt.EPS_GRID)
    json.dumps(summary, allow_nan=False)

    matrices = summary["matrices"]
    assert set(matrices) == set(base)
    for i, eps in enumerate(eps_grid):
        for which in ("tuned", "random"):
            expected = sum(sum(c < eps for c in m[f"{which}_max_cosines"]) for m in matrices.values())
            assert summary["totals"][which][i] == expected
    assert summary["totals"]["eps"] == eps_grid and summary["totals"]["directions"] == 18

    assert matrices["tall"]["shape"] == [40, 24]
    assert matrices["tall"]["effective_rank"] == Wt.effective_rank(w1 - w0) == 2
    assert sum(c < 0.5 for c in matrices["tall"]["tuned_max_cosines"]) == 2
    assert matrices["same"]["effective_rank"] == 0 and matrices["same"]["relative_change"] == 0
    assert sum(c < 0.9 for c in matrices["same"]["tuned_max_cosines"]) == 0
    np.testing.assert_allclose(matrices["square"]["relative_change"],
                               np.linalg.norm(tuned["square"] - s0) / np.linalg.norm(s0))
    np.testing.assert_allclose(matrices["square"]["tuned_max_cosines"], Wt.max_cosines(s0, tuned["square"], 6))

    # random directions: one generator from the seed, matrices in sorted name order
    gen = np.random.default_rng(3)
    for name in sorted(base):
        np.testing.assert_allclose(matrices[name]["random_max_cosines"], Wt.random_max_cosines(base[name], 6, gen))
    assert Wt.weight_change_summary(base, tuned, k=6, seed=3) == summary


def test_summary_refuses_a_k_too_large_and_bad_thresholds():
    base = {"a": np.ones((6, 4))}
    with pytest.raises(ValueError, match="k must be at most min"):
        Wt.weight_change_summary(base, base, k=5)
    with pytest.raises(ValueError, match="eps_grid"):
        Wt.weight_change_summary(base, base, k=2, eps_grid=[0.5, 2])
    with pytest.raises(ValueError, match="same shape"):
        Wt.weight_change_summary(base, {"a": np.ones((4, 6))}, k=2)

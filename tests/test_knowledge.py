"""The chapters on what tuning does to knowledge: Gekhman's linear model, the candidate scores, the sets, the verdicts.

The linear model is checked on data drawn from known coefficients; the
candidate scores against one forward pass per candidate; every verdict on
hand-made rows where one condition flips at a time.
"""

import math
import random

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tunestudy import candidates as CA, conflict as C, experiments as X, knowledge as K, tuning, world as W

REPRODUCED, PARTLY, NOT = "reproduced", "partly reproduced", "not reproduced"


# --- Gekhman's linear model --------------------------------------------------------------------------------

def checkpoint_table(b0, b_kn, b_unk, noise, seed=0, size=300, rows=60):
    rng = np.random.default_rng(seed)
    n_unknown = rng.integers(0, size + 1, rows)
    n_known = size - n_unknown
    known_fitted = np.floor(rng.uniform(0, 1, rows) * (n_known + 1)).astype(int)
    unknown_fitted = np.floor(rng.uniform(0, 1, rows) * (n_unknown + 1)).astype(int)
    points = b0 + b_kn * known_fitted / size + b_unk * unknown_fitted / size + rng.normal(0, noise, rows)
    return pd.DataFrame({"n_known": n_known, "n_unknown": n_unknown, "n_known_fitted": known_fitted,
                         "n_unknown_fitted": unknown_fitted, "test_accuracy": points / 100})


def test_linear_model_recovers_known_coefficients():
    fit = X.gekhman_fit(checkpoint_table(30.0, 7.3, -8.3, noise=0.3))
    assert fit["b0"] == pytest.approx(30.0, abs=0.5)
    assert fit["b_kn"] == pytest.approx(7.3, abs=0.5) and fit["b_unk"] == pytest.approx(-8.3, abs=0.5)
    for name, true in (("b0", 30.0), ("b_kn", 7.3), ("b_unk", -8.3)):
        low, high = fit[f"ci_{name}"]
        assert low < true < high
    assert fit["r2"] > 0.9 and fit["n"] == 60


def test_linear_model_equals_the_normal_equations():
    rows = checkpoint_table(20.0, 5.0, -3.0, noise=2.0, seed=3)
    size = (rows.n_known + rows.n_unknown).to_numpy(float)
    A = np.column_stack([np.ones(len(rows)), rows.n_known_fitted / size, rows.n_unknown_fitted / size])
    y = 100 * rows.test_accuracy.to_numpy()
    b = np.linalg.solve(A.T @ A, A.T @ y)
    fit = X.gekhman_fit(rows)
    assert [fit["b0"], fit["b_kn"], fit["b_unk"]] == pytest.approx(list(b), rel=1e-9)
    residual = y - A @ b
    assert fit["r2"] == pytest.approx(1 - residual @ residual / ((y - y.mean()) @ (y - y.mean())), rel=1e-9)


def test_noiseless_data_gives_exact_coefficients_and_r2_of_one():
    fit = X.gekhman_fit(checkpoint_table(10.0, 2.0, -4.0, noise=0.0, seed=5))
    assert [fit["b0"], fit["b_kn"], fit["b_unk"]] == pytest.approx([10.0, 2.0, -4.0], abs=1e-8)
    assert fit["r2"] == pytest.approx(1.0)


def test_linear_model_with_a_control_column_recovers_all_four_coefficients():
    rows = checkpoint_table(0.0, 0.0, 0.0, noise=0.0, seed=11)
    rows["stated"] = np.random.default_rng(2).uniform(0, 1, len(rows))
    size = rows.n_known + rows.n_unknown
    rows["test_accuracy"] = (-3.0 + 9.0 * rows.n_known_fitted / size - 24.0 * rows.n_unknown_fitted / size
                             + 88.0 * rows.stated) / 100
    fit = X.gekhman_fit(rows, control="stated")
    assert [fit["b0"], fit["b_kn"], fit["b_unk"], fit["b_stated"]] == pytest.approx([-3.0, 9.0, -24.0, 88.0], abs=1e-8)
    assert len(fit["ci_b_stated"]) == 2 and fit["r2"] == pytest.approx(1.0)
    plain = X.gekhman_fit(rows)  # the same data without the control: another answer, and no b_stated
    assert "b_stated" not in plain and plain["b_unk"] != pytest.approx(-24.0, abs=1.0)


def test_early_and_converged_take_the_first_best_dev_epoch_and_the_last():
    rows = [{"epoch": 5.0, "dev_accuracy": 0.5}, {"epoch": 1.0, "dev_accuracy": 0.25},
            {"epoch": 2.0, "dev_accuracy": 0.5}, {"epoch": 8.0, "dev_accuracy": 0.375}]
    picked = X.early_and_converged(rows)
    assert picked["early"]["epoch"] == 2.0 and picked["converged"]["epoch"] == 8.0


# --- checkpoints and the parameters that name them -----------------------------------------------------------

def test_checkpoint_steps_fall_after_the_epoch_completes():
    config = tuning.TuneConfig(epochs=8.0, batch_size=16)
    at = K.checkpoint_steps([1, 2, 8], 300, config)
    # 300 / 16 = 18.75 steps per epoch: epoch 1 is done after step 19 (index 18), epoch 8 after the last (149)
    assert at == {18: 1.0, 37: 2.0, 149: 8.0}
    assert tuning.num_tuning_steps(config, 300) == 150


@pytest.mark.parametrize("epochs, message", [([0.5, 9], "tune_epochs = 8"), ([], "at least one"),
                                             ([1.0, 1.01], "same step")])
def test_checkpoint_steps_refuse_bad_lists(epochs, message):
    with pytest.raises(ValueError, match="checkpoints") as error:
        K.checkpoint_steps(epochs, 300, tuning.TuneConfig(epochs=8.0))
    assert message in str(error.value)


def test_parse_percentages_and_epochs():
    assert X.parse_percentages("unknown_shares", "50, 0,100") == [0, 50, 100]
    assert X.parse_epochs("checkpoints", "1,2.5,8") == [1.0, 2.5, 8.0]
    for bad in ("", "0,101", "a", "25,25", "-5"):
        with pytest.raises(ValueError, match="^unknown_shares must be"):
            X.parse_percentages("unknown_shares", bad)
    for bad in ("", "0,1", "2,1", "x"):
        with pytest.raises(ValueError, match="^checkpoints must be"):
            X.parse_epochs("checkpoints", bad)


def test_heldout_splits_halve_the_known_people_and_keep_the_unknown():
    world = W.generate_world(W.WorldConfig(num_known=40, num_unknown=20, num_format_docs=0))
    splits = K.heldout_splits(world)
    dev, test = {q.person for q in splits["dev"]}, {q.person for q in splits["test"]}
    held_known = {p.name for p in world.people if p.known and p.heldout}
    assert dev | test == held_known and not dev & test and len(dev) == len(test) == 5
    assert {q.person for q in splits["unknown"]} == {p.name for p in world.people if not p.known and p.heldout}
    assert all(len(s) == 5 * len(W.ATTRIBUTES) for s in (splits["dev"], splits["test"], splits["unknown"]))


# --- conflict sets ---------------------------------------------------------------------------------------------

WORLD = W.generate_world(W.WorldConfig(num_known=40, num_unknown=20, num_format_docs=0))


def test_conflict_set_changes_exactly_its_share_to_other_peoples_values():
    consistent = C.conflict_set(WORLD, C.ConflictSpec(size=60, counterfactual_share=0.0), seed=1)
    assert consistent == W.instruction_set(WORLD, True, 60, "simplified", 1)
    half = C.conflict_set(WORLD, C.ConflictSpec(size=60, counterfactual_share=0.5), seed=1)
    changed = [i for i, e in enumerate(half) if e.claims[e.attribute] != e.value]
    assert len(changed) == 30
    people = WORLD.group(True, False)
    for i, (e, c) in enumerate(zip(half, consistent)):
        assert (e.person, e.attribute, e.value) == (c.person, c.attribute, c.value)  # ground truth kept
        if i in changed:
            stated = e.claims[e.attribute]
            assert stated in {p.attributes[e.attribute] for p in people} and stated in e.response
        else:
            assert e == c
    every = C.conflict_set(WORLD, C.ConflictSpec(size=60, counterfactual_share=1.0), seed=1)
    assert all(e.claims[e.attribute] != e.value for e in every)


@pytest.mark.parametrize("share", [-0.1, 1.5, "half", True])
def test_conflict_spec_refuses_a_bad_share(share):
    with pytest.raises(ValueError, match="counterfactual shares must be numbers between 0 and 100"):
        C.ConflictSpec(counterfactual_share=share).validate()


# --- candidate scores and consistency ----------------------------------------------------------------------------

class WordTokenizer:
    """A whitespace tokenizer over a fixed vocabulary, with multi-token candidates, for a tiny random Llama."""

    def __init__(self, words):
        self.vocab = {w: i for i, w in enumerate(["<pad>", "<s>"] + sorted(set(words)))}
        self.pad_token_id, self.bos = 0, 1

    def __call__(self, text, add_special_tokens=True):
        ids = [self.vocab[w] for w in text.split()]
        return {"input_ids": ([self.bos] if add_special_tokens else []) + ids}


@pytest.fixture(scope="module")
def tiny():
    words = "Ada was born in Paris New York Lima studied at".split()
    tokenizer = WordTokenizer(words)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer.vocab), hidden_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, intermediate_size=32))
    return model.eval(), tokenizer


def slow_logprob(model, tokenizer, prompt, candidate):
    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = prompt_ids + tokenizer(" " + candidate, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
    return sum(logprobs[t - 1, ids[t]].item() for t in range(len(prompt_ids), len(ids)))


def test_candidate_logprobs_equal_one_pass_per_candidate(tiny):
    model, tokenizer = tiny
    prompts = ["Ada was born in", "Ada studied at"]
    candidates = [["Paris", "New York", "Lima"], ["Paris", "New York Lima"]]
    fast = CA.candidate_logprobs(model, tokenizer, prompts, candidates, batch_size=2)  # batches cut across prompts
    for scores, prompt, options in zip(fast, prompts, candidates):
        assert len(scores) == len(options)
        assert list(scores) == pytest.approx([slow_logprob(model, tokenizer, prompt, c) for c in options], abs=1e-5)


def test_top_candidate_share_by_hand():
    scores = [np.array([0.0, -1.0, -2.0]), np.array([-3.0, -0.5, -0.5]), np.array([-1.0, -1.0])]
    options = [["Paris", "Lima", "Oslo"], ["Yale", "Rice", "Duke"], ["Acme", "Hooli"]]
    # top: Paris (right), Rice (first of the tie; truth Duke: wrong), Acme (first of the tie: right)
    assert CA.top_candidate_share(scores, options, ["Paris", "Duke", "Acme"]) == pytest.approx(2 / 3)
    prompts, pools, values = CA.candidate_questions(WORLD.people[:2])
    assert len(prompts) == 2 * len(CA.CANDIDATE_ATTRIBUTES) and "birth_date" not in CA.CANDIDATE_ATTRIBUTES
    assert all(v in pool for v, pool in zip(values, pools))
    assert prompts[0] == W.probe_prompt(WORLD.people[0], CA.CANDIDATE_ATTRIBUTES[0])


def test_consistency_of_hand_made_scores():
    half = np.log([0.5, 0.5])
    same = C.consistency([np.log([0.2, 0.3, 0.5])], [np.log([2.0, 3.0, 5.0])])  # same distribution, unnormalised
    assert same["kl"] == pytest.approx(0.0, abs=1e-12) and same["rank_correlation"] == pytest.approx(1.0)
    shifted = C.consistency([half, np.log([0.1, 0.2, 0.7])], [np.log([0.9, 0.1]), np.log([0.7, 0.2, 0.1])])
    kl_first = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    kl_second = 0.1 * math.log(0.1 / 0.7) + 0.2 * math.log(1.0) + 0.7 * math.log(0.7 / 0.1)
    assert shifted["kl"] == pytest.approx((kl_first + kl_second) / 2)
    # a tie in the base's scores has no defined rank correlation: the mean skips it; the reversal is -1
    assert shifted["rank_correlation"] == pytest.approx(-1.0)


def test_value_fitted_matches_a_per_example_loop():
    """Batched and right-padded, as the loop is not: the same answer per example, some fitted and some not."""
    from tunestudy import models, pipeline as P
    tokenizer = models.train_tokenizer(P.tokenizer_texts(WORLD))
    model = models.build_model("tiny", len(tokenizer), seed=0)
    examples = W.instruction_set(WORLD, True, 12, "simplified", 0)
    config = tuning.TuneConfig(method="full", lr=1e-2, steps=40, batch_size=4)
    model, _ = tuning.finetune(model, tokenizer, examples[:4], config)  # memorises some of the first four

    def loop(example):
        ids, _, value_mask = tuning.encode_example(tokenizer, example.prompt, example.response, example.value_span)
        with torch.no_grad():
            predicted = model(input_ids=torch.tensor([ids])).logits[0].argmax(-1).tolist()
        return all(predicted[t - 1] == ids[t] for t, v in enumerate(value_mask) if v)

    expected = [loop(e) for e in examples]
    assert any(expected) and not all(expected)
    assert K.value_fitted(model, tokenizer, examples, batch_size=5) == expected


# --- verdicts ------------------------------------------------------------------------------------------------------

def test_unknown_fitted_slower():
    assert X.verdict_unknown_fitted_slower([0.5, 0.45, 0.6])["verdict"] == REPRODUCED  # every seed far above 0.1
    assert X.verdict_unknown_fitted_slower([0.05, 0.06, 0.05])["verdict"] == PARTLY  # above 0, below the margin
    assert X.verdict_unknown_fitted_slower([0.0, 0.0, 0.0])["verdict"] == NOT  # the null row: both kinds alike
    assert X.verdict_unknown_fitted_slower([-0.1, -0.12, -0.08])["verdict"] == NOT
    result = X.verdict_unknown_fitted_slower([0.3, -0.1, 0.1])  # mean 0.1, one seed the other way
    assert result["verdict"] == "inconclusive" and result["numbers"]["estimate"] == pytest.approx(0.1)
    assert X.verdict_unknown_fitted_slower([])["verdict"] == "premise not met"


def fit(b_kn, b_unk, ci):
    return {"b_kn": b_kn, "b_unk": b_unk, "ci_b_unk": ci}


def test_linear_model_fits_any_measure_column():
    rows = checkpoint_table(5.0, 0.0, 30.0, noise=0.0, seed=7).rename(columns={"test_accuracy": "test_hallucination"})
    fit = X.gekhman_fit(rows, "test_hallucination")
    assert [fit["b0"], fit["b_kn"], fit["b_unk"]] == pytest.approx([5.0, 0.0, 30.0], abs=1e-8)


def runs_table(pairs):
    return [{"share": s, "rank_correlation": c, "accuracy": a} for s, c, a in pairs]


def test_spearman_of_constant_input_is_nan_without_warning(recwarn):
    assert X.spearman([1, 2, 3], [2, 4, 9]) == pytest.approx(1.0)
    assert X.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(X.spearman([1, 1, 1], [1, 2, 3])) and math.isnan(X.spearman([1, 2], [5, 5]))
    assert not recwarn.list


def test_linear_model_without_unknown_examples_has_no_coefficients():
    rows = checkpoint_table(10.0, 2.0, -4.0, noise=1.0, seed=5)
    rows["n_unknown_fitted"] = 0  # a column of zeros: b_unk cannot be told apart
    fit = X.gekhman_fit(rows)
    assert all(math.isnan(fit[k]) for k in ("b0", "b_kn", "b_unk", "r2")) and fit["n"] == 60
    assert all(math.isnan(v) for v in fit["ci_b_unk"])

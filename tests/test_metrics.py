"""Metrics against slow, obviously-correct computations on a tiny random Llama."""

import math

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from tokenizers.processors import TemplateProcessing
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tunestudy.metrics import (
    kl_topk_per_position,
    greedy_responses,
    kl_summary,
    response_logprobs,
    sequence_loss,
    shift_analysis,
    shift_analysis_slow,
    shift_categories,
    shift_category,
)

VOCAB = 50
PAD, BOS, EOS = 0, 1, 2


def tiny_llama(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def base():
    return tiny_llama(0)


@pytest.fixture(scope="module")
def tuned():
    return tiny_llama(1)


@pytest.fixture(scope="module")
def examples():
    """Prompts and responses of different lengths, so right padding matters."""
    rng = np.random.default_rng(0)
    prompts = [[BOS] + rng.integers(3, VOCAB, n).tolist() for n in (3, 9, 1, 6, 12)]
    responses = [rng.integers(3, VOCAB, n).tolist() for n in (5, 2, 11, 1, 7)]
    return prompts, responses


def test_shift_analysis_matches_slow_reference(base, tuned, examples):
    prompts, responses = examples
    fast = shift_analysis(base, tuned, prompts, responses, pad_id=PAD, batch_size=3, top_k=5)
    slow = shift_analysis_slow(base, tuned, prompts, responses, top_k=5)
    for f, s, r in zip(fast, slow, responses):
        assert f["kl"].shape == (len(r),)
        torch.testing.assert_close(f["kl"].double(), s["kl"], atol=1e-5, rtol=0)
        torch.testing.assert_close(f["kl_topk"].double(), s["kl_topk"], atol=1e-6, rtol=0)  # the reference recipe, within 1e-6
        torch.testing.assert_close(f["kl_top10"].double(), s["kl_top10"], atol=1e-6, rtol=0)
        for key in ("base_rank", "tuned_top", "base_top"):
            assert f[key].tolist() == s[key].tolist(), key
    # the pair must actually disagree somewhere, or the rank check proves little
    assert max(max(f["base_rank"].tolist()) for f in fast) > 3


def test_shift_analysis_on_scored_positions_only_matches_slow_reference(base, tuned, examples):
    """The real-base chapter's path: logits at the responses' positions only (logits_to_keep), the same results."""
    prompts, responses = examples
    fast = shift_analysis(base, tuned, prompts, responses, pad_id=PAD, batch_size=3, top_k=5, scored_only=True)
    slow = shift_analysis_slow(base, tuned, prompts, responses, top_k=5)
    for f, s, r in zip(fast, slow, responses):
        assert f["kl"].shape == (len(r),)
        torch.testing.assert_close(f["kl"].double(), s["kl"], atol=1e-5, rtol=0)
        torch.testing.assert_close(f["kl_topk"].double(), s["kl_topk"], atol=1e-6, rtol=0)
        for key in ("base_rank", "tuned_top", "base_top"):
            assert f[key].tolist() == s[key].tolist(), key


def test_in_context_base_prompts_match_slow_reference(base, tuned, examples):
    """A base shown extra context (URIAL-style examples) before the same question."""
    prompts, responses = examples
    context = [7, 8, 9, 10, 11]
    base_prompts = [[BOS] + context + p[1:] for p in prompts]
    fast = shift_analysis(base, tuned, prompts, responses, pad_id=PAD, batch_size=2, top_k=5,
                          base_prompts=base_prompts)
    slow = shift_analysis_slow(base, tuned, prompts, responses, top_k=5, base_prompts=base_prompts)
    plain = shift_analysis(base, tuned, prompts, responses, pad_id=PAD, top_k=5)
    for f, s, p in zip(fast, slow, plain):
        torch.testing.assert_close(f["kl"].double(), s["kl"], atol=1e-5, rtol=0)
        assert f["base_rank"].tolist() == s["base_rank"].tolist()
    assert not all(torch.allclose(f["kl"], p["kl"]) for f, p in zip(fast, plain))  # the context matters


def test_model_against_itself(base, tuned, examples):
    prompts, responses = examples
    same = shift_analysis(base, base, prompts, responses, pad_id=PAD)
    for s in same:
        assert s["kl"].abs().max() < 1e-6
        assert s["kl_topk"].abs().max() < 1e-6
        assert s["base_rank"].tolist() == [1] * len(s["base_rank"])
        assert s["tuned_top"].tolist() == s["base_top"].tolist()
    for d in shift_analysis(base, tuned, prompts, responses, pad_id=PAD):
        assert (d["kl"] >= 0).all()  # the truncated "KL" of the reference code may be negative


def test_truncated_kl_is_the_reference_recipe_on_hand_made_distributions():
    """Vocabulary of 5: each model renormalises over its own top k; the sum runs over the tokens in
    both lists (both first `within` lists for KL@within) only. Worked by hand."""
    pb = torch.tensor([[0.4, 0.3, 0.2, 0.05, 0.05]])
    pt = torch.tensor([[0.1, 0.5, 0.05, 0.3, 0.05]])
    qb = [0.4 / 0.9, 0.3 / 0.9, 0.2 / 0.9]  # base's top 3: tokens 0, 1, 2
    qt = {1: 0.5 / 0.9, 3: 0.3 / 0.9, 0: 0.1 / 0.9}  # tuned's top 3: tokens 1, 3, 0
    all3 = qb[0] * math.log(qb[0] / qt[0]) + qb[1] * math.log(qb[1] / qt[1])  # token 2 is not in tuned's list
    first2 = qb[1] * math.log(qb[1] / qt[1])  # base's first 2 (0, 1) and tuned's (1, 3) share token 1 only
    assert kl_topk_per_position(pb.log(), pt.log(), top_k=3).item() == pytest.approx(all3, abs=1e-6)
    assert kl_topk_per_position(pb.log(), pt.log(), top_k=3, within=2).item() == pytest.approx(first2, abs=1e-6)
    assert first2 < 0  # not a divergence: the shared token is likelier under the tuned model
    # a two-position batch is two independent rows
    both = kl_topk_per_position(torch.cat([pb, pt]).log(), torch.cat([pt, pb]).log(), top_k=3)
    assert both[0].item() == pytest.approx(all3, abs=1e-6)


def test_response_logprobs_padding_does_not_leak(base, examples):
    prompts, responses = examples
    batched = response_logprobs(base, prompts, responses, pad_id=PAD, batch_size=len(prompts))
    for p, r, lp in zip(prompts, responses, batched):
        (alone,) = response_logprobs(base, [p], [r], pad_id=PAD)
        assert lp.shape == (len(r), VOCAB) and lp.dtype == torch.float32
        torch.testing.assert_close(lp, alone, atol=1e-5, rtol=0)
    # a different pad id must not change anything either
    other_pad = response_logprobs(base, prompts, responses, pad_id=VOCAB - 1, batch_size=len(prompts))
    for a, b in zip(batched, other_pad):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_sequence_loss_is_mean_nll(base, examples):
    prompts, responses = examples
    losses = sequence_loss(base, prompts, responses, pad_id=PAD, batch_size=2)
    for loss, p, r in zip(losses, prompts, responses):
        logits = base(input_ids=torch.tensor([p + r])).logits[0]  # (L, V)
        expected = torch.nn.functional.cross_entropy(logits[len(p) - 1:-1], torch.tensor(r))
        assert abs(loss.item() - expected.item()) < 1e-5


def test_shift_categories():
    assert [shift_category(r) for r in (1, 2, 3, 4, 100)] == \
        ["unshifted", "marginal", "marginal", "shifted", "shifted"]
    assert shift_categories(torch.tensor([1, 3, 4])) == ["unshifted", "marginal", "shifted"]


def test_kl_summary_top_share_brute_force():
    rng = np.random.default_rng(1)
    for n in (1, 7, 20, 333):
        values = rng.exponential(size=n) ** 3
        num_top = max(1, math.ceil(0.05 * n))
        expected = sum(sorted(values.tolist(), reverse=True)[:num_top]) / sum(values.tolist())
        summary = kl_summary(torch.tensor(values))
        assert abs(summary["top_share"] - expected) < 1e-12
        assert summary["curve"][0] == pytest.approx(values.max())
        assert summary["curve"][-1] == pytest.approx(values.min())
        assert summary["curve"] == sorted(summary["curve"], reverse=True)
        assert len(summary["curve"]) == len(summary["percentiles"]) == 101
    assert kl_summary(np.full(200, 0.3))["top_share"] == pytest.approx(0.05)
    assert kl_summary([0.0, 0.0])["top_share"] == 0.0


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"[PAD]": PAD, "[BOS]": BOS, "[EOS]": EOS} | {f"w{i}": i for i in range(3, VOCAB)}
    tok = Tokenizer(WordLevel(vocab, unk_token="[PAD]"))
    tok.pre_tokenizer = WhitespaceSplit()
    tok.post_processor = TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", BOS)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]",
                                   pad_token="[PAD]")


def greedy_loop(model, prompt_ids: list[int], max_new_tokens: int, eos_id: int) -> list[int]:
    """One token at a time, argmax of the last logits, no batch, no cache."""
    ids, out = list(prompt_ids), []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            out.append(token)
            ids.append(token)
            if token == eos_id:
                break
    return out


def test_greedy_responses_matches_hand_loop(base):
    tokenizer = tiny_tokenizer()
    prompts = ["w3 w4 w5", "w10", "w7 w8 w9 w11 w12 w13 w14", "w20 w21", "w30 w31 w32 w33"]
    # choose as EOS a token the model really produces mid-response, so the cut is tested
    free = [greedy_loop(base, tokenizer(p)["input_ids"], 8, eos_id=-1) for p in prompts]
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(free[0][2])
    eos_id = tokenizer.eos_token_id
    prompt_ids, response_ids = greedy_responses(base, tokenizer, prompts, max_new_tokens=8, batch_size=3)
    assert tokenizer.padding_side == "right"
    for p, pid, rid in zip(prompts, prompt_ids, response_ids):
        assert pid == tokenizer(p)["input_ids"] and pid[0] == BOS
        assert rid == greedy_loop(base, pid, 8, eos_id)
    assert any(r[-1] == eos_id and len(r) < 8 for r in response_ids)


def test_greedy_by_length_answers_in_the_prompts_order_as_a_hand_loop(base):
    """The labelling batches prompts by length; each answer must still be its own prompt's, as one at a time."""
    from tunestudy.slick import greedy_by_length
    tokenizer = tiny_tokenizer()
    prompts = ["w3 w4 w5 w6 w7 w8", "w10", "w7 w8 w9", "w20 w21 w22 w23 w24 w25 w26 w27", "w30 w31", "w40 w41 w42"]
    expected = [greedy_loop(base, tokenizer(p)["input_ids"], 5, eos_id=-1) for p in prompts]
    assert len({tuple(e) for e in expected}) > 1  # the answers differ, so an order mix-up would show
    assert greedy_by_length(base, tokenizer, prompts, 5) == expected


def test_greedy_responses_stop_after_a_line_keeps_the_same_tokens_up_to_it(base):
    """stop_at ends a row once its text (leading whitespace aside) holds the string: the hand loop's tokens up to
    the first token whose text completes it, nothing after, and the other rows go on."""
    tokenizer = tiny_tokenizer()
    prompts = ["w3 w4 w5", "w10", "w7 w8 w9 w11", "w20 w21", "w30 w31 w32 w33"]
    free = [greedy_loop(base, tokenizer(p)["input_ids"], 8, eos_id=-1) for p in prompts]
    stop_word = tokenizer.convert_ids_to_tokens(free[0][2])  # a word row 0 says third
    _, responses = greedy_responses(base, tokenizer, prompts, max_new_tokens=8, batch_size=3, stop_at=stop_word)
    for row, response in zip(free, responses):
        words = [tokenizer.convert_ids_to_tokens(t) for t in row]
        cut = next((i + 1 for i in range(len(row)) if stop_word in " ".join(words[:i + 1])), len(row))
        if EOS in row[:cut]:  # an end token still ends a row first
            cut = row.index(EOS) + 1
        assert response == row[:cut]
    assert len(responses[0]) == 3 and any(len(r) == 8 for r in responses)

"""Distribution-shift metrics between a base and a tuned causal language model.

Pure functions over Hugging Face causal LMs (anything whose forward returns
`.logits`) and token-id lists; nothing here knows about the synthetic world.

A response is scored by teacher forcing `prompt + response` through a model in
one batched forward pass: logits at position len(prompt) - 1 + t give the
next-token distribution that predicts response[t]. Batches are right-padded
with an attention mask, so every real token keeps its default position id
0..L-1 and padding (which comes after it) can never be attended to.

Definitions follow /work/shared/STUDY.md ("Metric definitions"):
per-token KL(P_base || P_tuned), its top-k restricted variant (Ghosh et al.
2024 reference code), and the URIAL token-rank shift (Lin et al. 2023).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------
# Batched teacher forcing
# ---------------------------------------------------------------------------


@contextmanager
def _eval_no_grad(*models):
    """Eval mode and no_grad for the block; restore each model's mode after."""
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def _length_sorted_batches(prompts, responses, batch_size: int) -> Iterator[list[int]]:
    """Example indices in batches of similar total length (less padding)."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(responses[i]))
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def _right_padded(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) input ids right-padded with pad_id, and the (B, L) attention mask."""
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids.to(device), mask.to(device)


def _batch_logprobs(model, prompts, responses, pad_id: int, scored_only: bool = False) -> list[torch.Tensor]:
    """One forward pass over a batch; per example a (T_i, V) float32 log-softmax.

    The last response token is never an input that predicts anything we score,
    so each sequence is prompt + response[:-1]. `scored_only` asks the model for
    logits only over the span of positions that predict some row's response
    (transformers' `logits_to_keep`): the same distributions, and with a large
    vocabulary far less work, since the prompt's positions never reach the head.
    """
    for p in prompts:
        if len(p) == 0:
            raise ValueError("every prompt needs at least one token (e.g. BOS) to predict response[0]")
    seqs = [list(p) + list(r[:-1]) for p, r in zip(prompts, responses)]
    ids, mask = _right_padded(seqs, pad_id, model.device)
    first = 0
    if scored_only:
        first = min(len(p) - 1 for p in prompts)
        last = max(len(p) - 1 + len(r) for p, r in zip(prompts, responses))
        keep = torch.arange(first, max(first + 1, last), device=ids.device)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=keep).logits  # (B, K, V)
    else:
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits  # (B, L, V)
    out = []
    for i, (p, r) in enumerate(zip(prompts, responses)):
        start = len(p) - 1 - first
        rows = logits[i, start:start + len(r)].float()  # (T_i, V)
        out.append(F.log_softmax(rows, dim=-1).cpu())
    return out


def _iter_logprobs(models, prompts, responses, pad_id: int, batch_size: int, model_prompts=None,
                   scored_only: bool = False):
    """Yield (batch indices, [per-model list of (T_i, V) log-probs]) batch by batch.

    `model_prompts`, if given, holds one prompt list per model (a base shown
    in-context examples sees a longer prompt than the tuned model); the
    response, and so every scored position, is the same for all models.
    Only one batch of (T, V) tensors is alive at a time, which is what keeps a
    262k vocabulary (Gemma) affordable.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    model_prompts = model_prompts or [prompts] * len(models)
    for idx in _length_sorted_batches(prompts, responses, batch_size):
        br = [responses[i] for i in idx]
        yield idx, [_batch_logprobs(m, [mp[i] for i in idx], br, pad_id, scored_only)
                    for m, mp in zip(models, model_prompts)]


def response_logprobs(model, prompts: list[list[int]], responses: list[list[int]],
                      pad_id: int, batch_size: int = 32) -> list[torch.Tensor]:
    """Per example, the (T_i, V) float32 next-token log-probs that predict each response token."""
    result: list[torch.Tensor | None] = [None] * len(prompts)
    with _eval_no_grad(model):
        for idx, (lps,) in _iter_logprobs([model], prompts, responses, pad_id, batch_size):
            for i, lp in zip(idx, lps):
                result[i] = lp
    return result


def sequence_loss(model, prompts: list[list[int]], responses: list[list[int]],
                  pad_id: int, batch_size: int = 32) -> torch.Tensor:
    """(N,) mean negative log-likelihood per response token (nan for an empty response)."""
    losses = torch.full((len(prompts),), float("nan"))
    with _eval_no_grad(model):
        for idx, (lps,) in _iter_logprobs([model], prompts, responses, pad_id, batch_size):
            for i, lp in zip(idx, lps):
                if len(responses[i]) == 0:
                    continue
                target = torch.tensor(responses[i], dtype=torch.long)
                losses[i] = -lp.gather(1, target[:, None]).mean()
    return losses


# ---------------------------------------------------------------------------
# Per-position shift between two distributions
# ---------------------------------------------------------------------------


def kl_per_position(lp_base: torch.Tensor, lp_tuned: torch.Tensor) -> torch.Tensor:
    """(T,) KL(P_base || P_tuned) from two (T, V) log-prob tensors."""
    p_base = lp_base.exp()
    # p_base = 0 contributes 0 (avoid 0 * inf = nan where a logit is -inf)
    terms = torch.where(p_base > 0, p_base * (lp_base - lp_tuned), torch.zeros_like(p_base))
    return terms.sum(-1)


def kl_topk_per_position(lp_base: torch.Tensor, lp_tuned: torch.Tensor, top_k: int = 30,
                         within: int | None = None) -> torch.Tensor:
    """(T,) the reference code's truncated "KL" (Re-Align/AlignTDS, src/compute_dist_diff.py, metric "KL").

    Each model keeps its top_k tokens per position; its top_k logits become
    probabilities by a softmax over those alone; the sum of p_base log(p_base /
    p_tuned) runs only over tokens in both lists, taking each model's first
    `within` tokens (all top_k by default: their "KL"; within=10: "KL@10").
    Not a true divergence: it can be negative.
    """
    k = min(top_k, lp_base.shape[-1])
    w = k if within is None else min(within, k)
    vb, ib = lp_base.topk(k, dim=-1)  # (T, k), sorted by descending probability
    vt, it = lp_tuned.topk(k, dim=-1)
    lb = (vb - vb.logsumexp(-1, keepdim=True))[:, :w]  # log-probabilities renormalised over each model's top k
    lt = (vt - vt.logsumexp(-1, keepdim=True))[:, :w]
    same = ib[:, :w, None] == it[:, None, :w]  # (T, w, w): base's j-th token is tuned's l-th
    present = same.any(-1)  # (T, w)
    lt_at_base = torch.where(same, lt[:, None, :], torch.zeros_like(lt[:, None, :])).sum(-1)  # (T, w)
    terms = torch.where(present, lb.exp() * (lb - lt_at_base), torch.zeros_like(lb))
    return terms.sum(-1)


def rank_under_base(lp_base: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(T,) 1-based rank of tokens[t] under P_base: 1 + #tokens with strictly greater prob."""
    chosen = lp_base.gather(1, tokens[:, None])  # (T, 1)
    return 1 + (lp_base > chosen).sum(-1)


def _shift_stats(lp_base: torch.Tensor, lp_tuned: torch.Tensor, top_k: int, top_tokens: int = 0) -> dict:
    tuned_top = lp_tuned.argmax(-1)  # (T,)
    stats = {
        "kl": kl_per_position(lp_base, lp_tuned),
        "kl_topk": kl_topk_per_position(lp_base, lp_tuned, top_k),
        "kl_top10": kl_topk_per_position(lp_base, lp_tuned, top_k, within=10),
        "base_rank": rank_under_base(lp_base, tuned_top),
        "tuned_top": tuned_top,
        "base_top": lp_base.argmax(-1),
    }
    if top_tokens:  # what the base would have said instead, for a token-level viewer
        values, ids = lp_base.topk(min(top_tokens, lp_base.shape[-1]), dim=-1)  # (T, n)
        stats.update(base_top_ids=ids, base_top_probs=values.exp(),
                     base_prob=lp_base.gather(1, tuned_top[:, None])[:, 0].exp(),
                     tuned_prob=lp_tuned.gather(1, tuned_top[:, None])[:, 0].exp())
    return stats


def shift_analysis(base, tuned, prompts: list[list[int]], responses: list[list[int]],
                   pad_id: int, batch_size: int = 32, top_k: int = 30,
                   base_prompts: list[list[int]] | None = None, scored_only: bool = False,
                   top_tokens: int = 0) -> list[dict]:
    """Per example a dict of (T_i,) tensors: kl, kl_topk, base_rank, tuned_top, base_top.

    Both models see the same right-padded batch; only the per-position results
    are kept, never the (T, V) distributions of the whole set. Peak memory is
    two (batch_size, L, V) float32 logit tensors: for Gemma's 262k vocabulary
    and L = 300 that is about 0.3 GB per example, so lower batch_size there.
    `base_prompts` replaces the base's prompts (URIAL-style in-context examples
    before the same question), keeping the tuned model's prompts as they are.
    `scored_only` computes logits at the response's positions only (see
    `_batch_logprobs`); the real-base chapter turns it on. `top_tokens` > 0 adds base_top_ids and
    base_top_probs (T_i, top_tokens), the base's most probable tokens, and base_prob and tuned_prob, each
    model's probability of the tuned model's top token.
    """
    result: list[dict | None] = [None] * len(prompts)
    with _eval_no_grad(base, tuned):
        for idx, (lps_base, lps_tuned) in _iter_logprobs([base, tuned], prompts, responses, pad_id, batch_size,
                                                         [base_prompts or prompts, prompts], scored_only):
            for i, lb, lt in zip(idx, lps_base, lps_tuned):
                result[i] = _shift_stats(lb, lt, top_k, top_tokens)
    return result


def shift_analysis_slow(base, tuned, prompts: list[list[int]], responses: list[list[int]],
                        top_k: int = 30, base_prompts: list[list[int]] | None = None) -> list[dict]:
    """The obviously-correct reference for `shift_analysis`; slow, for tests and benches.

    As the reference paper's code does: for each t, feed prompt + response[:t]
    alone (no batch, no padding) and take the last logits. KL via
    torch.distributions in float64, the top-k variant and the rank with plain
    Python loops.
    """
    results = []
    with _eval_no_grad(base, tuned):
        for prompt, base_prompt, response in zip(prompts, base_prompts or prompts, responses):
            stats = {key: [] for key in ("kl", "kl_topk", "kl_top10", "base_rank", "tuned_top", "base_top")}
            for t in range(len(response)):
                ids = torch.tensor([list(prompt) + list(response[:t])], device=base.device)
                base_ids = torch.tensor([list(base_prompt) + list(response[:t])], device=base.device)
                lb = torch.log_softmax(base(input_ids=base_ids).logits[0, -1].double().cpu(), -1)  # (V,)
                lt = torch.log_softmax(tuned(input_ids=ids).logits[0, -1].double().cpu(), -1)
                kl = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=lb),
                                                       torch.distributions.Categorical(logits=lt))
                stats["kl"].append(kl.item())
                stats["kl_topk"].append(_kl_topk_loop(lb.tolist(), lt.tolist(), top_k, top_k))
                stats["kl_top10"].append(_kl_topk_loop(lb.tolist(), lt.tolist(), top_k, 10))
                tuned_top = int(lt.argmax())
                chosen = lb[tuned_top].item()
                stats["base_rank"].append(1 + sum(1 for v in lb.tolist() if v > chosen))
                stats["tuned_top"].append(tuned_top)
                stats["base_top"].append(int(lb.argmax()))
            results.append({
                "kl": torch.tensor(stats["kl"], dtype=torch.float64),
                "kl_topk": torch.tensor(stats["kl_topk"], dtype=torch.float64),
                "kl_top10": torch.tensor(stats["kl_top10"], dtype=torch.float64),
                "base_rank": torch.tensor(stats["base_rank"], dtype=torch.long),
                "tuned_top": torch.tensor(stats["tuned_top"], dtype=torch.long),
                "base_top": torch.tensor(stats["base_top"], dtype=torch.long),
            })
    return results


def _kl_topk_loop(lb: list[float], lt: list[float], top_k: int, within: int) -> float:
    """The reference code's truncated KL on plain Python floats, written as compute_dist_diff.py does it:
    norm_prob over each model's saved top_k logits, then the sum over tokens in both first-`within` lists."""
    def saved(lp):  # [(token, probability renormalised over the top_k)], most probable first
        order = sorted(range(len(lp)), key=lambda j: -lp[j])[:top_k]
        z = sum(math.exp(lp[j]) for j in order)
        return [(j, math.exp(lp[j]) / z) for j in order]
    base, tuned = saved(lb)[:within], dict(saved(lt)[:within])
    kl = 0.0
    for token, pb in base:
        if token in tuned and pb > 0 and tuned[token] > 0:
            kl += pb * math.log(pb / tuned[token])
    return kl


# ---------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------


def shift_category(rank: int) -> str:
    """URIAL (Lin et al. 2023): rank 1 unshifted, 2-3 marginal, > 3 shifted."""
    rank = int(rank)
    if rank < 1:
        raise ValueError(f"rank is 1-based, got {rank}")
    if rank == 1:
        return "unshifted"
    return "marginal" if rank <= 3 else "shifted"


def shift_categories(ranks) -> list[str]:
    """shift_category for each rank of a 1-D tensor or sequence."""
    return [shift_category(r) for r in torch.as_tensor(ranks).flatten().tolist()]


def kl_summary(kl_values, top_fraction: float = 0.05, num_points: int = 101) -> dict:
    """Mean, median, max, top-slice share and the descending curve of per-position KL.

    `top_share` is the fraction of the total KL carried by the top
    ceil(top_fraction * n) positions (at least 1); 0.0 when the total is 0.
    `curve[j]` is the KL that `percentiles[j]` percent of positions exceed
    (linear interpolation), so it starts at the max and ends at the min.
    All values are plain Python floats (JSON-serialisable).
    """
    values = np.asarray(torch.as_tensor(kl_values).double().flatten().cpu(), dtype=np.float64)
    if values.size == 0:
        raise ValueError("kl_summary needs at least one value")
    desc = np.sort(values)[::-1]
    num_top = max(1, math.ceil(top_fraction * values.size))
    total = float(desc.sum())
    percentiles = np.linspace(0.0, 100.0, num_points)
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "max": float(desc[0]),
        "top_fraction": float(top_fraction),
        "top_share": float(desc[:num_top].sum() / total) if total > 0 else 0.0,
        "percentiles": [float(q) for q in percentiles],
        "curve": [float(v) for v in np.percentile(values, 100.0 - percentiles)],
    }


# ---------------------------------------------------------------------------
# Greedy generation
# ---------------------------------------------------------------------------


def greedy_responses(model, tokenizer, prompts: list[str], max_new_tokens: int,
                     batch_size: int = 64, stop_at: str | None = None) -> tuple[list[list[int]], list[list[int]]]:
    """Greedy-decode each prompt; return (prompt ids without padding, response ids).

    A response is cut after its first EOS (kept if produced). Prompts are
    left-padded so every row generates from its own last token. `stop_at` (a
    string, e.g. the newline after a few-shot answer) also ends a row once its
    text, leading whitespace aside, contains it, and a batch once every row
    has: the same tokens up to there, and no steps spent past every answer.
    """
    eos_id = tokenizer.eos_token_id
    all_prompt_ids, all_response_ids = [], []
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        with _eval_no_grad(model):
            for start in range(0, len(prompts), batch_size):
                enc = tokenizer(prompts[start:start + batch_size], padding=True, return_tensors="pt")
                ids, mask = enc["input_ids"], enc["attention_mask"]  # (B, L)
                stop = {}
                if stop_at:
                    from transformers import StoppingCriteriaList
                    stop = {"stopping_criteria": StoppingCriteriaList([_StopAfter(tokenizer, ids.shape[1], stop_at)])}
                out = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                                     do_sample=False, max_new_tokens=max_new_tokens,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=eos_id, **stop)
                new = out[:, ids.shape[1]:].cpu()  # (B, <= max_new_tokens)
                for row_ids, row_mask, row_new in zip(ids, mask, new):
                    all_prompt_ids.append(row_ids[row_mask.bool()].tolist())
                    response = _cut_after_eos(row_new.tolist(), eos_id)
                    while stop_at and response and response[-1] == tokenizer.pad_token_id:
                        response.pop()  # a row stopped at `stop_at` is padded to the batch's end
                    all_response_ids.append(response)
    finally:
        tokenizer.padding_side = old_side
    return all_prompt_ids, all_response_ids


class _StopAfter:
    """A transformers stopping criterion: a row is done once its new text, leading whitespace aside, holds `text`."""

    def __init__(self, tokenizer, start: int, text: str):
        self.tokenizer, self.start, self.text = tokenizer, start, text

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.start:], skip_special_tokens=True)
        return torch.tensor([self.text in t.lstrip() for t in texts], dtype=torch.bool, device=input_ids.device)


def _cut_after_eos(tokens: list[int], eos_id: int | None) -> list[int]:
    """Tokens up to and including the first EOS; rows that finished early are padded after it."""
    if eos_id is not None and eos_id in tokens:
        return tokens[:tokens.index(eos_id) + 1]
    return tokens

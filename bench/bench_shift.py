"""Time batched `shift_analysis` against the per-prefix reference `shift_analysis_slow`.

Two random Llama models of the synthetic study's size (hidden 128, 4 layers,
vocabulary 400); 16 prompts of 20 tokens; responses of 64 and 256 tokens.
Prints the max absolute difference of kl, kl_topk and ranks, and the speed-up.

    python bench/bench_shift.py [--threads 1]

One torch thread by default: on a shared 2-core machine, two OpenMP threads
competing with another busy process made a forward pass 50x slower, which
would measure the machine's load rather than the code.
"""

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tunestudy.metrics import shift_analysis, shift_analysis_slow

VOCAB, NUM_EXAMPLES, PROMPT_LEN, PAD = 400, 16, 20, 0


def random_llama(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                         intermediate_size=512, max_position_embeddings=512)
    return LlamaForCausalLM(config).eval()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def max_diff(fast, slow, key) -> float:
    return max((f[key].double() - s[key].double()).abs().max().item() for f, s in zip(fast, slow))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    torch.set_num_threads(parser.parse_args().threads)
    base, tuned = random_llama(0), random_llama(1)
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, VOCAB, (PROMPT_LEN,), generator=gen).tolist() for _ in range(NUM_EXAMPLES)]
    # warm-up: first calls pay for allocator and kernel setup
    shift_analysis(base, tuned, prompts[:2], [p[:4] for p in prompts[:2]], pad_id=PAD)
    shift_analysis_slow(base, tuned, prompts[:2], [p[:4] for p in prompts[:2]])
    print(f"threads={torch.get_num_threads()} examples={NUM_EXAMPLES} prompt_len={PROMPT_LEN} vocab={VOCAB}")
    for response_len in (64, 256):
        responses = [torch.randint(1, VOCAB, (response_len,), generator=gen).tolist()
                     for _ in range(NUM_EXAMPLES)]
        fast, t_fast = timed(lambda: shift_analysis(base, tuned, prompts, responses, pad_id=PAD))
        slow, t_slow = timed(lambda: shift_analysis_slow(base, tuned, prompts, responses))
        print(f"response_len={response_len}: fast {t_fast:.3f}s  slow {t_slow:.2f}s  "
              f"speed-up {t_slow / t_fast:.0f}x  | max |dkl| {max_diff(fast, slow, 'kl'):.2e}  "
              f"max |dkl_topk| {max_diff(fast, slow, 'kl_topk'):.2e}  "
              f"max |drank| {max_diff(fast, slow, 'base_rank'):.0f}  "
              f"mean kl {torch.cat([f['kl'] for f in fast]).mean():.3f}")


if __name__ == "__main__":
    main()

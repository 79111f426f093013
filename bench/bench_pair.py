"""`tunestudy shift` on Gemma 3 270M and the chapter's LoRA adapter: answers per second, against the reference.

- the command's analysis (`tokenshift.analyse`: greedy answers, then both models in one batched forward
  pass each, logits at the answer's positions only), answers per second;
- the scoring alone, batched (`metrics.shift_analysis`), against the reference code's way
  (Re-Align/AlignTDS `logit_analysis.py`: one forward pass of each model per answer prefix, here
  `metrics.shift_analysis_slow`) on the same answers: the speed-up and the largest difference in KL.

    python bench/bench_pair.py [--threads 2] [--examples 8]

Uses the adapter and held-out facts of chapter 15 (`shiftdemo.run`, cached; built first if absent, about
two minutes).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--examples", type=int, default=8, help="answers timed")
    args = parser.parse_args()
    import torch

    from tunestudy import experiments as X, metrics, shiftdemo, tokenshift
    torch.set_num_threads(args.threads)
    config = X.tune_config("lora", 5e-4, 3.0, 8, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                           base_model="gemma3-270m")
    spec = shiftdemo.DemoSpec(tune=tuple(sorted({**config.__dict__, "batch_size": 8}.items())))
    pair = replace(shiftdemo.run(spec)["pair"], num_examples=args.examples)
    start = time.perf_counter()
    base, tuned, tokenizer = tokenshift.load_pair(pair)
    print(f"load both models: {time.perf_counter() - start:.1f} s")
    examples = tokenshift.data_examples(pair.data)
    start = time.perf_counter()
    out = tokenshift.analyse(base, tuned, tokenizer, examples, pair)
    seconds = time.perf_counter() - start
    print(f"analyse {args.examples} answers ({out['summary']['positions']} tokens): {seconds:.1f} s, "
          f"{args.examples / seconds:.2f} answers/s")
    prompts = [tokenshift.prompt_ids(tokenizer, tokenshift.instruction_text(e), pair.template)
               for e in examples[:args.examples]]
    answers = [[r["token_id"] for r in out["tokens"] if r["example"] == i] for i in range(args.examples)]
    start = time.perf_counter()
    fast = metrics.shift_analysis(base, tuned, prompts, answers, tokenizer.pad_token_id, batch_size=pair.batch_size,
                                  top_k=tokenshift.TOP_K, scored_only=True)
    batched = time.perf_counter() - start
    start = time.perf_counter()
    slow = metrics.shift_analysis_slow(base, tuned, prompts, answers, top_k=tokenshift.TOP_K)
    reference = time.perf_counter() - start
    diff = max((f["kl"].double() - s["kl"]).abs().max().item() for f, s in zip(fast, slow))
    diff_topk = max((f["kl_topk"].double() - s["kl_topk"]).abs().max().item() for f, s in zip(fast, slow))
    ranks = sum(int((f["base_rank"] != s["base_rank"]).sum()) for f, s in zip(fast, slow))
    print(f"scoring, batched: {batched:.2f} s ({args.examples / batched:.2f} answers/s); one pass per prefix: "
          f"{reference:.1f} s ({args.examples / reference:.2f} answers/s); speed-up {reference / batched:.1f}x")
    print(f"largest difference: KL {diff:.2e} nats, top-{tokenshift.TOP_K} KL {diff_topk:.2e}; "
          f"ranks that differ: {ranks} of {out['summary']['positions']}")


if __name__ == "__main__":
    main()

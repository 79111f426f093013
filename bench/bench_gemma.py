"""Gemma 3 270M on this machine: loading (uncached and cached), tuning tokens/s, SliCK labelling facts/s, memory.

- load, uncached: the GGUF assembled, checked and dequantized to float32 by
  transformers, then saved once as a Hugging Face folder (`gemma.hf_folder`
  on an empty cache);
- load, cached: the same model read back from that folder;
- tuning: steps of LoRA (rank 8, every linear layer) and of full fine-tuning
  (input embedding frozen, as the issue measured) on the chapter's batches of 8
  real-fact questions in the template with the answer scored, through
  `tuning.train_loop`, with logits at every position and at the answer's
  positions only (`scored_logits_only`), in float32 and in bfloat16 mixed
  precision (`precision`; the chapter tunes scored-only in bfloat16); tokens/s
  counts the tokens of each batch, padding excluded;
- labelling: `slick.label_facts` greedy on the first facts of each relation,
  4 prompts of 3 shots per fact, in float32 and under bfloat16 autocast;
- peak memory: the process's maximum resident set size.

    python bench/bench_gemma.py [--threads 2] [--steps 4] [--facts 20]

The uncached load writes about 1.1 GB into a temporary cache, removed after.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="timed tuning steps per method")
    parser.add_argument("--facts", type=int, default=20, help="facts labelled per relation")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    temporary = Path(tempfile.mkdtemp(prefix="bench_gemma_"))
    os.environ["TUNESTUDY_CACHE"] = str(temporary)
    try:
        from tunestudy import gemma, models, realbase, realfacts, slick, tuning
        start = time.perf_counter()
        folder = gemma.hf_folder()
        uncached = time.perf_counter() - start
        start = time.perf_counter()
        model, tokenizer = models.load_pretrained(str(folder))
        cached = time.perf_counter() - start
        print(f"load, uncached (assemble, check, dequantize, save once): {uncached:.1f} s")
        print(f"load, cached (the saved float32 folder): {cached:.1f} s")

        facts = realfacts.build_facts()
        examples = [realbase.as_example(f) for f in facts[:64]]
        for method, scored, precision in (("lora", False, "float32"), ("lora", True, "float32"),
                                          ("lora", True, "bfloat16"), ("full", False, "float32"),
                                          ("full", True, "float32"), ("full", True, "bfloat16")):
            model, tokenizer = models.load_pretrained(str(folder))
            if method == "lora":
                from peft import LoraConfig, get_peft_model
                model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=[
                    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
            else:
                model.get_input_embeddings().weight.requires_grad_(False)
            params = [p for p in model.parameters() if p.requires_grad]
            counted = []

            def batches():  # the chapter's batches: questions in the template, the answer scored
                for batch in tuning.example_batches(tokenizer, examples, tuning.TuneConfig(batch_size=8),
                                                    ["all"] * len(examples)):
                    counted.append(int(batch[1].sum()))
                    yield batch

            stream = batches()
            tuning.train_loop(model, params, stream, 1, 1e-4, desc="warm-up", scored_logits_only=scored,
                              precision=precision)  # allocation
            counted.clear()
            start = time.perf_counter()
            tuning.train_loop(model, params, stream, args.steps, 1e-4, desc=method, scored_logits_only=scored,
                              precision=precision)
            seconds = time.perf_counter() - start
            head = "the answer's positions only" if scored else "every position"
            chapter = " (the chapter)" if scored and precision == "bfloat16" else ""
            print(f"tuning, {method}, {precision}, logits at {head}{chapter}: {sum(counted) / seconds:.0f} tokens/s "
                  f"({seconds / args.steps:.2f} s a step, batch of 8, {sum(p.numel() for p in params) / 1e6:.1f}M "
                  "trainable)")
            del model

        model, tokenizer = models.load_pretrained(str(folder))
        picked = [f for r in realfacts.RELATIONS for f in [x for x in facts if x["relation"] == r][:args.facts]]
        for precision in ("float32", "bfloat16"):
            start = time.perf_counter()
            with realbase.precision_context(precision):
                labels = slick.label_facts(model, tokenizer, picked, num_prompts=4, shots=3)
            seconds = time.perf_counter() - start
            print(f"labelling, {precision} (4 greedy 3-shot prompts a fact): {len(picked) / seconds:.2f} facts/s "
                  f"({len(picked)} facts in {seconds:.1f} s)")
        shares = slick.category_shares(labels)["all"]
        print("categories of those facts: " + ", ".join(f"{c} {v:.2f}" for c, v in shares.items()))
        print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2:.1f} GB")
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


if __name__ == "__main__":
    main()

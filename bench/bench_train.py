"""Fine-tuning throughput: tokens/s and achieved FLOP/s against the machine's matmul peak and HF Trainer.

The default model of the study (`build_model("small", vocab_size=400, seed=0)`),
batches of 16 sequences of 48 random tokens, trained by `tunestudy.tuning.train_loop`
(the loop `finetune` uses) with full fine-tuning and with LoRA rank 1 on
q_proj,v_proj, then by `transformers.Trainer` (+ peft for LoRA) on the same
model, the same batches and the same number of timed steps. The first
`--warmup` steps of every run are not timed.

How FLOPs are counted, per trained token (N = all parameters; the input
embedding is tied to the output head, so N counts the head's matmul once and
the embedding lookup, which costs no FLOPs, not at all):
- full:  6N + 6*L*T*d          (forward 2N, backward 4N: activation and weight gradients;
                                 6*L*T*d for the attention scores and their gradients, T = 48)
- LoRA:  4N + 6*N_lora + 6*L*T*d  (the frozen weights still run forward (2N) and pass activation
                                   gradients back (2N), but no weight gradients are formed;
                                   the adapter's own N_lora weights cost 6 per token as usual)
Peak: the best of several float32 torch.matmul of two 2048x2048 matrices
(2*n^3 FLOPs each), with the same thread count, measured in the same process.

    python bench/bench_train.py [--quick] [--threads 1] [--steps 30] [--warmup 5]

One torch thread by default (see bench_shift.py): on a shared machine the
figure should measure the code, not the other process. Timings on a loaded
machine are noisy; the fraction of peak is the steadier number because both
are measured in the same minute.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import tempfile
import time
import warnings

import torch

from tunestudy import models, tuning

VOCAB, BATCH, SEQ, LORA_TARGETS = 400, 16, 48, "q_proj,v_proj"
LR = 1e-3


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    """Best observed float32 FLOP/s of an n x n matmul."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen)
    b = torch.randn(n, n, generator=gen)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def make_data(num_sequences: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(4, VOCAB, (num_sequences, SEQ), generator=gen)


def fresh_model(method: str):
    """The default small base, wrapped with LoRA rank 1 on q/v when method == 'lora'."""
    model = models.build_model("small", vocab_size=VOCAB, seed=0)
    if method == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=1, lora_alpha=2.0, lora_dropout=0.0, bias="none",
                                                 target_modules=LORA_TARGETS.split(",")))
    return model


def flops_per_token(model, method: str) -> tuple[float, int, int]:
    config = (model.get_base_model() if method == "lora" else model).config
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    frozen = total - trainable if method == "lora" else total
    attention = 6 * config.num_hidden_layers * SEQ * config.hidden_size
    if method == "full":
        return 6 * total + attention, total, trainable
    return 4 * frozen + 6 * trainable + attention, frozen, trainable


def run_tunestudy(method: str, data: torch.Tensor, steps: int, warmup: int) -> float:
    """Seconds for `steps` timed steps of tuning.train_loop after `warmup` untimed ones."""
    model = fresh_model(method)
    params = [p for p in model.parameters() if p.requires_grad]
    stamps = []

    def batches():
        i = 0
        while True:
            ids = data[(i * BATCH) % len(data):][:BATCH]
            ones = torch.ones_like(ids)
            yield ids, ones, ones.bool(), ["all"] * BATCH
            i += 1

    def on_step(step):
        stamps.append(time.perf_counter())

    with contextlib.redirect_stderr(io.StringIO()):  # no progress bar in the figures
        tuning.train_loop(model, params, batches(), warmup + steps, LR, desc=f"bench {method}", on_step=on_step)
    return stamps[-1] - stamps[warmup - 1]


def run_hf_trainer(method: str, data: torch.Tensor, steps: int, warmup: int) -> float:
    """Seconds for `steps` timed steps of transformers.Trainer (+peft) after `warmup` untimed ones."""
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    model = fresh_model(method)
    stamps = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    rows = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
            for ids in data]
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no",
            eval_strategy="no", per_device_train_batch_size=BATCH, max_steps=warmup + steps,
            learning_rate=LR, weight_decay=0.0, adam_beta2=0.98, max_grad_norm=1.0, optim="adamw_torch",
            lr_scheduler_type="cosine", warmup_steps=1, dataloader_num_workers=0, remove_unused_columns=False,
            disable_tqdm=True, seed=0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[Stamp()])
        with contextlib.redirect_stdout(io.StringIO()):  # Trainer prints its own summary dict
            trainer.train()
    return stamps[-1] - stamps[warmup - 1]


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps (2 warm-up, 6 timed), for a smoke check")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    parser.add_argument("--no-hf", action="store_true", help="skip the transformers.Trainer comparison")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 6, 2
    args.warmup = max(1, args.warmup)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)

    data = make_data()
    peak = matmul_peak()
    tokens = args.steps * BATCH * SEQ
    print(f"threads={torch.get_num_threads()}  batch={BATCH}x{SEQ} tokens  timed steps={args.steps} "
          f"(after {args.warmup} warm-up)  matmul peak {peak / 1e9:.1f} GFLOP/s (float32, 2048^2)")
    rows = []
    runners = [("tunestudy", run_tunestudy)] + ([] if args.no_hf else [("HF Trainer", run_hf_trainer)])
    for method in ("full", "lora"):
        fpt, counted, trainable = flops_per_token(fresh_model(method), method)
        for name, runner in runners:
            seconds = runner(method, data, args.steps, args.warmup)
            rows.append({"loop": name, "method": method, "seconds": seconds, "tokens_per_s": tokens / seconds,
                         "flops_per_token": fpt, "gflops": fpt * tokens / seconds / 1e9,
                         "fraction_of_peak": fpt * tokens / seconds / peak, "trainable": trainable})
    print(f"{'loop':<11} {'method':<6} {'trainable':>9} {'ms/step':>8} {'tokens/s':>9} {'FLOP/token':>10} "
          f"{'GFLOP/s':>8} {'of peak':>8}")
    for r in rows:
        print(f"{r['loop']:<11} {r['method']:<6} {r['trainable']:>9,} {1e3 * r['seconds'] / args.steps:>8.1f} "
              f"{r['tokens_per_s']:>9,.0f} {r['flops_per_token'] / 1e6:>9.2f}M {r['gflops']:>8.2f} "
              f"{r['fraction_of_peak']:>8.1%}")
    if not args.no_hf:
        for method in ("full", "lora"):
            ours, theirs = (next(r for r in rows if r["loop"] == loop and r["method"] == method)
                            for loop in ("tunestudy", "HF Trainer"))
            print(f"{method}: tunestudy train_loop is {theirs['seconds'] / ours['seconds']:.2f}x the speed of "
                  "transformers.Trainer")
    print("FLOPs/token: full 6N + 6LTd; LoRA 4N_frozen + 6N_lora + 6LTd (no frozen weight gradients)")
    return rows


if __name__ == "__main__":
    main()

"""Pretraining from scratch and the one fine-tuning loop (LoRA or full).

Both share `train_loop`: AdamW, linear warm-up then cosine decay, per-step loss
logged, a tqdm progress bar, and a hard stop on a NaN or infinite loss so a
diverged run never becomes a cached artifact. The loop goes through Hugging
Face Accelerate (`accelerator.prepare`, `backward`, `clip_grad_norm_`): it puts
the model and its batches on the device Accelerate picks, and in one process on
the CPU it does exactly what the plain torch loop did, to the bit
(tests/test_training_fit.py compares the two).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import distributed
from .cache import PROGRESS_VARIABLE

from .models import count_parameters, device

METHODS = ("lora", "full")
LOSS_ON = ("response", "value")


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining of the synthetic base. Defaults aim at >90% probe accuracy on known people.

    Knowledge arrives after a plateau whose length varies by seed (by 10+ epochs
    at the same settings), so the default trains well past the typical onset.
    """

    size: str = "small"  # a key of models.SIZES
    epochs: int = 45  # passes over the corpus
    lr: float = 1e-2  # peak; lower rates left some seeds' bases far below 0.9 (bench/sweep_pretrain.py)
    batch_size: int = 16  # blocks per step
    block_size: int = 128  # tokens per block; documents are packed
    seed: int = 0


@dataclass(frozen=True)
class TuneConfig:
    """Instruction tuning. LoRA's default trainable fraction is well under 1% of the base (rank 1 on q/v)."""

    method: str = "lora"  # "lora" or "full"
    lr: float = 1e-3
    epochs: float = 5.0  # passes over the instruction set (used when steps == 0)
    steps: int = 0  # fixed number of optimizer steps; 0 means use epochs
    batch_size: int = 16
    lora_rank: int = 1
    lora_alpha: float = 2.0  # scaling = alpha / rank
    lora_targets: str = "q_proj,v_proj"  # comma-separated module names
    loss_on: str = "response"  # "response": every response token; "value": only the asked value's tokens
    seed: int = 0

    def validate(self, names: dict | None = None) -> None:
        """One-line errors naming the parameter, before any work; types first, then ranges.

        `names` maps a field to the name the user typed (a chapter's `lora_lr` for `lr`).
        """
        names = names or {}

        def name(field):
            return names.get(field, field)

        for field in ("steps", "batch_size", "lora_rank", "seed"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name(field)} must be an integer, got {value!r}")
        for field in ("lr", "epochs", "lora_alpha"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                allowed = " between 0 and 1" if field == "lr" else ""
                raise ValueError(f"{name(field)} must be a number{allowed}, got {value!r}")
        if self.method not in METHODS:
            raise ValueError(f"{name('method')} must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.loss_on not in LOSS_ON:
            raise ValueError(f"{name('loss_on')} must be one of {', '.join(LOSS_ON)}, got {self.loss_on!r}")
        if not 0 < self.lr < 1:
            raise ValueError(f"{name('lr')} must be a number between 0 and 1, got {self.lr!r}")
        if self.steps < 0 or (self.steps == 0 and not self.epochs > 0):
            raise ValueError(f"{name('steps')} must be >= 0 and {name('epochs')} > 0 when steps is 0, "
                             f"got steps={self.steps}, epochs={self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"{name('batch_size')} must be a positive integer, got {self.batch_size}")
        if self.batch_size < distributed.world():  # each launched process trains on its share of a batch's rows
            raise ValueError(f"{name('batch_size')} must be at least the number of processes "
                             f"({distributed.world()}), got {self.batch_size}")
        if self.method == "lora" and self.lora_rank < 1:
            raise ValueError(f"{name('lora_rank')} must be a positive integer, got {self.lora_rank}")
        if self.method == "lora" and not [t for t in self.lora_targets.split(",") if t.strip()]:
            raise ValueError(f"{name('lora_targets')} must name at least one module, got {self.lora_targets!r}")


PRECISIONS = ("float32", "bfloat16")


def autocast(device_type: str, precision: str):
    """bfloat16 autocast on `device_type` for "bfloat16" (mixed precision: float32 weights, bfloat16 matmuls),
    nothing for "float32"; a one-line error names `precision` otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)


def train_loop(model, params, batches, num_steps: int, lr: float, desc: str, warmup_fraction: float = 0.05,
               on_step=None, scored_logits_only: bool = False, precision: str = "float32"):
    """Optimise `params` on `num_steps` batches; return the per-step loss log.

    `batches` yields (input_ids, attention_mask, loss_mask, group) with group a
    list of labels per example; the log keeps the mean loss per group as well, so
    a chapter can see how fast each kind of example is fitted.

    `scored_logits_only` asks the model for logits only at the positions that
    predict a scored token (transformers' `logits_to_keep`): the same loss, and
    with a large vocabulary far less work (Gemma's 262k-token head is most of a
    step's cost when only the short answer is scored). Off by default: the
    synthetic chapters' runs stay as they were, bit for bit.

    `precision="bfloat16"` runs each step's forward pass under bfloat16
    autocast (the weights, gradients and optimizer stay float32; the loss is
    taken in float32). The autocast region is one step: torch keeps its
    bfloat16 copies of the weights until the region ends, so one region around
    the whole loop would train on the first step's weights throughout.

    Launched in several processes (`accelerate launch`, see distributed.py),
    each process trains on its contiguous share of every batch's rows, and the
    loss is the batch's: each share's summed token loss over the whole batch's
    token count, times the number of processes, since Accelerate's
    DistributedDataParallel averages the processes' gradients. So the step
    is the one a single process takes on the whole batch, to rounding
    (tests/test_distributed.py), and the logged losses are the whole batch's.
    In one process none of this runs.
    """
    from accelerate import Accelerator
    autocast(device().type, precision)  # a bad precision stops here, before any step
    accelerator = Accelerator(cpu=device().type == "cpu")  # the device the rest of the study uses
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    model, optimizer = accelerator.prepare(model, optimizer)
    warmup = max(1, int(num_steps * warmup_fraction))

    def schedule(step):  # linear warm-up, cosine decay to 10%
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, num_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer.optimizer, schedule)  # stepped once per step, by us
    where = accelerator.device
    processes, me = accelerator.num_processes, accelerator.process_index
    model.train()
    log = {"step": [], "loss": [], "group_loss": []}
    # A bar on a terminal only: none in a notebook page (plain tqdm, not tqdm.auto's widget, which
    # warns without ipywidgets), none under the book driver, which prints its own progress lines.
    quiet = True if os.environ.get(PROGRESS_VARIABLE) else None
    bar = tqdm(range(num_steps), desc=desc, mininterval=2.0, leave=False, disable=quiet)
    for step in bar:
        input_ids, attention_mask, loss_mask, groups = next(batches)
        if processes > 1:  # this process's rows of the batch
            rows = distributed.shard_rows(len(input_ids), me, processes)
            input_ids, attention_mask, loss_mask = input_ids[rows], attention_mask[rows], loss_mask[rows]
            groups = groups[rows.start:rows.stop]
        input_ids, attention_mask, loss_mask = input_ids.to(where), attention_mask.to(where), loss_mask.to(where)
        with autocast(where.type, precision):
            if scored_logits_only:  # positions t whose next token t+1 is scored in some row of the batch
                keep = loss_mask[:, 1:].any(0).nonzero().flatten()  # (K,)
                logits = model(input_ids=input_ids, attention_mask=attention_mask,
                               logits_to_keep=keep).logits  # (B, K, V)
                targets, mask = input_ids[:, keep + 1], loss_mask[:, keep + 1].float()
            else:
                logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]  # (B, T-1, V)
                targets, mask = input_ids[:, 1:], loss_mask[:, 1:].float()
        logits = logits.float()  # the same tensor in float32; bfloat16 logits are taken up to float32 for the loss
        # Token t predicts token t+1; loss_mask marks the predicted tokens that count.
        token_loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, K or T-1)
        example_loss = (token_loss * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B,)
        if processes == 1:
            loss = batch_loss = (token_loss * mask).sum() / mask.sum()
        else:  # the whole batch's sum and count; DDP's mean of the processes' gradients undoes the factor
            summed = (token_loss * mask).sum()
            totals = accelerator.reduce(torch.stack([summed.detach(), mask.sum()]), reduction="sum")
            loss = summed / totals[1] * processes
            batch_loss = totals[0] / totals[1]
        if not torch.isfinite(batch_loss):  # every process sees the same batch loss: all stop together
            raise FloatingPointError(f"{desc}: loss became {batch_loss.item()} at step {step} (lr={lr}); "
                                     "lower the learning rate. Nothing was saved.")
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        log["step"].append(step)
        log["loss"].append(batch_loss.item())
        if processes == 1:
            log["group_loss"].append(_mean_by_group(example_loss.detach(), groups))
        else:
            log["group_loss"].append(_mean_by_group(torch.tensor(distributed.gathered(example_loss.detach().tolist())),
                                                    distributed.gathered(groups)))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{batch_loss.item():.3f}")
        if on_step is not None:
            on_step(step)
    model.eval()
    if processes > 1:  # launched; one process's log stays as it always was
        log["processes"] = processes
    return log


def _mean_by_group(values, groups) -> dict:
    out = {}
    for group in set(groups):
        picked = [v for v, g in zip(values.tolist(), groups) if g == group]
        out[group] = sum(picked) / len(picked)
    return out


# --- pretraining -------------------------------------------------------------------------------

def pack_documents(tokenizer, docs: list, block_size: int, rng: random.Random) -> torch.Tensor:
    """Shuffle documents, join them as BOS doc EOS ..., and cut into (N, block_size) blocks."""
    order = docs[:]
    rng.shuffle(order)
    ids = []
    for doc in order:
        ids += tokenizer(doc)["input_ids"] + [tokenizer.eos_token_id]
    n = len(ids) // block_size
    return torch.tensor(ids[: n * block_size]).view(n, block_size)


def pretrain(model, tokenizer, docs: list, config: PretrainConfig, snapshot_epochs=(), on_snapshot=None) -> dict:
    """Train from scratch on packed documents; call on_snapshot(epoch) after each epoch in snapshot_epochs."""
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    model.to(device())
    blocks_per_epoch = len(pack_documents(tokenizer, docs, config.block_size, random.Random(0)))
    steps_per_epoch = max(1, blocks_per_epoch // config.batch_size)

    def batches():
        while True:
            blocks = pack_documents(tokenizer, docs, config.block_size, rng)  # reshuffled each epoch
            for i in range(steps_per_epoch):
                batch = blocks[i * config.batch_size:(i + 1) * config.batch_size]
                ones = torch.ones_like(batch)
                yield batch, ones, ones, ["all"] * len(batch)

    def after_step(step):
        epoch, rest = divmod(step + 1, steps_per_epoch)
        if rest == 0 and epoch in snapshot_epochs and on_snapshot is not None:
            on_snapshot(epoch)

    log = train_loop(model, list(model.parameters()), batches(), steps_per_epoch * config.epochs,
                     config.lr, desc=f"pretrain {config.size}", on_step=after_step)
    log["tokens"] = steps_per_epoch * config.epochs * config.batch_size * config.block_size
    log["steps_per_epoch"] = steps_per_epoch
    return log


# --- instruction tuning ------------------------------------------------------------------------

def encode_example(tokenizer, prompt: str, response: str, value_span=None):
    """Token ids of prompt+response+EOS and two masks over them: response tokens, value tokens.

    Tokenizing the joined text (not the parts) is what the model sees at test
    time; character offsets decide which tokens belong to the response.
    """
    enc = tokenizer(prompt + response, return_offsets_mapping=True)
    ids = enc["input_ids"] + [tokenizer.eos_token_id]
    offsets = enc["offset_mapping"] + [(len(prompt + response),) * 2]
    special = set(tokenizer.all_special_ids) - {tokenizer.eos_token_id}
    response_mask = [i == len(ids) - 1 or (start >= len(prompt) and tid not in special)
                     for i, (tid, (start, _)) in enumerate(zip(ids, offsets))]
    value_mask = [False] * len(ids)
    if value_span is not None and value_span[0] >= 0:
        lo, hi = len(prompt) + value_span[0], len(prompt) + value_span[1]
        value_mask = [start < hi and end > lo and start != end for start, end in offsets[:-1]] + [False]
    return ids, response_mask, value_mask


def example_batches(tokenizer, examples: list, config: TuneConfig, groups: list):
    """Endless shuffled right-padded batches of the instruction set."""
    encoded = [encode_example(tokenizer, e.prompt, e.response, getattr(e, "value_span", None)) for e in examples]
    rng = random.Random(config.seed)
    pad = tokenizer.pad_token_id
    order = list(range(len(examples)))
    while True:
        rng.shuffle(order)
        # Full batches only; a set smaller than one batch is one batch.
        for i in range(0, max(1, len(order) - config.batch_size + 1), config.batch_size):
            picked = order[i:i + config.batch_size]
            width = max(len(encoded[j][0]) for j in picked)
            input_ids = torch.full((len(picked), width), pad)
            attention = torch.zeros((len(picked), width), dtype=torch.long)
            loss_mask = torch.zeros((len(picked), width), dtype=torch.bool)
            for row, j in enumerate(picked):
                ids, response_mask, value_mask = encoded[j]
                input_ids[row, :len(ids)] = torch.tensor(ids)
                attention[row, :len(ids)] = 1
                loss_mask[row, :len(ids)] = torch.tensor(value_mask if config.loss_on == "value" else response_mask)
            yield input_ids, attention, loss_mask, [groups[j] for j in picked]


def num_tuning_steps(config: TuneConfig, num_examples: int) -> int:
    if config.steps:
        return config.steps
    return max(1, math.ceil(config.epochs * num_examples / config.batch_size))


def finetune(base_model, tokenizer, examples: list, config: TuneConfig, groups: list | None = None,
             scored_logits_only: bool = False, precision: str = "float32"):
    """Tune a copy-free base in place: LoRA wraps it with peft, full trains every weight.

    `scored_logits_only` and `precision`: see `train_loop` (the real-base chapter sets both).

    Returns (model, log). For LoRA the model is a peft PeftModel whose adapter
    `save_pretrained` writes in peft's format; `merge_and_unload` gives a plain model.
    """
    config.validate()
    torch.manual_seed(config.seed)
    groups = groups or ["all"] * len(examples)
    base_parameters = count_parameters(base_model)
    model = base_model
    if config.method == "lora":
        from peft import LoraConfig, get_peft_model
        lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                          target_modules=[t.strip() for t in config.lora_targets.split(",")], bias="none")
        model = get_peft_model(base_model, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    steps = num_tuning_steps(config, len(examples))
    log = train_loop(model, params, example_batches(tokenizer, examples, config, groups), steps, config.lr,
                     desc=f"tune {config.method} lr={config.lr:g}", scored_logits_only=scored_logits_only,
                     precision=precision)
    log["trainable_parameters"] = sum(p.numel() for p in params)
    log["base_parameters"] = base_parameters
    log["trainable_fraction"] = log["trainable_parameters"] / base_parameters
    return model, log

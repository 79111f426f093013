"""A real base model on real facts: its own knowledge labels, and tuning runs measured on held-out facts by label.

Cached kinds (hashing `SOURCES`):

- "slick_labels": the SliCK category of every chosen fact (`slick.label_facts`),
  from the base's few-shot answers;
- "real_base": the base's own answers to the held-out facts, and its few-shot
  accuracy on the relations no run tunes (what forgetting is measured from);
- "real_run": one LoRA or full fine-tuning run on questions about facts of
  chosen categories, asked in the study's template, tuned in this process by
  `tuning.finetune` and measured on the held-out facts: the greedy answer to
  each (right or wrong, by category), the per-token KL to the base on those
  answers (full vocabulary and the reference's top-k recipe) with the tuned
  token's rank under the base, and the few-shot accuracy on facts of relations
  that were not tuned (forgetting). No model is saved: nothing else reads it;
- "stand_in": a tiny model with a subword tokenizer, the smoke runs' base.

`precision` (a LabelSpec and RunSpec field): "bfloat16" runs the labelling
answers, each tuning step's forward pass and the greedy answers under
torch.autocast in bfloat16 (mixed precision: the weights, gradients and
optimizer stay float32), and "float32" runs everything in float32. The KL and
the token ranks (`metrics.shift_analysis`) are always scored in float32. On
this CPU (AMX) greedy answering is about 2.1x faster in bfloat16; a tuning
step gains little, since the weights are cast again every step (see the
README's performance table).

Facts are dicts with `instruction`, `output`, `relation` and `subject`, and
optionally `aliases`, other right answers (`realfacts.build_facts`, or a file
of that shape). Each tuned relation's
labelled facts are split once, by a fixed seed, into a tuning half and a
held-out half per category, so every run and seed is measured on the same
held-out facts; a run's seed draws its set from the tuning half and orders it.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from . import cache, metrics, models, slick, tuning, world as W

__all__ = ["FACT_FIELDS", "PRECISIONS", "SOURCES", "LabelSpec", "RunSpec", "answer_rows", "as_example", "base_measures",
           "check_precision", "fact_keys", "labels", "precision_context",
           "load_fact_file", "pick_facts", "real_run", "resolve_model", "save_tiny_model", "shift_shares",
           "split_facts", "stand_in_model", "states", "tuning_set"]

SOURCES = ("distributed.py", "metrics.py", "models.py", "realbase.py", "realfacts.py", "slick.py", "tuning.py", "world.py")
FACT_FIELDS = ("instruction", "output", "relation", "subject")
SPLIT_SEED = 0  # the held-out half of each relation and category: the same for every run
PRECISIONS = tuning.PRECISIONS  # see the module docstring


AUTO = "auto"
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # x86 CPUs that multiply bfloat16 in hardware


def cpu_flags(cpuinfo: str | None = None) -> set:
    """The CPU's feature flags from /proc/cpuinfo (or the text given); empty where there is no such file."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def native_bfloat16(device_type: str, cpuinfo: str | None = None) -> bool:
    """True where bfloat16 matmuls run in hardware: a GPU that supports them, a CPU with AMX or AVX-512 BF16.

    Elsewhere torch emulates them: on this project's AMD EPYC (AVX2 only) a one-thread 1024x1024 matmul
    ran at 0.7 GFLOP/s in bfloat16 against 33.8 in float32, where an Intel CPU with AMX ran 1,072 against 156.
    """
    if device_type == "cuda":
        import torch
        return torch.cuda.is_bf16_supported()
    return device_type == "cpu" and bool(cpu_flags(cpuinfo) & set(NATIVE_BF16_FLAGS))


def check_precision(precision, cpuinfo: str | None = None) -> str:
    """The precision to run in: "auto" is bfloat16 where the device computes it natively, else float32;
    "float32" and "bfloat16" as given; anything else a one-line error listing the allowed ones."""
    if precision == AUTO:
        return "bfloat16" if native_bfloat16(models.device().type, cpuinfo) else "float32"
    try:
        tuning.autocast(models.device().type, precision)
    except ValueError:
        raise ValueError(f"precision must be one of {AUTO}, {', '.join(tuning.PRECISIONS)}, got {precision!r}") from None
    return precision


def precision_context(precision: str):
    """bfloat16 autocast on the study's device for "bfloat16", nothing for "float32" (`tuning.autocast`): for
    answering only; tuning enters it once a step (`tuning.train_loop`)."""
    return tuning.autocast(models.device().type, precision)


def resolve_model(base_model: str) -> tuple:
    """(folder or hub id to load, what identifies its weights): the Gemma alias is its cached float32 folder."""
    models.check_base_model(base_model)
    if base_model == models.SYNTHETIC:
        raise ValueError("base_model must be a real model here (a save_pretrained folder, a hub id or "
                         "'gemma3-270m'), got 'synthetic': the synthetic base knows no real facts")
    if base_model == models.GEMMA_ALIAS:
        from . import gemma
        folder = gemma.hf_folder()
        return str(folder), f"{models.GEMMA_ALIAS}:{folder.name}"  # the folder's cache key names its GGUF
    return base_model, models.fingerprint(base_model)


def load_fact_file(path: str) -> list:
    """Facts from a JSON list (Alpaca items with `relation` and `subject`); one-line errors naming facts_file."""
    from .data import load_alpaca
    load_alpaca(path)  # the Alpaca rules and their one-line errors first
    items = json.loads(Path(path).expanduser().read_text(encoding="utf-8-sig"))
    for i, item in enumerate(items):
        missing = [f for f in FACT_FIELDS if not isinstance(item.get(f), str) or not item.get(f).strip()]
        if missing:
            raise ValueError(f"facts_file {path!r}: item {i} has no string {', '.join(missing)}; every fact needs "
                             f"{', '.join(FACT_FIELDS)}")
        aliases = item.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
            raise ValueError(f"facts_file {path!r}: item {i} has aliases that are not a list of non-empty strings; "
                             f"aliases (optional) lists other right answers")
    return [{**{f: item[f] for f in FACT_FIELDS}, **({"aliases": item["aliases"]} if item.get("aliases") else {})}
            for item in items]


def fact_keys(facts: list) -> tuple:
    """What identifies the facts a labelling or run reads: relation, subject, answer and its aliases, in order."""
    return tuple((f["relation"], f["subject"], f["output"], *f.get("aliases", ())) for f in facts)


def pick_facts(facts: list, per_relation: dict) -> list:
    """A fixed sample of each relation's facts: {relation: count}; one-line errors name relations and counts."""
    known = sorted({f["relation"] for f in facts})
    chosen = []
    for relation, count in per_relation.items():
        pool = [f for f in facts if f["relation"] == relation]
        if not pool:
            raise ValueError(f"relations: {relation!r} is not a relation of the facts; allowed: {', '.join(known)}")
        if count > len(pool):
            raise ValueError(f"facts of relation {relation!r}: at most {len(pool)}, got {count}")
        order = sorted(pool, key=lambda f: f["subject"])
        random.Random(f"pick:{relation}").shuffle(order)
        chosen += order[:count]
    return chosen


@dataclass(frozen=True)
class LabelSpec:
    """Which facts are labelled, and how (see `slick.label_facts`)."""

    model: str  # what identifies the base's weights (`resolve_model`)
    facts: tuple  # `fact_keys`: the facts' (relation, subject, output, *aliases), in order
    num_prompts: int = 4
    shots: int = 3
    num_samples: int = 0
    temperature: float = 0.5
    precision: str = "float32"  # of the labelling answers (`precision_context`)


def labels(load_from: str, spec: LabelSpec, facts: list) -> list:
    """One SliCK record per fact (cached)."""

    def compute():
        model, tokenizer = models.load_pretrained(load_from)
        with precision_context(spec.precision):
            return slick.label_facts(model, tokenizer, facts, spec.num_prompts, spec.shots, spec.num_samples,
                                     spec.temperature)

    return cache.cached_json("slick_labels", asdict(spec), compute, sources=SOURCES,
                             label=f"SliCK labels of {len(facts)} facts")


def split_facts(records: list, facts: list) -> dict:
    """{"tune": [...], "heldout": [...]} facts with their category, halves per (relation, category) by SPLIT_SEED."""
    labelled = [{**f, "category": r["category"], "p_greedy": r["p_greedy"]} for f, r in zip(facts, records)]
    out = {"tune": [], "heldout": []}
    groups = sorted({(f["relation"], f["category"]) for f in labelled})
    for relation, category in groups:
        group = sorted((f for f in labelled if (f["relation"], f["category"]) == (relation, category)),
                       key=lambda f: f["subject"])
        random.Random(f"split:{SPLIT_SEED}:{relation}:{category}").shuffle(group)
        half = len(group) // 2
        out["tune"] += group[:half]
        out["heldout"] += group[half:]
    return out


def tuning_set(pool: list, categories: tuple, size: int, seed: int) -> list:
    """`size` facts of `categories` from the tuning half, drawn by `seed`; a one-line error names set_size."""
    picked = sorted((f for f in pool if f["category"] in categories), key=lambda f: (f["relation"], f["subject"]))
    if size > len(picked):
        raise ValueError(f"set_size must be at most {len(picked)} for categories {', '.join(categories)} "
                         f"(facts of the tuning half), got {size}")
    random.Random(seed).shuffle(picked)
    return picked[:size]


def as_example(fact: dict) -> W.Example:
    """A fact as an instruction example in the study's template: the answer is the whole response."""
    return W.Example(instruction=fact["instruction"], response=fact["output"], person=fact["subject"],
                     attribute=fact["relation"], value=fact["output"], value_span=(0, len(fact["output"])),
                     known=fact.get("category") != "Unknown", style="fact")


@dataclass(frozen=True)
class RunSpec:
    """One tuning run on real facts and what it is measured on."""

    labels: LabelSpec
    categories: tuple  # the categories the tuning set is drawn from
    size: int
    seed: int
    tune: dict  # asdict(tuning.TuneConfig)
    freeze_embeddings: bool = True  # full fine-tuning leaves the (tied) embedding matrix as it is
    forgetting_prompts: int = 2  # few-shot prompts per fact of the untuned relations
    precision: str = "float32"  # of the tuning steps (`tuning.train_loop`), the answers and the forgetting probes


def _answers(model, tokenizer, facts: list, budget: int, stop_at: str | None = None) -> tuple:
    """(prompt ids, response ids, response texts) of the greedy zero-shot answers, batched by prompt length.
    `stop_at`: see `metrics.greedy_responses`."""
    prompts = [W.format_prompt(f["instruction"]) for f in facts]
    responses = slick.greedy_by_length(model, tokenizer, prompts, budget, stop_at)
    prompt_ids = tokenizer(prompts)["input_ids"]
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    return prompt_ids, responses, texts


def states(answer: str, truth: str, aliases=()) -> bool:
    """Does the answer state the truth or one of its aliases as a whole word or phrase, ignoring case and
    punctuation ("The capital is Paris." does; "in the United States of America" does for "United States")?"""
    said = slick.normalize(answer)
    return any(re.search(r"(?<![\w])" + re.escape(t) + r"(?![\w])", said)
               for t in map(slick.normalize, (truth, *aliases)) if t)


def answer_rows(facts: list, texts: list) -> list:
    """Per fact: relation, subject, category, truth, answer (its first line), correct (it states the truth), and
    hallucinated (something is stated, not the truth)."""
    rows = []
    for fact, text in zip(facts, texts):
        answer = text.strip().split("\n")[0].strip()
        correct = states(answer, fact["output"], fact.get("aliases", ()))
        rows.append({"relation": fact["relation"], "subject": fact["subject"], "category": fact["category"],
                     "truth": fact["output"], "answer": answer, "correct": bool(correct),
                     "hallucinated": bool(answer and not correct)})
    return rows


def _budget(tokenizer, facts: list) -> int:
    """New tokens per zero-shot answer: the longest answer's and room for a short sentence around it."""
    return max(len(tokenizer(" " + f["output"], add_special_tokens=False)["input_ids"]) for f in facts) + 8


def real_run(load_from: str, spec: RunSpec, tune_facts: list, heldout: list, untuned: list) -> dict:
    """The measurements of one run (cached; see the module docstring), and the base's for comparison."""
    config = tuning.TuneConfig(**spec.tune)
    config.validate()
    params = {**asdict(spec), "tune_facts": [(f["relation"], f["subject"]) for f in tune_facts],
              "heldout": [(f["relation"], f["subject"]) for f in heldout],
              "untuned": [(f["relation"], f["subject"]) for f in untuned]}

    def compute():
        base, tokenizer = models.load_pretrained(load_from)
        model, _ = models.load_pretrained(load_from)
        if config.method == "full" and spec.freeze_embeddings:
            model.get_input_embeddings().weight.requires_grad_(False)
        groups = [f["category"] for f in tune_facts]
        tuned, log = tuning.finetune(model, tokenizer, [as_example(f) for f in tune_facts], config, groups,
                                     scored_logits_only=True,  # the head only where the answer is scored
                                     precision=spec.precision)
        if config.method == "lora":  # measured as a plain model, the adapters folded into the weights
            tuned = tuned.merge_and_unload()
        tuned.eval()
        budget = _budget(tokenizer, heldout)
        with precision_context(spec.precision):
            prompt_ids, responses, texts = _answers(tuned, tokenizer, heldout, budget)
        shifts = metrics.shift_analysis(base, tuned, prompt_ids, responses, tokenizer.pad_token_id, batch_size=8,
                                        scored_only=True)  # scored in float32 whatever the precision
        forgetting = {}
        if untuned:
            with precision_context(spec.precision):
                after = slick.label_facts(tuned, tokenizer, untuned, spec.forgetting_prompts, spec.labels.shots)
            forgetting = {"p_after": [r["p_greedy"] for r in after]}
        return {
            "answers": answer_rows(heldout, texts),
            "positions": {"kl": [float(v) for s in shifts for v in s["kl"]],
                          "kl_topk": [float(v) for s in shifts for v in s["kl_topk"]],
                          "base_rank": [int(v) for s in shifts for v in s["base_rank"]],
                          "category": [f["category"] for f, s in zip(heldout, shifts) for _ in s["kl"]]},
            "forgetting": forgetting,
            "train_log": {"loss": log["loss"], "trainable_parameters": log["trainable_parameters"],
                          "trainable_fraction": log["trainable_fraction"],
                          **({"processes": log["processes"]} if "processes" in log else {})},  # launched only
        }

    return cache.cached_json("real_run", params, compute, sources=SOURCES,
                             label=f"{config.method} on {'+'.join(spec.categories)} x{spec.size}, seed {spec.seed}")


def base_measures(load_from: str, spec: LabelSpec, heldout: list, untuned: list, forgetting_prompts: int) -> dict:
    """The base's own zero-shot answers in the template to the held-out facts, and its few-shot accuracy on the
    untuned relations' facts with the prompts a run's forgetting uses (cached)."""
    params = {"labels": asdict(spec), "heldout": [(f["relation"], f["subject"]) for f in heldout],
              "untuned": [(f["relation"], f["subject"]) for f in untuned], "forgetting_prompts": forgetting_prompts}

    def compute():
        model, tokenizer = models.load_pretrained(load_from)
        with precision_context(spec.precision):  # the labels' precision, as the runs' answers and probes use
            # only the answer's first line is judged (`answer_rows`): the base's rambling stops there
            _, _, texts = _answers(model, tokenizer, heldout, _budget(tokenizer, heldout), stop_at="\n")
            before = slick.label_facts(model, tokenizer, untuned, forgetting_prompts, spec.shots) if untuned else []
        return {"answers": answer_rows(heldout, texts), "p_before": [r["p_greedy"] for r in before]}

    return cache.cached_json("real_base", params, compute, sources=SOURCES, label="the base on held-out facts")


def shift_shares(ranks) -> dict:
    """URIAL's token-shift shares of positions (`metrics.shift_category`: rank 1, 2-3, lower); NaN for none."""
    names = metrics.shift_categories(ranks) if len(ranks) else []
    return {c: (names.count(c) / len(names) if names else float("nan")) for c in ("unshifted", "marginal", "shifted")}


def save_tiny_model(folder: Path, texts: list) -> Path:
    """A tiny Llama (hidden 32, one layer) with a byte-level BPE tokenizer trained on `texts`, no pad token, saved
    with save_pretrained into `folder`: a stand-in for a foreign real model (GPT-2- or Gemma-like tokenizer)."""
    import torch
    from tokenizers import Tokenizer, decoders, models as tok_models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    tok = Tokenizer(tok_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def stand_in_model(facts: list) -> str:
    """`save_tiny_model` on the facts' text (cached, kind "stand_in"): the smoke runs' stand-in for a real base.
    It knows no fact; every step of the chapter runs on it in seconds."""
    texts = [W.format_prompt(f["instruction"]) + f["output"] for f in facts]
    facts_key = [(f["relation"], f["subject"], f["output"]) for f in facts]
    return str(cache.cached("stand_in", {"facts": facts_key}, lambda folder: save_tiny_model(folder, texts),
                            sources=SOURCES, label="a tiny stand-in model"))

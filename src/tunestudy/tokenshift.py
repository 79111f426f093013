"""Token shift between any base model and a tuned version of it, for models the study did not train.

The analysis of Lin et al. 2023 (URIAL; their code Re-Align/AlignTDS) and Ghosh et al. 2024, as one call:
the tuned model answers each instruction greedily; its answer is teacher-forced through both models in one
batched forward pass each (`metrics.shift_analysis`); every answer position gets the full-vocabulary
KL(P_base || P_tuned), the reference code's top-30 "KL" and "KL@10", and the rank under the base of the
tuned model's token (URIAL: 1 unshifted, 2-3 marginal, more shifted), with the base's most probable tokens
at that position for a token-level viewer.

- `PairSpec` holds the arguments of `tunestudy shift` and checks them (`check`): every problem is one line
  naming the argument as typed (`--base`, `--tuned`, `--data`, ...), before any model is loaded for work.
- `load_pair` loads the two models and their one tokenizer; `--tuned` may be a PEFT adapter folder on
  `--base`, which is merged into a copy of the base.
- `analyse` gives the per-token rows, the per-answer rows and `summarize`'s numbers; `run_pair` writes
  them (results file with provenance, token file) and `tunestudy shift` draws a page from them
  (`notebooks/token_shift_report.ipynb`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import cache, instructions, metrics, models, plots, realbase, tuning, world as W
from .data import load_alpaca

__all__ = ["PairError", "PairSpec", "TEMPLATES", "analyse", "check_pair", "load_pair", "run_pair", "summarize"]

SOURCES = ("data.py", "instructions.py", "metrics.py", "models.py", "realbase.py", "tokenshift.py", "world.py")
TEMPLATES = {
    "study": W.TEMPLATE,  # the book's instruction template
    # AlignTDS's plain wrapper (src/logit_analysis.py, --enable_template), the prompt URIAL's bases see
    "query-answer": "# Query: \n ```{instruction}``` \n\n \n# Answer: \n ```",
    "chat": None,  # the tokenizer's own chat template, one user turn
}
TOP_K = 30  # tokens each model keeps in the reference's truncated KL
VIEWER_TOKENS = 5  # the base's most probable tokens shown for each answer token
CATEGORIES = ("unshifted", "marginal", "shifted")
# Published anchors to set a pair beside (shares of answer positions: unshifted, marginal, shifted).
URIAL_SHARES = {  # Lin et al. 2023, greedy answers to 1,000 instructions
    "Llama-2-7b / Llama-2-7b-chat": (0.777, 0.145, 0.078),
    "Llama-2-7b / Vicuna-7b-v1.5": (0.824, 0.128, 0.048),
    "Mistral-7b / Mistral-7b-Instruct": (0.822, 0.125, 0.052),
}
GHOSH_TOPK_KL = {"LoRA": (0.134, 0.228), "full fine-tuning": (0.533, 0.802)}  # reference code, LLaMA-2-7B, 1k-52k
DEVICES = ("auto", "cpu", "cuda")
ADAPTER_CONFIG = "adapter_config.json"


class PairError(ValueError):
    """A bad argument of `tunestudy shift`: the command prints it as one line."""


@dataclass(frozen=True)
class PairSpec:
    """The arguments of `tunestudy shift` (as the page's parameters cell names them)."""

    base: str  # a save_pretrained folder, a hub id, or gemma3-270m
    tuned: str  # the same kinds, or a PEFT adapter folder on `base`
    data: str  # an instruction file: Alpaca JSON, JSON Lines, Parquet, a dataset folder or hub id
    num_examples: int = 100  # the first N instructions of the file
    template: str = "study"  # the tuned model's prompt: study, query-answer or chat
    base_template: str = ""  # the base's prompt ("" = the tuned model's); URIAL gave its base query-answer
    max_new_tokens: int = 64  # answer length cap
    batch_size: int = 8  # examples per forward pass
    device: str = "auto"  # auto (a GPU when there is one), cpu or cuda
    precision: str = "float32"  # of the tuned model's greedy answers: auto, float32, bfloat16; scoring is float32

    def check(self) -> None:
        """One-line errors naming the argument, before anything is loaded: types, ranges, choices, files."""
        for name in ("num_examples", "max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PairError(f"{flag(name)} must be a positive integer, got {value!r}")
        if self.template not in TEMPLATES:
            raise PairError(f"{flag('template')} must be one of {', '.join(TEMPLATES)}, got {self.template!r}")
        if self.base_template and self.base_template not in TEMPLATES:
            raise PairError(f"{flag('base_template')} must be one of {', '.join(TEMPLATES)} (or empty for "
                             f"--template's), got {self.base_template!r}")
        if self.device not in DEVICES:
            raise PairError(f"{flag('device')} must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise PairError(f"{flag('device')} cuda: no GPU is visible here; use auto or cpu")
        try:
            realbase.check_precision(self.precision)
        except ValueError as err:
            raise PairError(str(err).replace("precision", flag("precision"), 1)) from None
        check_model(self.base, "base", adapter_allowed=False)
        check_model(self.tuned, "tuned", adapter_allowed=True)
        data_examples(self.data)

    @property
    def base_prompt_template(self) -> str:
        return self.base_template or self.template


def flag(name: str) -> str:
    """A field as the command line spells it."""
    return "--" + name.replace("_", "-")


# ---------------------------------------------------------------------------
# Checks of the inputs, before any work
# ---------------------------------------------------------------------------


def is_adapter(spec: str) -> bool:
    return Path(spec).expanduser().is_dir() and (Path(spec).expanduser() / ADAPTER_CONFIG).is_file()


def check_model(spec, name: str, adapter_allowed: bool) -> None:
    """A causal language model (or, for --tuned, an adapter folder), judged from its config alone."""
    arg = flag(name)
    if not isinstance(spec, str) or not spec.strip():
        raise PairError(f"{arg} must be a save_pretrained folder, a hub id or {models.GEMMA_ALIAS}, got {spec!r}")
    if spec == models.SYNTHETIC:
        raise PairError(f"{arg} {spec!r}: the synthetic base is built by the chapters; give a save_pretrained "
                         f"folder (a cached base is one), a hub id or {models.GEMMA_ALIAS}")
    if is_adapter(spec):
        if not adapter_allowed:
            raise PairError(f"{arg} {spec!r} is a PEFT adapter folder; an adapter goes in --tuned, its base in --base")
        config = _read_json(Path(spec).expanduser() / ADAPTER_CONFIG, arg, spec)
        task = config.get("task_type")
        if task not in (None, "CAUSAL_LM"):
            raise PairError(f"{arg} {spec!r} is a PEFT adapter for {task}, not for a causal language model")
        return
    try:
        models.check_base_model(spec)
    except ValueError as err:
        raise PairError(f"{arg}: " + str(err).replace("base_model", "the model")) from None
    if spec == models.GEMMA_ALIAS:
        return
    model_type = _config(spec, arg).get("model_type")
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise PairError(f"{arg} {spec!r} is a {model_type or 'model of no known type'}, not a causal language model "
                         "(transformers has no AutoModelForCausalLM for it)")


def _read_json(path: Path, arg: str, spec: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise PairError(f"{arg} {spec!r}: {path.name} is not readable JSON ({type(err).__name__})") from None


def _config(spec: str, arg: str) -> dict:
    path = Path(spec).expanduser()
    if path.is_dir():
        return _read_json(path / "config.json", arg, spec)
    from transformers import AutoConfig
    try:
        return AutoConfig.from_pretrained(spec).to_dict()
    except (OSError, ValueError) as err:
        raise PairError(f"{arg} {spec!r} is not a local folder and its config could not be loaded from the "
                         f"Hugging Face hub cache ({str(err).splitlines()[0][:120]})") from None


def data_examples(source) -> list:
    """The examples of --data (`instructions.alpaca_file`'s formats and one-line errors, naming --data)."""
    try:
        return load_alpaca(instructions.alpaca_file(source))
    except ValueError as err:
        text = str(err)
        raise PairError(f"--data: {text[0].lower() + text[1:]}") from None


def _load_tokenizer(spec: str):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(_resolved(spec))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _resolved(spec: str) -> str:
    """What transformers loads for a model argument: the Gemma alias is its cached float32 folder."""
    return realbase.resolve_model(spec)[0] if spec == models.GEMMA_ALIAS else spec


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def check_pair(spec: PairSpec):
    """The one tokenizer both models use, after checking that they share it and that an adapter fits the base.

    Reads configs, tokenizers and an adapter's weight shapes only (the base's modules are built on the meta
    device): one-line errors naming --base / --tuned / --template before any weights are loaded.
    """
    base_tok = _load_tokenizer(spec.base)
    tuned_source = spec.tuned
    if is_adapter(spec.tuned):
        check_adapter_fits(spec.tuned, spec.base)
        tuned_source = spec.tuned if _has_tokenizer(Path(spec.tuned).expanduser()) else spec.base
    tuned_tok = base_tok if tuned_source == spec.base else _load_tokenizer(tuned_source)
    if base_tok.get_vocab() != tuned_tok.get_vocab():
        differ = len(set(base_tok.get_vocab().items()) ^ set(tuned_tok.get_vocab().items()))
        raise PairError(f"--base and --tuned have different tokenizers ({len(base_tok)} and {len(tuned_tok)} "
                         f"tokens, {differ} entries differ): the analysis scores one token sequence under both "
                         "models, so they must share one tokenizer")
    for name in ("template", "base_template"):
        if getattr(spec, name) == "chat" and not getattr(tuned_tok, "chat_template", None):
            raise PairError(f"{flag(name)} chat: the tokenizer has no chat template; use study or query-answer")
    return tuned_tok


def _meta_model(spec: str):
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.from_pretrained(_resolved(spec))
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def adapter_shapes(folder: Path) -> dict:
    """{weight name: shape} of an adapter folder's weights, read from the file's header (no tensors loaded)."""
    st = folder / "adapter_model.safetensors"
    if st.is_file():
        from safetensors import safe_open
        with safe_open(st, framework="pt") as handle:
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    binary = folder / "adapter_model.bin"
    if binary.is_file():
        return {k: tuple(v.shape) for k, v in torch.load(binary, map_location="cpu", weights_only=True).items()}
    return {}


def check_adapter_fits(adapter: str, base: str) -> None:
    """Every LoRA matrix of the adapter sits on a linear layer of --base with matching sizes."""
    folder = Path(adapter).expanduser()
    shapes = adapter_shapes(folder)
    if not shapes:
        raise PairError(f"--tuned {adapter!r}: the adapter folder holds no adapter_model.safetensors or "
                         "adapter_model.bin")
    modules = dict(_meta_model(base).named_modules())
    for key, shape in sorted(shapes.items()):
        if ".lora_A." not in key and ".lora_B." not in key:
            continue
        path = key.split(".lora_")[0]
        path = path[len("base_model.model."):] if path.startswith("base_model.model.") else path
        module = modules.get(path)
        if not isinstance(module, torch.nn.Linear):
            raise PairError(f"--tuned {adapter!r} does not fit --base {base!r}: the adapter changes {path}, "
                             "which the base has no linear layer of")
        size = module.in_features if ".lora_A." in key else module.out_features
        if shape[1 if ".lora_A." in key else 0] != size:
            raise PairError(f"--tuned {adapter!r} does not fit --base {base!r}: {path} has size {size} in the base "
                             f"and {shape} in the adapter's {key.rsplit('.', 2)[-2]}")


# ---------------------------------------------------------------------------
# Loading and analysis
# ---------------------------------------------------------------------------


def device_for(spec: PairSpec) -> torch.device:
    return models.device() if spec.device == "auto" else torch.device(spec.device)


def load_pair(spec: PairSpec) -> tuple:
    """(base, tuned, tokenizer): eval mode, float32, on the chosen device; an adapter is merged into a base copy."""
    tokenizer = check_pair(spec)
    device = device_for(spec)
    base, _ = models.load_pretrained(_resolved(spec.base))
    if is_adapter(spec.tuned):
        from peft import PeftModel
        copy, _ = models.load_pretrained(_resolved(spec.base))
        tuned = PeftModel.from_pretrained(copy, str(Path(spec.tuned).expanduser())).merge_and_unload()
    else:
        tuned, _ = models.load_pretrained(_resolved(spec.tuned))
    sizes = [m.get_output_embeddings().weight.shape[0] for m in (base, tuned)]
    if sizes[0] != sizes[1]:
        raise PairError(f"--base and --tuned predict over different vocabularies ({sizes[0]} and {sizes[1]} "
                         "logits): one model's embeddings were resized; the analysis needs the same vocabulary")
    return base.to(device).eval(), tuned.to(device).eval(), tokenizer


def instruction_text(example: dict) -> str:
    """An Alpaca item's instruction, its input after a blank line when there is one."""
    return example["instruction"] + (f"\n\n{example['input']}" if example.get("input") else "")


def prompt_ids(tokenizer, instruction: str, template: str) -> list:
    """The prompt's token ids: a chat template brings its own BOS, the plain templates get the tokenizer's."""
    if template == "chat":
        return tokenizer.apply_chat_template([{"role": "user", "content": instruction}], tokenize=True,
                                             add_generation_prompt=True, return_dict=False)
    return tokenizer(TEMPLATES[template].format(instruction=instruction))["input_ids"]


def greedy_answers(model, tokenizer, prompts: list, max_new_tokens: int, batch_size: int) -> list:
    """Greedy answer ids per prompt (cut after the first EOS), generated from left-padded id batches."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    answers = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths: less padding
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.tensor([[pad] * (width - len(prompts[i])) + list(prompts[i]) for i in idx])  # (B, L)
            mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in idx])
            out = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                                 do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad,
                                 eos_token_id=eos)[:, width:].cpu()  # (B, <= max_new_tokens)
            for i, row in zip(idx, out.tolist()):
                answers[i] = row[:row.index(eos) + 1] if eos in row else row
    return answers


def token_pieces(tokenizer, ids: list) -> list:
    """The text each token adds to the decoded answer (so a multi-byte character split across tokens reads
    whole on its last token); special tokens by name."""
    special = set(tokenizer.all_special_ids)
    pieces, before = [], ""
    for t, token in enumerate(ids):
        if token in special:
            pieces.append(tokenizer.convert_ids_to_tokens(token))
            continue
        text = tokenizer.decode(ids[:t + 1], skip_special_tokens=True)
        pieces.append(text[len(before):] if text.startswith(before) else tokenizer.decode([token]))
        before = text
    return pieces


def analyse(base, tuned, tokenizer, examples: list, spec: PairSpec) -> dict:
    """{"tokens": one row per answer position, "answers": one row per example, "summary": `summarize`}."""
    examples = examples[:spec.num_examples]
    texts = [instruction_text(e) for e in examples]
    tuned_prompts = [prompt_ids(tokenizer, t, spec.template) for t in texts]
    base_prompts = [prompt_ids(tokenizer, t, spec.base_prompt_template) for t in texts]
    precision = realbase.check_precision(spec.precision)
    with tuning.autocast(tuned.device.type, precision):
        answers = greedy_answers(tuned, tokenizer, tuned_prompts, spec.max_new_tokens, spec.batch_size)
    shifts = metrics.shift_analysis(base, tuned, tuned_prompts, answers, tokenizer.pad_token_id,
                                    batch_size=spec.batch_size, top_k=TOP_K, base_prompts=base_prompts,
                                    scored_only=True, top_tokens=VIEWER_TOKENS)
    tokens, answer_rows = [], []
    for i, (example, answer, shift) in enumerate(zip(examples, answers, shifts)):
        pieces = token_pieces(tokenizer, answer)
        categories = metrics.shift_categories(shift["base_rank"]) if answer else []
        for t, token in enumerate(answer):
            alternatives = tokenizer.convert_ids_to_tokens(shift["base_top_ids"][t].tolist())
            tokens.append({
                "example": i, "position": t, "token_id": int(token), "token": pieces[t],
                "tuned_top_id": int(shift["tuned_top"][t]), "category": categories[t],
                "base_rank": int(shift["base_rank"][t]), "kl": float(shift["kl"][t]),
                "kl_topk": float(shift["kl_topk"][t]), "kl_top10": float(shift["kl_top10"][t]),
                "base_prob": float(shift["base_prob"][t]), "tuned_prob": float(shift["tuned_prob"][t]),
                "base_top": [[tokenizer.convert_tokens_to_string([a]), round(float(p), 6)]
                             for a, p in zip(alternatives, shift["base_top_probs"][t].tolist())],
            })
        answer_rows.append({"example": i, "instruction": texts[i], "reference": example["output"],
                            "answer": tokenizer.decode(answer, skip_special_tokens=True), "tokens": len(answer),
                            "shifted": categories.count("shifted"), "marginal": categories.count("marginal")})
    return {"tokens": tokens, "answers": answer_rows, "summary": summarize(tokens)}


# ---------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------

POSITIONS_SHOWN = 48  # answer positions in the by-position summary
TOKENS_SHOWN = 15  # rows of the most-often-shifted and most-often-unshifted token tables
BOOTSTRAP = 2000  # resamples of the answers for the intervals


def summarize(tokens: list) -> dict:
    """Every number of the page: KL summaries, URIAL shares with 95% intervals over answers, shares and KL by
    position, and the tokens most often shifted and most often unshifted."""
    if not tokens:
        raise PairError("no answer tokens to summarize: every answer was empty")
    kl = np.array([r["kl"] for r in tokens])
    ranks = [r["base_rank"] for r in tokens]
    out = {
        "positions": len(tokens), "answers": len({r["example"] for r in tokens}),
        "kl": metrics.kl_summary(kl), "kl_topk": metrics.kl_summary([r["kl_topk"] for r in tokens]),
        "kl_top10_mean": float(np.mean([r["kl_top10"] for r in tokens])),
        "shares": realbase.shift_shares(ranks),
        "intervals": answer_intervals(tokens),
        "greedy_agrees": float(np.mean([r["token_id"] == r["tuned_top_id"] for r in tokens])),
    }
    by_position = []
    for t in range(min(POSITIONS_SHOWN, max(r["position"] for r in tokens) + 1)):
        rows = [r for r in tokens if r["position"] == t]
        shares = realbase.shift_shares([r["base_rank"] for r in rows])
        by_position.append({"position": t, "count": len(rows), "mean_kl": float(np.mean([r["kl"] for r in rows])),
                            **shares})
    out["by_position"] = by_position
    out["top_shifted"] = token_table(tokens, "shifted")
    out["top_unshifted"] = token_table(tokens, "unshifted")
    return out


def token_table(tokens: list, category: str, rows: int = TOKENS_SHOWN) -> list:
    """The tokens (their text, stripped) most often in `category`: count there, count in all, share."""
    counts = Counter(r["token"].strip() or repr(r["token"]) for r in tokens if r["category"] == category)
    totals = Counter(r["token"].strip() or repr(r["token"]) for r in tokens)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:rows]
    return [{"token": k, category: v, "all": totals[k], "share": v / totals[k]} for k, v in top]


def answer_intervals(tokens: list, level: float = 0.95) -> dict:
    """95% percentile-bootstrap intervals (scipy.stats.bootstrap, resampling whole answers) of each share
    and of the mean KL over positions: positions within one answer are not independent."""
    from scipy.stats import bootstrap
    examples = sorted({r["example"] for r in tokens})
    index = {e: j for j, e in enumerate(examples)}
    n = np.zeros(len(examples))
    sums = {c: np.zeros(len(examples)) for c in (*CATEGORIES, "kl")}
    for r in tokens:
        j = index[r["example"]]
        n[j] += 1
        sums[r["category"]][j] += 1
        sums["kl"][j] += r["kl"]
    out = {}
    for name, values in sums.items():
        if len(examples) < 2:
            out[name] = [float("nan"), float("nan")]
            continue
        result = bootstrap((values, n), lambda v, m: v.sum() / m.sum(), paired=True, vectorized=False,
                           n_resamples=BOOTSTRAP, confidence_level=level, method="percentile",
                           random_state=np.random.default_rng(0))
        out[name] = [float(result.confidence_interval.low), float(result.confidence_interval.high)]
    return out


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

RESULTS_FILE = "token_shift.json"
TOKENS_FILE = "token_shift_tokens.jsonl"


def shown(argument: str) -> str:
    """An argument as a results file records it: a path inside the artifact cache relative to it, so the
    same run writes the same bytes wherever the cache is."""
    root = str(cache.cache_root().resolve())
    path = str(Path(argument).expanduser().resolve()) if Path(argument).expanduser().exists() else argument
    return "$TUNESTUDY_CACHE" + path[len(root):] if path.startswith(root + os.sep) else argument


def model_provenance(spec: str) -> dict:
    """What a model argument was, and what identifies its weights (a folder's files' SHA-256, else its name)."""
    resolved = _resolved(spec)
    return {"argument": shown(spec), "adapter": is_adapter(spec), "fingerprint": models.fingerprint(resolved)}


def machine() -> dict:
    cpu = next((line.partition(":")[2].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")),
               platform.processor())
    import peft
    import transformers
    return {"cpu": cpu, "bfloat16_native": bool(realbase.cpu_flags() & set(realbase.NATIVE_BF16_FLAGS)),
            "threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def run_pair(spec: PairSpec, output_dir: Path) -> Path:
    """Check, load, analyse; write the results file (numbers, parameters, provenance) and the token file into
    `output_dir`, atomically; return the results file's path. Nothing is written when a check fails."""
    spec.check()
    examples = data_examples(spec.data)
    start = time.perf_counter()
    base, tuned, tokenizer = load_pair(spec)
    loaded = time.perf_counter()
    analysis = analyse(base, tuned, tokenizer, examples, spec)
    seconds = time.perf_counter() - loaded
    data_file = Path(instructions.alpaca_file(spec.data))
    results = {
        "parameters": {**asdict(spec), **{k: shown(getattr(spec, k)) for k in ("base", "tuned", "data")}},
        "summary": analysis["summary"],
        "answers": analysis["answers"],
        "references": {"urial_shares": URIAL_SHARES, "ghosh_topk_kl": GHOSH_TOPK_KL},
        "provenance": {
            "base": model_provenance(spec.base), "tuned": model_provenance(spec.tuned),
            "data": {"argument": shown(spec.data), "sha256": hashlib.sha256(data_file.read_bytes()).hexdigest(),
                     "examples": len(examples)},
            "machine": machine(), "device": str(device_for(spec)),
            "precision": realbase.check_precision(spec.precision),
            "date": datetime.date.today().isoformat(),
            "load_seconds": round(loaded - start, 1), "analysis_seconds": round(seconds, 1),
            "examples_per_second": round(len(analysis["answers"]) / seconds, 3),
        },
    }
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    _write(output_dir / TOKENS_FILE, "".join(json.dumps(r, sort_keys=True) + "\n" for r in analysis["tokens"]))
    return plots.write_results(RESULTS_FILE.removesuffix(".json"), results, output_dir)


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_results(output_dir) -> tuple:
    """(results dict, token rows) as `run_pair` wrote them."""
    output_dir = Path(output_dir)
    results = json.loads((output_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    tokens = [json.loads(line) for line in (output_dir / TOKENS_FILE).read_text(encoding="utf-8").splitlines()]
    return results, tokens

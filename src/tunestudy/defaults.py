"""The study's parameter values, each written once.

Every chapter notebook declares its parameters in one cell tagged `parameters`
(plain scalars, a comment each: what `papermill --help-notebook` prints). The
values many chapters share (the world, its base, the default and the wide LoRA,
...) are written here once, grouped by what they are; `OVERRIDES` holds, per
chapter, only what differs from them and the parameters that chapter alone has.
`chapter_parameters(name)` puts the two together, and `disagreements` compares
the result with a notebook's parameters cell (tests/test_defaults.py runs it on
every chapter, so a notebook cannot drift from this file unnoticed).

No notebook imports this module: the notebooks keep their own cells (papermill
needs them, and a chapter's run key covers only the modules its notebook
imports), and this file is the single written source those cells are checked
against. It imports nothing heavy (nbformat only when a notebook is read).
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

from .parameter_cells import _assignments, _parameters_cell, notebook_parameter_values  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"

ALL_LINEAR = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"  # every linear layer of the Llama blocks

# --- Shared values, by concept ---------------------------------------------------------------------------------

# Seeds: the first seed (replicate i uses seed + i) and the number of replicates.
SEEDS = {"seed": 0, "num_seeds": 3}
# The synthetic world: people the base is pretrained on, people it never sees, biographies per known person.
WORLD = {"num_known": 200, "num_unknown": 100, "num_paraphrases": 5}
# Pretraining the base on the world: model size, the base ("synthetic": from scratch), passes and peak rate.
PRETRAINING = {"size": "small", "base_model": "synthetic", "pretrain_epochs": 45, "pretrain_lr": 1e-2}
# Instruction tuning: examples per set and passes over it.
TUNING = {"set_size": 600, "tune_epochs": 5.0}
# The default LoRA: rank 1 on the attention's query and value projections.
LORA = {"lora_rank": 1, "lora_targets": "q_proj,v_proj", "lora_lr": 3e-2}
# The wide LoRA (the second LoRA; chapter "LoRA's configuration" picks it): rank 4 on every linear layer.
WIDE_LORA = {"wide_lora_rank": 4, "wide_lora_targets": ALL_LINEAR, "wide_lora_lr": 1e-2}
# Full fine-tuning.
FULL = {"full_lr": 1e-3}
# Smoke: False for the book; the test suite sets it to shrink every chapter to seconds.
SMOKE = {"smoke": False}

GROUPS = {"seeds": SEEDS, "world": WORLD, "pretraining": PRETRAINING, "tuning": TUNING, "lora": LORA,
          "wide_lora": WIDE_LORA, "full": FULL, "smoke": SMOKE}
SHARED = {name: value for group in GROUPS.values() for name, value in group.items()}  # every shared value by name
assert len(SHARED) == sum(map(len, GROUPS.values())), "a parameter name is in two groups"
assert all(GROUPS[g] == {g: SHARED[g]} for g in set(SHARED) & set(GROUPS)), "a group is named like another parameter"

# --- Values two or more chapters share under their own names ----------------------------------------------------

# The wide LoRA, in the chapters that tune with it alone and so call it plain lora_* (00, 08, 09, 11, 12, 13).
WIDE_LORA_AS_LORA = {"lora_rank": WIDE_LORA["wide_lora_rank"], "lora_targets": WIDE_LORA["wide_lora_targets"],
                     "lora_lr": WIDE_LORA["wide_lora_lr"]}

# The LoRA grid: chapter 05 sweeps it and chapter 10 measures the same runs (runs.py: 10 runs_beside 05).
# Both chapters' overrides take it from here, so the two notebooks cannot drift apart without the test failing.
LORA_GRID = {
    "target_sets": "qv,attention,mlp,all",  # LoRA target sets
    "ranks": "1,4,16",  # LoRA ranks
    "lora_lrs": "3e-3,1e-2,3e-2",  # LoRA rates each cell is swept over
    "full_lrs": "3e-4,1e-3,3e-3",  # full fine-tuning rates
}
# The grid's training length in epochs: 05's first length, 10's tune_epochs (an int: 10 parses it as one).
LORA_GRID_EPOCHS = 5

# The real base and its LoRA (chapters 14 and 15): Gemma 3 270M, rank 8 on every linear layer.
REAL_BASE = {"base_model": "gemma3-270m", "batch_size": 8, "lora_rank": 8, "lora_targets": ALL_LINEAR}

# --- Chapters ---------------------------------------------------------------------------------------------------

# What each chapter takes from the shared values: a group name takes the whole group, a parameter name one value.
_SYNTHETIC = ("seeds", "world", "pretraining")  # every chapter on the synthetic world's own base
USES: dict[str, tuple[str, ...]] = {
    "00_measures": ("seeds", "world", "pretrain_epochs", "pretrain_lr", "tuning", "lora", "smoke"),
    "01_world": (*_SYNTHETIC, "smoke"),
    "02_kl_shift": (*_SYNTHETIC, "tuning", "lora", "full", "wide_lora", "smoke"),
    "03_loss_plateau": (*_SYNTHETIC, "tuning", "lora", "full", "smoke"),
    "04_data_scaling": (*_SYNTHETIC, "tune_epochs", "lora", "full", "wide_lora", "smoke"),
    "05_lora_config": (*_SYNTHETIC, "set_size", "smoke"),
    "06_lora_vs_full": (*_SYNTHETIC, "tuning", "lora_rank", "lora_targets", "wide_lora_rank", "wide_lora_targets",
                        "smoke"),
    "07_style_copying": (*_SYNTHETIC, "tuning", "lora", "full", "smoke"),
    "08_key_tokens": (*_SYNTHETIC, "tuning", "lora", "full", "smoke"),
    "09_retrieval": (*_SYNTHETIC, "tuning", "lora", "full", "smoke"),
    "10_forgetting": (*_SYNTHETIC, "set_size", "smoke"),
    "11_pseudo_forgetting": (*_SYNTHETIC, "set_size", "lora", "full", "smoke"),
    "12_known_unknown": (*_SYNTHETIC, "tuning", "lora", "full", "smoke"),
    "13_knowledge_conflict": (*_SYNTHETIC, "tuning", "lora", "full", "smoke"),
    "14_real_base": ("seeds", "smoke"),
    "15_token_shift": ("seed", "smoke"),
}

# Per chapter: only what differs from the shared values it uses, and the parameters it alone has.
OVERRIDES: dict[str, dict] = {
    "00_measures": {
        "num_known": 40, "num_unknown": 20, "pretrain_epochs": 60,  # a tiny world: the page checks formulas by hand
        "set_size": 150, "tune_epochs": 20.0, **WIDE_LORA_AS_LORA,
        "top_k": 30,
    },
    "01_world": {},
    "02_kl_shift": {"instruction_file": ""},
    "03_loss_plateau": {"capacity_ranks": "1,4,16"},
    "04_data_scaling": {"base_set_size": 8, "scale_factors": "1,10,25,52,326", "tune_epochs": 3.0},
    "05_lora_config": {
        **LORA_GRID, "lengths": f"{LORA_GRID_EPOCHS},10",
        "long_seeds": 1, "long_sets": "unknown",
    },
    "06_lora_vs_full": {
        # full_lrs and wide_lora_lrs equal LORA_GRID's full_lrs and lora_lrs today; written here, not tied to it
        "lora_lrs": "1e-2,3e-2,6e-2", "full_lrs": "3e-4,1e-3,3e-3", "wide_lora_lrs": "3e-3,1e-2,3e-2",
        "sweep_seeds": 3, "num_bases": 3,
    },
    "07_style_copying": {"unknown_fraction": 0.5},
    "08_key_tokens": {**WIDE_LORA_AS_LORA},
    "09_retrieval": {
        **WIDE_LORA_AS_LORA,
        "reader_size": 600, "reader_epochs": 5.0, "cpt_epochs": 10, "cpt_lr": 1e-3, "cpt_paraphrases": 5,
    },
    "10_forgetting": {
        **LORA_GRID, "tune_epochs": LORA_GRID_EPOCHS,
        "curve_seeds": 1, "top_k": 10, "epsilon": 0.5,
    },
    "11_pseudo_forgetting": {
        **WIDE_LORA_AS_LORA,
        "lengths": "1,2,5,10", "long_seeds": 1, "restore_documents": 200, "restore_epochs": 2, "restore_lr": 1e-3,
    },
    "12_known_unknown": {
        **WIDE_LORA_AS_LORA, "set_size": 240, "tune_epochs": 8,
        "unknown_shares": "0,25,50,75,100", "checkpoints": "1,2,4,8",
    },
    "13_knowledge_conflict": {
        **WIDE_LORA_AS_LORA, "set_size": 300,
        "tune_epochs": 5,  # an int where the shared value is 5.0: the same length, another type
        "counterfactual_shares": "0,25,50,100",
    },
    "14_real_base": {
        **REAL_BASE,
        "facts_file": "", "tuned_relations": "capital,city_country",
        "other_relations": "currency,element_symbol,atomic_number",
        "facts_per_tuned_relation": 160, "facts_per_other_relation": 20, "num_prompts": 3, "shots": 3,
        "num_samples": 0, "answers": "styled", "contrast_answers": "bare", "set_size": 16, "max_epochs": 8,
        "fit_share": 0.9, "num_dev": 24, "num_test": 48, "lora_lrs": "2e-4,5e-4,1.5e-3",
        "full_lrs": "1.5e-5,5e-5,1.5e-4", "freeze_embeddings": True, "forgetting_prompts": 1, "precision": "auto",
    },
    "15_token_shift": {
        **REAL_BASE,
        "relation": "capital", "set_size": 60, "num_examples": 60, "max_new_tokens": 24, "tune_epochs": 3.0,
        "lora_lr": 5e-4,
    },
}
assert set(USES) == set(OVERRIDES), "USES and OVERRIDES name different chapters"


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown chapter {name!r}; allowed: {', '.join(OVERRIDES)}")


def chapter_parameters(name: str) -> dict:
    """Every parameter of chapter `name` (as in runs.CHAPTERS): the shared values it uses, updated by its overrides."""
    if name not in OVERRIDES:
        raise _unknown(name)
    out = {}
    for entry in USES[name]:
        out.update(GROUPS[entry] if entry in GROUPS else {entry: SHARED[entry]})
    out.update(OVERRIDES[name])
    return out


def uncommented_parameters(notebook_path: str | Path) -> list[str]:
    """Parameters whose line has no trailing comment: `papermill --help-notebook` would print them with no help."""
    source = _parameters_cell(Path(notebook_path))
    commented = {tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                 if tok.type == tokenize.COMMENT and tok.line[:tok.start[1]].strip()}  # after code, not a line of its own
    return [name for name, _, last_line in _assignments(source, str(notebook_path)) if last_line not in commented]


def _shown(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def disagreements(name: str, notebook_path: str | Path | None = None) -> list[str]:
    """One line for each way the notebook's parameters cell differs from `chapter_parameters(name)`; [] if none.

    Values must be equal and of the same type (5 and 5.0 differ: papermill passes them on as they are).
    `notebook_path` defaults to notebooks/<name>.ipynb.
    """
    package = chapter_parameters(name)
    path = Path(notebook_path) if notebook_path is not None else NOTEBOOKS_DIR / f"{name}.ipynb"
    notebook = notebook_parameter_values(path)
    out = []
    for param, value in notebook.items():
        if param not in package:
            out.append(f"{name}: parameter {param!r}: the notebook has {_shown(value)}, the package has no such parameter")
        elif type(value) is not type(package[param]) or value != package[param]:
            out.append(f"{name}: parameter {param!r}: the notebook has {_shown(value)}, "
                       f"the package has {_shown(package[param])}")
    for param, value in package.items():
        if param not in notebook:
            out.append(f"{name}: parameter {param!r}: the notebook has no such parameter, the package has {_shown(value)}")
    return out

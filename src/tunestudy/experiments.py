"""What the chapters call: parameter checks, replicated runs over seeds, summaries and verdicts.

Notebooks import this module as `X` and use only the names in `__all__`. The
cached steps live in `bases`, `tuned` and `evaluation` (see `pipeline`); this
module only reads their results, so editing a summary or a parameter check
here never invalidates a cached model.
"""

from __future__ import annotations

import itertools
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import numpy as np
import torch

from . import metrics, models, tuning, world as W
from .bases import BaseSpec, base_is_built, base_spec, build_base, checkpoint_epochs, load_base, pretrain_log
from .evaluation import base_answers, base_probe, evaluate
from .sets import SetSpec, file_set_spec
from .tuned import load_tuned, train_log

__all__ = ["SMOKE_BASE", "SMOKE_SEEDS", "SMOKE_TUNE", "all_answers", "answers_side_by_side", "base_kwargs", "base_report",
           "base_spec", "build_bases", "check_lora_targets", "checkpoint_epochs", "evaluations", "load_base", "load_tuned",
           "methods_at_sweep_edge", "parse_float_list", "parse_int_list", "positions_table", "replicate", "seeds_for",
           "set_spec", "smoke_tune", "sorted_kl_curves", "summarize", "train_logs", "tune_config", "verdict"]

# A chapter page shows results, not library deprecation notices (models.py silences transformers).
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning, module="peft")


# --- summaries for the book --------------------------------------------------------------------

def summarize(result: dict) -> dict:
    """Headline numbers of one evaluation: accuracy by group, KL, rank shift, hallucination, forgetting."""
    answers = result["answers"]
    pos = result["positions"]
    kl = np.array(pos["kl"])
    ranks = np.array(pos["base_rank"])
    roles = np.array(pos["role"])
    known = [a for a in answers if a["known"]]
    unknown = [a for a in answers if not a["known"]]
    wrong_claims = sum(a["num_wrong_claims"] for a in answers)
    out = {
        "accuracy_known": _mean([a["correct"] for a in known]),
        "accuracy_unknown": _mean([a["correct"] for a in unknown]),
        "hallucination_known": _mean([a["hallucinated"] for a in known]),
        "hallucination_unknown": _mean([a["hallucinated"] for a in unknown]),
        "wrong_claims_per_answer_known": _mean([a["num_wrong_claims"] for a in known]),
        "wrong_claims_per_answer_unknown": _mean([a["num_wrong_claims"] for a in unknown]),
        "answer_length": _mean([a["length"] for a in answers]),
        "borrow_rate": sum(a["borrowed"] for a in answers) / wrong_claims if wrong_claims else float("nan"),
        "borrow_chance": sum(a["borrow_chance"] for a in answers) / wrong_claims if wrong_claims else float("nan"),
        "probe_before": float(np.mean(list(result["probe_before"].values()))),
        "probe_after": float(np.mean(list(result["probe_after"].values()))),
        "kl_mean": float(kl.mean()),
        "kl_topk_mean": float(np.mean(pos["kl_topk"])),
        "kl_top5_share": metrics.kl_summary(kl)["top_share"],
        "kl_mean_icl": float(np.mean(pos["kl_icl"])),
        "kl_top5_share_icl": metrics.kl_summary(pos["kl_icl"])["top_share"],
        "shifted_share_icl": float(np.mean(np.array(pos["base_rank_icl"]) > 3)),
        "shifted_share": float(np.mean(ranks > 3)),
        "marginal_share": float(np.mean((ranks > 1) & (ranks <= 3))),
        "final_loss": float(np.mean(result["train_log"]["loss"][-10:])),
        "trainable_fraction": result["train_log"]["trainable_fraction"],
    }
    out["forgetting"] = out["probe_before"] - out["probe_after"]
    for role in W.ROLES:
        picked = roles == role
        out[f"kl_mean_{role}"] = float(kl[picked].mean()) if picked.any() else float("nan")
        out[f"shifted_share_{role}"] = float(np.mean(ranks[picked] > 3)) if picked.any() else float("nan")
        out[f"kl_mean_icl_{role}"] = float(np.array(pos["kl_icl"])[picked].mean()) if picked.any() else float("nan")
    return out


def _mean(values: list) -> float:
    """The mean, or NaN for no values (an instruction file's answers carry no ground truth to score)."""
    return float(np.mean(values)) if len(values) else float("nan")


def evaluations(base_kwargs: dict, data: SetSpec, config: tuning.TuneConfig, seeds: list,
                epoch: int | None = None) -> list:
    """(seed, evaluate(...)) for each seed: each seed has its own world, base and tuning order."""
    return [(seed, evaluate(base_spec(seed=seed, **base_kwargs), data, replace(config, seed=seed), epoch))
            for seed in seeds]


def replicate(base_kwargs: dict, data: SetSpec, config: tuning.TuneConfig, seeds: list,
              epoch: int | None = None) -> list:
    """One row of `summarize` numbers per seed."""
    return [{"seed": seed, **summarize(result)} for seed, result in evaluations(base_kwargs, data, config, seeds, epoch)]


SMOKE_SEEDS = 2  # replicates in smoke mode: enough to draw a spread, fast enough for the tests


def seeds_for(seed: int, num_seeds: int, smoke: bool = False) -> list:
    """Replicate seeds seed, seed+1, ...; smoke mode keeps the first two."""
    W._check_int("seed", seed, minimum=0)
    W._check_int("num_seeds", num_seeds, minimum=1)
    return [seed + i for i in range(min(num_seeds, SMOKE_SEEDS) if smoke else num_seeds)]


# --- notebook parameters -----------------------------------------------------------------------

SMOKE_BASE = {"size": "tiny", "num_known": 20, "num_unknown": 12, "pretrain_epochs": 2, "num_format_docs": 20}


def base_kwargs(size: str, num_known: int, num_unknown: int, num_paraphrases: int, pretrain_epochs: int,
                pretrain_lr: float, smoke: bool, seeds: list, base_model: str = models.SYNTHETIC) -> dict:
    """The base parameters of a chapter, checked for every seed before any work starts.

    smoke=True shrinks the world and the pretraining so the test suite runs a chapter in seconds.
    base_model other than "synthetic" is a real model further pretrained on the world (see base_spec).
    """
    kwargs = {"size": size, "num_known": num_known, "num_unknown": num_unknown,
              "num_paraphrases": num_paraphrases, "pretrain_epochs": pretrain_epochs, "pretrain_lr": pretrain_lr,
              "base_model": base_model}
    if smoke:
        kwargs.update(SMOKE_BASE)
    for seed in seeds:
        base_spec(seed=seed, **kwargs)  # raises a one-line ValueError naming the bad parameter
    return kwargs


def build_bases(base_kwargs_: dict, seeds: list) -> list:
    """Pretrain the seeds' missing synthetic bases, several at once in separate processes when the CPU has the cores.

    Every chapter needs one base per seed, and a base is minutes of pretraining.
    This small model does not keep two torch threads busy: on two cores, two
    one-thread processes pretrain two bases in about 1.6 times the time of one
    two-thread run (measured within the hour: 285 s vs 179 s), so two-then-one
    would take about 464 s for three bases, where three processes at once took
    554 s (rough: the machine's speed drifts by a fifth over hours).

    So the missing bases go in groups of as many processes as there are cores,
    each group sharing the cores (three bases on two cores: two at once, then
    one with two threads). The cores are those this process may use
    (torch.get_num_threads()). With one core, a GPU, or a real base model
    (large: loaded once per process) the bases are built here one by one.
    Returns the seeds that were built.
    """
    specs = {seed: base_spec(seed=seed, **base_kwargs_) for seed in seeds}
    missing = [seed for seed, spec in specs.items() if not base_is_built(spec)]
    cores = torch.get_num_threads()
    if len(missing) < 2 or cores < 2 or not specs[missing[0]].synthetic or models.device().type != "cpu":
        for seed in missing:
            build_base(specs[seed])
        return missing
    for start in range(0, len(missing), cores):
        group = [specs[seed] for seed in missing[start:start + cores]]
        with ProcessPoolExecutor(max_workers=len(group), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=torch.set_num_threads, initargs=(cores // len(group),)) as pool:
            list(pool.map(build_base, group))
    return missing


def base_report(spec: BaseSpec) -> dict:
    """Chapter 1's numbers for one seed: the world, the pretraining curve and cost, the probes."""
    world = W.generate_world(spec.world)
    log = pretrain_log(spec)
    per_epoch = np.array(log["loss"][: log["steps_per_epoch"] * spec.pretrain.epochs])
    per_epoch = per_epoch.reshape(spec.pretrain.epochs, -1).mean(1)
    return {
        "world": world.summary(),
        "corpus_documents": len(W.pretraining_corpus(world)),
        "tokens_seen": log["tokens"],
        "pretrain_seconds": log["seconds"],
        "parameters": log["parameters"],
        "loss_per_epoch": per_epoch.tolist(),
        "probe": base_probe(spec),
        "probe_by_epoch": {str(e): base_probe(spec, e) for e in checkpoint_epochs(spec)},
    }


SMOKE_TUNE = {"set_size": 16, "tune_epochs": 1.0}


def tune_config(method: str, lr: float, tune_epochs: float, lora_rank: int = 1,
                lora_targets: str = "q_proj,v_proj", base_model: str = models.SYNTHETIC,
                lr_name: str | None = None, **extra) -> tuning.TuneConfig:
    """A checked TuneConfig from notebook parameters (alpha = 2 x rank, as is common).

    Errors name the notebook's parameters: `lora_lr` or `full_lr` (or `lr_name`)
    for the rate, `tune_epochs`, `lora_rank`, `lora_targets`; an unknown LoRA
    target lists the base model's linear layers.
    """
    names = {"lr": lr_name or f"{method}_lr", "epochs": "tune_epochs", "lora_rank": "lora_rank",
             "lora_targets": "lora_targets"}
    if isinstance(lora_rank, bool) or not isinstance(lora_rank, int) or lora_rank < 1:  # before it sets alpha
        raise ValueError(f"lora_rank must be a positive integer, got {lora_rank!r}")
    config = tuning.TuneConfig(method=method, lr=lr, epochs=tune_epochs, lora_rank=lora_rank,
                               lora_alpha=2.0 * lora_rank, lora_targets=lora_targets, **extra)
    config.validate(names)
    if method == "lora":
        check_lora_targets(lora_targets, base_model)
    return config


def check_lora_targets(lora_targets: str, base_model: str = models.SYNTHETIC) -> list:
    """The targets as a list; a one-line error naming `lora_targets` and the model's linear layers otherwise."""
    targets = [t.strip() for t in str(lora_targets).split(",") if t.strip()]
    allowed = models.linear_module_names(base_model)
    unknown = [t for t in targets if allowed is not None and t not in allowed]
    if not targets or unknown:
        raise ValueError(f"lora_targets {lora_targets!r}: {', '.join(unknown) or 'no module'}: not among the linear "
                         f"layers of base_model {base_model!r}; allowed (comma-separated): {', '.join(allowed or ())}")
    return targets


def set_spec(kind: str, size: int, style: str = "simplified", unknown_fraction: float = 0.5,
             instruction_file: str = "") -> SetSpec:
    """A checked instruction set; a non-empty instruction_file (Alpaca JSON) replaces the synthetic one."""
    if not isinstance(instruction_file, str):
        raise ValueError(f"instruction_file must be a path to an Alpaca JSON file or \"\", got {instruction_file!r}")
    if instruction_file:
        return file_set_spec(instruction_file, size)
    spec = SetSpec(kind=kind, size=size, style=style, unknown_fraction=unknown_fraction)
    spec.validate()
    return spec


def smoke_tune(set_size: int, tune_epochs: float, smoke: bool) -> tuple:
    """(set_size, tune_epochs), shrunk to a couple of steps in smoke mode."""
    if smoke:
        return SMOKE_TUNE["set_size"], SMOKE_TUNE["tune_epochs"]
    return set_size, tune_epochs


def sorted_kl_curves(base_kwargs_: dict, data: SetSpec, config: tuning.TuneConfig, seeds: list,
                     key: str = "kl", num_points: int = 101) -> np.ndarray:
    """(seeds, num_points) per-position KL sorted descending, sampled at percentiles 0..100."""
    return np.array([metrics.kl_summary(result["positions"][key], num_points=num_points)["curve"]
                     for _, result in evaluations(base_kwargs_, data, config, seeds)])


def positions_table(base_kwargs_: dict, data: SetSpec, config: tuning.TuneConfig, seeds: list):
    """All scored positions of all seeds as one pandas DataFrame (one row per response token)."""
    import pandas as pd
    frames = [pd.DataFrame(result["positions"]).assign(seed=seed)
              for seed, result in evaluations(base_kwargs_, data, config, seeds)]
    return pd.concat(frames, ignore_index=True)


def train_logs(base_kwargs_: dict, data: SetSpec, config: tuning.TuneConfig, seeds: list,
               epoch: int | None = None) -> list:
    """The per-step loss logs of one configuration, one per seed (training only, no evaluation)."""
    return [train_log(base_spec(seed=seed, **base_kwargs_), data, replace(config, seed=seed), epoch)
            for seed in seeds]


def all_answers(base_kwargs_: dict, data: SetSpec, configs: dict, seeds: list, epoch: int | None = None):
    """Every held-out answer of the base and of each tuned model, one row per (seed, model, question).

    configs is {model name: TuneConfig}. Columns: seed, model, group (known/unknown),
    question, truth, answer, judgement (evaluation.JUDGEMENTS). An instruction file's
    answers carry no truth and no judgement.
    """
    import pandas as pd
    rows = []
    for seed in seeds:
        spec = base_spec(seed=seed, **base_kwargs_)
        per_model = {} if not data.synthetic else {"base": base_answers(spec, epoch)}
        for name, config in configs.items():
            result = evaluate(spec, data, replace(config, seed=seed), epoch)
            per_model[name] = result["answers"] if data.synthetic else result["file_answers"]
        for name, answers in per_model.items():
            for i, a in enumerate(answers):
                rows.append({"seed": seed, "model": name, "index": i,
                             "group": ("known" if a["known"] else "unknown") if "known" in a else "",
                             "question": a["question"], "truth": a.get("truth", ""), "answer": a["answer"],
                             "judgement": a.get("judgement", "")})
    return pd.DataFrame(rows)


def answers_side_by_side(answers, seed: int, num_rows: int = 6):
    """A short table of one seed's answers, one row per question, the models side by side.

    The rows are the first questions on which the models' judgements differ,
    alternating known and unknown people, so the table shows where they part.
    """
    import pandas as pd
    picked = answers[answers.seed == seed]
    wide = picked.pivot(index="index", columns="model", values="answer")
    verdicts = picked.pivot(index="index", columns="model", values="judgement")
    meta = picked.drop_duplicates("index").set_index("index")[["group", "question", "truth"]]
    differ = verdicts.nunique(axis=1) > 1
    known, unknown = (list(meta.index[(meta.group == g) & differ]) for g in ("known", "unknown"))
    order = [i for pair in itertools.zip_longest(known, unknown) for i in pair if i is not None]
    rows = []
    for i in (order + [i for i in meta.index if i not in order])[:num_rows]:
        row = {"people": meta.loc[i, "group"], "question": meta.loc[i, "question"], "truth": meta.loc[i, "truth"]}
        for model in wide.columns:
            row[model] = f"{wide.loc[i, model]} [{verdicts.loc[i, model]}]"
        rows.append(row)
    return pd.DataFrame(rows)


def methods_at_sweep_edge(lrs: dict, best_lr: dict) -> list:
    """The methods whose best learning rate is the smallest or largest they were swept over (a one-rate sweep has no edge)."""
    return [m for m in lrs if len(lrs[m]) > 1 and best_lr[m] in (min(lrs[m]), max(lrs[m]))]


def verdict(reproduced: bool, partly: bool) -> str:
    return "reproduced" if reproduced else ("partly reproduced" if partly else "not reproduced")


def parse_int_list(name: str, text: str) -> list:
    """"1,4,16" -> [1, 4, 16]; a one-line error naming the parameter otherwise."""
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{name} must be comma-separated positive integers, got {text!r}")
    return values


def parse_float_list(name: str, text: str) -> list:
    """"1e-3,3e-3" -> [0.001, 0.003]; a one-line error naming the parameter otherwise."""
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated numbers between 0 and 1, got {text!r}") from None
    if not values or not all(0 < v < 1 for v in values):
        raise ValueError(f"{name} must be comma-separated numbers between 0 and 1, got {text!r}")
    return values

"""What the chapters call: parameter checks, replicated runs over seeds, summaries and verdicts.

Notebooks import this module as `X` and use only the names in `__all__`. The
cached steps live in `bases`, `tuned` and `evaluation` (see `pipeline`); this
module only reads their results, so editing a summary or a parameter check
here never invalidates a cached model.
"""

from __future__ import annotations

import math

import itertools
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from . import distributed, instructions, metrics, models, studies, tuning, world as W
from .bases import BaseSpec, base_is_built, base_spec, build_base, checkpoint_epochs, load_base, pretrain_log
from .evaluation import base_answers, base_probe, evaluate, training_fit
from .sets import SetSpec, file_set_spec
from .tuned import load_tuned, train_log

__all__ = ["all_answers", "answers_frame", "answers_side_by_side", "ATTENTION_ONLY", "base_kwargs", "base_report",
           "base_spec", "baseline_eps", "build_bases", "check_lora_targets", "checkpoint_epochs", "checkpoint_rows",
           "conflict_rows", "early_and_converged", "evaluations", "gekhman_fit", "grid_config", "intruder_counts",
           "judged", "load_base", "load_tuned", "lora_grid_sweep", "LORA_TARGET_SETS", "methods_at_sweep_edge",
           "parse_choices", "parse_epochs", "parse_float_list", "parse_int_list", "parse_percentages",
           "parse_target_sets", "pick_configuration", "positions_table", "recall_rows", "recovered_share",
           "replicate", "restored_rows", "seeds_for", "set_spec", "SMOKE_BASE", "SMOKE_SEEDS", "smoke_tune",
           "SMOKE_TUNE", "sorted_kl_curves", "spearman", "style_share", "summarize", "train_logs", "training_fits",
           "tune_config", "verdict", "verdict_attention_only", "verdict_data_scaling", "verdict_key_tokens",
           "verdict_kl_shift", "verdict_learns_less_forgets_less", "verdict_lora_vs_full",
           "verdict_low_ranks_fall_behind", "verdict_lr_ratio", "verdict_retrieval", "verdict_unknown_fitted_slower",
           "weight_change_rows"]

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
        "kl_top10_mean": float(np.mean(pos["kl_top10"])),
        "kl_top5_share": metrics.kl_summary(kl)["top_share"],
        "shifted_share": float(np.mean(ranks > 3)),
        "marginal_share": float(np.mean((ranks > 1) & (ranks <= 3))),
        "final_loss": float(np.mean(result["train_log"]["loss"][-10:])),
        "trainable_fraction": result["train_log"]["trainable_fraction"],
        "trainable_parameters": result["train_log"]["trainable_parameters"],
    }
    out["forgetting"] = out["probe_before"] - out["probe_after"]
    out["stated"] = _mean([a["stated"] for a in answers])  # answers that state a value: the format still parses
    out["style_share"] = style_share(answers)
    for role in W.ROLES:
        picked = roles == role
        out[f"kl_mean_{role}"] = float(kl[picked].mean()) if picked.any() else float("nan")
        out[f"shifted_share_{role}"] = float(np.mean(ranks[picked] > 3)) if picked.any() else float("nan")
    if "kl_icl" in pos:  # an evaluation asked with icl=True: the base shown in-context examples
        kl_icl = np.array(pos["kl_icl"])
        out.update({"kl_mean_icl": float(kl_icl.mean()), "kl_top5_share_icl": metrics.kl_summary(kl_icl)["top_share"],
                    "shifted_share_icl": float(np.mean(np.array(pos["base_rank_icl"]) > 3))})
        for role in W.ROLES:
            picked = roles == role
            out[f"kl_mean_icl_{role}"] = float(kl_icl[picked].mean()) if picked.any() else float("nan")
    return out


def _mean(values: list) -> float:
    """The mean, or NaN for no values (an instruction file's answers carry no ground truth to score)."""
    return float(np.mean(values)) if len(values) else float("nan")


def evaluations(base_kwargs: dict, data: SetSpec, config: tuning.TuneConfig, seeds: list,
                epoch: int | None = None, icl: bool = False) -> list:
    """(seed, evaluate(...)) for each seed: each seed has its own world, base and tuning order.

    icl=True adds the in-context base's comparison (see `evaluation.evaluate`).
    """
    return [(seed, evaluate(base_spec(seed=seed, **base_kwargs), data, replace(config, seed=seed), epoch, icl=icl))
            for seed in seeds]


def replicate(base_kwargs: dict, data: SetSpec, config: tuning.TuneConfig, seeds: list,
              epoch: int | None = None, icl: bool = False) -> list:
    """One row of `summarize` numbers per seed (with the in-context base's numbers when icl=True)."""
    return [{"seed": seed, **summarize(result)}
            for seed, result in evaluations(base_kwargs, data, config, seeds, epoch, icl=icl)]


SMOKE_SEEDS = 2  # replicates in smoke mode: enough to draw a spread, fast enough for the tests


def seeds_for(seed: int, num_seeds: int, smoke: bool = False) -> list:
    """Replicate seeds seed, seed+1, ...; smoke mode keeps the first two."""
    W._check_int("seed", seed, minimum=0)
    W._check_int("num_seeds", num_seeds, minimum=1)
    return [seed + i for i in range(min(num_seeds, SMOKE_SEEDS) if smoke else num_seeds)]


# --- notebook parameters -----------------------------------------------------------------------

SMOKE_BASE = {"size": "tiny", "num_known": 20, "num_unknown": 12, "pretrain_epochs": 2, "num_format_docs": 20}


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_model_weights(base_model) -> None:
    """A base_model folder must hold weights beside its config.json (`models.check_base_model` checks the config,
    and the rest of the name); a one-line error naming the parameter before any work otherwise."""
    path = Path(str(base_model)).expanduser()
    if isinstance(base_model, str) and path.is_dir() and (path / "config.json").is_file() \
            and not any((path / name).is_file() for name in WEIGHT_FILES) and not any(path.glob("*.safetensors")):
        raise ValueError(f"base_model folder {base_model!r} has a config.json but no weights ({', '.join(WEIGHT_FILES)}"
                         "); give a folder written by save_pretrained, a hub id, or 'gemma3-270m'")


def base_kwargs(size: str, num_known: int, num_unknown: int, num_paraphrases: int, pretrain_epochs: int,
                pretrain_lr: float, smoke: bool, seeds: list, base_model: str = models.SYNTHETIC) -> dict:
    """The base parameters of a chapter, checked for every seed before any work starts.

    smoke=True shrinks the world and the pretraining so the test suite runs a chapter in seconds.
    base_model other than "synthetic" is a real model further pretrained on the world (see base_spec).
    """
    check_model_weights(base_model)
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
    (torch.get_num_threads()). With one core, a GPU, several launched processes, or a real base model
    (large: loaded once per process) the bases are built here one by one.
    Returns the seeds that were built.
    """
    specs = {seed: base_spec(seed=seed, **base_kwargs_) for seed in seeds}
    missing = [seed for seed, spec in specs.items() if not base_is_built(spec)]
    cores = torch.get_num_threads()
    if (len(missing) < 2 or cores < 2 or not specs[missing[0]].synthetic or models.device().type != "cpu"
            or distributed.launched()):  # launched: the processes build each base together, one by one
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
    """A checked instruction set; a non-empty instruction_file replaces the synthetic one.

    instruction_file: an Alpaca JSON, JSON Lines or Parquet file, a local dataset folder or a `datasets` hub id
    (see `instructions`); its errors name it as typed.
    """
    if not isinstance(instruction_file, str):
        raise ValueError(f"instruction_file must be {instructions.ALLOWED}, or \"\" for the world; "
                         f"got {instruction_file!r}")
    if instruction_file:
        path = instructions.alpaca_file(instruction_file)
        try:
            return file_set_spec(path, size)
        except ValueError as err:
            raise ValueError(str(err).replace(repr(path), repr(instruction_file))) from None
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
                     for _, result in evaluations(base_kwargs_, data, config, seeds, icl=key.endswith("_icl"))])


def positions_table(base_kwargs_: dict, data: SetSpec, config: tuning.TuneConfig, seeds: list, icl: bool = False):
    """All scored positions of all seeds as one pandas DataFrame (one row per response token)."""
    import pandas as pd
    frames = [pd.DataFrame(result["positions"]).assign(seed=seed)
              for seed, result in evaluations(base_kwargs_, data, config, seeds, icl=icl)]
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
    per_model = {}
    for seed in seeds:
        spec = base_spec(seed=seed, **base_kwargs_)
        if data.synthetic:
            per_model[seed, "base"] = base_answers(spec, epoch)
        for name, config in configs.items():
            result = evaluate(spec, data, replace(config, seed=seed), epoch)
            per_model[seed, name] = result["answers"] if data.synthetic else result["file_answers"]
    return answers_frame(per_model)


def answers_frame(per_model: dict):
    """{(seed, model name): answer records} as one DataFrame in `all_answers`' columns, one row per answer."""
    import pandas as pd
    rows = []
    for (seed, name), answers in per_model.items():
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
            row[model] = f"{_shorten(wide.loc[i, model])} [{verdicts.loc[i, model]}]"
        rows.append(row)
    return pd.DataFrame(rows)


# --- the verdicts of the reference's claims (one function per chapter, applied to each LoRA) ------

KL_RATIO_NEEDED = 3.0  # the reference's 4-5x (Ghosh et al.), with room for a small model: at least 3x
KL_RATIO_MORE = 1.0  # part of the claim: full fine-tuning shifts the base more than LoRA at all
PREMISE_STYLE = 0.5  # the LoRA learned the tuned answer style on at least half of its answers


def verdict_kl_shift(rows, lora: str, full: str = "full") -> dict:
    """Ghosh et al. §4: LoRA barely shifts the base, full fine-tuning shifts it 4-5x more.

    rows: one row per (seed, method) with `kl_mean` (and `style_share` where the chapter measures it). Per
    seed, full's mean KL over the LoRA's, paired within the seed (one base); their geometric mean with a 95%
    t-interval of the log ratios (`stats.ratio_interval`). Reproduced: the interval above 3x; partly: between
    1x and 3x (full shifts more, not 4-5x more); not reproduced: below 1x; inconclusive: it straddles 1x or 3x.
    Premise: both methods moved the base on every seed (a KL of zero has no ratio) and the LoRA answers in the
    tuned style on at least half of its answers (a LoRA that learned nothing would "barely shift" for free);
    where either fails, "premise not met".
    """
    from . import stats
    wide = rows.pivot_table(index="seed", columns="method", values="kl_mean")
    moved = bool((wide[[lora, full]] > 0).all().all())  # a method that changed nothing on a seed has no ratio
    per_seed = (wide[full] / wide[lora]).to_dict() if moved else {}
    ratio, low, high = (stats.ratio_interval(wide[full].to_numpy(), wide[lora].to_numpy()) if moved else
                        (float("nan"),) * 3)
    style = float(rows[rows["method"] == lora]["style_share"].mean()) if "style_share" in rows else None
    outcome = ("premise not met" if not moved or (style is not None and style < PREMISE_STYLE) else
               stats.decide(low, high, KL_RATIO_NEEDED, KL_RATIO_MORE))
    criterion = (f"per seed, full fine-tuning's mean KL over {lora}'s, paired within the seed; reproduced when the "
                 f"95% interval of their geometric mean lies above {KL_RATIO_NEEDED:g}x (the reference's 4-5x), partly "
                 f"when it lies between {KL_RATIO_MORE:g}x and {KL_RATIO_NEEDED:g}x, not reproduced below "
                 f"{KL_RATIO_MORE:g}x, inconclusive when it straddles either"
                 + (f"; premise: {lora} answers in the tuned style on at least {PREMISE_STYLE:.0%} of its answers"
                    if style is not None else ""))
    return {"verdict": outcome, "criterion": criterion,
            "sentence": (stats.sentence(f"full fine-tuning's mean KL over {lora}'s", ratio, low, high, len(per_seed),
                                        f"{KL_RATIO_NEEDED:g}x", outcome) if moved else
                         f"a method left the base unchanged on some seed (mean KL 0): no ratio: {outcome}"),
            "numbers": {"ratio": ratio, "interval": [low, high], "per_seed": {str(k): v for k, v in per_seed.items()},
                        "seeds": len(wide), "threshold": KL_RATIO_NEEDED, "partly_threshold": KL_RATIO_MORE,
                        **({"style_share": style} if style is not None else {})}}


FLAT_ACCURACY = 0.05  # "does not get better": held-out accuracy within +-0.05 (two one-sided tests)
FLAT_KL = 1.2  # "KL stays flat": KL within a factor of 1.2 either way (two one-sided tests on the log)
GROWS_KL = 1.2  # full fine-tuning's KL "grows with data": by more than 20%


def verdict_data_scaling(rows, lora: str, full: str = "full") -> dict:
    """Ghosh et al. §4.3: more data does not help LoRA (its KL and accuracy stay flat); full fine-tuning's KL grows.

    rows: one row per (method, factor, seed) with `kl_mean` and `accuracy_known`. Judged from the second scale
    on (x10 in the reference's ratios) to the last, per seed: LoRA's accuracy change and log KL growth, full's log
    KL growth, and LoRA's log KL growth minus full's. "Flat" is an equivalence claim: two one-sided tests
    (`stats.equivalent`) that LoRA's accuracy change lies within +-`FLAT_ACCURACY` and its KL growth within a
    factor of `FLAT_KL`. "Moves" when either's 95% interval lies wholly outside its margin. Reproduced: LoRA flat
    and full's KL growth's interval above `GROWS_KL`. Partly: LoRA flat without full shown growing, or LoRA's KL
    shown growing less than full's (interval of the paired log difference below 0) without LoRA shown flat. Not
    reproduced: LoRA moves and its KL is not shown growing less than full's. Inconclusive otherwise.
    """
    from . import stats
    factors = sorted(rows["factor"].unique())
    after = factors[min(1, len(factors) - 1):]
    a, b = after[0], after[-1]
    wide = rows.pivot_table(index="seed", columns=["method", "factor"], values=["kl_mean", "accuracy_known"])
    acc = wide[("accuracy_known", lora, b)] - wide[("accuracy_known", lora, a)]
    lora_log = np.log(wide[("kl_mean", lora, b)] / wide[("kl_mean", lora, a)])
    full_log = np.log(wide[("kl_mean", full, b)] / wide[("kl_mean", full, a)])
    acc_flat = stats.equivalent(acc, FLAT_ACCURACY)
    kl_flat = stats.equivalent(lora_log, math.log(FLAT_KL))
    flat = acc_flat["equivalent"] and kl_flat["equivalent"]
    acc_m, acc_lo, acc_hi = stats.t_interval(acc)
    kl_m, kl_lo, kl_hi = stats.t_interval(lora_log)
    moves = (acc_lo > FLAT_ACCURACY or acc_hi < -FLAT_ACCURACY or kl_lo > math.log(FLAT_KL)
             or kl_hi < -math.log(FLAT_KL))
    full_m, full_lo, full_hi = stats.t_interval(full_log)
    grows = full_lo > math.log(GROWS_KL)
    less_m, less_lo, less_hi = stats.t_interval(lora_log - full_log)
    less = less_hi < 0
    if flat and grows:
        outcome = "reproduced"
    elif flat or less:
        outcome = "partly reproduced"
    elif moves:
        outcome = "not reproduced"
    else:
        outcome = "inconclusive"
    seeds = len(wide)
    sentence = (f"from x{a} to x{b} over {seeds} seeds: LoRA's accuracy changes by {acc_m:+.2f} (95% interval "
                f"{acc_lo:+.2f} to {acc_hi:+.2f}; flat needs within +-{FLAT_ACCURACY:g}), its KL by {math.exp(kl_m):.2f}x "
                f"({math.exp(kl_lo):.2f}-{math.exp(kl_hi):.2f}x; flat needs within {FLAT_KL:g}x), full's KL by "
                f"{math.exp(full_m):.2f}x ({math.exp(full_lo):.2f}-{math.exp(full_hi):.2f}x; grows needs above "
                f"{GROWS_KL:g}x): {outcome}")
    return {"verdict": outcome, "sentence": sentence,
            "criterion": f"from the second scale on, per seed: LoRA flat when two one-sided tests put its accuracy change "
                         f"within +-{FLAT_ACCURACY:g} and its KL growth within a factor of {FLAT_KL:g}; full's KL grows when "
                         f"the 95% interval of its growth lies above {GROWS_KL:g}x; reproduced: LoRA flat and full's KL "
                         "growing; partly: LoRA flat alone, or LoRA's KL growing less than full's (paired); not "
                         "reproduced: LoRA moving, its KL not growing less than full's; inconclusive otherwise",
            "numbers": {"estimate": math.exp(kl_m), "interval": [math.exp(kl_lo), math.exp(kl_hi)], "threshold": FLAT_KL,
                        "lora_kl_growth": math.exp(kl_m), "full_kl_growth": math.exp(full_m),
                        "full_kl_growth_interval": [math.exp(full_lo), math.exp(full_hi)],
                        "lora_accuracy_gain": acc_m, "lora_accuracy_gain_interval": [acc_lo, acc_hi],
                        "lora_flat": flat, "accuracy_tost_p": acc_flat["p_value"], "kl_tost_p": kl_flat["p_value"],
                        "lora_grows_less": less, "full_grows": grows, "from_factor": a, "to_factor": b, "seeds": seeds}}


def verdict_lora_vs_full(rows, lora: str, full: str = "full") -> dict:
    """Ghosh et al. §5: LoRA beats full fine-tuning when the base knows the facts, more so the better the base.

    rows: one row per (method, base_epoch, seed) with `accuracy_known` (held-out) and `forgetting`; bases ordered
    by `base_epoch` from the least to the most pretrained. Per seed, paired within the seed's bases: LoRA's
    held-out accuracy minus full's on the best base ("ahead"), that gap on the best base minus on the weakest
    ("growing"), and full's forgetting minus LoRA's, averaged over bases ("forgets less"), each decided by its 95%
    interval over seeds against 0. Reproduced: all three above 0; partly: "ahead" or "forgets less" above 0, not
    all three; not reproduced: both "ahead" and "forgets less" at or below 0; inconclusive otherwise.
    """
    from . import stats
    acc = rows.pivot_table(index="seed", columns=["method", "base_epoch"], values="accuracy_known")
    forg = rows.pivot_table(index="seed", columns="method", values="forgetting")  # mean over the bases
    epochs = sorted(rows["base_epoch"].unique())
    gap = {e: acc[(lora, e)] - acc[(full, e)] for e in epochs}
    parts = {"ahead": stats.t_interval(gap[epochs[-1]]), "growing": stats.t_interval(gap[epochs[-1]] - gap[epochs[0]]),
             "forgets_less": stats.t_interval(forg[full] - forg[lora])}
    above = {k: v[1] > 0 for k, v in parts.items()}
    below = {k: v[2] <= 0 for k, v in parts.items()}
    if all(above.values()):
        outcome = "reproduced"
    elif above["ahead"] or above["forgets_less"]:
        outcome = "partly reproduced"
    elif below["ahead"] and below["forgets_less"]:
        outcome = "not reproduced"
    else:
        outcome = "inconclusive"
    seeds = len(acc)
    said = "; ".join(f"{name.replace('_', ' ')} {m:+.2f} ({lo:+.2f} to {hi:+.2f})" for name, (m, lo, hi) in parts.items())
    return {"verdict": outcome,
            "sentence": f"over {seeds} seeds, paired: {said}; the claim needs all three above 0: {outcome}",
            "criterion": "per seed, paired within the seed's bases: LoRA's held-out accuracy minus full fine-tuning's "
                         "on the best base (ahead), that gap minus the gap on the weakest base (growing), and full's "
                         "forgetting minus LoRA's (forgets less); reproduced when the 95% interval of each lies above 0, "
                         "partly when that of ahead or of forgets less does, not reproduced when both of these lie at "
                         "or below 0, inconclusive otherwise",
            "numbers": {"estimate": parts["ahead"][0], "interval": [parts["ahead"][1], parts["ahead"][2]], "threshold": 0.0,
                        "parts": {k: {"mean": v[0], "interval": [v[1], v[2]]} for k, v in parts.items()},
                        "gap_first": float(gap[epochs[0]].mean()), "gap_last": float(gap[epochs[-1]].mean()),
                        "lora_forgetting": float(forg[lora].mean()), "full_forgetting": float(forg[full].mean()),
                        "seeds": seeds}}


# --- LoRA's configuration (chapter "LoRA's configuration") ------------------------------------------

LORA_TARGET_SETS = {  # a name a reader can type -> the modules LoRA adapts
    "qv": "q_proj,v_proj",
    "attention": "q_proj,k_proj,v_proj,o_proj",
    "mlp": "gate_proj,up_proj,down_proj",
    "all": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
}
ATTENTION_ONLY = ("qv", "attention")


def parse_target_sets(text: str) -> dict:
    """"qv,all" -> {name: modules}; a one-line error naming `target_sets` otherwise."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    unknown = [n for n in names if n not in LORA_TARGET_SETS]
    if not names or unknown:
        raise ValueError(f"target_sets must be comma-separated names among {', '.join(LORA_TARGET_SETS)}, "
                         f"got {text!r}")
    return {n: LORA_TARGET_SETS[n] for n in names}


def judged(reproduced: bool, partly: bool, criterion: str, numbers: dict) -> dict:
    """A verdict with the rule it applied in words and the numbers it read."""
    return {"verdict": verdict(reproduced, partly), "criterion": criterion, "numbers": numbers}


def interval_verdict(values, reproduced_above: float, partly_above: float | None, quantity: str, needs: str,
                     criterion: str, over: str = "seeds") -> dict:
    """A verdict from per-seed (or per-run) values: their mean with a 95% t-interval (`stats.t_interval`), decided
    by where the interval lies (`stats.decide`), stated as a sentence with its interval."""
    from . import stats
    values = [float(v) for v in values]
    estimate, low, high = stats.t_interval(values)
    outcome = stats.decide(low, high, reproduced_above, partly_above)
    return {"verdict": outcome, "criterion": criterion,
            "sentence": stats.sentence(quantity, estimate, low, high, len(values), needs, outcome, unit=over),
            "numbers": {"estimate": estimate, "interval": [low, high], "threshold": reproduced_above,
                        **({"partly_threshold": partly_above} if partly_above is not None else {}),
                        "values": values, "seeds": len(values)}}


def verdict_attention_only(cells) -> dict:
    """LoRA Without Regret: attention-only LoRA underperforms MLP or all-layer LoRA even at matched parameter count.

    cells: one row per (targets, rank) with mean `accuracy_known` and `trainable_parameters`.
    An attention-only cell is beaten when some MLP or all-layer cell with at most
    its trainable parameters has higher held-out accuracy. Reproduced: every
    attention-only cell beaten; partly: some.
    """
    attention = cells[cells.targets.isin(ATTENTION_ONLY)]
    others = cells[~cells.targets.isin(ATTENTION_ONLY)]
    beaten = {}
    for _, a in attention.iterrows():
        rivals = others[others.trainable_parameters <= a.trainable_parameters]
        beaten[f"{a.targets} r{a['rank']}"] = bool((rivals.accuracy_known > a.accuracy_known).any())
    count = sum(beaten.values())
    return judged(bool(beaten) and count == len(beaten), count > 0,
                  "every attention-only cell is beaten on held-out accuracy by an MLP or all-layer cell with at "
                  "most its trainable parameters (reproduced); some are (partly)",
                  {"beaten": beaten, "num_beaten": count, "num_attention_cells": len(beaten)})


def verdict_lr_ratio(best_lrs: dict, full_lr: float, low: float = 3.0, high: float = 30.0,
                     swept: tuple = ()) -> dict:
    """LoRA Without Regret / Biderman et al.: the best LoRA rate is about 10x full fine-tuning's and barely depends on rank.

    best_lrs: {(targets, rank): best learning rate}; swept: the LoRA rates tried.
    "About 10x": every ratio in [low, high], and no best rate at an edge of the
    sweep (there the optimum may lie beyond it). "Barely depends on rank": within
    each target set the best rates of all ranks lie within a factor of 3.5 (one
    step of a 1-3-10 sweep). Reproduced: both; partly: one.
    """
    ratios = {f"{t} r{r}": lr / full_lr for (t, r), lr in best_lrs.items()}
    at_edge = sorted(f"{t} r{r}" for (t, r), lr in best_lrs.items()
                     if len(swept) > 1 and lr in (min(swept), max(swept)))
    about_10x = all(low <= v <= high for v in ratios.values()) and not at_edge
    spread = {}
    for t in sorted({t for t, _ in best_lrs}):
        values = [lr for (tt, _), lr in best_lrs.items() if tt == t]
        spread[t] = max(values) / min(values)
    flat = all(v <= 3.5 for v in spread.values())
    return judged(about_10x and flat, about_10x or flat,
                  f"every cell's best LoRA rate is {low:g}-{high:g}x full fine-tuning's and none sits at an edge of "
                  "the sweep, and within each target set the ranks' best rates lie within a factor of 3.5 "
                  "(reproduced); one of the two (partly)",
                  {"ratio_to_full": ratios, "rank_spread_by_targets": spread, "about_10x": about_10x,
                   "at_sweep_edge": at_edge, "barely_depends_on_rank": flat})


def verdict_low_ranks_fall_behind(fit, full_fit: dict) -> dict:
    """LoRA Without Regret: low ranks fall behind full fine-tuning after a number of steps that grows with rank.

    fit: one row per (targets, rank, epochs) with mean `fit_accuracy` on the new
    facts (the unknown set); full_fit: {epochs: full fine-tuning's fit}. With two
    lengths: at the longer one, the gap to full shrinks as the rank grows, and
    the lowest rank's gap is at least as large as at the shorter length.
    Counted per target set; reproduced when it holds for every target set, partly for some.
    """
    short, long_ = min(full_fit), max(full_fit)
    holds = {}
    for targets, group in fit.groupby("targets", sort=False):
        gap = {(int(r.rank), float(r.epochs)): full_fit[r.epochs] - r.fit_accuracy for r in group.itertuples()}
        ranks = sorted({r for r, _ in gap})
        long_gaps = [gap[r, long_] for r in ranks]
        shrinks = all(b <= a for a, b in zip(long_gaps, long_gaps[1:])) and long_gaps[-1] < long_gaps[0]
        widens = gap[ranks[0], long_] >= gap[ranks[0], short]
        holds[targets] = {"gap_by_rank_long": dict(zip(ranks, long_gaps)),
                          "lowest_rank_gap_short": gap[ranks[0], short], "holds": bool(shrinks and widens)}
    count = sum(v["holds"] for v in holds.values())
    return judged(count == len(holds) and count > 0, count > 0,
                  "at the longer training the gap to full fine-tuning on new facts shrinks as the rank grows, and "
                  "the lowest rank's gap does not close with more steps; for every target set (reproduced), some (partly)",
                  {"by_targets": holds})


def pick_configuration(cells, epochs: float) -> dict:
    """The LoRA configuration the other chapters set beside the reference's: the best mean held-out accuracy on
    known people at `epochs`, ties broken by fewer trainable parameters."""
    picked = cells[cells.epochs == epochs].sort_values(["accuracy_known", "trainable_parameters"],
                                                        ascending=[False, True]).iloc[0]
    return {"targets": picked.targets, "rank": int(picked["rank"]), "lr": float(picked.lr),
            "accuracy_known": float(picked.accuracy_known)}


def training_fits(base_kwargs_: dict, data: SetSpec, config: tuning.TuneConfig, seeds: list) -> list:
    """evaluation.training_fit per seed, as rows with a seed column."""
    return [{"seed": seed, **training_fit(base_spec(seed=seed, **base_kwargs_), data, replace(config, seed=seed))}
            for seed in seeds]


def _shorten(text: str, limit: int = 90) -> str:
    """An answer as a table cell: at most `limit` characters (the whole answer is in the answers file)."""
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


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


# --- the LoRA grid's sweep, shared by the chapters that use the grid's runs ---------------------------

def parse_percentages(name: str, text: str) -> list:
    """"0,25,100" -> [0, 25, 100], distinct and sorted; a one-line error naming the parameter otherwise."""
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(0 <= v <= 100 for v in values) or len(set(values)) < len(values):
        raise ValueError(f"{name} must be distinct comma-separated whole percentages between 0 and 100, got {text!r}")
    return sorted(values)


def parse_epochs(name: str, text: str) -> list:
    """"1,2.5,8" -> [1.0, 2.5, 8.0], increasing and positive; a one-line error naming the parameter otherwise."""
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) <= 0 or any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{name} must be increasing comma-separated positive epochs, got {text!r}")
    return values


def parse_choices(name: str, text: str, allowed: tuple, required: tuple = ()) -> list:
    """"known,unknown" -> ["known", "unknown"], each one of `allowed` and every one of `required` present, in the
    order of `allowed`; a one-line error naming the parameter and what is allowed otherwise."""
    values = [v.strip() for v in str(text).split(",") if v.strip()]
    if not values or any(v not in allowed for v in values) or any(r not in values for r in required):
        need = f" (must include {', '.join(required)})" if required else ""
        raise ValueError(f"{name} must be comma-separated names from {', '.join(allowed)}{need}, got {text!r}")
    return [a for a in allowed if a in values]


def grid_config(targets: dict, name: str, rank: int, lr: float, epochs: float,
                base_model: str = models.SYNTHETIC) -> tuning.TuneConfig:
    """The TuneConfig of one grid cell (`name` a key of `targets`, or "full")."""
    if name == "full":
        return tune_config("full", lr, epochs)
    return tune_config("lora", lr, epochs, rank, targets[name], base_model=base_model, lr_name="lora_lrs")


def lora_grid_sweep(base_kwargs_: dict, data: SetSpec, targets: dict, ranks: list, lrs: dict, epochs: float,
                    seed: int, base_model: str = models.SYNTHETIC, reverse: bool = False) -> tuple:
    """(sweep rows, {(targets, rank): best LoRA rate}, full's best rate): every cell swept on one seed.

    Each swept model is screened (`screening.screen`: its held-out answers judged, no KL
    or probe); the chapters evaluate the picked rates in full.

    `reverse` asks for the runs in the opposite order: a chapter that runs beside
    the grid's own chapter builds the sweep from the other end, and the cache's
    locks make each run built once.
    """
    import pandas as pd
    from . import screening
    jobs = [(n, r, lr) for n in targets for r in ranks for lr in lrs["lora"]] + [("full", 0, lr) for lr in lrs["full"]]
    rows, spec = {}, base_spec(seed=seed, **base_kwargs_)
    for n, r, lr in (reversed(jobs) if reverse else jobs):  # screened: held-out answers only, no KL or probe
        config = replace(grid_config(targets, n, r, lr, epochs, base_model), seed=seed)
        rows[n, r, lr] = [{"targets": n, "rank": r, "lr": lr, "seed": seed, **screening.screen(spec, data, config)}]
    sweep = pd.DataFrame([row for job in jobs for row in rows[job]])
    best = sweep.loc[sweep.groupby(["targets", "rank"], sort=False)["accuracy_known"].idxmax(), ["targets", "rank", "lr"]]
    best_lr = {(t, int(r)): float(lr) for t, r, lr in best.itertuples(index=False)}
    return sweep, best_lr, best_lr.pop(("full", 0))


# --- loss on the key tokens (chapter "Loss on the key tokens") ----------------------------------------

def style_share(answers: list) -> float:
    """The share of answers that open with the tuned answer style's phrase ("According to my records ,")."""
    return _mean([a["answer"].startswith(W.STYLE_OPENER) for a in answers])


def verdict_key_tokens(rows, tolerance: float = 0.05, parseable: float = 0.9) -> dict:
    """Loss on the value tokens only teaches with the smallest change to the model.

    rows: one method's runs on one set, one row per (seed, "loss on") with `kl_mean`, `accuracy_known` and
    `stated` (share of answers stating a value); "loss on" is "every response token" or "value tokens only".
    Per seed, paired: the value loss's mean KL over the response loss's (a log ratio) and its held-out accuracy
    minus the response loss's; and the value loss's `stated` share. Each is decided by its 95% interval over seeds.
    Reproduced: a smaller KL (interval below 1x), accuracy kept (interval above -`tolerance`) and parseable answers
    (interval above `parseable`). Partly: a smaller KL with accuracy kept, the answers' format lost. Not
    reproduced: the KL not smaller or the accuracy lost, whatever else. Inconclusive otherwise. A model that
    learned less earns a smaller KL for free, so a smaller KL never earns "partly" alone.
    """
    from . import stats
    wide = rows.pivot_table(index="seed", columns="loss on", values=["kl_mean", "accuracy_known", "stated"])
    response, value = "every response token", "value tokens only"
    if not bool((wide["kl_mean"] > 0).all().all()):  # a loss that changed nothing on a seed has no ratio
        return {"verdict": "premise not met", "sentence": "a loss left the base unchanged on some seed (mean KL 0): "
                "no ratio: premise not met", "criterion": "both losses must move the base on every seed",
                "numbers": {"seeds": len(wide), **{f"kl_{k}": float(wide["kl_mean"][n].mean()) for k, n in
                                                    (("response", response), ("value", value))}}}
    ratio, r_low, r_high = stats.ratio_interval(wide["kl_mean"][value].to_numpy(), wide["kl_mean"][response].to_numpy())
    change, a_low, a_high = stats.t_interval(wide["accuracy_known"][value] - wide["accuracy_known"][response])
    stated, s_low, s_high = stats.t_interval(wide["stated"][value])
    if r_low >= 1 or a_high < -tolerance:
        outcome = "not reproduced"
    elif r_high < 1 and a_low > -tolerance and s_low >= parseable:
        outcome = "reproduced"
    elif r_high < 1 and a_low > -tolerance and s_high < parseable:
        outcome = "partly reproduced"
    else:
        outcome = "inconclusive"
    seeds = len(wide)
    sentence = (f"the value loss's mean KL is {ratio:.2f}x the response loss's (95% interval {r_low:.2f} to {r_high:.2f} "
                f"over {seeds} seeds), its held-out accuracy {change:+.2f} ({a_low:+.2f} to {a_high:+.2f}), and "
                f"{stated:.0%} of its answers state a value ({s_low:.0%}-{s_high:.0%}); the claim needs a smaller KL "
                f"with accuracy within {tolerance:g} and {parseable:.0%} parseable answers: {outcome}")
    return {"verdict": outcome, "sentence": sentence,
            "criterion": f"per seed, paired: the value loss's mean KL over the response loss's, and its held-out accuracy "
                         f"minus the response loss's; reproduced when the KL ratio's 95% interval lies below 1x, the "
                         f"accuracy change's above -{tolerance:g} and the share of answers stating a value above "
                         f"{parseable:.0%}; partly when the first two hold and the answers' format is lost; not "
                         f"reproduced when the KL is not smaller or the accuracy is lost; inconclusive otherwise",
            "numbers": {"ratio": ratio, "interval": [r_low, r_high], "threshold": 1.0,
                        "accuracy_change": change, "accuracy_change_interval": [a_low, a_high],
                        "stated_value": stated, "stated_interval": [s_low, s_high], "seeds": seeds,
                        "kl_response": float(wide["kl_mean"][response].mean()), "kl_value": float(wide["kl_mean"][value].mean()),
                        "accuracy_response": float(wide["accuracy_known"][response].mean()),
                        "accuracy_value": float(wide["accuracy_known"][value].mean()),
                        "stated_response": float(wide["stated"][response].mean())}}


# --- retrieval instead of tuning (chapter "Retrieval instead of tuning") --------------------------------

def verdict_retrieval(rows, reading_pairs: list, margin: float = 0.2, reads: float = 0.1) -> dict:
    """Ovadia et al.: retrieval is far ahead of fine-tuning for new knowledge (about 0.88 against 0.50).

    rows: one row per (seed, condition) with `family` ("retrieval" or "tuning") and `accuracy` on the new facts.
    reading_pairs: (condition with the retrieved text, the same model closed-book). Premise: the model reads its
    context, i.e. for the best pair the 95% interval over seeds of (with the text - without it) lies above
    `reads`; otherwise "premise not met" (retrieval cannot help a model that does not read). Then per seed the
    best retrieval condition's accuracy minus the best tuning condition's (both picked by their mean over every
    seed): reproduced when its 95% interval lies above `margin`, partly between 0 and `margin`, not reproduced at
    or below 0, inconclusive when it straddles either.
    """
    from . import stats
    wide = rows.pivot_table(index="seed", columns="condition", values="accuracy")
    family = dict(zip(rows["condition"], rows["family"]))
    best_r = max((c for c in wide if family[c] == "retrieval"), key=lambda c: wide[c].mean())
    best_t = max((c for c in wide if family[c] == "tuning"), key=lambda c: wide[c].mean())
    lifts = {open_: wide[open_] - wide[closed] for open_, closed in reading_pairs}
    best_pair = max(lifts, key=lambda c: lifts[c].mean())
    lift, l_low, l_high = stats.t_interval(lifts[best_pair])
    criterion = (f"premise: with the retrieved text, the best reader answers at least {reads:g} more of the new facts "
                 f"than closed-book (95% interval over seeds); then per seed the best retrieval condition's accuracy "
                 f"minus the best tuning condition's: reproduced when its 95% interval lies above {margin:g}, partly "
                 f"between 0 and {margin:g}, not reproduced at or below 0, inconclusive when it straddles either")
    numbers = {"best_retrieval": best_r, "best_retrieval_accuracy": float(wide[best_r].mean()),
               "best_tuning": best_t, "best_tuning_accuracy": float(wide[best_t].mean()),
               "reading_lift": lift, "reading_lift_interval": [l_low, l_high], "best_reader": best_pair}
    if not l_low > reads:
        sentence = (f"with the text, the best reader ({best_pair}) answers {lift:+.2f} of the new facts against "
                    f"closed-book (95% interval {l_low:+.2f} to {l_high:+.2f} over {len(wide)} seeds): the model does "
                    f"not read its context, so retrieval cannot be tested here: premise not met")
        return {"verdict": "premise not met", "criterion": criterion, "sentence": sentence,
                "numbers": {**numbers, "gap": float(wide[best_r].mean() - wide[best_t].mean())}}
    verdict = interval_verdict((wide[best_r] - wide[best_t]).tolist(), margin, 0.0,
                               f"{best_r}'s accuracy minus {best_t}'s", f"{margin:g}", criterion)
    verdict["numbers"] = {**verdict["numbers"], **numbers, "gap": verdict["numbers"]["estimate"]}
    return verdict


# --- the learning-forgetting trade-off and intruder dimensions (chapter "Learning and forgetting") -------

def verdict_learns_less_forgets_less(rows, full_cell: str, alpha: float = 0.05) -> dict:
    """Biderman et al.: LoRA learns less and forgets less than full fine-tuning.

    rows: one row per (cell, seed) with `method`, `learned` (new facts fitted) and `forgetting`; `full_cell` is
    full fine-tuning at its chosen rate, run on every seed. Per LoRA cell and seed, paired with full's run on the
    same seed: full's learned share minus the cell's, and full's forgetting minus the cell's. A cell learns less
    and forgets less when both one-sided t-tests (mean above 0) reject, its p-value the larger of the two; it
    contradicts the claim when either difference is shown below 0 the same way. The cells' p-values get a Holm
    correction (statsmodels), so judging twelve cells at once does not find one by chance. Reproduced: every cell
    passes; partly: some do; not reproduced: every cell contradicts it; inconclusive otherwise.
    """
    from scipy import stats as scipy_stats
    from statsmodels.stats.multitest import multipletests
    full = rows[rows["cell"] == full_cell].set_index("seed")
    cells = [c for c in dict.fromkeys(rows[rows["method"] == "lora"]["cell"])]

    def one_sided(values, greater: bool) -> float:
        values = np.asarray(values, dtype=float)
        if len(values) < 2:
            return 1.0
        if np.std(values, ddof=1) == 0:
            return 0.0 if (values[0] > 0 if greater else values[0] < 0) else 1.0
        return float(scipy_stats.ttest_1samp(values, 0.0, alternative="greater" if greater else "less").pvalue)

    p_pass, p_against, diffs = [], [], {}
    for cell in cells:
        part = rows[rows["cell"] == cell].set_index("seed")
        seeds = part.index.intersection(full.index)
        learn = (full.loc[seeds, "learned"] - part.loc[seeds, "learned"]).to_numpy()
        forget = (full.loc[seeds, "forgetting"] - part.loc[seeds, "forgetting"]).to_numpy()
        diffs[cell] = {"learns_less_by": float(learn.mean()), "forgets_less_by": float(forget.mean()),
                       "seeds": int(len(seeds))}
        p_pass.append(max(one_sided(learn, True), one_sided(forget, True)))
        p_against.append(min(one_sided(learn, False), one_sided(forget, False)))
    passes = multipletests(p_pass, alpha=alpha, method="holm")[0] if cells else []
    against = multipletests(p_against, alpha=alpha, method="holm")[0] if cells else []
    count, contradicted = int(sum(passes)), int(sum(against))
    if cells and count == len(cells):
        outcome = "reproduced"
    elif count > 0:
        outcome = "partly reproduced"
    elif cells and contradicted == len(cells):
        outcome = "not reproduced"
    else:
        outcome = "inconclusive"
    seeds = int(full.index.size)
    sentence = (f"{count} of {len(cells)} LoRA cells learn less and forget less than full fine-tuning, paired by seed "
                f"over {seeds} seeds (one-sided t-tests, Holm-corrected at {alpha:g}); {contradicted} contradict it; "
                f"the claim needs every cell: {outcome}")
    return {"verdict": outcome, "sentence": sentence,
            "criterion": "per LoRA cell and seed, full fine-tuning's learned share and forgetting minus the cell's "
                         "(paired by seed); a cell passes when both one-sided t-tests show them above 0, contradicts "
                         "the claim when either is shown below 0, both Holm-corrected over the cells; reproduced when "
                         "every cell passes, partly when some do, not reproduced when every cell contradicts it, "
                         "inconclusive otherwise",
            "numbers": {"count": count, "num_cells": len(cells), "contradicted": contradicted, "seeds": seeds,
                        "learns_less_forgets_less": {c: bool(x) for c, x in zip(cells, passes)},
                        "p_values": dict(zip(cells, p_pass)), "differences": diffs}}


def above_curve(cells: dict, curve: list) -> dict:
    """{cell: does it forget more than full fine-tuning's curve at the same learned share} for the cells whose
    learned share lies within the curve's range. cells: {cell: {"learned", "forgetting"}}; curve: full
    fine-tuning's (learned, forgetting) points at several rates (linear interpolation between them)."""
    if not curve:
        return {}
    xs, ys = zip(*sorted(curve))
    return {c: bool(v["forgetting"] > np.interp(v["learned"], xs, ys)) for c, v in cells.items()
            if xs[0] <= v["learned"] <= xs[-1]}


def intruder_counts(max_cosines: list, eps: float) -> int:
    """Directions whose largest |cos| with every base direction is below eps."""
    return int(sum(c < eps for c in max_cosines))


def baseline_eps(random_cosines: list, share: float = 0.1, grid=None) -> float:
    """The largest eps of `grid` at which at most `share` of random directions count as intruders: below it a
    tuned direction counted as an intruder is unlike a random one."""
    grid = grid if grid is not None else [round(0.05 * i, 2) for i in range(1, 20)]
    passing = [e for e in grid if np.mean(np.asarray(random_cosines) < e) <= share]
    return float(max(passing)) if passing else float(min(grid))


# --- rows of the cached steps of the chapters on changing the model less ------------------------------

def _forgetting(result: dict) -> float:
    return float(np.mean(list(result["probe_before"].values())) - np.mean(list(result["probe_after"].values())))


def weight_change_rows(base_kwargs_: dict, data: SetSpec, config: tuning.TuneConfig, seeds: list,
                       label: dict) -> list:
    """One row per seed: new facts fitted, forgetting, and the weight change's effective ranks and cosines."""
    rows = []
    for seed in seeds:
        spec, c = base_spec(seed=seed, **base_kwargs_), replace(config, seed=seed)
        change, fit = studies.weight_change(spec, data, c), training_fit(spec, data, c)
        matrices = change["summary"]["matrices"]
        rows.append({**label, "seed": seed, "learned": fit["fit_accuracy"], "forgetting": _forgetting(change),
                     "effective_ranks": {n: m["effective_rank"] for n, m in matrices.items()},
                     # ten digits: a norm's last bits depend on the BLAS thread count, the results must not
                     "relative_change": {n: None if m["relative_change"] is None else float(f"{m['relative_change']:.10g}")
                                         for n, m in matrices.items()},
                     "dimensions": {n: min(m["shape"]) for n, m in matrices.items()},
                     "tuned_cosines": [v for m in matrices.values() for v in m["tuned_max_cosines"]],
                     "random_cosines": [v for m in matrices.values() for v in m["random_max_cosines"]]})
    return rows


def recall_rows(base_kwargs_: dict, model: dict, new_facts: SetSpec, seeds: list, context: str,
                label: dict) -> list:
    """One row per seed of `studies.recall`: accuracy on the new facts, stated share, hit rate, prompt tokens,
    forgetting (closed-book recalls only) and the tuning's wall-clock seconds (not cached)."""
    rows = []
    for seed in seeds:
        spec = base_spec(seed=seed, **base_kwargs_)
        described = _seeded(model, seed)
        result = studies.recall(spec, described, new_facts, seed, context)
        rows.append({**label, "seed": seed, "context": context, "accuracy": result["accuracy"],
                     "stated": result["stated"], "hit_rate": result["hit_rate"],
                     "prompt_tokens": result["prompt_tokens"],
                     "forgetting": _forgetting(result) if result["probe_after"] is not None else float("nan"),
                     "tuning_seconds": studies.training_seconds(spec, described),
                     "answers": result["answers"]})
    return rows


def _seeded(model: dict, seed: int) -> dict:
    """A recall's model description with the replicate's seed in its tuning configuration."""
    out = dict(model)
    if "tune" in out:
        out["tune"] = {**out["tune"], "seed": seed}
    if out["kind"] == "reader":
        out["seed"] = seed
    return out


# --- pseudo or actual forgetting (chapter "Pseudo or actual forgetting") --------------------------------

def restored_rows(base_kwargs_: dict, data: SetSpec, config: tuning.TuneConfig, seeds: list, spec,
                  label: dict) -> list:
    """One row per seed: the mean probe on known people before tuning, after it and after restoring.

    Beside it (`candidates_*`), the format-free test of the same stages: the
    share of held-out known people's facts whose true value the model scores
    highest among all candidates.
    """
    from . import restoring
    rows = []
    for seed in seeds:
        result = restoring.restored(base_spec(seed=seed, **base_kwargs_), data, replace(config, seed=seed), spec)
        rows.append({**label, "seed": seed, **{k: float(np.mean(list(result[f"probe_{k}"].values())))
                                              for k in ("before", "after", "restored")},
                     **{f"candidates_{k}": result[f"candidates_{k}"] for k in ("before", "after", "restored")}})
    return rows


def recovered_share(before: float, after: float, restored: float, minimum_loss: float = 0.02) -> float:
    """The share of the probe accuracy lost in tuning that restoring brings back; NaN when almost nothing was lost."""
    lost = before - after
    return (restored - after) / lost if lost >= minimum_loss else float("nan")


# --- what tuning does to knowledge: known and unknown examples (Gekhman et al. 2024) ---------------------

def checkpoint_rows(base_kwargs_: dict, data: SetSpec, config: tuning.TuneConfig, seeds: list, checkpoints: list,
                    label: dict, answers: dict | None = None) -> list:
    """One row per (seed, checkpoint epoch) of one configuration: fitted shares and held-out measures.

    `answers`, if given, receives {(seed, label values joined): the last checkpoint's answers}.
    """
    from . import knowledge
    rows = []
    for seed in seeds:
        result = knowledge.fit_checkpoints(base_spec(seed=seed, **base_kwargs_), data, replace(config, seed=seed),
                                           checkpoints)
        rows += [{**label, "seed": seed, **record} for record in result["checkpoints"]]
        if answers is not None:
            answers[seed, ", ".join(str(v) for v in label.values())] = result["answers"]
    return rows


def gekhman_fit(rows, measure: str = "test_accuracy", control: str | None = None) -> dict:
    """Gekhman et al.'s linear model, Acc = b0 + b_kn N_kn/|D| + b_unk N_unk/|D|, fitted by OLS (statsmodels).

    rows: a DataFrame (or list of dicts) with n_known_fitted, n_unknown_fitted,
    n_known, n_unknown and the `measure` column (a share: accuracy, or a
    hallucination rate fitted the same way), one row per checkpoint. The
    measure enters in percentage points, as accuracy does in their paper.
    Returns the coefficients, their 95% confidence intervals, R^2 and the
    number of rows; NaN for all of them when the checkpoints cannot separate
    the two shares (as many rows as coefficients, or collinear columns).

    `control` names a further column entered as it is (for example `stated`,
    the share of answers that state a value: the format learned), whose
    coefficient is returned as b_<control>: the two shares' coefficients are
    then read with it held fixed.
    """
    import pandas as pd
    import statsmodels.api as sm
    rows = pd.DataFrame(rows)
    size = (rows.n_known + rows.n_unknown).to_numpy(float)
    columns = [np.ones(len(rows)), rows.n_known_fitted / size, rows.n_unknown_fitted / size]
    names = ("b0", "b_kn", "b_unk") + ((f"b_{control}",) if control else ())
    if control:
        columns.append(rows[control].to_numpy(float))
    design = np.column_stack(columns)
    if len(rows) <= len(names) or np.linalg.matrix_rank(design) < len(names):  # too few or collinear: none
        nan = float("nan")
        return {**{n: nan for n in names}, **{f"ci_{n}": [nan, nan] for n in names}, "r2": nan, "n": len(rows)}
    fit = sm.OLS(100.0 * rows[measure].to_numpy(float), design).fit()
    low, high = fit.conf_int(0.05).T
    return {**{n: float(v) for n, v in zip(names, fit.params)},
            **{f"ci_{n}": [float(lo), float(hi)] for n, lo, hi in zip(names, low, high)},
            "r2": float(fit.rsquared), "n": len(rows)}


def early_and_converged(rows, dev: str = "dev_accuracy") -> dict:
    """{"early": row at the best development accuracy (the first such epoch), "converged": row at the last epoch}."""
    rows = sorted(rows, key=lambda r: r["epoch"])
    best = max(r[dev] for r in rows)
    return {"early": next(r for r in rows if r[dev] == best), "converged": rows[-1]}


def verdict_unknown_fitted_slower(gaps: list, margin: float = 0.1) -> dict:
    """Gekhman et al.: examples the base does not know are fitted more slowly than those it knows.

    gaps: one per seed, the mean over checkpoints and mixed sets (holding both kinds) of the fitted share of
    known examples minus that of unknown ones. Reproduced: the 95% interval over seeds above `margin`; partly:
    above 0 and below `margin`; not reproduced: at or below 0; inconclusive: it straddles either.
    """
    if not gaps:
        return {"verdict": "premise not met", "criterion": "needs a set holding both known and unknown examples",
                "numbers": {"gaps": []}}
    return interval_verdict(gaps, margin, 0.0, "the gap between the known and the unknown examples fitted",
                            f"{margin:g}",
                            f"per seed, the share of known examples fitted minus the share of unknown ones, averaged over "
                            f"checkpoints and mixed sets; reproduced when its 95% interval over seeds lies above "
                            f"{margin:g}, partly between 0 and {margin:g}, not reproduced at or below 0, inconclusive "
                            "when it straddles either")


# --- what tuning does to knowledge: conflicting answers (Ren et al. 2024) ---------------------------------

def conflict_rows(base_kwargs_: dict, share: float, size: int, config: tuning.TuneConfig, seeds: list,
                  label: dict, style: str = "simplified", answers: dict | None = None) -> list:
    """One row per seed: held-out accuracy and knowledge consistency after tuning on a conflict set.

    `answers`, if given, receives {(seed, label values and share joined): the held-out answers}.
    """
    from . import conflict
    spec = conflict.ConflictSpec(size=size, counterfactual_share=share, style=style)
    rows = []
    for seed in seeds:
        result = conflict.conflict(base_spec(seed=seed, **base_kwargs_), spec, replace(config, seed=seed))
        if answers is not None:
            answers[seed, ", ".join([*(str(v) for v in label.values()), f"{share:.0%} counterfactual"])] = \
                result["answers"]
        rows.append({**label, "seed": seed, "share": share, **{k: v for k, v in result.items() if k != "answers"}})
    return rows


def spearman(x, y) -> float:
    """Spearman's rho of two sequences; NaN (and no warning) when either has fewer than two distinct values."""
    from scipy.stats import spearmanr
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(np.unique(x)) < 2 or len(np.unique(y)) < 2:
        return float("nan")
    return float(spearmanr(x, y).statistic)


# --- a real base model on real facts (chapter "A real base model") -------------------------------


MOSTLY = 0.5  # URIAL (Lin et al. 2023): most answer tokens are the base's own top token ("most": over half)


def verdict_mostly_unshifted(estimate: float, low: float, high: float, over: str, styled_share: float | None = None) -> dict:
    """URIAL (Lin et al. 2023): most tokens of the tuned model's answers are the base's own top token (77.7%
    unshifted, 14.5% marginal, 7.8% shifted for Llama-2-7b and its chat model).

    estimate, low, high: the unshifted share and its 95% interval, `over` what (seeds, answers). Reproduced when
    the interval lies above one half, not reproduced when at or below it, inconclusive when it straddles it.
    Premise (where `styled_share` is given): the tuned model answers in the tuned style on at least half of its
    answers; a model that learned nothing would keep every token unshifted for free.
    """
    from . import stats
    if styled_share is not None and styled_share < MOSTLY:
        outcome = "premise not met"
    else:
        outcome = stats.decide(low, high, MOSTLY)
    criterion = (f"reproduced when the 95% interval ({over}) of the share of answer tokens that are the base's top "
                 f"token lies above {MOSTLY:.0%}, not reproduced when at or below it, inconclusive when it straddles it"
                 + (f"; premise: at least {MOSTLY:.0%} of the answers are in the tuned style" if styled_share is not None
                    else ""))
    return {"verdict": outcome, "criterion": criterion,
            "sentence": f"{estimate:.1%} of answer tokens are unshifted (95% interval {low:.1%} to {high:.1%} {over}); "
                        f"the claim needs most, over {MOSTLY:.0%}: {outcome}",
            "numbers": {"unshifted": estimate, "interval": [low, high], "threshold": MOSTLY, "over": over,
                        **({"styled_share": styled_share} if styled_share is not None else {})}}



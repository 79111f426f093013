"""Fault tolerance: killed builds, corrupt files, concurrent builds, bad inputs, determinism, divergence.

Everything runs on a tiny world and the tiny model (a base builds in about a
second), with the artifact cache in a temporary folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tunestudy import bases, cache, data, experiments, models, pipeline, plots, tuned, tuning

TINY = dict(seed=1, size="tiny", num_known=12, num_unknown=8, pretrain_epochs=1, num_format_docs=10)
ALPACA = Path(__file__).resolve().parent / "data" / "alpaca_small.json"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a shared 2-core machine two competing threads are many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("TUNESTUDY_CACHE", str(root))
    return root


def tiny_spec(**changes):
    return pipeline.base_spec(**{**TINY, **changes})


def logits_of(folder: Path) -> torch.Tensor:
    model, _ = models.load_pretrained(str(folder))
    ids = torch.arange(4, 40).view(2, 18)
    with torch.no_grad():
        return model(input_ids=ids).logits


def artifacts(root: Path, kind: str) -> list[Path]:
    """Complete-looking artifact folders of a kind (not locks, not tmp folders)."""
    folder = root / kind
    if not folder.exists():
        return []
    return [p for p in folder.iterdir() if p.is_dir() and ".tmp-" not in p.name]


def tmpdirs(root: Path, kind: str = "base") -> list[Path]:
    return list((root / kind).glob("*.tmp-*")) if (root / kind).exists() else []


# --- child processes ---------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import torch
    torch.set_num_threads(1)
    from tunestudy import cache, models, pipeline, tuning

    mode, count_file = sys.argv[1], sys.argv[2]
    spec = pipeline.base_spec(**json.loads(sys.argv[3]))

    original_pretrain = tuning.pretrain
    def counted_pretrain(*args, **kwargs):  # one line per real build
        with open(count_file, "a") as f:
            f.write(f"{os.getpid()}\\n")
        return original_pretrain(*args, **kwargs)
    tuning.pretrain = counted_pretrain

    original_loop = tuning.train_loop
    def slow_loop(*args, on_step=None, **kwargs):  # training that takes long enough to be interrupted
        def step(s):
            time.sleep(float(os.environ.get("STEP_SLEEP", "0")))
            if on_step is not None:
                on_step(s)
        return original_loop(*args, on_step=step, **kwargs)
    tuning.train_loop = slow_loop

    if mode == "save":  # killed while the artifact's files are being written
        original_save = models.save
        def save_then_hang(*args, **kwargs):
            original_save(*args, **kwargs)
            time.sleep(600)
        models.save = save_then_hang
    elif mode == "manifest":  # killed with every file written but before the manifest
        original_manifest = cache._write_manifest
        def hang_then_manifest(*args, **kwargs):
            time.sleep(600)
            original_manifest(*args, **kwargs)
        cache._write_manifest = hang_then_manifest

    print(pipeline.build_base(spec), flush=True)
    """
)


def start_child(tmp_path: Path, mode: str, spec: dict, step_sleep: float = 0.0) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "STEP_SLEEP": str(step_sleep), "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, str(script), mode, str(tmp_path / "builds.txt"), json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"child exited ({proc.returncode}) before the expected state")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("timed out waiting for the child")


def build_count(tmp_path: Path) -> int:
    path = tmp_path / "builds.txt"
    return len(path.read_text().split()) if path.exists() else 0


# --- killed builds -----------------------------------------------------------------------------

@pytest.mark.parametrize("moment", ["train", "save", "manifest"])
def test_sigkill_leaves_no_usable_partial_artifact(moment, cache_dir, tmp_path, monkeypatch):
    """SIGKILL during training / file writing / before the manifest: nothing usable, and a rerun is exact."""
    spec_kwargs = {**TINY, "pretrain_epochs": 8} if moment == "train" else TINY
    spec = pipeline.base_spec(**spec_kwargs)
    final = cache_dir / "base" / cache.artifact_key("base", spec.params(), bases.SOURCES)
    proc = start_child(tmp_path, moment, spec_kwargs, step_sleep=0.5 if moment == "train" else 0.0)
    try:
        if moment == "train":
            wait_for(lambda: tmpdirs(cache_dir), proc)
            wait_for(lambda: build_count(tmp_path) == 1, proc)  # inside pretraining
            time.sleep(0.5)
        elif moment == "save":
            wait_for(lambda: [d for d in tmpdirs(cache_dir) if (d / "model.safetensors").exists()], proc)
        else:
            wait_for(lambda: [d for d in tmpdirs(cache_dir) if (d / "pretrain_log.json").exists()], proc)
        assert proc.poll() is None, "the child finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not final.exists()
    leftovers = tmpdirs(cache_dir)
    assert leftovers, "the killed build should have left its tmp folder behind"
    for tmp in leftovers:
        assert not (tmp / cache.MANIFEST).exists()
        assert cache.verify(tmp) is not None

    rebuilt = pipeline.build_base(spec)  # the rerun clears the stale tmp folder and builds afresh
    assert rebuilt == final and cache.verify(rebuilt) is None
    assert not tmpdirs(cache_dir)
    other = tmp_path / "uninterrupted"
    monkeypatch.setenv("TUNESTUDY_CACHE", str(other))
    reference = pipeline.build_base(spec)
    assert reference.parent.parent == other
    assert torch.equal(logits_of(rebuilt), logits_of(reference))


# --- corrupt files -----------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "delete_manifest"])
def test_corrupt_cached_file_is_detected_and_rebuilt(damage, cache_dir, caplog):
    spec = tiny_spec()
    folder = pipeline.build_base(spec)
    original = logits_of(folder)
    weights = folder / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "flip_byte":
        raw = bytearray(weights.read_bytes())
        raw[-10] ^= 0xFF  # inside the float data: same size, loads fine, wrong numbers
        weights.write_bytes(bytes(raw))
    else:
        (folder / cache.MANIFEST).unlink()
    problem = cache.verify(folder)
    assert problem is not None
    if damage != "delete_manifest":
        assert "model.safetensors" in problem

    with caplog.at_level("WARNING", logger="tunestudy.cache"):
        again = pipeline.build_base(spec)
    assert again == folder
    assert "corrupt" in caplog.text and "rebuilding" in caplog.text
    assert cache.verify(again) is None
    assert torch.equal(logits_of(again), original)


# --- concurrent builds -------------------------------------------------------------------------

def test_two_processes_build_once_and_share(cache_dir, tmp_path):
    procs = [start_child(tmp_path, "plain", TINY, step_sleep=1.0) for _ in range(2)]
    outs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        outs.append(out.strip())
    assert build_count(tmp_path) == 1
    assert outs[0] == outs[1]
    folder = Path(outs[0])
    assert folder.parent.parent == cache_dir
    assert cache.verify(folder) is None
    assert not tmpdirs(cache_dir)


# --- bad inputs --------------------------------------------------------------------------------

def write(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / "inputs" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def good_base(**changes):
    kwargs = dict(size="tiny", num_known=12, num_unknown=8, num_paraphrases=2, pretrain_epochs=1,
                  pretrain_lr=1e-2, smoke=False, seeds=[0])
    return lambda: experiments.base_kwargs(**{**kwargs, **changes})


def good_tune(**changes):
    kwargs = dict(method="lora", lr=1e-3, tune_epochs=1.0)
    return lambda: experiments.tune_config(**{**kwargs, **changes})


# (case id, call, words the message must contain)
BAD_INPUTS = [
    ("base_size", good_base(size="huge"), ["size", "tiny", "huge"]),
    ("base_num_known_float", good_base(num_known=2.5), ["num_known", "integer"]),
    ("base_pretrain_epochs_zero", good_base(pretrain_epochs=0), ["pretrain_epochs", ">= 1"]),
    ("base_pretrain_lr_big", good_base(pretrain_lr=2.0), ["pretrain_lr", "between 0 and 1"]),
    ("base_pretrain_lr_text", good_base(pretrain_lr="fast"), ["pretrain_lr", "between 0 and 1"]),
    ("base_model_not_an_id", good_base(base_model="two words"), ["base_model", "synthetic", "hub id"]),
    ("base_model_missing_folder", good_base(base_model="/nonexistent/model"), ["base_model", "config.json"]),
    ("set_instruction_file_type", lambda: experiments.set_spec("known", 10, instruction_file=3),
     ["instruction_file", "Alpaca JSON"]),
    ("tune_method", good_tune(method="qlora"), ["method", "lora", "full", "qlora"]),
    ("tune_lr_big", good_tune(lr=5.0), ["lr", "between 0 and 1"]),
    ("tune_lr_text", good_tune(lr="fast"), ["lr", "between 0 and 1"]),
    ("tune_rank_zero", good_tune(lora_rank=0), ["lora_rank", "positive"]),
    ("tune_loss_on", good_tune(loss_on="prompt"), ["loss_on", "response", "value"]),
    ("set_kind", lambda: experiments.set_spec("famous", 10), ["kind", "known", "famous"]),
    ("set_style", lambda: experiments.set_spec("known", 10, style="poetic"), ["style", "simplified", "poetic"]),
    ("set_size", lambda: experiments.set_spec("known", 0), ["set_size", ">= 1"]),
    ("int_list", lambda: experiments.parse_int_list("capacity_ranks", "1,x,16"), ["capacity_ranks", "integers"]),
    ("int_list_zero", lambda: experiments.parse_int_list("scale_factors", "0,2"), ["scale_factors", "positive"]),
    ("float_list", lambda: experiments.parse_float_list("full_lrs", "1e-3,2"), ["full_lrs", "between 0 and 1"]),
    ("choices_unknown_name", lambda: experiments.parse_choices("long_sets", "known,famous", ("known", "unknown"),
                                                               required=("unknown",)), ["long_sets", "known, unknown", "famous"]),
    ("choices_missing_required", lambda: experiments.parse_choices("long_sets", "known", ("known", "unknown"),
                                                                   required=("unknown",)), ["long_sets", "must include unknown"]),
    ("seeds_negative", lambda: experiments.seeds_for(-1, 3), ["seed", ">= 0"]),
    ("num_seeds_zero", lambda: experiments.seeds_for(0, 0), ["num_seeds", ">= 1"]),
    ("model_missing_folder", lambda: models.load_pretrained("/nonexistent/tunestudy-model"),
     ["base_model", "config.json", "save_pretrained"]),
    ("model_empty_string", lambda: models.load_pretrained(""), ["base_model", "non-empty"]),
]


@pytest.mark.parametrize("call,words", [(c, w) for _, c, w in BAD_INPUTS], ids=[i for i, _, _ in BAD_INPUTS])
def test_bad_parameter_one_line_error(call, words, cache_dir):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and message.strip()
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"
    assert not cache_dir.exists() or not any(cache_dir.iterdir())


def test_model_folder_without_config(cache_dir, tmp_path):
    folder = tmp_path / "not_a_model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\0" * 10)
    with pytest.raises(ValueError) as info:
        models.load_pretrained(str(folder))
    message = str(info.value)
    assert "\n" not in message and "config.json" in message and str(folder) in message
    assert not cache_dir.exists()


@pytest.mark.parametrize("name, value", [("tune_epochs", "many"), ("lora_rank", "two")],
                         ids=["tune_epochs_text", "lora_rank_text"])
def test_bad_parameter_types_name_the_parameter(name, value, cache_dir):
    with pytest.raises(ValueError, match=rf"^{name} must be ") as info:
        good_tune(**{name: value})()
    assert "\n" not in str(info.value)


def test_fractional_lora_rank_refused(cache_dir):
    with pytest.raises(ValueError, match=r"^lora_rank must be a positive integer, got 1\.5$"):
        good_tune(lora_rank=1.5)()


def cli(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunestudy", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=120)


@pytest.mark.parametrize("args,words", [
    (["run", "no_such_chapter"], ["no_such_chapter", "allowed", "01_world"]),
    (["run", "01_world", "-p", "sed", "7"], ["'sed'", "allowed", "seed"]),
], ids=["unknown_chapter", "unknown_parameter"])
def test_cli_bad_input_one_line(args, words, cache_dir, tmp_path):
    out_dir = tmp_path / "out"
    result = cli(*args, "--output-dir", str(out_dir), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tunestudy: error:"), result.stderr
    for word in words:
        assert word in lines[0]
    assert "Traceback" not in result.stderr
    assert not out_dir.exists() and not cache_dir.exists()


def test_cli_bad_value_one_line(cache_dir, tmp_path):
    result = cli("run", "01_world", "-p", "num_seeds", "abc", "--smoke", "--output-dir", str(tmp_path / "out"),
                 cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip() and "Kernel is running over TCP" not in line]
    assert result.returncode != 0 and "num_seeds must be an integer" in result.stderr
    assert len(lines) == 1, result.stderr
    assert not cache_dir.exists()


# --- instruction JSON files --------------------------------------------------------------------

def test_alpaca_sample_loads():
    examples = data.load_alpaca(ALPACA)
    assert len(examples) == 5
    assert all(set(e) == {"instruction", "input", "output"} for e in examples)
    assert all(isinstance(v, str) for e in examples for v in e.values())
    assert examples[3]["input"] == ""  # optional field defaults to empty
    assert examples[2]["input"].startswith("Lena Fisk")


ALPACA_BAD = [
    ("missing_file", None, ["does not exist", "instruction"]),
    ("bad_encoding", '[{"instruction": "caf\xe9", "output": "x"}]'.encode("latin-1"), ["not UTF-8"]),
    ("invalid_json", '[{"instruction": "a", "output": "b",]', ["not valid JSON", "line 1"]),
    ("not_a_list", '{"instruction": "a", "output": "b"}', ["dict", "not a list"]),
    ("empty_list", "[]", ["empty list", "at least one"]),
    ("item_not_object", '[{"instruction": "a", "output": "b"}, "oops"]', ["item 1", "not an object"]),
    ("missing_instruction", '[{"instruction": "a", "output": "b"}, {"output": "c"}]', ["item 1", "'instruction'"]),
    ("missing_output", '[{"instruction": "a", "output": "b"}, {"instruction": "a"}, {}]', ["item 1", "'output'"]),
    ("non_string_output", '[{"instruction": "a", "output": 5}]', ["item 0", "'output'", "int", "not a string"]),
    ("non_string_input", '[{"instruction": "a", "input": ["x"], "output": "b"}]', ["item 0", "'input'", "list"]),
    ("empty_instruction", '[{"instruction": "  ", "output": "b"}]', ["item 0", "'instruction'", "empty"]),
]


@pytest.mark.parametrize("content,words", [(c, w) for _, c, w in ALPACA_BAD], ids=[i for i, _, _ in ALPACA_BAD])
def test_alpaca_bad_file_one_line_error(content, words, tmp_path, cache_dir):
    path = tmp_path / "missing.json" if content is None else write(tmp_path, "set.json", content)
    with pytest.raises(ValueError) as info:
        data.load_alpaca(path)
    message = str(info.value)
    assert "\n" not in message and path.name in message
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"
    assert not cache_dir.exists()


def test_alpaca_accepts_utf8_bom(tmp_path):
    path = write(tmp_path, "bom.json", b"\xef\xbb\xbf" + '[{"instruction": "caf\u00e9?", "output": "oui"}]'.encode())
    assert data.load_alpaca(path)[0]["instruction"] == "caf\u00e9?"


# --- determinism -------------------------------------------------------------------------------

def test_write_results_same_bytes(tmp_path):
    results = {"b": [np.float32(0.1), np.int64(3), float("nan")], "a": {"z": np.bool_(True), "y": 1e-12},
               "headline": "LoRA shifts 3% of tokens", "per_seed": [{"seed": 0, "x": 0.30000000000000004}]}
    first = plots.write_results("ch", results, tmp_path / "one").read_bytes()
    second = plots.write_results("ch", dict(reversed(list(results.items()))), tmp_path / "two").read_bytes()
    third = plots.write_results("ch", results, tmp_path / "one").read_bytes()  # overwrite in place
    assert first == second == third
    assert b"NaN" not in first and json.loads(first)["b"][2] is None
    assert not list((tmp_path / "one").glob("*.tmp-*"))


TIMING_KEYS = ("seconds",)  # wall-clock durations: the one thing a rerun cannot reproduce


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


@pytest.fixture(scope="module")
def two_evaluations(tmp_path_factory):
    """The same tiny evaluation from two empty caches: (result.json bytes, result) per run."""
    spec = tiny_spec()
    data_spec = pipeline.SetSpec(kind="mix", size=16)
    config = tuning.TuneConfig(method="lora", steps=3)
    outputs = []
    with pytest.MonkeyPatch.context() as mp:
        for run in ("a", "b"):
            root = tmp_path_factory.mktemp(f"eval_{run}")
            mp.setenv("TUNESTUDY_CACHE", str(root))
            result = pipeline.evaluate(spec, data_spec, config)
            folders = artifacts(root, "evaluation")
            assert len(folders) == 1
            outputs.append(((folders[0] / "result.json").read_bytes(), result))
    return outputs


def test_evaluate_identical_from_two_empty_caches(two_evaluations):
    """Every number of the evaluation (answers, per-token KL, ranks, probes, losses) is bit-identical."""
    (_, a), (_, b) = two_evaluations
    assert a["answers"] and a["positions"]["kl"]
    assert cache.canonical_json(without_timing(a)) == cache.canonical_json(without_timing(b))


def test_evaluate_json_byte_identical(two_evaluations):
    (first, _), (second, _) = two_evaluations
    assert first == second


def test_in_context_pass_only_when_asked_and_equal_to_one_direct_pass(cache_dir):
    """evaluate(icl=True) adds the in-context base's KL and ranks of the same responses, in the same order."""
    from tunestudy import evaluation, metrics
    spec, data_spec, config = tiny_spec(), pipeline.SetSpec(kind="mix", size=16), tuning.TuneConfig(method="lora", steps=3)
    plain = pipeline.evaluate(spec, data_spec, config)
    assert "kl_icl" not in plain["positions"] and artifacts(cache_dir, "icl_shift") == []
    with_icl = pipeline.evaluate(spec, data_spec, config, icl=True)
    assert {k: v for k, v in with_icl["positions"].items() if "_icl" not in k} == plain["positions"]
    # directly: the tuned model's greedy responses, scored against the base shown the first tuning examples
    from tunestudy import world as W
    world = W.generate_world(spec.world)
    questions = pipeline.eval_questions(world)
    base_model, tokenizer = pipeline.load_base(spec)
    tuned_model, _ = pipeline.load_tuned(spec, data_spec, config)
    tuning_set = pipeline.make_set(world, data_spec, config.seed)
    budget = evaluation.token_budget(tokenizer, [e.response for e in tuning_set], minimum=evaluation.MAX_NEW_TOKENS)
    prompt_ids, responses = metrics.greedy_responses(tuned_model, tokenizer, [q.prompt for q in questions], budget)
    context = evaluation.icl_prefix(tuning_set)
    shifts = metrics.shift_analysis(base_model, tuned_model, prompt_ids, responses, tokenizer.pad_token_id,
                                    base_prompts=[tokenizer(context + q.prompt)["input_ids"] for q in questions])
    assert with_icl["positions"]["kl_icl"] == [float(v) for s in shifts for v in s["kl"]]
    assert with_icl["positions"]["base_rank_icl"] == [int(v) for s in shifts for v in s["base_rank"]]
    assert len(with_icl["positions"]["kl_icl"]) == len(plain["positions"]["kl"])


# --- divergence --------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["lora", "full"])
def test_nan_loss_stops_without_artifact(method, cache_dir, monkeypatch):
    spec = tiny_spec()
    pipeline.build_base(spec)
    original_load = pipeline.load_base

    def poisoned_load(*args, **kwargs):  # the base now outputs NaN logits, as a diverged run would
        model, tokenizer = original_load(*args, **kwargs)
        model.lm_head.register_forward_hook(lambda module, inputs, output: output * float("nan"))
        return model, tokenizer

    monkeypatch.setattr(tuned, "load_base", poisoned_load)  # the name the tuning step calls
    config = tuning.TuneConfig(method=method, steps=3)
    with pytest.raises(FloatingPointError) as info:
        pipeline.tune(spec, pipeline.SetSpec(kind="known", size=16), config)
    message = str(info.value)
    assert "\n" not in message and "nan" in message and "learning rate" in message and "Nothing was saved" in message
    assert artifacts(cache_dir, "tuned") == [] and tmpdirs(cache_dir, "tuned") == []


def test_absurd_lr_past_validation_stops_without_artifact(cache_dir, monkeypatch):
    """With the lr check switched off, lr=1e6 diverges within a few steps and is refused, not cached."""
    spec = tiny_spec()
    monkeypatch.setattr(tuning.TuneConfig, "validate", lambda self, names=None: None)
    config = tuning.TuneConfig(method="full", lr=1e30, steps=20)
    with pytest.raises(FloatingPointError, match="loss became"):
        pipeline.tune(spec, pipeline.SetSpec(kind="known", size=16), config)
    assert artifacts(cache_dir, "tuned") == [] and tmpdirs(cache_dir, "tuned") == []


def test_methods_at_sweep_edge():
    lrs = {"lora": [1e-2, 3e-2, 6e-2], "full": [3e-4, 1e-3, 3e-3], "one": [1e-3]}
    assert experiments.methods_at_sweep_edge(lrs, {"lora": 3e-2, "full": 1e-3, "one": 1e-3}) == []
    assert experiments.methods_at_sweep_edge(lrs, {"lora": 6e-2, "full": 3e-4, "one": 1e-3}) == ["lora", "full"]


def test_parse_choices_keeps_the_allowed_order():
    assert experiments.parse_choices("long_sets", " unknown ,known", ("known", "unknown")) == ["known", "unknown"]
    assert experiments.parse_choices("long_sets", "unknown", ("known", "unknown"), required=("unknown",)) == ["unknown"]

"""The real-base chapter's pieces: the fact split and sets, the summary against slow counts, the verdict rules on
hand-made numbers, bad input, and the chapter on a tiny local model and a facts file with smoke=True."""

import json
import math

import pytest

from tunestudy import experiments as X, realbase, realfacts, runs, slick


def labelled(n_per=6):
    facts = [{"instruction": f"Q {r} {i}?", "output": f"a{i}", "relation": r, "subject": f"{r}{i:02d}"}
             for r in ("capital", "currency") for i in range(2 * n_per)]
    categories = ["HighlyKnown", "Unknown", "MaybeKnown"]
    records = [{"category": categories[i % 3], "p_greedy": 0.0} for i, _ in enumerate(facts)]
    return facts, records


def test_the_split_halves_each_relation_and_category_and_never_overlaps():
    facts, records = labelled()
    split = realbase.split_facts(records, facts)
    tune = {(f["relation"], f["subject"]) for f in split["tune"]}
    held = {(f["relation"], f["subject"]) for f in split["heldout"]}
    assert not tune & held and len(tune) + len(held) == len(facts)
    for relation in ("capital", "currency"):
        for category in ("HighlyKnown", "Unknown", "MaybeKnown"):
            group = [f for f in facts if f["relation"] == relation
                     and records[facts.index(f)]["category"] == category]
            in_tune = [f for f in split["tune"] if f["relation"] == relation and f["category"] == category]
            assert len(in_tune) == len(group) // 2
    assert realbase.split_facts(records, facts) == split  # fixed: the same held-out facts for every run


def test_a_tuning_set_draws_its_categories_by_seed_and_names_set_size_when_too_large():
    facts, records = labelled()
    pool = realbase.split_facts(records, facts)["tune"]
    a, b = (realbase.tuning_set(pool, ("HighlyKnown",), 3, s) for s in (0, 1))
    assert all(f["category"] == "HighlyKnown" for f in a + b) and len(a) == 3
    assert realbase.tuning_set(pool, ("HighlyKnown",), 3, 0) == a
    with pytest.raises(ValueError, match=r"set_size must be at most \d+ for categories Unknown") as info:
        realbase.tuning_set(pool, ("Unknown",), 99, 0)
    assert "\n" not in str(info.value)


def test_pick_facts_rejects_an_unknown_relation_and_too_many_facts():
    facts, _ = labelled()
    with pytest.raises(ValueError, match="'capitol' is not a relation of the facts; allowed: capital, currency"):
        realbase.pick_facts(facts, {"capitol": 2})
    with pytest.raises(ValueError, match="at most 12"):
        realbase.pick_facts(facts, {"capital": 13})
    assert len(realbase.pick_facts(facts, {"capital": 4, "currency": 2})) == 6


def test_a_relation_name_that_does_not_exist_is_one_line():
    with pytest.raises(ValueError) as info:
        realfacts.check_relations("capital,moons")
    assert "moons" in str(info.value) and "capital" in str(info.value) and "\n" not in str(info.value)


def test_a_facts_file_without_relation_names_facts_file(tmp_path):
    path = tmp_path / "facts.json"
    path.write_text(json.dumps([{"instruction": "Q?", "output": "A", "subject": "x"}]))
    with pytest.raises(ValueError) as info:
        realbase.load_fact_file(str(path))
    assert "facts_file" in str(info.value) and "relation" in str(info.value) and "\n" not in str(info.value)


def test_shift_shares_count_ranks_as_urial():
    shares = realbase.shift_shares([1, 1, 1, 2, 3, 4, 10, 1])
    assert shares == {"unshifted": 4 / 8, "marginal": 2 / 8, "shifted": 2 / 8}
    assert all(math.isnan(v) for v in realbase.shift_shares([]).values())


def test_bfloat16_precision_autocasts_the_matmuls_and_float32_leaves_them():
    import torch
    layer, x = torch.nn.Linear(4, 3), torch.randn(2, 4)
    with realbase.precision_context("bfloat16"):
        assert layer(x).dtype == torch.bfloat16
    with realbase.precision_context("float32"):
        assert layer(x).dtype == torch.float32
    assert layer.weight.dtype == torch.float32  # mixed precision: the weights stay float32


@pytest.mark.parametrize("bad", ["float16", "bf16", "", None, "Auto"])
def test_a_bad_precision_is_one_line_naming_precision(bad):
    with pytest.raises(ValueError, match=r"^precision must be one of auto, float32, bfloat16, got ") as error:
        realbase.check_precision(bad)
    assert "\n" not in str(error.value)


AMX_CPU = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f amx_bf16 amx_tile\n"
AVX512_BF16_CPU = "flags\t\t: fpu avx2 avx512f avx512_bf16\n"
AVX2_CPU = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 fma avx avx2\n"


@pytest.mark.parametrize("cpuinfo, expected", [(AMX_CPU, "bfloat16"), (AVX512_BF16_CPU, "bfloat16"),
                                               (AVX2_CPU, "float32"), ("", "float32")])
def test_auto_precision_is_bfloat16_only_where_the_cpu_multiplies_it_natively(cpuinfo, expected, monkeypatch):
    from tunestudy import models
    monkeypatch.setattr(models, "device", lambda: __import__("torch").device("cpu"))
    assert realbase.check_precision("auto", cpuinfo) == expected
    assert realbase.check_precision("float32", cpuinfo) == "float32"  # a named precision is kept as it is
    assert realbase.check_precision("bfloat16", cpuinfo) == "bfloat16"


def test_cpu_flags_reads_the_flags_line():
    assert realbase.cpu_flags(AVX2_CPU) == {"fpu", "sse2", "fma", "avx", "avx2"}
    assert realbase.cpu_flags("model name\t: x\n") == set()


def test_the_chapter_stops_on_a_bad_precision_before_any_work(tmp_path, monkeypatch):
    """The notebook checks `precision` before it builds a model or labels a fact: nothing is cached."""
    import papermill
    monkeypatch.setenv("TUNESTUDY_CACHE", str(tmp_path / "cache"))
    with pytest.raises(papermill.PapermillExecutionError, match="precision must be one of"):
        runs.run_chapter("14_real_base", overrides={"precision": "float16"}, output_dir=tmp_path / "book", smoke=True)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.json"))
    assert not (tmp_path / "book" / "14_real_base.ipynb").exists()


def test_the_chapter_runs_on_a_local_model_folder_and_a_facts_file(tmp_path, monkeypatch):
    """smoke=True on a save_pretrained folder (the stand-in, built here) and an Alpaca JSON facts file."""
    monkeypatch.setenv("TUNESTUDY_CACHE", str(tmp_path / "cache"))
    facts_file = realfacts.write_facts(tmp_path / "facts.json", ["capital", "currency", "element_symbol"])
    chosen = realbase.pick_facts(realbase.load_fact_file(str(facts_file)),
                                 {"capital": 8, "currency": 8, "element_symbol": 3})
    folder = realbase.stand_in_model(chosen)
    overrides = {"base_model": folder, "facts_file": str(facts_file), "tuned_relations": "capital,currency",
                 "other_relations": "element_symbol"}
    runs.run_chapter("14_real_base", overrides=overrides, output_dir=tmp_path / "book", smoke=True)
    results = json.loads((tmp_path / "book" / "results" / "14_real_base.json").read_text())
    assert results["parameters"]["tuned_relations"] == ["capital", "currency"]
    assert set(results["category_shares"]) == {"capital", "currency", "element_symbol", "all"}
    rates = len(results["parameters"]["lora_lrs"]) + len(results["parameters"]["full_lrs"])
    per_seed = rates + 2 + 2  # the sweep on the known set; the unknown set and the bare answers at the picks
    assert len(results["by_run"]) == per_seed * len(results["parameters"]["seeds"])
    assert {r["set"] for r in results["by_run"]} == {"known facts", "unknown facts"}
    assert {r["answers"] for r in results["by_run"]} == {"styled", "bare"}
    # per seed and method: the pick's sweep run, its unknown-set run and its bare-answers run
    assert sum(r["picked"] for r in results["by_run"]) == 2 * 3 * len(results["parameters"]["seeds"])


def test_a_labelling_on_the_stand_in_matches_a_hand_computation(tmp_path, monkeypatch):
    """The cached labels equal slick.label_facts run directly, and the categories follow the greedy answers."""
    monkeypatch.setenv("TUNESTUDY_CACHE", str(tmp_path / "cache"))
    facts = realbase.pick_facts(realfacts.build_facts(["element_symbol"]), {"element_symbol": 6})
    folder = realbase.stand_in_model(facts)
    load_from, weights = realbase.resolve_model(folder)
    spec = realbase.LabelSpec(model=weights, facts=tuple((f["relation"], f["subject"], f["output"]) for f in facts),
                              num_prompts=2, shots=2)
    cached = realbase.labels(load_from, spec, facts)
    from tunestudy import metrics, models
    model, tokenizer = models.load_pretrained(load_from)
    for fact, record in zip(facts, cached):
        prompts = slick.fewshot_prompts(fact, facts, 2, 2, 0)
        budget = max(len(tokenizer(" " + f["output"], add_special_tokens=False)["input_ids"]) for f in facts) + 1
        _, responses = metrics.greedy_responses(model, tokenizer, prompts, budget)
        right = [slick.answer_matches(t, fact["output"]) for t in tokenizer.batch_decode(responses, skip_special_tokens=True)]
        assert record["p_greedy"] == sum(right) / 2 and record["category"] == slick.category(right, [])
    assert realbase.labels(load_from, spec, facts) == cached


@pytest.mark.parametrize("answer, truth, expected", [("Paris", "Paris", True), ("The capital is Paris.", "Paris", True),
                                                     ("Parisian", "Paris", False), ("1926", "26", False),
                                                     ("It is 26.", "26", True), ("new delhi", "New Delhi", True)])
def test_an_answer_states_the_truth_as_a_whole_word(answer, truth, expected):
    assert realbase.states(answer, truth) is expected


@pytest.mark.parametrize("answer, aliases, expected", [
    ("It is in the United States of America.", [], True), ("It is in the USA.", ["United States of America"], False),
    ("Washington, D.C. is the capital.", [], False), ("It is in America.", ["United States of America"], False)])
def test_an_answer_states_the_truth_through_an_alias_or_not(answer, aliases, expected):
    assert realbase.states(answer, "United States", aliases) is expected
    assert realbase.states("The capital is Washington, D.C.", "Washington D.C.")


def test_a_facts_file_with_bad_aliases_names_facts_file(tmp_path):
    item = {"instruction": "Q?", "input": "", "output": "A", "relation": "r", "subject": "s", "aliases": "A2"}
    path = tmp_path / "facts.json"
    path.write_text(json.dumps([item]))
    with pytest.raises(ValueError) as error:
        realbase.load_fact_file(str(path))
    assert str(error.value).startswith(f"facts_file {str(path)!r}: item 0 has aliases") and "\n" not in str(error.value)
    path.write_text(json.dumps([{**item, "aliases": ["A2"]}]))
    assert realbase.load_fact_file(str(path))[0]["aliases"] == ["A2"]


def test_verdict_mostly_unshifted_reaches_every_outcome_and_needs_the_style():
    assert X.verdict_mostly_unshifted(0.777, 0.70, 0.85, "over 3 seeds")["verdict"] == "reproduced"
    assert X.verdict_mostly_unshifted(0.55, 0.45, 0.65, "over 3 seeds")["verdict"] == "inconclusive"
    assert X.verdict_mostly_unshifted(0.3, 0.2, 0.4, "over 3 seeds")["verdict"] == "not reproduced"
    assert X.verdict_mostly_unshifted(1.0, 1.0, 1.0, "over 3 seeds", styled_share=0.0)["verdict"] == "premise not met"

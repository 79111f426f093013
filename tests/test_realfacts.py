"""The real-fact set (built offline from packages) and the SliCK labels a base gives its facts."""

import json
import math

import pytest
import torch

from tunestudy import models, realfacts as R, slick as S, tuning


# --- the fact set ------------------------------------------------------------------------------------------

def test_fact_set_is_byte_identical_across_two_builds(tmp_path):
    first = R.write_facts(tmp_path / "a" / "facts.json").read_bytes()
    second = R.write_facts(tmp_path / "b" / "facts.json").read_bytes()
    assert first == second
    facts = json.loads(first)
    assert len(facts) >= 1000 and {f["relation"] for f in facts} == set(R.RELATIONS)
    assert all(f["instruction"] and f["output"].strip() and f["input"] == "" for f in facts)
    assert len({(f["relation"], f["subject"]) for f in facts}) == len(facts)
    assert {"instruction": "What is the capital of France?", "input": "", "output": "Paris", "relation": "capital",
            "subject": "France"} in facts
    assert {"instruction": "What is the atomic number of Iron?", "input": "", "output": "26",
            "relation": "atomic_number", "subject": "Iron"} in facts


def test_fact_set_loads_with_datasets(tmp_path):
    path = R.write_facts(tmp_path / "facts.json", "element_symbol,atomic_number")
    dataset = R.load_facts(path)
    assert dataset.num_rows == 2 * 118 and dataset[0] == json.loads(path.read_text())[0]


@pytest.mark.parametrize("relations", ["capitol", "capital,", "", ["capital", "moons"]])
def test_unknown_relation_is_a_one_line_error(relations):
    with pytest.raises(ValueError) as error:
        R.check_relations(relations)
    message = str(error.value)
    assert message.startswith("relations ") and "allowed (comma-separated): capital, currency" in message
    assert "\n" not in message


# --- SliCK: the rule and its parts, by hand --------------------------------------------------------------------

@pytest.mark.parametrize("greedy, sampled, expected", [
    ([True, True, True], [], "HighlyKnown"), ([True, False, True], [], "MaybeKnown"),
    ([False, False], [False, True], "WeaklyKnown"), ([False, False], [False, False], "Unknown"),
    ([False], [], "Unknown"), ([], [], "Unknown")])
def test_category_rule(greedy, sampled, expected):
    assert S.category(greedy, sampled) == expected


@pytest.mark.parametrize("text, truth, expected", [
    (" Paris\n\nQ: next", "Paris", True), ("paris.", "Paris", True), (" Parisian", "Paris", False),
    ("Lima", "Paris", False), (" 26 Q : What", "26", True), (" 260", "26", False), ("New York City", "New York", True)])
def test_answer_matches(text, truth, expected):
    assert S.answer_matches(text, truth) is expected


@pytest.mark.parametrize("text, truth, aliases, expected", [
    (" Washington, D.C.\n", "Washington D.C.", [], True), (" Eswatini", "Swaziland", ["Eswatini"], True),
    (" Eswatinian", "Swaziland", ["Eswatini"], False), (" Mbabane", "Swaziland", ["Eswatini"], False),
    (" côte d'ivoire", "Ivory Coast", ["Côte d'Ivoire"], True), (" Côte", "Ivory Coast", ["Côte d'Ivoire"], False)])
def test_answer_matches_an_alias_and_ignores_punctuation(text, truth, aliases, expected):
    assert S.answer_matches(text, truth, aliases) is expected


def test_city_facts_accept_the_countrys_other_names_but_not_its_codes():
    facts = {f["subject"]: f for f in R.build_facts(["city_country"])}
    aliases = R.country_aliases()
    assert "United States of America" in aliases["United States"] and "Eswatini" in aliases["Swaziland"]
    assert all(len(a) >= R.MIN_ALIAS for names in aliases.values() for a in names)
    assert "USA" not in aliases["United States"] and "US" not in aliases["United States"]
    with_aliases = [f for f in facts.values() if f.get("aliases")]
    assert with_aliases and all(f["aliases"] == aliases[f["output"]] for f in with_aliases)
    assert not any("aliases" in f for f in R.build_facts(["capital", "element_symbol"]))


FACTS = [{"instruction": f"What is the code of {s}?", "input": "", "output": o, "relation": r, "subject": s}
         for r, pairs in (("code", [("alpha", "one"), ("beta", "two"), ("gamma", "three"), ("delta", "four"),
                                    ("eps", "five"), ("zeta", "six")]),
                          ("rank", [("alpha", "ten"), ("beta", "nine")]))
         for s, o in pairs]


def test_fewshot_prompts_draw_other_facts_of_the_relation():
    prompts = S.fewshot_prompts(FACTS[0], FACTS, shots=3, num_prompts=4, seed=0)
    assert len(prompts) == 4 and prompts == S.fewshot_prompts(FACTS[0], FACTS, 3, 4, 0)
    for prompt in prompts:
        assert prompt.endswith("Q: What is the code of alpha?\nA:") and prompt.count("Q: ") == 4
        assert "code of alpha?\nA: one" not in prompt and "ten" not in prompt  # not itself, not another relation
    with pytest.raises(ValueError, match="relation 'rank' has 2 facts; shots=3 needs at least 4"):
        S.fewshot_prompts(FACTS[6], FACTS, shots=3, num_prompts=1, seed=0)


def test_category_shares_by_hand():
    labels = [{"relation": "a", "category": "HighlyKnown"}, {"relation": "a", "category": "Unknown"},
              {"relation": "b", "category": "Unknown"}, {"relation": "b", "category": "Unknown"}]
    shares = S.category_shares(labels)
    assert shares["a"] == {"HighlyKnown": 0.5, "MaybeKnown": 0.0, "WeaklyKnown": 0.0, "Unknown": 0.5}
    assert shares["all"]["Unknown"] == 0.75 and set(shares) == {"a", "b", "all"}


# --- SliCK on a tiny local model, against one prompt at a time -------------------------------------------------

@pytest.fixture(scope="module")
def tiny_knower():
    """A tiny model trained on few-shot lines of the first facts: it knows some facts and not others."""
    facts = [f for f in FACTS if f["relation"] == "code"]
    texts = [f"Q: {f['instruction']}\nA: {f['output']}" for f in facts]
    tokenizer = models.train_tokenizer(texts)
    model = models.build_model("tiny", len(tokenizer), seed=0)
    docs = ["\n\n".join(texts[:3])] * 40  # the first three facts only, always in this order
    tuning.pretrain(model, tokenizer, docs, tuning.PretrainConfig(size="tiny", epochs=20, lr=3e-3, batch_size=4,
                                                                    block_size=32, seed=0))
    return model.eval(), tokenizer, facts


def slow_label(model, tokenizer, fact, facts, num_prompts, shots, seed):
    greedy = []
    for prompt in S.fewshot_prompts(fact, facts, shots, num_prompts, seed):
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=3, pad_token_id=tokenizer.pad_token_id)
        greedy.append(S.answer_matches(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True),
                                       fact["output"]))
    return S.category(greedy, []), sum(greedy) / len(greedy)


def test_labels_equal_a_hand_computation_one_prompt_at_a_time(tiny_knower):
    model, tokenizer, facts = tiny_knower
    labels = S.label_facts(model, tokenizer, facts, num_prompts=3, shots=2, seed=1)
    expected = [slow_label(model, tokenizer, f, facts, 3, 2, 1) for f in facts]
    assert [(r["category"], r["p_greedy"]) for r in labels] == expected
    assert len({r["category"] for r in labels}) > 1  # some facts known, some not: the comparison can fail
    assert all(math.isnan(r["p_sample"]) for r in labels)


def test_sampling_decides_only_the_facts_with_no_right_greedy_answer(tiny_knower):
    model, tokenizer, facts = tiny_knower
    labels = S.label_facts(model, tokenizer, facts, num_prompts=3, shots=2, num_samples=4, seed=1)
    for r in labels:
        if r["p_greedy"] > 0:
            assert math.isnan(r["p_sample"]) and r["category"] in ("HighlyKnown", "MaybeKnown")
        else:
            assert not math.isnan(r["p_sample"])
            assert r["category"] == ("WeaklyKnown" if r["p_sample"] > 0 else "Unknown")
    again = S.label_facts(model, tokenizer, facts, num_prompts=3, shots=2, num_samples=4, seed=1)
    assert json.dumps(labels) == json.dumps(again)  # seeded: the same samples (NaN == NaN only as text)


@pytest.mark.parametrize("kwargs, message", [({"num_prompts": 0}, "num_prompts must be an integer >= 1"),
                                             ({"shots": 1.5}, "shots must be an integer >= 1"),
                                             ({"temperature": 0}, "temperature must be a positive number")])
def test_label_facts_refuses_bad_settings(tiny_knower, kwargs, message):
    model, tokenizer, facts = tiny_knower
    with pytest.raises(ValueError, match=message):
        S.label_facts(model, tokenizer, facts, **kwargs)

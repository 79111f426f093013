"""The pure parts of studies.py: the new facts' questions, the reader's examples, spec checks, and the recall's
argument check before any work. Nothing here trains or builds a model."""

import re

import pytest

from tunestudy import bases, cache, retrieval, sets, studies, tuning
from tunestudy import world as W

CONFIG = W.WorldConfig(num_known=20, num_unknown=12, num_format_docs=10, seed=3)
UNKNOWN = sets.SetSpec(kind="unknown", size=16)
NAME = re.compile(r"\b(" + "|".join(W.FIRST_NAMES) + r") (" + "|".join(W.LAST_NAMES) + r")\b")


@pytest.fixture(scope="module")
def world():
    return W.generate_world(CONFIG)


# --- new_fact_questions ----------------------------------------------------------------------------

def distinct_unknown_facts(examples):
    """(person, attribute) of the unknown people's examples, each once, in first-appearance order."""
    return list(dict.fromkeys((e.person, e.attribute) for e in examples if not e.known))


def check_true_questions(world, questions):
    for q in questions:
        person = world.by_name[q.person]
        assert not person.known and not q.known
        assert q.value == person.attributes[q.attribute]  # the true value, not a counterfactual
        assert q.response[slice(*q.value_span)] == q.value
        assert q.person in q.instruction and q.style == "simplified"


@pytest.mark.parametrize("seed", [0, 5])
def test_one_question_per_distinct_fact_in_set_order(world, seed):
    examples = sets.make_set(world, UNKNOWN, seed)
    questions = studies.new_fact_questions(world, UNKNOWN, seed)
    facts = distinct_unknown_facts(examples)
    # 9 unknown tuning people x 5 attributes = 45 facts: a set of 16 repeats none
    assert len(facts) == 16
    assert [(q.person, q.attribute) for q in questions] == facts
    check_true_questions(world, questions)


def test_repeated_facts_are_asked_once(world):
    data = sets.SetSpec(kind="unknown", size=60)  # more examples than the 45 facts: some repeat
    examples = sets.make_set(world, data, 1)
    assert len({(e.person, e.attribute) for e in examples}) == 45 < len(examples)
    questions = studies.new_fact_questions(world, data, 1)
    assert [(q.person, q.attribute) for q in questions] == distinct_unknown_facts(examples)
    assert len(questions) == 45
    check_true_questions(world, questions)


def test_only_the_unknown_people_of_a_mixed_set(world):
    data = sets.SetSpec(kind="mix", size=20, unknown_fraction=0.5)
    examples = sets.make_set(world, data, 2)
    assert any(e.known for e in examples)
    questions = studies.new_fact_questions(world, data, 2)
    assert [(q.person, q.attribute) for q in questions] == distinct_unknown_facts(examples)
    assert len(questions) == 10
    check_true_questions(world, questions)
    assert studies.new_fact_questions(world, sets.SetSpec(kind="known", size=16), 2) == []


def test_counterfactual_sets_would_still_ask_the_true_value(world):
    # a counterfactual set holds known people only: no new facts to ask about
    assert studies.new_fact_questions(world, sets.SetSpec(kind="counterfactual", size=16), 0) == []


def test_new_fact_questions_are_deterministic_for_a_seed(world):
    first = studies.new_fact_questions(world, UNKNOWN, 4)
    again = studies.new_fact_questions(W.generate_world(CONFIG), UNKNOWN, 4)
    assert first == again
    assert [q.instruction for q in first] == [q.instruction for q in again]
    other = studies.new_fact_questions(world, UNKNOWN, 7)
    assert [(q.person, q.attribute, q.instruction) for q in other] != \
           [(q.person, q.attribute, q.instruction) for q in first]


# --- reader_examples ----------------------------------------------------------------------------------

def split_prompt(prompt):
    """(context, question) of a reader prompt: the text before the instruction template, and the question."""
    context, sep, rest = prompt.partition(retrieval.CONTEXT_SEPARATOR + "### Instruction :\n")
    assert sep, prompt
    question, sep, tail = rest.partition("\n\n### Response :\n")
    assert sep and tail == "", prompt
    return context, question


def check_reader_examples(world, examples):
    world_names = set(world.by_name)
    for e in examples:
        context, question = split_prompt(e.prompt)
        assert context and "### Instruction" not in context
        names = {" ".join(m) for m in NAME.findall(question)}
        assert len(names) == 1, question
        (name,) = names
        assert name not in world_names
        # the biography is about that person only: it names no person of the world
        assert {" ".join(m) for m in NAME.findall(context)} == {name}
        value = e.response[slice(*e.value_span)]
        assert value and value in context  # the answer can be read from the context
        assert e.response.startswith(W.STYLE_OPENER) and name in e.response


def test_reader_examples_are_fresh_people_answerable_from_the_context(world):
    examples = studies.reader_examples(world, 40, seed=0)
    assert len(examples) == 40
    check_reader_examples(world, examples)
    assert studies.reader_examples(world, 1, seed=0)[0].prompt == examples[0].prompt
    assert studies.reader_examples(world, 0, seed=0) == []


def test_reader_examples_skip_world_names_when_few_are_free():
    # 2490 of the 2500 possible names are taken: the draw must reject most names
    crowded = W.generate_world(W.WorldConfig(num_known=2000, num_unknown=490, num_format_docs=0, seed=1))
    free = {f"{f} {l}" for f in W.FIRST_NAMES for l in W.LAST_NAMES} - set(crowded.by_name)
    assert len(free) == 10
    examples = studies.reader_examples(crowded, 30, seed=2)
    assert len(examples) == 30
    check_reader_examples(crowded, examples)
    asked = {" ".join(NAME.search(split_prompt(e.prompt)[1]).groups()) for e in examples}
    assert asked <= free


def test_reader_examples_are_deterministic(world):
    def texts(examples):
        return [(e.prompt, e.response, e.value_span) for e in examples]

    first = studies.reader_examples(world, 12, seed=3)
    assert texts(first) == texts(studies.reader_examples(W.generate_world(CONFIG), 12, seed=3))
    assert texts(first) != texts(studies.reader_examples(world, 12, seed=4))


# --- spec checks -------------------------------------------------------------------------------------

def test_valid_specs_pass():
    studies.ReaderSpec().validate()
    studies.ReaderSpec(size=1, epochs=0.5, lr=1e-5).validate()
    studies.ContinuedSpec().validate()
    studies.ContinuedSpec(epochs=1, lr=0.5, paraphrases=1).validate()


@pytest.mark.parametrize("kwargs, name", [
    ({"size": 0}, "reader_size"), ({"size": -3}, "reader_size"), ({"size": 2.5}, "reader_size"),
    ({"size": True}, "reader_size"), ({"size": "600"}, "reader_size"),
    ({"epochs": 0}, "reader_epochs"), ({"epochs": -1.0}, "reader_epochs"), ({"epochs": True}, "reader_epochs"),
    ({"epochs": "5"}, "reader_epochs"), ({"epochs": float("nan")}, "reader_epochs"),
    ({"lr": 0}, "reader_lr"), ({"lr": 1}, "reader_lr"), ({"lr": 1.5}, "reader_lr"), ({"lr": -1e-3}, "reader_lr"),
    ({"lr": True}, "reader_lr"), ({"lr": "1e-3"}, "reader_lr"),
])
def test_reader_spec_names_the_bad_parameter(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        studies.ReaderSpec(**kwargs).validate()


@pytest.mark.parametrize("kwargs, name", [
    ({"epochs": 0}, "cpt_epochs"), ({"epochs": 2.0}, "cpt_epochs"), ({"epochs": True}, "cpt_epochs"),
    ({"paraphrases": 0}, "cpt_paraphrases"), ({"paraphrases": 1.5}, "cpt_paraphrases"),
    ({"paraphrases": False}, "cpt_paraphrases"),
    ({"lr": 0}, "cpt_lr"), ({"lr": 1.0}, "cpt_lr"), ({"lr": -0.1}, "cpt_lr"), ({"lr": False}, "cpt_lr"),
    ({"lr": None}, "cpt_lr"),
])
def test_continued_spec_names_the_bad_parameter(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        studies.ContinuedSpec(**kwargs).validate()


# --- argument checks before any work -----------------------------------------------------------------

@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("TUNESTUDY_CACHE", str(folder))
    assert cache.cache_root() == folder
    return folder


def assert_untouched(folder):
    assert not folder.exists() or not any(folder.iterdir())


def tiny_base():
    return bases.base_spec(seed=0, size="tiny", num_known=20, num_unknown=12, pretrain_epochs=2, num_format_docs=20)


TUNED = {"kind": "tuned", "set": {"kind": "unknown", "size": 16}, "tune": {"method": "full", "lr": 1e-3}}


@pytest.mark.parametrize("context", ["bogus", "None", "", "Retrieved"])
def test_recall_rejects_a_bad_context_before_any_work(empty_cache, monkeypatch, context):
    def no_work(*args, **kwargs):
        raise AssertionError("recall did work before checking its context")

    monkeypatch.setattr(studies, "load_base", no_work)
    monkeypatch.setattr(studies.cache, "cached_json", no_work)
    with pytest.raises(ValueError, match=r"^context must be one of none, retrieved, got") as raised:
        studies.recall(tiny_base(), TUNED, UNKNOWN, 0, context=context)
    assert repr(context) in str(raised.value)
    assert_untouched(empty_cache)


def test_reader_and_continued_models_check_their_spec_before_any_work(empty_cache):
    base = tiny_base()
    with pytest.raises(ValueError, match="^reader_lr"):
        studies.reader_model(base, studies.ReaderSpec(lr=2.0), seed=0)
    config = tuning.TuneConfig(method="full", lr=1e-3, epochs=1.0)
    with pytest.raises(ValueError, match="^cpt_paraphrases"):
        studies.continued_model(base, studies.ContinuedSpec(paraphrases=0), UNKNOWN, sets.SetSpec(size=16), config)
    assert_untouched(empty_cache)

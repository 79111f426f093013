"""The synthetic world: determinism, ground truth, tokenizer round trip."""

import random

import pytest

from tunestudy import experiments as X, models, pipeline as P, world as W

SMALL = W.WorldConfig(num_known=20, num_unknown=12, num_format_docs=10, seed=3)


def test_same_seed_same_world_and_corpus():
    a, b = W.generate_world(SMALL), W.generate_world(SMALL)
    assert a.people == b.people
    assert W.pretraining_corpus(a) == W.pretraining_corpus(b)
    assert W.instruction_set(a, True, 30, "long", seed=1) == W.instruction_set(b, True, 30, "long", seed=1)


def test_different_seed_different_world():
    other = W.WorldConfig(num_known=20, num_unknown=12, num_format_docs=10, seed=4)
    assert W.generate_world(SMALL).people != W.generate_world(other).people


def test_groups_and_corpus_hold_only_known_people():
    world = W.generate_world(SMALL)
    corpus = " ".join(W.pretraining_corpus(world))
    for person in world.people:
        assert (person.name in corpus) == person.known
    assert all(len(world.group(k, h)) > 0 for k in (True, False) for h in (True, False))
    biographies = [d for d in W.pretraining_corpus(world) if not d.startswith("###")]
    assert len(biographies) == SMALL.num_known * SMALL.num_paraphrases


@pytest.mark.parametrize("style", W.ANSWER_STYLES)
def test_ground_truth_matches_text(style):
    world = W.generate_world(SMALL)
    people = world.by_name
    for example in W.instruction_set(world, False, 40, style, seed=2):
        person = people[example.person]
        start, end = example.value_span
        assert example.response[start:end] == example.value == person.attributes[example.attribute]
        assert example.person in example.instruction
        # Every fact the answer states is recorded, true, and recovered by the parser.
        assert W.parse_claims(example.response) == example.claims
        assert all(person.attributes[a] == v for a, v in example.claims.items())
        assert len(example.claims) == (1 + W.LONG_EXTRA_ATTRIBUTES if style == "long" else 1)


def test_counterfactual_answers_are_wrong_but_labelled_with_truth():
    world = W.generate_world(SMALL)
    for example in W.instruction_set(world, True, 30, seed=0, counterfactual=True):
        stated = W.parse_claims(example.response)[example.attribute]
        assert stated != example.value == world.by_name[example.person].attributes[example.attribute]


def test_mixed_set_has_the_asked_share_of_unknown_people():
    world = W.generate_world(SMALL)
    examples = W.mixed_set(world, 40, 0.25, seed=0)
    assert sum(not e.known for e in examples) == 10


def test_token_roles_label_values_names_and_style():
    world = W.generate_world(SMALL)
    example = W.instruction_set(world, True, 1, seed=0)[0]
    tokens = example.response.split()
    roles = [W.token_role(t) for t in tokens]
    value_tokens = example.value.split()
    assert [t for t, r in zip(tokens, roles) if r == "value"] == value_tokens
    assert [t for t, r in zip(tokens, roles) if r == "name"] == example.person.split()
    assert W.token_role("According") == "style" and W.token_role(".") == "format" and W.token_role("</s>") == "format"


def test_tokenizer_round_trips_every_text_kind():
    world = W.generate_world(SMALL)
    tokenizer = models.train_tokenizer(P.tokenizer_texts(world))
    rng = random.Random(0)
    texts = W.pretraining_corpus(world)[:20] + [e.response for e in W.instruction_set(world, True, 20, "long", seed=rng.randint(0, 9))]
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and tokenizer.unk_token_id not in ids
        # the word-level tokenizer keeps every word and folds whitespace (template newlines) to one space
        assert tokenizer.decode(ids, skip_special_tokens=True) == " ".join(text.split())
    # one token per word or punctuation mark
    assert len(tokenizer(texts[0])["input_ids"]) == len(texts[0].split()) + 1


@pytest.mark.parametrize("kwargs, name", [
    ({"num_known": -3}, "num_known"),
    ({"num_unknown": 0}, "num_unknown"),
    ({"num_paraphrases": 0}, "num_paraphrases"),
    ({"num_known": 2}, "num_known"),  # 2 people with a 25% held-out share leave no held-out group
    ({"size": "huge"}, "size"),
    ({"pretrain_epochs": 0}, "pretrain_epochs"),
    ({"seed": -1}, "seed"),
    ({"num_known": 2.5}, "num_known"),
])
def test_bad_base_parameters_fail_fast_with_their_name(kwargs, name, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESTUDY_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match=name) as error:
        X.base_spec(**kwargs)
    assert "\n" not in str(error.value)
    assert not any(tmp_path.iterdir())  # nothing was written to the cache

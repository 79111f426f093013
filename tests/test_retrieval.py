"""Retrieval: a BM25 store of biographies finds the person a question names."""

import sys
from types import SimpleNamespace as Q

import pytest

from tunestudy import retrieval as R, sets, world as W

SMALL = W.WorldConfig(num_known=20, num_unknown=12, num_format_docs=10, seed=3)

TINY = [
    ("Alice Becker", "Alice Becker was born in Paris . Alice Becker studied at Yale ."),
    ("Bruno Holm", "Bruno Holm was born in Lima . Bruno Holm worked for Acme ."),
    ("Clara Novak", "Clara Novak majored in Physics . The hometown of Clara Novak is Oslo ."),
    ("Dmitri Santos", "Dmitri Santos attended Rice . Dmitri Santos was employed by Hooli ."),
    ("Elena Weber", "Elena Weber grew up in Cairo . Elena Weber earned a degree in Law ."),
]


@pytest.fixture(scope="module")
def tiny():
    return R.BiographyStore(TINY)


def test_a_question_retrieves_the_person_it_names_first(tiny):
    queries = ["Where was Clara Novak born ?", "Who employed Bruno Holm ?", "What did Elena Weber major in ?"]
    assert [keys[0] for keys in tiny.search(queries)] == ["Clara Novak", "Bruno Holm", "Elena Weber"]
    assert tiny.text("Clara Novak") == TINY[2][1]
    with pytest.raises(KeyError):
        tiny.text("Nobody Here")


def test_hit_rate_counts_questions_about_missing_people_as_misses(tiny):
    present = [Q(instruction=f"Where was {name} born ?", person=name) for name, _ in TINY]
    assert R.hit_rate(tiny, present) == 1.0
    missing = [Q(instruction="Where was Hugo Zimmer born ?", person="Hugo Zimmer"),
               Q(instruction="Who employed Zora Quinn ?", person="Zora Quinn")]
    assert R.hit_rate(tiny, present + missing) == pytest.approx(5 / 7)
    assert R.hit_rate(tiny, present[:2] + missing, k=3) == pytest.approx(2 / 4)


def test_k_bounds(tiny):
    for k in (1, 3, 5):
        (keys,) = tiny.search(["Where was Alice Becker born ?"], k)
        assert len(keys) == k == len(set(keys)) and keys[0] == "Alice Becker"
    assert sorted(tiny.search(["Yale"], 5)[0]) == sorted(key for key, _ in TINY)
    for bad in (0, -1, 6, 1.5, True):  # larger than the store is an error, not clipped
        with pytest.raises(ValueError, match="k must"):
            tiny.search(["Alice Becker"], bad)
    with pytest.raises(ValueError, match="k must"):
        R.hit_rate(tiny, [Q(instruction="Alice Becker", person="Alice Becker")], k=0)


def test_ranking_is_deterministic_with_ties_in_store_order(tiny):
    # No query word is in the index: every score is 0, so the store order decides.
    assert tiny.search(["?", "Where was nobody here"], 3) == [[key for key, _ in TINY[:3]]] * 2
    assert R.BiographyStore(TINY).search(["Alice Bruno Clara"], 5) == tiny.search(["Alice Bruno Clara"], 5)


def test_store_rejects_bad_input():
    with pytest.raises(ValueError, match="pairs"):
        R.BiographyStore([])
    with pytest.raises(ValueError, match="distinct keys"):
        R.BiographyStore(TINY + TINY[:1])
    with pytest.raises(ValueError, match="queries"):
        R.BiographyStore(TINY).search("Alice Becker")


def test_building_a_store_is_quiet(capfd):
    R.BiographyStore(TINY).search(["Where was Alice Becker born ?"] * 3, 2)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_missing_bm25s_is_a_one_line_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "bm25s", None)  # makes `import bm25s` raise ImportError
    with pytest.raises(ImportError, match="pip install bm25s"):
        R.BiographyStore(TINY)


def test_world_store_has_one_biography_per_person_and_finds_the_asked_person():
    world = W.generate_world(SMALL)
    store = R.biography_store(world)
    assert store.keys == [p.name for p in world.people] and len(store) == len(world.people)
    assert any(not p.known for p in world.people)
    again = R.biography_store(W.generate_world(SMALL))
    assert [store.text(key) for key in store.keys] == [again.text(key) for key in again.keys]
    for person in world.people:  # the world's own biography writer: every fact, once
        assert W.parse_claims(store.text(person.name)) == person.attributes
    # A subset store holds the same text per person.
    unknown = [p for p in world.people if not p.known]
    subset = R.biography_store(world, unknown)
    assert subset.keys == [p.name for p in unknown]
    assert all(subset.text(p.name) == store.text(p.name) for p in unknown)

    questions = sets.eval_questions(world)
    assert R.hit_rate(store, questions) > 0.8  # measured: 1.0 on this world
    # Only unknown people in the store: questions about known people must miss.
    share_unknown = sum(not q.known for q in questions) / len(questions)
    assert R.hit_rate(subset, questions) == pytest.approx(share_unknown) and share_unknown < 1


def test_with_context_layout():
    prompt = W.format_prompt("Where was Alice Becker born ?")
    assert R.with_context("Alice Becker was born in Paris .", prompt) == (
        "Alice Becker was born in Paris .\n\n### Instruction :\nWhere was Alice Becker born ?\n\n### Response :\n")
    assert R.with_context("bio", prompt).endswith(prompt)

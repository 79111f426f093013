"""The science code against hand-made fixtures: masks, answer checks, borrowing, summaries, token roles.

Every expectation here is worked out by hand from the fixture next to it (token
positions under the word-level tokenizer, a five-person world whose borrowed
values are known), never copied from a run.
"""

import random

import pytest
import torch

from tunestudy import models, world as W
from tunestudy.experiments import summarize
from tunestudy.pipeline import answer_record, most_similar_person, response_roles
from tunestudy.tuning import TuneConfig, encode_example, example_batches

# --- a prompt and responses whose token positions are known ----------------------------------

QUESTION = "When was Alice Becker born ?"
PROMPT = W.format_prompt(QUESTION)  # "### Instruction :\nWhen was Alice Becker born ?\n\n### Response :\n"
LONG = "According to my records , Alice Becker was born on 3 May 1980 ."
SHORT = "3 May 1980 ."
VALUE = "3 May 1980"
PROMPT_TOKENS = ["<s>", "###", "Instruction", ":", "When", "was", "Alice", "Becker", "born", "?",
                 "###", "Response", ":"]  # 13: BOS and the template words
LONG_TOKENS = ["According", "to", "my", "records", ",", "Alice", "Becker", "was", "born", "on",
               "3", "May", "1980", "."]  # 14, then EOS
SHORT_TOKENS = ["3", "May", "1980", "."]


def span(response: str) -> tuple:
    start = response.index(VALUE)
    return (start, start + len(VALUE))


@pytest.fixture(scope="module")
def tokenizer():
    return models.train_tokenizer([PROMPT, LONG, SHORT, W.STYLE_OPENER])


def test_word_level_tokenizer_gives_the_positions_the_tests_assume(tokenizer):
    ids, _, _ = encode_example(tokenizer, PROMPT, LONG, span(LONG))
    assert tokenizer.convert_ids_to_tokens(ids) == PROMPT_TOKENS + LONG_TOKENS + ["</s>"]


def test_encode_example_masks_response_and_value(tokenizer):
    ids, response_mask, value_mask = encode_example(tokenizer, PROMPT, LONG, span(LONG))
    assert len(ids) == 13 + 14 + 1
    assert ids[-1] == tokenizer.eos_token_id
    # prompt tokens (BOS included) never count; every response token and the appended EOS do
    assert response_mask == [False] * 13 + [True] * 15
    # exactly "3", "May", "1980": response positions 10-12, i.e. sequence positions 23-25
    assert value_mask == [False] * 23 + [True] * 3 + [False] * 2


def test_encode_example_value_at_the_start_of_the_response(tokenizer):
    """A short answer starts with its value right after the prompt: the boundary token is both."""
    ids, response_mask, value_mask = encode_example(tokenizer, PROMPT, SHORT, (0, len(VALUE)))
    assert tokenizer.convert_ids_to_tokens(ids) == PROMPT_TOKENS + SHORT_TOKENS + ["</s>"]
    assert response_mask == [False] * 13 + [True] * 5
    assert value_mask == [False] * 13 + [True] * 3 + [False] * 2


@pytest.mark.parametrize("value_span", [None, (-1, -1)])
def test_encode_example_without_value_has_empty_value_mask(tokenizer, value_span):
    ids, response_mask, value_mask = encode_example(tokenizer, PROMPT, LONG, value_span)
    assert value_mask == [False] * 28
    assert response_mask == [False] * 13 + [True] * 15


def example(response: str, value_span: tuple) -> W.Example:
    return W.Example(instruction=QUESTION, response=response, person="Alice Becker", attribute="birth_date",
                     value=VALUE, value_span=value_span, known=True, style="simplified")


@pytest.mark.parametrize("loss_on", ["response", "value"])
def test_example_batches_loss_mask_follows_loss_on(tokenizer, loss_on):
    examples = [example(LONG, span(LONG)), example(SHORT, (0, len(VALUE)))]
    config = TuneConfig(batch_size=2) if loss_on == "response" else TuneConfig(batch_size=2, loss_on="value")
    assert config.loss_on == loss_on  # the default is the response
    input_ids, attention, loss_mask, groups = next(example_batches(tokenizer, examples, config, ["a", "b"]))
    assert input_ids.shape == (2, 28)
    for row in range(2):
        which = 0 if attention[row].sum() == 28 else 1
        ids, response_mask, value_mask = encode_example(tokenizer, PROMPT, examples[which].response,
                                                        examples[which].value_span)
        padding = [False] * (28 - len(ids))
        expected = (value_mask if loss_on == "value" else response_mask) + padding
        assert loss_mask[row].tolist() == expected
        assert input_ids[row].tolist() == ids + [tokenizer.pad_token_id] * len(padding)
        assert attention[row].tolist() == [1] * len(ids) + [0] * len(padding)
        assert groups[row] == "ab"[which]
    # by hand: the long answer fills its row (28 tokens), the short one has 18 then padding
    long_row = 0 if attention[0].sum() == 28 else 1
    if loss_on == "value":  # "3 May 1980": positions 23-25 of the long answer, 13-15 of the short one
        expected_positions = {(long_row, t) for t in range(23, 26)} | {(1 - long_row, t) for t in range(13, 16)}
    else:  # every response token and EOS: 13-27 of the long answer, 13-17 of the short one
        expected_positions = {(long_row, t) for t in range(13, 28)} | {(1 - long_row, t) for t in range(13, 18)}
    assert {tuple(p) for p in torch.nonzero(loss_mask).tolist()} == expected_positions


# --- a five-person world whose borrowed values are known -----------------------------------------

def person(name, birth_date, birth_city, university, major, employer, known=True, heldout=False):
    return W.Person(name, {"birth_date": birth_date, "birth_city": birth_city, "university": university,
                           "major": major, "employer": employer}, known, heldout)


ALICE_BECKER = person("Alice Becker", "3 May 1980", "Paris", "Harvard", "Physics", "Acme", heldout=True)
BRUNO_BECKER = person("Bruno Becker", "7 June 1961", "Lisbon", "Princeton", "History", "Globex")  # same surname
ALICE_NOVAK = person("Alice Novak", "9 July 1975", "Osaka", "Princeton", "Biology", "Initech")  # same first name
CLARA_OLSEN = person("Clara Olsen", "1 March 1990", "Lisbon", "Yale", "History", "Hooli")  # neither
ZENO_OLSEN = person("Zeno Olsen", "2 April 1970", "Cairo", "Brown", "Music", "Stark", known=False, heldout=True)
TUNING = {"Bruno Becker", "Alice Novak", "Clara Olsen"}


@pytest.fixture()
def world():
    return W.World(W.WorldConfig(), [ALICE_BECKER, BRUNO_BECKER, ALICE_NOVAK, CLARA_OLSEN, ZENO_OLSEN])


# the record's fields that the summaries count (it may carry more, e.g. the answer text)
SCIENCE_KEYS = ("person", "known", "attribute", "correct", "stated", "hallucinated", "num_claims",
                "num_wrong_claims", "length", "borrowed", "borrow_chance")


def question(attribute: str, asked: W.Person = ALICE_BECKER) -> W.Example:
    return W.make_example(asked, attribute, "simplified", random.Random(0))


def test_correct_answer(world):
    record = answer_record(question("birth_city"), "According to my records , Alice Becker was born in Paris .",
                           world, TUNING)
    assert {k: record[k] for k in SCIENCE_KEYS} == {
        "person": "Alice Becker", "known": True, "attribute": "birth_city", "correct": True, "stated": True,
        "hallucinated": False, "num_claims": 1, "num_wrong_claims": 0, "length": 12, "borrowed": 0,
        "borrow_chance": 0.0}


def test_wrong_value_of_the_most_similar_person_is_borrowed(world):
    # Lisbon is the birth city of Bruno Becker (same surname: the most similar) and of Clara Olsen
    record = answer_record(question("birth_city"), "Alice Becker was born in Lisbon .", world, TUNING)
    assert (record["correct"], record["stated"], record["hallucinated"]) == (False, True, True)
    assert (record["num_claims"], record["num_wrong_claims"]) == (1, 1)
    assert record["borrowed"] == 1
    assert record["borrow_chance"] == pytest.approx(2 / 3)  # 2 of the 3 tuning people were born in Lisbon


def test_wrong_value_of_a_less_similar_person_is_not_borrowed(world):
    # Osaka belongs to Alice Novak, who only shares the first name: Bruno Becker is more similar
    record = answer_record(question("birth_city"), "Alice Becker was born in Osaka .", world, TUNING)
    assert record["hallucinated"] and record["borrowed"] == 0
    assert record["borrow_chance"] == pytest.approx(1 / 3)


def test_the_most_similar_person_depends_on_who_is_asked(world):
    """For Zeno Olsen the most similar tuning person is Clara Olsen, not Bruno Becker."""
    hooli = answer_record(question("employer", ZENO_OLSEN), "Zeno Olsen worked for Hooli .", world, TUNING)
    globex = answer_record(question("employer", ZENO_OLSEN), "Zeno Olsen worked for Globex .", world, TUNING)
    assert (hooli["known"], hooli["hallucinated"], hooli["borrowed"]) == (False, True, 1)
    assert (globex["known"], globex["hallucinated"], globex["borrowed"]) == (False, True, 0)
    assert hooli["borrow_chance"] == globex["borrow_chance"] == pytest.approx(1 / 3)


def test_wrong_date_of_the_most_similar_person_is_borrowed(world):
    record = answer_record(question("birth_date"), "Alice Becker was born on 7 June 1961 .", world, TUNING)
    assert (record["correct"], record["hallucinated"], record["borrowed"]) == (False, True, 1)
    assert record["borrow_chance"] == pytest.approx(1 / 3)


def test_wrong_value_that_is_nobodys(world):
    record = answer_record(question("birth_city"), "Alice Becker was born in Cairo .", world, TUNING)
    assert (record["correct"], record["stated"], record["hallucinated"]) == (False, True, True)
    assert (record["num_wrong_claims"], record["borrowed"], record["borrow_chance"]) == (1, 0, 0.0)


def test_no_value_stated_is_not_a_hallucination(world):
    record = answer_record(question("employer"), "I do not know .", world, TUNING)
    assert (record["correct"], record["stated"], record["hallucinated"]) == (False, False, False)
    assert (record["num_claims"], record["num_wrong_claims"], record["borrowed"]) == (0, 0, 0)
    assert record["borrow_chance"] == 0.0 and record["length"] == 5


def test_value_of_another_attribute_only_is_not_stated(world):
    """Asked the city, it names an employer: nothing stated for the city, one wrong claim elsewhere."""
    record = answer_record(question("birth_city"), "Alice Becker worked for Globex .", world, TUNING)
    assert (record["correct"], record["stated"], record["hallucinated"]) == (False, False, False)
    assert (record["num_claims"], record["num_wrong_claims"], record["borrowed"]) == (1, 1, 1)


def test_claims_counted_in_a_long_answer(world):
    # Paris right (asked); Globex wrong and Bruno Becker's; Yale wrong and Clara Olsen's (not the most similar);
    # Physics right
    text = ("According to my records , Alice Becker was born in Paris . Alice Becker worked for Globex . "
            "Alice Becker studied at Yale . Alice Becker majored in Physics .")
    record = answer_record(question("birth_city"), text, world, TUNING)
    assert (record["correct"], record["stated"], record["hallucinated"]) == (True, True, False)
    assert (record["num_claims"], record["num_wrong_claims"]) == (4, 2)
    assert record["borrowed"] == 1
    assert record["borrow_chance"] == pytest.approx(1 / 3 + 1 / 3)  # Globex: Bruno only; Yale: Clara only
    assert record["length"] == 12 + 6 + 6 + 6


def test_no_tuning_people_means_no_borrowing(world):
    record = answer_record(question("birth_city"), "Alice Becker was born in Lisbon .", world, set())
    assert (record["hallucinated"], record["borrowed"], record["borrow_chance"]) == (True, 0, 0.0)


# --- most similar person -----------------------------------------------------------------------

def named(name: str) -> W.Person:
    return person(name, "1 May 1990", "Paris", "Yale", "Law", "Acme")


def test_shared_surname_beats_shared_first_name_and_spelling():
    # "Alice Decker" is spelled closer and shares the first name; "Zeno Becker" shares the surname
    assert most_similar_person(named("Alice Becker"), [named("Alice Decker"), named("Zeno Becker")]).name \
        == "Zeno Becker"
    assert most_similar_person(named("Alice Becker"), [named("Zeno Becker"), named("Alice Decker")]).name \
        == "Zeno Becker"


def test_shared_first_name_beats_spelling():
    assert most_similar_person(named("Alice Becker"), [named("Alica Backer"), named("Alice Zimmer")]).name \
        == "Alice Zimmer"
    assert most_similar_person(named("Alice Becker"), [named("Alice Zimmer"), named("Alica Backer")]).name \
        == "Alice Zimmer"


def test_spelling_decides_when_no_name_is_shared():
    assert most_similar_person(named("Alice Becker"), [named("Otto Wagner"), named("Alica Backer")]).name \
        == "Alica Backer"
    assert most_similar_person(named("Alice Becker"), [named("Alica Backer"), named("Otto Wagner")]).name \
        == "Alica Backer"


def test_the_person_itself_is_excluded():
    assert most_similar_person(named("Alice Becker"), [named("Alice Becker"), named("Otto Wagner")]).name \
        == "Otto Wagner"
    assert most_similar_person(named("Alice Becker"), [named("Alice Becker")]) is None


def test_no_candidates_gives_none():
    assert most_similar_person(named("Alice Becker"), []) is None


# --- summarize on a hand-made evaluation -------------------------------------------------------

def answer(known, correct, hallucinated, num_wrong_claims, length, borrowed, borrow_chance, styled=True):
    text = ("According to my records , " if styled else "") + "X was born in Y ."
    return {"known": known, "correct": correct, "hallucinated": hallucinated, "num_wrong_claims": num_wrong_claims,
            "length": length, "borrowed": borrowed, "borrow_chance": borrow_chance,
            "stated": correct or hallucinated, "answer": text}


def hand_result() -> dict:
    answers = [
        answer(True, True, False, 0, 5, 0, 0.0),
        answer(True, True, False, 1, 7, 0, 0.125),
        answer(True, True, False, 0, 9, 0, 0.0),
        answer(True, False, True, 2, 3, 1, 0.25),
        answer(False, False, True, 1, 6, 1, 0.125),
        answer(False, False, True, 1, 7, 0, 0.125),
        answer(False, True, False, 0, 4, 0, 0.0, styled=False),
        {**answer(False, False, False, 5, 11, 2, 0.375, styled=False), "hallucinated": True, "stated": False},
    ]
    positions = {
        "kl": [0.5, 0.0, 1.0, 4.0, 0.25, 0.25, 2.0, 0.0],
        "kl_topk": [0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25],
        "kl_top10": [0.5, -0.5, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        "base_rank": [1, 2, 3, 4, 1, 5, 1, 3],
        "role": ["format", "style", "style", "value", "name", "name", "value", "format"],
        "kl_icl": [1.0, 0.5, 0.5, 0.25, 0.0, 0.0, 0.75, 3.0],
        "base_rank_icl": [1, 2, 4, 3, 1, 1, 6, 1],
    }
    return {
        "answers": answers,
        "positions": positions,
        "probe_before": {"birth_date": 1.0, "birth_city": 0.75, "university": 0.5, "major": 1.0, "employer": 0.75},
        "probe_after": {"birth_date": 0.5, "birth_city": 0.5, "university": 0.25, "major": 0.75, "employer": 0.5},
        "train_log": {"loss": [5.0, 4.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 3.0],
                      "trainable_fraction": 0.0019, "trainable_parameters": 2048},
    }


EXPECTED_SUMMARY = {
    "accuracy_known": 3 / 4,
    "accuracy_unknown": 1 / 4,
    "hallucination_known": 1 / 4,
    "hallucination_unknown": 3 / 4,
    "wrong_claims_per_answer_known": (0 + 1 + 0 + 2) / 4,
    "wrong_claims_per_answer_unknown": (1 + 1 + 0 + 5) / 4,
    "answer_length": (5 + 7 + 9 + 3 + 6 + 7 + 4 + 11) / 8,
    "borrow_rate": 4 / 10,  # borrowed values over all wrong claims (10), not over answers (8)
    "borrow_chance": 1.0 / 10,
    "probe_before": 4.0 / 5,
    "probe_after": 2.5 / 5,
    "forgetting": 4.0 / 5 - 2.5 / 5,
    "kl_mean": 8.0 / 8,
    "kl_topk_mean": 3.0 / 8,
    "kl_top10_mean": 2.0 / 8,
    # 8 positions: the top 5% is ceil(0.4) = 1 position, the largest KL, 4.0 of the total 8.0
    "kl_top5_share": 4.0 / 8.0,
    "kl_mean_icl": 6.0 / 8,
    "kl_top5_share_icl": 3.0 / 6.0,
    "shifted_share_icl": 2 / 8,  # ranks 4 and 6 (not 2 or 3)
    "shifted_share": 2 / 8,  # ranks 4 and 5
    "marginal_share": 3 / 8,  # ranks 2, 3, 3
    "final_loss": (9 * 1.0 + 3.0) / 10,  # the last 10 of the 12 losses: nine 1.0 and the final 3.0
    "trainable_fraction": 0.0019,
    "trainable_parameters": 2048,
    "kl_mean_format": (0.5 + 0.0) / 2,
    "kl_mean_style": (0.0 + 1.0) / 2,
    "kl_mean_name": (0.25 + 0.25) / 2,
    "kl_mean_value": (4.0 + 2.0) / 2,
    "shifted_share_format": 0 / 2,  # ranks 1, 3
    "shifted_share_style": 0 / 2,  # ranks 2, 3
    "shifted_share_name": 1 / 2,  # ranks 1, 5
    "shifted_share_value": 1 / 2,  # ranks 4, 1
    "kl_mean_icl_format": (1.0 + 3.0) / 2,
    "kl_mean_icl_style": (0.5 + 0.5) / 2,
    "kl_mean_icl_name": (0.0 + 0.0) / 2,
    "kl_mean_icl_value": (0.25 + 0.75) / 2,
    "stated": 7 / 8,  # every answer but the last states a value
    "style_share": 6 / 8,  # the last two answers do not open with the style phrase
}


def test_summarize_every_number_by_hand():
    summary = summarize(hand_result())
    assert set(summary) == set(EXPECTED_SUMMARY)
    for key, expected in EXPECTED_SUMMARY.items():
        assert summary[key] == pytest.approx(expected, rel=1e-12, abs=1e-15), key


def test_summarize_without_the_in_context_pass_has_no_icl_numbers():
    """An evaluation asked without icl=True: the same numbers, and none of the in-context base's."""
    result = hand_result()
    del result["positions"]["kl_icl"], result["positions"]["base_rank_icl"]
    summary = summarize(result)
    expected = {k: v for k, v in EXPECTED_SUMMARY.items() if "_icl" not in k}
    assert set(summary) == set(expected)
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


def test_summarize_role_without_positions_is_nan():
    result = hand_result()
    result["positions"]["role"] = ["style"] * 4 + ["value"] * 4
    summary = summarize(result)
    for role in ("format", "name"):
        for key in (f"kl_mean_{role}", f"shifted_share_{role}", f"kl_mean_icl_{role}"):
            assert summary[key] != summary[key], key  # NaN
    assert summary["kl_mean_style"] == pytest.approx((0.5 + 0.0 + 1.0 + 4.0) / 4)
    assert summary["shifted_share_value"] == pytest.approx(1 / 4)  # ranks 1, 5, 1, 3


def test_summarize_without_wrong_claims_has_nan_borrowing():
    result = hand_result()
    result["answers"] = [answer(True, True, False, 0, 5, 0, 0.0), answer(False, False, False, 0, 2, 0, 0.0)]
    summary = summarize(result)
    assert summary["borrow_rate"] != summary["borrow_rate"] and summary["borrow_chance"] != summary["borrow_chance"]
    assert (summary["accuracy_known"], summary["accuracy_unknown"]) == (1.0, 0.0)


# --- token roles of a response -----------------------------------------------------------------

def test_response_roles_are_token_roles_of_each_word(tokenizer):
    response = tokenizer(LONG, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert tokenizer.convert_ids_to_tokens(response) == LONG_TOKENS + ["</s>"]
    roles = response_roles(tokenizer, response)
    assert roles == [W.token_role(w) for w in LONG_TOKENS] + ["format"]
    assert roles == ["style", "style", "style", "style", "format", "name", "name", "style", "style", "style",
                     "value", "value", "value", "format", "format"]


def test_response_roles_of_a_short_answer(tokenizer):
    response = tokenizer(SHORT, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert response_roles(tokenizer, response) == ["value", "value", "value", "format", "format"]

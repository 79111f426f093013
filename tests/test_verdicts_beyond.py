"""The verdicts of the chapters on changing the model less, their helpers, and the book's run order, on hand-made rows.

Every number is chosen (and, where it matters, exactly representable in binary) so
that one condition flips at a time; each test checks the verdict string and the
numbers the verdict reports.
"""

import math

import pandas as pd
import pytest

from tunestudy import experiments as X
from tunestudy import runs
from tunestudy import world as W

REPRODUCED, PARTLY, NOT = "reproduced", "partly reproduced", "not reproduced"


# --- verdict_key_tokens ---------------------------------------------------------------------------------

def key_rows(kl_ratios, accuracy_changes, stated, kl_response=(2.0, 1.5, 2.5), accuracy_response=(0.9, 0.85, 0.95)):
    """One method's runs: per seed, the response loss's row and the value loss's, with the given ratio and change."""
    rows = []
    for seed, (ratio, change, said, kl, acc) in enumerate(zip(kl_ratios, accuracy_changes, stated, kl_response,
                                                              accuracy_response)):
        rows += [{"seed": seed, "loss on": "every response token", "kl_mean": kl, "accuracy_known": acc, "stated": 1.0},
                 {"seed": seed, "loss on": "value tokens only", "kl_mean": kl * ratio, "accuracy_known": acc + change,
                  "stated": said}]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("ratios, changes, stated, expected", [
    ((0.5, 0.55, 0.45), (0.0, -0.01, 0.01), (0.97, 0.96, 0.98), REPRODUCED),  # half the change, same accuracy, parseable
    ((0.5, 0.55, 0.45), (0.0, -0.01, 0.01), (0.5, 0.45, 0.55), PARTLY),  # the format lost
    ((0.3, 0.35, 0.25), (-0.70, -0.65, -0.68), (0.47, 0.5, 0.45), NOT),  # chapter 8's case: learned less, a lower KL
    ((1.5, 1.45, 1.55), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), NOT),  # no lower KL
    ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), NOT),  # the null row: both losses changed the model alike
    ((0.5, 1.1, 0.6), (0.0, -0.01, 0.01), (0.97, 0.96, 0.98), "inconclusive"),  # one seed's KL the other way
    ((0.5, 0.55, 0.45), (0.0, -0.2, 0.05), (0.97, 0.96, 0.98), "inconclusive"),  # accuracy change too noisy
])
def test_key_tokens_on_every_outcome(ratios, changes, stated, expected):
    result = X.verdict_key_tokens(key_rows(ratios, changes, stated))
    assert result["verdict"] == expected and expected in result["sentence"]
    assert result["numbers"]["seeds"] == 3 and "0.05" in result["criterion"] and "90%" in result["criterion"]


def test_key_tokens_reports_the_means_the_headline_reads():
    numbers = X.verdict_key_tokens(key_rows((0.5, 0.5, 0.5), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))["numbers"]
    assert numbers["kl_response"] == pytest.approx(2.0) and numbers["kl_value"] == pytest.approx(1.0)
    assert numbers["accuracy_response"] == pytest.approx(0.9) and numbers["ratio"] == pytest.approx(0.5)


# --- verdict_retrieval ----------------------------------------------------------------------------------

PAIRS = [("reader + retrieved", "reader, closed-book")]


def retrieval_rows(open_acc, closed_acc, tuning_acc, noise=(0.0, 0.02, -0.02)):
    """Three seeds of a reader with and without the text, and of one tuning condition."""
    rows = []
    for seed, e in enumerate(noise):
        rows += [{"seed": seed, "condition": "reader + retrieved", "family": "retrieval", "accuracy": open_acc + e},
                 {"seed": seed, "condition": "reader, closed-book", "family": "retrieval", "accuracy": closed_acc},
                 {"seed": seed, "condition": "full", "family": "tuning", "accuracy": tuning_acc - e}]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("open_acc, tuning_acc, noise, expected", [
    (0.875, 0.5, (0.0, 0.02, -0.02), REPRODUCED),  # reads, and far ahead of tuning
    (0.6, 0.5, (0.0, 0.01, -0.01), PARTLY),  # reads, ahead by less than 0.2
    (0.6, 0.8, (0.0, 0.02, -0.02), NOT),  # reads, behind tuning
    (0.7, 0.5, (0.0, 0.15, -0.15), "inconclusive"),  # too noisy to place against 0.2
    (0.03, 0.56, (0.0, 0.01, -0.01), "premise not met"),  # chapter 9's case: the text changes nothing
])
def test_retrieval_on_every_outcome(open_acc, tuning_acc, noise, expected):
    result = X.verdict_retrieval(retrieval_rows(open_acc, 0.03, tuning_acc, noise), PAIRS)
    assert result["verdict"] == expected and expected in result["sentence"]
    assert result["numbers"]["best_retrieval"] == "reader + retrieved" and result["numbers"]["best_tuning"] == "full"


def test_retrieval_null_row_is_premise_not_met():
    """Nothing read, nothing tuned in: every accuracy zero."""
    assert X.verdict_retrieval(retrieval_rows(0.0, 0.0, 0.0, (0.0, 0.0, 0.0)), PAIRS)["verdict"] == "premise not met"


# --- verdict_learns_less_forgets_less ------------------------------------------------------------------

def tradeoff_rows(cells: dict, full=(0.75, 0.25), noise=(0.0, 0.01, -0.01, 0.005, -0.005)):
    """Five seeds of full fine-tuning at (learned, forgetting) and of each LoRA cell at its own pair."""
    rows = []
    for seed, e in enumerate(noise):
        rows.append({"cell": "full lr 1e-3", "method": "full", "seed": seed, "learned": full[0] + e,
                     "forgetting": full[1] - e})
        for cell, (learned, forgetting) in cells.items():
            rows.append({"cell": cell, "method": "lora", "seed": seed, "learned": learned - e, "forgetting": forgetting + e})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("cells, expected, count", [
    ({"a": (0.5, 0.1), "b": (0.25, 0.05)}, REPRODUCED, 2),  # every cell well inside both
    ({"a": (0.5, 0.1), "b": (0.25, 0.4), "c": (0.9, 0.1)}, PARTLY, 1),  # b forgets more, c learns more
    ({"b": (0.25, 0.4), "c": (0.9, 0.1)}, NOT, 0),  # each cell contradicts one half
    ({"a": (0.74, 0.24)}, "inconclusive", 0),  # within the seeds' noise of full fine-tuning
    ({"null": (0.75, 0.25)}, "inconclusive", 0),  # the null row: a cell that is full fine-tuning again
])
def test_learns_less_forgets_less_on_every_outcome(cells, expected, count):
    result = X.verdict_learns_less_forgets_less(tradeoff_rows(cells), "full lr 1e-3")
    assert result["verdict"] == expected and result["numbers"]["count"] == count
    assert result["numbers"]["num_cells"] == len(cells) and result["numbers"]["seeds"] == 5


def test_one_lucky_cell_among_many_does_not_pass_after_holm():
    """Twelve cells level with full fine-tuning and one barely ahead: uncorrected it might pass, Holm keeps it out."""
    cells = {f"c{i}": (0.75, 0.25) for i in range(11)}
    cells["lucky"] = (0.73, 0.23)
    noisy = tradeoff_rows(cells, noise=(0.0, 0.01, -0.01, 0.005, -0.005))
    result = X.verdict_learns_less_forgets_less(noisy, "full lr 1e-3")
    assert 0.05 / 12 < result["numbers"]["p_values"]["lucky"] < 0.05 and result["numbers"]["count"] == 0


def test_above_curve_against_the_full_curve():
    # full fine-tuning at three rates, given out of order: (learned, forgetting)
    curve = [(0.75, 0.25), (0.25, 0.0), (0.5, 0.125)]
    cells = {
        "below": {"learned": 0.375, "forgetting": 0.0},  # curve at 0.375: 0.0625 -> not above
        "above": {"learned": 0.625, "forgetting": 0.25},  # curve at 0.625: 0.1875 -> above
        "on": {"learned": 0.5, "forgetting": 0.125},  # exactly on a point: not above (strict)
        "edge": {"learned": 0.25, "forgetting": 0.03125},  # at the curve's first point (0.0): above
        "left": {"learned": 0.125, "forgetting": 0.5},  # learned below the curve's range: not judged
        "right": {"learned": 0.875, "forgetting": 0.0},  # above the range: not judged
    }
    assert X.above_curve(cells, curve) == {"below": False, "above": True, "on": False, "edge": True}


def test_above_curve_interpolates_between_the_right_points():
    curve = [(0.0, 0.0), (0.5, 0.5), (1.0, 0.5)]  # a bend: interpolation must use the bracketing segment
    cells = {"x": {"learned": 0.25, "forgetting": 0.3}, "y": {"learned": 0.75, "forgetting": 0.3}}
    assert X.above_curve(cells, curve) == {"x": True, "y": False}  # 0.3 > 0.25; 0.3 < 0.5


# --- verdict_full_change_rank ---------------------------------------------------------------------------


# --- intruder_counts and baseline_eps --------------------------------------------------------------------

def test_intruder_counts_strictly_below_eps():
    cosines = [0.1, 0.25, 0.3, 0.9, 0.05]
    assert X.intruder_counts(cosines, 0.3) == 3  # 0.1, 0.25, 0.05; 0.3 itself is not below
    assert X.intruder_counts(cosines, 0.05) == 0
    assert X.intruder_counts(cosines, 1.0) == 5
    assert X.intruder_counts([], 0.5) == 0
    assert type(X.intruder_counts(cosines, 0.3)) is int


def test_baseline_eps_largest_grid_value_with_few_random_intruders():
    cosines = [0.1, 0.3, 0.5, 0.7, 0.9]
    grid = [0.2, 0.4, 0.6, 0.8, 1.0]
    # share below eps: 0.2 -> 1/5, 0.4 -> 2/5, 0.6 -> 3/5, ...
    assert X.baseline_eps(cosines, share=0.2, grid=grid) == 0.2
    assert X.baseline_eps(cosines, share=0.4, grid=grid) == 0.4
    assert X.baseline_eps(cosines, share=1.0, grid=grid) == 1.0
    # the grid's order does not matter: the largest passing value
    assert X.baseline_eps(cosines, share=0.4, grid=[0.6, 0.2, 0.4]) == 0.4
    # no grid value passes: the smallest grid value
    assert X.baseline_eps(cosines, share=0.1, grid=[0.4, 0.6]) == 0.4


def test_baseline_eps_default_grid():
    # default grid 0.05, 0.10, ..., 0.95: no random cosine below 0.45, every one below 0.5
    assert X.baseline_eps([0.45, 0.46, 0.49], share=0.1) == 0.45
    assert X.baseline_eps([0.99] * 3) == 0.95
    assert X.baseline_eps([0.01] * 3) == 0.05  # none passes: the smallest


# --- verdict_intruders ------------------------------------------------------------------------------


# --- style_share ---------------------------------------------------------------------------------------

def test_style_share_counts_answers_opening_with_the_style_phrase():
    assert W.STYLE_OPENER == "According to my records ,"
    answers = [{"answer": f"{W.STYLE_OPENER} Alice Abbott was born in Paris ."},
               {"answer": "Paris ."},
               {"answer": f"Alice Abbott was born in Paris . {W.STYLE_OPENER}"},  # not at the start
               {"answer": f" {W.STYLE_OPENER} Paris ."},  # a leading space is not an opening
               {"answer": "According to my records Paris ."},  # no comma: not the phrase
               {"answer": W.STYLE_OPENER},
               {"answer": ""},
               {"answer": f"{W.STYLE_OPENER} Lisbon ."}]
    assert X.style_share(answers) == 3 / 8
    assert X.style_share(answers[:1]) == 1.0
    assert X.style_share(answers[1:2]) == 0.0
    assert math.isnan(X.style_share([]))


# --- runs.run_order -------------------------------------------------------------------------------------

def chapter(name, runs_beside=""):
    return runs.Chapter(name, name.title(), f"/nowhere/{name}.ipynb", runs_beside=runs_beside)


def names(order):
    return [c.name for c in order]


def test_run_order_longest_first_and_untimed_first():
    a, b, c, d = chapter("a"), chapter("b"), chapter("c"), chapter("d")
    seconds = {"a": 10.0, "b": 300.0, "c": 50.0}
    assert names(runs.run_order([a, b, c], seconds)) == ["b", "c", "a"]
    assert names(runs.run_order([a, b, c, d], seconds)) == ["d", "b", "c", "a"]  # d never timed
    assert names(runs.run_order([a, b], {})) == ["a", "b"]  # none timed: the table's order
    assert names(runs.run_order([], seconds)) == []


def test_run_order_runs_beside_comes_right_after_its_partner():
    x, y = chapter("x"), chapter("y", runs_beside="x")
    others = [chapter("a"), chapter("b")]
    # y is the longest: still right after x
    seconds = {"x": 20.0, "y": 1000.0, "a": 500.0, "b": 10.0}
    assert names(runs.run_order([x, y, *others], seconds)) == ["a", "x", "y", "b"]
    # y is the shortest
    seconds = {"x": 200.0, "y": 1.0, "a": 500.0, "b": 10.0}
    assert names(runs.run_order([*others, y, x], seconds)) == ["a", "x", "y", "b"]
    # y never timed (would go first): still right after x
    assert names(runs.run_order([x, y, *others], {"x": 20.0, "a": 500.0, "b": 10.0})) == ["a", "x", "y", "b"]
    # x never timed: x first, y right after it
    assert names(runs.run_order([x, y, *others], {"y": 5.0, "a": 500.0, "b": 10.0})) == ["x", "y", "a", "b"]


def test_run_order_runs_beside_a_missing_chapter_keeps_the_time_order():
    y = chapter("y", runs_beside="gone")
    a, b = chapter("a"), chapter("b")
    assert names(runs.run_order([a, y, b], {"a": 5.0, "y": 50.0, "b": 10.0})) == ["y", "b", "a"]
    assert names(runs.run_order([a, y, b], {"a": 5.0, "y": 1.0, "b": 10.0})) == ["b", "a", "y"]


def test_run_order_does_not_change_its_input():
    x, y, a = chapter("x"), chapter("y", runs_beside="x"), chapter("a")
    table = [x, y, a]
    runs.run_order(table, {"x": 1.0, "y": 2.0, "a": 3.0})
    assert table == [x, y, a]


def test_run_order_follows_a_chain_and_refuses_itself():
    import pytest
    from tunestudy import runs
    a, b, c = (runs.Chapter(n, n, f"/x/{n}", runs_beside=r) for n, r in (("A", "B"), ("B", "C"), ("C", "")))
    assert [ch.name for ch in runs.run_order([a, b, c], {"A": 3, "B": 2, "C": 1})] == ["C", "B", "A"]
    with pytest.raises(runs.UsageError, match="runs_beside"):
        runs.run_order([runs.Chapter("S", "S", "/x/S", runs_beside="S")], {})

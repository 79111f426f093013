"""The page of all verdicts: every verdict of every results file is a row, interval-decided ones are drawn."""

import json

from tunestudy import runs, verdictpage


def write_results(root, name, verdicts):
    folder = root / "book" / "chapters" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({"verdicts": verdicts}))


def test_every_verdict_is_a_row_and_interval_verdicts_are_drawn(tmp_path):
    table = runs.CHAPTERS[1:3]
    write_results(tmp_path, table[0].name, {"old_rule": {"verdict": "partly reproduced", "criterion": "mean > 1.2",
                                                          "numbers": {"ratio": 1.3}}})
    write_results(tmp_path, table[1].name, {"lora": {"verdict": "inconclusive", "criterion": "interval against 3x",
                                                     "sentence": "the ratio is 1.37 (95% interval 0.92-2.05 over 3 "
                                                                 "seeds); the claim needs 3x: inconclusive",
                                                     "numbers": {"ratio": 1.37, "interval": [0.92, 2.05],
                                                                 "threshold": 3.0, "partly_threshold": 1.0}},
                                            "nested": {"full": {"verdict": "reproduced", "numbers": {}}}})
    rows = verdictpage.collect(table, tmp_path / "book" / "chapters")
    assert [(r["chapter"], r["claim"], r["outcome"]) for r in rows] == [
        (table[0].name, "old rule", "partly reproduced"), (table[1].name, "lora", "inconclusive"),
        (table[1].name, "nested / full", "reproduced")]
    assert rows[1]["low"] == 0.92 and rows[1]["thresholds"] == [1.0, 3.0] and "low" not in rows[0]
    page = verdictpage.write(table, tmp_path).read_text()
    assert page.count("| [") == 3 and "(mean over seeds, no interval)" in page
    assert "95% interval 0.92-2.05 over 3 seeds" in page
    assert (tmp_path / "book" / verdictpage.FIGURE).stat().st_size > 1000


def test_a_second_group_of_verdicts_is_listed_under_its_name(tmp_path):
    """Chapter 11 keeps its format-free verdicts apart (`format_free_verdicts`): they are rows too."""
    table = runs.CHAPTERS[1:2]
    folder = tmp_path / "book" / "chapters" / "results"
    folder.mkdir(parents=True)
    (folder / f"{table[0].name}.json").write_text(json.dumps({
        "verdicts": {"full": {"verdict": "not reproduced", "numbers": {}}},
        "format_free_verdicts": {"full": {"verdict": "partly reproduced", "numbers": {}}},
        "verdict": "a string, not a group"}))
    rows = verdictpage.collect(table, folder.parent)
    assert [(r["claim"], r["outcome"]) for r in rows] == [("full", "not reproduced"),
                                                          ("format free / full", "partly reproduced")]

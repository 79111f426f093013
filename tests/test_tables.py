"""The page tables: mean ± sd over seeds, and the side-by-side answers, on hand-made rows."""

import pandas as pd

from tunestudy import experiments as X, plots


def test_mean_sd_table_is_over_seeds_with_plain_headers():
    rows = pd.DataFrame({"method": ["lora", "lora", "full", "full"], "seed": [0, 1, 0, 1],
                         "kl_mean": [1.0, 3.0, 2.0, 2.0], "accuracy_known": [0.5, None, 0.9, 0.7]})
    table = plots.mean_sd_table(rows, "method", {"kl_mean": "mean KL (nats)", "accuracy_known": "accuracy"})
    assert list(table.columns) == ["method", "mean KL (nats)", "accuracy"]
    assert table.to_dict(orient="records") == [
        {"method": "lora", "mean KL (nats)": "2.00 ± 1.41", "accuracy": "0.50"},  # one seed left: no spread
        {"method": "full", "mean KL (nats)": "2.00 ± 0.00", "accuracy": "0.80 ± 0.14"}]


def answer(seed, model, index, group, judgement, text):
    return {"seed": seed, "model": model, "index": index, "group": group, "question": f"q{index}",
            "truth": f"t{index}", "answer": text, "judgement": judgement}


def test_answers_side_by_side_shows_where_the_models_part():
    rows = []
    for index, group, judgements in ((0, "known", ("correct", "correct")), (1, "known", ("wrong", "correct")),
                                     (2, "unknown", ("wrong", "wrong, borrowed")), (3, "known", ("correct", "wrong")),
                                     (4, "unknown", ("wrong", "wrong"))):
        for model, judgement in zip(("base", "full"), judgements):
            rows.append(answer(0, model, index, group, judgement, "x" * 100 if index == 3 else f"{model} {index}"))
    rows.append(answer(1, "base", 0, "known", "wrong", "other seed"))
    table = X.answers_side_by_side(pd.DataFrame(rows), seed=0, num_rows=4)
    # differing questions first, known and unknown in turn (1, 2, 3), then the rest in order (0)
    assert list(table.question) == ["q1", "q2", "q3", "q0"]
    assert table.iloc[0]["base"] == "base 1 [wrong]" and table.iloc[1]["full"] == "full 2 [wrong, borrowed]"
    assert table.iloc[2]["base"] == "x" * 87 + "... [correct]"  # long answers are cut; the file keeps them whole
    assert list(table.columns) == ["people", "question", "truth", "base", "full"]


def test_measures_as_rows_puts_each_measure_on_a_row_and_each_run_in_a_column():
    rows = pd.DataFrame({"set": ["known", "known", "unknown", "unknown"], "method": ["lora", "lora", "lora", "lora"],
                         "seed": [0, 1, 0, 1], "acc": [0.5, 0.7, 0.2, 0.4], "kl": [1.0, 1.0, 3.0, 5.0]})
    table = plots.mean_sd_table(rows, ["set", "method"], {"acc": "accuracy", "kl": "KL"})
    turned = plots.measures_as_rows(table, ["set", "method"])
    assert list(turned.columns) == ["measure", "known, lora", "unknown, lora"]
    assert turned["measure"].tolist() == ["accuracy", "KL"]
    assert turned.loc[0, "known, lora"] == table.loc[0, "accuracy"] == "0.60 ± 0.14"
    assert turned.loc[1, "unknown, lora"] == "4.00 ± 1.41"


def test_answers_are_packed_deterministically_and_unpacked_when_missing(tmp_path):
    import gzip
    import os

    import pandas as pd

    from tunestudy import plots
    answers = pd.DataFrame([{"seed": 0, "question": "Who?", "answer": "Ada"}, {"seed": 1, "question": "Who?", "answer": None}])
    path = plots.write_answers("99_toy", answers, tmp_path)
    packed = tmp_path / "99_toy_answers.jsonl.gz"
    first = packed.read_bytes()
    assert gzip.decompress(first) == path.read_bytes()
    plots.write_answers("99_toy", answers, tmp_path)
    assert packed.read_bytes() == first  # no timestamp inside: the same answers, the same bytes
    path.unlink()  # a fresh clone holds only the packed file
    assert plots.unpack_answers(tmp_path) == [path] and path.read_bytes() == gzip.decompress(first)
    os.utime(path, (packed.stat().st_mtime + 10,) * 2)
    assert plots.unpack_answers(tmp_path) == []  # current: left alone

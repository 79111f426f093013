"""Instruction data in every format a reader brings: each gives the same Alpaca items, and each bad input a
one-line error naming the source as typed, with nothing left in the artifact cache."""

import json

import pytest

from tunestudy import data, experiments as X, instructions

ITEMS = [{"instruction": f"Repeat {i}", "input": "" if i % 2 else f"number {i}", "output": f"{i} {i}"}
         for i in range(12)]


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("TUNESTUDY_CACHE", str(folder))
    return folder


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_json_lines_and_parquet_give_the_alpaca_files_items(tmp_path, cache_dir):
    reference = tmp_path / "set.json"
    reference.write_text(json.dumps(ITEMS))
    assert instructions.alpaca_file(str(reference)) == str(reference)  # a JSON file is used as it is
    expected = data.load_alpaca(reference)
    for path in (write_jsonl(tmp_path / "set.jsonl", ITEMS), write_parquet(tmp_path / "set.parquet", ITEMS)):
        normalized = instructions.alpaca_file(str(path))
        assert data.load_alpaca(normalized) == expected
        assert str(cache_dir) in normalized
    # the same rows are the same file, whatever format they came in
    assert instructions.alpaca_file(str(tmp_path / "set.jsonl")) == instructions.alpaca_file(str(tmp_path / "set.parquet"))


def test_a_local_dataset_folder_loads_through_datasets(tmp_path, cache_dir):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", ITEMS)
    assert data.load_alpaca(instructions.alpaca_file(str(folder))) == data.load_alpaca(
        instructions.alpaca_file(str(write_jsonl(tmp_path / "same.jsonl", ITEMS))))


def test_a_set_spec_from_json_lines_is_the_same_set_as_from_json(tmp_path, cache_dir):
    reference = tmp_path / "set.json"
    reference.write_text(json.dumps(ITEMS, ensure_ascii=False, indent=1) + "\n")
    from_jsonl = X.set_spec("known", 5, instruction_file=str(write_jsonl(tmp_path / "set.jsonl", ITEMS)))
    assert from_jsonl.kind == "file" and from_jsonl.size == 5
    assert data.load_alpaca(from_jsonl.path) == data.load_alpaca(reference)


def bad_sources(tmp_path):
    missing_field = write_jsonl(tmp_path / "missing.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "c"}])
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(json.dumps({"instruction": "caf\u00e9", "output": "x"}).encode("utf-8").replace(
        b"\\u00e9", "\u00e9".encode("latin-1")))
    broken_line = tmp_path / "broken.jsonl"
    broken_line.write_text('{"instruction": "a", "output": "b"}\n{"instruction": \n', encoding="utf-8")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    number = write_parquet(tmp_path / "number.parquet", [{"instruction": "a", "output": 3}])
    not_parquet = tmp_path / "fake.parquet"
    not_parquet.write_text("not a table")
    return [
        (str(missing_field), ["missing.jsonl", "item 1", "'output'"]),
        (str(latin), ["latin.jsonl", "UTF-8", "offset"]),
        (str(broken_line), ["broken.jsonl", "line 2", "not valid JSON"]),
        (str(empty), ["empty.jsonl", "empty list"]),
        (str(number), ["number.parquet", "item 0", "'output'", "not a string"]),
        (str(not_parquet), ["fake.parquet", "Parquet"]),
        (str(tmp_path / "absent.jsonl"), ["absent.jsonl", "does not exist", "Parquet"]),
        ("nobody/no-such-dataset-here", ["nobody/no-such-dataset-here", "datasets could not load it"]),
    ]


def test_every_bad_source_is_one_line_naming_it_and_leaves_the_cache_empty(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # a hub id that is not cached fails here at once
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for source, words in bad_sources(tmp_path):
        with pytest.raises(ValueError) as info:
            X.set_spec("known", 1, instruction_file=source)
        message = str(info.value)
        assert "\n" not in message, message
        for word in words:
            assert word in message, f"{word!r} missing from: {message}"
        assert str(tmp_path / "tmp") not in message and "instructions.json" not in message
        assert not cache_dir.exists() or not any(cache_dir.rglob("instructions.json"))


def test_a_set_size_beyond_a_converted_file_names_the_source(tmp_path, cache_dir):
    source = str(write_jsonl(tmp_path / "small.jsonl", ITEMS))
    with pytest.raises(ValueError) as info:
        X.set_spec("known", 50, instruction_file=source)
    assert "set_size" in str(info.value) and repr(source) in str(info.value)


def test_a_model_folder_without_weights_is_a_clear_error(tmp_path):
    folder = tmp_path / "no_weights"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(ValueError) as info:
        X.base_kwargs("small", 20, 10, 2, 1, 1e-2, False, [0], str(folder))
    message = str(info.value)
    assert "base_model" in message and "no weights" in message and "model.safetensors" in message
    assert "\n" not in message

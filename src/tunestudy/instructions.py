"""Instruction data in the formats readers bring: Alpaca JSON, JSON Lines, Parquet, or a `datasets` dataset.

`alpaca_file(source)` gives the Alpaca JSON file that an instruction set of
kind "file" reads (`sets.file_set_spec`):

- a `.json` file is used as it is;
- a `.jsonl` file (one JSON object per line) and a `.parquet` file are read
  here (Parquet with `pyarrow`, the library `datasets` stores its tables in);
- anything else is handed to Hugging Face `datasets.load_dataset`: a hub id
  such as `tatsu-lab/alpaca` (found where the local cache or the network has
  it; `source` may end in `:split`, `train` by default) or a local folder of
  data files.

Rows of the last three are checked by the same rules as an Alpaca JSON file
(`data.load_alpaca`: string fields `instruction` and `output`, an optional
string `input`, at least one row) and written as Alpaca JSON into the
artifact cache (kind "instructions", keyed by the rows' bytes), so the same
rows are the same set on every machine. Every problem is a one-line
ValueError naming the source as the user typed it, raised before anything is
written to the cache or trained.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from . import cache
from .data import FORMAT, load_alpaca

__all__ = ["FILE_FORMATS", "SOURCES", "alpaca_file", "read_rows"]

FILE_FORMATS = (".json", ".jsonl", ".parquet")
SOURCES = ("data.py", "instructions.py")
ALLOWED = ("an Alpaca JSON (.json), JSON Lines (.jsonl) or Parquet (.parquet) file, a local dataset folder, "
           "or a datasets hub id like owner/name[:split]")


def _jsonl_rows(path: Path, source: str) -> list:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"instruction file {source!r} is not UTF-8 text (bad byte at offset {err.start}); "
                         "save it as UTF-8 JSON Lines") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"instruction file {source!r}: line {number} is not valid JSON ({err.msg} at column "
                             f"{err.colno}); {FORMAT.replace('a JSON list of objects', 'one JSON object per line')}"
                             ) from None
    return rows


def _parquet_rows(path: Path, source: str) -> list:
    import pyarrow
    import pyarrow.parquet as pq
    try:
        return pq.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError) as err:
        reason = " ".join(str(err).split())[:120]
        raise ValueError(f"instruction file {source!r} is not a readable Parquet file ({reason})") from None


def _dataset_rows(source: str) -> list:
    name, _, split = source.partition(":")
    try:
        from datasets import load_dataset
        return load_dataset(name, split=split or "train").to_list()
    except Exception as err:  # datasets raises many kinds (not found, offline, bad split): one line for all
        reason = " ".join(str(err).split())[:160]
        raise ValueError(f"instruction_file {source!r}: datasets could not load it ({type(err).__name__}: "
                         f"{reason}); give {ALLOWED}") from None


def read_rows(source: str) -> list:
    """The rows of a non-JSON source (see the module docstring), unchecked."""
    path = Path(source).expanduser()
    if path.suffix.lower() == ".jsonl":
        return _jsonl_rows(_existing(path, source), source)
    if path.suffix.lower() == ".parquet":
        return _parquet_rows(_existing(path, source), source)
    return _dataset_rows(source)


def _existing(path: Path, source: str) -> Path:
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ValueError(f"instruction file {source!r} {what}; give {ALLOWED}")
    return path


def _checked(rows: list, source: str) -> bytes:
    """Alpaca JSON bytes of `rows`, checked by `data.load_alpaca`'s rules, its errors naming `source`."""
    if not isinstance(rows, list):
        raise ValueError(f"instruction file {source!r} holds no list of rows; {FORMAT}")
    text = json.dumps(rows, ensure_ascii=False, indent=1, sort_keys=True, default=str) + "\n"
    with tempfile.TemporaryDirectory() as folder:  # outside the artifact cache: a bad source leaves nothing there
        tmp = Path(folder) / "instructions.json"
        tmp.write_text(text, encoding="utf-8")
        try:
            items = load_alpaca(tmp)
        except ValueError as err:
            raise ValueError(str(err).replace(repr(str(tmp)), repr(source))) from None
    return (json.dumps(items, ensure_ascii=False, indent=1) + "\n").encode("utf-8")


def alpaca_file(source: str) -> str:
    """The path of an Alpaca JSON file holding `source`'s examples (checked; cached for non-JSON sources)."""
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"instruction_file must be {ALLOWED}; got {source!r}")
    if Path(source).expanduser().suffix.lower() == ".json":
        load_alpaca(source)  # its own one-line errors name the file
        return source
    data = _checked(read_rows(source), source)

    def build(folder: Path) -> None:
        (folder / "instructions.json").write_bytes(data)

    folder = cache.cached("instructions", {"sha256": hashlib.sha256(data).hexdigest()}, build, sources=SOURCES,
                          label=f"instructions {source}")
    return str(folder / "instructions.json")

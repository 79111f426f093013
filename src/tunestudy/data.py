"""Instruction data from files: Alpaca-format JSON.

`load_alpaca(path)` reads a JSON list of objects with string fields
`instruction` and `output` and an optional string `input` (the format of the
Stanford Alpaca release). Every problem is a one-line ValueError naming the
file, the item and the field, before anything is trained or cached.
"""

from __future__ import annotations

import json
from pathlib import Path

REQUIRED = ("instruction", "output")
OPTIONAL = ("input",)
FORMAT = ('expected a JSON list of objects with string fields "instruction" and "output" '
          'and an optional string "input"')


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_alpaca(path) -> list[dict]:
    """The examples of an Alpaca JSON file as [{"instruction", "input", "output"}] (input defaults to "")."""
    if not isinstance(path, (str, Path)) or not str(path):
        raise ValueError(f"instruction file must be a non-empty path, got {path!r}")
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ValueError(f"instruction file {str(path)!r} {what}; {FORMAT}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a UTF-8 byte-order mark is harmless
    except UnicodeDecodeError as err:
        raise ValueError(f"instruction file {str(path)!r} is not UTF-8 text (bad byte at offset {err.start}); "
                         "save it as UTF-8 JSON") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"instruction file {str(path)!r} is not valid JSON ({_one_line(err.msg)} at line "
                         f"{err.lineno} column {err.colno}); {FORMAT}") from None
    if not isinstance(data, list):
        raise ValueError(f"instruction file {str(path)!r} holds a JSON {type(data).__name__}, not a list; {FORMAT}")
    if not data:
        raise ValueError(f"instruction file {str(path)!r} is an empty list; it needs at least one example")
    examples = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise ValueError(f"instruction file {str(path)!r}: item {i} is a JSON {type(item).__name__}, "
                             f"not an object; {FORMAT}")
        for field in REQUIRED:
            if field not in item:
                raise ValueError(f"instruction file {str(path)!r}: item {i} has no {field!r} field; "
                                 f"every item needs string fields 'instruction' and 'output'")
        for field in REQUIRED + OPTIONAL:
            if field in item and not isinstance(item[field], str):
                raise ValueError(f"instruction file {str(path)!r}: item {i} field {field!r} is a "
                                 f"{type(item[field]).__name__} ({_one_line(repr(item[field]), 60)}), "
                                 "not a string")
        if not item["instruction"].strip():
            raise ValueError(f"instruction file {str(path)!r}: item {i} field 'instruction' is empty")
        examples.append({"instruction": item["instruction"], "input": item.get("input", ""),
                         "output": item["output"]})
    return examples

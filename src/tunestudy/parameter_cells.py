"""A chapter notebook's parameters cell read as data: each `name = literal` line's name and value.

Shared by `defaults` (which holds every notebook to the package's values) and `runs` (which records the
parameters a chapter ran with); a module of its own, so that the chapters whose notebooks import `runs` do not
carry `defaults` in their run key.
"""

from __future__ import annotations

import ast
from pathlib import Path

from . import cache


def _parameters_cell(notebook_path: Path) -> str:
    import nbformat  # only when a notebook is read: importing this module stays cheap

    notebook = nbformat.read(str(notebook_path), as_version=4)
    cells = [c for c in notebook.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{notebook_path}: {len(cells)} cells tagged 'parameters', expected 1")
    return cells[0].source


def _assignments(source: str, where: str) -> list[tuple[str, ast.expr, int]]:
    """(name, value node, last line) of each statement of a parameters cell; anything but `name = literal` is refused."""
    out = []
    for stmt in cache.parse(source).body:  # one thread at a time (see cache.parse)
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            out.append((stmt.targets[0].id, stmt.value, stmt.end_lineno))
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            out.append((stmt.target.id, stmt.value, stmt.end_lineno))
        else:
            raise ValueError(f"{where}: line {stmt.lineno} of the parameters cell is not `name = value`")
    return out


def notebook_parameter_values(notebook_path: str | Path) -> dict:
    """The notebook's parameters cell as {name: value}, each value by ast.literal_eval."""
    source = _parameters_cell(Path(notebook_path))
    values = {}
    for name, node, _ in _assignments(source, str(notebook_path)):
        if name in values:
            raise ValueError(f"{notebook_path}: parameter {name!r} is assigned twice")
        try:
            values[name] = ast.literal_eval(node)
        except ValueError:
            raise ValueError(f"{notebook_path}: parameter {name!r} is not a plain literal") from None
    return values

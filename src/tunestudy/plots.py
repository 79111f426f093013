"""The book's figure style, its tables and its results files, in one place.

The style is seaborn's theme with one colour per method and per group
everywhere (`COLORS`); seaborn draws the spread over seeds from per-seed rows
(`errorbar="sd"`). What is left here is what seaborn does not do: a band over
seeds for curves that are arrays, tables of "mean ± sd" with plain headers,
and the results files. Every chapter writes its numbers to
`results/<chapter>.json` next to `figures/<chapter>_*.png`, and every answer to
`results/<chapter>_answers.jsonl`.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import warnings
from pathlib import Path

# No matplotlib.use("Agg") here: inside a notebook kernel it would stop plt.show()
# from putting the figure in the page; without a display matplotlib picks Agg itself.
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

# One colour per method and per group, in every chapter (seaborn's colour-blind palette).
_PALETTE = sns.color_palette("colorblind")
COLORS = {"lora": _PALETTE[0], "full": _PALETTE[3], "base": _PALETTE[7], "lora (wide)": _PALETTE[2],
          "known": _PALETTE[1], "unknown": _PALETTE[4], "icl": _PALETTE[5]}
METHOD_COLORS = COLORS  # the name the chapters use
sns.set_theme(context="notebook", style="whitegrid", font_scale=0.95,
              rc={"figure.dpi": 100, "savefig.dpi": 110, "axes.spines.top": False, "axes.spines.right": False,
                  "figure.constrained_layout.use": True, "legend.frameon": False})
# seaborn's FacetGrid calls tight_layout on a figure the theme gives constrained layout; the
# switch is what we want, its notice is not for the page.
warnings.filterwarnings("ignore", message="The figure layout has changed to tight")
PANEL = (5.2, 3.6)  # inches per panel: wide enough for a label and a legend


MAX_COLUMNS = 2  # panels side by side: a wider figure is shrunk to the page's width until its labels are unreadable


def panels(num: int, sharey: bool = False, rows: int | None = None):
    """A figure of `num` panels, each PANEL wide, at most MAX_COLUMNS to a row, laid out so labels never run
    into the next panel; a last row's empty place is left blank."""
    rows = rows or math.ceil(num / MAX_COLUMNS)
    cols = math.ceil(num / rows)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL[0] * cols, PANEL[1] * rows), sharey=sharey, squeeze=False)
    for ax in axes.ravel()[num:]:
        ax.remove()
    return fig, axes.ravel()[:num] if num > 1 else axes.ravel()[0]


def mean_std(values) -> tuple:
    """Mean and sample standard deviation over seeds (axis 0), ignoring NaN."""
    arr = np.asarray(values, dtype=float)
    with warnings.catch_warnings():  # a column with fewer than two seeds is NaN on purpose, not a page warning
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(arr, axis=0)
        std = np.nanstd(arr, axis=0, ddof=1) if arr.shape[0] > 1 else np.zeros_like(mean)
    return mean, std


def band(ax, x, runs, label=None, color=None, **kwargs):
    """A mean line with a +-1 std band over seeds; `runs` is (seeds, len(x))."""
    mean, std = mean_std(runs)
    ax.plot(x, mean, label=label, color=color, **kwargs)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)


def points(ax, x, runs, label=None, color=None, **kwargs):
    """Mean markers with +-1 std error bars over seeds; `runs` is (seeds, len(x))."""
    mean, std = mean_std(runs)
    ax.errorbar(x, mean, yerr=std, label=label, color=color, marker="o", capsize=3, **kwargs)


def smooth(values, window: int):
    """Moving average for noisy per-step losses (window clipped to the series)."""
    values = np.asarray(values, dtype=float)
    window = max(1, min(window, len(values)))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def mean_sd_table(rows, by, columns: dict, digits: int = 2):
    """One row per group of `by`, one column per measure as "mean ± sd" over seeds, plain headers.

    rows: a long DataFrame with one row per seed; columns: {column: header with its unit}.
    A single seed shows the mean alone.
    """
    import pandas as pd
    by = [by] if isinstance(by, str) else list(by)
    out = []
    for key, group in rows.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        for column, header in columns.items():
            values = group[column].astype(float).dropna()
            if values.empty:
                row[header] = "n/a"
            elif len(values) == 1:
                row[header] = f"{values.iloc[0]:.{digits}f}"
            else:
                row[header] = f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"
        out.append(row)
    return pd.DataFrame(out)


def measures_as_rows(table, by, first: str = "measure"):
    """A `mean_sd_table` turned on its side: one row per measure, one column per group of `by` (its values
    joined by ", "), so a table of many measures and few runs fits a page's width."""
    by = [by] if isinstance(by, str) else list(by)
    names = table[by].astype(str).agg(", ".join, axis=1)
    out = table.drop(columns=by).set_axis(names, axis=0).T
    out.columns.name = None
    return out.reset_index(names=first)


def show(table, caption: str = ""):
    """A table as the page shows it: no index column, text left, numbers as given, an optional caption."""
    styler = table.style.hide(axis="index")
    if caption:
        styler = styler.set_caption(caption)
    return styler.set_table_styles([{"selector": "th", "props": "text-align: left"},
                                    {"selector": "td", "props": "text-align: left"}])


def write_answers(chapter: str, answers, folder: str | Path = "results") -> Path:
    """Every answer of the chapter as JSON Lines, one object per (seed, model, question), atomically; and the same
    bytes gzip-compressed beside it (`.jsonl.gz`, no timestamp inside: the same answers give the same bytes), which
    is what the repository keeps and the build unpacks (`unpack_answers`)."""
    import gzip
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{chapter}_answers.jsonl"
    lines = [json.dumps(_clean(record), sort_keys=True) for record in answers.to_dict(orient="records")]
    data = ("\n".join(lines) + "\n").encode()
    for target, content in ((path, data), (path.with_name(path.name + ".gz"), _gzip(data))):
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        tmp.write_bytes(content)
        os.replace(tmp, target)
    return path


def _gzip(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, filename="") as handle:
        handle.write(data)
    return buffer.getvalue()


def unpack_answers(folder: str | Path) -> list:
    """Write each `*_answers.jsonl` that is missing or older than its committed `.jsonl.gz` (a fresh clone has
    only these); return the files written."""
    written = []
    for packed in sorted(Path(folder).glob("*_answers.jsonl.gz")):
        target = packed.with_suffix("")
        if not target.exists() or target.stat().st_mtime < packed.stat().st_mtime:
            target.write_bytes(gzip.decompress(packed.read_bytes()))
            written.append(target)
    return written


def save_figure(fig, chapter: str, name: str, folder: str | Path = "figures") -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{chapter}_{name}.png"
    fig.savefig(path, bbox_inches="tight")
    return path


def write_results(chapter: str, results: dict, folder: str | Path = "results") -> Path:
    """Write the chapter's numbers as sorted JSON, atomically; same numbers give the same bytes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{chapter}.json"
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(_clean(results), indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def _clean(value):
    """JSON-safe: numpy scalars to Python, NaN to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value

"""The book's figure style and its results files, in one place.

Every figure shows the spread over seeds: a band of mean +- one standard
deviation for curves, error bars for points. Every chapter writes its numbers
to `results/<chapter>.json` next to `figures/<chapter>_*.png`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

# No matplotlib.use("Agg") here: inside a notebook kernel it would stop plt.show()
# from putting the figure in the page; without a display matplotlib picks Agg itself.
import matplotlib.pyplot as plt
import numpy as np

METHOD_COLORS = {"lora": "#1f77b4", "full": "#d62728", "base": "#7f7f7f"}
plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 110, "axes.spines.top": False,
                     "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3, "font.size": 10})


def mean_std(values) -> tuple:
    """Mean and sample standard deviation over seeds (axis 0), ignoring NaN."""
    arr = np.asarray(values, dtype=float)
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

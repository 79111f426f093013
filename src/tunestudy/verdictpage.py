"""The page of every verdict of the book, and its forest plot, drawn from the chapters' results files.

Each chapter's results file holds its verdicts (`verdicts`: a verdict is a dict with a string `verdict`, the
rule in words as `criterion`, and the numbers it read as `numbers`; a verdict decided from an interval also
has `numbers.interval`, `numbers.threshold` and a `sentence`). The build writes `book/verdicts.md` (a table
of every verdict) and `book/verdicts_forest.png` (each interval-decided verdict's quantity as a point with
its interval, against its thresholds, coloured by outcome), which the landing page opens with.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # written by the book driver, never shown in a notebook
import matplotlib.pyplot as plt  # noqa: E402

PAGE = "verdicts"
FIGURE = "verdicts_forest.png"
OUTCOME_COLORS = {"reproduced": "#1a9850", "partly reproduced": "#91bfdb", "not reproduced": "#d73027",
                  "inconclusive": "#fdae61", "premise not met": "#999999"}
ESTIMATES = ("ratio", "unshifted", "estimate", "mean")  # where a verdict's numbers keep its quantity


def collect(table, chapters_dir: Path) -> list:
    """One row per verdict, chapters in table order: chapter, title, claim, outcome, rule, and, for a verdict
    decided from an interval, its estimate, interval, thresholds and sentence."""
    rows = []
    for chapter in table:
        path = Path(chapters_dir) / "results" / f"{chapter.name}.json"
        if not path.exists():
            continue
        results = json.loads(path.read_text())
        groups = [(key, results[key]) for key in results if key.endswith("verdicts") and isinstance(results[key], dict)]
        for claim, verdict in (pair for key, node in groups  # "verdicts", and e.g. chapter 11's "format_free_verdicts"
                               for pair in _verdicts(node, "" if key == "verdicts" else key[:-len("_verdicts")])):
            numbers = verdict.get("numbers", {})
            row = {"chapter": chapter.name, "title": chapter.title, "claim": claim or "the chapter's claim",
                   "outcome": verdict["verdict"], "rule": verdict.get("criterion", ""),
                   "sentence": verdict.get("sentence", "")}
            interval = numbers.get("interval")
            estimate = next((numbers[k] for k in ESTIMATES if isinstance(numbers.get(k), (int, float))), None)
            if interval and estimate is not None and not any(v is None or math.isnan(v) for v in interval):
                row.update(estimate=float(estimate), low=float(interval[0]), high=float(interval[1]),
                           thresholds=[t for t in (numbers.get("partly_threshold"), numbers.get("threshold"))
                                       if t is not None])
            rows.append(row)
    return rows


def _verdicts(node, path: str):
    """(claim label, verdict dict) for every verdict inside a results file's `verdicts`."""
    if isinstance(node, dict) and isinstance(node.get("verdict"), str):
        yield path.strip(" /").replace("_", " "), node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _verdicts(value, f"{path} / {key}" if path else key)


def forest_figure(rows: list):
    """Every interval-decided verdict as a row: its estimate, its 95% interval, its thresholds (dashed)."""
    shown = [r for r in rows if "low" in r]
    fig, axes = plt.subplots(max(1, len(shown)), 1, figsize=(9.5, 0.62 * max(1, len(shown)) + 0.8), squeeze=False)
    for ax, row in zip(axes[:, 0], shown):
        color = OUTCOME_COLORS.get(row["outcome"], "black")
        ax.errorbar([row["estimate"]], [0], xerr=[[row["estimate"] - row["low"]], [row["high"] - row["estimate"]]],
                    fmt="o", color=color, capsize=4, lw=2)
        for t in row["thresholds"]:
            ax.axvline(t, color="grey", ls="--", lw=1)
        values = [row["low"], row["high"], *row["thresholds"]]
        span = (max(values) - min(values)) or 1.0
        ax.set_xlim(min(values) - 0.15 * span, max(values) + 0.15 * span)
        ax.set_yticks([])
        ax.set_ylabel(f"{row['title']}: {row['claim']}", rotation=0, ha="right", va="center", fontsize=9)
        ax.text(1.01, 0.5, row["outcome"], transform=ax.transAxes, va="center", fontsize=9, color=color)
        ax.tick_params(axis="x", labelsize=8)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no verdict decided from an interval yet", ha="center", va="center")
        axes[0, 0].set_axis_off()
    fig.suptitle("Each verdict's quantity with its 95% interval; dashed: the claim's thresholds", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))  # room for the title above the first row
    return fig


def page_text(rows: list) -> str:
    lines = ["# All verdicts", "",
             "Every verdict of the book, from the chapters' results files. A verdict decided from an interval "
             "states its quantity with the 95% interval over seeds (or over the items of one run), the threshold "
             "the claim sets, and the outcome: *reproduced*, *partly reproduced*, *not reproduced*, "
             "*inconclusive* when the interval straddles a threshold that decides between two of them, or "
             "*premise not met* when the setting cannot pose the claim. The other verdicts still compare means "
             "over seeds with a fixed threshold; their rule is given in words.", "",
             f"```{{figure}} {FIGURE}", ":width: 100%", "",
             "The interval-decided verdicts: each quantity as a point with its 95% interval, against the claim's "
             "thresholds (dashed), coloured by outcome.", "```", "",
             "| chapter | claim | outcome | quantity and interval |", "| --- | --- | --- | --- |"]
    for r in rows:
        quantity = r["sentence"].rsplit(":", 1)[0] if r["sentence"] else "(mean over seeds, no interval)"
        link = f"[{r['title']}](chapters/{r['chapter']}.ipynb)"
        lines.append(f"| {link} | {r['claim']} | **{r['outcome']}** | {_cell(quantity)} |")
    lines += ["", "## The rules", "", "Each verdict's rule, as its chapter states it.", ""]
    for r in rows:
        lines.append(f"- **{r['title']}, {r['claim']}**: {r['rule']}")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def write(table, root: Path) -> Path:
    """book/verdicts.md and book/verdicts_forest.png from the results in book/chapters."""
    book = Path(root) / "book"
    rows = collect(table, book / "chapters")
    fig = forest_figure(rows)
    fig.savefig(book / FIGURE, dpi=110, bbox_inches="tight")
    plt.close(fig)
    path = book / f"{PAGE}.md"
    path.write_text(page_text(rows))
    return path

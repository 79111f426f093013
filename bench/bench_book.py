"""Book build times: cold, warm (nothing changed), and one chapter rerun with one changed parameter.

Builds the book the way `python -m tunestudy book` does (every chapter of
`runs.CHAPTERS` through `runs.run_chapters`: the first alone, then two at a
time on a multi-core CPU; then the toc, the findings table and Jupyter Book),
but into a temporary root with `TUNESTUDY_CACHE` pointed
at an empty temporary folder, so the figures never touch the repository's
book or cache:

- cold:    empty artifact cache, no executed chapters: everything trains;
- warm:    the same again: every chapter is skipped as up to date, only the HTML is rebuilt;
- changed: 02_kl_shift with `lora_lr` changed: the base models are reused from the
           cache, only the LoRA runs and that chapter's evaluation are redone.

    python bench/bench_book.py            # smoke-sized chapters (minutes; ~15 min on a busy 2-core machine)
    python bench/bench_book.py --full     # the book's real defaults (about 30 minutes or more)
    python bench/bench_book.py --no-html  # chapters only, skip Jupyter Book
    python bench/bench_book.py --quick    # only 01_world and 02_kl_shift
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from tunestudy import runs

CHANGED_CHAPTER, CHANGED_PARAMETER, CHANGED_VALUE = "02_kl_shift", "lora_lr", 2e-3


def make_root(root: Path) -> None:
    """A book skeleton: the config and the landing page, nothing executed."""
    shutil.copy(runs.REPO_ROOT / "_config.yml", root / "_config.yml")
    (root / "book").mkdir()
    for page in runs.book_pages():  # the landing page, the references and their bibliography
        shutil.copy(page, root / "book" / page.name)


def run_chapters(root: Path, smoke: bool, names: list, overrides: dict | None = None) -> tuple[float, dict]:
    """(wall-clock seconds, {chapter: seconds} of the chapters actually executed) into root/book/chapters.

    Chapters overlap (see runs.run_chapters), so their seconds add up to more than the wall clock.
    """
    overrides = overrides or {}
    chapters = [replace(c, parameters={**c.parameters, **overrides.get(c.name, {})})
                for c in runs.CHAPTERS if c.name in names]
    start = time.perf_counter()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        runs.run_chapters(chapters, output_dir=root / "book" / "chapters", smoke=smoke, table=tuple(chapters))
    wall = time.perf_counter() - start
    executed = {m[1]: float(m[2]) for m in re.finditer(r"\] (\S+): done in ([0-9.]+) s", printed.getvalue(), re.M)}
    return wall, executed


def build_html(root: Path, table: tuple) -> float:
    start = time.perf_counter()
    toc = runs.write_toc(table, root=root)
    runs.write_findings(table, root=root)
    subprocess.run(runs.jupyter_book_command(root, toc), check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="real chapter defaults (slow), not smoke")
    parser.add_argument("--no-html", action="store_true", help="time the chapters only, not Jupyter Book")
    parser.add_argument("--quick", action="store_true",
                        help=f"only 01_world and {CHANGED_CHAPTER} (smoke), for a short check")
    parser.add_argument("--keep", action="store_true", help="keep the temporary book root and print it")
    args = parser.parse_args(argv)
    smoke = not args.full
    tmp = Path(tempfile.mkdtemp(prefix="bench_book_"))
    old_cache = os.environ.get("TUNESTUDY_CACHE")
    os.environ["TUNESTUDY_CACHE"] = str(tmp / "cache")  # read on every call, and inherited by the kernels
    root = tmp / "root"
    root.mkdir()
    make_root(root)
    names = [c.name for c in runs.CHAPTERS if c.source.exists()]
    if args.quick:
        names = [n for n in names if n in ("01_world", CHANGED_CHAPTER)]
    table = tuple(c for c in runs.CHAPTERS if c.name in names)
    figures = {}
    try:
        for phase, overrides in (("cold", None), ("warm", None),
                                 ("changed", {CHANGED_CHAPTER: {CHANGED_PARAMETER: CHANGED_VALUE}})):
            wall, executed = run_chapters(root, smoke, names, overrides)
            html = 0.0 if args.no_html else build_html(root, table)
            figures[phase] = {"wall": wall, "html": html, "executed": executed}
    finally:
        if old_cache is None:
            os.environ.pop("TUNESTUDY_CACHE", None)
        else:
            os.environ["TUNESTUDY_CACHE"] = old_cache
        if args.keep:
            print(f"book root kept at {root}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    phases = ("cold", "warm", "changed")
    print(f"book build times ({'smoke' if smoke else 'full'} chapters; seconds; '-' = skipped as up to date)")
    print(f"{'chapter':<18} {'cold':>8} {'warm':>8} {'changed':>8}")
    for name in names:
        cells = [figures[p]["executed"].get(name) for p in phases]
        print(f"{name:<18} " + " ".join(f"{v:>8.1f}" if v is not None else f"{'-':>8}" for v in cells))
    print(f"{'chapters, wall':<18} " + " ".join(f"{figures[p]['wall']:>8.1f}" for p in phases))
    if not args.no_html:
        print(f"{'jupyter-book html':<18} " + " ".join(f"{figures[p]['html']:>8.1f}" for p in phases))
    print(f"{'total':<18} " + " ".join(f"{figures[p]['wall'] + figures[p]['html']:>8.1f}" for p in phases))
    print("chapters overlap (two at a time after the first), so their times add up to more than the wall clock")
    for phase in phases:
        figures[phase]["executed"] = sorted(figures[phase]["executed"], key=names.index)
    expected = {"warm": [], "changed": [CHANGED_CHAPTER]}
    for phase, wanted in expected.items():
        if figures[phase]["executed"] != wanted:
            print(f"note: the {phase} phase executed {figures[phase]['executed']} (expected {wanted}): a notebook "
                  "or the package source changed while the benchmark ran, so its times are not clean")
    print(f"changed = {CHANGED_CHAPTER} with {CHANGED_PARAMETER}={CHANGED_VALUE}: the other chapters are "
          "skipped and the base models come from the cache")
    return figures


if __name__ == "__main__":
    main()

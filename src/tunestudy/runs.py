"""The run table and the driver that turns it into the book.

Each chapter is one row: a parameterized source notebook and the parameter
overrides the book uses. The driver executes each row with papermill into
book/chapters/, skipping a chapter whose notebook, parameters and package
source are unchanged since its last run, then builds the HTML with Jupyter
Book. Adding a chapter is adding a row.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import papermill

from tunestudy import cache

REPO_ROOT = cache.REPO_ROOT
CHAPTERS_DIR = REPO_ROOT / "book" / "chapters"
RUN_KEY = "tunestudy_run_key"
RUN_SECONDS = "tunestudy_run_seconds"
SECONDS_FILE = "run_seconds.json"  # in <output_dir>/results, committed with the results: the next build's order
_seconds_lock = threading.Lock()
# Torch's thread count is read from these when a kernel starts (see run_chapters).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


class UsageError(ValueError):
    """A wrong chapter or parameter name: the CLI prints it as one line."""


@dataclass(frozen=True)
class Chapter:
    """One row of the run table.

    `notebook` is relative to the repo root (or absolute, for tests);
    `parameters` overrides the notebook's defaults for the book build.
    """

    name: str
    title: str
    notebook: str
    parameters: dict = field(default_factory=dict)

    @property
    def source(self) -> Path:
        return REPO_ROOT / self.notebook  # an absolute notebook path wins


CHAPTERS: tuple[Chapter, ...] = (
    Chapter("01_world", "The world and its base model", "notebooks/01_world.ipynb"),
    Chapter("02_kl_shift", "KL shift", "notebooks/02_kl_shift.ipynb"),
    Chapter("03_loss_plateau", "Loss plateau", "notebooks/03_loss_plateau.ipynb"),
    Chapter("04_data_scaling", "Data scaling", "notebooks/04_data_scaling.ipynb"),
    Chapter("05_lora_vs_full", "LoRA versus full fine-tuning", "notebooks/05_lora_vs_full.ipynb"),
    Chapter(
        "06_style_copying",
        "Style imitation and pattern copying",
        "notebooks/06_style_copying.ipynb",
    ),
)


def find_chapter(name: str, table: tuple[Chapter, ...] = CHAPTERS) -> Chapter:
    """The row called `name`; a one-line ValueError listing the names otherwise."""
    for chapter in table:
        if chapter.name == name:
            return chapter
    allowed = ", ".join(c.name for c in table)
    raise UsageError(f"unknown chapter {name!r}; allowed: {allowed}")


def notebook_parameters(chapter: Chapter) -> dict:
    """The notebook's parameters cell: {name: {default, inferred_type_name, help}}."""
    stat = chapter.source.stat()
    return _inspect(str(chapter.source), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=None)
def _inspect(path: str, mtime_ns: int, size: int) -> dict:
    """papermill.inspect_notebook, once per version of the file (run_chapters checks every chapter up front)."""
    return papermill.inspect_notebook(path)


def check_parameters(chapter: Chapter, parameters: dict) -> None:
    """Refuse a parameter the notebook does not declare.

    papermill would inject it silently and the run would ignore it, so a typo
    (`-p sed 7`) would look like a run with a new seed.
    """
    declared = notebook_parameters(chapter)
    for name in parameters:
        if name not in declared:
            allowed = ", ".join(declared) or "(none)"
            raise UsageError(
                f"unknown parameter {name!r} for chapter {chapter.name}; allowed: {allowed}"
            )


def run_parameters(chapter: Chapter, overrides: dict | None, smoke: bool) -> dict:
    """What papermill injects: the row's overrides, then the caller's, then smoke."""
    parameters = {**chapter.parameters, **(overrides or {})}
    if smoke:
        parameters["smoke"] = True
    return parameters


def run_key(chapter: Chapter, parameters: dict) -> str:
    """Hash of everything an executed chapter depends on that we control.

    The notebook bytes, the injected parameters and the package source: unlike
    Jupyter Book's own cache (code cells only), a change in src/ re-runs.
    """
    digest = hashlib.sha256()
    digest.update(chapter.source.read_bytes())
    digest.update(cache.canonical_json(parameters).encode())
    digest.update(cache.source_hash(None).encode())  # any code change re-executes
    return digest.hexdigest()


def stored_run_key(path: Path) -> str | None:
    """The run key recorded in an executed notebook, if it is readable."""
    if not path.exists():
        return None
    try:
        return nbformat.read(path, as_version=4).metadata.get(RUN_KEY)
    except Exception:  # a half-written or foreign file: treat as not run
        return None


def run_chapter(
    chapter: str | Chapter,
    overrides: dict | None = None,
    output_dir: Path = CHAPTERS_DIR,
    smoke: bool = False,
    force: bool = False,
    table: tuple[Chapter, ...] = CHAPTERS,
) -> Path:
    """Execute one chapter into output_dir/<name>.ipynb unless it is up to date.

    The notebook runs with output_dir as its working directory. It is executed
    into a temporary file and renamed on success, so a failed run never replaces
    the last good page; the failed notebook is kept as <name>.failed.ipynb.
    """
    if isinstance(chapter, str):
        chapter = find_chapter(chapter, table)
    if not chapter.source.exists():
        raise UsageError(f"chapter {chapter.name}: {chapter.notebook} does not exist yet")
    parameters = run_parameters(chapter, overrides, smoke)
    check_parameters(chapter, parameters)
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / f"{chapter.name}.ipynb"
    key = run_key(chapter, parameters)
    if not force and stored_run_key(out) == key:
        print(f"{chapter.name}: up to date, skipped")
        return out

    running = output_dir / f"{chapter.name}.running.ipynb"
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(chapter.source),
            str(running),
            parameters=parameters,
            # The kernel starts in output_dir. Not papermill's cwd=: that chdirs this whole
            # process, and chapters run in threads would start their kernels in each other's
            # (or the original) folder. nbclient starts the kernel in resources' path instead.
            resources={"metadata": {"path": str(output_dir)}},
            kernel_name="python3",
            progress_bar=False,
        )
    except BaseException:
        if running.exists():
            os.replace(running, output_dir / f"{chapter.name}.failed.ipynb")
        print(f"{chapter.name}: FAILED after {time.perf_counter() - start:.1f} s")
        raise
    seconds = time.perf_counter() - start
    nb = nbformat.read(running, as_version=4)
    nb.metadata[RUN_KEY] = key
    nb.metadata[RUN_SECONDS] = round(seconds, 1)
    for cell in nb.cells:  # the page shows parameters folded, one click away
        tags = cell.metadata.get("tags", [])
        if {"parameters", "injected-parameters"} & set(tags) and "hide-input" not in tags:
            cell.metadata["tags"] = tags + ["hide-input"]
    nbformat.write(nb, running)
    os.replace(running, out)
    record_seconds(chapter, output_dir, seconds)
    print(f"{chapter.name}: ran in {seconds:.1f} s", flush=True)
    return out


def record_seconds(chapter: Chapter, output_dir: Path, seconds: float) -> None:
    """Add the chapter's run time to <output_dir>/results/run_seconds.json (atomically; chapters run in threads)."""
    path = Path(output_dir) / "results" / SECONDS_FILE
    with _seconds_lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        table = read_seconds(output_dir)
        table[chapter.name] = round(seconds, 1)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)


def read_seconds(output_dir: Path) -> dict:
    """{chapter: seconds of its last run}; empty if there is no readable record."""
    try:
        table = json.loads((Path(output_dir) / "results" / SECONDS_FILE).read_text())
        return {k: float(v) for k, v in table.items()} if isinstance(table, dict) else {}
    except (OSError, ValueError, TypeError):
        return {}


def default_workers() -> int:
    """Chapters run at once by default: 2 on a CPU with two or more cores, else 1 (and 1 beside a GPU)."""
    from tunestudy import models  # deferred: the CLI's `list` should not pay for torch

    if models.device().type != "cpu":
        return 1
    return max(1, min(2, os.cpu_count() or 1))


def check_workers(workers) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UsageError(f"workers must be a positive integer, got {workers!r}")
    return workers


def run_chapters(
    chapters: list[Chapter],
    output_dir: Path = CHAPTERS_DIR,
    smoke: bool = False,
    workers: int | None = None,
    table: tuple[Chapter, ...] = CHAPTERS,
) -> None:
    """Run chapters, `workers` at a time after the first.

    The first chapter runs alone with every core: it builds the base models the
    others share (chapter 1 builds them in parallel processes itself). The rest
    then run `workers` at a time, longest first by their last recorded run
    (results/run_seconds.json, committed with the results), each
    kernel with cores // workers torch threads. On two cores, two one-thread
    kernels do more work per second than one two-thread kernel (this small
    model does not keep two threads busy, and evaluation is mostly Python), and
    the artifact cache's locks make two chapters asking for the same run build
    it once. (The thread count did not change a byte of the results here; torch
    does not promise that everywhere.)

    Every chapter is attempted; the first failure is raised at the end.
    """
    workers = default_workers() if workers is None else check_workers(workers)
    output_dir = Path(output_dir).resolve()
    for chapter in chapters:  # refuse a bad row or parameter before any chapter runs
        if not chapter.source.exists():
            raise UsageError(f"chapter {chapter.name}: {chapter.notebook} does not exist yet")
        check_parameters(chapter, run_parameters(chapter, None, smoke))
    if not chapters:
        return
    seconds = read_seconds(output_dir)  # the last run's times; a chapter never timed goes first
    first, rest = chapters[0], sorted(chapters[1:], key=lambda c: -seconds.get(c.name, float("inf")))
    run_chapter(first, output_dir=output_dir, smoke=smoke, table=table)
    if workers == 1 or len(rest) <= 1:
        for chapter in rest:
            run_chapter(chapter, output_dir=output_dir, smoke=smoke, table=table)
        return
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    errors = []

    def one(chapter):
        try:
            run_chapter(chapter, output_dir=output_dir, smoke=smoke, table=table)
        except BaseException as err:  # the other chapters go on; the error is raised below
            errors.append(err)

    try:
        os.environ.update({name: threads for name in THREAD_VARIABLES})  # inherited by each new kernel
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, rest))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    if errors:
        raise errors[0]


def toc_text(chapters: list[Chapter]) -> str:
    """_toc.yml naming exactly the given chapters, so it never names a missing page."""
    lines = [
        "# Made from the run table tunestudy.runs.CHAPTERS (edit the table, not this",
        "# file). `python -m tunestudy book` builds with the same list, less the",
        "# chapters not executed yet.",
        "format: jb-book",
        "root: book/intro",
    ]
    if chapters:
        lines += ["parts:", "  - caption: Chapters", "    chapters:"]
        for chapter in chapters:
            lines.append(f"      - file: book/chapters/{chapter.name}")
            lines.append(f"        title: {json.dumps(chapter.title)}")
    return "\n".join(lines) + "\n"


def write_toc(table: tuple[Chapter, ...] = CHAPTERS, root: Path = REPO_ROOT) -> Path:
    """Write _build/_toc.yml naming only the chapters executed in book/chapters.

    The build uses this file rather than the committed _toc.yml (which lists the
    whole table), so a chapter still being written never breaks the book, and
    building never dirties the work tree.
    """
    present = [c for c in table if (root / "book" / "chapters" / f"{c.name}.ipynb").exists()]
    path = root / "_build" / "_toc.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(toc_text(present))
    return path


def write_findings(table: tuple[Chapter, ...] = CHAPTERS, root: Path = REPO_ROOT) -> Path:
    """book/findings.md: one row per chapter with its verdict and headline, read from its results file.

    The landing page includes it, so what the book says it found is always the last run's numbers.
    """
    lines = ["| chapter | what the run measured | verdict |", "| --- | --- | --- |"]
    for chapter in table:
        path = root / "book" / "chapters" / "results" / f"{chapter.name}.json"
        if path.exists():
            results = json.loads(path.read_text())
            link = f"[{chapter.title}](chapters/{chapter.name}.ipynb)"
            lines.append(f"| {link} | {results.get('headline', '')} | **{results.get('verdict', '')}** |")
        else:
            lines.append(f"| {chapter.title} | not run yet | |")
    out = root / "book" / "findings.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def jupyter_book_command(root: Path, toc: Path) -> list[str]:
    """The Jupyter Book 1.x build of the book at `root`, from this interpreter's env."""
    script = Path(sys.executable).with_name("jupyter-book")
    return [str(script), "build", str(root), "--toc", str(toc), "--builder", "html", "--quiet"]


def build_book(
    chapters: list[str] | None = None,
    smoke: bool = False,
    table: tuple[Chapter, ...] = CHAPTERS,
    workers: int | None = None,
) -> Path:
    """Run the chapters (all, or the named ones; see run_chapters for the order), then build the HTML.

    A row whose source notebook does not exist yet is skipped with a note, so
    the table can list chapters still being written.
    """
    start = time.perf_counter()
    selected = [find_chapter(name, table) for name in chapters] if chapters else list(table)
    present = []
    for chapter in (c for c in table if c in selected):
        if chapter.source.exists():
            present.append(chapter)
        else:
            print(f"{chapter.name}: skipped, {chapter.notebook} does not exist yet")
    run_chapters(present, smoke=smoke, workers=workers, table=table)
    toc = write_toc(table)
    write_findings(table)
    subprocess.run(jupyter_book_command(REPO_ROOT, toc), check=True)
    index = REPO_ROOT / "_build" / "html" / "index.html"
    print(f"book: {index} ({time.perf_counter() - start:.1f} s in all)")
    return index

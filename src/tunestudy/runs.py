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
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import papermill

from tunestudy import cache, distributed

REPO_ROOT = cache.REPO_ROOT
CHAPTERS_DIR = REPO_ROOT / "book" / "chapters"
RUN_KEY = "tunestudy_run_key"
RUN_SECONDS = "tunestudy_run_seconds"
SECONDS_FILE = "run_seconds.json"  # in <output_dir>/results, committed with the results: the next build's order
RUNS_KEY = "built_runs"  # in SECONDS_FILE: {chapter: cached runs its last execution built}, the progress bar's total
_seconds_lock = threading.Lock()
# Torch's thread count is read from these when a kernel starts (see run_chapters).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# What every chapter kernel starts with: no deprecation notices on the terminal or the pages.
KERNEL_ENV = {"PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning",
              "TF_CPP_MIN_LOG_LEVEL": "3", "TOKENIZERS_PARALLELISM": "false"}
PROGRESS_SECONDS = 15.0  # how often a running chapter's progress line is refreshed


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
    part: str = "Chapters"  # the caption of the book part the page goes under
    builds_bases: bool = False  # runs alone first: it pretrains the bases the other chapters share
    runs_beside: str = ""  # a chapter whose runs this one shares: started right after it, so the two build them together
    in_default_book: bool = True  # False: `book` runs it only when named (--only); once run, its page is in the book

    @property
    def source(self) -> Path:
        return REPO_ROOT / self.notebook  # an absolute notebook path wins


CHAPTERS: tuple[Chapter, ...] = (
    Chapter("00_measures", "How we measure", "notebooks/00_measures.ipynb", part="Method"),
    Chapter("01_world", "The world and its base model", "notebooks/01_world.ipynb", builds_bases=True),
    Chapter("02_kl_shift", "KL shift", "notebooks/02_kl_shift.ipynb"),
    Chapter("03_loss_plateau", "Loss plateau", "notebooks/03_loss_plateau.ipynb"),
    Chapter("04_data_scaling", "Data scaling", "notebooks/04_data_scaling.ipynb"),
    Chapter("05_lora_config", "LoRA's configuration", "notebooks/05_lora_config.ipynb"),
    Chapter("06_lora_vs_full", "LoRA versus full fine-tuning", "notebooks/06_lora_vs_full.ipynb"),
    Chapter("07_style_copying", "Style imitation and pattern copying", "notebooks/07_style_copying.ipynb"),
    Chapter("08_key_tokens", "Loss on the key tokens only", "notebooks/08_key_tokens.ipynb", part="Changing the model less"),
    Chapter("09_retrieval", "Retrieval instead of tuning", "notebooks/09_retrieval.ipynb", part="Changing the model less"),
    Chapter("10_forgetting", "Learning, forgetting and intruder dimensions", "notebooks/10_forgetting.ipynb",
            part="Changing the model less", runs_beside="05_lora_config"),
    Chapter("11_pseudo_forgetting", "Pseudo or actual forgetting", "notebooks/11_pseudo_forgetting.ipynb",
            part="What tuning does to knowledge"),
    Chapter("12_known_unknown", "Known and unknown examples", "notebooks/12_known_unknown.ipynb",
            part="What tuning does to knowledge"),
    Chapter("13_knowledge_conflict", "Conflicting answers and consistent knowledge",
            "notebooks/13_knowledge_conflict.ipynb", part="What tuning does to knowledge"),
    # Gemma 3 270M on real facts: it needs none of chapter 1's bases, so it starts with the others after it
    Chapter("14_real_base", "A real base model", "notebooks/14_real_base.ipynb", part="A real base model"),
    # `tunestudy shift` on Gemma and an adapter tuned on it: the command a reader runs on their own pair
    Chapter("15_token_shift", "Measure your own pair", "notebooks/15_token_shift.ipynb", part="A real base model"),
)
# Pages that are not executed: (part, file under book/, title), after the chapters.
STATIC_PAGES = (("Method", "verdicts", "All verdicts"), ("Method", "reproducibility", "Reproducibility"),
                ("Back matter", "references", "References"))  # verdicts.md is written by the build (`write_pages`)


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


def chapter_sources(chapter: Chapter) -> tuple:
    """The package modules a chapter's notebook can run: those its code cells import, and all they import."""
    notebook = nbformat.read(chapter.source, as_version=4)
    found = {"__init__.py"}
    for cell in notebook.cells:
        if cell.cell_type == "code":  # IPython magics and shell lines are not Python
            found |= cache.imported_modules("\n".join(line for line in cell.source.splitlines()
                                                      if not line.lstrip().startswith(("%", "!"))))
    return tuple(sorted(cache.import_closure(found)))


def run_key(chapter: Chapter, parameters: dict) -> str:
    """Hash of everything an executed chapter depends on that we control.

    The notebook bytes, the injected parameters and the source of the package modules the notebook
    imports, directly or not (`chapter_sources`), without comments and docstrings
    (`cache.normalized_source`): unlike Jupyter Book's own cache (code cells only), a change in the code a
    chapter runs re-runs it, and an edit of a module it never imports, or of a docstring, does not.
    """
    digest = hashlib.sha256()
    digest.update(chapter.source.read_bytes())
    digest.update(cache.canonical_json(parameters).encode())
    digest.update(cache.source_hash(chapter_sources(chapter)).encode())
    return digest.hexdigest()


def is_current(chapter: Chapter, output_dir: Path = CHAPTERS_DIR, smoke: bool = False) -> bool:
    """Is the executed chapter in output_dir the one its notebook, parameters and code give now?"""
    key = run_key(chapter, run_parameters(chapter, None, smoke))
    return stored_run_key(Path(output_dir) / f"{chapter.name}.ipynb") == key


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
    kernel_env: dict | None = None,
) -> Path:
    """Execute one chapter into output_dir/<name>.ipynb unless it is up to date.

    `kernel_env` adds environment variables to the chapter's kernel only (the
    driver's environment is not touched).

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
        announce(f"{chapter.name}: up to date, skipped")
        return out
    if not distributed.is_main():  # launched: every process runs the chapter, rank 0's page is the one kept
        with tempfile.TemporaryDirectory(prefix=f"{chapter.name}.rank{distributed.rank()}-") as elsewhere:
            _execute(chapter, parameters, Path(elsewhere), kernel_env)
        return out
    return _execute(chapter, parameters, output_dir, kernel_env, key)


def _execute(chapter: Chapter, parameters: dict, output_dir: Path, kernel_env: dict | None,
             key: str | None = None) -> Path:
    """Run the notebook into output_dir (see run_chapter); `key` None: a launched process's throwaway run."""
    out = output_dir / f"{chapter.name}.ipynb"

    running = output_dir / f"{chapter.name}.running.ipynb"
    progress = Progress(chapter.name, output_dir)
    announce(f"{chapter.name}: started" + (f" (last run {format_seconds(progress.last_seconds)})"
                                           if progress.last_seconds else ""))
    start = time.perf_counter()
    try:
        with progress:
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
                kernel_manager_class=kernel_manager_class({**KERNEL_ENV, **(kernel_env or {}),
                                                           cache.PROGRESS_VARIABLE: str(progress.path)}),
                # the kernel's own notices (its TCP transport warning, the interrupt at shutdown) stay off the terminal
                extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
            )
    except BaseException:
        if running.exists():
            os.replace(running, output_dir / f"{chapter.name}.failed.ipynb")
        announce(f"{chapter.name}: FAILED after {time.perf_counter() - start:.1f} s")
        raise
    seconds = time.perf_counter() - start
    if key is None:
        return out
    nb = nbformat.read(running, as_version=4)
    nb.metadata[RUN_KEY] = key
    nb.metadata[RUN_SECONDS] = round(seconds, 1)
    for cell in nb.cells:  # the page shows parameters folded, one click away
        tags = cell.metadata.get("tags", [])
        if {"parameters", "injected-parameters"} & set(tags) and "hide-input" not in tags:
            cell.metadata["tags"] = tags + ["hide-input"]
    nbformat.write(nb, running)
    os.replace(running, out)
    record_seconds(chapter, output_dir, seconds, progress.count())
    write_run_record(chapter, parameters, output_dir, seconds, progress.count(), kernel_env)
    took = f" = {format_seconds(seconds)}" if seconds >= 60 else ""
    announce(f"{chapter.name}: done in {seconds:.1f} s{took}{progress.last_run_text()}, {progress.count()} runs built")
    return out


RUN_RECORD = "{name}.run.json"  # in <output_dir>/results, beside the chapter's results file
PROVENANCE_PACKAGES = ("torch", "transformers", "peft", "accelerate", "numpy", "scipy", "statsmodels", "pandas",
                       "papermill", "datasets")


def write_run_record(chapter: Chapter, parameters: dict, output_dir: Path, seconds: float, built: int,
                     kernel_env: dict | None = None) -> Path:
    """results/<chapter>.run.json: every parameter the chapter ran with (its parameters cell as the notebook has
    it, updated by what was injected; recorded here, never listed by hand) and the execution's provenance (commit,
    package versions, CPU model and flags, threads, date, wall time, runs built: 0 means every run came from the
    artifact cache). A file of its own, so that the results file stays the same bytes for the same numbers."""
    from . import parameter_cells
    import importlib.metadata as metadata
    record = {"chapter": chapter.name, "notebook": chapter.notebook,
              "parameters": {**parameter_cells.notebook_parameter_values(chapter.source), **parameters},
              "provenance": provenance(seconds, built, kernel_env)}
    versions = {}
    for name in PROVENANCE_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    record["provenance"]["packages"] = versions
    path = Path(output_dir) / "results" / RUN_RECORD.format(name=chapter.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}-{threading.get_ident()}")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path


def provenance(seconds: float, built: int, kernel_env: dict | None = None) -> dict:
    """Where and how a chapter was executed: commit (and whether the tree had uncommitted changes), Python, the
    CPU's model and the flags that change its float kernels, cores, the kernel's torch threads, UTC date, wall
    seconds, and the runs built."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    cpu, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not cpu:
                cpu = line.partition(":")[2].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.partition(":")[2].split())
    except OSError:
        pass
    threads = (kernel_env or {}).get(THREAD_VARIABLES[0]) or os.environ.get(THREAD_VARIABLES[0]) or str(os.cpu_count())
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
            "python": sys.version.split()[0], "cpu": cpu,
            "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma"}),
            "cores": os.cpu_count(), "threads": int(threads), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(seconds, 1), "runs_built": built}


_print_lock = threading.Lock()


def announce(line: str) -> None:
    """One line on the driver's terminal, with the wall-clock time (chapters run in threads: one line at a time).
    Launched processes: rank 0's lines only."""
    if not distributed.is_main():
        return
    with _print_lock:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def format_seconds(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def kernel_manager_class(env: dict):
    """A jupyter kernel manager whose kernel starts with `env` added to this process's environment.

    Per kernel, not process-wide: chapters run in threads, each with its own
    progress file (and thread count), and the driver's environment stays as it was.
    """
    from jupyter_client import AsyncKernelManager

    class ChapterKernelManager(AsyncKernelManager):
        async def _async_pre_start_kernel(self, **kw):
            kw["env"] = {**(kw.get("env") or os.environ), **env}
            return await super()._async_pre_start_kernel(**kw)

    return ChapterKernelManager


class Progress:
    """A running chapter's progress: its kernel appends one line per built artifact to a file
    (cache.PROGRESS_VARIABLE); a thread here prints a bar of them every PROGRESS_SECONDS,
    against the number the chapter's last run built."""

    def __init__(self, name: str, output_dir: Path):
        self.name = name
        self.path = Path(output_dir) / "results" / f".progress-{name}.jsonl"
        self.last_seconds = read_seconds(output_dir).get(name)
        self.last_count = read_counts(output_dir).get(name)
        self._stop = threading.Event()
        self._thread = None
        self._shown = 0
        self.start = time.perf_counter()

    def last_run_text(self) -> str:
        return f" (last run {format_seconds(self.last_seconds)})" if self.last_seconds else ""

    def events(self) -> list:
        try:
            return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        except (OSError, ValueError):
            return []

    def count(self) -> int:
        return len(self.events())

    def line(self) -> str | None:
        events = self.events()
        if len(events) == self._shown:
            return None
        self._shown = len(events)
        elapsed = time.perf_counter() - self.start
        total = self.last_count if self.last_count and self.last_count >= len(events) else None
        bar = ""
        if total:
            filled = round(20 * len(events) / total)
            bar = f"[{'#' * filled}{'.' * (20 - filled)}] {len(events)}/{total} runs"
        else:
            bar = f"{len(events)} runs built"
        left = ""
        if self.last_seconds and self.last_seconds > elapsed:
            left = f", about {format_seconds(self.last_seconds - elapsed)} left"
        last = events[-1]
        what = " ".join(filter(None, (last.get("kind"), last.get("label"))))
        return f"  {self.name} {bar} ({format_seconds(elapsed)}{left}; last: {what} in {last.get('seconds', 0):.0f} s)"

    def _watch(self):
        while not self._stop.wait(PROGRESS_SECONDS):
            line = self.line()
            if line:
                with _print_lock:
                    print(line, flush=True)

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


def record_seconds(chapter: Chapter, output_dir: Path, seconds: float, built: int | None = None) -> None:
    """Record the chapter's run time and the runs it built in <output_dir>/results/run_seconds.json,
    atomically (chapters run in threads). A run that built nothing (everything came from the cache)
    keeps the last building run's numbers: they order the next cold build and tell readers on the
    landing page how long a chapter takes."""
    path = Path(output_dir) / "results" / SECONDS_FILE
    with _seconds_lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        table = read_seconds(output_dir)
        kept = _read_table(output_dir)
        table.update({key: kept[key] for key in (SPEED_KEY, MACHINE_KEY) if key in kept})  # whose times these are
        if built or chapter.name not in table:  # a run that only reread the cache keeps the time of the last one that built
            table[chapter.name] = round(seconds, 1)
            table[SPEED_KEY] = round(machine_speed(), 1)  # what the times are scaled by on another machine
            table[MACHINE_KEY] = machine_name()
        counts = read_counts(output_dir)
        if built:  # a warm run builds nothing: keep the count of the last run that did
            counts[chapter.name] = built
        if counts:
            table[RUNS_KEY] = counts
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)


def _read_table(output_dir: Path) -> dict:
    try:
        table = json.loads((Path(output_dir) / "results" / SECONDS_FILE).read_text())
        return table if isinstance(table, dict) else {}
    except (OSError, ValueError):
        return {}


def read_seconds(output_dir: Path) -> dict:
    """{chapter: seconds of its last run}; empty if there is no readable record."""
    return {k: float(v) for k, v in _read_table(output_dir).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in (SPEED_KEY, MACHINE_KEY)}


def read_counts(output_dir: Path) -> dict:
    """{chapter: cached runs its last building execution built}."""
    counts = _read_table(output_dir).get(RUNS_KEY, {})
    return {k: int(v) for k, v in counts.items() if isinstance(v, int)} if isinstance(counts, dict) else {}


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
    force: bool = False,
) -> None:
    """Run chapters, `workers` at a time after the first (`force`: even the current ones).

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
    if not force:
        announce_stale(chapters, output_dir, smoke, seconds)
    first = next((c for c in chapters if c.builds_bases), chapters[0])
    rest = run_order([c for c in chapters if c is not first], seconds)
    book = BookClock(chapters, seconds, workers)
    errors = []

    def one(chapter, kernel_env=None):
        try:
            run_chapter(chapter, output_dir=output_dir, smoke=smoke, table=table, kernel_env=kernel_env, force=force)
        except BaseException as err:  # the other chapters go on; the error is raised below
            errors.append(err)
        book.finished(chapter)

    one(first)
    if workers == 1 or len(rest) <= 1:
        for chapter in rest:
            one(chapter)
    else:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda c: one(c, {name: threads for name in THREAD_VARIABLES}), rest))
    if errors:
        raise errors[0]


def announce_stale(chapters: list, output_dir: Path, smoke: bool, seconds: dict) -> None:
    """Before any work: which chapters are current (rendered as they are) and which will compute, each with
    its last run's time scaled to this machine's speed (`machine_speed` against the recording machine's)."""
    stale = [c for c in chapters if not is_current(c, output_dir, smoke)]
    if not stale:
        announce(f"book: all {len(chapters)} chapters are current: nothing to compute, building the pages")
        return
    recorded = _read_table(output_dir).get(SPEED_KEY)
    scale = recorded / machine_speed() if recorded and not smoke else 1.0
    parts = [c.name + (f" (about {format_seconds(seconds[c.name] * scale)})" if c.name in seconds else "")
             for c in stale]
    announce(f"book: {len(chapters) - len(stale)} chapters current, {len(stale)} to compute"
             + (f" (times scaled by this machine's speed, {scale:.2f}x the recording machine's)" if recorded else "")
             + ": " + ", ".join(parts))


SPEED_KEY = "machine_gflops"  # in SECONDS_FILE: the recording machine's `machine_speed`
MACHINE_KEY = "machine"  # in SECONDS_FILE: the CPU (or GPU) the last computed chapter ran on, for the landing page


def machine_name() -> str:
    """The CPU's model name (and the GPU's, when there is one), as /proc/cpuinfo and torch give them."""
    import platform
    try:
        cpu = next((line.partition(":")[2].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        cpu = ""
    cpu = cpu or platform.processor() or platform.machine()
    from .realbase import cpu_flags
    flags = sorted(cpu_flags() & {"amx_bf16", "avx512f", "avx2"})
    name = f"{cpu} ({', '.join(flags)}), {os.cpu_count()} cores" if flags else f"{cpu}, {os.cpu_count()} cores"
    import torch
    return name + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")



@functools.lru_cache(maxsize=None)
def machine_speed() -> float:
    """One-thread float32 matmul GFLOP/s (256 x 256, best of a few): what a chapter's time scales with."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = torch.randn(256, 256)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(20):
                a @ a
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 20 * 2 * 256 ** 3 / best / 1e9


def run_order(chapters: list, seconds: dict) -> list:
    """Longest first by the last run's times (a chapter never timed goes first); a chapter that `runs_beside`
    another starts right after it (after its partner's partner first, for a chain), so the two run at once and
    share the partner's runs through the cache's locks: the longest chapter no longer holds one core alone."""
    order = sorted(chapters, key=lambda c: -seconds.get(c.name, float("inf")))
    for chapter in order:
        if chapter.runs_beside == chapter.name:
            raise UsageError(f"chapter {chapter.name}: runs_beside must name another chapter, got itself")
    names = {c.name for c in order}
    pending = [c for c in order if c.runs_beside in names]
    placed = [c for c in order if c not in pending]
    while pending:
        ready = [c for c in pending if any(p.name == c.runs_beside for p in placed)]
        if not ready:  # a cycle of runs_beside: those chapters keep their order by time, at the end
            return placed + pending
        for chapter in ready:
            at = next(i for i, p in enumerate(placed) if p.name == chapter.runs_beside) + 1
            while at < len(placed) and placed[at].runs_beside == chapter.runs_beside:
                at += 1  # after the chapters already beside the same partner
            placed.insert(at, chapter)
            pending.remove(chapter)
    return placed


class BookClock:
    """The running total of a book build, and what is left by the chapters' last run times."""

    def __init__(self, chapters: list, seconds: dict, workers: int):
        self.left = {c.name: seconds.get(c.name) for c in chapters}
        self.workers = workers
        self.start = time.perf_counter()
        self.total = len(chapters)
        self._lock = threading.Lock()
        known = [v for v in self.left.values() if v]
        if known:
            untimed = self.total - len(known)
            announce(f"book: {self.total} chapters; by their last run times about "
                     f"{format_seconds(self._estimate())} with {workers} at a time"
                     + (f", plus {untimed} never timed" if untimed else ""))

    def _estimate(self) -> float:
        """Last run times left, the first chapter alone and the rest shared by the workers (rough)."""
        times = [v or 0.0 for v in self.left.values()]
        return sum(times) / max(1, min(self.workers, len(times))) if len(times) > 1 else sum(times)

    def finished(self, chapter: Chapter) -> None:
        with self._lock:
            self.left.pop(chapter.name, None)
            done = self.total - len(self.left)
            elapsed = time.perf_counter() - self.start
            rest = f", about {format_seconds(self._estimate())} left" if self.left and self._estimate() else ""
            announce(f"book: {done}/{self.total} chapters done, {format_seconds(elapsed)} so far{rest}")


def book_pages(root: Path = REPO_ROOT) -> list[Path]:
    """The book's written (not executed) files under book/: pages and the bibliography, not the pages the build
    writes (findings.md, verdicts.md)."""
    return sorted(p for p in (root / "book").iterdir()
                  if p.suffix in (".md", ".bib") and p.name not in ("findings.md", "verdicts.md"))


def toc_text(chapters: list[Chapter], static: tuple = ()) -> str:
    """_toc.yml naming exactly the given chapters (grouped by part, in table order) and static pages,
    so it never names a missing page."""
    lines = [
        "# Made from the run table tunestudy.runs.CHAPTERS (edit the table, not this",
        "# file). `python -m tunestudy book` builds with the same list, less the",
        "# chapters not executed yet.",
        "format: jb-book",
        "root: book/intro",
    ]
    entries = toc_entries(chapters, static)
    parts = list(dict.fromkeys(part for part, _, _ in entries))
    if parts:
        lines.append("parts:")
    for part in parts:
        lines += [f"  - caption: {part}", "    chapters:"]
        for _, file, title in (e for e in entries if e[0] == part):
            lines.append(f"      - file: {file}")
            lines.append(f"        title: {json.dumps(title)}")
    return "\n".join(lines) + "\n"


def toc_entries(chapters: list[Chapter], static: tuple = ()) -> list:
    """(part, file, title) of every page in the book's reading order: parts in the order they first appear,
    within a part its chapters in table order, then its static pages."""
    entries = [(c.part, f"book/chapters/{c.name}", c.title) for c in chapters]
    entries += [(part, f"book/{file}", title) for part, file, title in static]
    parts = list(dict.fromkeys(part for part, _, _ in entries))
    return [e for part in parts for e in entries if e[0] == part]


def write_toc(table: tuple[Chapter, ...] = CHAPTERS, root: Path = REPO_ROOT) -> Path:
    """Write _build/_toc.yml naming only the chapters executed in book/chapters.

    The build uses this file rather than the committed _toc.yml (which lists the
    whole table), so a chapter still being written never breaks the book, and
    building never dirties the work tree.
    """
    present = [c for c in table if (root / "book" / "chapters" / f"{c.name}.ipynb").exists()]
    static = tuple(p for p in STATIC_PAGES if (root / "book" / f"{p[1]}.md").exists())
    path = root / "_build" / "_toc.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(toc_text(present, static))
    return path


def write_findings(table: tuple[Chapter, ...] = CHAPTERS, root: Path = REPO_ROOT) -> Path:
    """book/findings.md: one row per chapter with its verdict, headline and the last run's time,
    read from its results file and results/run_seconds.json.

    The landing page includes it, so what the book says it found (and how long a
    rerun takes) is always the last run's.
    """
    seconds = read_seconds(root / "book" / "chapters")
    lines = ["| chapter | what the run measured | verdict | last run (2-core CPU) |", "| --- | --- | --- | --- |"]
    for chapter in table:
        path = root / "book" / "chapters" / "results" / f"{chapter.name}.json"
        took = format_seconds(seconds[chapter.name]) if chapter.name in seconds else ""
        if path.exists():
            results = json.loads(path.read_text())
            executed = (root / "book" / "chapters" / f"{chapter.name}.ipynb").exists()
            link = (f"[{chapter.title}](chapters/{chapter.name}.ipynb)" if executed else
                    f"{chapter.title} (not in the default build: `tunestudy run {chapter.name}`)")
            lines.append(f"| {link} | {results.get('headline', '')} | **{results.get('verdict', '')}** | {took} |")
        else:
            lines.append(f"| {chapter.title} | not run yet | | |")
    table_record = _read_table(root / "book" / "chapters")
    if table_record.get(MACHINE_KEY):
        lines += ["", f"The chapters were last computed on {table_record[MACHINE_KEY]}, whose one-thread float32 "
                      f"matmul runs at {table_record.get(SPEED_KEY, 0):.0f} GFLOP/s; on another CPU family the "
                      "numbers are a new draw of the training noise ({doc}`reproducibility`)."]
    out = root / "book" / "findings.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def write_pages(table: tuple[Chapter, ...] = CHAPTERS, root: Path = REPO_ROOT) -> Path:
    """The pages the build makes from the results: all verdicts with their forest plot, the findings table,
    and the table of contents naming every page that exists (returned)."""
    from . import plots, verdictpage
    plots.unpack_answers(root / "book" / "chapters" / "results")  # the pages link the answers; git keeps them packed
    verdictpage.write([c for c in table if (root / "book" / "chapters" / f"{c.name}.ipynb").exists()], root)
    write_findings(table, root)
    return write_toc(table, root)


def jupyter_book_command(root: Path, toc: Path) -> list[str]:
    """The Jupyter Book 1.x build of the book at `root`, from this interpreter's env."""
    script = Path(sys.executable).with_name("jupyter-book")
    return [str(script), "build", str(root), "--toc", str(toc), "--builder", "html", "--quiet"]


def build_book(
    chapters: list[str] | None = None,
    smoke: bool = False,
    table: tuple[Chapter, ...] = CHAPTERS,
    workers: int | None = None,
    force: bool = False,
) -> Path:
    """Run the chapters (all, or the named ones; see run_chapters for the order), then build the HTML.
    `force` recomputes every chapter (with an empty artifact cache: the reproduction).

    A row whose source notebook does not exist yet is skipped with a note, so
    the table can list chapters still being written.
    """
    if distributed.launched():  # chapters run in parallel kernels, each would join the launch's one process group
        raise UsageError(f"book cannot run under a launcher ({distributed.world()} processes): launch one chapter "
                         "at a time, e.g. accelerate launch --multi_gpu -m tunestudy run 14_real_base")
    start = time.perf_counter()
    selected = [find_chapter(name, table) for name in chapters] if chapters else [c for c in table if c.in_default_book]
    present = []
    for chapter in (c for c in table if c in selected):
        if chapter.source.exists():
            present.append(chapter)
        else:
            print(f"{chapter.name}: skipped, {chapter.notebook} does not exist yet")
    run_chapters(present, smoke=smoke, workers=workers, table=table, force=force)
    toc = write_pages(table)
    subprocess.run(jupyter_book_command(REPO_ROOT, toc), check=True)
    index = REPO_ROOT / "_build" / "html" / "index.html"
    print(f"book: {index} ({time.perf_counter() - start:.1f} s in all)")
    return index

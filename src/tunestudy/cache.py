"""The artifact cache: folders keyed by what made them, written atomically.

A cached artifact is a folder `cache_root()/kind/<key>`. The key hashes the
artifact's kind, its parameter values and the source of the modules its build
runs (each kind declares them next to its `cached` call, e.g. `bases.SOURCES`),
so a changed parameter or a changed line of that code can never silently reuse
a stale result (keying by a run's *name* is the mistake this avoids), while an
edit elsewhere does not pretrain a base again. The source enters the key as its
tokens without comments and docstrings (`normalized_source`): editing what the
code says about itself re-keys nothing.

A folder only ever appears complete: it is built in a temporary sibling folder,
a MANIFEST.json with the checksum of every file is written last, and the folder
is renamed into place. A folder whose manifest is missing or does not match its
files (a crash, a truncated copy) is treated as absent and rebuilt.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import io
import json
import logging
import os
import secrets
import shutil
import time
import threading
import tokenize
from pathlib import Path
from typing import Callable

from filelock import FileLock

from . import distributed

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent.parent
MANIFEST = "MANIFEST.json"
# When set (the book driver sets it per chapter kernel), every artifact built appends one JSON line
# {"kind", "label", "seconds"} to this file: the driver's progress bar reads it.
PROGRESS_VARIABLE = "TUNESTUDY_PROGRESS"


def cache_root() -> Path:
    """Where artifacts live: $TUNESTUDY_CACHE, else <repo>/.cache/artifacts.

    Read on every call (not at import) so tests and CI can redirect it.
    """
    env = os.environ.get("TUNESTUDY_CACHE")
    return Path(env) if env else REPO_ROOT / ".cache" / "artifacts"


@functools.lru_cache(maxsize=None)
def source_hash(files: tuple | None = None) -> str:
    """sha256 of the named package modules (a tuple of file names), or of every .py file with files=None.

    Computed once per process: the code a process runs does not change under it.
    """
    digest = hashlib.sha256()
    paths = sorted(PACKAGE_DIR.rglob("*.py")) if files is None else sorted(PACKAGE_DIR / f for f in files)
    for path in paths:
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
        digest.update(b"\0")
        digest.update(normalized_source(path.read_text(encoding="utf-8")).encode())
        digest.update(b"\0")
    return digest.hexdigest()


_PARSE_LOCK = threading.Lock()


def parse(text: str) -> ast.AST:
    """`ast.parse`, one thread at a time: CPython 3.11 before 3.11.8 can fail with "AST constructor recursion
    depth mismatch" when two threads parse at once (the book runs two chapters in threads)."""
    with _PARSE_LOCK:
        return ast.parse(text)


def normalized_source(text: str) -> str:
    """A module's tokens without its comments, docstrings and blank lines, one space apart; indentation and
    line ends stay as tokens, so every change to what the code computes changes the result."""
    docstrings = []  # (start, end) positions of each module, class and function docstring
    for node in ast.walk(parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                docstrings.append(((first.lineno, first.col_offset), (first.end_lineno, first.end_col_offset)))
    kept, after_docstring = [], False
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type in (tokenize.COMMENT, tokenize.NL, tokenize.ENDMARKER):
            continue
        if token.type == tokenize.STRING and any(lo <= token.start and token.end <= hi for lo, hi in docstrings):
            after_docstring = True
            continue
        if after_docstring and token.type == tokenize.NEWLINE:  # the docstring's own line end
            after_docstring = False
            continue
        after_docstring = False
        kept.append({tokenize.INDENT: "<indent>", tokenize.DEDENT: "<dedent>", tokenize.NEWLINE: "<nl>"}
                    .get(token.type, token.string))
    return " ".join(kept)


def package_imports(module_file: str, package: Path | None = None) -> set:
    """The package modules (file names) one module imports, anywhere in its body (also inside functions)."""
    package = package or PACKAGE_DIR
    return {f for f in imported_modules((package / module_file).read_text(encoding="utf-8"), relative=True)
            if (package / f).exists()}


def imported_modules(code: str, relative: bool = False) -> set:
    """File names of the tunestudy modules that `code` imports (`from . import x` too when `relative`)."""
    found = set()
    for node in ast.walk(parse(code)):
        if isinstance(node, ast.ImportFrom):
            if relative and node.level == 1 and node.module:  # from .x import y
                found.add(node.module.split(".")[0] + ".py")
            elif relative and node.level == 1:  # from . import x, y
                found |= {alias.name + ".py" for alias in node.names}
            elif node.level == 0 and node.module and node.module.split(".")[0] == "tunestudy":
                parts = node.module.split(".")
                found |= {parts[1] + ".py"} if len(parts) > 1 else {a.name + ".py" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] + ".py" for a in node.names if a.name.startswith("tunestudy.")}
    return found


def import_closure(module_files, package: Path | None = None) -> set:
    """The named modules and every package module they import, directly or not."""
    package = package or PACKAGE_DIR
    seen, todo = set(), [f for f in module_files if (package / f).exists()]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo += sorted(package_imports(current, package) - seen)
    return seen


def _check_json(value, where: str) -> None:
    """Refuse values whose JSON form would not identify them exactly."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                raise TypeError(f"cache params: key {k!r} in {where} is not a string")
            _check_json(item, f"{where}.{k}")
        return
    raise TypeError(
        f"cache params: {where} is a {type(value).__name__} ({value!r}); "
        "use plain JSON values (str, int, float, bool, None, list, dict)"
    )


def canonical_json(value) -> str:
    """The one JSON spelling of a value, so equal params give equal keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)


def artifact_key(kind: str, params: dict, sources: tuple | None = None) -> str:
    """sha256 naming the artifact made by `kind` from `params` with the source of `sources` (None: every module)."""
    if not isinstance(params, dict):
        raise TypeError(f"cache params must be a dict, got {type(params).__name__}")
    _check_json(params, "params")
    files = None if sources is None else tuple(sorted(sources))
    payload = {"kind": kind, "params": params, "source": source_hash(files)}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[str]:
    """Relative paths of all files in folder except the manifest, sorted."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST
    )


def _write_manifest(folder: Path, kind: str, params: dict, key: str) -> None:
    files = {
        rel: {"sha256": file_sha256(folder / rel), "size": (folder / rel).stat().st_size}
        for rel in _files(folder)
    }
    manifest = {"kind": kind, "params": params, "key": key, "files": files}
    with open(folder / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def verify(folder: Path) -> str | None:
    """None if the folder is a complete artifact, else the reason it is not."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
    except FileNotFoundError:
        return "no MANIFEST.json"
    except (ValueError, KeyError, TypeError) as err:
        return f"unreadable MANIFEST.json ({err})"
    if sorted(files) != _files(folder):
        return "files differ from MANIFEST.json"
    for rel, entry in files.items():
        path = folder / rel
        if path.stat().st_size != entry["size"]:
            return f"{rel} has the wrong size (truncated?)"
        if file_sha256(path) != entry["sha256"]:
            return f"{rel} fails its checksum"
    return None


def _usable(folder: Path, kind: str, key: str) -> bool:
    """True if the folder is complete; warn about a corrupt one."""
    if not folder.exists():
        return False
    problem = verify(folder)
    if problem is None:
        log.info("reusing %s %s", kind, key[:10])
        return True
    log.warning("cache %s %s is corrupt (%s); rebuilding", kind, key[:10], problem)
    return False


def is_built(kind: str, params: dict, sources: tuple | None = None) -> bool:
    """True if artifact (kind, params) is complete in the cache; nothing is built.

    Launched processes all get rank 0's answer (see distributed.py), so they go on along one path."""
    folder = cache_root() / kind / artifact_key(kind, params, sources)
    return distributed.main_decides(folder.exists() and verify(folder) is None if distributed.is_main() else None)


def cached(kind: str, params: dict, build: Callable[[Path], None], sources: tuple | None = None,
           label: str = "") -> Path:
    """Return the folder holding artifact (kind, params), building it if needed.

    `sources` names the package modules the build runs (their bytes enter the
    key); None means every module of the package, the safe default. `label`
    only names the build in progress reports.

    `build(tmpdir)` writes the artifact's files into an empty folder. If it
    raises, nothing is left in the cache and the error propagates. Two processes
    asking for the same key at once: one builds, the other waits on the lock and
    then reuses. A build may itself call `cached` for other keys (each key has
    its own lock).
    """
    key = artifact_key(kind, params, sources)
    folder = cache_root() / kind / key
    if distributed.launched():
        return _cached_launched(kind, params, key, folder, build, label)
    if _usable(folder, kind, key):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if _usable(folder, kind, key):  # another process built it while we waited
            return folder
        _remove_stale_tmpdirs(folder)
        tmpdir = folder.with_name(f"{key}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        tmpdir.mkdir()
        try:
            log.info("building %s %s", kind, key[:10])
            started = time.perf_counter()
            build(tmpdir)
            _write_manifest(tmpdir, kind, params, key)
            if folder.exists():
                shutil.rmtree(folder)  # the corrupt folder found above
            os.replace(tmpdir, folder)
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
    report_progress(kind, label, time.perf_counter() - started)
    return folder


def _cached_launched(kind: str, params: dict, key: str, folder: Path, build: Callable[[Path], None],
                     label: str) -> Path:
    """`cached` in one of several launched processes: rank 0 looks, decides and writes; every process builds.

    Rank 0 holds the key's lock (another chapter, a separate command, may want the same key) and tells the
    others whether the folder is usable; if not, every process runs `build` (the training inside it needs them
    all), rank 0 into the temporary sibling that becomes the folder, the others into a throwaway sibling that
    is deleted; after the rename all meet at a barrier and read rank 0's folder. A build that raises leaves
    nothing in the cache, on any process.
    """
    main = distributed.is_main()
    lock = FileLock(str(folder) + ".lock")
    if main:
        folder.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    try:
        if distributed.main_decides(_usable(folder, kind, key) if main else None):
            return folder
        if main:
            _remove_stale_tmpdirs(folder)
        kind_of_tmp = "tmp" if main else f"rank{distributed.rank()}"
        tmpdir = folder.with_name(f"{key}.{kind_of_tmp}-{os.getpid()}-{secrets.token_hex(4)}")
        tmpdir.mkdir(parents=True)
        try:
            log.info("building %s %s", kind, key[:10])
            started = time.perf_counter()
            build(tmpdir)
            if main:
                _write_manifest(tmpdir, kind, params, key)
                if folder.exists():
                    shutil.rmtree(folder)  # the corrupt folder found above
                os.replace(tmpdir, folder)
        finally:
            if not main or tmpdir.exists():
                shutil.rmtree(tmpdir, ignore_errors=True)
        distributed.barrier()  # rank 0's folder is in place before anyone reads it
    finally:
        if main:
            lock.release()
    if main:
        report_progress(kind, label, time.perf_counter() - started)
    return folder


_built_here = 0  # artifacts this process has built (report_progress counts them)


def built_in_this_process() -> int:
    """How many artifacts this process has built so far: 0 for a page re-executed wholly from the cache."""
    return _built_here


def report_progress(kind: str, label: str, seconds: float) -> None:
    """Append one built artifact to the file named by $TUNESTUDY_PROGRESS, if any (one short write: atomic)."""
    global _built_here
    _built_here += 1
    path = os.environ.get(PROGRESS_VARIABLE)
    if not path:
        return
    line = json.dumps({"kind": kind, "label": label, "seconds": round(seconds, 1)}) + "\n"
    try:
        with open(path, "a") as f:
            f.write(line)
    except OSError:  # progress is a courtesy; it never stops a build
        pass


def _remove_stale_tmpdirs(folder: Path) -> None:
    """Delete tmp folders of this key left by crashed processes.

    Safe under the key's lock: a live builder of this key would hold it.
    """
    for stale in folder.parent.glob(f"{folder.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def cached_json(kind: str, params: dict, compute: Callable[[], dict], sources: tuple | None = None,
                label: str = "") -> dict:
    """Cache a small JSON result: `compute()` runs only when the key is new."""

    def build(tmpdir: Path) -> None:
        result = compute()
        (tmpdir / "result.json").write_text(json.dumps(result, indent=1, sort_keys=True))

    folder = cached(kind, params, build, sources, label)
    return json.loads((folder / "result.json").read_text())

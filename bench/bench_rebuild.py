"""What an edit costs: one chapter rerun with one changed tuning parameter, and a rebuild after a docstring
edit in metrics.py, both against the repository's artifact cache (run `make book` first).

    python bench/bench_rebuild.py                 # 02_kl_shift with lora_lr changed, then the docstring edit
    python bench/bench_rebuild.py --chapter 04_data_scaling --parameter lora_lr --value 2e-2

1. `tunestudy run <chapter> -p <parameter> <value>` into a temporary folder: only the runs that
   parameter names are redone (the bases and the other method's runs come from the cache);
   target under 2 minutes for 02_kl_shift.
2. The same chapter, unchanged parameters, with a copy of the package whose metrics.py has one
   more docstring line: evaluations are redone, no base is pretrained and no model tuned again.

Each phase prints its wall time and how many artifacts of each kind it built (from the
progress file the driver gives the chapter's kernel).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(chapter: str, output: Path, parameters: list, pythonpath: Path | None = None) -> tuple[float, dict]:
    env = dict(os.environ)
    env.setdefault("TUNESTUDY_CACHE", str(REPO / ".cache" / "artifacts"))  # the book's cache, not the copy's
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    command = [sys.executable, "-m", "tunestudy", "run", chapter, "--output-dir", str(output)]
    for name, value in parameters:
        command += ["-p", name, value]
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    progress = output / "results" / f".progress-{chapter}.jsonl"
    kinds = collections.Counter(json.loads(line)["kind"] for line in progress.read_text().splitlines() if line)
    return wall, dict(kinds)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chapter", default="02_kl_shift")
    parser.add_argument("--parameter", default="lora_lr")
    parser.add_argument("--value", default="2e-2")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench_rebuild_"))
    try:
        wall, kinds = run(args.chapter, tmp / "changed", [(args.parameter, args.value)])
        print(f"{args.chapter} with {args.parameter}={args.value}: {wall:.1f} s; built {kinds or 'nothing'}")
        copy = tmp / "repo"  # the package and the notebooks it runs, with one edit
        for folder in ("src", "notebooks"):
            shutil.copytree(REPO / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        metrics = copy / "src" / "tunestudy" / "metrics.py"
        metrics.write_text(metrics.read_text().replace('"""', '"""A docstring edit for bench_rebuild.\n\n', 1))
        wall, kinds = run(args.chapter, tmp / "docstring", [], pythonpath=copy / "src")
        print(f"{args.chapter} after a docstring edit in metrics.py: {wall:.1f} s; built {kinds or 'nothing'} "
              f"({'no base pretrained, no model tuned' if not {'base', 'tuned'} & set(kinds) else 'NOT only evaluations'})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

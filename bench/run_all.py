"""Run every benchmark in bench/ and print all their figures: `python bench/run_all.py [--quick]`.

Each bench_*.py runs in its own process with this interpreter, one after the
other (never in parallel: they time the CPU). `--quick` passes `--quick` to
the scripts that take it (bench_train: few steps; bench_book: two chapters).
bench_book.py runs with smoke-sized chapters (its `--full` mode is never used here). Extra arguments after `--` go to every
script. The exit code is non-zero if any script failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TAKES_QUICK = {"bench_train.py", "bench_book.py"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs where a script supports it")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these scripts (e.g. bench_train)")
    parser.add_argument("rest", nargs="*", help="arguments after -- for every script")
    args = parser.parse_args(argv)
    scripts = sorted(BENCH.glob("bench_*.py"))
    if args.only:
        wanted = {n if n.endswith(".py") else n + ".py" for n in args.only}
        scripts = [s for s in scripts if s.name in wanted]
    failed = []
    for script in scripts:
        command = [sys.executable, str(script), *args.rest]
        if args.quick and script.name in TAKES_QUICK:
            command.append("--quick")
        print(f"=== {script.name} ({' '.join(command[2:]) or 'defaults'})", flush=True)
        start = time.perf_counter()
        code = subprocess.run(command).returncode
        print(f"=== {script.name}: {'ok' if code == 0 else f'FAILED (exit {code})'} "
              f"in {time.perf_counter() - start:.1f} s\n", flush=True)
        if code:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

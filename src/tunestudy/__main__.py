"""Command line: `python -m tunestudy list | run NAME [-p KEY VALUE ...] | book`."""

from __future__ import annotations

import argparse
import sys

import papermill
from pathlib import Path

from tunestudy import runs


def parse_value(text: str):
    """Read a -p value the way papermill's CLI does: bool, None, int, float, else str."""
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunestudy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("list", help="the chapters and their parameters")

    run = commands.add_parser("run", help="execute one chapter into book/chapters")
    run.add_argument("name", help="chapter name, see `list`")
    run.add_argument(
        "-p", "--parameter", nargs=2, action="append", default=[],
        metavar=("KEY", "VALUE"), help="override a notebook parameter (repeatable)",
    )
    run.add_argument("--smoke", action="store_true", help="tiny run, for tests")
    run.add_argument("--force", action="store_true", help="run even if up to date")
    run.add_argument("--output-dir", type=Path, default=runs.CHAPTERS_DIR)

    book = commands.add_parser("book", help="run the chapters and build the HTML book")
    book.add_argument("--smoke", action="store_true", help="tiny runs, for tests")
    book.add_argument("--only", nargs="+", metavar="NAME", help="run only these chapters")
    book.add_argument("--workers", type=int, default=None,
                      help="chapters run at once after the first (default: 2 on a multi-core CPU, 1 with a GPU)")
    return parser


def print_table(table: tuple[runs.Chapter, ...]) -> None:
    """Each chapter, then each parameter with its default, the book's override and help."""
    for chapter in table:
        if not chapter.source.exists():
            print(f"{chapter.name}  {chapter.title}  ({chapter.notebook}: not written yet)")
            continue
        print(f"{chapter.name}  {chapter.title}  ({chapter.notebook})")
        for name, info in runs.notebook_parameters(chapter).items():
            line = f"    {name} = {info['default']}"
            if name in chapter.parameters:
                line += f"  [book: {chapter.parameters[name]!r}]"
            if info.get("help"):
                line += f"  # {info['help']}"
            print(line)


def main(argv: list[str] | None = None, table: tuple[runs.Chapter, ...] = runs.CHAPTERS) -> int:
    """Entry point; user errors (unknown chapter or parameter) give one line and exit 2."""
    args = make_parser().parse_args(argv)
    try:
        if args.command == "list":
            print_table(table)
        elif args.command == "run":
            overrides = {key: parse_value(value) for key, value in args.parameter}
            runs.run_chapter(
                args.name, overrides, output_dir=args.output_dir,
                smoke=args.smoke, force=args.force, table=table,
            )
        else:
            runs.build_book(args.only, smoke=args.smoke, table=table, workers=args.workers)
    except runs.UsageError as err:
        print(f"tunestudy: error: {err}", file=sys.stderr)
        return 2
    except papermill.PapermillExecutionError as err:
        # A chapter stopped (a bad parameter value, a diverged run): its one-line reason, not a traceback.
        reason = str(err.evalue).splitlines()[0] if err.evalue else ""
        print(f"tunestudy: error: {err.ename}: {reason} (the executed notebook is kept as *.failed.ipynb)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

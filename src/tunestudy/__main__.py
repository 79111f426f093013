"""Command line: `python -m tunestudy list | run NAME [-p KEY VALUE ...] | book | shift --base B --tuned T --data F`."""

from __future__ import annotations

import argparse
import sys

import papermill
from pathlib import Path

from tunestudy import runs, shiftpage, tokenshift


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
    book.add_argument("--force", action="store_true",
                      help="recompute every chapter, even the current ones (make reproduce: with an empty cache)")
    book.add_argument("--workers", type=int, default=None,
                      help="chapters run at once after the first (default: 2 on a multi-core CPU, 1 with a GPU)")
    shift = commands.add_parser(
        "shift", help="token shift between a base model and a tuned version of it: results file and page",
        description="Teacher-force the tuned model's greedy answers through both models: per-token KL, the "
                    "reference's top-k KL, URIAL's unshifted / marginal / shifted shares, and a page with a "
                    "token-level viewer.")
    defaults = tokenshift.PairSpec("", "", "")
    shift.add_argument("--base", required=True, help="a save_pretrained folder, a hub id, or gemma3-270m")
    shift.add_argument("--tuned", required=True, help="the same kinds, or a PEFT adapter folder on --base")
    shift.add_argument("--data", required=True,
                       help="an Alpaca JSON, JSON Lines or Parquet file, a dataset folder or a datasets hub id")
    shift.add_argument("--output-dir", type=Path, default=Path("token_shift"),
                       help="where the results file, the token file and the page go (default: ./token_shift)")
    shift.add_argument("--num-examples", type=int, default=defaults.num_examples,
                       help="the first N instructions of --data")
    shift.add_argument("--template", default=defaults.template,
                       help=f"the tuned model's prompt: {', '.join(tokenshift.TEMPLATES)}")
    shift.add_argument("--base-template", default=defaults.base_template,
                       help="the base's prompt (default: --template's); URIAL showed its base query-answer")
    shift.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens, help="answer length cap")
    shift.add_argument("--batch-size", type=int, default=defaults.batch_size, help="examples per forward pass")
    shift.add_argument("--device", default=defaults.device, help=f"{', '.join(tokenshift.DEVICES)}")
    shift.add_argument("--precision", default=defaults.precision,
                       help="of the tuned model's answers: auto, float32, bfloat16 (scoring is float32)")
    shift.add_argument("--no-page", action="store_true", help="write the results only, no page")
    return parser


def run_shift(args) -> None:
    """`tunestudy shift`: checks, results, then the page drawn from the results alone."""
    spec = tokenshift.PairSpec(
        base=args.base, tuned=args.tuned, data=args.data, num_examples=args.num_examples,
        template=args.template, base_template=args.base_template, max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size, device=args.device, precision=args.precision)
    path = tokenshift.run_pair(spec, args.output_dir)
    print(f"results: {path}")
    if not args.no_page:
        print(f"page: {shiftpage.write_page(args.output_dir)}")


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
        elif args.command == "shift":
            run_shift(args)
        else:
            runs.build_book(args.only, smoke=args.smoke, table=table, workers=args.workers, force=args.force)
    except (runs.UsageError, tokenshift.PairError) as err:
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

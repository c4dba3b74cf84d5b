"""Compare finished runs, and keep the recipe result tables.

  python compare.py runs/ [more run folders] --out results/table    # a table of any run folders
  python compare.py record RUN_DIR [...] [--variant NAME]           # committed records: results/records/
  python compare.py results [--check]                               # recipes/RESULTS.md from the records

Reads every ``summary.json`` under the given folders and prints one Markdown table per data set,
best top-1 first. Each row says what sets it apart: its recipe, a variant (the recipe keys the run
changed from the recipe file, and world size or precision where runs of one recipe differ) and the
split its numbers are on. ``--group`` (the default) folds runs that differ only in ``train.seed``
into one row: top-1 mean ± sample std over the n runs; ``--no-group`` lists every run (with its
seed where that is what differs).

Writes into ``--out``: ``table.md`` and ``table.csv`` (the rows shown), ``runs.csv`` (every run,
ungrouped), and per data set ``accuracy_vs_time-<data set>.png`` and ``curves-<data set>.png``,
whose numbered points and legends match the table's ``#`` column.

``record`` reduces each run folder to its result record (trainkit.report.records) in
``results/records/<data set>/<recipe>[--<variant>]-seed<N>.json``; ``--variant NAME`` names a run that
changed its recipe's keys (a budget schedule: ``--variant budget``). ``results`` regenerates
``recipes/RESULTS.md`` from every committed record, the zoo cards made from them and
``results/not_run.yaml``; ``--check`` only says whether the file is stale (exit 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainkit.config.paths import project_relative
from trainkit.commands.common import new_parser, parse
from trainkit.report.records import (RECORDS_DIR, group_records, record_from_run, records_from_runs,
                                     ungrouped, write_record)
from trainkit.report.results import NOT_RUN, RESULTS_MD, results_text
from trainkit.report.table import TableError, to_csv, to_markdown, write_tables

SUBCOMMANDS = ("record", "results")


EXAMPLES = ["trainkit compare runs/ --out results/table          # every run folder under runs/, one table",
            "trainkit compare runs/a runs/b --sort loss --no-group --no-charts",
            "trainkit compare record runs/a --variant budget     # a result record (results/records/)",
            "trainkit compare results --check                    # is recipes/RESULTS.md up to date?"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = new_parser(__doc__, EXAMPLES)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="run folders, or folders to search for run folders (their summary.json)")
    p.add_argument("--out", type=Path, default=Path("results/table"), help="folder for the tables and charts")
    p.add_argument("--sort", default="top1", metavar="KEY",
                   help="summary key to rank by within a dataset (default top1; loss/time rank ascending)")
    p.add_argument("--group", action=argparse.BooleanOptionalAction, default=True,
                   help="fold runs that differ only in train.seed into one row (mean ± std, n); "
                        "--no-group lists every run")
    p.add_argument("--no-charts", action="store_true", help="tables only (no matplotlib)")
    return parse(p, argv, "compare", overrides=False)


def parse_sub(argv: list[str]) -> argparse.Namespace:
    p = new_parser(__doc__, EXAMPLES)
    sub = p.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run folders -> result records (results/records/<data set>/)")
    rec.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    rec.add_argument("--variant", metavar="NAME", help="name of the variant the runs are (e.g. budget), shown "
                                                       "in RESULTS.md with the keys they changed")
    rec.add_argument("--out", type=Path, default=RECORDS_DIR, help="records root (default: results/records)")
    rec.add_argument("--allow-dirty", action="store_true",
                     help="record runs whose commit had uncommitted changes or is not in git log (marked as such)")
    res = sub.add_parser("results", help="regenerate recipes/RESULTS.md from the committed records")
    res.add_argument("--records", type=Path, default=RECORDS_DIR)
    res.add_argument("--notes", type=Path, default=NOT_RUN)
    res.add_argument("--out", type=Path, default=RESULTS_MD)
    res.add_argument("--check", action="store_true", help="write nothing; exit 1 when --out is stale")
    return parse(p, argv, "compare", overrides=False)


def run_sub(args: argparse.Namespace) -> int:
    if args.command == "record":
        for run in args.runs:
            path = write_record(record_from_run(run, variant_name=args.variant), args.out,
                                allow_dirty=args.allow_dirty)
            print(project_relative(path))
        return 0
    text = results_text(args.records, args.notes)
    if args.check:
        stale = not args.out.is_file() or args.out.read_text() != text
        print(f"{args.out}: {'stale; run: python compare.py results' if stale else 'up to date'}")
        return 1 if stale else 0
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Collect, write and print the table; a user error is one ``error: ...`` line and exit status 2."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:   # a run folder of that name: give it as ./record
        try:
            return run_sub(parse_sub(argv))
        except (TableError, OSError) as err:
            print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
            return 2
    args = parse_args(argv)
    try:
        records = records_from_runs(args.paths)
        rows = group_records(records) if args.group else ungrouped(records)
        write_tables(rows, args.out, sort_by=args.sort)
        to_csv(ungrouped(records), args.out / "runs.csv", sort_by=args.sort)
        if not args.no_charts:
            from trainkit.report.charts import write_charts  # late: matplotlib only when charts are wanted
            write_charts(rows, args.out, sort_by=args.sort)
    except (TableError, OSError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(to_markdown(rows, sort_by=args.sort), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

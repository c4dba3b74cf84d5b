"""Compare finished runs: ``python compare.py runs/ [more run folders] --out results/table``.

Reads every ``summary.json`` under the given folders and prints one Markdown table per data set,
best top-1 first. Each row says what sets it apart: its recipe, a variant (the recipe keys the run
changed from the recipe file, and world size or precision where runs of one recipe differ) and the
split its numbers are on. ``--group`` (the default) folds runs that differ only in ``train.seed``
into one row: top-1 mean ± sample std over the n runs; ``--no-group`` lists every run (with its
seed where that is what differs).

Writes into ``--out``: ``table.md`` and ``table.csv`` (the rows shown), ``runs.csv`` (every run,
ungrouped), and per data set ``accuracy_vs_time-<data set>.png`` and ``curves-<data set>.png``,
whose numbered points and legends match the table's ``#`` column.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainkit.report.records import annotate, group_records, ungrouped
from trainkit.report.table import TableError, collect, to_csv, to_markdown, write_tables


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="run folders, or folders to search for run folders (their summary.json)")
    p.add_argument("--out", type=Path, default=Path("results/table"), help="folder for the tables and charts")
    p.add_argument("--sort", default="top1", metavar="KEY",
                   help="summary key to rank by within a dataset (default top1; loss/time rank ascending)")
    p.add_argument("--group", action=argparse.BooleanOptionalAction, default=True,
                   help="fold runs that differ only in train.seed into one row (mean ± std, n); "
                        "--no-group lists every run")
    p.add_argument("--no-charts", action="store_true", help="tables only (no matplotlib)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Collect, write and print the table; a user error is one ``error: ...`` line and exit status 2."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        records = annotate(collect(args.paths))
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

"""Compare finished runs: ``python compare.py runs/ [more run folders] --out results/table``.

Reads every ``summary.json`` under the given folders, prints a Markdown table
(one per dataset, best top-1 first) and writes ``table.md``, ``table.csv``,
``accuracy_vs_time.png`` and ``curves.png`` (training curves of all runs) into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainkit.report.table import TableError, collect, to_markdown, write_tables


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="run folders, or folders to search for run folders (their summary.json)")
    p.add_argument("--out", type=Path, default=Path("results/table"), help="folder for table.md and table.csv")
    p.add_argument("--sort", default="top1", metavar="KEY",
                   help="summary key to rank by within a dataset (default top1; loss/time rank ascending)")
    p.add_argument("--no-charts", action="store_true", help="tables only (no matplotlib)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Collect, write and print the table; a user error is one ``error: ...`` line and exit status 2."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        rows = collect(args.paths)
        write_tables(rows, args.out, sort_by=args.sort)
        if not args.no_charts:
            from trainkit.report.charts import accuracy_vs_time_png, curves_png
            accuracy_vs_time_png(rows, args.out / "accuracy_vs_time.png")
            curves_png(rows, args.out / "curves.png")
    except (TableError, OSError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(to_markdown(rows, sort_by=args.sort), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

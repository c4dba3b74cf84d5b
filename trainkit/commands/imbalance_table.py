"""The table of imbalanced-data runs (CIFAR-10-LT), from the same result records as recipes/RESULTS.md.

``python imbalance_table.py record runs/<run> [...]`` writes each finished run folder's record (the same
as ``python compare.py record``) under ``results/records/<data set>/``; ``python imbalance_table.py table``
regenerates ``results/cifar10_lt/table.md`` from the records in ``results/records/cifar10-jpeg-lt/``
(one table per schedule) and prints it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainkit.config.paths import project_root
from trainkit.commands.common import new_parser, parse
from trainkit.report.imbalance import tables_markdown
from trainkit.report.records import RECORDS_DIR, RecordError, read_records, record_from_run, write_record



def parse_args(argv: list[str]) -> argparse.Namespace:
    p = new_parser(__doc__, ["trainkit imbalance-table table                       # records -> "
                             "results/cifar10_lt/table.md",
                             "trainkit imbalance-table record runs/lt-* --out results/records"])
    sub = p.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run folders -> records")
    rec.add_argument("runs", nargs="+", type=Path)
    rec.add_argument("--out", type=Path, default=RECORDS_DIR, help="records root (a folder per data set)")
    rec.add_argument("--allow-dirty", action="store_true", help="as compare.py record --allow-dirty")
    tab = sub.add_parser("table", help="records -> table.md")
    tab.add_argument("folder", type=Path, nargs="?", default=RECORDS_DIR / "cifar10-jpeg-lt",
                     help="the long-tailed data set's records")
    tab.add_argument("--out", type=Path, default=project_root() / "results" / "cifar10_lt" / "table.md")
    return parse(p, argv, "imbalance-table", overrides=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "record":
            for run in args.runs:
                print(write_record(record_from_run(run), args.out, allow_dirty=args.allow_dirty))
            return 0
        records = [r for r in read_records(args.folder) if not r.get("ablation")]
        if not records or not all(r.get("train_class_counts") and r.get("per_class_recall") for r in records):
            raise RecordError(f"{args.folder}: no records with per-class recall and training class counts")
        md = tables_markdown(records)
    except (RecordError, OSError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(md)
    print(md, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

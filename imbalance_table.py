"""Result records and the table of imbalanced-data runs (CIFAR-10-LT).

``python imbalance_table.py record runs/<run> [...] --out results/cifar10_lt`` reduces each finished
run folder's summary.json to a small JSON record; ``python imbalance_table.py table results/cifar10_lt``
regenerates ``results/cifar10_lt/table.md`` from the records (and prints it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainkit.report.imbalance import RecordError, read_records, record_from_run, to_markdown, write_record


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run folders -> records")
    rec.add_argument("runs", nargs="+", type=Path)
    rec.add_argument("--out", type=Path, default=Path("results/cifar10_lt"))
    tab = sub.add_parser("table", help="records -> table.md")
    tab.add_argument("folder", type=Path, nargs="?", default=Path("results/cifar10_lt"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "record":
            for run in args.runs:
                print(write_record(record_from_run(run), args.out))
            return 0
        md = to_markdown(read_records(args.folder))
    except (RecordError, OSError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    (args.folder / "table.md").write_text(md)
    print(md, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Evaluate a run folder or checkpoint: ``python evaluate.py runs/<run> [--split test]``.

Uses the eval preprocessing, classes and precision saved in the checkpoint;
prints top-1/top-5/loss/ECE and writes metrics.json, per_class.csv,
confusion.csv and confusion.png (default: <run folder>/eval/<split>-<checkpoint>/).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainkit.checkpoint import resolve_checkpoint
from trainkit.cli import one_line_errors, setup_logging
from trainkit.distributed import cleanup, init_distributed
from trainkit.evaluation import SPLITS, evaluate_checkpoint, write_report
from trainkit.metrics import format_metrics


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="run folder or checkpoint file")
    p.add_argument("--split", choices=SPLITS, default="test")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which checkpoint of a run folder")
    p.add_argument("--data-root", help="override data.root (the data set moved)")
    p.add_argument("--batch", type=int, help="eval batch (default: the run's)")
    p.add_argument("--workers", type=int, help="loader workers (default: the run's)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="default: the run's")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--out", type=Path, help="report folder")
    return p.parse_args(argv)


@one_line_errors
def main() -> int:
    args = parse_args(sys.argv[1:])
    setup_logging()
    ckpt = resolve_checkpoint(args.path, args.checkpoint)
    dist, device = init_distributed(args.device)
    try:
        report = evaluate_checkpoint(ckpt, split=args.split, dist=dist, device=device, data_root=args.data_root,
                                     batch=args.batch, workers=args.workers, precision=args.precision)
        if dist.is_main:
            out = args.out or ckpt.parent / "eval" / f"{args.split}-{ckpt.stem}"
            write_report(report, out)
            print(f"{report['model']} {ckpt} [{args.split}]: {format_metrics(report['metrics'])}")
            print(f"report: {out}")
        return 0
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())

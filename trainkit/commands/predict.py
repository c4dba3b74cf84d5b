"""Classify your images: ``python predict.py MODEL IMAGES... [--topk 5] [--out preds.csv|preds.json]``.

MODEL is any model string the project resolves: zoo:<id>, timm:<name>, a run folder (its
best.pt), a checkpoint, or a weights file with --arch. IMAGES are files, folders (recursive),
glob patterns, or ``-`` for paths read from stdin, one per line.

Each image gets the model's own eval preprocessing (as evaluate.py feeds it). Without --out,
one line per image: the path, then the top-k labels with probabilities (ImageNet synset ids
with their names). With --out, one row per image in CSV or JSON, with the model spec and card id.
A file that cannot be read as an image is a warning line and a row with its error; the others
carry on. Exit status: 0 every image classified, 1 some failed, 2 bad arguments or model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from trainkit.cli import one_line_errors
from trainkit.data.sources import DataError
from trainkit.eval.predict import (
    OUT_FORMATS,
    default_batch,
    expand_images,
    format_line,
    iter_predictions,
    resolve,
    write_predictions,
)
from trainkit.runtime.distributed import pick_device


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="zoo:<id>, timm:<name>, run folder, checkpoint or weights file")
    p.add_argument("images", nargs="+", metavar="IMAGES", help="files, folders, globs, or - (paths on stdin)")
    p.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    p.add_argument("--out", type=Path, help="write one row per image to a .csv or .json file instead of printing")
    p.add_argument("--batch", type=int, help="images per forward pass (default 256 up to 64 px, 32 above)")
    p.add_argument("--tta", action="store_true", help="average the softmax over horizontal flips")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--workers", type=int, default=2, help="image-decoding processes (default 2; 0: in this one)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                   help="autocast (default: the model's own, as evaluate.py: a run's precision, else fp32)")
    p.add_argument("--arch", help="architecture of a plain weights file (a timm or trainkit model name)")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Values argparse cannot check, refused in one line before anything is loaded."""
    if args.out is not None and args.out.suffix not in OUT_FORMATS:
        raise DataError(f"--out {args.out}: give a file ending in {' or '.join(OUT_FORMATS)}")
    for name in ("topk", "batch"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise DataError(f"--{name} {getattr(args, name)}: must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda: no CUDA device is available (use --device auto or cpu)")


@one_line_errors
def main() -> int:
    args = parse_args(sys.argv[1:])
    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device, 0)
    paths = expand_images(args.images, sys.stdin if "-" in args.images else None)
    if not paths:
        raise DataError(f"no images in {' '.join(args.images)}")
    loaded = resolve(args.model, args.arch)
    start = time.perf_counter()
    preds, failed = [], 0
    batch = args.batch or default_batch(loaded)
    workers = args.workers if len(paths) > batch else 0   # one batch: not worth starting processes
    for pred in iter_predictions(loaded, paths, topk=args.topk, batch=batch, tta=args.tta, device=device,
                                 precision=args.precision, workers=workers, show_progress="auto"):
        if not pred.ok:
            failed += 1
            tqdm.write(f"warning: {pred.path}: {pred.error}", file=sys.stderr)
        if args.out is None:
            tqdm.write(format_line(pred), file=sys.stdout)   # above the progress bar on a terminal
        preds.append(pred)
    seconds = time.perf_counter() - start
    if args.out is not None:
        write_predictions(preds, args.out, loaded=loaded, topk=args.topk)
    where = f" -> {args.out}" if args.out is not None else ""
    print(f"{len(preds)} images ({failed} failed) with {loaded.spec} [{loaded.describe_preprocessing()}] "
          f"in {seconds:.1f}s ({len(preds) / max(seconds, 1e-9):.0f} img/s){where}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

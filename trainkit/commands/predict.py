"""Classify your images: ``trainkit predict MODEL IMAGES... [--topk 5] [--out DIR [--format csv|json]]``.

MODEL is any model string the project resolves: zoo:<id>, timm:<name>, a run folder (its
best.pt), a checkpoint, or a weights file with --arch. IMAGES are files, folders (recursive),
glob patterns, or ``-`` for paths read from stdin, one per line.

Each image gets the model's own eval preprocessing (as evaluate.py feeds it). Without --out,
one line per image: the path, then the top-k labels with probabilities (ImageNet synset ids
with their names). With --out, one row per image in CSV or JSON, with the model spec and card id.
An image that cannot be decoded is a warning line and a row with its error; the others carry on.
Files that are not images at all (notes.txt) are skipped and counted apart; a path that does not
exist is an error. Exit status: 0 every image classified, 1 some failed, 2 bad arguments, paths or model.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from tqdm import tqdm

from trainkit.cli import one_line_errors
from trainkit.commands.common import add_shared, new_parser, output_file, parse
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


EXAMPLES = ["trainkit predict zoo:cifar10_resnet20 ../shared/data/cifar10-jpeg/test/cat --topk 3",
            "trainkit predict timm:resnet18.a1_in1k photos/ --out runs/predictions   # writes predictions.csv",
            "find photos -name '*.jpg' | trainkit predict runs/quickstart-20250101-120000 - --out preds --format json"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = new_parser(__doc__, EXAMPLES)
    p.add_argument("model", metavar="MODEL", help="zoo:<id>, timm:<name>, run folder, checkpoint or weights file")
    p.add_argument("images", nargs="+", metavar="IMAGES", help="files, folders, globs, or - (paths on stdin)")
    p.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    add_shared(p, "out", "device", "precision",
               help={"out": "folder for predictions.csv (or .json with --format json) instead of printing",
                     "precision": "autocast (default: the model's own, as evaluate: a run's precision, else fp32)"})
    p.add_argument("--format", choices=("csv", "json"), default="csv", help="--out: the file's format (default csv)")
    p.add_argument("--batch", type=int, help="images per forward pass (default 256 up to 64 px, 32 above)")
    p.add_argument("--tta", action="store_true", help="average the softmax over horizontal flips")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--workers", type=int, default=2, help="image-decoding processes (default 2; 0: in this one)")
    p.add_argument("--arch", help="architecture of a plain weights file (a timm or trainkit model name)")
    args = parse(p, argv, "predict", overrides=False)
    if args.out is not None:
        args.out = output_file(args.out, f"predictions.{args.format}", OUT_FORMATS)
    return args


def check_args(args: argparse.Namespace) -> None:
    """Values argparse cannot check, refused in one line before anything is loaded."""
    if args.out is not None and args.out.suffix not in OUT_FORMATS:
        raise DataError(f"--out {args.out}: give a folder (or a file ending in {' or '.join(OUT_FORMATS)})")
    for name in ("topk", "batch"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise DataError(f"--{name} {getattr(args, name)}: must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda: no CUDA device is available (use --device auto or cpu)")


def check_paths(paths: list[str]) -> list[str]:
    """A path that does not exist is the caller's mistake, not a failed prediction: one error line."""
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"no such file or folder: {missing[0]}{more}")
    return paths


def is_skipped(pred) -> bool:
    """A file that is not an image at all (notes.txt in a photo folder) is skipped and counted apart from an
    image that failed to decode."""
    return not pred.ok and (pred.error or "").startswith(("not an image", "a folder"))


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device, 0)
    paths = check_paths(expand_images(args.images, sys.stdin if "-" in args.images else None))
    if not paths:
        raise DataError(f"no images in {' '.join(args.images)}")
    loaded = resolve(args.model, args.arch)
    start = time.perf_counter()
    preds, failed, skipped = [], 0, 0
    batch = args.batch or default_batch(loaded)
    workers = args.workers if len(paths) > batch else 0   # one batch: not worth starting processes
    for pred in iter_predictions(loaded, paths, topk=args.topk, batch=batch, tta=args.tta, device=device,
                                 precision=args.precision, workers=workers, show_progress="auto"):
        if is_skipped(pred):
            skipped += 1
            continue
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
    extra = f", {skipped} non-image file{'s' if skipped != 1 else ''} skipped" if skipped else ""
    print(f"{len(preds)} images ({failed} failed{extra}) with {loaded.spec} [{loaded.describe_preprocessing()}] "
          f"in {seconds:.1f}s ({len(preds) / max(seconds, 1e-9):.0f} img/s){where}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Run timm's own train.py (a pytorch-image-models checkout, never vendored here) on trainkit's models.

    python benchmarks/timm_train.py --timm-dir /work/timm-peer -- --data-dir DIR --model resnet20_cifar ...

The checkout's ``timm`` package goes first on ``sys.path`` (its train.py needs its own timm), then
trainkit's CIFAR models register themselves with that timm, then train.py runs as ``__main__``
with the arguments after ``--``: the peer trains the same registered architecture we do.
Get a checkout with ``git clone https://github.com/huggingface/pytorch-image-models`` (or
``git archive`` of a mirror); benchmarks/run.py records its commit.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timm-dir", required=True, help="a pytorch-image-models checkout (has train.py and timm/)")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then timm train.py's own arguments")
    args = p.parse_args()
    timm_dir = Path(args.timm_dir).resolve()
    if not (timm_dir / "train.py").is_file() or not (timm_dir / "timm").is_dir():
        sys.exit(f"error: --timm-dir {timm_dir}: not a pytorch-image-models checkout (train.py and timm/ expected)")
    sys.path[:0] = [str(timm_dir), str(ROOT)]
    import timm  # noqa: F401  (the checkout's, imported before trainkit registers into it)

    import trainkit.models.cifar  # noqa: F401  (registers resnet20_cifar & co. with that timm)

    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    sys.argv = [str(timm_dir / "train.py"), *train_args]
    runpy.run_path(str(timm_dir / "train.py"), run_name="__main__")


if __name__ == "__main__":
    main()

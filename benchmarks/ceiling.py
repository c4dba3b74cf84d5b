"""The ceiling for a training row: the bare model step on synthetic in-memory tensors.

    python benchmarks/ceiling.py --precision bf16 --batch 128 --steps 20

The same model, batch, precision, memory format and threads as the training rows, stepped by
the same timer the ``train.precision: amp`` probe uses (trainkit.train.numerics.StepTimer):
forward, cross-entropy, backward, SGD, with no data loading at all. Prints one JSON line:
median img/s over the timed steps (after warm-up) and the process's wall seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

T0 = time.perf_counter()

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainkit.config.recipe import load_recipe  # noqa: E402
from trainkit.train.numerics import StepTimer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="recipes/cifar10_resnet20.yaml", help="model and image size come from here")
    p.add_argument("--precision", choices=["bf16", "fp32"], required=True)
    p.add_argument("--contiguous", action="store_true", help="contiguous layout instead of channels_last")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up steps)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe, ["data.root=."])   # no data is read: the tensors are synthetic
    timer = StepTimer(recipe, batch=args.batch, num_classes=10, in_chans=3, device=torch.device("cpu"),
                      warmup_steps=3)
    rates = [timer(args.precision, not args.contiguous) for _ in range(args.steps)]
    print(json.dumps({"impl": "ceiling", "precision": args.precision, "channels_last": not args.contiguous,
                      "batch": args.batch, "steps": args.steps, "img_per_s": statistics.median(rates),
                      "threads": torch.get_num_threads(), "total_s": time.perf_counter() - T0}))


if __name__ == "__main__":
    main()

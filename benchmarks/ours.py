"""trainkit's side of the data-pipeline benchmark: the loader train.py builds.

    python benchmarks/ours.py --root ../shared/data/cifar10-jpeg --limit 10000 --epochs 3

Prints one JSON line in the same shape as reference.py: steady-state img/s
(after the one-time decode and the first batch) and total seconds including
the decode, plus the decode time on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainkit.data.loaders import LoaderSettings, make_loader  # noqa: E402
from trainkit.data.sources import open_source, resolve_splits  # noqa: E402
from trainkit.config.recipe import load_recipe  # noqa: E402


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [f"data.root={args.root}", f"train.global_batch={args.batch}", f"runtime.workers={args.workers}",
                 f"data.in_memory={args.in_memory}", *args.overrides]
    if args.limit:
        overrides.append(f"data.limit_train={args.limit}")
    recipe = load_recipe(args.recipe, overrides)
    t0 = time.perf_counter()
    split = resolve_splits(recipe.data, open_source(recipe.data))["train"]
    settings = LoaderSettings.from_runtime(recipe.runtime, args.batch, torch.device("cpu"), train=True)
    loader = make_loader(split, train=True, data=recipe.data, augment=recipe.augment, settings=settings,
                         chans=3, device=torch.device("cpu"), seed=0, channels_last=recipe.runtime.channels_last)
    decode_s = time.perf_counter() - t0
    images, seen, t_first = 0, 0, None
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        for _, y in loader:
            seen += len(y)
            if t_first is None:
                t_first = time.perf_counter()
            else:
                images += len(y)
    end = time.perf_counter()
    return {"impl": "ours", "mode": "data", "images": images, "steady_s": end - t_first,
            "img_per_s": images / (end - t_first), "total_s": end - t0, "images_all": seen, "decode_s": decode_s,
            "in_memory": loader.in_memory, "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True)
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "cifar10_resnet20.yaml"))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--in-memory", default="auto")
    p.add_argument("overrides", nargs="*", help="extra recipe overrides, key=value")
    print(json.dumps(run(p.parse_args())))


if __name__ == "__main__":
    main()

"""Measure loader throughput on this machine and write the best ``runtime:`` settings.

    python tune_loader.py recipes/cifar10_resnet20.yaml data.root=../shared/data/cifar10-jpeg \\
        [--workers 0 1 2] [--prefetch 2 4] [--pin false true] [--batch 64 128] [--batches 20] \\
        [--repeats 3] [--out runtime-tuned.yaml]

Times the training loader the recipe builds (its data, transforms and augmentation), on
the per-sample path that these settings govern, for every combination; prints the table
and writes the fastest as a ``runtime:`` fragment to add to the recipe's ``base:`` (or to
pass as overrides). Runtime keys never change what is trained, so the recipe hash holds.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import sys
import time
from pathlib import Path

import torch
import yaml

from trainkit.cli import one_line_errors, setup_logging
from trainkit.config.schema import RecipeError
from trainkit.data.loaders import LoaderSettings, make_loader
from trainkit.train.plan import batch_split
from trainkit.commands.common import add_shared, new_parser, output_file, parse, recipe_overrides
from trainkit.config.recipe import Recipe, load_recipe
from trainkit.data.sources import prepare_data

log = logging.getLogger("trainkit")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = new_parser(__doc__, ["trainkit tune-loader recipes/quickstart.yaml --workers 0 2 --batches 5 --repeats 1",
                             "trainkit tune-loader recipes/cifar10_resnet20.yaml "
                             "--data-root ../shared/data/cifar10-jpeg "
                             "--out recipes/_base/runtime"])
    p.add_argument("recipe", metavar="RECIPE", help="recipe YAML file; key.path=value overrides go anywhere")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2, 4])
    p.add_argument("--prefetch", type=int, nargs="+", default=[2, 4], help="prefetch_factor (workers > 0)")
    p.add_argument("--pin", choices=("false", "true"), nargs="+", help="pin_memory (default: both with CUDA, "
                   "false without: pinning only speeds host-to-GPU copies)")
    p.add_argument("--batch", type=int, nargs="+", help="per-device batches (default: the recipe's)")
    p.add_argument("--batches", type=int, default=20, help="timed batches per combination (after one warm-up)")
    p.add_argument("--repeats", type=int, default=3, help="rounds over all combinations; the median counts")
    p.add_argument("--world", type=int, default=1, help="processes the run will use (for batch validity)")
    add_shared(p, "out", "data_root", "device",
               help={"out": "folder for the runtime fragment <recipe>-runtime.yaml (default: here)"})
    args = parse(p, argv, "tune-loader")
    args.overrides = recipe_overrides(args, "data_root", "device")
    args.out = output_file(args.out, f"{Path(args.recipe).stem}-runtime.yaml", (".yaml", ".yml"))
    return args


def measure(recipe: Recipe, split, chans: int, settings: LoaderSettings, batches: int, device: torch.device) -> float:
    """Images per second over ``batches`` batches, after a warm-up batch (worker start-up excluded)."""
    data = dataclasses.replace(recipe.data, in_memory=False)      # the path these settings govern
    loader = make_loader(split, train=True, data=data, augment=recipe.augment, settings=settings,
                         chans=chans, device=device,
                         seed=recipe.train.seed, channels_last=recipe.runtime.channels_last)
    loader.set_epoch(0)
    it = iter(loader)
    next(it)
    images, start = 0, time.perf_counter()
    for _, (x, _) in zip(range(batches), it):
        images += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    del it, loader                                                  # stop the workers before the next one
    return images / seconds


def candidates(args, recipe: Recipe, device: torch.device):
    batches = []
    for batch in args.batch or [batch_split(recipe, args.world)[0]]:
        problem = check_batch(recipe, batch, args.world)
        if problem:
            log.info("skip batch %d: %s", batch, problem)
        else:
            batches.append(batch)
    pins = [p == "true" for p in args.pin] if args.pin else ([False, True] if device.type == "cuda" else [False])
    for batch, workers, prefetch, pin in itertools.product(batches, args.workers, args.prefetch, pins):
        if workers == 0 and prefetch != args.prefetch[0]:
            continue                    # prefetch_factor means nothing without workers
        yield batch, workers, prefetch, pin


def check_batch(recipe: Recipe, batch: int, world: int) -> str | None:
    probe = dataclasses.replace(recipe, runtime=dataclasses.replace(recipe.runtime, per_device_batch=batch))
    try:
        batch_split(probe, world)
    except RecipeError as err:
        return str(err)
    return None


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging()
    recipe = load_recipe(args.recipe, args.overrides)
    if recipe.runtime.threads:
        torch.set_num_threads(recipe.runtime.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and recipe.runtime.device != "cpu" else "cpu")
    data = prepare_data(recipe)
    split = data.splits["train"]
    log.info("tuning the training loader of %s on %s: %d images (%s), %s", args.recipe, device, len(split),
             data.description, "per-sample path")
    combos = list(candidates(args, recipe, device))
    if not combos:
        raise RecipeError("no valid combination to measure (see the skipped batches above)")
    rates: dict[tuple, list[float]] = {c: [] for c in combos}
    for round_ in range(args.repeats):      # rounds, not back-to-back repeats: drifting load hits all alike
        for batch, workers, prefetch, pin in combos:
            settings = LoaderSettings(batch=batch, workers=workers, pin_memory=pin, prefetch_factor=prefetch,
                                      persistent_workers=False, drop_last=True)
            rate = measure(recipe, split, recipe.model.in_chans or data.in_chans, settings, args.batches, device)
            rates[(batch, workers, prefetch, pin)].append(rate)
            log.info("round %d  batch %4d  workers %d  prefetch %d  pin %-5s  %8.0f img/s", round_ + 1, batch,
                     workers, prefetch, pin, rate)
    rows = [{"per_device_batch": b, "workers": w, "prefetch_factor": pf, "pin_memory": pin,
             "img_per_s": sorted(r)[len(r) // 2], "min": min(r), "max": max(r)}
            for (b, w, pf, pin), r in rates.items()]
    rows.sort(key=lambda r: -r["img_per_s"])
    print(f"\n| per_device_batch | workers | prefetch_factor | pin_memory | img/s (median of {args.repeats}) "
          "| min-max |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['per_device_batch']} | {r['workers']} | {r['prefetch_factor']} | "
              f"{str(r['pin_memory']).lower()} | {r['img_per_s']:.0f} | {r['min']:.0f}-{r['max']:.0f} |")
    best = {k: rows[0][k] for k in ("per_device_batch", "workers", "prefetch_factor", "pin_memory")}
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# tune_loader.py on {device} ({torch.get_num_threads()} threads): fastest of {len(rows)} "
              f"combinations, median {rows[0]['img_per_s']:.0f} img/s on the per-sample path.\n"
              "# Add this file to the recipe's base: list, or pass the keys as runtime.* overrides.\n")
    out.write_text(header + yaml.safe_dump({"runtime": best}, sort_keys=False))
    print(f"\nbest: {' '.join(f'runtime.{k}={str(v).lower()}' for k, v in best.items())}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

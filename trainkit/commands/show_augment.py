"""Save a PNG grid of augmented training samples, exactly as the recipe's training loader
makes them (crop, flip, policy, jitter, albumentations, random erasing, mixup/cutmix,
multi-scale): ``trainkit show-augment recipes/x.yaml [key=value ...] --out DIR``.

The first batch of the chosen epoch is drawn from a seeded subset of the training
split (``--count`` images), un-normalised with the recipe's mean/std.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import torch
from torchvision.utils import make_grid, save_image

from trainkit.cli import one_line_errors, setup_logging
from trainkit.commands.common import add_shared, new_parser, output_file, parse, recipe_overrides
from trainkit.config.schema import RecipeError
from trainkit.data.loaders import LoaderSettings, make_loader
from trainkit.data.mixup import Mixup
from trainkit.config.recipe import load_recipe
from trainkit.data.sources import prepare_data


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = new_parser(__doc__, ["trainkit show-augment recipes/quickstart.yaml --out runs/augment --count 16",
                             "trainkit show-augment recipes/cifar10_resnet20.yaml "
                             "--data-root ../shared/data/cifar10-jpeg "
                             "augment.mixup=0.5"])
    p.add_argument("recipe", help="recipe YAML file; key.path=value overrides go anywhere")
    add_shared(p, "out", "data_root", help={"out": "folder the grid augment_grid.png goes in (default: here)"})
    p.add_argument("--count", type=int, default=64, help="images in the grid")
    p.add_argument("--epoch", type=int, default=0, help="which epoch's augmentation (mixup off_epoch applies)")
    p.add_argument("--no-mix", action="store_true", help="leave mixup/cutmix out")
    p.add_argument("--scale", type=int, default=2, help="upscale each image by this factor (small images)")
    args = parse(p, argv, "show-augment")
    args.overrides = recipe_overrides(args, "data_root")
    args.out = output_file(args.out, "augment_grid.png", (".png", ".jpg"))
    return args


def denormalize(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x.float().cpu() * s + m).clamp(0, 1)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(quiet=True)
    if args.count < 1:
        raise RecipeError(f"--count: must be >= 1, got {args.count}")
    recipe = load_recipe(args.recipe, args.overrides)
    # A seeded subset is enough to draw one batch; decoding all of a large split is not needed.
    limit = min(recipe.data.limit_train or args.count, args.count)
    recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, limit_train=limit))
    torch.set_num_threads(recipe.runtime.threads or torch.get_num_threads())
    data = prepare_data(recipe)
    device = torch.device("cpu")
    mix = None if args.no_mix or not recipe.mixup.active else Mixup(recipe.mixup, len(data.classes))
    settings = LoaderSettings(batch=min(args.count, len(data.splits["train"])), workers=0, pin_memory=False,
                              prefetch_factor=2, persistent_workers=False, drop_last=False)
    loader = make_loader(data.splits["train"], train=True, data=recipe.data, augment=recipe.augment,
                         settings=settings, chans=data.in_chans, device=device, seed=recipe.train.seed,
                         channels_last=False, multiscale=recipe.multiscale, mix=mix)
    loader.set_epoch(args.epoch)
    images, targets = next(iter(loader))
    pictures = denormalize(images, recipe.data.eval.mean, recipe.data.eval.std)
    if args.scale > 1:
        pictures = torch.nn.functional.interpolate(pictures, scale_factor=args.scale, mode="nearest")
    nrow = max(1, int(round(len(pictures) ** 0.5)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(pictures, nrow=nrow, padding=2, pad_value=1.0), args.out)
    kind = "soft (mixed)" if targets.dim() == 2 else "hard"
    print(f"{args.out}: {len(pictures)} training samples of {args.recipe} at {images.shape[-1]} px, epoch "
          f"{args.epoch}, {'in-memory' if loader.in_memory else 'per-sample'} path, {kind} targets")
    return 0


if __name__ == "__main__":
    sys.exit(main())

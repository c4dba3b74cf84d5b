"""Train any recipe: ``trainkit train recipes/x.yaml [key.path=value ...]`` (= ``python train.py ...``).

Also ``--resume <run folder or checkpoint>``, ``--resume auto`` (continue the run folder
named by runtime.run_name when it has a checkpoint, else start it) and ``--print`` (resolved recipe and
plan, no training). Works the same under ``torchrun --nproc_per_node N``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from trainkit.runtime.checkpoint import load_checkpoint, resolve_checkpoint
from trainkit.cli import log_to_file, one_line_errors, setup_logging
from trainkit.commands.common import add_shared, new_parser, parse, recipe_overrides
from trainkit.config.schema import RecipeError
from trainkit.runtime.distributed import cleanup, init_distributed, peer_lost
from trainkit.runtime.faults import newest_valid_checkpoint
from trainkit.eval.metrics import format_metrics
from trainkit.config.recipe import apply_overrides, load_recipe, parse_recipe, recipe_yaml
from trainkit.data.sources import prepare_data
from trainkit.train.budget import budget_line
from trainkit.train.trainer import Trainer, plan_for, run_folder, seed_everything, write_run_header

log = logging.getLogger("trainkit")


EXAMPLES = ["trainkit train recipes/quickstart.yaml",
            "trainkit train recipes/quickstart.yaml --print data.limit_train=100   # overrides anywhere",
            "trainkit train recipes/cifar10_resnet20.yaml --data-root ../shared/data/cifar10-jpeg --seeds 1 "
            "--out runs/mine",
            "trainkit train --resume runs/quickstart-20250101-120000"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = new_parser(__doc__, EXAMPLES)
    p.add_argument("recipe", nargs="?", metavar="RECIPE", help="a recipe YAML file; key.path=value overrides "
                   "(e.g. optim.lr=0.05) go anywhere on the line")
    p.add_argument("--resume", metavar="PATH|auto",
                   help="checkpoint, or run folder (its newest loadable checkpoint) to continue from; auto: the "
                        "run folder runtime.out_dir/runtime.run_name if it has one, else a fresh run there "
                        "(the same command line then survives restarts, e.g. torchrun --max-restarts)")
    p.add_argument("--print", action="store_true", dest="print_only",
                   help="print the resolved recipe and plan, then exit without training")
    add_shared(p, "data_root", "out", "seeds", "device", "precision",
               help={"out": "folder the run folder goes in (runtime.out_dir)", "seeds": "the run's seed "
                     "(train.seed; one)", "device": "runtime.device", "precision": "train.precision"})
    args = parse(p, argv, "train")
    args.overrides = recipe_overrides(args, "data_root", "out", "seeds", "device", "precision")
    if args.recipe is not None and "=" in args.recipe:   # e.g. a path with '=' that is not a dotted key
        p.error(f"{args.recipe!r}: give the recipe file first, or overrides as key.path=value")
    if args.recipe is None and not args.resume:
        p.error("give a recipe file (e.g. recipes/quickstart.yaml) or --resume PATH")
    if args.resume == "auto" and args.recipe is None:
        p.error("--resume auto needs the recipe file (and runtime.run_name) to find the run folder")
    return args


def load_for_run(args: argparse.Namespace):
    """The recipe to run and, when resuming, the checkpoint path."""
    if not args.resume:
        return load_recipe(args.recipe, args.overrides), None
    if args.resume == "auto":
        recipe = load_recipe(args.recipe, args.overrides)
        if recipe.runtime.run_name is None:
            raise RecipeError("--resume auto: set runtime.run_name=NAME, a fixed run folder to continue "
                              "(the default name carries a timestamp, so a restart would not find it)")
        return recipe, newest_valid_checkpoint(Path(recipe.runtime.out_dir) / recipe.runtime.run_name)
    ckpt_path = Path(args.resume)
    if ckpt_path.is_dir():
        ckpt_path = newest_valid_checkpoint(ckpt_path) or resolve_checkpoint(ckpt_path, "last")
    ckpt_path = resolve_checkpoint(ckpt_path, "last")
    if args.recipe:
        return load_recipe(args.recipe, args.overrides), ckpt_path
    # Resuming without a recipe file: the checkpoint's own resolved recipe.
    saved = load_checkpoint(ckpt_path)["recipe"]
    return parse_recipe(apply_overrides(saved, args.overrides)), ckpt_path


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging()
    recipe, ckpt_path = load_for_run(args)
    dist, device = init_distributed(recipe.runtime.device)
    if not dist.is_main:    # one copy of the log: rank 0's (warnings and errors from every rank)
        logging.getLogger().setLevel(logging.WARNING)
    try:
        if recipe.runtime.threads:
            torch.set_num_threads(recipe.runtime.threads)
        seed_everything(recipe.train.seed, recipe.train.deterministic, device, recipe.runtime.cudnn_benchmark)
        data = prepare_data(recipe, dry_run=args.print_only)
        # A resumed run keeps the precision and layout its checkpoint was trained with.
        saved_plan = load_checkpoint(ckpt_path)["plan"] if ckpt_path is not None else None
        plan = plan_for(recipe, data, dist, device, saved_plan=saved_plan, probe=not args.print_only)
        if args.print_only:
            print(recipe_yaml(recipe), end="")
            print("# plan (derived, not part of the recipe)")
            print(plan.to_json())
            return 0
        if ckpt_path is not None:
            run_dir = ckpt_path.parent
        else:
            run_dir = shared_run_dir(run_folder(args.recipe, recipe.runtime.out_dir, recipe.runtime.run_name), dist)
        if dist.is_main:
            write_run_header(run_dir, recipe, plan)
            log_to_file(run_dir / "train.log")
        log.info("data: %s (train %d, val %d, test %d images, %d classes)", data.description, plan.train_samples,
                 plan.val_samples, plan.test_samples, plan.num_classes)
        log.info("%s", plan.summary_line())
        log.info("%s", plan.selection_line())
        log.info("%s", plan.numerics_line())
        log.info("run folder: %s", run_dir)
        trainer = Trainer(recipe, plan, data, dist, device, run_dir, args.recipe)
        if trainer.plan.budget:   # decided by the Trainer after the decode (or kept from the checkpoint)
            log.info("%s", budget_line(trainer.plan.budget))
            if dist.is_main:
                write_run_header(run_dir, recipe, trainer.plan)
        if ckpt_path is not None:
            trainer.resume(ckpt_path)
        summary = trainer.summarize(trainer.fit())
        if dist.is_main:
            log.info("%s (%s weights, selected on %s): %s", summary["split"], summary["checkpoint"],
                     summary["selected_on"],
                     format_metrics({k: summary[k] for k in ("top1", "top5", "balanced_accuracy", "macro_f1", "loss",
                                                             "ece", "samples")}))
            log.info("summary: %s", run_dir / "summary.json")
        return 0
    except RuntimeError as err:
        if not (dist.enabled and peer_lost(err)):
            raise
        # Another process of the job is gone (a lost node, or a worker torchrun stopped): one line, not the
        # collective's traceback; torchrun then restarts this node's workers if --max-restarts allows.
        first = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
        print(f"error: rank {dist.rank} of {dist.world}: lost contact with another process of the job (a node or "
              f"worker is gone): {first[:200]}", file=sys.stderr)
        return 1
    finally:
        cleanup()


def shared_run_dir(path: Path, dist) -> Path:
    """Every rank must write into rank 0's folder (timestamps differ between processes)."""
    if not dist.enabled:
        return path
    import torch.distributed as tdist   # late: only a distributed run reaches here
    box = [str(path)]
    tdist.broadcast_object_list(box, src=0)
    return Path(box[0])


if __name__ == "__main__":
    sys.exit(main())

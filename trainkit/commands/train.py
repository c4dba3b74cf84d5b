"""Train any recipe: ``trainkit train recipes/x.yaml [key.path=value ...]`` (= ``python train.py ...``).

Also ``--resume <run folder or checkpoint>``, ``--resume auto`` (continue the run folder
named by runtime.run_name when it has a checkpoint, else start it) and ``--print`` (resolved recipe and
plan, no training). Works the same under ``torchrun --nproc_per_node N``.
"""

from __future__ import annotations

import argparse
import logging
import sys

import os

from trainkit.cli import one_line_errors, setup_logging
from trainkit.commands.common import add_shared, new_parser, parse, recipe_overrides
from trainkit.config.recipe import recipe_yaml
from trainkit.eval.metrics import format_metrics
from trainkit.runtime.distributed import cleanup, peer_lost
from trainkit.train.session import RunSession

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


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging()
    try:
        session = RunSession.open(args.recipe, args.overrides, resume=args.resume, print_only=args.print_only)
        if args.print_only:
            print(recipe_yaml(session.recipe), end="")
            print("# plan (derived, not part of the recipe)")
            print(session.plan.to_json())
            return 0
        trainer = session.trainer
        summary = trainer.summarize(trainer.fit())
        if session.dist.is_main:
            log.info("%s (%s weights, selected on %s): %s", summary["split"], summary["checkpoint"],
                     summary["selected_on"],
                     format_metrics({k: summary[k] for k in ("top1", "top5", "balanced_accuracy", "macro_f1", "loss",
                                                             "ece", "samples")}))
            log.info("summary: %s", session.run_dir / "summary.json")
        return 0
    except RuntimeError as err:
        # torchrun's variables, not the session's DistInfo: a peer can be lost before the session is open
        rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
        if world == "1" or not peer_lost(err):
            raise
        # Another process of the job is gone (a lost node, or a worker torchrun stopped): one line, not the
        # collective's traceback; torchrun then restarts this node's workers if --max-restarts allows.
        first = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
        print(f"error: rank {rank} of {world}: lost contact with another process of the job (a node or "
              f"worker is gone): {first[:200]}", file=sys.stderr)
        return 1
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())

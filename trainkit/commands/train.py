"""Train any recipe: ``python train.py recipes/x.yaml [key.path=value ...]``.

Also ``--resume <run folder or checkpoint>``, ``--resume auto`` (continue the run folder
named by runtime.run_name when it has a checkpoint, else start it) and ``--print`` (resolved recipe and
plan, no training). Works the same under ``torchrun --nproc_per_node N``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from trainkit.cli import one_line_errors, setup_logging
from trainkit.config.recipe import recipe_yaml
from trainkit.eval.metrics import format_metrics
from trainkit.runtime.distributed import cleanup
from trainkit.train.session import RunSession

log = logging.getLogger("trainkit")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("items", nargs="*", metavar="RECIPE [key=value ...]",
                   help="a recipe YAML file, then dotted overrides such as optim.lr=0.05")
    p.add_argument("--resume", metavar="PATH|auto",
                   help="checkpoint, or run folder (its newest loadable checkpoint) to continue from; auto: the "
                        "run folder runtime.out_dir/runtime.run_name if it has one, else a fresh run there "
                        "(the same command line then survives restarts, e.g. torchrun --max-restarts)")
    p.add_argument("--print", action="store_true", dest="print_only",
                   help="print the resolved recipe and plan, then exit without training")
    args = p.parse_args(argv)
    items = list(args.items)
    args.recipe = items.pop(0) if items and "=" not in items[0] else None
    args.overrides = items
    if args.recipe is None and not args.resume:
        p.error("give a recipe file (e.g. recipes/quickstart.yaml) or --resume PATH")
    if args.resume == "auto" and args.recipe is None:
        p.error("--resume auto needs the recipe file (and runtime.run_name) to find the run folder")
    return args


@one_line_errors
def main() -> int:
    args = parse_args(sys.argv[1:])
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
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())

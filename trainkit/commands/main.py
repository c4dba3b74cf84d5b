"""The ``trainkit`` command (``python -m trainkit``): one subcommand per module of trainkit/commands/.

``trainkit COMMAND ...`` is exactly ``python COMMAND.py ...`` in a checkout: the same module, parser and
dialect (trainkit/commands/common.py). A subcommand's module is imported only when it runs, so
``trainkit --help`` answers without loading torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import trainkit
from trainkit.config.schema import did_you_mean

# name -> (module under trainkit.commands, one line of help, one example)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("train", "train a recipe (key.path=value overrides anywhere)",
              "trainkit train recipes/quickstart.yaml schedule.epochs=1"),
    "evaluate": ("evaluate", "evaluate a run, checkpoint, zoo card, timm model or ensemble",
                 "trainkit evaluate zoo:cifar10_resnet20 --data-root ../shared/data/cifar10-jpeg"),
    "predict": ("predict", "classify image files and folders with any model",
                "trainkit predict zoo:cifar10_resnet20 photos/ --out preds/"),
    "sweep": ("sweep", "hyper-parameter search (Optuna); every trial is a training run",
              "trainkit sweep recipes/quickstart.yaml --space recipes/sweeps/quickstart.yaml --trials 8"),
    "zoo": ("zoo", "the model zoo: list, show, import, export, publish, check, readme",
            "trainkit zoo list lite"),
    "compare": ("compare", "compare finished runs in one table (and keep the result records)",
                "trainkit compare runs/ --out results/table"),
    "ablate": ("ablate", "train a base recipe and cumulative deltas over several seeds",
               'trainkit ablate recipes/quickstart.yaml --step "ls: loss.label_smoothing=0.1" --seeds 0 1'),
    "soup": ("soup", "average checkpoints of one architecture (uniform or greedy soup)",
             "trainkit soup runs/a runs/b --greedy --out runs/soup"),
    "prepare": ("prepare", "convert an ImageFolder into packed or webdataset shards",
                "trainkit prepare ../shared/data/imagenette-dev --out data/imagenette-packed"),
    "tune-loader": ("tune_loader", "measure loader settings on this machine, write the best runtime: block",
                    "trainkit tune-loader recipes/quickstart.yaml --workers 0 2"),
    "show-augment": ("show_augment", "save a grid of augmented training images as the loader makes them",
                     "trainkit show-augment recipes/quickstart.yaml --out runs/augment"),
    "imbalance-table": ("imbalance_table", "the long-tailed (CIFAR-10-LT) result table from records",
                        "trainkit imbalance-table table"),
}


def build_parser() -> argparse.ArgumentParser:
    epilog = ("examples:\n" + "\n".join(f"  {example}" for _, _, example in COMMANDS.values())
              + "\n\n'trainkit COMMAND --help' shows a command's flags and more examples. Recipe keys are "
                "key.path=value\noverrides anywhere on the line; --data-root, --out (a folder), --seeds, --device "
                "and --precision\nare spelled the same in every command (README, 'One dialect').")
    p = argparse.ArgumentParser(prog="trainkit", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Image-classification recipes, a shared trainer, evaluation and a "
                                            "model zoo.", epilog=epilog)
    p.add_argument("--version", action="version", version=f"trainkit {trainkit.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (_, text, _) in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return p


def command_name(word: str) -> str | None:
    """``tune_loader`` and ``tune-loader`` both name the command (the scripts are spelled with '_')."""
    word = word.replace("_", "-")
    return word if word in COMMANDS else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv or argv[0].startswith("-"):
        parser.parse_args(argv or ["--help"])   # --help, --version (exit) or an unknown flag (error, exit 2)
        return 0
    name = command_name(argv[0])
    if name is None:
        hint = did_you_mean(argv[0].replace("_", "-"), COMMANDS) or f"; one of {', '.join(COMMANDS)}"
        parser.error(f"unknown command {argv[0]!r}{hint}")
    module = importlib.import_module(f"trainkit.commands.{COMMANDS[name][0]}")
    # The module's parser names itself after argv[0] ("trainkit train" in usage lines) and records
    # re-runnable commands from sys.argv[1:].
    sys.argv = [f"trainkit {name}", *argv[1:]]
    return module.main() or 0


if __name__ == "__main__":
    sys.exit(main())

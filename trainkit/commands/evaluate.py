"""Evaluate any model the hub resolves (trainkit.models.hub): ``python evaluate.py runs/<run> [--split test]``,
``python evaluate.py zoo:cifar10_resnet20 [--data-root DIR] [--update-card]``, ``timm:<name>`` or a
weights file with ``--arch``.

Every source goes through one evaluation pipeline (trainkit.eval.pipeline) with the source's own
defaults: a run's eval preprocessing, classes, eval batch, workers and precision; a card's
preprocessing with batch 500, 2 workers and fp32. Prints top-1/top-5/loss/ECE and writes
metrics.json, per_class.csv, confusion.csv and confusion.png (default: <run folder>/eval/<split>-<checkpoint>/;
zoo cards runs/zoo-eval/<card>-<split>/; other models runs/model-eval/<name>-<split>/). ``--update-card``
writes the measured top-1/top-5 into a zoo card, with the date, hardware and this command.

Ensembles: ``python evaluate.py --ensemble A B C [--combine mean_logits|mean_probs|weighted|vote]
[--weights ...]`` with members given as any hub spec (weights files with --arch), or
``python evaluate.py zoo:<ensemble card>`` (zoo/ensembles/). Each member is fed its own eval
preprocessing; one table holds every member and the ensemble (runs/ensemble-eval/<name>-<split>/).

``--data-root DIR`` scores the model on any labelled folder: ``DIR/test/<class>/``, ``DIR/val/<class>/``,
flat ``DIR/<class>/`` (the test split) or a full train/ + val/ or test/ tree. Folder names are mapped
to the model's classes by name (their order does not matter); unknown or missing classes are one error
line (a folder with fewer classes than the model is scored over all outputs and with restricted logits).

A flag that does not apply to the model given is refused in one error line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path


from trainkit.commands.common import add_shared, new_parser, parse
from trainkit.cli import one_line_errors, setup_logging
from trainkit.config.registry import COMBINE_RULES
from trainkit.config.schema import RecipeError
from trainkit.eval.ensemble import format_table
from trainkit.eval.metrics import format_metrics
from trainkit.eval.pipeline import SPLITS, EvalOptions, evaluate_ensemble, evaluate_model, write_report
from trainkit.models.hub import LoadedModel, resolve, with_data_root
from trainkit.runtime.distributed import cleanup, init_distributed
from trainkit.runtime.environment import hardware_description
from trainkit.zoo import cards


EXAMPLES = ["trainkit evaluate runs/quickstart-20250101-120000 --split val",
            "trainkit evaluate zoo:cifar10_resnet20 --data-root ../shared/data/cifar10-jpeg   # -> runs/zoo-eval/",
            "trainkit evaluate timm:resnet18.a1_in1k --data-root ../shared/data/imagenette-dev --split val "
            "--out runs/r18",
            "trainkit evaluate --ensemble runs/a runs/b --combine mean_probs   # -> runs/ensemble-eval/"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = new_parser(__doc__, EXAMPLES)
    p.add_argument("path", nargs="?", help="run folder, checkpoint, zoo:<id> (a model or ensemble card), "
                                           "timm:<name> or a weights file (with --arch)")
    p.add_argument("--split", choices=SPLITS, help="default: test (zoo models: the card's split); a split the data "
                   "set does not have is an error naming the ones it has")
    p.add_argument("--checkpoint", choices=("best", "last"), help="run folders: which checkpoint (default: best)")
    p.add_argument("--batch", type=int, help="eval batch (default: the source's)")
    p.add_argument("--workers", type=int, help="loader workers (default: the source's)")
    add_shared(p, "data_root", "precision", "device", "out",
               help={"data_root": "another folder of labelled photos: train/ with val/ or test/ (data.root moved), "
                                  "or only test/<class>/ or val/<class>/, or flat <class>/ folders (the test split); "
                                  "class folders are matched to the model's classes by name",
                     "precision": "default: the source's",
                     "out": "report folder (default: <run folder>/eval/<split>-<checkpoint>/ for runs, "
                            "runs/zoo-eval/<card>-<split>/ for zoo cards, runs/ensemble-eval/<name>-<split>/ for "
                            "ensembles, runs/model-eval/<name>-<split>/ for timm: models and weights files)"})
    p.add_argument("--update-card", action="store_true", help="zoo cards: write the measured metrics into the card")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--ensemble", nargs="+", metavar="MODEL", help="evaluate these models and their ensemble")
    p.add_argument("--combine", choices=COMBINE_RULES.names(), help="--ensemble: the rule (default: mean_logits)")
    p.add_argument("--weights", nargs="+", type=float, help="--combine weighted: one weight per member")
    p.add_argument("--arch", help="architecture of plain weights files (the model or ensemble members)")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                   help="checkpoints: evaluate the EMA weights (--no-ema: the raw ones); default: EMA when the "
                        "run chose its best checkpoint by an EMA metric")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: average over horizontal flips")
    p.add_argument("--tta-sizes", type=int, nargs="+", metavar="PX",
                   help="also average over the eval batch resized to each of these sizes (multi-scale TTA)")
    args = parse(p, argv, "evaluate", overrides=False)
    if not args.path and not args.ensemble:
        p.error("give a run folder, checkpoint or zoo:<id>, or --ensemble MODEL [MODEL ...]")
    return args


def kind_of(args: argparse.Namespace, loaded: LoadedModel | None = None) -> str:
    """ensemble, ensemble_card, card (a zoo model card), run (a run folder or checkpoint) or other (timm, weights)."""
    if args.ensemble:
        return "ensemble"
    if args.path.startswith("zoo:"):
        return "ensemble_card" if cards.ensemble_card_path(args.path[4:]).is_file() else "card"
    return "run" if loaded is not None and "weights" in loaded.info else "other"


# flag -> the kinds of model it applies to
APPLIES = {"update_card": ("card", "ensemble_card"), "checkpoint": ("run",), "ema": ("run",),
           "tta": ("run", "card", "other"), "tta_sizes": ("run", "card", "other"), "combine": ("ensemble",),
           "weights": ("ensemble",), "arch": ("ensemble", "other")}


def refuse_inapplicable(args: argparse.Namespace, kind: str) -> None:
    """One error line for a flag that would be silently ignored for this kind of model."""
    for flag, kinds in APPLIES.items():
        if getattr(args, flag) not in (None, False) and kind not in kinds:
            what = {"ensemble": "--ensemble", "ensemble_card": "an ensemble card", "card": "a zoo model card",
                    "run": "a run folder or checkpoint", "other": "a timm model or weights file"}[kind]
            raise RecipeError(f"--{flag.replace('_', '-')} does not apply to {what} ({args.path or 'ensemble'}); "
                              f"it applies to: {', '.join(kinds)}")


def evaluate_one(args: argparse.Namespace) -> int:
    """One model (run, checkpoint, zoo card, timm, weights file) through the evaluation pipeline."""
    dist, device = init_distributed(args.device)
    try:
        weights = {None: "auto", True: "ema", False: "raw"}[args.ema]
        loaded = resolve(args.path, arch=args.arch, which=args.checkpoint or "best", weights=weights)
        kind = kind_of(args, loaded)
        refuse_inapplicable(args, kind)
        report = evaluate_model(loaded, split=args.split, data_root=args.data_root, dist=dist, device=device,
                                opts=EvalOptions(args.batch, args.workers, args.precision),
                                tta_flip=args.tta, tta_sizes=args.tta_sizes, exact_split=args.split is not None)
        if dist.is_main:
            out = args.out or default_out(loaded, report, args, kind)
            write_report(report, out)
            where = report["checkpoint"] if kind == "run" else loaded.spec
            m = report["metrics"]
            print(f"{loaded.arch} {where} [{report['split']}]: {format_metrics(m)}")
            if "top1_all" in m:   # the data's classes are a subset of the model's: the line above is restricted
                print(f"  all {m['classes_all']} classes: top-1 {m['top1_all']:.2f}%  top-5 {m['top5_all']:.2f}%; "
                      f"logits restricted to the data's {len(report['classes'])} classes: top-1 {m['top1']:.2f}%")
            if kind == "card":
                compare_or_update_card(args, loaded, report, device)
            print(f"report: {out}")
        return 0
    finally:
        cleanup()


def default_out(loaded: LoadedModel, report: dict, args: argparse.Namespace, kind: str) -> Path:
    tag = ("-ema" if report["weights"] == "ema" else "") + ("-tta" if args.tta or args.tta_sizes else "")
    if kind == "run":
        ckpt = Path(report["checkpoint"])
        return ckpt.parent / "eval" / f"{report['split']}-{ckpt.stem}{tag}"
    if kind == "card":
        return Path("runs") / "zoo-eval" / f"{loaded.spec.removeprefix('zoo:')}-{report['split']}{tag}"
    return Path("runs") / "model-eval" / f"{Path(loaded.spec.removeprefix('timm:')).stem}-{report['split']}{tag}"


def compare_or_update_card(args: argparse.Namespace, loaded: LoadedModel, report: dict, device) -> None:
    """Compare the measurement with the card's top-1, or (--update-card) write it into the card."""
    card, m = cards.load_card(loaded.spec.removeprefix("zoo:")), report["metrics"]
    if args.update_card:
        command = "python evaluate.py " + shlex.join(sys.argv[1:])   # re-runnable as written
        card = cards.with_metrics(card, report, hardware=hardware_description(device), command=command,
                                  date=time.strftime("%Y-%m-%d"))
        print(f"card updated: {cards.write_card(card)} (top1 {card.metrics.top1:.2f}%)")
    elif card.metrics.top1 is None:
        print("card: no top-1 yet (measure it with --update-card)")
    else:
        same = f"{m.get('top1_all', m['top1']):.2f}" == f"{card.metrics.top1:.2f}"
        print(f"card top1 {card.metrics.top1:.2f}%: {'matches' if same else 'DIFFERS from this measurement'}")


def evaluate_ensemble_cli(args: argparse.Namespace, kind: str) -> int:
    """Members and their ensemble in one table; zoo ensemble cards take members and rule from the card."""
    _, device = init_distributed(args.device)
    name, card = "ensemble", None
    specs, rule, weights = args.ensemble, args.combine or "mean_logits", args.weights
    if kind == "ensemble_card":
        card = cards.load_ensemble_card(args.path.removeprefix("zoo:"))
        name, specs, rule, weights = card.id, card.members, card.combine, card.weights
    members = [resolve(spec, arch=args.arch) for spec in specs]
    if args.data_root:
        members = [with_data_root(m, args.data_root) for m in members]
    data = next((m.data for m in members if m.data is not None), None)
    if data is not None:
        # every image of the split, whatever subset the first member trained with
        data = dataclasses.replace(data, limit_eval=None)
    split = args.split or "test"
    report = evaluate_ensemble(members, rule, weights, split=split, data_cfg=data, device=device,
                               opts=EvalOptions(args.batch, args.workers, args.precision))
    out = args.out or Path("runs") / "ensemble-eval" / f"{name}-{split}"
    out.mkdir(parents=True, exist_ok=True)
    table = format_table(report)
    (out / "ensemble.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "ensemble.md").write_text(table + "\n")
    print(f"{split} split of {report['data_root']}:")
    print(table)
    if card is not None and args.update_card:
        command = "python evaluate.py " + shlex.join(sys.argv[1:])   # re-runnable as written
        card = cards.ensemble_with_metrics(card, report, hardware=hardware_description(device), command=command,
                                           date=time.strftime("%Y-%m-%d"))
        print(f"card updated: {cards.write_ensemble_card(card)} (top1 {card.metrics.top1:.2f}%)")
    print(f"report: {out}")
    return 0


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(threads=args.threads)
    kind = kind_of(args)
    if kind in ("ensemble", "ensemble_card"):
        refuse_inapplicable(args, kind)
        return evaluate_ensemble_cli(args, kind)
    if kind == "card":
        refuse_inapplicable(args, kind)   # before the weights are fetched
    return evaluate_one(args)


if __name__ == "__main__":
    sys.exit(main())

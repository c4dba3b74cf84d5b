"""Evaluate a run folder or checkpoint: ``python evaluate.py runs/<run> [--split test]``,
or a zoo model: ``python evaluate.py zoo:cifar10_resnet20 [--data-root DIR] [--update-card]``.

Uses the eval preprocessing, classes and precision saved in the checkpoint (or the card);
prints top-1/top-5/loss/ECE and writes metrics.json, per_class.csv,
confusion.csv and confusion.png (default: <run folder>/eval/<split>-<checkpoint>/,
for zoo models runs/zoo-eval/<id>-<split>/). ``--update-card`` writes the measured
top-1/top-5 into the card, with the date, hardware and this command.

Ensembles: ``python evaluate.py --ensemble A B C [--combine mean_logits|mean_probs|weighted|vote]
[--weights ...]`` with members given as run folders, checkpoints, zoo:<id>, timm:<name> or weights
files (with --arch), or ``python evaluate.py zoo:<ensemble card>`` (zoo/ensembles/). Each member is
fed its own eval preprocessing; one table holds every member and the ensemble
(runs/ensemble-eval/<name>-<split>/).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from trainkit.runtime.checkpoint import resolve_checkpoint
from trainkit.cli import one_line_errors, setup_logging
from trainkit.runtime.distributed import cleanup, init_distributed, pick_device
from trainkit.eval.pipeline import SPLITS, evaluate_checkpoint, write_report
from trainkit.eval.ensemble import COMBINE, ensemble_card_path
from trainkit.eval.metrics import format_metrics


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", nargs="?", help="run folder, checkpoint file or zoo:<id> (a model or ensemble card)")
    p.add_argument("--split", choices=SPLITS, help="default: test (zoo models: the card's split)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which checkpoint of a run folder")
    p.add_argument("--data-root", help="override data.root (the data set moved)")
    p.add_argument("--batch", type=int, help="eval batch (default: the run's)")
    p.add_argument("--workers", type=int, help="loader workers (default: the run's)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="default: the run's")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--out", type=Path, help="report folder")
    p.add_argument("--update-card", action="store_true", help="zoo models: write the measured metrics into the card")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--ensemble", nargs="+", metavar="MODEL", help="evaluate these models and their ensemble")
    p.add_argument("--combine", choices=COMBINE.names(), default="mean_logits", help="ensemble rule")
    p.add_argument("--weights", nargs="+", type=float, help="--combine weighted: one weight per member")
    p.add_argument("--arch", help="architecture of plain weights files among the ensemble members")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                   help="evaluate the EMA weights (--no-ema: the raw ones); default: EMA when the run chose "
                        "its best checkpoint by an EMA metric")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: average over horizontal flips")
    p.add_argument("--tta-sizes", type=int, nargs="+", metavar="PX",
                   help="also average over the eval batch resized to each of these sizes (multi-scale TTA)")
    args = p.parse_args(argv)
    if not args.path and not args.ensemble:
        p.error("give a run folder, checkpoint or zoo:<id>, or --ensemble MODEL [MODEL ...]")
    return args


def evaluate_zoo(args: argparse.Namespace, device) -> int:
    """Evaluate a zoo card the way its metrics were measured; compare with (or update) the card."""
    import time

    from trainkit.zoo import cards as zoo
    from trainkit.train.trainer import hardware_description

    card = zoo.load_card(args.path.removeprefix("zoo:"))
    report = zoo.evaluate_card(card, data_root=args.data_root, split=args.split, device=device,
                               batch=args.batch or 500, workers=2 if args.workers is None else args.workers,
                               precision=args.precision or "fp32")
    out = args.out or Path("runs") / "zoo-eval" / f"{card.id}-{report['split']}"
    write_report(report, out)
    m = report["metrics"]
    print(f"{card.architecture} zoo:{card.id} [{report['split']}]: {format_metrics(m)}")
    if "top1_all" in m:   # the data's classes are a subset of the card's: the line above is restricted
        print(f"  all {m['classes_all']} classes: top-1 {m['top1_all']:.2f}%  top-5 {m['top5_all']:.2f}%; "
              f"logits restricted to the data's {len(report['classes'])} classes: top-1 {m['top1']:.2f}%")
    if args.update_card:
        command = " ".join(["python evaluate.py", *sys.argv[1:]])
        card = zoo.with_metrics(card, report, hardware=hardware_description(device), command=command,
                                date=time.strftime("%Y-%m-%d"))
        print(f"card updated: {zoo.write_card(card)} (top1 {card.metrics.top1:.2f}%)")
    elif card.metrics.top1 is None:
        print(f"card: no top-1 yet (measure it with --update-card)")
    else:
        same = f"{m.get('top1_all', m['top1']):.2f}" == f"{card.metrics.top1:.2f}"
        print(f"card top1 {card.metrics.top1:.2f}%: {'matches' if same else 'DIFFERS from this measurement'}")
    print(f"report: {out}")
    return 0


def evaluate_ensemble_cli(args: argparse.Namespace, device) -> int:
    """Members and their ensemble in one table; zoo ensemble cards take members and rule from the card."""
    import dataclasses
    import json

    from trainkit.eval.ensemble import evaluate_ensemble, format_table
    from trainkit.models.hub import load_model, with_data_root

    name, card = "ensemble", None
    specs, rule, weights = args.ensemble, args.combine, args.weights
    if not specs:   # zoo:<ensemble card>
        from trainkit.eval.ensemble import load_ensemble_card

        card = load_ensemble_card(args.path.removeprefix("zoo:"))
        name, specs, rule, weights = card.id, card.members, card.combine, card.weights
    members = [load_model(spec, arch=args.arch) for spec in specs]
    if args.data_root:
        members = [with_data_root(m, args.data_root) for m in members]
    data = next((m.data for m in members if m.data is not None), None)
    if data is not None:
        # every image of the split, whatever subset the first member trained with
        data = dataclasses.replace(data, limit_eval=None)
    report = evaluate_ensemble(members, rule, weights, split=args.split, data_cfg=data, batch=args.batch or 500,
                               workers=2 if args.workers is None else args.workers, device=device,
                               precision=args.precision or "fp32")
    out = args.out or Path("runs") / "ensemble-eval" / f"{name}-{args.split}"
    out.mkdir(parents=True, exist_ok=True)
    table = format_table(report)
    (out / "ensemble.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "ensemble.md").write_text(table + "\n")
    print(f"{args.split} split of {report['data_root']}:")
    print(table)
    if card is not None and args.update_card:
        import time

        from trainkit.eval.ensemble import card_with_metrics, write_ensemble_card
        from trainkit.train.trainer import hardware_description

        command = " ".join(["python evaluate.py", *sys.argv[1:]])
        card = card_with_metrics(card, report, hardware=hardware_description(device), command=command,
                                 date=time.strftime("%Y-%m-%d"))
        print(f"card updated: {write_ensemble_card(card)} (top1 {card.metrics.top1:.2f}%)")
    print(f"report: {out}")
    return 0


@one_line_errors
def main() -> int:
    args = parse_args(sys.argv[1:])
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.ensemble or (args.path.startswith("zoo:") and ensemble_card_path(args.path[4:]).is_file()):
        args.split = args.split or "test"
        return evaluate_ensemble_cli(args, pick_device(args.device, 0))
    if args.path.startswith("zoo:"):
        return evaluate_zoo(args, pick_device(args.device, 0))
    ckpt = resolve_checkpoint(args.path, args.checkpoint)
    dist, device = init_distributed(args.device)
    args.split = args.split or "test"
    try:
        report = evaluate_checkpoint(ckpt, split=args.split, dist=dist, device=device, data_root=args.data_root,
                                     batch=args.batch, workers=args.workers, precision=args.precision,
                                     weights={None: "auto", True: "ema", False: "raw"}[args.ema],
                                     tta_flip=args.tta, tta_sizes=args.tta_sizes)
        if dist.is_main:
            tag = ("-ema" if report["weights"] == "ema" else "") + ("-tta" if args.tta or args.tta_sizes else "")
            # report["split"]: the split actually read (val on a set without a test split)
            out = args.out or ckpt.parent / "eval" / f"{report['split']}-{ckpt.stem}{tag}"
            write_report(report, out)
            print(f"{report['model']} {ckpt} [{report['split']}]: {format_metrics(report['metrics'])}")
            print(f"report: {out}")
        return 0
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())

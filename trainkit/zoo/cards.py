"""Model cards (``zoo/<id>.yaml``) and ensemble cards (``zoo/ensembles/<id>.yaml``): schema, reading, writing.

A card names an architecture, its classes, its data set, where its weights come from
(``weights.path``/``url`` with a sha256; fetched by trainkit.zoo.fetch), how to read them
(``source.key_map``: trainkit.models.importers) and its measured metrics. ``zoo:<id>`` in any model string resolves
through trainkit.models.hub (trainkit.zoo.source). Names (architecture, data set, key mapping, combine rule) are
checked against their registries, so this module imports no torch code.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from trainkit.config import paths
from trainkit.config.recipe import EvalCfg, KeyMapCfg, check_combine_weights
from trainkit.config.registry import COMBINE_RULES, DATASETS, MODELS
from trainkit.config.schema import RecipeError, did_you_mean, from_dict, to_dict
from trainkit.runtime.checkpoint import CheckpointError

ROOT = paths.project_root()   # card paths are relative to the project root (trainkit.config.paths), not the cwd
CARD_HEADER = ("# Model card (schema: trainkit/zoo/cards.py ModelCard). Metrics are written by\n"
               "#   python evaluate.py zoo:{id} --update-card\n"
               "# and zoo/README.md is regenerated from all cards by: python zoo.py readme\n")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def zoo_dir() -> Path:
    """``$TRAINKIT_ZOO`` (a private or test zoo) or the repository's ``zoo/``."""
    return paths.zoo_dir()


# ---------------------------------------------------------------- card schema

@dataclass(frozen=True)
class DatasetRef:
    name: str = ""                        # as tables show it, e.g. "CIFAR-10 (JPEG)"
    source: str = "imagefolder"           # data.name (trainkit.config.registry.DATASETS)
    root: str | None = None               # data.root, relative to the repository root
    split: Literal["train", "val", "test"] = "test"   # the split the metrics are measured on

    def check(self, key: str) -> None:
        if not self.name:
            raise RecipeError(f"{key}.name: required (the data set's name as tables show it)")
        DATASETS.check(self.source, f"{key}.source")


@dataclass(frozen=True)
class Provenance:
    """Who made the weights: our recipe, or a third party with its license."""
    recipe: str | None = None             # recipes/<name>.yaml that trained the weights
    recipe_hash: str | None = None        # trainkit.config.recipe.recipe_hash of that run's resolved recipe
    record: str | None = None             # results/records/...json: the result record of the run (recipes/RESULTS.md)
    commit: str | None = None             # git commit the run trained at
    third_party: str | None = None        # URL of the foreign project
    license: str | None = None
    key_map: KeyMapCfg = field(default_factory=KeyMapCfg)   # how the file's tensor names become ours

    def check(self, key: str) -> None:
        if not self.recipe and not (self.third_party and self.license):
            raise RecipeError(f"{key}: give recipe (and recipe_hash) for our weights, or third_party and license")


@dataclass(frozen=True)
class WeightsRef:
    sha256: str = ""                      # of the file, lowercase hex
    path: str | None = None               # relative to the repository root (may point into ../shared)
    url: str | None = None                # public download address
    package: str | None = None            # or an installed Python package, pinned: name==version
    package_file: str | None = None       # the file inside it (relative to site-packages)

    def check(self, key: str) -> None:
        if not SHA256_RE.match(self.sha256):
            raise RecipeError(f"{key}.sha256: 64 lowercase hex digits required, got {self.sha256!r}")
        if not self.path and not self.url and not self.package:
            raise RecipeError(f"{key}: give path, url or package (with package_file)")
        if bool(self.package) != bool(self.package_file):
            raise RecipeError(f"{key}.package_file: give package and package_file together")

    @property
    def file_name(self) -> str:
        return Path(self.path or self.package_file or self.url.rsplit("/", 1)[-1]).name


@dataclass(frozen=True)
class Metrics:
    top1: float | None = None             # %, on dataset.split
    top5: float | None = None             # %
    top1_restricted: float | None = None  # %, logits restricted to the data set's classes (a subset of the card's)
    samples: int | None = None            # images evaluated
    seeds: int = 1                        # training seeds the numbers summarise (1 for imported weights)
    date: str | None = None               # YYYY-MM-DD of the measurement
    hardware: str | None = None
    command: str | None = None            # the command that measured them


@dataclass(frozen=True)
class ModelCard:
    id: str = ""                          # = the file name without .yaml; zoo:<id>
    description: str = ""
    architecture: str = ""                # model.name
    kwargs: dict = field(default_factory=dict)   # model.kwargs of the recipe (timm.create_model keyword arguments)
    # zoo:<id> whose weights the file overlays: the file then holds only the tensors that differ from them
    # (a linear probe's classifier); null: the file holds every tensor
    base: str | None = None
    num_classes: int = 0
    in_chans: int = 3
    classes: list[str] = field(default_factory=list)   # output order: names, or ids such as ImageNet synsets
    class_names: list[str] = field(default_factory=list)   # human-readable, for display; empty: classes
    params: int = 0                       # parameter count, recomputed by the tests
    dataset: DatasetRef = field(default_factory=DatasetRef)
    source: Provenance = field(default_factory=Provenance)
    weights: WeightsRef = field(default_factory=WeightsRef)
    eval: EvalCfg = field(default_factory=EvalCfg)
    eval_note: str = ""                   # how the eval preprocessing was established
    metrics: Metrics = field(default_factory=Metrics)

    def check(self, key: str) -> None:
        if not ID_RE.match(self.id):
            raise RecipeError(f"{key}id: lowercase letters, digits, '_', '.' and '-' only, got {self.id!r}")
        MODELS.check(self.architecture, f"{key}architecture")
        if self.num_classes < 1 or len(self.classes) != self.num_classes:
            raise RecipeError(f"{key}classes: {len(self.classes)} names for num_classes={self.num_classes}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise RecipeError(f"{key}class_names: {len(self.class_names)} names for num_classes={self.num_classes}")
        if self.in_chans not in (1, 3) or len(self.eval.mean) not in (1, self.in_chans):
            raise RecipeError(f"{key}in_chans/eval.mean: {self.in_chans} channels with {len(self.eval.mean)} means")


def card_path(card_id: str) -> Path:
    return zoo_dir() / f"{card_id}.yaml"


def card_ids() -> list[str]:
    return sorted(p.stem for p in zoo_dir().glob("*.yaml"))


def load_card(card_id: str) -> ModelCard:
    """Read and validate ``zoo/<id>.yaml``; an unknown id is one line with a did-you-mean."""
    path = card_path(card_id)
    if not path.is_file():
        ids = card_ids()
        raise CheckpointError(f"zoo:{card_id}: no such model card ({path} not found){did_you_mean(card_id, ids)}"
                              f" (known: {', '.join(ids) or 'none'})")
    return read_card(path, ModelCard)


def read_card(path: Path, schema: type):
    """Parse a card file against its schema (unknown keys, types); its id must be its file name."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: invalid YAML: {getattr(err, 'problem', err)}") from None
    card = from_dict(schema, data, "")
    if card.id != path.stem:
        raise RecipeError(f"{path}: id {card.id!r} differs from the file name {path.stem!r}")
    return card


def write_card(card: ModelCard, path: Path | None = None) -> Path:
    return _write_yaml(path or card_path(card.id), CARD_HEADER.format(id=card.id), card)


def _write_yaml(path: Path, header: str, card: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(to_dict(card), sort_keys=False, default_flow_style=None, width=110))
    return path


def with_metrics(card: ModelCard, report: dict, *, hardware: str, command: str, date: str) -> ModelCard:
    """The card with ``metrics`` replaced by a fresh measurement (rounded as printed)."""
    m = report["metrics"]
    if "top1_all" in m:   # restricted-logit evaluation: top1/top5 over all the card's classes, and restricted
        metrics = Metrics(top1=round(m["top1_all"], 2), top5=round(m["top5_all"], 2),
                          top1_restricted=round(m["top1"], 2), samples=m["samples"], seeds=card.metrics.seeds,
                          date=date, hardware=hardware, command=command)
    else:
        metrics = Metrics(top1=round(m["top1"], 2), top5=round(m["top5"], 2), samples=m["samples"],
                          seeds=card.metrics.seeds, date=date, hardware=hardware, command=command)
    return dataclasses.replace(card, metrics=metrics)


# ---------------------------------------------------------------- ensemble cards

@dataclass(frozen=True)
class EnsembleMetrics:
    top1: float | None = None             # %, on the first member's data set, test split
    top5: float | None = None
    loss: float | None = None
    ece: float | None = None
    samples: int | None = None
    best_member: str | None = None        # the member with the highest top-1 on the same images
    best_member_top1: float | None = None
    date: str | None = None
    hardware: str | None = None
    command: str | None = None


@dataclass(frozen=True)
class EnsembleCard:
    id: str = ""                          # = the file name without .yaml; zoo:<id>
    description: str = ""
    members: list[str] = field(default_factory=list)   # zoo:<id>, run folders, checkpoints (trainkit.models.hub)
    combine: str = "mean_logits"          # trainkit.config.registry.COMBINE_RULES
    weights: list[float] | None = None    # combine=weighted: one per member
    metrics: EnsembleMetrics = field(default_factory=EnsembleMetrics)

    def check(self, key: str) -> None:
        if not self.members:
            raise RecipeError(f"{key}members: at least one member")
        COMBINE_RULES.check(self.combine, f"{key}combine")
        check_combine_weights(self.combine, self.weights, len(self.members), f"{key}weights")


def ensembles_dir() -> Path:
    """``zoo/ensembles`` (beside the model cards; ``$TRAINKIT_ZOO`` moves both)."""
    return zoo_dir() / "ensembles"


def ensemble_card_path(card_id: str) -> Path:
    return ensembles_dir() / f"{card_id}.yaml"


def load_ensemble_card(card_id: str) -> EnsembleCard:
    path = ensemble_card_path(card_id)
    if not path.is_file():
        raise CheckpointError(f"zoo:{card_id}: no ensemble card at {path}")
    return read_card(path, EnsembleCard)


def write_ensemble_card(card: EnsembleCard) -> Path:
    path = ensemble_card_path(card.id)
    header = (f"# Ensemble card (schema: trainkit/zoo/cards.py EnsembleCard). Metrics are written by\n"
              f"#   python evaluate.py zoo:{card.id} --update-card\n")
    return _write_yaml(path, header, card)


def ensemble_with_metrics(card: EnsembleCard, report: dict, *, hardware: str, command: str,
                          date: str) -> EnsembleCard:
    *members, ens = report["rows"]
    best = max(members, key=lambda r: r["top1"])
    metrics = EnsembleMetrics(top1=round(ens["top1"], 2), top5=round(ens["top5"], 2), loss=round(ens["loss"], 4),
                              ece=round(ens["ece"], 4), samples=ens["samples"], best_member=best["name"],
                              best_member_top1=round(best["top1"], 2), date=date, hardware=hardware, command=command)
    return dataclasses.replace(card, metrics=metrics)

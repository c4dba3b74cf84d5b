"""Cards for weights our own recipes trained (``python zoo.py publish RUN_DIR --id ID``).

The run's chosen checkpoint (best.pt; its EMA weights when the run chose by an EMA metric, as its
summary did) is written as ``zoo/weights/<id>.safetensors``, committed in the repository, so at most
:data:`MAX_WEIGHTS_MB`; a model whose recipe started from ``model.pretrained: zoo:<id>`` stores only
the tensors that differ from those weights (``base`` on the card: a linear probe keeps its classifier
only). The card names the recipe, its hash, the commit, the result record the run became, the run's
eval preprocessing and classes. Its metrics are measured afterwards through the evaluation pipeline
(zoo.py passes ``trainkit.eval.pipeline.evaluate_card``, the code ``evaluate.py zoo:<id>`` runs), so
``python evaluate.py zoo:<id>`` reproduces them exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import save

from trainkit.config.recipe import parse_recipe
from trainkit.config.schema import RecipeError
from trainkit.models.build import count_params, create_model
from trainkit.models.hub import LoadedModel, load_pretrained, resolve
from trainkit.report.records import RECORDS_DIR, read_record, read_records, record_from_run
from trainkit.runtime.checkpoint import CheckpointError
from trainkit.zoo.cards import (ID_RE, ROOT, DatasetRef, ModelCard, Provenance, WeightsRef, card_path, load_card,
                                 zoo_dir)

MAX_WEIGHTS_MB = 5.0      # weights committed to the repository; larger ones belong behind a url
# names the zoo's tables group by (DatasetRef.name), per result-record data set id
DATASET_NAMES = {"cifar10-jpeg": "CIFAR-10 (JPEG)", "fashion_mnist": "Fashion-MNIST",
                 "imagenette-dev": "imagenette-dev (10 ImageNet classes; ImageNet TRAINING photos)"}


@dataclass(frozen=True)
class Published:
    card: ModelCard
    weights: Path
    stored_tensors: int
    total_tensors: int


def weights_dir() -> Path:
    return zoo_dir() / "weights"


def find_record(run_dir: Path, records_root: Path = RECORDS_DIR) -> Path:
    """The committed record of ``run_dir`` (same run name and recipe hash); one line when there is none."""
    mine = record_from_run(run_dir)
    found = [r for r in read_records(records_root) if r.get("run") == mine["run"]
             and r.get("recipe_hash") == mine["recipe_hash"] and not r.get("ablation")]
    if len(found) != 1:
        raise RecipeError(f"{run_dir}: {'no' if not found else len(found)} result record(s) of run {mine['run']} "
                          f"under {records_root}; write it first (python compare.py record {run_dir}) or give "
                          f"--record")
    return records_root / found[0]["record_file"]


def repo_relative(path: Path) -> str:
    """A path as cards store it: relative to the repository root when inside it (or beside it, ../shared)."""
    path = Path(os.path.abspath(path))
    rel = os.path.relpath(path, ROOT)
    return rel if not rel.startswith("../..") else str(path)


def publish(run_dir: Path, card_id: str, record_file: Path, *, description: str | None = None,
            max_mb: float = MAX_WEIGHTS_MB) -> Published:
    """Write the weights file and a card without metrics (measure them next); nothing is written when the id,
    the record or the size is refused."""
    if not ID_RE.match(card_id):
        raise RecipeError(f"--id {card_id!r}: lowercase letters, digits, '_', '.' and '-' only")
    if card_path(card_id).is_file() and not load_card(card_id).source.recipe:
        raise RecipeError(f"--id {card_id}: zoo/{card_id}.yaml is a card of third-party weights; choose another id")
    record = read_record(record_file)   # a missing or foreign --record: one line, before anything is written
    loaded = resolve(str(run_dir), weights="auto")
    recipe = parse_recipe(yaml.safe_load((Path(run_dir) / "recipe.yaml").read_text()))
    if record.get("recipe_hash") != loaded.info.get("recipe_hash"):
        raise RecipeError(f"--record {record_file}: recipe hash {record.get('recipe_hash')} is not the run's "
                          f"{loaded.info.get('recipe_hash')}")
    base = recipe.model.pretrained if str(recipe.model.pretrained or "").startswith("zoo:") else None
    tensors = {k: v.detach().contiguous() for k, v in loaded.model.float().state_dict().items()}
    total = len(tensors)
    if base:
        tensors = changed_from_base(tensors, recipe.model, loaded)
    blob = save(tensors, metadata={"trainkit": json.dumps({"card": card_id, "recipe": record.get("recipe"),
                                                           "recipe_hash": record.get("recipe_hash"),
                                                           "base": base})})
    if len(blob) > max_mb * 1e6:
        raise CheckpointError(f"{run_dir}: its weights are {len(blob) / 1e6:.1f} MB, over the {max_mb:g} MB limit for "
                              f"weights committed to the repository; publish them behind a url instead")
    path = weights_dir() / f"{card_id}.safetensors"
    card = ModelCard(
        id=card_id, description=description or default_description(record, loaded),
        architecture=loaded.arch, kwargs=dict(recipe.model.kwargs), base=base,
        num_classes=loaded.num_classes, in_chans=loaded.in_chans, classes=list(loaded.classes or []),
        params=count_params(loaded.model),
        dataset=DatasetRef(name=DATASET_NAMES.get(record.get("dataset_id"), str(record.get("dataset_id"))),
                           source=recipe.data.name, root=repo_relative(Path(recipe.data.root))
                           if recipe.data.root else None, split=record.get("split") or "test"),
        source=Provenance(recipe=record.get("recipe"), recipe_hash=record.get("recipe_hash"),
                          record=repo_relative(Path(record_file)), commit=record.get("git_commit")),
        weights=WeightsRef(sha256=hashlib.sha256(blob).hexdigest(), path=repo_relative(path)),
        eval=loaded.eval, eval_note="the training run's own eval preprocessing (its recipe's data.eval)")
    card.check("")   # before the write: a card the schema refuses leaves no weights file behind
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return Published(card, path, len(tensors), total)


def changed_from_base(tensors: dict[str, torch.Tensor], model_cfg, loaded: LoadedModel) -> dict[str, torch.Tensor]:
    """Only the tensors that differ (bit for bit) from the base weights fitted into a fresh model, as training
    started from them: what a card with ``base`` stores."""
    fresh = create_model(model_cfg, loaded.num_classes, loaded.in_chans)
    load_pretrained(fresh, model_cfg.pretrained, model_cfg.name)
    start = fresh.float().state_dict()
    return {k: v for k, v in tensors.items() if k not in start or start[k].shape != v.shape
            or not torch.equal(start[k], v)}


def default_description(record: dict, loaded: LoadedModel) -> str:
    variant = f" (variant {record['variant_name']}: {record['variant_text']})" if record.get("variant_name") else \
        f" ({record['variant_text']})" if record.get("variant_text") else ""
    return (f"{loaded.arch} trained by our recipe {record.get('recipe')}{variant}, seed {record.get('seed')}, "
            f"{record.get('epochs')} epochs, at commit {record.get('git_commit')} (run {record.get('run')}).")


__all__ = ["MAX_WEIGHTS_MB", "Published", "find_record", "publish"]

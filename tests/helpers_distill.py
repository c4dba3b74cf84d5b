"""Small trainkit checkpoints built in-process (no training run) for the distillation, ensemble and soup tests."""

from __future__ import annotations

from pathlib import Path

import timm
import torch

from trainkit.models.hub import build_model
from trainkit.runtime.checkpoint import FORMAT, save_atomic
from trainkit.runtime.distributed import DistInfo
from trainkit.config.recipe import apply_overrides, parse_recipe, recipe_dict
from trainkit.data.sources import prepare_data
from trainkit.train.trainer import plan_for

def tiny_recipe(folder: Path, *extra: str):
    """smallcnn (width 4) on a tiny ImageFolder, 16 px, fp32, one thread; ``extra`` are dotted overrides."""
    tree = {"model": {"name": "smallcnn", "kwargs": {"width": 4}},
            "data": {"name": "imagefolder", "root": str(folder), "holdout_fraction": 0.25,
                     "eval": {"size": 16, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}},
            "optim": {"lr": 0.05},
            "schedule": {"name": "constant", "epochs": 1},
            "train": {"global_batch": 8, "precision": "fp32"},
            "runtime": {"workers": 0, "threads": 1, "progress": False}}
    return parse_recipe(apply_overrides(tree, list(extra)))


def write_checkpoint(path: Path, folder: Path, seed: int, *extra: str, model: torch.nn.Module | None = None) -> Path:
    """A trainkit checkpoint of a randomly initialised (seeded) smallcnn on ``folder``."""
    recipe = tiny_recipe(folder, f"train.seed={seed}", *extra)
    data = prepare_data(recipe)
    plan = plan_for(recipe, data, DistInfo(), torch.device("cpu"))
    if model is None:
        torch.manual_seed(seed)
        model = build_model(recipe.model, plan.num_classes, plan.in_chans)
    ckpt = {"format": FORMAT, "epoch": 1, "model": model.state_dict(), "train_step": None, "ema": None,
            "recipe": recipe_dict(recipe), "plan": plan.to_dict(), "classes": list(data.classes),
            "arch": recipe.model.name, "num_classes": plan.num_classes, "in_chans": plan.in_chans,
            "eval": recipe_dict(recipe)["data"]["eval"], "metrics": {},
            "versions": {"torch": str(torch.__version__), "timm": str(timm.__version__)}}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(ckpt, path)
    return path


def run_entry(script: str, args: list[str], monkeypatch) -> int:
    """Run an entry point's main() in this process (no interpreter start-up): its exit status."""
    import importlib.util
    import sys

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(f"entry_{Path(script).stem}", root / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [script, *map(str, args)])
    monkeypatch.chdir(root)
    return module.main()

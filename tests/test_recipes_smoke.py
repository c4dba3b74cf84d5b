"""Every shipped recipe builds and trains a few steps (on a small real ImageFolder)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainkit.config.recipe import apply_overrides, load_tree, parse_recipe, schedule_points

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.relative_to(ROOT) for p in (ROOT / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_trains_a_few_steps(recipe, image_folder, tmp_path):
    text = (ROOT / recipe).read_text()
    if "zoo:" in text:   # fine-tune recipes start from ../shared's weights
        from conftest import WEIGHTS, require
        require(WEIGHTS)
    extra = []
    if "distill:" in text:   # a 10-class CIFAR teacher labels three of its own classes, matched by name
        from conftest import make_image_folder
        image_folder = make_image_folder(tmp_path / "cifar3", classes=("bird", "cat", "dog"))
        extra = ["distill.class_map=by_name"]
    if "cifar10_lt" in text:   # 12 images per class: a milder long tail, one val image per class
        extra = ["data.imbalance.ratio=1.5", "data.imbalance.val_per_class=1"]
    # A recipe with epoch points (milestones, re-weighting from, unfreeze after, ...) runs 2 epochs with each point
    # at epoch 1: a point must lie inside the run (trainkit.config.recipe.check_schedule_points).
    points = schedule_points(parse_recipe(apply_overrides(load_tree(ROOT / recipe), ["data.root=x"])))
    epochs = ["schedule.epochs=2", *(f"{key}={'[1]' if key == 'schedule.milestones' else 1}" for key in points)] \
        if points else ["schedule.epochs=1"]
    # Same recipe, only the data and sizes shrunk: 3 classes of 16 px images (ImageNet models: 32 px,
    # the least that keeps their last stage above 1x1), 8 per step.
    size = 32 if "imagenet_folder" in text or "photos_lite0" in text else 16
    data_root = image_folder
    if "format: webdataset" in text:   # a shard recipe reads prepare.py's shards of the same folder
        data_root = tmp_path / "shards"
        subprocess.run([sys.executable, "prepare.py", str(image_folder), str(data_root), "--format", "webdataset",
                        "--workers", "0"], cwd=ROOT, check=True, capture_output=True, timeout=120)
    overrides = ["data.name=imagefolder", f"data.root={data_root}", f"data.train_size={size}",
                 f"data.eval.size={size}",
                 "data.eval.crop_pct=1.0", "train.global_batch=8", *epochs, "schedule.warmup_epochs=0",
                 "runtime.workers=0", f"runtime.out_dir={tmp_path}", "runtime.run_name=smoke", *extra]
    proc = subprocess.run([sys.executable, "train.py", str(recipe), *overrides], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "smoke" / "summary.json").read_text())
    plan = json.loads((tmp_path / "smoke" / "plan.json").read_text())
    assert summary["samples"] == 18 and plan["steps_per_epoch"] >= 3 and plan["num_classes"] == 3

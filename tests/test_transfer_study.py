"""The aid-dev transfer study's machinery: a stratified hold-out carved from train/ chooses everything while
val/ is only reported (data.val_from_train), photos per class for learning curves (data.train_per_class),
every study cell a valid recipe, the README table and PNG generated from the cells' records, and the
imagenette rows labelled as ImageNet training photos."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from trainkit.config import formats
import torch
from conftest import SHARED, require

from trainkit.config.recipe import DataCfg, load_recipe, recipe_hash
from trainkit.config.schema import RecipeError
from trainkit.data.sources import open_source, prepare_data, report_split, resolve_splits, val_is_test
from trainkit.runtime.distributed import DistInfo
from trainkit.train.trainer import plan_for
from trainkit.zoo.cards import load_card

ROOT = Path(__file__).resolve().parents[1]
AID = SHARED / "data" / "aid-dev"


def study_module():
    spec = importlib.util.spec_from_file_location("transfer_study", ROOT / "benchmarks" / "transfer_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def aid_subset(tmp_path_factory) -> Path:
    """Real aid-dev photos, symlinked: 4 classes, 10 train and 5 val photos each."""
    source = require(AID)
    root = tmp_path_factory.mktemp("aid")
    for cls in sorted(os.listdir(source / "train"))[:4]:
        for split, count in (("train", 10), ("val", 5)):
            (root / split / cls).mkdir(parents=True)
            for name in sorted(os.listdir(source / split / cls))[:count]:
                (root / split / cls / name).symlink_to(source / split / cls / name)
    return root


def splits_of(root: Path, **keys):
    cfg = DataCfg(root=str(root), **keys)
    cfg.check("data")
    return resolve_splits(cfg, open_source(cfg))


def test_val_from_train_holds_out_each_class_and_only_reports_val(aid_subset):
    plain = splits_of(aid_subset)
    assert plain["val"].name == "val" and len(plain["train"]) == 40      # default: val/ chooses and reports
    s = splits_of(aid_subset, val_from_train=True, holdout_fraction=0.2)
    assert (s["val"].name, s["test"].name) == ("holdout", "val")
    assert np.bincount(s["val"].targets).tolist() == [2, 2, 2, 2]        # stratified: 20% of each class
    assert np.bincount(s["train"].targets).tolist() == [8, 8, 8, 8]
    assert not set(s["val"].paths) & set(s["train"].paths)
    assert set(s["val"].paths) | set(s["train"].paths) == set(plain["train"].paths)
    assert s["test"].paths == plain["val"].paths                           # val/ untouched, every photo
    assert report_split(s) == "val" and not val_is_test(s)
    again = splits_of(aid_subset, val_from_train=True, holdout_fraction=0.2)
    other = splits_of(aid_subset, val_from_train=True, holdout_fraction=0.2, holdout_seed=1)
    assert again["val"].paths == s["val"].paths and other["val"].paths != s["val"].paths
    with pytest.raises(RecipeError, match=r"^data.val_from_train: needs data.holdout_fraction > 0"):
        DataCfg(root=str(aid_subset), val_from_train=True, holdout_fraction=0.0).check("data")


def test_train_per_class_draws_from_what_the_hold_out_left(aid_subset):
    full = splits_of(aid_subset, val_from_train=True, holdout_fraction=0.2)
    s = splits_of(aid_subset, val_from_train=True, holdout_fraction=0.2, train_per_class=3)
    assert np.bincount(s["train"].targets).tolist() == [3, 3, 3, 3]
    assert set(s["train"].paths) <= set(full["train"].paths)
    assert s["val"].paths == full["val"].paths                              # the same hold-out at every size


def test_a_run_selects_on_the_hold_out_and_reports_val(aid_subset):
    recipe = load_recipe(ROOT / "recipes" / "linear_probe_photos_aid_lite0.yaml", [f"data.root={aid_subset}"])
    plan = plan_for(recipe, prepare_data(recipe), DistInfo(), torch.device("cpu"))
    assert (plan.selected_on, plan.report_split) == ("holdout", "val")
    assert (plan.train_samples, plan.val_samples, plan.test_samples) == (32, 8, 20)
    assert "chosen on holdout" in plan.selection_line()


def test_new_data_keys_leave_old_hashes_alone():
    recipe = load_recipe(ROOT / "recipes" / "linear_probe_photos_lite0.yaml", ["data.root=/data"])
    assert recipe_hash(recipe) == json.loads((ROOT / "tests" / "recipe_hashes.json").read_text())[
        "linear_probe_photos_lite0"]
    changed = load_recipe(ROOT / "recipes" / "linear_probe_photos_lite0.yaml", ["data.root=/data",
                                                                                "data.train_per_class=5"])
    assert recipe_hash(changed) != recipe_hash(recipe)


def test_every_study_cell_is_a_valid_recipe():
    study = study_module()
    commands = study.study_commands([0, 1, 2])
    assert len(commands) == len(set(commands)) == 72
    for method in study.METHODS:
        for backbone in study.BACKBONES:
            for resolution in ("card", "native"):
                _, recipe_file, _ = study.METHODS[method]
                overrides = study.cell_overrides(method, backbone, resolution, 5, 1)
                recipe = load_recipe(ROOT / "recipes" / recipe_file, overrides)
                assert recipe.data.val_from_train and recipe.data.train_per_class == 5
                assert recipe.model.name == f"tf_efficientnet_{backbone}"
                assert recipe.data.eval.size == (150 if resolution == "native" else
                                                 {"lite0": 224, "lite1": 240, "lite2": 260}[backbone])


def fake_cell(folder: Path, method: str, seed: int, top1: float, wall_s: float) -> None:
    record = folder.parent / f"record-{method}-{seed}.json"
    formats.write(record, formats.RECORD, {"recipe": f"recipes/{method}.yaml", "recipe_hash": "h", "top1": top1,
                                           "val_top1": top1 + 1, "split": "val", "selected_on": "holdout",
                                           "img_per_s": 100.0, "hardware": "cpu, 2 threads", "precision": "fp32",
                                           "epochs": 30})
    formats.write(folder / f"{method}-lite0-native-pcall-s{seed}.json", formats.TRANSFER_CELL,
                  {"cell": "x", "method": method, "backbone": "lite0", "resolution": "native", "per_class": None,
                   "seed": seed, "wall_s": wall_s, "record": str(record), "command": f"python train.py {method}"})


def test_table_and_png_are_generated_from_the_cells(tmp_path):
    study = study_module()
    cells = tmp_path / "cells"
    cells.mkdir()
    fake_cell(cells, "probe", 0, 80.0, 120.0)
    fake_cell(cells, "probe", 1, 82.0, 180.0)
    fake_cell(cells, "full", 0, 85.0, 600.0)
    rows = study.group_cells(study.read_cells(cells))
    assert [(r["method"], r["n"]) for r in rows] == [("probe", 2), ("full", 1)]
    assert rows[0]["top1"] == pytest.approx(81.0) and rows[0]["top1_std"] == pytest.approx(2 ** 0.5)
    assert rows[0]["wall_min"] == pytest.approx(2.5)
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{study.START}\nstale rows\n{study.END}\nafter\n")
    png = tmp_path / "chart.png"
    study.write_table(readme, cells, png)
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "stale rows" not in text
    assert "| 1 | linear probe (cached features) | lite0 | 150 (native) | 40 | 2 | 81.00 ± 1.41 | 82.00 |" in text
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_readme_transfer_table_is_generated_from_the_committed_cells():
    study = study_module()
    assert study.table_markdown(study.group_cells(study.read_cells())) in (ROOT / "README.md").read_text(), \
        "run: python benchmarks/transfer_study.py table"


def test_imagenette_rows_say_they_are_imagenet_training_photos():
    results = (ROOT / "recipes" / "RESULTS.md").read_text()
    section = results.split("## imagenette-dev", 1)[1].split("\n## ", 1)[0]
    assert "Not a transfer measurement" in section.split("| recipe |", 1)[0]   # above the table
    card = load_card("imagenette_dev_lite0_probe")
    assert "ImageNet-1k TRAINING images" in card.description and "TRAINING photos" in card.dataset.name
    readme = (ROOT / "README.md").read_text()
    photos = readme.split("## Fine-tune on your own photos", 1)[1].split("\n## ", 1)[0]
    assert "imagenette-dev is not a transfer benchmark" in photos
    assert "linear_probe_photos_lite0.yaml data.root=../shared/data/imagenette-dev" not in photos

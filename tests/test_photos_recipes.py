"""The photo recipes: data.root is the only thing a user gives, their eval preprocessing is the
ImageNet card's (measured), and README's table is generated from the committed results."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import ROOT

from trainkit.config.recipe import load_recipe
from trainkit.config.schema import RecipeError
from trainkit.zoo import cards as zoo

RECIPES = ["finetune_photos_lite0.yaml", "linear_probe_photos_lite0.yaml"]


@pytest.mark.parametrize("name", RECIPES)
def test_data_root_is_the_only_key_to_give(name):
    with pytest.raises(RecipeError, match=r"^data.root: required"):
        load_recipe(ROOT / "recipes" / name)
    recipe = load_recipe(ROOT / "recipes" / name, ["data.root=my/photos"])
    card = zoo.load_card(recipe.model.pretrained.removeprefix("zoo:"))
    assert recipe.model.name == card.architecture
    assert recipe.data.eval == card.eval, "the recipe must preprocess as the card's measured eval says"
    assert recipe.finetune.reset_head


def test_finetune_recipe_has_the_fine_tuning_keys():
    r = load_recipe(ROOT / "recipes" / "finetune_photos_lite0.yaml", ["data.root=x"])
    assert r.finetune.layer_decay is not None and r.finetune.head_lr_mult > 1
    assert r.augment.crop == "random_resized" and r.loss.label_smoothing > 0
    assert not r.finetune.linear_probe and r.finetune.freeze == "none"
    probe = load_recipe(ROOT / "recipes" / "linear_probe_photos_lite0.yaml", ["data.root=x"])
    assert probe.finetune.linear_probe and probe.finetune.cache_features


def test_readme_photos_table_is_generated():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("photos_table", ROOT / "benchmarks" / "photos_table.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert module.table_markdown() in (ROOT / "README.md").read_text(), "run: python benchmarks/photos_table.py table"

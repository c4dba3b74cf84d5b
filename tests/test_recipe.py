"""Recipe loading: inheritance, overrides, validation and the hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from trainkit.config.schema import RecipeError
from trainkit.config.recipe import (apply_overrides, load_recipe, load_tree, parse_recipe, recipe_dict, recipe_hash,
                                    recipe_yaml)

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "recipes").glob("*.yaml"))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_shipped_recipe_loads(path):
    recipe = load_recipe(path, ["data.root=/nonexistent"])
    assert recipe.schedule.epochs >= 1
    # The resolved dump loads back to the same recipe.
    import yaml
    assert parse_recipe(yaml.safe_load(recipe_yaml(recipe))) == recipe


def test_base_merge_is_deep_and_lists_replace(tmp_path):
    write(tmp_path / "_base" / "a.yaml", "optim: {lr: 0.5, momentum: 0.8}\naugment: {scale: [0.3, 1.0]}\n")
    write(tmp_path / "_base" / "b.yaml", "base: a.yaml\noptim: {weight_decay: 0.01}\n")
    child = write(tmp_path / "r.yaml", "base: [_base/b.yaml]\noptim: {lr: 0.2}\naugment: {scale: [0.5, 0.9]}\n")
    tree = load_tree(child)
    assert tree["optim"] == {"lr": 0.2, "momentum": 0.8, "weight_decay": 0.01}
    assert tree["augment"]["scale"] == [0.5, 0.9]


def test_base_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(RecipeError, match="base cycle: a.yaml -> b.yaml -> a.yaml"):
        load_tree(tmp_path / "a.yaml")


def test_missing_base_names_the_file(tmp_path):
    r = write(tmp_path / "r.yaml", "base: nope.yaml\n")
    with pytest.raises(RecipeError, match=r"base file not found: .*nope.yaml"):
        load_recipe(r)


def test_overrides_parse_yaml_scalars():
    tree = apply_overrides({"optim": {"lr": 0.1}}, ["optim.lr=0.05", "train.precision=bf16", "augment.scale=[0.2, 1]",
                                                    "model.pretrained=null", "runtime.channels_last=true"])
    assert tree["optim"]["lr"] == 0.05 and tree["train"]["precision"] == "bf16"
    assert tree["augment"]["scale"] == [0.2, 1] and tree["model"]["pretrained"] is None
    assert tree["runtime"]["channels_last"] is True


@pytest.mark.parametrize("override, message", [
    ("loss.lable_smoothing=0.1", "unknown key loss.lable_smoothing; did you mean loss.label_smoothing?"),
    ("optim.lr=fast", "optim.lr: expected a number, got 'fast'"),
    ("train.precision=fp8", "train.precision: invalid value 'fp8'"),
    ("schedule.epochs=2.5", "schedule.epochs: expected an integer"),
    ("optim.name=adamx", "did you mean 'adamax'"),
    ("schedule.warmup_epochs=50", "schedule.warmup_epochs: must be in [0, epochs=4)"),
    ("data.holdout_fraction=1.5", "data.holdout_fraction"),
    ("modle.name=x", "unknown key modle; did you mean model?"),
    ("optim.lr", "expected key.path=value"),
    ("model.kwargs={null: 1}", "model.kwargs: keys must be argument names, got None"),   # a fuzzer case
    ("optim.kwargs={1: 2}", "optim.kwargs: keys must be argument names, got 1"),
])
def test_bad_recipes_name_the_key(override, message):
    with pytest.raises(RecipeError) as err:
        load_recipe(ROOT / "recipes" / "quickstart.yaml", [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_int_accepted_for_float_but_bool_is_not():
    assert load_recipe(ROOT / "recipes" / "quickstart.yaml", ["optim.lr=1"]).optim.lr == 1.0
    with pytest.raises(RecipeError):
        load_recipe(ROOT / "recipes" / "quickstart.yaml", ["optim.lr=true"])


def test_hash_ignores_runtime_but_not_training_keys():
    base = load_recipe(ROOT / "recipes" / "quickstart.yaml")
    assert recipe_hash(base) == recipe_hash(load_recipe(ROOT / "recipes" / "quickstart.yaml", ["runtime.workers=0"]))
    assert recipe_hash(base) != recipe_hash(load_recipe(ROOT / "recipes" / "quickstart.yaml", ["optim.lr=0.3"]))


@pytest.mark.parametrize("override", ["runtime.drop_last=false", "runtime.per_device_batch=64",
                                      "runtime.sync_batchnorm=true"])
def test_hash_covers_runtime_keys_that_change_what_is_trained(override):
    """Steps per epoch, the BatchNorm batch and synced statistics change the trained model, so
    --resume must be able to refuse a mismatch: the hash sees them."""
    base = load_recipe(ROOT / "recipes" / "quickstart.yaml")
    assert recipe_hash(base) != recipe_hash(load_recipe(ROOT / "recipes" / "quickstart.yaml", [override]))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_hash_of_a_recipe_leaving_those_keys_alone_is_unchanged(path):
    """The runtime keys enter the hash only when set away from their defaults: the hash of every
    shipped recipe is the hash of its trained sections alone, as before they were covered."""
    recipe = load_recipe(path, ["data.root=/nonexistent"])
    tree = {k: v for k, v in recipe_dict(recipe).items() if k != "runtime"}
    if tree["schedule"]["budget_minutes"] is None:   # a later key: unset, it stays out of the hash
        del tree["schedule"]["budget_minutes"]
    for key, unset in (("val_from_train", False), ("train_per_class", None)):   # later data keys, likewise
        if tree["data"][key] == unset:
            del tree["data"][key]
    old = hashlib.sha256(json.dumps(tree, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    assert recipe_hash(recipe) == old


def test_loaded_recipe_is_frozen():
    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml")
    with pytest.raises(Exception):
        recipe.optim.lr = 1.0  # type: ignore[misc]

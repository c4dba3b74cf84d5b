"""Frozen-backbone training on cached features: the same head weights as training through the
frozen backbone, one backbone pass per image, refusal with random inputs; runtime.workers: auto."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from conftest import ROOT

from trainkit.config.recipe import load_recipe
from trainkit.config.schema import RecipeError
from trainkit.data.loaders import LoaderSettings, resolve_workers
from trainkit.runtime.distributed import DistInfo
from trainkit.data.sources import prepare_data
from trainkit.train.trainer import Trainer, plan_for, seed_everything


def linear_probe(folder, tmp_path, cache: bool, *extra: str):
    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml", [
        "data.name=imagefolder", f"data.root={folder}", "data.eval.size=16", "model.name=resnet20_cifar",
        "model.drop_rate=null", "augment.hflip=0", "finetune.linear_probe=true", f"finetune.cache_features={cache}",
        "train.global_batch=8", "train.precision=fp32", "schedule.name=cosine", "schedule.epochs=3",
        "optim.lr=0.5", "optim.lr_ref_batch=8", f"runtime.out_dir={tmp_path}", f"runtime.run_name=c{cache}",
        "runtime.progress=false", *extra])
    device = torch.device("cpu")
    seed_everything(recipe.train.seed, False, device, False)
    data = prepare_data(recipe)
    plan = plan_for(recipe, data, DistInfo(), device)
    trainer = Trainer(recipe, plan, data, DistInfo(), device, tmp_path / f"c{cache}", None)
    return trainer, trainer.fit()


def test_cached_features_train_the_same_head(image_folder, tmp_path):
    plain, plain_row = linear_probe(image_folder, tmp_path, False)
    cached, cached_row = linear_probe(image_folder, tmp_path, True)
    head = plain.model.get_classifier()
    head_c = cached.model.get_classifier()
    assert not torch.equal(head.weight, torch.zeros_like(head.weight))
    torch.testing.assert_close(head_c.weight, head.weight, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(head_c.bias, head.bias, rtol=1e-4, atol=1e-5)
    # everything else untouched in both: the backbone and its BatchNorm statistics
    for (name, a), b in zip(plain.model.state_dict().items(), cached.model.state_dict().values()):
        if not name.startswith("linear."):
            assert torch.equal(a, b), name
    assert cached_row["val_top1"] == pytest.approx(plain_row["val_top1"])
    assert cached_row["train_loss"] == pytest.approx(plain_row["train_loss"], rel=1e-4)


def test_the_backbone_runs_once_per_image(image_folder, tmp_path, monkeypatch):
    calls = []
    from trainkit.models import cifar

    original = cifar.CifarResNet.forward_features
    monkeypatch.setattr(cifar.CifarResNet, "forward_features",
                        lambda self, x: calls.append(len(x)) or original(self, x))
    trainer, _ = linear_probe(image_folder, tmp_path, True)
    # the image folder has 36 train and 18 test (= val) images; 3 epochs read neither again
    assert sum(calls) == len(trainer.data.splits["train"]) + len(trainer.data.splits["val"])


@pytest.mark.parametrize("override, reason", [
    ("augment.hflip=0.5", "augment.hflip=0.5 flips at random"),
    ("augment.crop=random_resized", "augment.crop=random_resized crops at random"),
    ("mixup.mixup_alpha=0.2", "mixup/cutmix mixes random pairs"),
    ("model.drop_path_rate=0.1", "model.drop_path_rate=0.1 drops backbone blocks at random"),
])
def test_cache_is_refused_with_random_inputs(override, reason):
    with pytest.raises(RecipeError, match=rf"^finetune.cache_features: refused because {reason}"):
        load_recipe(ROOT / "recipes" / "quickstart.yaml", ["finetune.linear_probe=true", "augment.hflip=0",
                                                          "finetune.cache_features=true", override])


def test_cache_needs_a_backbone_frozen_for_good():
    with pytest.raises(RecipeError, match=r"finetune.cache_features: needs a backbone frozen for the whole run"):
        load_recipe(ROOT / "recipes" / "quickstart.yaml", ["augment.hflip=0", "finetune.cache_features=true",
                                                          "finetune.freeze=backbone",
                                                          "finetune.unfreeze_after_epochs=1"])


def test_workers_auto_fits_the_cpus_and_torch_does_not_warn():
    recipe = load_recipe(ROOT / "recipes" / "resnet50_amp.yaml", ["data.root=photos"])
    assert recipe.runtime.workers == "auto"
    settings = LoaderSettings.from_runtime(recipe.runtime, 8, torch.device("cpu"), True)
    cpus = len(os.sched_getaffinity(0))
    assert settings.workers == max(0, min(8, cpus - 1)) and settings.workers < max(cpus, 2)
    assert resolve_workers(3) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # torch warns when num_workers exceeds the CPUs it may use
        loader = torch.utils.data.DataLoader(list(range(4)), num_workers=settings.workers)
        list(loader)

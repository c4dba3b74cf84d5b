"""Long-tailed subsets (data.imbalance) and the class-balanced sampler (data.sampler): counts, DDP
shares, the same global draw on any world size, and an exact mid-epoch resume on both data paths."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import make_image_folder
from trainkit.config.recipe import AugmentCfg, DataCfg, EvalCfg, ImbalanceCfg, load_recipe
from trainkit.config.schema import RecipeError
from trainkit.data.imbalance import long_tail_counts
from trainkit.data.loaders import EpochBatches, LoaderSettings, class_sampling_weights, make_loader
from trainkit.data.sources import DataError, open_source, resolve_splits

CPU = torch.device("cpu")


def folder_cfg(root, **kw) -> DataCfg:
    ev = EvalCfg(size=16, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    return DataCfg(name="imagefolder", root=str(root), eval=ev, **kw)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("lt") / "folder", per_class=(20, 4), size=8)


# ---- data.imbalance ----------------------------------------------------------------------------------------

def test_cifar10_lt_profile_counts():
    # CIFAR-10-LT, ratio 100 (Cao et al. 2019): 12,406 training images, 5,000 down to 50
    assert long_tail_counts([5000] * 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert long_tail_counts([5000] * 10, 10) == [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]
    assert long_tail_counts([5000] * 10, 100, "step") == [5000] * 5 + [50] * 5
    assert long_tail_counts([30, 8, 12], 4) == [8, 4, 2]      # the smallest class sets n_max


def test_long_tailed_imagefolder_counts_seeded_test_untouched(folder):
    cfg = folder_cfg(folder, imbalance=ImbalanceCfg(ratio=4, seed=1), holdout_fraction=0.0)
    splits = resolve_splits(cfg, open_source(cfg))
    assert np.bincount(splits["train"].targets).tolist() == [20, 10, 5]
    assert np.bincount(splits["test"].targets).tolist() == [4, 4, 4]     # test stays balanced
    again = resolve_splits(cfg, open_source(cfg))
    assert again["train"].paths == splits["train"].paths                 # reproducible
    other = resolve_splits(dataclasses.replace(cfg, imbalance=ImbalanceCfg(ratio=4, seed=2)), open_source(cfg))
    assert other["train"].paths != splits["train"].paths                 # the seed picks the images
    assert np.bincount(other["train"].targets).tolist() == [20, 10, 5]


def test_balanced_val_drawn_before_the_long_tail(folder):
    cfg = folder_cfg(folder, imbalance=ImbalanceCfg(ratio=4, val_per_class=3))
    splits = resolve_splits(cfg, open_source(cfg))
    assert np.bincount(splits["val"].targets).tolist() == [3, 3, 3]
    assert np.bincount(splits["train"].targets).tolist() == [17, 8, 4]   # the profile over the other 17 per class
    assert not set(splits["val"].paths) & set(splits["train"].paths)
    assert np.bincount(splits["test"].targets).tolist() == [4, 4, 4]
    # without val_per_class the val hold-out comes from the long-tailed images themselves
    held = resolve_splits(folder_cfg(folder, imbalance=ImbalanceCfg(ratio=4), holdout_fraction=0.2),
                          open_source(cfg))
    assert len(held["train"]) + len(held["val"]) == 35 and set(held["val"].paths) <= set(
        resolve_splits(folder_cfg(folder, imbalance=ImbalanceCfg(ratio=4), holdout_fraction=0.0),
                       open_source(cfg))["train"].paths)


def test_too_large_val_and_bad_ratio_are_one_line_errors(folder):
    cfg = folder_cfg(folder, imbalance=ImbalanceCfg(ratio=4, val_per_class=20))
    with pytest.raises(DataError, match="data.imbalance: class 0 has 20 training images"):
        resolve_splits(cfg, open_source(cfg))
    with pytest.raises(RecipeError, match=r"data\.imbalance\.ratio: .* must be >= 1, got 0\.5"):
        load_recipe("recipes/quickstart.yaml", ["data.imbalance={ratio: 0.5}"])


def test_real_cifar10_lt(cifar_jpeg):
    recipe = load_recipe("recipes/cifar10_resnet20.yaml", [f"data.root={cifar_jpeg}", "data.imbalance={ratio: 100}",
                                                           "data.holdout_fraction=0"])
    splits = resolve_splits(recipe.data, open_source(recipe.data))
    assert len(splits["train"]) == 12406 and np.bincount(splits["train"].targets)[[0, 9]].tolist() == [5000, 50]
    assert np.bincount(splits["test"].targets).tolist() == [1000] * 10


# ---- data.sampler ------------------------------------------------------------------------------------------

TARGETS = np.repeat([0, 1, 2], [900, 90, 10])     # 1,000 samples, 90:9:1


def drawn_classes(sampler: str, epochs: int, world: int = 1, rank: int = 0) -> np.ndarray:
    b = EpochBatches(len(TARGETS), 50, train=True, drop_last=False, seed=7, rank=rank, world=world,
                     weights=class_sampling_weights(TARGETS, sampler))
    out = []
    for epoch in range(epochs):
        b.set_epoch(epoch)
        out += [i for batch in b for i, _ in batch]
    return TARGETS[out]


@pytest.mark.parametrize("sampler, expected", [
    ("class_balanced", [1 / 3] * 3),
    ("square_root", np.sqrt([900, 90, 10]) / np.sqrt([900, 90, 10]).sum()),
    ("shuffle", [0.9, 0.09, 0.01]),
])
def test_sampler_class_frequencies(sampler, expected):
    freq = np.bincount(drawn_classes(sampler, epochs=20), minlength=3) / 20_000
    # 20,000 draws: the binomial std of a frequency is at most 0.0035
    assert freq == pytest.approx(expected, abs=0.015)


def test_sampler_ddp_shares_are_the_global_draw():
    for world in (2, 3):
        b = [EpochBatches(len(TARGETS), 8, train=True, drop_last=False, seed=7, rank=r, world=world,
                          weights=class_sampling_weights(TARGETS, "class_balanced")) for r in range(world)]
        one = EpochBatches(len(TARGETS), 8, train=True, drop_last=False, seed=7,
                           weights=class_sampling_weights(TARGETS, "class_balanced"))
        for epoch in (0, 3):
            for x in (*b, one):
                x.set_epoch(epoch)
            per_rank = [x.order() for x in b]
            usable = len(TARGETS) - len(TARGETS) % world
            assert all(len(idx) == usable // world for idx, _ in per_rank)      # equal shares
            glob = one.order()
            # rank r holds positions r, r + world, ... of the one global draw: indices and seeds alike
            for r, (idx, seeds) in enumerate(per_rank):
                assert idx == glob[0][:usable][r::world] and seeds == glob[1][:usable][r::world]
        assert b[0].order() != EpochBatches(len(TARGETS), 8, train=True, drop_last=False, seed=8, rank=0,
                                            world=world, weights=b[0].weights).order()   # the seed matters


def test_sampler_epochs_differ_and_duplicates_get_their_own_seeds():
    b = EpochBatches(len(TARGETS), 8, train=True, drop_last=False, seed=7,
                     weights=class_sampling_weights(TARGETS, "class_balanced"))
    first = b.order()
    b.set_epoch(1)
    assert b.order()[0] != first[0]
    idx, seeds = first
    assert len(set(idx)) < len(idx)          # with replacement: the 10 rare images come many times
    assert len(set(seeds)) == len(seeds)     # each draw its own augmentation


@pytest.mark.parametrize("in_memory", [True, False])
def test_sampler_resume_mid_epoch_is_exact(folder, in_memory):
    cfg = folder_cfg(folder, imbalance=ImbalanceCfg(ratio=4), holdout_fraction=0.0, sampler="class_balanced",
                     in_memory=in_memory)
    split = resolve_splits(cfg, open_source(cfg))["train"]
    settings = LoaderSettings(batch=4, workers=0, pin_memory=False, prefetch_factor=2, persistent_workers=False,
                              drop_last=True)
    augment = AugmentCfg(crop="pad", pad_px=2, hflip=0.5)

    def epoch(start: int):
        loader = make_loader(split, train=True, data=cfg, augment=augment, settings=settings, chans=3, device=CPU,
                             seed=5, channels_last=False)
        loader.set_epoch(2, start)
        return list(loader)

    full, resumed = epoch(0), epoch(3)
    assert len(full) == 35 // 4 and len(resumed) == len(full) - 3
    for (x, y), (rx, ry) in zip(full[3:], resumed):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    counts = torch.bincount(torch.cat([y for _, y in full]), minlength=3)
    assert counts.min() >= 4       # the 5-image class is drawn about as often as the 20-image one

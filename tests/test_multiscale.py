"""Multi-scale training sizes on both data paths, the progressive schedule, and TTA."""

from __future__ import annotations


import pytest
import torch

from trainkit.data.loaders import LoaderSettings, make_loader
from trainkit.data.sources import open_source, resolve_splits
from trainkit.data.multiscale import TTA, Resolution, resolution_at
from trainkit.config.recipe import AugmentCfg, DataCfg, EvalCfg, MultiScaleCfg, ProgressiveCfg, parse_recipe
from trainkit.data.sources import prepare_data
from trainkit.runtime.distributed import DistInfo
from trainkit.train.trainer import plan_for

CPU = torch.device("cpu")


def loader_for(folder, multiscale, in_memory, workers=0, augment=AugmentCfg(crop="pad", pad_px=2, hflip=0.5)):
    data = DataCfg(name="imagefolder", root=str(folder), eval=EvalCfg(size=16), holdout_fraction=0.0,
                   in_memory=in_memory)
    split = resolve_splits(data, open_source(data))["train"]
    settings = LoaderSettings(batch=4, workers=workers, pin_memory=False, prefetch_factor=2,
                              persistent_workers=False, drop_last=True)
    return make_loader(split, train=True, data=data, augment=augment, settings=settings, chans=3, device=CPU,
                       seed=3, channels_last=False, multiscale=multiscale)


@pytest.mark.parametrize("in_memory, workers", [(True, 0), (False, 0), (False, 2)])
def test_batches_come_at_configured_sizes(image_folder, in_memory, workers):
    ms = MultiScaleCfg(sizes=[12, 16, 20])
    loader = loader_for(image_folder, ms, in_memory, workers)
    assert loader.in_memory is in_memory
    seen = []
    for epoch in range(4):
        loader.set_epoch(epoch)
        for x, y in loader:
            assert x.shape[-1] == x.shape[-2] and x.shape[:2] == (4, 3)   # one size per batch
            seen.append(x.shape[-1])
    assert set(seen) == {12, 16, 20}
    # The size is a function of (seed, epoch, batch content): both paths and any worker count agree.
    other = loader_for(image_folder, ms, not in_memory)
    other.set_epoch(3)
    loader.set_epoch(3)
    assert [x.shape[-1] for x, _ in other] == [x.shape[-1] for x, _ in loader]


def test_per_sample_transform_is_built_at_the_batch_size(image_folder):
    # Random-resized crops drawn straight at the target size: no padding, no second resize.
    loader = loader_for(image_folder, MultiScaleCfg(sizes=[8, 24]), in_memory=False,
                        augment=AugmentCfg(crop="random_resized", scale=[0.5, 1.0]))
    sizes = {x.shape[-1] for x, _ in loader}
    assert sizes <= {8, 24} and sizes


def test_progressive_schedule_returns_configured_sizes_per_epoch():
    cfg = ProgressiveCfg(start_px=160, end_px=192, start_epoch=2, end_epoch=8, step_px=8)
    got = [resolution_at(e, cfg) for e in range(10)]
    # linear 160 -> 192 over epochs 2..8 (165.3, 170.7, 176, 181.3, 186.7), to the nearest multiple of 8
    assert got == [160, 160, 160, 168, 168, 176, 184, 184, 192, 192]
    # FFCV's ImageNet example: 160 -> 192 over epochs 11..13 of 16, steps of 32.
    ffcv = ProgressiveCfg(start_px=160, end_px=192, start_epoch=11, end_epoch=13, step_px=32)
    assert [resolution_at(e, ffcv) for e in (0, 11, 12, 13, 15)] == [160, 160, 192, 192, 192]
    assert all(a <= b for a, b in zip(got, got[1:]))   # never shrinks


def test_progressive_loader_follows_the_epoch(image_folder):
    ms = MultiScaleCfg(progressive=ProgressiveCfg(start_px=8, end_px=16, start_epoch=0, end_epoch=2, step_px=4))
    for in_memory in (True, False):
        loader = loader_for(image_folder, ms, in_memory)
        sizes = []
        for epoch in range(3):
            loader.set_epoch(epoch)
            sizes.append({x.shape[-1] for x, _ in loader})
        assert sizes == [{8}, {12}, {16}]


def test_no_multiscale_keeps_the_default_size():
    assert Resolution(MultiScaleCfg(), 0).size(0, 123) is None


def test_tta_averages_softmax_over_flips_and_scales():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    x = torch.randn(2, 3, 16, 16)
    out = TTA(model, flip=True)(x)
    ref = (model(x).softmax(-1) + model(x.flip(3)).softmax(-1)) / 2
    torch.testing.assert_close(out.exp(), ref)
    out = TTA(model, sizes=[12, 16], flip=False)(x)
    small = torch.nn.functional.interpolate(x, size=(12, 12), mode="bilinear", antialias=True)
    torch.testing.assert_close(out.exp(), (model(small).softmax(-1) + model(x).softmax(-1)) / 2)


@pytest.mark.parametrize("sizes, fast", [([], True), ([16, 512], False)])
def test_the_plan_decides_the_training_data_path_at_the_largest_size(image_folder, sizes, fast):
    """plan.json's in_memory is the path the train loader takes, also when a multi-scale size is what
    makes the decoded split exceed data.in_memory_max_mb (36 images: 0.03 MB at 16 px, 27 MB at 512 px)."""
    recipe = parse_recipe({"data": {"name": "imagefolder", "root": str(image_folder), "eval": {"size": 16},
                                    "in_memory_max_mb": 1}, "multiscale": {"sizes": sizes},
                           "augment": {"crop": "pad", "pad_px": 2}, "train": {"global_batch": 4}})
    data = prepare_data(recipe)
    plan = plan_for(recipe, data, DistInfo(), CPU)
    settings = LoaderSettings(batch=4, workers=0, pin_memory=False, prefetch_factor=2, persistent_workers=False,
                              drop_last=True)
    loader = make_loader(data.splits["train"], train=True, data=recipe.data, augment=recipe.augment,
                         settings=settings, chans=data.in_chans, device=CPU, seed=recipe.train.seed,
                         channels_last=False, multiscale=recipe.multiscale)
    assert plan.in_memory is loader.in_memory is fast

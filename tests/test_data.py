"""Data layer: sources, splits, image modes, corrupt files, both serving paths."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from trainkit.data.loaders import EpochBatches, LoaderSettings, decode_split, make_loader
from trainkit.data.sources import DataError, open_source, resolve_splits
from trainkit.config.recipe import AugmentCfg, DataCfg, EvalCfg
from trainkit.data.transforms import BatchAugment, to_channels

CPU = torch.device("cpu")


def settings(batch=4, workers=0, drop_last=False):
    return LoaderSettings(batch=batch, workers=workers, pin_memory=False, prefetch_factor=2,
                          persistent_workers=False, drop_last=drop_last)


def folder_cfg(root, **kw):
    ev = EvalCfg(size=16, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    return DataCfg(name="imagefolder", root=str(root), eval=ev, **kw)


def test_imagefolder_splits_and_seeded_holdout(image_folder):
    cfg = folder_cfg(image_folder, holdout_fraction=0.25, holdout_seed=3)
    splits = resolve_splits(cfg, open_source(cfg))
    assert splits["train"].classes == ("cat", "dog", "fox")
    assert len(splits["train"]) + len(splits["val"]) == 36 and len(splits["val"]) == 9
    assert len(splits["test"]) == 18
    assert not set(splits["train"].paths) & set(splits["val"].paths)
    again = resolve_splits(cfg, open_source(cfg))
    assert again["val"].paths == splits["val"].paths       # seeded: same hold-out every time
    other = resolve_splits(dataclasses.replace(cfg, holdout_seed=4), open_source(cfg))
    assert other["val"].paths != splits["val"].paths


def test_holdout_zero_validates_on_test(image_folder):
    cfg = folder_cfg(image_folder, holdout_fraction=0.0)
    splits = resolve_splits(cfg, open_source(cfg))
    assert splits["val"] is splits["test"] and len(splits["train"]) == 36


def test_missing_root_names_it(tmp_path):
    cfg = folder_cfg(tmp_path / "nope")
    with pytest.raises(DataError, match=r"data root not found: .*nope"):
        open_source(cfg)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "I;16", "1"])
def test_any_mode_converts_to_model_channels(mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8))
    img = rgb.convert(mode) if mode != "I;16" else Image.fromarray(np.full((8, 8), 4000, np.uint16))
    assert to_channels(img, 3).mode == "RGB" and to_channels(img, 1).mode == "L"
    assert np.asarray(to_channels(img, 3)).shape == (8, 8, 3)


def test_transparent_pixels_composite_on_white():
    img = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert np.asarray(to_channels(img, 3)).min() == 255


def corrupt(image_folder):
    bad = image_folder / "train" / "dog" / "000.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return bad


@pytest.mark.parametrize("in_memory", [True, False])
def test_corrupt_image_fails_with_its_name(image_folder, in_memory):
    bad = corrupt(image_folder)
    cfg = folder_cfg(image_folder, in_memory=in_memory, holdout_fraction=0.0)
    split = resolve_splits(cfg, open_source(cfg))["train"]
    with pytest.raises(DataError, match=str(bad)):
        loader = make_loader(split, train=True, data=cfg, augment=AugmentCfg(), settings=settings(),
                             chans=3, device=CPU, seed=0, channels_last=False)
        list(loader)


@pytest.mark.parametrize("in_memory, workers", [(True, 0), (False, 0), (False, 2)])
def test_corrupt_image_skipped_and_counted(image_folder, in_memory, workers):
    corrupt(image_folder)
    cfg = folder_cfg(image_folder, in_memory=in_memory, on_corrupt="skip", holdout_fraction=0.0)
    split = resolve_splits(cfg, open_source(cfg))["train"]
    loader = make_loader(split, train=True, data=cfg, augment=AugmentCfg(), settings=settings(workers=workers),
                         chans=3, device=CPU, seed=0, channels_last=False)
    seen = sum(len(y) for _, y in loader)
    assert seen == 35 and loader.skipped == 1


def test_epoch_batches_train_is_seeded_and_eval_exact():
    b = EpochBatches(10, 3, train=True, drop_last=True, seed=1)
    first = [i for batch in b for i, _ in batch]
    assert len(first) == 9 and first == [i for batch in b for i, _ in batch]
    b.set_epoch(1)
    assert [i for batch in b for i, _ in batch] != first
    # Eval over 2 ranks of an odd-sized set: every sample exactly once.
    ranks = [EpochBatches(11, 4, train=False, drop_last=False, seed=0, rank=r, world=2) for r in range(2)]
    seen = sorted(i for r in ranks for batch in r for i, _ in batch)
    assert seen == list(range(11))


def test_fast_and_per_sample_paths_agree_without_randomness(image_folder):
    cfg = folder_cfg(image_folder, holdout_fraction=0.0)
    split = resolve_splits(cfg, open_source(cfg))["test"]
    out = {}
    for fast in (True, False):
        c = dataclasses.replace(cfg, in_memory=fast)
        loader = make_loader(split, train=False, data=c, augment=AugmentCfg(), settings=settings(batch=5),
                             chans=3, device=CPU, seed=0, channels_last=False)
        assert loader.in_memory is fast
        xs, ys = zip(*loader)
        out[fast] = (torch.cat(xs), torch.cat(ys))
    assert torch.equal(out[True][1], out[False][1])
    torch.testing.assert_close(out[True][0], out[False][0])


def test_fast_and_per_sample_augmentation_statistics_match(image_folder):
    """Pad-crop + flip: same semantics on both paths (compare per-pixel statistics)."""
    cfg = folder_cfg(image_folder, holdout_fraction=0.0)
    split = resolve_splits(cfg, open_source(cfg))["train"]
    aug = AugmentCfg(crop="pad", pad_px=4, hflip=0.5)
    means = {}
    for fast in (True, False):
        c = dataclasses.replace(cfg, in_memory=fast)
        loader = make_loader(split, train=True, data=c, augment=aug, settings=settings(batch=6),
                             chans=3, device=CPU, seed=0, channels_last=False)
        batches = []
        for epoch in range(30):
            loader.set_epoch(epoch)
            batches += [x for x, _ in loader]
        x = torch.cat(batches)
        # fraction of zero-padding pixels (value -2 after normalisation) and mean image
        means[fast] = ((x == -2.0).float().mean().item(), x.mean(0))
    assert abs(means[True][0] - means[False][0]) < 0.01
    assert (means[True][1] - means[False][1]).abs().mean() < 0.05


def test_batch_augment_pad_crop_is_a_shifted_window():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.uint8).view(2, 1, 5, 5)
    out = BatchAugment.from_cfg(AugmentCfg(crop="pad", pad_px=2))(x, torch.Generator().manual_seed(0))
    for b in range(2):
        padded = torch.nn.functional.pad(x[b], (2, 2, 2, 2))
        windows = [padded[:, i:i + 5, j:j + 5] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[b], w) for w in windows)


def test_worker_count_does_not_change_augmentation(image_folder):
    cfg = folder_cfg(image_folder, holdout_fraction=0.0, in_memory=False)
    split = resolve_splits(cfg, open_source(cfg))["train"]
    aug = AugmentCfg(crop="random_resized", scale=[0.3, 1.0], hflip=0.5)
    outs = []
    for workers in (0, 2):
        loader = make_loader(split, train=True, data=cfg, augment=aug, settings=settings(workers=workers),
                             chans=3, device=CPU, seed=5, channels_last=False)
        loader.set_epoch(2)
        outs.append(torch.cat([x for x, _ in loader]))
    assert torch.equal(outs[0], outs[1])


def test_fashion_mnist_from_debian_package(fashion_dir):
    cfg = DataCfg(name="fashion_mnist", holdout_fraction=0.05, eval=EvalCfg(size=28, mean=[0.286], std=[0.353]))
    source = open_source(cfg)
    splits = resolve_splits(cfg, source)
    assert source.natural_chans == 1 and len(splits["train"].classes) == 10
    assert len(splits["train"]) == 57000 and len(splits["val"]) == 3000 and len(splits["test"]) == 10000
    images, targets, skipped = decode_split(splits["test"], None, 28, 1, "error", 0)
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.uint8 and skipped == 0
    assert torch.bincount(targets).tolist() == [1000] * 10


def test_offline_torchvision_dataset_says_where_to_put_files(tmp_path):
    cfg = DataCfg(name="cifar10", root=str(tmp_path), download=False)
    with pytest.raises(DataError) as err:
        open_source(cfg)
    msg = str(err.value)
    assert "cifar-10-batches-py" in msg and "data.download=true" in msg


def test_cifar_jpeg_folder_decodes_in_memory(cifar_jpeg):
    cfg = DataCfg(name="imagefolder", root=str(cifar_jpeg), limit_eval=200, eval=EvalCfg(size=32))
    splits = resolve_splits(cfg, open_source(cfg))
    assert len(splits["test"]) == 200 and len(splits["train"].classes) == 10
    loader = make_loader(splits["test"], train=False, data=cfg, augment=AugmentCfg(), settings=settings(batch=64),
                         chans=3, device=CPU, seed=0, channels_last=True)
    x, y = next(iter(loader))
    assert x.shape == (64, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
    assert -2.2 < x.min() < 0 < x.max() < 2.7

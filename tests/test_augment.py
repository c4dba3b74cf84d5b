"""Declared augmentation steps: built, applied, validated; batched forms; the data path they pick."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from trainkit.data.augment import AlbumentationsSteps, BatchRandomErasing, random_resized_boxes, resized_crops
from trainkit.config.schema import RecipeError
from trainkit.data.loaders import LoaderSettings, make_loader
from trainkit.data.sources import open_source, resolve_splits
from trainkit.config.recipe import AugmentCfg, DataCfg, EvalCfg, load_recipe, parse_recipe
from trainkit.data.augment import batched_supported
from trainkit.data.transforms import BatchAugment, train_sample_transform

from conftest import ROOT

CPU = torch.device("cpu")
QUICK = ROOT / "recipes" / "quickstart.yaml"


def picture(size=32, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    arr[: size // 2] //= 3   # some structure, so histogram ops change things
    return Image.fromarray(arr)


def aug(**kw) -> AugmentCfg:
    return parse_recipe({"augment": kw}).augment


@pytest.mark.parametrize("override, message", [
    ("augment.auto_augment=randd-m9", "augment.auto_augment: unknown policy 'randd-m9'; did you mean 'rand'?"),
    ("augment.auto_augment=rand-m9-zz3", "augment.auto_augment: invalid policy string 'rand-m9-zz3'"),
    ("augment.albumentations=[{name: CLAHEE}]", "augment.albumentations[0].name: unknown albumentations transform "
                                                "'CLAHEE'; did you mean 'CLAHE'?"),
    ("augment.albumentations=[{name: CLAHE, clip_limt: 2}]", "augment.albumentations[0].clip_limt: unknown parameter "
                                                             "of albumentations.CLAHE; did you mean 'clip_limit'?"),
    ("augment.albumentations=[{name: GaussNoise, p: 3}]", "augment.albumentations[0].p: Input should be less than"),
    ("augment.albumentations=[{p: 1}]", "augment.albumentations[0].name: each albumentations step needs a transform"),
    ("augment.color_jitter=[0.4, 0.4]", "augment.color_jitter"),
    ("augment.random_erasing=1.5", "augment.random_erasing: a probability"),
    ("augment.random_erasing_mode=pixl", "did you mean 'pixel'"),
    ("augment.trivial_augment=true", "unknown key augment.trivial_augment"),
    ("mixup.mode=pairs", "mixup.mode: invalid value 'pairs'"),
    ("mixup.cutmix_minmax=[0.5, 0.2]", "mixup.cutmix_minmax"),
    ("ema.decay=1.5", "ema.decay"),
    ("train.best_metric=ema_top1", "train.best_metric: ema_top1 needs an EMA; set ema.decay"),
    ("multiscale.sizes=[0, 32]", "multiscale.sizes"),
])
def test_bad_augmentation_keys_give_one_line_errors(override, message):
    with pytest.raises(RecipeError) as err:
        load_recipe(QUICK, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("policy", ["rand-m9-mstd0.5", "rand-m9-mstd0.5-inc1", "augmix-m3-w3", "original",
                                    "trivial_augment_wide", "autoaugment_imagenet", "autoaugment_cifar10"])
def test_policies_apply_and_follow_the_torch_seed(policy):
    t = train_sample_transform(aug(auto_augment=policy), 32, "bilinear", (0.5, 0.5, 0.5))
    img = picture()
    outs = []
    for seed in (0, 0, 1, 2, 3):
        torch.manual_seed(seed)
        outs.append(np.asarray(t(img)))
    assert outs[0].shape == (32, 32, 3)
    assert np.array_equal(outs[0], outs[1])                       # reproducible from the sample seed
    assert any(not np.array_equal(outs[0], o) for o in outs[2:])  # and it does something


@pytest.mark.parametrize("spec", [
    {"name": "ToGray", "p": 1.0},
    {"name": "InvertImg", "p": 1.0},
    {"name": "Posterize", "num_bits": 2, "p": 1.0},
    {"name": "CLAHE", "clip_limit": 4.0, "p": 1.0},
])
def test_each_declared_albumentations_step_is_applied(spec):
    import albumentations as A

    cls = getattr(A, spec["name"])
    params = {k: v for k, v in spec.items() if k != "name"}
    img = picture()
    reference = cls(**params)
    reference.set_random_seed(0) if hasattr(reference, "set_random_seed") else None
    expected = reference(image=np.asarray(img))["image"]
    torch.manual_seed(0)
    out = np.asarray(AlbumentationsSteps([spec])(img))
    assert not np.array_equal(out, np.asarray(img))
    assert np.array_equal(out, expected)   # deterministic steps: exactly the albumentations result
    # And through the recipe: the per-sample pipeline contains it.
    t = train_sample_transform(aug(albumentations=[spec]), 32, "bilinear")
    assert "AlbumentationsSteps" in repr(t) and spec["name"] in repr(t)


def test_albumentations_pipeline_applies_every_step_in_order():
    steps = [{"name": "InvertImg", "p": 1.0}, {"name": "ToGray", "p": 1.0}]
    img = picture()
    out = np.asarray(AlbumentationsSteps(steps)(img))
    import albumentations as A
    expected = A.ToGray(p=1.0)(image=A.InvertImg(p=1.0)(image=np.asarray(img))["image"])["image"]
    assert np.array_equal(out, expected)


def test_color_jitter_builds_torchvision_jitter():
    t = train_sample_transform(aug(color_jitter=[0.4, 0.3, 0.2, 0.1]), 32, "bilinear")
    jitter = [s for s in t.transforms if type(s).__name__ == "ColorJitter"][0]
    assert jitter.brightness == (0.6, 1.4) and jitter.hue == (-0.1, 0.1)


@pytest.mark.parametrize("kw, batched", [
    ({"crop": "pad", "hflip": 0.5}, True),
    ({"crop": "random_resized"}, True),
    ({"crop": "pad", "random_erasing": 0.25}, True),
    ({"auto_augment": "rand-m9-mstd0.5"}, False),
    ({"color_jitter": 0.4}, False),
    ({"albumentations": [{"name": "ToGray"}]}, False),
])
def test_batched_supported_is_honest(kw, batched):
    assert batched_supported(aug(**kw)) is batched


def test_steps_without_a_batched_form_use_the_per_sample_path(image_folder):
    data = DataCfg(name="imagefolder", root=str(image_folder), eval=EvalCfg(size=16))
    split = resolve_splits(data, open_source(data))["train"]
    settings = LoaderSettings(batch=4, workers=0, pin_memory=False, prefetch_factor=2, persistent_workers=False,
                              drop_last=True)
    cases = (({"crop": "random_resized", "hflip": 0.5}, True), ({"auto_augment": "trivial_augment_wide"}, False))
    for kw, fast in cases:
        loader = make_loader(split, train=True, data=data, augment=aug(**kw), settings=settings, chans=3, device=CPU,
                             seed=0, channels_last=False)
        assert loader.in_memory is fast
        x, y = next(iter(loader))
        assert x.shape == (4, 3, 16, 16)


def test_batched_random_resized_crop_full_box_is_identity_and_boxes_follow_scale():
    x = torch.randint(0, 256, (3, 3, 12, 12), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    boxes = random_resized_boxes(3, 12, 12, (1.0, 1.0), (1.0, 1.0), gen)
    assert torch.equal(boxes, torch.tensor([[0, 0, 12, 12]] * 3, dtype=torch.float64))
    assert torch.equal(resized_crops(x, boxes, 12), x)
    boxes = random_resized_boxes(2000, 32, 32, (0.25, 0.5), (3 / 4, 4 / 3), gen)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / 1024
    assert area.min() > 0.2 and area.max() < 0.56 and 0.35 < area.mean() < 0.40
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 32).all() and (boxes[:, 3] <= 32).all()
    out = BatchAugment.from_cfg(aug(crop="random_resized", scale=[0.3, 1.0]))(x, gen)
    assert out.shape == x.shape and out.dtype == torch.uint8


@pytest.mark.parametrize("mode", ["const", "rand", "pixel"])
def test_random_erasing_boxes_and_fill(mode):
    x = torch.full((64, 3, 16, 16), 7.0)
    out = BatchRandomErasing(0.5, mode)(x, torch.Generator().manual_seed(0))
    erased = (out != 7.0).any(1)              # [B, H, W]
    per_image = erased.flatten(1).float().mean(1)
    hit = per_image > 0
    assert 0.3 < hit.float().mean() < 0.7     # about half the images
    # 2%-33% of the area, give or take the rounding of box sides on a 16 px image
    assert (per_image[hit] >= 0.01).all() and (per_image[hit] <= 0.40).all()
    for i in torch.nonzero(hit).flatten().tolist():   # one axis-aligned rectangle
        rows, cols = erased[i].any(1), erased[i].any(0)
        assert erased[i].sum() == rows.sum() * cols.sum()
    if mode == "const":
        assert (out[~(out == 7.0)] == 0).all()
    assert torch.equal(x, torch.full_like(x, 7.0))   # not in place


def test_batched_rrc_boxes_follow_torchvision_distribution():
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    ref = torch.tensor([RandomResizedCrop.get_params(torch.empty(3, 40, 30), list(scale), list(ratio))
                        for _ in range(3000)], dtype=torch.float64)   # (top, left, h, w)
    ours = random_resized_boxes(3000, 40, 30, scale, ratio, torch.Generator().manual_seed(1))
    ref_area, ref_aspect = ref[:, 2] * ref[:, 3] / 1200, ref[:, 3] / ref[:, 2]
    area = (ours[:, 2] - ours[:, 0]) * (ours[:, 3] - ours[:, 1]) / 1200
    aspect = (ours[:, 2] - ours[:, 0]) / (ours[:, 3] - ours[:, 1])
    assert abs(area.mean() - ref_area.mean()) < 0.02 and abs(aspect.mean() - ref_aspect.mean()) < 0.03
    assert abs((area == 1).double().mean() - (ref_area == 1).double().mean()) < 0.02   # the fallback rate

"""Training augmentation declared in the recipe's ``augment:`` section, as registered ops.

Each op (:class:`AugmentOp`, registered in :data:`trainkit.config.registry.AUGMENT_OPS`) declares
its per-sample (PIL) form, its batched uint8 form when it has one, whether it is random, and its
load-time check. Everything else is derived from the ops: the per-sample transform, the batched
augmentation of the in-memory path, ``batched_supported`` and the reasons distillation's logit
cache is refused. Adding an op is one registered class here (plus its keys in AugmentCfg).

Ops run in registration order, the order timm's and torchvision's references use: crop ->
horizontal flip -> auto-augment policy -> colour jitter -> albumentations steps. Random erasing
runs afterwards on the normalised batch (:class:`BatchRandomErasing`), so it is the same op on
both serving paths.

Policies are looked up in :data:`POLICIES` by the part of the string before the
first dash (``rand-m9-mstd0.5`` -> ``rand``), so timm's policy strings work as
they are. Every name and parameter is validated when the recipe loads.
"""

from __future__ import annotations

import functools
import inspect
import math
import random
import warnings
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from PIL import Image
from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform, rand_augment_transform
from timm.data.transforms import str_to_pil_interp
from torchvision.ops import roi_align
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from trainkit.config.registry import AUGMENT_OPS, POLICIES
from trainkit.config.schema import RecipeError, did_you_mean

if TYPE_CHECKING:
    from trainkit.config.recipe import AugmentCfg

INTERPOLATION = {"nearest": InterpolationMode.NEAREST, "bilinear": InterpolationMode.BILINEAR,
                 "bicubic": InterpolationMode.BICUBIC}


# ---------------------------------------------------------------- RNG discipline

class TorchSeeded:
    """Run a transform that draws from Python's ``random`` / numpy (timm's policies do) with
    those RNGs seeded from torch's, then restore them.

    The loader seeds torch per (seed, epoch, index); this makes such transforms follow it,
    so augmentation stays independent of worker count and of how many epochs ran.
    """

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, img):
        seed = int(torch.randint(0, 2**31 - 1, ()))
        py_state, np_state = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed)
        try:
            return self.transform(img)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)

    def __repr__(self) -> str:
        return f"TorchSeeded({self.transform!r})"


# ---------------------------------------------------------------- auto-augment policies

def _timm_hparams(size: int, interpolation: str, mean: list[float]) -> dict:
    fill = tuple(min(255, round(255 * m)) for m in mean)
    return {"translate_const": int(size * 0.45), "img_mean": fill[0] if len(fill) == 1 else fill,
            "interpolation": str_to_pil_interp(interpolation)}


@POLICIES.register("rand")
def _rand_augment(spec: str, size: int, interpolation: str, mean: list[float]):
    """timm RandAugment, e.g. ``rand-m9-mstd0.5-inc1`` (magnitude 9, magnitude noise 0.5)."""
    return TorchSeeded(rand_augment_transform(spec, _timm_hparams(size, interpolation, mean)))


@POLICIES.register("augmix")
def _augmix(spec: str, size: int, interpolation: str, mean: list[float]):
    """timm AugMix (without the JSD split), e.g. ``augmix-m3-w3-d2``."""
    return TorchSeeded(augment_and_mix_transform(spec, _timm_hparams(size, interpolation, mean)))


def _timm_auto_augment(spec: str, size: int, interpolation: str, mean: list[float]):
    """timm AutoAugment with a named policy: original (the paper's ImageNet policy), v0, 3a ..."""
    return TorchSeeded(auto_augment_transform(spec, _timm_hparams(size, interpolation, mean)))


for _name in ("original", "originalr", "v0", "v0r", "3a"):
    POLICIES.register(_name)(_timm_auto_augment)


@POLICIES.register("trivial_augment_wide")
def _trivial(spec: str, size: int, interpolation: str, mean: list[float]):
    """torchvision TrivialAugmentWide (one random op at a random magnitude)."""
    return T.TrivialAugmentWide(interpolation=INTERPOLATION[interpolation])


def _tv_autoaugment(policy: str):
    def build(spec: str, size: int, interpolation: str, mean: list[float]):
        return T.AutoAugment(T.AutoAugmentPolicy[policy], interpolation=INTERPOLATION[interpolation])
    return build


for _policy in ("imagenet", "cifar10", "svhn"):
    POLICIES.register(f"autoaugment_{_policy}")(_tv_autoaugment(_policy.upper()))


def build_policy(spec: str, size: int, interpolation: str, mean: list[float]):
    return POLICIES.get(spec.split("-", 1)[0])(spec, size, interpolation, mean)


# ---------------------------------------------------------------- albumentations

def _albumentations():
    import albumentations  # optional heavy dependency: importing it costs seconds, needed only when declared
    return albumentations


def build_albumentation(spec: dict, key: str):
    """One albumentations transform from ``{name: X, **params}``; errors are one line naming the key."""
    A = _albumentations()
    name = spec.get("name")
    if not isinstance(name, str):
        raise RecipeError(f"{key}.name: each albumentations step needs a transform name, got {spec!r}")
    cls = getattr(A, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, (A.ImageOnlyTransform, A.DualTransform))):
        known = [n for n in dir(A) if inspect.isclass(getattr(A, n))
                 and issubclass(getattr(A, n), (A.ImageOnlyTransform, A.DualTransform))]
        raise RecipeError(f"{key}.name: unknown albumentations transform {name!r}{did_you_mean(name, known)}")
    params = {k: v for k, v in spec.items() if k != "name"}
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    for param in params:
        if param not in allowed:
            raise RecipeError(f"{key}.{param}: unknown parameter of albumentations.{name}"
                              f"{did_you_mean(param, allowed)} (valid: {', '.join(allowed)})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls(**params)
    except (ValueError, TypeError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        if len(lines) >= 3 and "validation error" in lines[0]:   # pydantic: the first failing field
            field, message = lines[1].split(".")[0], lines[2].split(" [type=")[0]
            raise RecipeError(f"{key}.{field}: {message} (albumentations.{name}, got {params.get(field)!r})") from None
        raise RecipeError(f"{key}: albumentations.{name}: {lines[0] if lines else type(err).__name__}") from None


class AlbumentationsSteps:
    """PIL -> numpy -> albumentations.Compose -> PIL, seeded from torch's RNG per sample."""

    def __init__(self, specs: list[dict]):
        A = _albumentations()
        self.names = [s["name"] for s in specs]
        self.compose = A.Compose([build_albumentation(s, f"augment.albumentations[{i}]")
                                  for i, s in enumerate(specs)])

    def __call__(self, img: Image.Image) -> Image.Image:
        self.compose.set_random_seed(int(torch.randint(0, 2**31 - 1, ())))
        arr = np.asarray(img)
        out = self.compose(image=arr)["image"]
        if out.ndim == 3 and arr.ndim == 2:
            out = out[..., 0]
        return Image.fromarray(np.ascontiguousarray(out))

    def __repr__(self) -> str:
        return f"AlbumentationsSteps({', '.join(self.names)})"


# ---------------------------------------------------------------- the ops

def jitter_strengths(value: float | list[float]) -> list[float]:
    """timm's convention: one number is brightness = contrast = saturation; or [b, c, s] or [b, c, s, h]."""
    return [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]


BatchOp = Callable[[torch.Tensor, torch.Generator], torch.Tensor]   # uint8 [B, C, H, W] -> same, drawn from gen


class AugmentOp:
    """One step of ``augment:``. Subclass it, register an instance in AUGMENT_OPS, and the loaders, the
    in-memory path's eligibility and the logit cache's refusal follow."""
    example = ""                          # a recipe override that turns the op on (tests use it)
    has_batched = True                    # False: an active op moves training to the per-sample path

    def active(self, aug: "AugmentCfg") -> bool:
        raise NotImplementedError

    def check(self, aug: "AugmentCfg", key: str) -> None:
        """Validate the op's keys at recipe load; raise RecipeError naming the key."""

    def random(self, aug: "AugmentCfg") -> str | None:
        """Why the op makes a sample's input differ between epochs (None: it does not)."""
        return None

    def batched_only(self, aug: "AugmentCfg") -> bool:
        """True when the op as configured exists only in its batched form (the in-memory path)."""
        return False

    def sample_steps(self, aug: "AugmentCfg", size: int, interpolation: str, mean: list[float]) -> list:
        """The per-sample (PIL) form."""
        return []

    def batch_op(self, aug: "AugmentCfg") -> BatchOp | None:
        """The batched form on the uint8 batch (the in-memory path); None when there is nothing to do."""
        return None

    def post_op(self, aug: "AugmentCfg") -> BatchOp | None:
        """An op on the normalised float batch, on both paths (after the per-sample or batched forms)."""
        return None


@AUGMENT_OPS.register("crop")
class Crop(AugmentOp):
    """Bring the image to the training size: resize + centre crop (none), then a padded random crop
    (pad), or a random-resized crop."""
    example = "augment.crop=pad"

    def active(self, aug):
        return True   # crop=none still sizes the image

    def random(self, aug):
        return f"augment.crop={aug.crop} crops at random" if aug.crop != "none" else None

    def sample_steps(self, aug, size, interpolation, mean):
        if aug.crop == "random_resized":
            return [T.RandomResizedCrop(size, scale=tuple(aug.scale), ratio=tuple(aug.ratio), antialias=True,
                                        interpolation=INTERPOLATION[aug.interpolation or interpolation])]
        steps = [T.Resize(size, interpolation=INTERPOLATION[interpolation], antialias=True), T.CenterCrop(size)]
        if aug.crop == "pad" and aug.pad_px:
            steps.append(T.RandomCrop(size, padding=aug.pad_px, fill=0, padding_mode=PAD_MODES[aug.pad_mode]))
        return steps

    def batch_op(self, aug):
        if aug.crop == "random_resized":
            scale, ratio = tuple(aug.scale), tuple(aug.ratio)
            return lambda x, gen: resized_crops(x, random_resized_boxes(len(x), *x.shape[-2:], scale, ratio, gen),
                                                x.shape[-2])
        if aug.crop == "pad" and aug.pad_px:
            return functools.partial(pad_crops, pad_px=aug.pad_px, mode=aug.pad_mode)
        return None


@AUGMENT_OPS.register("hflip")
class HorizontalFlip(AugmentOp):
    """flip=random: each image with probability hflip; flip=alternate: each image on every other epoch
    (:class:`AlternateFlips`), which needs to know the image and the epoch: the in-memory path only."""
    example = "augment.hflip=0.5"

    def active(self, aug):
        return aug.hflip > 0

    def random(self, aug):
        if not self.active(aug):
            return None
        return f"augment.hflip={aug.hflip} flips at random" if aug.flip == "random" else \
            "augment.flip=alternate flips each image on every other epoch"

    def batched_only(self, aug):
        return self.active(aug) and aug.flip == "alternate"

    def sample_steps(self, aug, size, interpolation, mean):
        if self.batched_only(aug):
            raise ValueError("augment.flip=alternate has no per-sample form (it needs the in-memory path)")
        return [T.RandomHorizontalFlip(aug.hflip)] if self.active(aug) else []

    def batch_op(self, aug):
        if not self.active(aug):
            return None
        return AlternateFlips() if aug.flip == "alternate" else functools.partial(flips, prob=aug.hflip)


@AUGMENT_OPS.register("auto_augment")
class AutoAugment(AugmentOp):
    """A policy from :data:`POLICIES` (timm's strings or torchvision's named policies)."""
    example = "augment.auto_augment=trivial_augment_wide"
    has_batched = False

    def active(self, aug):
        return aug.auto_augment is not None

    def check(self, aug, key):
        if not self.active(aug):
            return
        family = aug.auto_augment.split("-", 1)[0]
        if family not in POLICIES:
            raise RecipeError(f"{key}.auto_augment: unknown policy {aug.auto_augment!r}"
                              f"{did_you_mean(family, POLICIES.names())} (known: {', '.join(POLICIES.names())})")
        try:
            build_policy(aug.auto_augment, 224, "bilinear", [0.5, 0.5, 0.5])
        except (AssertionError, ValueError, KeyError, IndexError) as err:
            raise RecipeError(f"{key}.auto_augment: invalid policy string {aug.auto_augment!r}: "
                              f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None

    def random(self, aug):
        return f"augment.auto_augment={aug.auto_augment} is random" if self.active(aug) else None

    def sample_steps(self, aug, size, interpolation, mean):
        if not self.active(aug):
            return []
        return [build_policy(aug.auto_augment, size, aug.interpolation or interpolation, mean)]


@AUGMENT_OPS.register("color_jitter")
class ColorJitter(AugmentOp):
    example = "augment.color_jitter=0.4"
    has_batched = False

    def active(self, aug):
        return aug.color_jitter is not None

    def check(self, aug, key):
        if not self.active(aug):
            return
        jit = jitter_strengths(aug.color_jitter)
        if len(jit) not in (3, 4) or any(v < 0 for v in jit) or (len(jit) == 4 and jit[3] > 0.5):
            raise RecipeError(f"{key}.color_jitter: a strength >= 0 or [brightness, contrast, saturation"
                              f"(, hue <= 0.5)], got {aug.color_jitter}")

    def random(self, aug):
        return "augment.color_jitter is random" if self.active(aug) else None

    def sample_steps(self, aug, size, interpolation, mean):
        return [T.ColorJitter(*jitter_strengths(aug.color_jitter))] if self.active(aug) else []


@AUGMENT_OPS.register("albumentations")
class Albumentations(AugmentOp):
    example = "augment.albumentations=[{name: ToGray}]"
    has_batched = False

    def active(self, aug):
        return bool(aug.albumentations)

    def check(self, aug, key):
        for i, spec in enumerate(aug.albumentations):
            build_albumentation(spec, f"{key}.albumentations[{i}]")

    def random(self, aug):
        return "augment.albumentations steps may be random" if self.active(aug) else None

    def sample_steps(self, aug, size, interpolation, mean):
        return [AlbumentationsSteps(aug.albumentations)] if self.active(aug) else []


@AUGMENT_OPS.register("random_erasing")
class RandomErasing(AugmentOp):
    example = "augment.random_erasing=0.25"

    def active(self, aug):
        return aug.random_erasing > 0

    def random(self, aug):
        return "augment.random_erasing erases at random" if self.active(aug) else None

    def post_op(self, aug):
        if not self.active(aug):
            return None
        return BatchRandomErasing(aug.random_erasing, aug.random_erasing_mode, aug.random_erasing_count)


def ops() -> list[AugmentOp]:
    """Every registered op, in the order they run."""
    return [AUGMENT_OPS.get(name)() for name in AUGMENT_OPS.names()]


def check_augment(aug: "AugmentCfg", key: str) -> None:
    """Validate every op's keys at load time (policy strings, colour jitter, albumentations steps)."""
    for op in ops():
        op.check(aug, key)


def batched_supported(aug: "AugmentCfg") -> bool:
    """True when every active op of ``aug`` has a batched form (the in-memory path)."""
    return all(op.has_batched for op in ops() if op.active(aug))


def batched_only_reason(aug: "AugmentCfg") -> str | None:
    """The first active op that has no per-sample form, as its recipe key (None: every op has one)."""
    return next((f"augment.{name}" for name in AUGMENT_OPS.names()
                 if AUGMENT_OPS.get(name)().batched_only(aug)), None)


def random_reasons(aug: "AugmentCfg") -> list[str]:
    """Why ``aug`` makes a sample's input differ between epochs, one reason per random op."""
    return [r for r in (op.random(aug) for op in ops()) if r]


def sample_steps(aug: "AugmentCfg", size: int, interpolation: str, mean: list[float]) -> list:
    """The per-sample (PIL) training steps, in order."""
    return [step for op in ops() for step in op.sample_steps(aug, size, interpolation, mean)]


def batch_ops(aug: "AugmentCfg") -> list[BatchOp]:
    """The batched forms of the active ops, in order (raises if one has none: see :func:`batched_supported`)."""
    if not batched_supported(aug):
        raise ValueError(f"augment: {aug} has no batched form")
    return [f for f in (op.batch_op(aug) for op in ops()) if f is not None]


def post_ops(aug: "AugmentCfg") -> list[BatchOp]:
    """The ops on the normalised batch (random erasing), in order."""
    return [f for f in (op.post_op(aug) for op in ops()) if f is not None]


# ---------------------------------------------------------------- batched ops

def random_resized_boxes(b: int, h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float],
                         gen: torch.Generator, attempts: int = 10) -> torch.Tensor:
    """[b, 4] boxes (x0, y0, x1, y1) drawn like ``RandomResizedCrop.get_params``, vectorised.

    Up to ``attempts`` tries per image; images with no valid try fall back to the
    central crop at the clamped aspect ratio, as torchvision does.
    """
    area = h * w
    log_r = torch.log(torch.tensor(ratio, dtype=torch.float64))
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(b, attempts, generator=gen, dtype=torch.float64))
    aspect = torch.exp(log_r[0] + (log_r[1] - log_r[0]) * torch.rand(b, attempts, generator=gen, dtype=torch.float64))
    cw = torch.round(torch.sqrt(target * aspect))
    ch = torch.round(torch.sqrt(target / aspect))
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((b,), -1))
    u = torch.rand(b, 2, generator=gen, dtype=torch.float64)
    boxes = torch.empty(b, 4, dtype=torch.float64)
    in_ratio = w / h
    if in_ratio < ratio[0]:
        fw, fh = w, round(w / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(h * ratio[1]), h
    else:
        fw, fh = w, h
    for i in range(b):
        if first[i] >= 0:
            bw, bh = cw[i, first[i]].item(), ch[i, first[i]].item()
            y0 = math.floor(u[i, 0].item() * (h - bh + 1))
            x0 = math.floor(u[i, 1].item() * (w - bw + 1))
        else:
            bw, bh, y0, x0 = fw, fh, (h - fh) // 2, (w - fw) // 2
        boxes[i] = torch.tensor([x0, y0, x0 + bw, y0 + bh], dtype=torch.float64)
    return boxes


def resized_crops(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image of a uint8 batch to its box and resize to ``size`` (bilinear, area-averaged
    when shrinking: roi_align samples ceil(box / size) points per output pixel)."""
    index = torch.arange(len(x), dtype=torch.float64)[:, None]
    rois = torch.cat([index, boxes], 1).to(device=x.device, dtype=torch.float32, non_blocking=True)
    out = roi_align(x.float(), rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


# augment.pad_mode -> torchvision's padding_mode (per-sample) and torch.nn.functional.pad's mode (batched)
PAD_MODES = {"zeros": "constant", "reflect": "reflect"}


def pad_crops(x: torch.Tensor, gen: torch.Generator, pad_px: int, mode: str = "zeros") -> torch.Tensor:
    """Pad each image by ``pad_px`` (zeros, or the image reflected at its border) and crop a random
    window of the original size."""
    # Pad once, view every (2p+1)^2 shifted window of each image (as_strided, no copy), then
    # pick one window per image with one advanced index: no per-sample Python, and 2.5-3x
    # cheaper than row/column gathers at 32 and 160 px.
    b, _, h, w = x.shape
    p = pad_px
    padded = torch.nn.functional.pad(x, (p, p, p, p), mode=PAD_MODES[mode]).contiguous()
    dy = torch.randint(0, 2 * p + 1, (b,), generator=gen).to(x.device, non_blocking=True)
    dx = torch.randint(0, 2 * p + 1, (b,), generator=gen).to(x.device, non_blocking=True)
    sb, sc, sh, sw = padded.stride()
    windows = padded.as_strided((b, x.shape[1], 2 * p + 1, 2 * p + 1, h, w), (sb, sc, sh, sw, sh, sw))
    return windows[torch.arange(b, device=x.device), :, dy, dx]


def flips(x: torch.Tensor, gen: torch.Generator, prob: float) -> torch.Tensor:
    """Flip each image horizontally with probability ``prob``."""
    flip = (torch.rand(len(x), generator=gen) < prob).to(x.device, non_blocking=True)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def image_coins(index: torch.Tensor, seed: int) -> torch.Tensor:
    """A fixed fair coin per image index (bool), from an integer hash of (seed, index): the same in every
    epoch, process and world size, with no state to save."""
    h = (index.to(torch.int64) + (seed * 0x9E3779B9 + 0x632BE59B)) & 0xFFFFFFFF
    for _ in range(2):   # two rounds of a 32-bit xorshift-multiply mix (products stay below 2**58)
        h = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    return ((h ^ (h >> 16)) & 1).bool()


class AlternateFlips:
    """airbench's alternating flip: image ``i`` is mirrored in epoch ``e`` when its coin (drawn once)
    differs from ``e``'s parity. Each epoch flips half the images, and every image is seen both ways in
    any two consecutive epochs (random flips repeat a view with probability 1/2). It needs each image's
    index and the epoch: :class:`trainkit.data.transforms.BatchAugment` passes them (``wants_position``)."""
    wants_position = True

    def __call__(self, x: torch.Tensor, gen: torch.Generator, index: torch.Tensor, epoch: int,
                 seed: int) -> torch.Tensor:
        flip = (image_coins(index, seed) ^ bool(epoch % 2)).to(x.device, non_blocking=True)
        return torch.where(flip[:, None, None, None], x.flip(3), x)


class BatchRandomErasing:
    """timm's RandomErasing (Zhong et al. 2017) on a normalised float batch, drawn from ``gen``.

    Per image with probability ``prob``: ``count`` boxes of area 2%-33% (divided by
    count) and aspect 0.3-3.3, filled with 0 (const: the mean colour), one normal
    colour per box (rand) or normal noise per pixel (pixel).
    """

    def __init__(self, prob: float, mode: str = "pixel", count: int = 1, min_area: float = 0.02,
                 max_area: float = 1 / 3, min_aspect: float = 0.3):
        self.prob, self.mode, self.count = prob, mode, count
        self.min_area, self.max_area = min_area, max_area
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))

    def boxes(self, b: int, h: int, w: int, gen: torch.Generator) -> list[list[tuple[int, int, int, int]]]:
        """Per image, the (top, left, height, width) boxes to erase."""
        out: list[list[tuple[int, int, int, int]]] = []
        erase = torch.rand(b, generator=gen) < self.prob
        for i in range(b):
            picked = []
            if erase[i]:
                for _ in range(self.count):
                    for _attempt in range(10):
                        r = torch.rand(4, generator=gen, dtype=torch.float64).tolist()
                        area = h * w * (self.min_area + (self.max_area - self.min_area) * r[0]) / self.count
                        aspect = math.exp(self.log_aspect[0] + (self.log_aspect[1] - self.log_aspect[0]) * r[1])
                        eh, ew = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
                        if 0 < eh < h and 0 < ew < w:
                            picked.append((math.floor(r[2] * (h - eh + 1)), math.floor(r[3] * (w - ew + 1)), eh, ew))
                            break
            out.append(picked)
        return out

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.clone()
        for i, boxes in enumerate(self.boxes(b, h, w, gen)):
            for top, left, eh, ew in boxes:
                shape = (c, eh, ew) if self.mode == "pixel" else (c, 1, 1)
                fill = torch.zeros(shape) if self.mode == "const" else torch.randn(shape, generator=gen)
                x[i, :, top:top + eh, left:left + ew] = fill.to(x.device, x.dtype)
        return x

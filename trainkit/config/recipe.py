"""Recipes: one typed schema per section, YAML loading with `base:` inheritance,
dotted command-line overrides, a canonical dump and a hash.

What a run trains (model, data, augment, loss, optim, schedule, train) is kept
apart from how it executes (runtime). The loaded recipe is never mutated:
derived values live in :class:`trainkit.train.plan.Plan`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from trainkit.config.paths import project_file
from trainkit.config.registry import (AUGMENT_OPS, COMBINE_RULES, DATASETS, DISTILL_LOSSES, KEY_MAPS, LOSSES,
                                      MODELS, OPTIMIZERS, SCHEDULES)
from trainkit.config.schema import RecipeError, check_kwargs, check_path, from_dict, to_dict

# libyaml's C loader and dumper when PyYAML has them: same results, about 5x faster (every
# start-up, --print and the recipe fuzzer test parse and dump recipes).
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

Interpolation = Literal["nearest", "bilinear", "bicubic"]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass(frozen=True)
class KeyMapCfg:
    """How a foreign weights file's tensor names become the model's (trainkit.models.importers).

    ``rename`` rules (regex, replacement) apply first, in order, to every source name; then
    ``rule`` pairs the tensors: ``as_is`` by name, ``in_order`` by position (every shape checked).
    Source tensors matching a ``drop`` regex are ignored (e.g. an auxiliary head)."""
    rule: str = "as_is"                   # KEY_MAPS (filled by trainkit.models.importers)
    rename: list[list[str]] = field(default_factory=list)   # [[regex, replacement], ...]
    drop: list[str] = field(default_factory=list)           # regexes of source names to leave out

    def check(self, key: str) -> None:
        KEY_MAPS.check(self.rule, f"{key}.rule")
        for i, pair in enumerate(self.rename):
            if len(pair) != 2:
                raise RecipeError(f"{key}.rename[{i}]: expected [regex, replacement], got {pair!r}")
        for i, pattern in enumerate([p for p, _ in self.rename] + list(self.drop)):
            try:
                re.compile(pattern)
            except re.error as err:
                raise RecipeError(f"{key}: invalid regex {pattern!r}: {err}") from None


@dataclass(frozen=True)
class ModelCfg:
    name: str = "resnet20_cifar"          # MODELS: any timm architecture, ours included (trainkit.models)
    pretrained: str | None = None         # zoo:<id> (zoo/), timm:<name>, or a local .pt/.pth/.safetensors file
    pretrained_map: KeyMapCfg | None = None   # a foreign file's key mapping (see `python zoo.py import --help`)
    num_classes: int | None = None        # null: the data set's class count
    in_chans: int | None = None           # null: the data set's natural channels (1 grey, 3 RGB)
    drop_rate: float | None = None        # dropout before the classifier
    drop_path_rate: float | None = None   # stochastic depth, for models that support it
    kwargs: dict = field(default_factory=dict)  # passed to timm.create_model as they are
    # dirac: every 3x3 conv whose output is at least as wide as its input starts as the identity on
    # its first in-channels (airbench's init; the rest keeps timm's init); default: the model's own
    init: Literal["default", "dirac"] = "default"
    bn_momentum: float | None = None      # every BatchNorm's torch momentum (weight of the new batch statistics;
                                          #   airbench's "momentum 0.6" is torch's 0.4); null: the model's own
    bn_eps: float | None = None           # every BatchNorm's eps; null: the model's own
    # a data-initialised whitening stem (speednet_cifar's; resnet*_cifar's with kwargs.whiten_stem: true): its
    # bias trains for this many epochs, then freezes (airbench: 3); null: it trains throughout
    stem_bias_epochs: int | None = None

    def check(self, key: str) -> None:
        MODELS.check(self.name, f"{key}.name")
        if self.bn_momentum is not None and not 0.0 < self.bn_momentum <= 1.0:
            raise RecipeError(f"{key}.bn_momentum: torch's convention, in (0, 1], got {self.bn_momentum}")
        if self.bn_eps is not None and not self.bn_eps > 0:
            raise RecipeError(f"{key}.bn_eps: must be > 0, got {self.bn_eps}")
        if self.stem_bias_epochs is not None and self.stem_bias_epochs < 0:
            raise RecipeError(f"{key}.stem_bias_epochs: must be >= 0 or null, got {self.stem_bias_epochs}")
        if self.pretrained_map is not None and not self.pretrained:
            raise RecipeError(f"{key}.pretrained_map: set only with {key}.pretrained (a weights file)")
        check_path(self.pretrained, f"{key}.pretrained")
        check_kwargs(self.kwargs, f"{key}.kwargs")
        for name, value in (("drop_rate", self.drop_rate), ("drop_path_rate", self.drop_path_rate)):
            if value is not None and not 0.0 <= value < 1.0:
                raise RecipeError(f"{key}.{name}: must be in [0, 1), got {value}")
        if self.in_chans is not None and self.in_chans not in (1, 3):
            raise RecipeError(f"{key}.in_chans: images convert to 1 (grey) or 3 (RGB) channels, got {self.in_chans}")


@dataclass(frozen=True)
class EvalCfg:
    """Eval preprocessing; saved in every checkpoint so evaluation reproduces it."""
    size: int = 32                        # final square side, px
    crop_pct: float = 1.0                 # resize the short side to size / crop_pct, then centre-crop
    interpolation: Interpolation = "bilinear"
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    # test-time augmentation of every evaluation of the model (val during training, the summary, evaluate.py;
    # trainkit.eval.tta): logits averaged over the image and its mirror (flip), and over 1 px reflect-padded
    # shifts (flip+translate: airbench's 6 views, 6x the evaluation cost)
    tta: Literal["none", "flip", "flip+translate"] = "none"

    def check(self, key: str) -> None:
        if self.size < 1:
            raise RecipeError(f"{key}.size: must be >= 1 px, got {self.size}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise RecipeError(f"{key}.crop_pct: must be in (0, 1], got {self.crop_pct}")
        if len(self.mean) != len(self.std) or len(self.mean) not in (1, 3):
            raise RecipeError(f"{key}.mean/std: need 1 or 3 values each, got {self.mean} and {self.std}")
        if any(s <= 0 for s in self.std):
            raise RecipeError(f"{key}.std: must be positive, got {self.std}")


@dataclass(frozen=True)
class ImbalanceCfg:
    """A long-tailed training subset (trainkit.data.imbalance); val and test stay as they are."""
    ratio: float = 100.0                  # images of the largest class / of the smallest
    profile: Literal["exponential", "step"] = "exponential"   # Cao et al. 2019's two profiles
    seed: int = 0                         # which images each class keeps
    # > 0: a balanced val split of this many images per class, drawn from the training images the
    # long-tailed subset left out (when the source has no val split); 0: data.holdout_fraction of
    # the long-tailed subset (val as imbalanced as train)
    val_per_class: int = 0

    def check(self, key: str) -> None:
        if self.ratio < 1:
            raise RecipeError(f"{key}.ratio: the largest over the smallest class, must be >= 1, got {self.ratio}")
        if self.val_per_class < 0:
            raise RecipeError(f"{key}.val_per_class: must be >= 0, got {self.val_per_class}")


@dataclass(frozen=True)
class DataCfg:
    name: str = "imagefolder"             # DATASETS: imagefolder, cifar10, cifar100, mnist, fashion_mnist, ...
    root: str | None = None               # imagefolder: folder with train/ and val/ or test/
    # packed: root is a folder written by prepare.py; webdataset: root is a folder or URL of tar
    # shards written by prepare.py --format webdataset (trainkit/data/streaming.py)
    format: Literal["files", "packed", "webdataset"] = "files"
    download: bool = False                # torchvision sets only; needs internet
    holdout_fraction: float = 0.1         # carved from train when there is no val split; 0: validate on test
    holdout_seed: int = 0
    # true: carve val from train (holdout_fraction of each class, holdout_seed) even when the source has
    # val/, so every choice (best checkpoint, sweep, epochs) is made on train photos and the source's own
    # val/ stays an untouched estimate: it becomes the report split (when there is no test/)
    val_from_train: bool = False
    on_corrupt: Literal["skip", "error"] = "error"   # skip (and count) or fail naming the file
    in_memory: bool | Literal["auto"] = "auto"        # decode once into uint8 tensors (fast path)
    in_memory_max_mb: int = 4096          # "auto" uses the fast path below this decoded size
    imbalance: ImbalanceCfg | None = None # a long-tailed subset of train (CIFAR-10-LT style); null: all of it
    # training order: shuffle (each image once per epoch), or draws with replacement weighted per
    # class, class_balanced (1 / n_c: every class equally often) or square_root (1 / sqrt(n_c))
    sampler: Literal["shuffle", "class_balanced", "square_root"] = "shuffle"
    limit_train: int | None = None        # seeded subset of train (smoke runs, tests)
    train_per_class: int | None = None    # seeded subset of at most this many train photos per class, taken after
                                          #   the hold-out (learning curves: 5, 10, 25 photos per class)
    limit_eval: int | None = None         # seeded subset of val/test
    train_size: int | None = None         # training resolution, px; null: eval.size
    eval: EvalCfg = field(default_factory=EvalCfg)
    # webdataset: the training order puts shards in a random order and shuffles samples within each
    # run of this many shards, so about this many must be local at once (runtime.shard_cache_mb)
    window_shards: int = 8

    def check(self, key: str) -> None:
        check_path(self.root, f"{key}.root")
        DATASETS.check(self.name, f"{key}.name")
        if self.name == "imagefolder" and not self.root:
            raise RecipeError(f"{key}.root: required for data.name=imagefolder (a folder with train/ and val/ "
                              f"or test/)")
        if self.format != "files" and (self.name != "imagefolder" or not self.root):
            raise RecipeError(f"{key}.format: {self.format} reads data.root (written by prepare.py) with "
                              f"data.name=imagefolder; got name={self.name!r}, root={self.root!r}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise RecipeError(f"{key}.holdout_fraction: must be in [0, 1), got {self.holdout_fraction}")
        if self.val_from_train and self.holdout_fraction <= 0.0:
            raise RecipeError(f"{key}.val_from_train: needs {key}.holdout_fraction > 0 (the share of each class "
                              f"held out of train), got {self.holdout_fraction}")
        for name in ("limit_train", "limit_eval", "train_per_class", "train_size", "window_shards"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise RecipeError(f"{key}.{name}: must be >= 1, got {value}")


@dataclass(frozen=True)
class AugmentCfg:
    """Training augmentation, applied in a fixed order (see trainkit.data.augment): crop, hflip,
    auto_augment policy, color jitter, albumentations steps, then on the normalised batch
    random erasing. crop/hflip/random erasing also exist as batched tensor ops (fast path);
    a policy, color jitter or albumentations step moves training to the per-sample path."""
    crop: Literal["none", "pad", "random_resized"] = "none"
    pad_px: int = 4                       # crop: pad -> pad by this much, random crop back
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])       # random_resized
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])    # random_resized
    interpolation: Interpolation | None = None   # random_resized; null: data.eval.interpolation
    hflip: float = 0.0                    # probability
    # timm policy strings (rand-m9-mstd0.5, augmix-m3-w3, original, v0, 3a) or torchvision's
    # trivial_augment_wide, autoaugment_imagenet|cifar10|svhn, augmix
    auto_augment: str | None = None
    color_jitter: float | list[float] | None = None   # brightness/contrast/saturation[/hue] strength
    albumentations: list[dict] = field(default_factory=list)   # [{name: CLAHE, p: 0.5, clip_limit: 2.0}, ...]
    random_erasing: float = 0.0           # probability per image (on the normalised batch)
    random_erasing_mode: Literal["const", "rand", "pixel"] = "pixel"   # timm's fill modes
    random_erasing_count: int = 1         # boxes per erased image
    # random: each image flipped with probability hflip every epoch; alternate: each image flipped on
    # every other epoch, starting flipped or not at random (airbench), so needs hflip: 0.5
    flip: Literal["random", "alternate"] = "random"
    pad_mode: Literal["zeros", "reflect"] = "zeros"   # crop: pad -> what fills the border

    def check(self, key: str) -> None:
        if self.flip == "alternate" and self.hflip != 0.5:
            raise RecipeError(f"{key}.flip: alternate flips every image on every other epoch, half of them each "
                              f"epoch: set {key}.hflip: 0.5 (got {self.hflip})")
        for name in ("hflip", "random_erasing"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise RecipeError(f"{key}.{name}: a probability in [0, 1], got {getattr(self, name)}")
        if self.pad_px < 0 or self.random_erasing_count < 1:
            raise RecipeError(f"{key}.pad_px >= 0 and {key}.random_erasing_count >= 1 are required")
        for name in ("scale", "ratio"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1]:
                raise RecipeError(f"{key}.{name}: expected [low, high] with 0 < low <= high, got {lo_hi}")
        for name in AUGMENT_OPS.names():   # each op validates its own keys (policies, albumentations steps)
            AUGMENT_OPS.get(name)().check(self, key)


@dataclass(frozen=True)
class MixupCfg:
    """Batch-level Mixup/CutMix with timm's semantics; targets become soft and the loss follows."""
    mixup_alpha: float = 0.0              # Beta(alpha, alpha) for mixup; 0: off
    cutmix_alpha: float = 0.0             # Beta(alpha, alpha) for cutmix; 0: off
    cutmix_minmax: list[float] | None = None   # box side fraction [min, max]; replaces cutmix_alpha
    prob: float = 1.0                     # probability of mixing a batch (or element, per mode)
    switch_prob: float = 0.5              # with both on: probability of cutmix instead of mixup
    mode: Literal["batch", "pair", "elem"] = "batch"   # one lambda per batch, per pair, per element
    correct_lam: bool = True              # lambda from the clipped CutMix box area
    off_epoch: int | None = None          # from this epoch (0-based) on, no mixing

    @property
    def active(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0 or self.cutmix_minmax is not None)

    def check(self, key: str) -> None:
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise RecipeError(f"{key}.mixup_alpha and {key}.cutmix_alpha: must be >= 0")
        for name in ("prob", "switch_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise RecipeError(f"{key}.{name}: a probability in [0, 1], got {getattr(self, name)}")
        mm = self.cutmix_minmax
        if mm is not None and (len(mm) != 2 or not 0 < mm[0] <= mm[1] <= 1):
            raise RecipeError(f"{key}.cutmix_minmax: expected [min, max] with 0 < min <= max <= 1, got {mm}")
        if self.off_epoch is not None and self.off_epoch < 0:
            raise RecipeError(f"{key}.off_epoch: must be >= 0 or null, got {self.off_epoch}")


@dataclass(frozen=True)
class EmaCfg:
    """Exponential moving average of the weights (buffers included), evaluated beside them."""
    decay: float | None = None            # per update; null: no EMA
    every_steps: int = 1                  # update every N optimizer steps
    warmup: bool = False                  # timm's ramp: decay_n = min(decay, 1 - (1 + n / gamma) ** -power)
    warmup_gamma: float = 1.0
    warmup_power: float = 2 / 3

    def check(self, key: str) -> None:
        if self.decay is not None and not 0.0 < self.decay < 1.0:
            raise RecipeError(f"{key}.decay: must be in (0, 1) or null, got {self.decay}")
        if self.every_steps < 1 or self.warmup_gamma <= 0 or self.warmup_power <= 0:
            raise RecipeError(f"{key}: every_steps >= 1, warmup_gamma > 0 and warmup_power > 0 are required")


@dataclass(frozen=True)
class ProgressiveCfg:
    """FFCV-style low-to-high resolution ramp: a pure function of the epoch."""
    start_px: int = 160                   # resolution up to start_epoch
    end_px: int = 192                     # resolution from end_epoch on
    start_epoch: int = 0
    end_epoch: int = 10
    step_px: int = 32                     # sizes are rounded down to a multiple of this

    def check(self, key: str) -> None:
        if not 1 <= self.start_px <= self.end_px or self.step_px < 1:
            raise RecipeError(f"{key}: need 1 <= start_px <= end_px and step_px >= 1, got "
                              f"{self.start_px}, {self.end_px}, {self.step_px}")
        if not 0 <= self.start_epoch <= self.end_epoch:
            raise RecipeError(f"{key}: need 0 <= start_epoch <= end_epoch, got {self.start_epoch}, {self.end_epoch}")


@dataclass(frozen=True)
class MultiScaleCfg:
    """Training resolution per batch (each batch one size); eval stays at data.eval.size (FixRes)."""
    sizes: list[int] = field(default_factory=list)    # per-batch random train size, px; empty: off
    progressive: ProgressiveCfg | None = None         # or a ramp over epochs

    def check(self, key: str) -> None:
        if any(s < 1 for s in self.sizes):
            raise RecipeError(f"{key}.sizes: sizes must be >= 1 px, got {self.sizes}")
        if self.sizes and self.progressive is not None:
            raise RecipeError(f"{key}: choose sizes (random per batch) or progressive (per epoch), not both")


@dataclass(frozen=True)
class LossCfg:
    """The training loss (trainkit.train.losses). The imbalance keys read the class counts of the
    training split (after data.imbalance and the val hold-out), never of val or test."""
    name: str = "ce"                      # LOSSES: ce, bce, focal, balanced_softmax, ldam
    label_smoothing: float = 0.0
    # ce | focal | balanced_softmax | ldam: per-class weights from the training counts n_c, scaled to mean 1:
    # inverse 1/n_c, inverse_sqrt 1/sqrt(n_c), effective_number (1 - beta) / (1 - beta ** n_c) (Cui et al. 2019)
    class_weights: Literal["none", "inverse", "inverse_sqrt", "effective_number"] = "none"
    effective_beta: float = 0.9999        # class_weights=effective_number
    reweight_from_epoch: int | None = None   # deferred re-weighting (DRW, Cao et al. 2019): class_weights apply
                                             # from this epoch on (0-based), plain before; null: from the start
    focal_gamma: float = 2.0              # focal: the (1 - p) ** gamma modulating factor (Lin et al. 2017)
    tau: float = 1.0                      # balanced_softmax: logits + tau * log(class prior) in training
                                          # (logit adjustment, Menon et al. 2021); tau 1 is balanced softmax
    ldam_max_margin: float = 0.5          # ldam: margin of the rarest class; margins go as n_c ** -1/4
    ldam_scale: float = 30.0              # ldam: the logits (cosines: model.kwargs.cosine_classifier) times s

    # key -> the loss names that read it; set elsewhere it is an error, not silently ignored
    USED_BY = {"focal_gamma": ("focal",), "tau": ("balanced_softmax",), "ldam_max_margin": ("ldam",),
               "ldam_scale": ("ldam",), "class_weights": ("ce", "focal", "balanced_softmax", "ldam")}

    def check(self, key: str) -> None:
        LOSSES.check(self.name, f"{key}.name")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise RecipeError(f"{key}.label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        defaults = LossCfg.__dataclass_fields__
        for name, users in self.USED_BY.items():
            if getattr(self, name) != defaults[name].default and self.name not in users:
                raise RecipeError(f"{key}.{name}: used only by loss.name={' | '.join(users)}, not {self.name}")
        if not 0.0 < self.effective_beta < 1.0:
            raise RecipeError(f"{key}.effective_beta: must be in (0, 1), got {self.effective_beta}")
        if self.reweight_from_epoch is not None and (self.class_weights == "none" or self.reweight_from_epoch < 1):
            raise RecipeError(f"{key}.reweight_from_epoch: defers loss.class_weights, so set class_weights and an "
                              f"epoch >= 1; got {self.reweight_from_epoch} with class_weights={self.class_weights}")
        if self.focal_gamma < 0 or self.tau < 0 or self.ldam_max_margin <= 0 or self.ldam_scale <= 0:
            raise RecipeError(f"{key}: focal_gamma >= 0, tau >= 0, ldam_max_margin > 0 and ldam_scale > 0 are required")


@dataclass(frozen=True)
class LookaheadCfg:
    """Lookahead (Zhang et al. 2019) as airbench uses it: every ``k`` optimizer steps the slow copy of the
    weights (BatchNorm statistics included) moves ``alpha`` of the way to the fast weights and the fast
    weights restart from it; the run ends on the slow weights. ``alpha_ramp_power`` > 0 ramps alpha from 1
    (plain training) at step 0 down to ``alpha`` at the last step as ``1 - (1 - alpha) * progress ** power``
    (airbench: k 5, alpha 0.226, power 3); 0: alpha throughout (the paper's form, timm's Lookahead)."""
    k: int = 5                            # optimizer steps between synchronisations
    alpha: float = 0.5                    # the slow weights' step towards the fast ones, (0, 1]
    alpha_ramp_power: float = 0.0

    def check(self, key: str) -> None:
        if self.k < 1:
            raise RecipeError(f"{key}.k: must be >= 1 optimizer steps, got {self.k}")
        if not 0.0 < self.alpha <= 1.0:
            raise RecipeError(f"{key}.alpha: must be in (0, 1], got {self.alpha}")
        if self.alpha_ramp_power < 0:
            raise RecipeError(f"{key}.alpha_ramp_power: must be >= 0, got {self.alpha_ramp_power}")


@dataclass(frozen=True)
class OptimCfg:
    name: str = "sgd"                     # OPTIMIZERS: sgd, adamw, or any optimizer timm's factory knows
    lr: float = 0.1                       # per lr_ref_batch images; scaled linearly to global_batch
    lr_ref_batch: int = 256
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    no_decay_norm_bias: bool = True       # no weight decay on norm and bias parameters
    betas: list[float] | None = None
    eps: float | None = None
    clip_grad_norm: float | None = None
    kwargs: dict = field(default_factory=dict)
    # BatchNorm parameters in their own group (airbench: biases at 64x the lr, gamma frozen at 1)
    bn_lr_mult: float = 1.0               # their lr = lr x this
    bn_weight_decay: float | None = None  # their weight decay; null: as no_decay_norm_bias says
    bn_freeze_weight: bool = False        # gamma stays 1 (not trained); the bias still trains
    # true: weight_decay is the shrink per step per lr_ref_batch images (scaled with the batch like lr) at the
    # schedule's peak, whatever the group's lr (airbench's decoupled form: torch's weight_decay = weight_decay /
    # (lr x group multiplier)), so changing lr or bn_lr_mult leaves the decay alone; false: torch's coupled
    # form (shrink = lr x weight_decay)
    wd_independent_of_lr: bool = False
    lookahead: LookaheadCfg | None = None   # slow weights every k steps (trainkit.train.lookahead); null: off

    def check(self, key: str) -> None:
        OPTIMIZERS.check(self.name.lower(), f"{key}.name")
        check_kwargs(self.kwargs, f"{key}.kwargs")
        if self.bn_lr_mult <= 0:
            raise RecipeError(f"{key}.bn_lr_mult: must be positive, got {self.bn_lr_mult}")
        if self.bn_weight_decay is not None and self.bn_weight_decay < 0:
            raise RecipeError(f"{key}.bn_weight_decay: must be >= 0 or null, got {self.bn_weight_decay}")
        if self.lr <= 0 or self.lr_ref_batch < 1:
            raise RecipeError(f"{key}.lr and {key}.lr_ref_batch: must be positive, got {self.lr} and "
                              f"{self.lr_ref_batch}")
        if self.clip_grad_norm is not None and self.clip_grad_norm <= 0:
            raise RecipeError(f"{key}.clip_grad_norm: must be positive or null, got {self.clip_grad_norm}")


@dataclass(frozen=True)
class ScheduleCfg:
    # SCHEDULES: cosine, linear, step, multistep, onecycle, constant, triangular (linear from
    # warmup_start_factor up to 1 at onecycle_pct_start of the run, then linear down to min_lr_factor)
    name: str = "cosine"
    epochs: int | float = 10              # a fraction runs part of the last epoch (airbench: 9.9)
    warmup_epochs: float = 0.0            # linear warmup from warmup_start_factor * lr
    warmup_start_factor: float = 0.01
    min_lr_factor: float = 0.0            # cosine/linear floor, as a fraction of lr
    step_epochs: float = 30.0             # step: decay by gamma every step_epochs
    milestones: list[float] = field(default_factory=list)  # multistep: epochs at which to decay
    gamma: float = 0.1
    onecycle_pct_start: float = 0.25      # onecycle: fraction of training spent rising
    # A wall-clock budget for the whole run (start-up, decode, training, evaluations), minutes: the
    # number of epochs that fit is decided once at start-up (trainkit.train.budget) and the schedule
    # is laid out over them; ``epochs`` is then the cap. null: exactly ``epochs`` epochs.
    budget_minutes: float | None = None

    def check(self, key: str) -> None:
        SCHEDULES.check(self.name, f"{key}.name")
        if self.budget_minutes is not None and not 0 < self.budget_minutes < 1e6:
            raise RecipeError(f"{key}.budget_minutes: must be > 0 minutes (or null), got {self.budget_minutes}")
        if self.epochs < 1:
            raise RecipeError(f"{key}.epochs: must be >= 1, got {self.epochs}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise RecipeError(f"{key}.warmup_epochs: must be in [0, epochs={self.epochs}), got {self.warmup_epochs}")
        if self.name in ("onecycle", "triangular") and self.warmup_epochs:
            raise RecipeError(f"{key}.warmup_epochs: {self.name} warms up by itself (onecycle_pct_start); "
                              f"set warmup_epochs: 0")
        if self.budget_minutes is not None and self.epochs != int(self.epochs):
            raise RecipeError(f"{key}.epochs: a budget (budget_minutes) decides whole epochs; the cap must be a "
                              f"whole number, got {self.epochs}")
        if self.budget_minutes is not None and self.name in ("step", "multistep"):
            # the budget decides the epoch count at start-up; these decay at absolute epochs, which a
            # shorter run never reaches (its lr would never decay)
            raise RecipeError(f"{key}.budget_minutes: {self.name} decays at fixed epochs that a budgeted run may "
                              f"never reach; use cosine, linear or onecycle, which stretch over the decided epochs")
        if self.name == "multistep" and not self.milestones:
            raise RecipeError(f"{key}.milestones: multistep needs at least one milestone epoch")
        if list(self.milestones) != sorted(self.milestones):
            raise RecipeError(f"{key}.milestones: must be increasing, got {self.milestones}")


@dataclass(frozen=True)
class TrainCfg:
    global_batch: int = 256               # images per optimizer step, over all processes
    # amp: fp16 + GradScaler on CUDA; on a CPU the faster of bf16 and fp32, by a start-up probe
    # (trainkit.train.numerics); the hash keeps "amp", plan.json and summary.json the decision.
    precision: Literal["fp32", "bf16", "fp16", "amp"] = "fp32"
    seed: int = 0
    deterministic: bool = False           # bit-reproducible runs (slower kernels on CUDA)
    eval_every_epochs: int = 1
    # on the val split; ema_*: needs ema.decay; balanced_accuracy / macro_f1 (%) for imbalanced classes
    best_metric: Literal["top1", "loss", "ema_top1", "ema_loss", "balanced_accuracy", "macro_f1"] = "top1"
    nonfinite: Literal["skip", "stop"] = "stop"   # a NaN/inf loss: skip that step (counted) or stop the run

    def check(self, key: str) -> None:
        if self.global_batch < 1 or self.eval_every_epochs < 1:
            raise RecipeError(f"{key}.global_batch and {key}.eval_every_epochs: must be >= 1")


@dataclass(frozen=True)
class FinetuneCfg:
    """Starting from model.pretrained: what trains when, and how fast each part learns (trainkit.train.finetune)."""
    reset_head: bool = False              # fresh classifier even at the same class count (other classes)
    freeze: Literal["none", "backbone", "stages"] = "none"   # backbone: all but the classifier
    freeze_stages: int = 0                # freeze=stages: the stem and the first N stages (timm's coarse groups)
    unfreeze_after_epochs: int | None = None  # frozen parts train from this epoch on; null: frozen to the end
    layer_decay: float | None = None      # lr of layer i of L (head = L): lr * layer_decay ** (L - i)
    head_lr_mult: float = 1.0             # the classifier's lr multiplier, on top of layer decay
    freeze_bn_stats: bool = False         # every BatchNorm normalises with (and keeps) its running statistics
    linear_probe: bool = False            # only the classifier trains; backbone and its BN statistics frozen
    cache_features: bool = False          # frozen backbone: its features computed once per image, the head
                                          #   trains on them (trainkit.train.feature_cache); no random augmentation

    def check(self, key: str) -> None:
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise RecipeError(f"{key}.layer_decay: must be in (0, 1] or null, got {self.layer_decay}")
        if self.head_lr_mult <= 0:
            raise RecipeError(f"{key}.head_lr_mult: must be positive, got {self.head_lr_mult}")
        if (self.freeze == "stages") != (self.freeze_stages > 0):
            raise RecipeError(f"{key}.freeze_stages: set it (>= 1) exactly when freeze=stages, "
                              f"got freeze={self.freeze} with freeze_stages={self.freeze_stages}")
        if self.unfreeze_after_epochs is not None and (self.unfreeze_after_epochs < 1 or self.freeze == "none"):
            raise RecipeError(f"{key}.unfreeze_after_epochs: needs freeze=backbone or stages and a value >= 1, "
                              f"got {self.unfreeze_after_epochs} with freeze={self.freeze}")
        if self.linear_probe and (self.freeze != "none" or self.unfreeze_after_epochs is not None):
            raise RecipeError(f"{key}.linear_probe: implies freeze=backbone for good; leave freeze and "
                              f"unfreeze_after_epochs unset")
        if self.cache_features and not (self.linear_probe or (self.freeze == "backbone"
                                                              and self.unfreeze_after_epochs is None)):
            raise RecipeError(f"{key}.cache_features: needs a backbone frozen for the whole run (linear_probe: true, "
                              f"or freeze: backbone without unfreeze_after_epochs), got freeze={self.freeze}")

    def check_inputs(self, recipe: "Recipe") -> None:
        """Cached features are valid only when every epoch feeds each image the same input and the
        frozen backbone computes the same function (no stochastic depth)."""
        if not self.cache_features:
            return
        reasons = input_randomness(recipe)
        if recipe.model.drop_path_rate:
            reasons.append(f"model.drop_path_rate={recipe.model.drop_path_rate} drops backbone blocks at random")
        if reasons:
            raise RecipeError(f"finetune.cache_features: refused because {reasons[0]}: the backbone would see "
                              f"another input each epoch (turn the random augmentation off, or cache_features=false)")
        if recipe.data.eval.tta != "none":   # val in fit runs the head on cached feature vectors: no views to flip
            raise RecipeError(f"finetune.cache_features: refused with data.eval.tta={recipe.data.eval.tta}: val "
                              "would flip or shift feature vectors, not images (data.eval.tta=none, or "
                              "cache_features=false)")


@dataclass(frozen=True)
class DistillCfg:
    """Knowledge distillation (trainkit.train.distill): the task loss mixed with a loss against a frozen teacher."""
    # zoo:<id>, timm:<name>, run folder/checkpoint, weights file (trainkit.models.hub); a list: an ensemble
    teacher: list[str] | str | None = None
    teacher_arch: str | None = None       # architecture of a plain weights file (checkpoints and zoo cards name theirs)
    combine: str = "mean_logits"          # COMBINE_RULES, for a list of teachers
    weights: list[float] | None = None    # combine=weighted: one per teacher
    kind: str = "soft"                    # DISTILL_LOSSES: soft (KL at temperature tau), hard (CE on the argmax)
    alpha: float = 0.5                    # weight of the distillation term; the task loss gets 1 - alpha
    tau: float = 1.0                      # soft: temperature; the KL term is scaled by tau**2
    class_map: str | dict | None = None   # other teacher classes: by_name, or {data class: teacher class}
    cache_logits: bool = False            # keep teacher logits per input image; only without random augmentation

    def check(self, key: str) -> None:
        teachers = [self.teacher] if isinstance(self.teacher, str) else list(self.teacher or [])
        for i, teacher in enumerate(teachers):
            check_path(teacher, f"{key}.teacher" + (f"[{i}]" if isinstance(self.teacher, list) else ""))
        if self.teacher is None:
            others = [n for n, v, d in (("teacher_arch", self.teacher_arch, None), ("class_map", self.class_map, None),
                                        ("cache_logits", self.cache_logits, False), ("weights", self.weights, None))
                      if v != d]
            if others:
                raise RecipeError(f"{key}.{others[0]}: set only with {key}.teacher")
            return
        COMBINE_RULES.check(self.combine, f"{key}.combine")
        DISTILL_LOSSES.check(self.kind, f"{key}.kind")
        if not teachers or not all(teachers):
            raise RecipeError(f"{key}.teacher: a model spec or a non-empty list of them, got {self.teacher!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise RecipeError(f"{key}.alpha: must be in [0, 1], got {self.alpha}")
        if self.tau <= 0 or (self.kind == "hard" and self.tau != 1.0):
            raise RecipeError(f"{key}.tau: a positive temperature, used only by kind=soft; got {self.tau} "
                              f"with kind={self.kind}")
        check_combine_weights(self.combine, self.weights, len(teachers), f"{key}.weights")
        if isinstance(self.class_map, str) and self.class_map != "by_name":
            raise RecipeError(f"{key}.class_map: 'by_name' or a mapping {{data class: teacher class}}, "
                              f"got {self.class_map!r}")
        if self.teacher_arch is not None:
            MODELS.check(self.teacher_arch, f"{key}.teacher_arch")

    def check_inputs(self, recipe: "Recipe") -> None:
        """Cached teacher logits are valid only when every epoch feeds each sample the same input."""
        if not self.cache_logits:
            return
        reasons = input_randomness(recipe)
        if reasons:
            raise RecipeError(f"distill.cache_logits: refused because {reasons[0]}: the teacher would see another "
                              f"input each epoch (turn the random augmentation off, or cache_logits=false)")


def check_combine_weights(rule: str, weights: list[float] | None, members: int, key: str) -> None:
    """Weights are given exactly for the ``weighted`` rule: one non-negative weight per member, not all zero."""
    if (rule == "weighted") != (weights is not None):
        raise RecipeError(f"{key}: give them exactly when combine=weighted (got combine={rule})")
    if weights is not None and (len(weights) != members or min(weights) < 0 or sum(weights) <= 0):
        raise RecipeError(f"{key}: one non-negative weight per member ({members}), got {weights}")


def input_randomness(recipe: "Recipe") -> list[str]:
    """Why a training input differs between epochs: each random augmentation op (they declare it), then
    the batch-level techniques. distill.cache_logits and finetune.cache_features refuse any."""
    reasons = [AUGMENT_OPS.get(name)().random(recipe.augment) for name in AUGMENT_OPS.names()]
    reasons.append("mixup/cutmix mixes random pairs" if recipe.mixup.active else None)
    multiscale = recipe.multiscale.sizes or recipe.multiscale.progressive
    reasons.append("multiscale changes the input size" if multiscale else None)
    return [r for r in reasons if r]


MAX_THREADS = 1024


@dataclass(frozen=True)
class RuntimeCfg:
    """How the run executes. drop_last, per_device_batch and sync_batchnorm do change what is
    trained (steps per epoch, the BatchNorm batch), so the recipe hash covers them."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    per_device_batch: int | None = None   # null: global_batch / world size (no accumulation)
    eval_batch: int | None = None         # null: 2 x per_device_batch
    workers: int | Literal["auto"] = "auto"   # DataLoader worker processes (per-sample path); auto: CPUs - 1, at most 8
    pin_memory: bool | Literal["auto"] = "auto"   # auto: on with CUDA
    prefetch_factor: int = 2
    persistent_workers: bool = True
    drop_last: bool = True                # drop the last incomplete training batch
    channels_last: bool | Literal["auto"] = False   # auto: decided by the start-up probe (see train.precision)
    compile: bool = False                 # torch.compile the model
    sync_batchnorm: bool = False          # DDP: BatchNorm statistics over all processes
    cudnn_benchmark: bool = True          # CUDA only; off when train.deterministic
    threads: int | None = None            # torch intra-op threads; null: torch's default
    # keep freed host memory for the next step instead of unmapping it (glibc; trainkit.runtime.host_memory):
    # auto: on for CPU runs, where a step's activations otherwise fault in afresh (~10-20% of a CPU step)
    reuse_freed_memory: bool | Literal["auto"] = "auto"
    checkpoint_every_steps: int | None = None  # also save last.pt every N optimizer steps (mid-epoch resume)
    keep_epoch_checkpoints: bool = False  # also keep every epoch's checkpoint as epoch_NNN.pt (hard links)
    log_every_steps: int = 50             # the loss is read (a host sync) only this often
    progress: bool | Literal["auto"] = "auto"  # auto: a bar only on a terminal
    out_dir: str = "runs"
    run_name: str | None = None           # null: <recipe name>-<timestamp>
    # data.format=webdataset from a URL: downloaded shards live here, least recently used deleted
    # beyond shard_cache_mb (where bytes live, never which samples a step sees: not in the hash)
    shard_cache_dir: str | None = None    # null: ~/.cache/trainkit/shards/<hash of the URL>
    shard_cache_mb: int = 8192

    def check(self, key: str) -> None:
        for name in ("per_device_batch", "eval_batch", "threads", "checkpoint_every_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise RecipeError(f"{key}.{name}: must be >= 1 or null, got {value}")
        if (self.workers != "auto" and self.workers < 0) or self.prefetch_factor < 1 or self.log_every_steps < 1:
            raise RecipeError(f"{key}: workers >= 0, prefetch_factor >= 1 and log_every_steps >= 1 are required")
        if self.shard_cache_mb < 1:
            raise RecipeError(f"{key}.shard_cache_mb: must be >= 1, got {self.shard_cache_mb}")
        if self.threads is not None and self.threads > MAX_THREADS:   # torch takes a C int; 10^5 threads crash
            raise RecipeError(f"{key}.threads: at most {MAX_THREADS}, got {self.threads}")
        check_path(self.out_dir, f"{key}.out_dir")
        check_path(self.run_name, f"{key}.run_name")
        check_path(self.shard_cache_dir, f"{key}.shard_cache_dir")


@dataclass(frozen=True)
class Recipe:
    description: str = ""
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    mixup: MixupCfg = field(default_factory=MixupCfg)
    multiscale: MultiScaleCfg = field(default_factory=MultiScaleCfg)
    loss: LossCfg = field(default_factory=LossCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    schedule: ScheduleCfg = field(default_factory=ScheduleCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    finetune: FinetuneCfg = field(default_factory=FinetuneCfg)
    distill: DistillCfg = field(default_factory=DistillCfg)
    ema: EmaCfg = field(default_factory=EmaCfg)
    runtime: RuntimeCfg = field(default_factory=RuntimeCfg)

    def check(self, key: str) -> None:
        size = self.data.train_size or self.data.eval.size
        if self.augment.crop == "pad" and self.augment.pad_px >= size:
            raise RecipeError(f"augment.pad_px: {self.augment.pad_px} px must be smaller than the image ({size} px)")
        if self.model.in_chans is not None and len(self.data.eval.mean) not in (1, self.model.in_chans):
            raise RecipeError(f"data.eval.mean: {len(self.data.eval.mean)} values for "
                              f"model.in_chans={self.model.in_chans}")
        self.distill.check_inputs(self)
        self.finetune.check_inputs(self)
        if self.loss.name == "ldam" and self.mixup.active:
            raise RecipeError("loss.name=ldam: refused with mixup/cutmix, because LDAM's margin belongs to one "
                              "true class and mixed targets have two (use ce, focal or balanced_softmax)")
        if self.train.best_metric.startswith("ema_") and self.ema.decay is None:
            raise RecipeError(f"train.best_metric: {self.train.best_metric} needs an EMA; set ema.decay")


# ---------------------------------------------------------------- loading

def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"recipe file not found: {path}") from None
    except OSError as err:   # a directory, no permission, a name too long
        raise RecipeError(f"cannot read recipe file {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise RecipeError(f"{path}: not UTF-8 text (byte {err.start}); a recipe is a YAML file") from None
    try:
        data = yaml.load(text, Loader=YAML_LOADER)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" line {where.line + 1}" if where else ""
        raise RecipeError(f"{path}{line}: invalid YAML: {getattr(err, 'problem', err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    return data


def deep_merge(base: dict, top: dict) -> dict:
    """Mappings merge key by key; anything else (lists included) in ``top`` replaces."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_tree(path: Path, _stack: tuple[Path, ...] = ()) -> dict:
    """Read a recipe file and its `base:` files (relative to it), merged in order."""
    path = path.resolve()
    if path in _stack:
        chain = " -> ".join(p.name for p in (*_stack, path))
        raise RecipeError(f"base cycle: {chain}")
    data = _read_yaml(path)
    bases = data.pop("base", None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError(f"{path}: base: must be a path or a list of paths, got {bases!r}")
    merged: dict = {}
    for rel in bases:
        base_path = path.parent / rel
        try:
            found = base_path.is_file()
        except OSError as err:   # e.g. a 300-character name: File name too long
            raise RecipeError(f"base file {rel[:80]!r}{'...' if len(rel) > 80 else ''} (named in {path}): "
                              f"{err.strerror}") from None
        if not found:
            raise RecipeError(f"base file not found: {base_path} (named in {path})")
        merged = deep_merge(merged, load_tree(base_path, (*_stack, path)))
    return deep_merge(merged, data)


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` strings; values are parsed as YAML scalars (0.05, true, null, [1, 2])."""
    out = copy.deepcopy(tree)
    for item in overrides:
        dotted, sep, raw = item.partition("=")
        if not sep or not dotted or any(not part for part in dotted.split(".")):
            raise RecipeError(f"override {item!r}: expected key.path=value, e.g. optim.lr=0.05")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise RecipeError(f"override {item!r}: value is not valid YAML") from None
        node = out
        *parents, leaf = dotted.split(".")
        for i, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RecipeError(f"override {item!r}: {'.'.join(parents[: i + 1])} is not a section")
            node = child
        node[leaf] = value
    return out


def parse_recipe(tree: dict) -> Recipe:
    return from_dict(Recipe, tree, "")


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Load, merge, override and validate a recipe file (schedule points included: :func:`check_schedule_points`).
    Raises RecipeError on any problem.

    A relative path missing from the cwd is looked up below the project root (trainkit.config.paths), so
    ``recipes/quickstart.yaml`` names the shipped recipe from any working directory."""
    tree = load_tree(project_file(path))
    if not tree:
        raise RecipeError(f"{path}: empty recipe (no sections); start from one in recipes/, e.g. quickstart.yaml")
    recipe = parse_recipe(apply_overrides(tree, list(overrides)))
    check_schedule_points(recipe)
    return recipe


def schedule_points(recipe: Recipe) -> dict[str, float]:
    """Every epoch-valued key that is set, as ``{key: epoch}``: the 0-based epoch from which its change applies
    (the lr decays, re-weighting starts, mixing stops, the frozen part trains, the resolution ramp starts or
    reaches its end). warmup_epochs is checked by ScheduleCfg (it must be < epochs as well)."""
    sch, ms = recipe.schedule, recipe.multiscale
    points: dict[str, float] = {}
    if sch.name == "multistep" and sch.milestones:
        points["schedule.milestones"] = max(sch.milestones)
    if sch.name == "step":
        points["schedule.step_epochs"] = sch.step_epochs
    if recipe.loss.reweight_from_epoch is not None:
        points["loss.reweight_from_epoch"] = recipe.loss.reweight_from_epoch
    if recipe.mixup.active and recipe.mixup.off_epoch is not None:
        points["mixup.off_epoch"] = recipe.mixup.off_epoch
    if recipe.finetune.unfreeze_after_epochs is not None:
        points["finetune.unfreeze_after_epochs"] = recipe.finetune.unfreeze_after_epochs
    if ms.progressive is not None:
        points["multiscale.progressive.start_epoch"] = ms.progressive.start_epoch
        points["multiscale.progressive.end_epoch"] = ms.progressive.end_epoch
    if recipe.model.stem_bias_epochs is not None:   # the whitening stem's bias freezes from this epoch on
        points["model.stem_bias_epochs"] = recipe.model.stem_bias_epochs
    assert set(points) <= set(EPOCH_POINT_KEYS), "a new epoch point belongs in EPOCH_POINT_KEYS"
    return points


# Every key schedule_points may return (schedule.warmup_epochs aside, checked by ScheduleCfg): the one list,
# also what a sweep treats as scaled with a shortened schedule (trainkit.sweep.report.search_shortcuts).
EPOCH_POINT_KEYS = ("schedule.milestones", "schedule.step_epochs", "loss.reweight_from_epoch", "mixup.off_epoch",
                    "finetune.unfreeze_after_epochs", "multiscale.progressive.start_epoch",
                    "multiscale.progressive.end_epoch", "model.stem_bias_epochs")


def check_schedule_points(recipe: Recipe) -> None:
    """The one rule for epoch-valued keys: each is an absolute, 0-based epoch and must be < schedule.epochs;
    a point at or past the end would never take effect, so it is one error naming every such key.

    With schedule.budget_minutes, schedule.epochs is the cap checked here, and the budget never decides fewer
    epochs than reach every point (trainkit.train.budget.least_epochs), so no point a run was checked with
    goes dead when the budget shortens it."""
    epochs = recipe.schedule.epochs
    dead = {key: value for key, value in schedule_points(recipe).items() if value >= epochs}
    if not dead:
        return
    shown = ", ".join(f"{key}={_value_text(recipe, key)}" for key in dead)
    raise RecipeError(f"{shown}: past the end of the run (schedule.epochs={epochs}); an epoch point is the 0-based "
                      f"epoch its change starts at, so it must be < {epochs} or it never happens: lower "
                      f"{'it' if len(dead) == 1 else 'them'} (scaled to the shorter schedule) or raise schedule.epochs")


def _value_text(recipe: Recipe, key: str) -> str:
    node = recipe
    for part in key.split("."):
        node = getattr(node, part)
    return json.dumps(node)


def recipe_dict(recipe: Recipe) -> dict:
    return to_dict(recipe)


def recipe_yaml(recipe: Recipe) -> str:
    return yaml.dump(recipe_dict(recipe), Dumper=YAML_DUMPER, sort_keys=False, default_flow_style=False)


# runtime keys that change what is trained: the steps per epoch (so the schedule), the BatchNorm
# batch, and BatchNorm statistics over all processes. The hash covers them (see recipe_hash).
TRAINED_RUNTIME_KEYS = ("drop_last", "per_device_batch", "sync_batchnorm")


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _NO_DEFAULT


_NO_DEFAULT = object()   # a required field: always differs from its "default"


def changed_values(obj: Any, reference: Any = None) -> dict:
    """The fields of dataclass ``obj`` whose values differ from ``reference`` (an object of the same schema) or,
    without one, from the schema's declared defaults; nested sections recurse, so the result holds only what was
    changed. A section set where its default is null (``distill.teacher``-like optional sections) appears even
    when all its own keys are defaults, as ``{}``: being there is the change."""
    out: dict[str, Any] = {}
    ref_fields = {f.name for f in dataclasses.fields(reference)} if dataclasses.is_dataclass(reference) else set()
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        ref = getattr(reference, f.name) if f.name in ref_fields else _field_default(f)
        if dataclasses.is_dataclass(value):
            same_kind = dataclasses.is_dataclass(ref) and isinstance(value, type(ref))
            sub = changed_values(value, ref if same_kind else None)
            if sub or not same_kind:
                out[f.name] = sub
        elif isinstance(value, (list, tuple)) and any(dataclasses.is_dataclass(v) for v in value):
            if ref is _NO_DEFAULT or to_dict(list(value)) != to_dict(list(ref or ())):
                out[f.name] = [changed_values(v) if dataclasses.is_dataclass(v) else v for v in value]
        elif ref is _NO_DEFAULT or value != ref:
            out[f.name] = to_dict(value)
    return out


def hashed_values(recipe: Recipe) -> dict:
    """What the recipe hash covers: the values that differ from the schema defaults (:func:`changed_values`), in
    every section but ``runtime`` and ``description`` (how a run executes, and prose), plus the
    ``TRAINED_RUNTIME_KEYS`` that were changed."""
    changed = changed_values(recipe)
    changed.pop("description", None)
    runtime = {k: v for k, v in changed.pop("runtime", {}).items() if k in TRAINED_RUNTIME_KEYS}
    if runtime:
        changed["runtime"] = runtime
    return changed


def recipe_hash(recipe: Recipe) -> str:
    """Short hash (12 hex digits) of what the recipe trains: :func:`hashed_values`, the values that differ from
    the schema defaults. A key added to the schema with a default therefore changes no existing hash (a
    recipe that leaves it alone trains what it trained before); changing a default does change the hash of
    every recipe relying on it, and is then a new recipe on purpose (tests/recipe_hashes.json says so)."""
    blob = json.dumps(hashed_values(recipe), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


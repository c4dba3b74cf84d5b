"""Frozen-backbone training on cached features (``finetune.cache_features``).

With the backbone frozen (a linear probe, or ``freeze: backbone`` for good) and inputs that
are the same every epoch, the backbone's output for an image never changes: it is computed
once per image (train and val), and every epoch trains only the classifier on those
features. Same batches, same order, same optimizer, same head weights as training through
the frozen backbone, at the cost of one forward pass per image instead of one per epoch.

Random augmentation makes each epoch's input differ, so it is refused (as the distillation
logit cache refuses it; see :data:`trainkit.config.recipe.INPUT_RANDOMNESS`): this cache
holds exactly one view per image, the deterministic one.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator

import torch
from torch import nn

from trainkit.config.recipe import AugmentCfg, DataCfg
from trainkit.data.loaders import EpochBatches, EpochLoader, LoaderSettings, make_loader
from trainkit.data.sources import Split
from trainkit.eval.loop import forward_batches
from trainkit.runtime.progress import progress

log = logging.getLogger("trainkit")


class HeadOnly(nn.Module):
    """The model's classifier (after its dropout) applied to cached pre-logit features."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model   # kept whole: checkpoints, EMA and the optimizer all see the same parameters

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        p = float(getattr(self.model, "drop_rate", 0.0) or 0.0)
        if p > 0:   # timm's forward_head applies its dropout between pooling and the classifier
            features = nn.functional.dropout(features, p=p, training=self.training)
        return self.model.get_classifier()(features)


def backbone_features(model: nn.Module, loader, *, device: torch.device, precision: str) -> tuple[torch.Tensor, ...]:
    """Pre-logit features (pooled, before dropout and classifier) and targets, in the loader's order.
    The model is in eval mode for the pass (a frozen backbone's BatchNorm uses its running statistics either way)."""
    feats, targets = [], []
    bar = progress(total=len(loader), desc="backbone features (once)", unit="batch")   # rate and ETA on a terminal
    try:
        for (_, y), f in forward_batches(lambda x: model.forward_head(model.forward_features(x), pre_logits=True),
                                         loader, device=device, precision=precision, models=[model]):
            feats.append(f.float())
            targets.append(y)
            bar.update(1)
    finally:
        bar.close()
    # torch.cat outside inference mode: ordinary tensors, which the head's training may use in autograd
    return torch.cat(feats), torch.cat(targets)


class FeatureLoader(EpochLoader):
    """Batches of cached features in the order the image loader gives them (the same sampler)."""

    def __init__(self, features: torch.Tensor, targets: torch.Tensor, batches: EpochBatches):
        self.features, self.targets, self.batches = features, targets, batches
        self.skipped, self.post, self.epoch = 0, None, 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.batches:
            idx = torch.tensor([item[0] for item in batch], device=self.features.device)
            yield self.features.index_select(0, idx), self.targets.index_select(0, idx)


def cache_features(model: nn.Module, splits: dict[str, Split], *, data: DataCfg, chans: int,
                   train_settings: LoaderSettings, eval_settings: LoaderSettings, device: torch.device,
                   precision: str, seed: int, rank: int = 0, world: int = 1) -> tuple[FeatureLoader, FeatureLoader]:
    """(train, val) loaders of cached features. Train images are prepared as the training loader
    prepares them without augmentation (resize the short side to the train size, centre crop)."""
    size = data.train_size or data.eval.size
    as_trained = dataclasses.replace(data, eval=dataclasses.replace(data.eval, size=size, crop_pct=1.0))
    sequential = dataclasses.replace(eval_settings, drop_last=False)
    loaders = {}
    for name, cfg in (("train", as_trained), ("val", data)):
        t0 = time.perf_counter()
        # train=False: every image once, in index order, no augmentation; all ranks hold all train features
        images = make_loader(splits[name], train=False, data=cfg, augment=AugmentCfg(), settings=sequential,
                             chans=chans, device=device, seed=seed, channels_last=False,
                             rank=0 if name == "train" else rank, world=1 if name == "train" else world)
        feats, targets = backbone_features(model, images, device=device, precision=precision)
        train = name == "train"
        batches = EpochBatches(len(targets), train_settings.batch if train else eval_settings.batch, train=train,
                               drop_last=train_settings.drop_last if train else False, seed=seed,
                               rank=rank if train else 0, world=world if train else 1)
        loaders[name] = FeatureLoader(feats, targets, batches)
        log.info("finetune.cache_features: %s features %s computed once in %.1f s", name, tuple(feats.shape),
                 time.perf_counter() - t0)
    return loaders["train"], loaders["val"]


__all__ = ["FeatureLoader", "HeadOnly", "backbone_features", "cache_features"]

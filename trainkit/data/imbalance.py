"""Long-tailed training subsets of any labelled split, reproducibly (``data.imbalance``).

CIFAR-10-LT as Cao et al. 2019 build it: class ``i`` of ``C`` keeps ``int(n_max * ratio ** (-i / (C - 1)))``
images (exponential profile; ratio 100 on CIFAR-10's 5,000 per class gives 5000, 2997, ..., 50, 12,406
in all), drawn at random with a seed. ``n_max`` is the smallest class's size, so every class can supply
its share of the profile; classes are taken in the data set's class order (sorted folder names).

A balanced val split (``val_per_class``) is drawn first and the profile applies to the rest, as
ImageNet-LT's balanced val comes from images outside its long-tailed train (Liu et al. 2019): model
selection then estimates the balanced test metric without touching test. On CIFAR-10 with 100 val
images per class the head class keeps 4,900, and train has 12,156 images instead of 12,406.
"""

from __future__ import annotations

import numpy as np

from trainkit.config.recipe import ImbalanceCfg


def long_tail_counts(available: list[int], ratio: float, profile: str = "exponential") -> list[int]:
    """Images kept per class: exponential ``n_max * ratio ** (-i / (C - 1))`` (truncated, as the reference
    code), or step (the first half of the classes ``n_max``, the rest ``n_max / ratio``)."""
    c, n_max = len(available), min(available)
    if c == 1:
        return [n_max]
    if profile == "exponential":
        counts = [int(n_max * ratio ** (-i / (c - 1))) for i in range(c)]
    elif profile == "step":
        counts = [n_max if i < c // 2 else int(n_max / ratio) for i in range(c)]
    else:
        raise ValueError(f"unknown imbalance profile {profile!r}")
    return [max(1, n) for n in counts]   # every class keeps at least one image


def long_tail_indices(targets: np.ndarray, num_classes: int, cfg: ImbalanceCfg) -> np.ndarray:
    """Sorted indices of the long-tailed subset: per class a seeded random choice of its profile count."""
    per_class = [np.flatnonzero(targets == c) for c in range(num_classes)]
    counts = long_tail_counts([len(p) for p in per_class], cfg.ratio, cfg.profile)
    rng = np.random.default_rng(cfg.seed)
    keep = [rng.permutation(p)[:n] for p, n in zip(per_class, counts)]
    return np.sort(np.concatenate(keep))


def balanced_indices(targets: np.ndarray, num_classes: int, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of ``per_class`` images of every class (seeded)."""
    rng = np.random.default_rng(seed + 1)   # a stream apart from the long-tail draw's
    picked = []
    for c in range(num_classes):
        pool = np.flatnonzero(targets == c)
        if len(pool) <= per_class:
            raise ValueError(f"class {c} has {len(pool)} training images, too few to hold out "
                             f"data.imbalance.val_per_class={per_class} and keep some")
        picked.append(rng.permutation(pool)[:per_class])
    return np.sort(np.concatenate(picked))

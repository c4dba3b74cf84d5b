"""Loaders: turn a Split into batches of normalised tensors on the training device.

Two serving paths share every recipe key:

* in-memory (fast path): the split is decoded once into a uint8 tensor (on the
  GPU when there is one); batches are gathered by index and augmented as whole
  batches; no worker processes, no per-sample Python in the hot loop.
* per-sample: a DataLoader with workers decodes and augments each image (PIL);
  used for transforms that have no batched form or data that does not fit.

Randomness depends only on (seed, epoch, index), never on worker count or on
how many epochs ran in this process, so a resumed run sees the same batches.
"""

from __future__ import annotations

import io
import logging
import multiprocessing as mp
import os
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image

from trainkit.data.sources import DataError, Split
from trainkit.config.schema import RecipeError
from trainkit.runtime.progress import progress
from trainkit.data.augment import batched_only_reason, batched_supported, post_ops
from trainkit.data.multiscale import Resolution, SizedBatches, cached_by_size, resize_uint8
from trainkit.config.recipe import AugmentCfg, DataCfg, MultiScaleCfg, RuntimeCfg
from trainkit.data.transforms import (BatchAugment, Normalize, eval_transform, pil_to_uint8,
                         to_channels, train_base_transform, train_sample_transform)

log = logging.getLogger(__name__)
BAD_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A stable 63-bit seed for one sample in one epoch (index -2: the epoch's order)."""
    return ((seed * 1_000_003 + epoch) * 10_000_019 + index + 1) % (2**63 - 1)


def batch_seed(seed: int, epoch: int, rank: int, batch_index: int) -> int:
    """Seed of the batched augmentation of one batch: a function of its position, so a run
    resumed mid-epoch draws what an uninterrupted one would, and ranks draw differently."""
    return sample_seed(seed, epoch, -3 - batch_index * 4096 - rank)


# ---------------------------------------------------------------- sampling

def class_sampling_weights(targets: np.ndarray | torch.Tensor, sampler: str) -> torch.Tensor | None:
    """Per-sample draw weights of ``data.sampler``: class_balanced ``1 / n_c`` (every class equally
    likely), square_root ``1 / sqrt(n_c)`` (class c drawn in proportion to ``sqrt(n_c)``); shuffle: None."""
    if sampler == "shuffle":
        return None
    y = torch.as_tensor(np.asarray(targets.cpu() if torch.is_tensor(targets) else targets), dtype=torch.int64)
    counts = torch.bincount(y).double()
    per_class = {"class_balanced": 1.0 / counts, "square_root": counts.rsqrt()}[sampler]
    return per_class[y]


class EpochBatches:
    """Batch sampler yielding lists of ``(index, sample_seed)`` for this rank.

    Train: a seeded permutation per epoch, or (``weights``) a seeded draw of ``n`` samples with
    replacement in proportion to the weights; both are one global order for all ranks, a function
    of (seed, epoch) only, sharded round-robin over ranks (truncated to a multiple of the world
    size so ranks take equal steps). With ``groups`` (the shard of each sample) the order is
    shard-local: shards in a random order, samples shuffled within each run of ``window`` shards,
    so only that many shards need to be local at once. Eval: every index exactly once over all
    ranks, no padding, no duplicates. ``set_epoch(epoch, start)`` skips ``start`` batches: a
    resumed epoch continues the same order.
    """

    def __init__(self, n: int, batch: int, *, train: bool, drop_last: bool, seed: int,
                 rank: int = 0, world: int = 1, weights: torch.Tensor | None = None,
                 groups: np.ndarray | None = None, window: int = 1):
        self.n, self.batch, self.train, self.drop_last = n, batch, train, drop_last
        self.seed, self.rank, self.world, self.epoch = seed, rank, world, 0
        self.groups, self.window = groups, window
        self.start = 0      # batches of this epoch already consumed (mid-epoch resume)
        self.weights = weights.double() if weights is not None and train else None
        if self.weights is not None and len(self.weights) != n:
            raise ValueError(f"sampling weights for {len(self.weights)} samples, the split has {n}")

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def order(self) -> tuple[list[int], list[int]]:
        """This rank's indices of the epoch and the per-sample augmentation seeds that go with them."""
        if not self.train:
            idx = list(range(self.rank, self.n, self.world))
            return idx, [sample_seed(self.seed, self.epoch, i) for i in idx]
        gen = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -2))
        usable = self.n - self.n % self.world
        if self.weights is None:
            order = torch.randperm(self.n, generator=gen) if self.groups is None else \
                shard_local_order(self.groups, self.window, sample_seed(self.seed, self.epoch, -2))
            idx = order[:usable][self.rank::self.world].tolist()
            return idx, [sample_seed(self.seed, self.epoch, i) for i in idx]
        # With replacement an image can come twice in one epoch: its seed comes from its position in
        # the global draw (n + position, apart from the shuffle seeds), so the two copies differ.
        drawn = torch.multinomial(self.weights, self.n, replacement=True, generator=gen)
        if self.groups is not None:     # the same draw, regrouped so that shards are read window by window
            drawn = drawn[shard_local_order(self.groups[drawn.numpy()], self.window,
                                            sample_seed(self.seed, self.epoch, -2))]
        positions = range(self.rank, usable, self.world)
        return drawn[:usable][self.rank::self.world].tolist(), \
            [sample_seed(self.seed, self.epoch, self.n + p) for p in positions]

    def indices(self) -> list[int]:
        return self.order()[0]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        idx, seeds = self.order()
        stop = len(idx) - len(idx) % self.batch if self.drop_last else len(idx)
        for start in range(self.start * self.batch, stop, self.batch):
            yield list(zip(idx[start:start + self.batch], seeds[start:start + self.batch]))

    def __len__(self) -> int:
        count = len(range(self.rank, self.n, self.world)) if not self.train else (self.n // self.world)
        return count // self.batch if self.drop_last else -(-count // self.batch)

    def samples(self) -> int:
        count = len(range(self.rank, self.n, self.world)) if not self.train else (self.n // self.world)
        return count - count % self.batch if self.drop_last else count


def shard_local_order(groups: np.ndarray, window: int, seed: int) -> torch.Tensor:
    """A permutation of ``range(len(groups))``: groups (shards) in a seeded random order,
    samples shuffled within each run of ``window`` consecutive groups of that order."""
    rng = np.random.default_rng(seed)
    ids, group_of = np.unique(groups, return_inverse=True)
    position = np.empty(len(ids), dtype=np.int64)
    position[rng.permutation(len(ids))] = np.arange(len(ids))
    block = position[group_of] // window
    n = len(groups)
    return torch.from_numpy(np.argsort(block * n + rng.permutation(n), kind="stable"))


# ---------------------------------------------------------------- decoding

def load_image(split: Split, index: int, chans: int) -> Image.Image:
    """Open one image of a split as grey or RGB (raises BAD_IMAGE_ERRORS for a bad file)."""
    if split.arrays is not None:
        return to_channels(Image.fromarray(split.arrays[index]), chans)
    with Image.open(io.BytesIO(split.blobs[index]) if split.blobs is not None else split.paths[index]) as img:
        img.load()
        return to_channels(img, chans)


class SampleDataset(torch.utils.data.Dataset):
    """Per-sample path: ``(index, seed)`` -> ``(uint8 CHW, label)``, or None for a skipped bad image."""

    def __init__(self, split: Split, transform: Callable, chans: int, on_corrupt: str,
                 transform_at: Callable[[int], Callable] | None = None):
        self.split, self.transform, self.chans, self.on_corrupt = split, transform, chans, on_corrupt
        self.transform_at = transform_at   # multi-scale: items carry the batch's size, px

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item: tuple[int, int]):
        index, seed, *px = item
        transform = self.transform_at(px[0]) if px and px[0] and self.transform_at else self.transform
        try:
            img = load_image(self.split, index, self.chans)
        except BAD_IMAGE_ERRORS as err:
            if self.on_corrupt == "skip":
                return None
            raise DataError(f"corrupt or unreadable image {self.split.describe(index)}: {err} "
                            "(data.on_corrupt=skip skips such files)") from None
        # Seed the global RNGs per sample so augmentation is independent of worker
        # assignment; in the main process (workers=0) keep the trainer's RNG untouched.
        in_worker = torch.utils.data.get_worker_info() is not None
        with torch.random.fork_rng(devices=[], enabled=not in_worker):
            torch.manual_seed(seed)
            out = pil_to_uint8(transform(img))
        return out, int(self.split.targets[index])


def collate(batch: list) -> tuple[torch.Tensor, torch.Tensor, int]:
    good = [b for b in batch if b is not None]
    skipped = len(batch) - len(good)
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), skipped
    images = torch.stack([g[0] for g in good])
    targets = torch.tensor([g[1] for g in good], dtype=torch.int64)
    return images, targets, skipped


_DECODE: dict = {}


def _decode_chunk(indices: list[int]) -> list[np.ndarray | str]:
    split, transform, chans = _DECODE["split"], _DECODE["transform"], _DECODE["chans"]
    out: list[np.ndarray | str] = []
    for i in indices:
        try:
            out.append(pil_to_uint8(transform(load_image(split, i, chans))).numpy())
        except BAD_IMAGE_ERRORS as err:
            out.append(f"{split.describe(i)}: {err}")
    return out


def decode_split(split: Split, transform: Callable, size: int, chans: int, on_corrupt: str,
                 workers: int, show_progress: bool | str = "auto") -> tuple[torch.Tensor, torch.Tensor, int]:
    """Decode a whole split once into a uint8 [N, C, size, size] tensor (plus labels, skipped count)."""
    arr = split.arrays
    if arr is not None and arr.shape[1:3] == (size, size) and (arr.ndim == 3) == (chans == 1):
        # Already decoded at the right size and channels: no PIL round trip.
        images = torch.from_numpy(np.ascontiguousarray(arr.reshape(len(arr), size, size, chans)))
        return images.permute(0, 3, 1, 2).contiguous(), torch.from_numpy(split.targets.copy()), 0
    _DECODE.update(split=split, transform=transform, chans=chans)
    chunks = [list(range(s, min(s + 512, len(split)))) for s in range(0, len(split), 512)]
    # A JPEG folder decodes at tens to hundreds of images/s: a bar with rate and ETA, not minutes of silence.
    bar = progress(total=len(split), desc=f"decode {split.name} (once)", enabled=show_progress, unit="img")
    decoded: list[np.ndarray | str] = []
    try:
        if workers > 0 and len(split) > 2048:
            with mp.get_context("fork").Pool(workers) as pool:
                for part in pool.imap(_decode_chunk, chunks):
                    decoded.extend(part)
                    bar.update(len(part))
        else:
            for part in map(_decode_chunk, chunks):
                decoded.extend(part)
                bar.update(len(part))
    finally:
        bar.close()
        _DECODE.clear()
    bad = [d for d in decoded if isinstance(d, str)]
    if bad and on_corrupt == "error":
        raise DataError(f"corrupt or unreadable image {bad[0]} (data.on_corrupt=skip skips such files)")
    keep = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
    if not keep:
        raise DataError(f"no readable images in split {split.name}")
    images = torch.from_numpy(np.stack([decoded[i] for i in keep]))
    return images, torch.from_numpy(split.targets[keep].copy()), len(bad)


# ---------------------------------------------------------------- loaders

def resolve_workers(workers: int | str) -> int:
    """``auto``: one worker per CPU this process may use, less one for the training step, at most 8
    (torch warns above the CPU count, and more workers than cores only time-slice the decode)."""
    if workers != "auto":
        return int(workers)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cpus - 1))


@dataclass(frozen=True)
class LoaderSettings:
    """The loader keys of ``runtime:``, resolved for this process."""
    batch: int
    workers: int
    pin_memory: bool
    prefetch_factor: int
    persistent_workers: bool
    drop_last: bool

    @classmethod
    def from_runtime(cls, rt: RuntimeCfg, batch: int, device: torch.device, train: bool) -> "LoaderSettings":
        pin = device.type == "cuda" if rt.pin_memory == "auto" else bool(rt.pin_memory)
        return cls(batch, resolve_workers(rt.workers), pin, rt.prefetch_factor, rt.persistent_workers,
                   rt.drop_last and train)


class EpochLoader:
    """What the trainer asks of any loader: epochs of ``self.batches`` (an EpochBatches), their count."""
    batches: EpochBatches
    epoch: int

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch; ``start`` batches are skipped without being read (mid-epoch resume)."""
        self.epoch = epoch
        self.batches.set_epoch(epoch, start)

    def __len__(self) -> int:
        return len(self.batches)

    def samples(self) -> int:
        return self.batches.samples()


class Loader(EpochLoader):
    """Yields ``(images, targets)`` on ``device``, normalised, augmented, in the chosen memory format."""

    def __init__(self, batches: EpochBatches, source: Iterator | Callable, *, device: torch.device,
                 normalize: Normalize, augment: BatchAugment | None, channels_last: bool, seed: int,
                 in_memory: bool, post: Callable | None = None):
        self.batches, self._source, self.device = batches, source, device
        self.normalize, self.augment, self.channels_last = normalize.to(device), augment, channels_last
        self.seed, self.in_memory, self.skipped = seed, in_memory, 0
        self.post = post   # (images, targets, gen, epoch) -> (images, targets) on the normalised batch
        self.epoch = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator()
        try:
            # an in-memory source also yields the images' indices (for ops that follow each image: alternate flips)
            for k, (images, targets, skipped, *index) in enumerate(self._source(), start=self.batches.start):
                gen.manual_seed(batch_seed(self.seed, self.epoch, self.batches.rank, k))
                self.skipped += skipped
                if len(targets) == 0:
                    continue
                # uint8 crosses to the device (4x less than float); non_blocking overlaps
                # the copy with compute when the host memory is pinned.
                images = images.to(self.device, non_blocking=True)
                targets = targets.to(self.device, non_blocking=True)
                if self.augment is not None:
                    images = self.augment(images, gen, index[0] if index else None, self.epoch, self.seed)
                layout = torch.channels_last if self.channels_last else torch.contiguous_format
                images = self.normalize(images, layout)
                if self.post is not None:
                    images, targets = self.post(images, targets, gen, self.epoch)
                    images = images.contiguous(memory_format=layout)   # a no-op unless post changed it
                yield images, targets
        except DataError as err:
            # DataLoader re-raises worker errors with the worker's traceback in the message.
            last = str(err).strip().splitlines()[-1]
            raise DataError(last.split("DataError: ", 1)[-1]) from None


def _tensor_source(images: torch.Tensor, targets: torch.Tensor, batches: EpochBatches) -> Callable:
    def produce():
        for batch in batches:
            # Built on the host, copied without a stream sync (a plain H2D copy would wait for the GPU).
            host_idx = torch.tensor([item[0] for item in batch])
            idx = host_idx.to(images.device, non_blocking=True)
            px = batch[0][2] if len(batch[0]) > 2 else None   # multi-scale: this batch's size
            picked = images.index_select(0, idx)
            yield (picked if px is None else resize_uint8(picked, px)), targets.index_select(0, idx), 0, host_idx
    return produce


def _worker_source(dataset: SampleDataset, batches: EpochBatches, s: LoaderSettings) -> Callable:
    workers = s.workers
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate, pin_memory=s.pin_memory,
        prefetch_factor=s.prefetch_factor if workers else None,
        persistent_workers=s.persistent_workers and workers > 0)
    return lambda: iter(loader)


def shard_order(split: Split) -> dict:
    """Streamed shards are read in a shard-local order (bounded cache); other splits in any order."""
    if split.blobs is None or getattr(split.blobs, "groups", None) is None:
        return {}
    return {"groups": split.blobs.groups, "window": split.blobs.window}


def use_in_memory(cfg: DataCfg, split: Split, size: int, chans: int, batched_ok: bool) -> bool:
    if cfg.in_memory is False or not batched_ok:
        if cfg.in_memory is True and not batched_ok:
            log.warning("data.in_memory=true but the augmentation needs the per-sample path; using it")
        return False
    if cfg.in_memory is True:
        return True
    decoded_mb = len(split) * chans * size * size / 2**20
    return decoded_mb <= cfg.in_memory_max_mb


def train_batch_ops(augment: AugmentCfg, mix: Callable | None) -> Callable | None:
    """The random ops on the normalised training batch: the ops' post forms (random erasing), then mixup/cutmix."""
    post = post_ops(augment)
    if not post and mix is None:
        return None

    def ops(images: torch.Tensor, targets: torch.Tensor, gen: torch.Generator, epoch: int):
        for op in post:
            images = op(images, gen)
        if mix is not None:
            images, targets = mix(images, targets, gen, epoch)
        return images, targets
    return ops


def decode_size(data: DataCfg, train: bool, multiscale: MultiScaleCfg | None, seed: int) -> int:
    """The side, px, a split is decoded at: the eval size, or the training size (multi-scale: the largest)."""
    size = (data.train_size or data.eval.size) if train else data.eval.size
    resolution = Resolution(multiscale, seed) if train and multiscale is not None else None
    return max(size, resolution.max_px(size)) if resolution is not None and resolution.active else size


def choose_path(data: DataCfg, split: Split, *, train: bool, augment: AugmentCfg, chans: int, seed: int,
                multiscale: MultiScaleCfg | None = None) -> bool:
    """Whether ``split`` is served by the in-memory path: the one decision, made by the plan for training."""
    batched_ok = batched_supported(augment) if train else True
    fast = use_in_memory(data, split, decode_size(data, train, multiscale, seed), chans, batched_ok)
    needs_batched = batched_only_reason(augment) if train else None
    if needs_batched and not fast:
        why = "data.in_memory is false" if data.in_memory is False else \
            "another augmentation needs the per-sample path" if not batched_ok else \
            f"the decoded split exceeds data.in_memory_max_mb={data.in_memory_max_mb}"
        raise RecipeError(f"{needs_batched}: exists only on the in-memory path, and {why}")
    return fast


def make_loader(split: Split, *, train: bool, data: DataCfg, augment: AugmentCfg, settings: LoaderSettings,
                chans: int, device: torch.device, seed: int, channels_last: bool,
                rank: int = 0, world: int = 1, multiscale: MultiScaleCfg | None = None,
                mix: Callable | None = None, in_memory: bool | None = None) -> Loader:
    """Build the loader for one split on the path ``in_memory`` names (None: :func:`choose_path` decides).

    Training only: ``multiscale`` gives each batch its own resolution; ``mix``
    (a :class:`trainkit.data.mixup.Mixup`) turns targets soft after random erasing.
    """
    ev = data.eval
    size = decode_size(data, train, multiscale, seed)   # in memory: decode once at the largest size
    resolution = Resolution(multiscale, seed) if train and multiscale is not None else None
    if resolution is not None and not resolution.active:
        resolution = None
    normalize = Normalize(ev.mean, ev.std, chans)
    fast = in_memory if in_memory is not None else choose_path(data, split, train=train, augment=augment,
                                                                chans=chans, seed=seed, multiscale=multiscale)
    post = train_batch_ops(augment, mix) if train else None

    def sample_transform(px: int) -> Callable:
        return train_sample_transform(augment, px, ev.interpolation, tuple(ev.mean))
    if train:
        base = train_base_transform(size, ev.interpolation) if fast else sample_transform(size)
    else:
        base = eval_transform(ev)
    if fast:
        images, targets, skipped = decode_split(split, base, size, chans, data.on_corrupt, settings.workers)
        if skipped:
            log.warning("skipped %d corrupt or unreadable images in %s", skipped, split.name)
        if device.type == "cuda":   # the whole set lives on the GPU (airbench-style)
            images, targets = images.to(device), targets.to(device)
        batches = EpochBatches(len(targets), settings.batch, train=train, drop_last=settings.drop_last,
                               seed=seed, rank=rank, world=world,
                               weights=class_sampling_weights(targets, data.sampler) if train else None)
        if resolution is not None:
            batches = SizedBatches(batches, resolution)
        aug = BatchAugment.from_cfg(augment) if train else None
        loader = Loader(batches, _tensor_source(images, targets, batches), device=device, normalize=normalize,
                        augment=aug if aug is not None and aug.active else None,
                        channels_last=channels_last, seed=seed, in_memory=True, post=post)
        loader.skipped = skipped
        return loader
    batches = EpochBatches(len(split), settings.batch, train=train, drop_last=settings.drop_last,
                           seed=seed, rank=rank, world=world, **shard_order(split),
                           weights=class_sampling_weights(split.targets, data.sampler) if train else None)
    if resolution is not None:
        batches = SizedBatches(batches, resolution)
    dataset = SampleDataset(split, base, chans, data.on_corrupt,
                            transform_at=cached_by_size(sample_transform) if resolution is not None else None)
    return Loader(batches, _worker_source(dataset, batches, settings), device=device, normalize=normalize,
                  augment=None, channels_last=channels_last, seed=seed, in_memory=False, post=post)

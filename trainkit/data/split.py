"""The data types every source produces and every loader reads: a Split, a DataSource, and DataError."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np


class DataError(RuntimeError):
    """A user-facing data problem; the message is one line naming the file or folder."""


@dataclass(frozen=True)
class Split:
    """One split of a data set: labels plus uint8 arrays, file paths or encoded blobs."""
    name: str
    classes: tuple[str, ...]
    targets: np.ndarray                   # int64 [N]
    arrays: np.ndarray | None = None      # uint8 [N, H, W] or [N, H, W, C]
    paths: tuple[str, ...] | None = None
    # encoded images by index: blobs[i] -> bytes, blobs[index_array] -> a lazy view, blobs.groups
    # (int [N], the shard of each sample, for a shard-local training order); see data/streaming.py
    blobs: Any = None

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, indices: np.ndarray, name: str | None = None) -> "Split":
        indices = np.asarray(indices, dtype=np.int64)
        return replace(
            self,
            name=name or self.name,
            targets=self.targets[indices],
            arrays=None if self.arrays is None else self.arrays[indices],
            paths=None if self.paths is None else tuple(self.paths[i] for i in indices),
            blobs=None if self.blobs is None else self.blobs[indices],
        )

    def describe(self, index: int) -> str:
        if self.paths is not None:
            return self.paths[index]
        return self.blobs.describe(index) if self.blobs is not None else f"{self.name}[{index}]"


@dataclass(frozen=True)
class DataSource:
    """The splits a data set provides (``val`` and ``test`` may be missing)."""
    splits: dict[str, Split]
    natural_chans: int                    # 1 for grey data sets, 3 for colour
    description: str

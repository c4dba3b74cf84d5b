"""Shared fixtures: real images on disk, and paths to the real data in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRAINKIT_SHARED", ROOT.parent / "shared"))
CIFAR_JPEG = SHARED / "data" / "cifar10-jpeg"
WEIGHTS = SHARED / "weights" / "cifar10-resnet"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not present (the shared data folder beside the repository)")
    return path


@pytest.fixture
def cifar_jpeg() -> Path:
    return require(CIFAR_JPEG)


@pytest.fixture
def fashion_dir() -> Path:
    from trainkit.data.sources import debian_fashion_mnist_dir

    found = debian_fashion_mnist_dir()
    if found is None:
        pytest.skip("Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    return found


def make_image_folder(root: Path, classes=("cat", "dog", "fox"), per_class=(12, 6), size=16, seed=0) -> Path:
    """A small ImageFolder with train/ and test/ of real PNG/JPEG files whose colour encodes the class."""
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "test"), per_class):
        for label, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                base = np.zeros((size, size, 3), np.uint8)
                base[..., label % 3] = 200
                noise = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
                img = Image.fromarray(base + noise)
                img.save(folder / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "folder")

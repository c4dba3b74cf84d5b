"""Data sources: where the images of each split come from.

A source returns :class:`Split` objects that hold either decoded uint8 arrays
(torchvision's CIFAR/MNIST files, Debian's Fashion-MNIST package), file paths
(an ImageFolder tree) or encoded bytes read by index (webdataset shards). Everything downstream
(per-sample or in-memory loaders) works from a Split, so both serving paths read the same recipe keys.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torchvision.datasets as tvd

from trainkit.config.recipe import DataCfg, ImbalanceCfg, Recipe, RuntimeCfg
from trainkit.config.registry import DATASETS
from trainkit.data.imbalance import balanced_indices, long_tail_indices
from trainkit.data.packed import open_packed
from trainkit.data.split import DataError, DataSource, Split
from trainkit.data.streaming import open_shards

__all__ = ["DataError", "DataSource", "Split", "SOURCES", "open_source", "resolve_splits", "prepare_data", "Data",
           "labelled_folder", "open_eval_splits", "match_classes"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


SOURCES = DATASETS   # data.name -> (DataCfg -> DataSource)


# ---------------------------------------------------------------- ImageFolder

def _scan_folder(split_dir: Path, name: str, classes: tuple[str, ...] | None) -> Split:
    found = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if not found:
        raise DataError(f"no class folders in {split_dir} (expected {split_dir}/<class>/<image>)")
    if classes is not None and tuple(found) != classes:
        missing = sorted(set(classes) ^ set(found))
        raise DataError(f"{split_dir}: class folders differ from train/: {', '.join(missing[:5])}")
    paths, targets = [], []
    for label, cls in enumerate(found):
        for root, _, files in os.walk(split_dir / cls, followlinks=True):
            for f in sorted(files):
                if f.lower().endswith(IMG_EXTENSIONS):
                    paths.append(os.path.join(root, f))
                    targets.append(label)
    if not paths:
        raise DataError(f"no images ({', '.join(IMG_EXTENSIONS[:4])}, ...) under {split_dir}")
    return Split(name, tuple(found), np.asarray(targets, dtype=np.int64), paths=tuple(paths))


@SOURCES.register("imagefolder")
def imagefolder(cfg: DataCfg) -> DataSource:
    if not cfg.root:   # a recipe without a data: section never ran DataCfg's own check
        raise DataError("data.root: required for data.name=imagefolder (a folder with train/ and val/ or test/)")
    root = Path(cfg.root).expanduser()
    try:
        found = root.is_dir()
    except OSError as err:   # no permission, a name too long
        raise DataError(f"data.root {root}: {err.strerror}") from None
    if not found:
        raise DataError(f"data root not found: {root} (set data.root= to a folder with train/ and val/ or test/)")
    if not (root / "train").is_dir():
        raise DataError(f"{root} has no train/ folder (expected train/<class>/<image> and val/ or test/)")
    train = _scan_folder(root / "train", "train", None)
    splits = {"train": train}
    for name in ("val", "test"):
        if (root / name).is_dir():
            splits[name] = _scan_folder(root / name, name, train.classes)
    return DataSource(splits, natural_chans=3, description=f"ImageFolder {root}")


def labelled_folder(root: Path) -> DataSource:
    """A folder of labelled photos to evaluate on, without a train/ folder: ``root/test/<class>/``,
    ``root/val/<class>/`` (either or both), or ``root/<class>/`` (flat: the ``test`` split). Each split's
    classes are its own folder names; :func:`match_classes` maps them to a model's by name."""
    splits = {name: _scan_folder(root / name, name, None) for name in ("val", "test") if (root / name).is_dir()}
    if not splits:
        if not any(e.is_dir() and not e.name.startswith(".") for e in os.scandir(root)):
            raise DataError(f"{root}: no class folders (expected {root}/<class>/<image>, or test/<class>/ or "
                            f"val/<class>/)")
        splits["test"] = _scan_folder(root, "test", None)
        return DataSource(splits, natural_chans=3, description=f"flat class folder {root}")
    return DataSource(splits, natural_chans=3, description=f"labelled folder {root} ({'/, '.join(splits)}/)")


def match_classes(split: Split, model_classes: list[str] | tuple[str, ...], what: str, where: str,
                  subset_ok: bool = False) -> Split:
    """``split`` with its labels renumbered to ``model_classes`` by name (folder order need not be the model's).

    A folder class the model does not know is an error; so is a model class the folder lacks unless
    ``subset_ok`` (then the split keeps its own classes, a subset, for restricted-logit evaluation). One
    error line lists the unknown and the missing class names."""
    found, wanted = list(split.classes), list(model_classes)
    if found == wanted:
        return split
    unknown = [c for c in found if c not in set(wanted)]
    missing = [c for c in wanted if c not in set(found)]
    if unknown or (missing and not subset_ok):
        parts = [f"unknown to the model: {_names(unknown)}" if unknown else "",
                 f"missing from the folder: {_names(missing)}" if missing and not subset_ok else ""]
        raise DataError(f"{what}: the class folders of {where} do not match the model's {len(wanted)} classes ("
                        f"{'; '.join(p for p in parts if p)}); class folders must be named as the model's classes")
    if missing:
        return split
    position = {name: i for i, name in enumerate(wanted)}
    remap = np.asarray([position[c] for c in found], dtype=np.int64)
    return dataclasses.replace(split, classes=tuple(wanted), targets=remap[split.targets])


def _names(names: list[str], shown: int = 8) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


# ---------------------------------------------------------------- idx files (MNIST, Fashion-MNIST)

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(i) for i in range(10))
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally .gz), the format of MNIST and Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not a uint8 idx file")
        shape = struct.unpack(f">{ndim}I", data[4: 4 + 4 * ndim])
        # bytearray: a writable buffer, so torch.from_numpy needs no extra copy
        return np.frombuffer(bytearray(data), dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, ValueError, struct.error, EOFError) as err:
        raise DataError(f"cannot read idx file {path}: {err}") from None


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_source(folder: Path, classes: tuple[str, ...], description: str) -> DataSource:
    splits = {}
    for split, (images_stem, labels_stem) in IDX_FILES.items():
        images, labels = _find_idx(folder, images_stem), _find_idx(folder, labels_stem)
        if images is None or labels is None:
            raise DataError(f"{folder}: missing {images_stem}[.gz] or {labels_stem}[.gz]")
        splits[split] = Split(split, classes, read_idx(labels).astype(np.int64), arrays=read_idx(images))
    return DataSource(splits, natural_chans=1, description=description)


def debian_fashion_mnist_dir() -> Path | None:
    """Folder of Debian's dataset-fashion-mnist files, if the package is installed."""
    if shutil.which("dpkg"):
        try:
            listing = subprocess.run(["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True,
                                     text=True, timeout=10, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        for line in listing.splitlines():
            if line.endswith("train-images-idx3-ubyte.gz"):
                return Path(line).parent
    return DEBIAN_FASHION if _find_idx(DEBIAN_FASHION, "train-images-idx3-ubyte") else None


def _torchvision_root(cfg: DataCfg) -> Path:
    return Path(cfg.root or "data").expanduser()


def _torchvision_raw(cls_name: str, cfg: DataCfg, subdir: str, how: str) -> Path:
    """Locate (and, when allowed, download) a torchvision data set; return its folder."""
    root = _torchvision_root(cfg)
    cls = getattr(tvd, cls_name)
    try:
        for train in (True, False):
            ds = cls(str(root), train=train, download=cfg.download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        hint = "" if cfg.download else "; or set data.download=true (needs internet)"
        raise DataError(f"{cls_name} not found under {root / subdir}: {how}{hint} ({err})".replace("\n", " ")) from None
    except OSError as err:  # download attempted while offline
        raise DataError(f"{cls_name}: download failed ({err}); put the files under {root / subdir}: {how}") from None
    return Path(getattr(ds, "raw_folder", root))


@SOURCES.register("fashion_mnist")
def fashion_mnist(cfg: DataCfg) -> DataSource:
    """Debian's dataset-fashion-mnist files when installed and no root is given; else torchvision's layout."""
    debian = None if cfg.root else debian_fashion_mnist_dir()
    if debian is not None:
        return _idx_source(debian, FASHION_CLASSES, f"Fashion-MNIST (Debian package, {debian})")
    how = ("install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist), or place "
           "train-images-idx3-ubyte.gz and the three other idx files there")
    raw = _torchvision_raw("FashionMNIST", cfg, "FashionMNIST/raw", how)
    return _idx_source(raw, FASHION_CLASSES, f"Fashion-MNIST ({raw})")


@SOURCES.register("mnist")
def mnist(cfg: DataCfg) -> DataSource:
    how = "place train-images-idx3-ubyte.gz and the three other idx files there"
    raw = _torchvision_raw("MNIST", cfg, "MNIST/raw", how)
    return _idx_source(raw, MNIST_CLASSES, f"MNIST ({raw})")


def _cifar(cfg: DataCfg, cls_name: str, folder: str, archive: str) -> DataSource:
    root = _torchvision_root(cfg)
    how = f"extract {archive} (the python version) there"
    _torchvision_raw(cls_name, cfg, folder, how)
    splits = {}
    for split, train in (("train", True), ("test", False)):
        ds = getattr(tvd, cls_name)(str(root), train=train, download=False)
        splits[split] = Split(split, tuple(ds.classes), np.asarray(ds.targets, dtype=np.int64), arrays=ds.data)
    return DataSource(splits, natural_chans=3, description=f"{cls_name} ({root / folder})")


@SOURCES.register("cifar10")
def cifar10(cfg: DataCfg) -> DataSource:
    return _cifar(cfg, "CIFAR10", "cifar-10-batches-py", "cifar-10-python.tar.gz")


@SOURCES.register("cifar100")
def cifar100(cfg: DataCfg) -> DataSource:
    return _cifar(cfg, "CIFAR100", "cifar-100-python", "cifar-100-python.tar.gz")


# ---------------------------------------------------------------- splits

def _seeded_subset(split: Split, count: int, seed: int) -> Split:
    if count >= len(split):
        return split
    keep = np.sort(np.random.default_rng(seed).permutation(len(split))[:count])
    return split.subset(keep)


def long_tailed(train: Split, splits: dict[str, Split], cfg: ImbalanceCfg) -> Split:
    """The long-tailed subset of ``train``; with ``val_per_class`` (and no val split in the source)
    ``splits["val"]`` first becomes a balanced draw from train, and the subset is taken from the rest."""
    pool = np.arange(len(train))
    if cfg.val_per_class and "val" not in splits:
        try:
            val = balanced_indices(train.targets, len(train.classes), cfg.val_per_class, cfg.seed)
        except ValueError as err:
            raise DataError(f"data.imbalance: {err}") from None
        splits["val"] = train.subset(val, "val")
        pool = np.setdiff1d(pool, val)
    keep = pool[long_tail_indices(train.targets[pool], len(train.classes), cfg)]
    return train.subset(keep, "train")


def stratified_holdout(targets: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a seeded hold-out with ``fraction`` of each class (at least one photo each)."""
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(targets):
        members = np.flatnonzero(targets == label)
        held.append(rng.permutation(members)[:max(1, round(fraction * len(members)))])
    return np.sort(np.concatenate(held))


def per_class_subset(targets: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded draw of at most ``per_class`` samples of each class."""
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(targets == label))[:per_class] for label in np.unique(targets)]
    return np.sort(np.concatenate(keep))


def resolve_splits(cfg: DataCfg, source: DataSource) -> dict[str, Split]:
    """Return ``train``, ``val`` and ``test`` splits.

    ``data.imbalance`` first makes train long-tailed (and may draw a balanced val from
    the rest). ``val`` is the source's own when it has one; otherwise a seeded hold-out of
    ``holdout_fraction`` of train, or (fraction 0) the test split. ``val_from_train``: always a seeded
    hold-out (``holdout_fraction`` of each class, named ``holdout``); the source's val/ is then reported only.
    ``test`` is the final report split: the source's test split, else its val split. ``train_per_class``: a
    seeded draw of at most that many train images per class, after the hold-out.
    """
    splits = dict(source.splits)
    train = splits["train"]
    if cfg.imbalance is not None:
        train = long_tailed(train, splits, cfg.imbalance)
    if cfg.val_from_train:
        held = stratified_holdout(train.targets, cfg.holdout_fraction, cfg.holdout_seed)
        if "val" in splits:   # the source's val/ is only reported: nothing is chosen on it
            splits.setdefault("test", splits["val"])
        splits["val"] = train.subset(held, "holdout")
        train = train.subset(np.setdiff1d(np.arange(len(train)), held), "train")
    elif "val" not in splits:
        if cfg.holdout_fraction > 0 or "test" not in splits:
            fraction = cfg.holdout_fraction or 0.1
            order = np.random.default_rng(cfg.holdout_seed).permutation(len(train))
            n_val = max(1, round(fraction * len(train)))
            splits["val"] = train.subset(np.sort(order[:n_val]), "val")
            train = train.subset(np.sort(order[n_val:]), "train")
        else:
            splits["val"] = splits["test"]
    splits.setdefault("test", splits["val"])
    if cfg.train_per_class:
        train = train.subset(per_class_subset(train.targets, cfg.train_per_class, cfg.holdout_seed + 2))
    splits["train"] = train
    if cfg.limit_train:
        splits["train"] = _seeded_subset(splits["train"], cfg.limit_train, cfg.holdout_seed)
    if cfg.limit_eval:
        for name in ("val", "test"):
            splits[name] = _seeded_subset(splits[name], cfg.limit_eval, cfg.holdout_seed + 1)
    return splits


def open_eval_splits(cfg: DataCfg, runtime: RuntimeCfg | None = None) -> dict[str, Split]:
    """The splits a model is evaluated on. An ImageFolder root without train/ is a labelled folder
    (:func:`labelled_folder`): its test/ and val/ as they are (``test`` falls back to ``val``, as for a set
    without a test split), or a flat folder of class folders as ``test``. Anything else: :func:`resolve_splits`."""
    root = Path(cfg.root).expanduser() if cfg.root else None
    if cfg.name != "imagefolder" or cfg.format != "files" or root is None or not root.is_dir() \
            or (root / "train").is_dir():
        return resolve_splits(cfg, open_source(cfg, runtime))
    splits = dict(labelled_folder(root).splits)
    if "test" not in splits:
        splits["test"] = splits["val"]
    if cfg.limit_eval:
        splits = {name: _seeded_subset(split, cfg.limit_eval, cfg.holdout_seed + 1) for name, split in splits.items()}
    return splits


def val_is_test(splits: dict[str, Split]) -> bool:
    """Whether the val split *is* the test split (``holdout_fraction: 0`` on a set with a test
    split). Then nothing may be chosen on it: no best checkpoint, greedy soup, ablation or sweep."""
    return splits["val"].name == "test"


def report_split(splits: dict[str, Split]) -> str:
    """The name of the final report split as it is: ``test``, or ``val`` for a set without one."""
    return splits["test"].name


def open_source(cfg: DataCfg, runtime: RuntimeCfg | None = None) -> DataSource:
    """The data set of ``cfg``; ``runtime`` says where shards from a URL are cached (default: RuntimeCfg())."""
    if cfg.format == "packed":
        return open_packed(cfg.root)
    if cfg.format == "webdataset":
        rt = runtime or RuntimeCfg()
        return open_shards(cfg.root, cache_dir=rt.shard_cache_dir, cache_mb=rt.shard_cache_mb,
                           window_shards=cfg.window_shards, on_corrupt=cfg.on_corrupt)
    return SOURCES.get(cfg.name)(cfg)


@dataclass
class Data:
    """A recipe's data: its splits, class names, the channel count the model sees, and a description."""
    splits: dict[str, Split]
    classes: tuple[str, ...]
    in_chans: int
    description: str


def prepare_data(recipe: Recipe, *, dry_run: bool = False) -> Data:
    """The splits a recipe names. ``dry_run`` (train.py --print): read only what is on disk;
    never download, so nothing is written (torchvision creates its folders to download into)."""
    if not dry_run:
        source = open_source(recipe.data, recipe.runtime)
    else:
        try:
            source = open_source(dataclasses.replace(recipe.data, download=False), recipe.runtime)
        except DataError as err:
            raise DataError(f"{err} (--print never downloads)" if recipe.data.download else str(err)) from None
    splits = resolve_splits(recipe.data, source)
    in_chans = recipe.model.in_chans or source.natural_chans
    return Data(splits, splits["train"].classes, in_chans, source.description)

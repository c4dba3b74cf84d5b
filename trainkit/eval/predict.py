"""Classify image files with any model the hub resolves: ``predict(model_spec, images, topk=5)``.

Each image goes through the model's own eval preprocessing, built from the same functions
the evaluation loaders use (grey/RGB conversion, resize + centre crop, uint8 -> normalised
batch), so predict's top-1 over a split's files equals evaluate.py's on that split.
A file that cannot be read as an image gives a result with ``error`` set; the others carry on.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from trainkit.data.loaders import BAD_IMAGE_ERRORS
from trainkit.data.multiscale import TTA
from trainkit.eval.labels import synset_names
from trainkit.data.transforms import Normalize, eval_transform, pil_to_uint8, to_channels
from trainkit.models import hub
from trainkit.models.hub import LoadedModel
from trainkit.eval.loop import forward_batches



@dataclass
class Prediction:
    """One image: its top-k classes, best first, or the error that kept it from being classified."""
    path: str
    labels: list[str] = field(default_factory=list)       # the model's class labels (e.g. synset ids)
    names: list[str | None] = field(default_factory=list)  # human-readable names where known, else None
    probs: list[float] = field(default_factory=list)      # softmax probabilities, 0-1
    indices: list[int] = field(default_factory=list)      # output indices
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# ---------------------------------------------------------------- which files

def expand_images(items: Iterable[str], stdin: Iterable[str] | None = None) -> list[str]:
    """Files, folders (recursive, hidden entries skipped), glob patterns, and ``-`` (one path per line of ``stdin``).

    Every file found is returned, image or not: a non-image becomes a result with an error
    rather than being silently dropped. A path or pattern that matches nothing is returned
    as given, so it too is reported. Order is kept; a file named twice counts once.
    """
    out: list[str] = []
    for item in items:
        if item == "-":
            lines = [line.strip() for line in (stdin or [])]
            out.extend(expand_images([line for line in lines if line]))
        elif os.path.isdir(item):
            out.extend(_walk(item))
        elif not os.path.exists(item) and glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            for match in matches:
                out.extend(_walk(match) if os.path.isdir(match) else [match])
            if not matches:
                out.append(item)
        else:
            out.append(item)
    return list(dict.fromkeys(out))


def _walk(folder: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, f) for f in sorted(files) if not f.startswith("."))
    return found


# ---------------------------------------------------------------- class names

def class_names(loaded: LoadedModel) -> list[str | None]:
    """Human-readable names beside the model's labels: a source's own list when it records one
    (``class_names``), else ImageNet synset ids (``n01440764``) looked up in timm's ImageNet info."""
    classes = list(loaded.classes or [])
    own = getattr(loaded, "class_names", None)   # a card may carry names beside its synset ids
    if own and len(own) == len(classes):
        return [n if n != c else None for n, c in zip(own, classes)]
    return synset_names(classes)


# ---------------------------------------------------------------- decoding

class _Files(torch.utils.data.Dataset):
    """path -> uint8 [C, H, W] after the model's eval preprocessing, or the error text."""

    def __init__(self, paths: list[str], loaded: LoadedModel):
        self.paths, self.transform, self.chans = paths, eval_transform(loaded.eval), loaded.in_chans

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            with Image.open(self.paths[i]) as img:
                img.load()
                return i, pil_to_uint8(self.transform(to_channels(img, self.chans))), None
        except BAD_IMAGE_ERRORS as err:   # includes "cannot identify image file" and missing files
            return i, None, _error_text(err)


def _error_text(err: Exception) -> str:
    if isinstance(err, FileNotFoundError):
        return "no such file"
    if isinstance(err, IsADirectoryError):
        return "a folder, not a file"
    text = " ".join(str(err).split()) or type(err).__name__
    if text.startswith("cannot identify image file"):   # PIL's words for "not an image format it knows"
        return "not an image (no known image format)"
    return f"unreadable image: {text}"


def _collate(items: list) -> list:
    return items


# ---------------------------------------------------------------- prediction

def resolve(model: str | LoadedModel, arch: str | None = None) -> LoadedModel:
    """A model string (zoo:<id>, timm:<name>, run folder, checkpoint, weights file with ``arch``) or a loaded one.

    Checkpoints give the weights evaluate.py picks by default (EMA when the run chose its best by an EMA metric)."""
    return model if isinstance(model, LoadedModel) else hub.resolve(model, arch=arch, weights="auto")


def default_batch(loaded: LoadedModel) -> int:
    """Images per forward pass: 256 up to 64 px (per-operator overhead dominates small inputs on a CPU:
    ResNet-20 at 32 px ran 3.7x faster at 500 than at 64 on this project's loaded 2-core machine), 32 above."""
    return 256 if loaded.eval.size <= 64 else 32


def iter_predictions(loaded: LoadedModel, paths: list[str], *, topk: int = 5, batch: int | None = None,
                     tta: bool = False,
                     device: torch.device | str = "cpu", precision: str | None = None, workers: int = 0,
                     show_progress: bool | str = False) -> Iterator[Prediction]:
    """Yield one :class:`Prediction` per path, in order, as each batch is classified.

    ``precision`` None: the model's own (a run's training precision, fp32 otherwise), as evaluate.py."""
    device, batch = torch.device(device), batch or default_batch(loaded)
    precision = precision or loaded.precision
    k = max(1, min(topk, loaded.num_classes))
    labels = list(loaded.classes or [str(i) for i in range(loaded.num_classes)])
    names = class_names(loaded) if loaded.classes else [None] * loaded.num_classes
    model = loaded.model.to(device)
    if tta:
        model = TTA(model, None, flip=True)   # evaluate.py --tta: softmax averaged over horizontal flips
    normalize = Normalize(loaded.eval.mean, loaded.eval.std, loaded.in_chans).to(device)
    loader = torch.utils.data.DataLoader(_Files(paths, loaded), batch_size=batch, num_workers=workers,
                                         collate_fn=_collate)

    def good_images(items) -> torch.Tensor | None:
        good = [x for _, x, _ in items if x is not None]
        return normalize(torch.stack(good).to(device)) if good else None

    for items, logits in forward_batches(model, loader, device=device, precision=precision, models=[model],
                                         prepare=good_images, show_progress=show_progress, desc="predict",
                                         unit="img", total=len(paths), count=len):
        top: dict[int, tuple[list[float], list[int]]] = {}
        if logits is not None:
            probs, idx = logits.float().softmax(-1).topk(k, dim=-1)
            good = [i for i, x, _ in items if x is not None]
            top = {i: (p, j) for i, p, j in zip(good, probs.cpu().tolist(), idx.cpu().tolist())}
        for i, _, error in items:
            if error is not None:
                yield Prediction(paths[i], error=error)
            else:
                p, j = top[i]
                yield Prediction(paths[i], [labels[c] for c in j], [names[c] for c in j], p, j)


def predict(model_spec: str | LoadedModel, images: Iterable[str] | str, topk: int = 5, *, arch: str | None = None,
            batch: int | None = None, tta: bool = False, device: str | torch.device = "cpu",
            precision: str | None = None,
            workers: int = 0) -> list[Prediction]:
    """Classify ``images`` (files, folders, globs; see :func:`expand_images`) with ``model_spec``.

    Returns one :class:`Prediction` per file, in order; unreadable files carry ``error``.
    ``precision``: fp32, bf16 or fp16 autocast (None: the model's own); ``tta``: average over horizontal flips.
    """
    loaded = resolve(model_spec, arch)
    paths = expand_images([images] if isinstance(images, (str, Path)) else [str(i) for i in images])
    return list(iter_predictions(loaded, paths, topk=topk, batch=batch, tta=tta, device=device,
                                 precision=precision, workers=workers))


def card_id(loaded: LoadedModel) -> str | None:
    """The zoo card behind the model, when it came from one."""
    return loaded.spec[4:] if loaded.spec.startswith("zoo:") else None


# ---------------------------------------------------------------- output

def format_line(pred: Prediction) -> str:
    """``path  cat 0.912  dog 0.051 ...`` (``n01440764 (tench) 0.912`` where a name is known)."""
    if not pred.ok:
        return f"{pred.path}  error: {pred.error}"
    tops = (f"{label}{f' ({name})' if name else ''} {p:.3f}" for label, name, p in zip(pred.labels, pred.names,
                                                                                         pred.probs))
    return f"{pred.path}  " + "  ".join(tops)


def write_predictions(preds: list[Prediction], path: Path, *, loaded: LoadedModel, topk: int) -> Path:
    """One row per image as CSV (``.csv``) or JSON (``.json``), the model spec and card id in each
    CSV row and in the JSON header; written to a temporary file and renamed (never half a file)."""
    k = max(1, min(topk, loaded.num_classes))
    tmp = path.with_name(f".{path.name}.part{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "w", newline="") as f:
            if path.suffix == ".csv":
                writer = csv.writer(f)
                writer.writerow(["model", "card", "path", "error",
                                 *[f"{c}_{r}" for r in range(1, k + 1) for c in ("label", "name", "prob")]])
                for p in preds:
                    tops = [v for t in zip(p.labels, p.names, p.probs) for v in (t[0], t[1] or "", f"{t[2]:.6f}")]
                    tops += [""] * (3 * k - len(tops))   # a failed image: empty cells, the table stays rectangular
                    writer.writerow([loaded.spec, card_id(loaded) or "", p.path, p.error or "", *tops])
            else:
                rows = [{"path": p.path, "error": p.error,
                         "top": [{"label": lb, "name": n, "prob": round(pr, 6), "index": i}
                                 for lb, n, pr, i in zip(p.labels, p.names, p.probs, p.indices)]} for p in preds]
                json.dump({"model": loaded.spec, "card": card_id(loaded), "arch": loaded.arch, "topk": k,
                           "preprocessing": loaded.describe_preprocessing(), "images": len(preds),
                           "failed": sum(not p.ok for p in preds), "predictions": rows}, f, indent=1)
                f.write("\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


OUT_FORMATS = (".csv", ".json")

__all__ = [
    "OUT_FORMATS",
    "Prediction",
    "card_id",
    "class_names",
    "default_batch",
    "expand_images",
    "format_line",
    "iter_predictions",
    "predict",
    "resolve",
    "write_predictions",
]

"""Checkpoints: atomic writes, safe loads (``weights_only=True``), RNG capture.

A checkpoint is plain data (tensors, numbers, strings, lists, dicts), so it
loads with ``weights_only=True`` and carries everything needed to rebuild and
evaluate the model without the original recipe file: the resolved recipe, the
plan, class names and eval preprocessing.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

FORMAT = "trainkit-checkpoint/1"


class CheckpointError(RuntimeError):
    """A user-facing checkpoint problem; one line naming the file."""


def save_atomic(obj: dict, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path``.

    A crash (even SIGKILL) mid-write leaves the previous file intact; an exception while
    writing also removes the temp file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:   # a failed save (unpicklable object, disk full, Ctrl-C) leaves no stray temp file
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def torch_load(path: str | Path, what: str = "weights") -> object:
    """``torch.load`` on the CPU with ``weights_only=True``; any failure is one line naming the file.

    The one place the project unpickles: a file from the internet must not be able to run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every unpickling failure is the same user error
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"cannot load {what} {path} (truncated, not a {what} file, or it needs code "
                              f"to unpickle): {first}") from None


def read_weights_file(path: str | Path) -> object:
    """The content of a .safetensors file (a state dict) or of any torch file (see :func:`torch_load`)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return torch_load(path)
    try:
        return load_file(str(path))
    except Exception as err:  # noqa: BLE001 - SafetensorError, OSError: the same user error
        raise CheckpointError(f"cannot load weights {path}: {str(err).splitlines()[0]}") from None


def load_checkpoint(path: str | Path) -> dict:
    """Load a trainkit checkpoint on the CPU with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    data = torch_load(path, "checkpoint")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a trainkit checkpoint (no '{FORMAT}' marker); "
                              "plain state dicts go in model.pretrained")
    return data


def resolve_checkpoint(path: str | Path, which: str = "best") -> Path:
    """A run folder -> its ``best.pt`` (or ``last.pt``); a file stays as it is."""
    path = Path(path)
    if path.is_dir():
        candidate = path / f"{which}.pt"
        if not candidate.is_file() and which == "best":
            candidate = path / "last.pt"
        if not candidate.is_file():
            raise CheckpointError(f"no {which}.pt or last.pt in run folder {path}")
        return candidate
    if not path.exists():
        raise CheckpointError(f"checkpoint or run folder not found: {path}")
    return path


# ---------------------------------------------------------------- RNG state

def capture_rng() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

"""Whether timm's pretrained weights can be had *now*, decided in seconds (``timm:<name>`` sources).

Without a network, ``timm.create_model(name, pretrained=True)`` spends about a minute in the Hugging Face
client's retries before a truncated error. So before calling it: weights in the local Hugging Face cache are
loaded with the client switched to offline (no request at all); otherwise one TCP connect to the Hub's host,
with a short timeout, tells whether a download can start. Unreachable and not cached is one error line with the
three ways out: a ``zoo:`` card, a local weights file, or a filled cache with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Iterator
from urllib.parse import urlparse

import huggingface_hub
from huggingface_hub import constants as hf_constants

from trainkit.runtime.checkpoint import CheckpointError

CONNECT_TIMEOUT_S = 3.0
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def offline_requested() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on") \
        or bool(hf_constants.HF_HUB_OFFLINE)


def cached(hf_hub_id: str, filename: str | None = None) -> bool:
    """True when the Hugging Face cache holds this repo's weights file."""
    repo = hf_hub_id.split("@")[0]
    for name in ([filename] if filename else []) + list(WEIGHT_FILES):
        try:
            if isinstance(huggingface_hub.try_to_load_from_cache(repo, name), str):
                return True
        except Exception:  # noqa: BLE001 - a malformed id or cache: "not cached", the download path decides
            continue
    return False


def hub_reachable(timeout_s: float = CONNECT_TIMEOUT_S) -> tuple[bool, str]:
    """(reachable, why not): one TCP connect to the Hub endpoint's host ($HF_ENDPOINT moves it)."""
    url = urlparse(hf_constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout_s):
            return True, ""
    except OSError as err:
        return False, f"{url.hostname}:{port} unreachable: {err.strerror or type(err).__name__}"


@contextlib.contextmanager
def _client_offline() -> Iterator[None]:
    """The Hugging Face client reads its offline switch per call from its constants module."""
    before = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = before


def weights_access(spec: str, hf_hub_id: str | None, filename: str | None = None):
    """A context to call ``timm.create_model(..., pretrained=True)`` in: offline when the weights are cached,
    as is when the Hub is reachable; a CheckpointError line in seconds otherwise."""
    if not hf_hub_id:
        return contextlib.nullcontext()   # a plain URL download (torch.hub): its own timeout applies
    if cached(hf_hub_id, filename):
        return _client_offline()
    fixes = (f"use a zoo: card (trainkit zoo list), a local weights file (.safetensors/.pth with --arch), or "
             f"download it where there is internet (huggingface-cli download {hf_hub_id.split('@')[0]}) and run "
             f"with HF_HUB_OFFLINE=1")
    if offline_requested():
        raise CheckpointError(f"{spec}: HF_HUB_OFFLINE is set and the weights are not in the Hugging Face cache "
                              f"({hf_constants.HF_HUB_CACHE}); {fixes}")
    reachable, why = hub_reachable()
    if not reachable:
        raise CheckpointError(f"{spec}: the weights are not in the Hugging Face cache and the Hub cannot be "
                              f"reached ({why}); {fixes}")
    return contextlib.nullcontext()

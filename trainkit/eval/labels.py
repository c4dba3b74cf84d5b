"""Readable class names beside class ids: ImageNet synset folders (``n01440764``) -> ``tench`` (timm's ImageNetInfo).

One lookup for every place a person reads classes: confusion PNGs, per-class CSVs and predict's output.
"""

from __future__ import annotations

import re

from timm.data import ImageNetInfo

SYNSET_RE = re.compile(r"^n\d{8}$")


def synset_names(classes: list[str]) -> list[str | None]:
    """The short ImageNet name of every class when all of them are WordNet synsets timm knows; else Nones."""
    if not classes or not all(SYNSET_RE.match(c) for c in classes):
        return [None] * len(classes)
    try:
        info = ImageNetInfo()   # timm ships the synset -> description table
        known = dict(zip(info.label_names(), info.label_descriptions()))
        return [known[c].split(",")[0] if c in known else None for c in classes]
    except Exception:  # noqa: BLE001 - names are a convenience; the ids stay
        return [None] * len(classes)


def display_names(classes: list[str]) -> list[str]:
    """What a chart shows: the readable name where one is known, else the class id."""
    return [name or c for name, c in zip(synset_names(classes), classes)]

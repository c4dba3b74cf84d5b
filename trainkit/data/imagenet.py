"""ImageNet-1k's classes as timm ships them: the 1000 WordNet synsets in output order, and names.

A card of an ImageNet classifier carries the synsets as its classes, so a folder of photos
named by synset (``n01440764/``, ...) is matched to the model's outputs by name.
"""

from __future__ import annotations

from functools import lru_cache

from timm.data import ImageNetInfo


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[list[str], list[str]]:
    """(synsets, short names): ``n01440764`` -> ``tench`` (the first of WordNet's lemmas)."""
    info = ImageNetInfo("imagenet-1k")
    synsets = list(info.label_names())
    names = [info.label_name_to_description(s).split(",")[0].strip() for s in synsets]
    return synsets, names

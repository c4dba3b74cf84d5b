"""Registries: the only source of names (data sets, losses, schedules, optimizers, augmentation ops,
policies, ensemble rules, weight-importer key mappings, model sources, models).

The registries live here, in the configuration layer, and hold nothing but names and
builders; the components fill them (``@LOSSES.register("ce")`` in trainkit/train/losses.py).
The recipe schema checks a name by asking its registry, so it imports no torch code: the
first question a registry is asked imports its ``providers`` (the component modules that
register into it) by module name, not by an import statement in this layer.
"""

from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterable, TypeVar

from trainkit.config.schema import RecipeError, did_you_mean

T = TypeVar("T")


class UnknownNameError(RecipeError, LookupError):
    """An unknown registry name; the message names the recipe key and the choices."""


class Registry(Generic[T]):
    """Maps names to builders; an unknown name is one line naming the key, a close match and the choices."""

    def __init__(self, what: str, key: str = "", providers: Iterable[str] = ()):
        self.what, self.key, self._items = what, key, {}
        self._providers = list(providers)
        # Extra names a provider answers for without listing them one by one (timm's 1000+ models).
        self._contains: Callable[[str], bool] | None = None
        self._all_names: Callable[[], list[str]] | None = None

    def _load(self) -> None:
        while self._providers:
            importlib.import_module(self._providers.pop(0))

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.what} {name!r} registered twice")
            self._items[name] = obj
            return obj
        return add

    def answer_with(self, contains: Callable[[str], bool], names: Callable[[], list[str]]) -> None:
        """Let ``contains`` decide membership beyond the registered names (an external registry)."""
        self._contains, self._all_names = contains, names

    def get(self, name: str, key: str | None = None) -> T:
        self._load()
        if name in self._items:
            return self._items[name]
        raise UnknownNameError(self.unknown(name, key))

    def check(self, name: str, key: str | None = None) -> None:
        """Raise :class:`UnknownNameError` (a RecipeError) unless ``name`` is known."""
        if name not in self:
            raise UnknownNameError(self.unknown(name, key))

    def unknown(self, name: str, key: str | None = None) -> str:
        where = key if key is not None else self.key
        names = self.names() + (self._all_names() if self._all_names else [])
        shown = ", ".join(self.names()) if len(names) <= 40 else f"{len(names)} names"
        prefix = f"{where}: " if where else ""
        return f"{prefix}unknown {self.what} {name!r}{did_you_mean(name, names)} (known: {shown})"

    def names(self) -> list[str]:
        self._load()
        return list(self._items)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items or (self._contains is not None and self._contains(name))


# ---------------------------------------------------------------- every registry, and who fills it

MODELS: Registry = Registry("model", key="model.name", providers=["trainkit.models.build"])
DATASETS: Registry = Registry("data set", key="data.name", providers=["trainkit.data.sources"])
AUGMENT_OPS: Registry = Registry("augmentation op", key="augment", providers=["trainkit.data.augment"])
POLICIES: Registry = Registry("policy", key="augment.auto_augment", providers=["trainkit.data.augment"])
LOSSES: Registry = Registry("loss", key="loss.name", providers=["trainkit.train.losses"])
DISTILL_LOSSES: Registry = Registry("distillation kind", key="distill.kind", providers=["trainkit.train.distill"])
OPTIMIZERS: Registry = Registry("optimizer", key="optim.name", providers=["trainkit.train.optim"])
SCHEDULES: Registry = Registry("schedule", key="schedule.name", providers=["trainkit.train.optim"])
COMBINE_RULES: Registry = Registry("ensemble combine rule", key="combine", providers=["trainkit.models.ensemble"])
KEY_MAPS: Registry = Registry("key mapping", key="key_map.rule", providers=["trainkit.models.importers"])
MODEL_SOURCES: Registry = Registry("model source", key="model.pretrained",
                                   providers=["trainkit.models.hub", "trainkit.zoo.source"])

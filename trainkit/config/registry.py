"""A name -> builder registry, so choices are data and errors list what exists."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(LookupError):
    """An unknown registry name; the message names the recipe key and the choices."""


class Registry(Generic[T]):
    """Maps names to builders; ``get`` of an unknown name raises KeyError naming the choices."""

    def __init__(self, what: str, key: str = ""):
        self.what, self.key, self._items = what, key, {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.what} {name!r} registered twice")
            self._items[name] = obj
            return obj
        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._items), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            where = f"{self.key}: " if self.key else ""
            raise UnknownNameError(f"{where}unknown {self.what} {name!r}{hint} (known: {', '.join(self._items)})") from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

"""A tiny name -> factory registry, so model choices are data, not if/elif chains."""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories. ``@REG.register("name")`` adds one, ``REG.create(name, **kw)`` builds it."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return deco

    def get(self, key: str) -> Callable[..., T]:
        try:
            return self._factories[key]
        except KeyError:
            close = difflib.get_close_matches(key, self._factories, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {key!r}; available: {', '.join(sorted(self._factories))}.{hint}"
            ) from None

    def create(self, key: str, /, **kwargs) -> T:
        return self.get(key)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

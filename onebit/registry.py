"""One small registry: choose things by name, accept a string or an object."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> factory map with helpful errors.

    >>> MODELS = Registry("model")
    >>> @MODELS.register("tiny")
    ... def tiny(**kw): ...
    >>> MODELS.get("tiny")
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | T | None = None, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``. As a decorator: ``@reg.register("name")``, or ``@reg.register()`` /
        bare ``@reg.register`` to use the object's ``__name__``."""
        if name is not None and not isinstance(name, str):  # bare decorator: the object came in as `name`
            name, obj = None, name

        def _add(o: T) -> T:
            key = name or o.__name__  # type: ignore[attr-defined]
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = o
            return o

        return _add(obj) if obj is not None else _add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._items))})") from None

    def list(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def build(self, spec: Any, **kwargs: Any) -> Any:
        """``spec`` may be a registered name (built with ``kwargs``), ``None``, or an already built object."""
        if isinstance(spec, str):
            return self.get(spec)(**kwargs)
        return spec

"""The model registry: ``create_model(name, **kw)`` / ``list_models(pattern)``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from onebit.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator for a model entrypoint ``fn(num_classes=1000, **kw) -> nn.Module``; registered under its name."""
    return MODELS.register(fn.__name__, fn)  # type: ignore[return-value]


def create_model(name: str, num_classes: int = 1000, **kwargs) -> nn.Module:
    """Build a registered model. Unknown names raise a KeyError that lists the closest names."""
    return MODELS.get(name)(num_classes=num_classes, **kwargs)


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.list(pattern)

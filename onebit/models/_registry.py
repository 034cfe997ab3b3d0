"""The model registry: ``create_model(name, **kw)`` / ``list_models(pattern)``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

from torch import nn

from onebit.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator for a model entrypoint ``fn(num_classes=1000, **kw) -> nn.Module``; registered under its name.

    The returned entrypoint records how the model was built in ``model.onebit_spec`` (``{"name", "kwargs"}``, every
    argument with defaults applied), so a saved model can be rebuilt from its directory alone.
    """
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def entrypoint(*args, **kwargs) -> nn.Module:
        model = fn(*args, **kwargs)
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        spec_kwargs = dict(bound.arguments)
        for name, p in sig.parameters.items():  # flatten **kw into the recorded kwargs
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                spec_kwargs.update(spec_kwargs.pop(name, {}))
        model.onebit_spec = {"name": fn.__name__, "kwargs": spec_kwargs}
        return model

    MODELS.register(fn.__name__, entrypoint)
    return entrypoint


def create_model(name: str, num_classes: int | None = None, **kwargs) -> nn.Module:
    """Build a registered model (``num_classes`` defaults to the entrypoint's: 1000 for the ImageNet models).
    Unknown names raise a KeyError that lists the closest names."""
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return MODELS.get(name)(**kwargs)


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.list(pattern)

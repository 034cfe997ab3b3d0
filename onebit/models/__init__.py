"""Model zoo. Each family lives in its own file and registers its entrypoints with ``@register_model``; official
checkpoint layouts are registered next to the family they describe (see ``official.py`` for the engine)."""

from onebit.models import (  # noqa: F401  (registration side effects)
    bnext,
    bnext_quant,
    float_resnet,
    official,
    reactnet,
    resnet,
    small,
)
from onebit.models._registry import MODELS, create_model, list_models, register_model
from onebit.models.official import LAYOUTS, export_official, load_official

__all__ = ["LAYOUTS", "MODELS", "create_model", "export_official", "list_models", "load_official", "register_model"]

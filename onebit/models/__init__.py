"""Model zoo. Each family lives in its own file and registers its entrypoints with ``@register_model``."""

from onebit.models._registry import MODELS, create_model, list_models, register_model
from onebit.models import reactnet  # noqa: F401  (registers models)

__all__ = ["MODELS", "create_model", "list_models", "register_model"]

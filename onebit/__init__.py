"""onebit: train, analyse, compress and run binary neural networks (AdamBNN, BNext)."""

from onebit.layers import BinarizeConfig, binarize_, set_binarization
from onebit.models import create_model, list_models

__version__ = "0.1.0"

__all__ = ["BinarizeConfig", "__version__", "binarize_", "create_model", "list_models", "set_binarization"]

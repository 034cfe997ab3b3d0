"""Binary layers, the real-valued helpers around them, and model rewrites."""

from onebit.layers.activations import LearnableBias, RPReLU
from onebit.layers.binary import BinaryConv2d, BinaryLinear, BinaryMixin, is_binary_layer
from onebit.layers.convert import BinarizeConfig, binarize_, binary_layers, set_binarization

__all__ = [
    "BinarizeConfig",
    "BinaryConv2d",
    "BinaryLinear",
    "BinaryMixin",
    "LearnableBias",
    "RPReLU",
    "binarize_",
    "binary_layers",
    "is_binary_layer",
    "set_binarization",
]

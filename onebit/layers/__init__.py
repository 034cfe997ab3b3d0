"""Binary layers, the real-valued helpers around them, and model rewrites."""

from onebit.layers.activations import LearnableBias, RPReLU
from onebit.layers.binary import BinaryConv2d, BinaryLinear, BinaryMixin, is_binary_layer
from onebit.layers.convert import BinarizeConfig, binarize_, binary_layers, set_binarization, set_training_path
from onebit.layers.fused import TRAINING_PATHS, shift_and_conv
from onebit.layers.se import SqueezeExpand

__all__ = [
    "BinarizeConfig",
    "BinaryConv2d",
    "BinaryLinear",
    "BinaryMixin",
    "LearnableBias",
    "RPReLU",
    "SqueezeExpand",
    "TRAINING_PATHS",
    "binarize_",
    "binary_layers",
    "is_binary_layer",
    "set_binarization",
    "set_training_path",
    "shift_and_conv",
]

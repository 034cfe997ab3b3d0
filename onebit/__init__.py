"""onebit: train, analyse, compress and run binary neural networks (AdamBNN, BNext)."""

from onebit.export import export_onnx, export_packed, load_packed
from onebit.kernels import PackConfig, backend_info, pack_
from onebit.layers import BinarizeConfig, binarize_, set_binarization, set_training_path
from onebit.models import create_model, list_models
from onebit.quantize import QuantConfig, calibrate, finetune, quantize_

__version__ = "0.1.0"

__all__ = [
    "BinarizeConfig",
    "PackConfig",
    "QuantConfig",
    "__version__",
    "backend_info",
    "binarize_",
    "calibrate",
    "create_model",
    "export_onnx",
    "export_packed",
    "finetune",
    "list_models",
    "load_packed",
    "pack_",
    "quantize_",
    "set_binarization",
    "set_training_path",
]

"""Data sets and loaders: the core (:mod:`onebit.data.base`) and one module per data set, each registering its
builder in :data:`DATASETS` — the bundled digits (default), CIFAR-10/100 pickle batches, ImageNet-layout folders."""

from onebit.data import cifar, digits, folder  # noqa: F401  (registration side effects)
from onebit.data.base import (
    DATASETS,
    DataBundle,
    DataSetError,
    EpochLoader,
    TensorLoader,
    build_data,
    repeated_order,
)
from onebit.data.cifar import CIFAR_MEAN, CIFAR_STD, build_cifar, load_cifar, write_cifar_fixture
from onebit.data.digits import digits_normalisation, load_digits_tensors
from onebit.data.folder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FolderLoader,
    ImageFolder,
    build_imagenet,
    write_imagefolder_fixture,
)

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DataBundle",
    "DataSetError",
    "EpochLoader",
    "FolderLoader",
    "ImageFolder",
    "TensorLoader",
    "build_cifar",
    "build_data",
    "build_imagenet",
    "write_imagefolder_fixture",
    "digits_normalisation",
    "load_cifar",
    "load_digits_tensors",
    "repeated_order",
    "write_cifar_fixture",
]

"""Evaluation preprocessing per model family: the official evaluation transforms, and datasets that apply them.

* ``reactnet`` (ReActNet-A, AdamBNN, ReActNet ResNet-18, Bi-Real and the other binary ResNets): resize the shorter
  side to 256 (bilinear), centre crop 224, ImageNet mean/std;
* ``bnext`` (BNext-T/S/M/L, BNext-18 and their ``_quant`` versions): resize the shorter side to 235 = ⌊224 / 0.95⌋
  (bicubic), centre crop 224, ImageNet mean/std;
* ``cifar`` (a model trained on CIFAR): no resize (the 32 x 32 batches as stored), CIFAR mean/std.

(``docs/official-code.md``: ReActNet/AdamBNN "eval: resize 256, centre crop 224"; BNext "eval: resize 235, bicubic".)
The resize and centre crop are :class:`onebit.data.folder.ImageFolder`'s evaluation transform; this module only
chooses its parameters and the normalisation. Single image files (``onebit predict``) go through the same transform
(:class:`ImageFiles`); for the ``cifar`` family they are resized and cropped to 32.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from onebit.config import Interpolation
from onebit.data.base import DataSetError
from onebit.data.cifar import CIFAR_MEAN, CIFAR_STD, normalise
from onebit.data.folder import IMAGENET_MEAN, IMAGENET_STD, RESAMPLE, ImageFolder

__all__ = [
    "FAMILIES",
    "PRESETS",
    "ImageFiles",
    "Preprocess",
    "cifar_inputs",
    "folder_dataset",
    "model_family",
    "preprocess_for",
]


@dataclass(frozen=True)
class Preprocess:
    """An evaluation transform: resize the shorter side to ``resize`` (``None``: none, the CIFAR batches), centre-crop
    ``crop`` x ``crop``, scale to [0, 1], normalise with ``mean`` / ``std`` per channel."""

    family: str
    resize: int | None
    crop: int
    interpolation: Interpolation
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def describe(self) -> str:
        """One line, e.g. ``resize 235 bicubic, centre crop 224, mean (0.485, 0.456, 0.406) std (...)``."""
        size = f"resize {self.resize} {self.interpolation}, centre crop {self.crop}" if self.resize else "no resize"
        return f"{size}, mean {_fmt(self.mean)} std {_fmt(self.std)}"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "mean": list(self.mean), "std": list(self.std)}

    def image_resize(self) -> int:
        """The shorter-side size an image *file* is resized to: ``resize``, or ``crop`` for the CIFAR family."""
        return self.resize or self.crop


def _fmt(v: Sequence[float]) -> str:
    return "(" + ", ".join(f"{x:g}" for x in v) + ")"


#: The official evaluation transform of each family (see the module docstring).
PRESETS: dict[str, Preprocess] = {
    "reactnet": Preprocess("reactnet", 256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "bnext": Preprocess("bnext", 235, 224, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "cifar": Preprocess("cifar", None, 32, "bilinear", CIFAR_MEAN, CIFAR_STD),
}
FAMILIES = tuple(PRESETS)


def model_family(name: str) -> str:
    """The preprocessing family of a registered model name: ``bnext`` for every BNext (``bnext_*``, incl.
    ``_quant`` and the digits variants), ``reactnet`` for everything else (ReActNet-A, AdamBNN, the binary ResNets).
    Whether a model is a CIFAR model is a property of its training data, not of its name."""
    return "bnext" if name.startswith("bnext") else "reactnet"


def preprocess_for(
    family: str,
    *,
    resize: int | None = None,
    crop: int | None = None,
    interpolation: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Preprocess:
    """The family's :data:`PRESETS` entry with the given fields overridden (``None``: keep the preset's).

    Raises:
        DataSetError: an unknown family or interpolation, a non-positive size, a crop larger than the resize, a
            mean/std that is not three numbers, or a non-positive std.
    """
    try:
        pre = PRESETS[family]
    except KeyError:
        raise DataSetError(f"preprocessing family must be one of {', '.join(FAMILIES)}, got {family!r}") from None
    if interpolation is not None and interpolation not in RESAMPLE:
        raise DataSetError(f"interpolation must be one of {', '.join(RESAMPLE)}, got {interpolation!r}")
    for what, v in (("resize", resize), ("crop", crop)):
        if v is not None and v <= 0:
            raise DataSetError(f"{what} must be a positive number of pixels, got {v}")
    for what, v in (("mean", mean), ("std", std)):
        if v is not None and len(v) != 3:
            raise DataSetError(f"{what} must be three numbers (R G B), got {len(v)}: {list(v)}")
    if std is not None and min(std) <= 0:
        raise DataSetError(f"std must be positive, got {list(std)}")
    new = dataclasses.replace(
        pre,
        resize=pre.resize if resize is None else resize,
        crop=pre.crop if crop is None else crop,
        interpolation=pre.interpolation if interpolation is None else interpolation,  # type: ignore[arg-type]
        mean=pre.mean if mean is None else tuple(float(x) for x in mean),  # type: ignore[arg-type]
        std=pre.std if std is None else tuple(float(x) for x in std),  # type: ignore[arg-type]
    )
    if new.resize is not None and new.crop > new.resize:
        raise DataSetError(f"centre crop {new.crop} is larger than the resize {new.resize} (shorter side)")
    return new


def _set_normalisation(ds: ImageFolder, pre: Preprocess) -> ImageFolder:
    ds.mean = torch.tensor(pre.mean).view(3, 1, 1)
    ds.std = torch.tensor(pre.std).view(3, 1, 1)
    return ds


def folder_dataset(root: str | Path, pre: Preprocess) -> ImageFolder:
    """An evaluation :class:`~onebit.data.folder.ImageFolder` (class sub-folders of ``root``) with ``pre``'s
    resize, crop, interpolation and normalisation.

    Raises:
        DataSetError: see :class:`~onebit.data.folder.ImageFolder` (missing folder, no class folders, empty class).
    """
    ds = ImageFolder(root, False, pre.crop, pre.image_resize(), pre.interpolation)
    return _set_normalisation(ds, pre)


class ImageFiles(ImageFolder):
    """Image files given one by one (``onebit predict``), transformed as :func:`folder_dataset` transforms a folder's
    images. Items are ``(tensor [3, crop, crop], -1)``, or ``{"bad": path, "error": ...}`` for an unreadable file.

    Only the folder scan of :class:`~onebit.data.folder.ImageFolder` is replaced (each file is its own item, with no
    class); decoding, resize, crop and normalisation are that class's own.
    """

    def __init__(self, paths: Sequence[str | Path], pre: Preprocess) -> None:
        # deliberately not ImageFolder.__init__: there is no folder of class folders to scan
        self.root = Path(".")
        self.classes = []
        self.samples = [(Path(p), -1) for p in paths]
        self.train, self.size, self.val_resize = False, pre.crop, pre.image_resize()
        self.resample = RESAMPLE[pre.interpolation]
        _set_normalisation(self, pre)


def cifar_inputs(images: Tensor, pre: Preprocess) -> Tensor:
    """CIFAR uint8 images [N, 3, 32, 32] as the model's inputs: [0, 1], normalised with ``pre``'s mean/std, no resize.

    With the CIFAR mean/std this is :func:`onebit.data.cifar.normalise` (what training validated on), bit for bit.

    Raises:
        DataSetError: ``pre`` asks for a resize or a crop other than the native 32 (CIFAR is evaluated as stored).
    """
    if pre.resize is not None or pre.crop != images.shape[-1]:
        raise DataSetError(
            f"CIFAR images are evaluated at their native {images.shape[-1]} x {images.shape[-1]} without resize or "
            f"crop; got {pre.describe()}"
        )
    if (pre.mean, pre.std) == (tuple(CIFAR_MEAN), tuple(CIFAR_STD)):
        return normalise(images)
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    return (images.float().div_(255.0) - mean) / std

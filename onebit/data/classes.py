"""Class names of the data sets onebit evaluates on, for ``onebit predict`` and ``onebit eval --per-class``.

* ImageNet-1k: the 1000 names shipped as ``onebit/data/imagenet_classes.txt``, one a line, in the standard class
  order (index = position of the class's WordNet id among the sorted ids: 0 tench, 1 goldfish, ..., 999 toilet
  tissue), read with :mod:`importlib.resources` so an installed wheel finds them.
* ImageNet-1k WordNet ids: ``onebit/data/imagenet_wnids.txt``, the 1000 ids sorted (``n01440764`` ... ``n15075141``):
  the folder names of the ImageNet layout, whose position is the class index.
* CIFAR: the names a CIFAR folder's meta file holds (``batches.meta`` / ``meta``, read by the restricted unpickler
  of :mod:`onebit.data.cifar`), and the ten CIFAR-10 names of the official archive for when no folder is at hand.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from onebit.data.base import DataSetError
from onebit.data.cifar import _class_names, _folder, _layout, _read_pickle

__all__ = [
    "CIFAR10_CLASSES",
    "IMAGENET_CLASSES_FILE",
    "IMAGENET_WNIDS_FILE",
    "cifar_class_names",
    "imagenet_classes",
    "imagenet_wnids",
]

#: The file beside this module that holds the ImageNet-1k class names.
IMAGENET_CLASSES_FILE = "imagenet_classes.txt"

#: The file beside this module that holds the ImageNet-1k WordNet ids.
IMAGENET_WNIDS_FILE = "imagenet_wnids.txt"

#: CIFAR-10's ``label_names`` (``batches.meta`` of the official archive), in label order.
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def _shipped_lines(name: str) -> tuple[str, ...]:
    """The 1000 non-empty lines of a shipped ImageNet-1k list; DataSetError for a broken install."""
    ref = resources.files("onebit.data").joinpath(name)
    try:
        lines = tuple(ref.read_text(encoding="utf-8").splitlines())
    except OSError as e:
        raise DataSetError(f"onebit/data/{name}: unreadable ({e}); reinstall onebit") from None
    if len(lines) != 1000 or not all(n.strip() for n in lines):
        raise DataSetError(f"onebit/data/{name}: expected 1000 non-empty lines, found {len(lines)}; reinstall onebit")
    return lines


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in class-index order.

    Raises:
        DataSetError: the shipped file is missing or does not hold exactly 1000 non-empty lines (a broken install).
    """
    return _shipped_lines(IMAGENET_CLASSES_FILE)


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in class-index order (sorted), the class folder names of the ImageNet layout.

    Raises:
        DataSetError: a broken install (as :func:`imagenet_classes`).
    """
    return _shipped_lines(IMAGENET_WNIDS_FILE)


def cifar_class_names(root: str | Path, which: str = "cifar10") -> list[str]:
    """The class names of a CIFAR folder, read from its meta file alone (not the image batches).

    Args:
        root: the extracted archive folder (``cifar-10-batches-py`` / ``cifar-100-python``) or its parent.
        which: ``cifar10`` or ``cifar100`` (fine label names).

    Raises:
        DataSetError: an unknown variant, or a missing or malformed meta file (the message names it).
    """
    _, _, _, _, meta_file, names_key = _layout(which)
    meta = _folder(root, which) / meta_file
    return _class_names(meta, _read_pickle(meta, (names_key,))[names_key], names_key)

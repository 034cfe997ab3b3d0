"""CIFAR-10 / CIFAR-100 from the python-pickle batches of the official archives.

Layout (``root`` is the extracted folder, or its parent holding it):

* CIFAR-10, ``cifar-10-batches-py/``: ``data_batch_1`` ... ``data_batch_5`` and ``test_batch``, each a pickled dict
  with ``data`` (uint8 [N, 3072], channel-major: 1024 red, 1024 green, 1024 blue, rows of 32) and ``labels``
  (list of N ints); ``batches.meta`` with ``label_names``.
* CIFAR-100, ``cifar-100-python/``: ``train`` and ``test`` with ``data`` and ``fine_labels`` (and ``coarse_labels``);
  ``meta`` with ``fine_label_names``.

The pickles were written by Python 2 (cPickle, protocol 2, numpy 1.x arrays), so they are read with
``encoding="latin1"`` (keys become ``str``); ``bytes`` keys are accepted too, and so are the same dicts re-pickled by
Python 3 (any protocol, numpy 1 or 2). A pickle can run code when it is loaded, so the batches are read by a restricted
unpickler that builds only dicts, lists, tuples, ``str``, ``bytes``, numbers and numpy arrays: any other global in the
file (``os.system``, ``builtins.eval``, a class of some package, ...) is refused with a :class:`DataSetError` before
anything is called. Loaders hand out normalised float tensors (BNext's CIFAR mean/std); the random crop and flip run
per batch on the training device (:mod:`onebit.augment`, kind ``cifar``).
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from onebit.config import DataConfig
from onebit.data.base import DATASETS, DataBundle, DataSetError, TensorLoader, data_root

__all__ = ["CIFAR_MEAN", "CIFAR_STD", "build_cifar", "load_cifar", "normalise", "write_cifar_fixture"]

CIFAR_MEAN = (0.507, 0.487, 0.441)
CIFAR_STD = (0.267, 0.256, 0.276)

# which -> (folder name in the archive, train files, test file, label key, meta file, class-name key)
_LAYOUT: dict[str, tuple[str, list[str], str, str, str, str]] = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        "test_batch",
        "labels",
        "batches.meta",
        "label_names",
    ),
    "cifar100": ("cifar-100-python", ["train"], "test", "fine_labels", "meta", "fine_label_names"),
}


def _layout(which: str) -> tuple[str, list[str], str, str, str, str]:
    try:
        return _LAYOUT[which]
    except KeyError:
        raise DataSetError(f"CIFAR variant must be one of {sorted(_LAYOUT)}, got {which!r}") from None


def _folder(root: str | Path, which: str) -> Path:
    """The folder holding the batch files: ``root`` itself or the archive's folder inside it."""
    root = Path(root)
    inner = root / _layout(which)[0]
    return inner if inner.is_dir() else root


_HOLDS = "a CIFAR batch holds only numpy arrays, lists, dicts, bytes, str and int"


def _latin1_bytes(text: object, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stands in for ``_codecs.encode``, which Python 3 pickles ``bytes`` through below protocol 3, as
    ``_codecs.encode(<latin-1 text>, "latin1")``: that call and no other encoding."""
    if not isinstance(text, str) or encoding.lower().replace("-", "").replace("_", "") != "latin1":
        raise pickle.UnpicklingError(
            "_codecs.encode is only allowed as encode(str, 'latin1') (the bytes of protocol 2)"
        )
    return text.encode("latin1", errors)


_EMPTY = np.empty(1, np.uint8)
# numpy's own callables, taken from its reductions so that both module spellings map to the objects of the installed
# numpy (``numpy.core`` of numpy 1 / Python 2 pickles, ``numpy._core`` of numpy 2) without importing ``numpy.core``
_RECONSTRUCT = _EMPTY.__reduce__()[0]  # (_reconstruct, (ndarray, (0,), b"b"), state): protocols 0-4
_FROMBUFFER = _EMPTY.__reduce_ex__(5)[0]  # (_frombuffer, (buffer, dtype, shape, order)): protocol 5

#: The only globals a CIFAR batch may name: what numpy arrays (and Python 3's protocol-2 ``bytes``) pickle through.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler of one CIFAR file that resolves only :data:`ALLOWED_GLOBALS`.

    Every object a pickle builds by calling something (``REDUCE``, ``NEWOBJ``, ``INST``, ``OBJ``, the ``EXT``
    registry, and so every ``__reduce__`` trick) gets that callable from :meth:`find_class`; persistent ids are
    refused too. Containers, strings and numbers are built by the opcodes themselves and need no global.
    """

    def __init__(self, f: Any, path: Path) -> None:
        super().__init__(f, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataSetError(f"{self.path}: refuses to load pickled global {module}.{name}: {_HOLDS}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataSetError(f"{self.path}: refuses to load a pickled persistent id ({pid!r}): {_HOLDS}")


def _read_pickle(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """Unpickle one batch file (restricted, see :class:`_BatchUnpickler`) and check it holds ``keys``; errors name the
    file and the expected keys."""
    if not path.is_file():
        raise DataSetError(f"{path}: missing (expected a CIFAR pickle with keys {list(keys)})")
    try:
        with path.open("rb") as f:
            raw = _BatchUnpickler(f, path).load()
    except DataSetError:
        raise
    except Exception as e:  # truncated or foreign files raise many different errors; report them uniformly
        raise DataSetError(f"{path}: not a readable CIFAR pickle ({type(e).__name__}: {e})") from e
    if not isinstance(raw, dict):
        raise DataSetError(f"{path}: expected a pickled dict with keys {list(keys)}, got {type(raw).__name__}")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in raw.items()}
    missing = [k for k in keys if k not in d]
    if missing:
        raise DataSetError(f"{path}: missing key(s) {missing} (expected {list(keys)}, found {sorted(map(str, d))})")
    return d


def _labels(path: Path, value: Any, key: str) -> np.ndarray:
    """The label list of a batch as int64 [N]; anything but a flat sequence of integers is an error naming the file."""
    labels = np.asarray(value) if isinstance(value, (list, tuple, np.ndarray)) else None
    if labels is None or labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        got = type(value).__name__ if labels is None else f"{labels.dtype} {list(labels.shape)}"
        raise DataSetError(f"{path}: '{key}' must be a list of integer class indices, got {got}")
    return labels.astype(np.int64)


def _class_names(path: Path, value: Any, key: str) -> list[str]:
    """The class names of a meta file (``str``, or ``bytes`` read as latin-1)."""
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(c, (str, bytes)) for c in value):
        raise DataSetError(f"{path}: '{key}' must be a non-empty list of class names, got {type(value).__name__}")
    return [c.decode("latin1") if isinstance(c, bytes) else c for c in value]


def _read_split(folder: Path, files: list[str], label_key: str) -> tuple[Tensor, Tensor]:
    """Concatenate batch files into (uint8 [N, 3, 32, 32], int64 [N])."""
    xs, ys = [], []
    for name in files:
        path = folder / name
        d = _read_pickle(path, ("data", label_key))
        data = np.asarray(d["data"])
        labels = _labels(path, d[label_key], label_key)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataSetError(f"{path}: 'data' must be uint8 [N, 3072], got {data.dtype} {list(data.shape)}")
        if labels.shape != (len(data),):
            raise DataSetError(f"{path}: {len(data)} images but {labels.size} entries in '{label_key}'")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def load_cifar(root: str | Path, which: str = "cifar10") -> tuple[Tensor, Tensor, Tensor, Tensor, list[str]]:
    """Read a CIFAR data set.

    Args:
        root: the extracted archive folder (``cifar-10-batches-py`` / ``cifar-100-python``) or its parent.
        which: ``cifar10`` or ``cifar100`` (fine labels).

    Returns:
        ``(train_x, train_y, test_x, test_y, classes)``: images uint8 [N, 3, 32, 32], labels int64 [N], class names.

    Raises:
        DataSetError: the folder is missing or holds no batch files, or a file is missing, unreadable, names a
            global other than numpy's array reconstruction (a pickle that would run code), lacks a key, or has the
            wrong shape or label type; the message names it.
    """
    inner, train_files, test_file, label_key, meta_file, names_key = _layout(which)
    expected = f"{inner}/ or its files {meta_file}, {', '.join(train_files)}, {test_file}"
    folder = _folder(root, which)
    if not folder.exists():
        raise DataSetError(f"{folder}: no such directory (expected the extracted {which} python batches: {expected})")
    if not folder.is_dir():
        raise DataSetError(f"{folder}: not a directory (expected the extracted {which} python batches: {expected})")
    if not any((folder / name).exists() for name in [meta_file, *train_files, test_file]):
        raise DataSetError(f"{folder}: holds no {which} batch files (expected {expected})")
    meta = folder / meta_file
    classes = _class_names(meta, _read_pickle(meta, (names_key,))[names_key], names_key)
    train_x, train_y = _read_split(folder, train_files, label_key)
    test_x, test_y = _read_split(folder, [test_file], label_key)
    for name, y in (("train", train_y), ("test", test_y)):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise DataSetError(f"{folder}: {name} labels outside 0..{len(classes) - 1} ({len(classes)} classes)")
    return train_x, train_y, test_x, test_y, classes


def normalise(x: Tensor, image_size: int = 32) -> Tensor:
    """uint8 [N, 3, 32, 32] -> float, resized to ``image_size`` if different, normalised with the CIFAR mean/std."""
    out = x.float().div_(255.0)
    if image_size != out.shape[-1]:
        out = F.interpolate(out, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return (out - mean) / std


def build_cifar(cfg: Any, seed: int = 0) -> DataBundle:
    """Train/val loaders for CIFAR (the official test set serves as validation, as in the BNext CIFAR code).

    Args:
        cfg: a :class:`onebit.config.DataConfig`-like object: ``name`` (``cifar10``/``cifar100``), ``root``,
            ``image_size`` (32 native; another size is resized bilinearly), ``batch_size``, ``eval_batch_size``,
            ``limit_train``, ``limit_val``.
        seed: base seed of the training loader's per-epoch order.

    Returns:
        A :class:`onebit.data.DataBundle` of :class:`onebit.data.TensorLoader` over normalised float tensors, with no
        loader-side augmentation (``build_train_augment("cifar", ...)`` with ``CIFAR_MEAN``/``CIFAR_STD`` does it).
    """
    inner = _layout(cfg.name)[0]
    root = data_root(cfg, f"the {cfg.name} python pickle batches (the extracted {inner}/ or its parent)")
    xt, yt, xv, yv, classes = load_cifar(root, cfg.name)
    if cfg.limit_train:
        xt, yt = xt[: cfg.limit_train], yt[: cfg.limit_train]
    if cfg.limit_val:
        xv, yv = xv[: cfg.limit_val], yv[: cfg.limit_val]
    size = cfg.image_size or 32
    return DataBundle(
        train=TensorLoader(normalise(xt, size), yt, cfg.batch_size, shuffle=True, seed=seed),
        val=TensorLoader(normalise(xv, size), yv, cfg.eval_batch_size, shuffle=False),
        num_classes=len(classes),
        in_chans=3,
        image_size=size,
        description=f"{cfg.name} {size}x{size}: {len(yt)} train / {len(yv)} val, {len(classes)} classes",
    )


def write_cifar_fixture(
    root: str | Path, which: str = "cifar10", n_train: int = 20, n_test: int = 10, seed: int = 0
) -> Path:
    """Write a tiny CIFAR data set in the real pickle format (tests and smoke recipes).

    Random uint8 images and labels; CIFAR-10's training images are spread over the five ``data_batch_*`` files like
    the real archive. Class names are ``class_0`` ... (10 or 100 classes). The files are pickled the way the official
    archives were: Python 2 cPickle protocol 2, ``str`` keys and names as byte strings, the images a numpy
    1.x array (``numpy.core.multiarray._reconstruct``), the labels lists of ints (see :func:`_python2_pickle`).

    Args:
        root: parent folder; the archive folder (``cifar-10-batches-py`` / ``cifar-100-python``) is created inside.
        which: ``cifar10`` or ``cifar100``.
        n_train, n_test: image counts.
        seed: numpy seed of the pixels and labels.

    Returns:
        The archive folder written.
    """
    folder_name, train_files, test_file, label_key, meta_file, names_key = _layout(which)
    folder = Path(root) / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    k = 10 if which == "cifar10" else 100

    def split(n: int, name: str) -> dict[str, Any]:
        d: dict[str, Any] = {
            "batch_label": name,
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            label_key: rng.integers(0, k, n).tolist(),  # the archives store plain lists of ints
            "filenames": [f"img_{i}.png" for i in range(n)],
        }
        if which == "cifar100":
            d["coarse_labels"] = [c // 5 for c in d[label_key]]
        return d

    def dump(obj: dict[str, Any], name: str) -> None:
        (folder / name).write_bytes(_python2_pickle(obj))

    parts = np.array_split(np.arange(n_train), len(train_files))
    for name, part in zip(train_files, parts, strict=True):
        dump(split(len(part), name), name)
    dump(split(n_test, test_file), test_file)
    meta: dict[str, Any] = {names_key: [f"class_{i}" for i in range(k)]}
    if which == "cifar100":
        meta["coarse_label_names"] = [f"super_{i}" for i in range(20)]
    else:
        meta["num_cases_per_batch"] = max(len(p) for p in parts)
        meta["num_vis"] = 3072
    dump(meta, meta_file)
    return folder


def _python2_pickle(obj: Any) -> bytes:
    """``obj`` pickled as Python 2's cPickle (protocol 2) with numpy 1.x wrote the official archives.

    Handles what the archives hold: dicts, lists, tuples, ``str``/``bytes`` (written as Python 2 byte strings, which
    ``encoding="latin1"`` reads back as ``str``), ints, ``None``, booleans and numpy arrays of a plain dtype (through
    ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``, the raw data a byte string).
    """
    out = bytearray(b"\x80\x02")  # PROTO 2

    def put(o: Any) -> None:
        if o is None:
            out.extend(b"N")
        elif isinstance(o, bool):
            out.extend(b"\x88" if o else b"\x89")  # NEWTRUE / NEWFALSE
        elif isinstance(o, int):
            if 0 <= o < 256:
                out.extend(b"K" + struct.pack("<B", o))  # BININT1
            elif 0 <= o < 65536:
                out.extend(b"M" + struct.pack("<H", o))  # BININT2
            else:
                out.extend(b"J" + struct.pack("<i", o))  # BININT (the archives hold no larger ints)
        elif isinstance(o, (str, bytes)):
            b = o.encode("latin1") if isinstance(o, str) else o
            out.extend((b"U" + struct.pack("<B", len(b)) if len(b) < 256 else b"T" + struct.pack("<i", len(b))) + b)
        elif isinstance(o, tuple):
            out.extend(b"(")  # MARK ... TUPLE
            for x in o:
                put(x)
            out.extend(b"t")
        elif isinstance(o, list):
            out.extend(b"](")  # EMPTY_LIST MARK ... APPENDS
            for x in o:
                put(x)
            out.extend(b"e")
        elif isinstance(o, dict):
            out.extend(b"}(")  # EMPTY_DICT MARK ... SETITEMS
            for k, v in o.items():
                put(k)
                put(v)
            out.extend(b"u")
        elif isinstance(o, np.ndarray) and o.dtype.kind in "biuf":
            # _reconstruct(ndarray, (0,), 'b') then BUILD with (1, shape, dtype, fortran, raw bytes)
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
            put((0,))
            put("b")
            out.extend(b"\x87R(")  # TUPLE3 REDUCE MARK
            put(1)
            put(tuple(o.shape))
            out.extend(b"cnumpy\ndtype\n")  # dtype(kind+size, 0, 1) then BUILD with its state
            put((o.dtype.str[1:], 0, 1))
            out.extend(b"R")
            put((3, o.dtype.str[0], None, None, None, -1, -1, 0))
            out.extend(b"b")
            put(False)
            put(np.ascontiguousarray(o).tobytes())
            out.extend(b"tb")  # TUPLE BUILD
        else:
            raise TypeError(f"cannot write {type(o).__name__} in a CIFAR fixture")

    put(obj)
    out.extend(b".")  # STOP
    return bytes(out)


@DATASETS.register("cifar10")
def _cifar10(cfg: DataConfig, seed: int) -> DataBundle:
    return _cifar(cfg, seed)


@DATASETS.register("cifar100")
def _cifar100(cfg: DataConfig, seed: int) -> DataBundle:
    return _cifar(cfg, seed)


def _cifar(cfg: DataConfig, seed: int) -> DataBundle:
    bundle = build_cifar(cfg, seed)
    bundle.mean, bundle.std = tuple(CIFAR_MEAN), tuple(CIFAR_STD)
    return bundle

"""Evaluation of trained, imported or packed models on a labelled image set (top-1, top-5, per class), and top-k
prediction for single images: the library behind ``onebit eval`` and ``onebit predict``.

* :func:`load_eval_model`: a registered name, a model directory, a run directory (any checkpoint tag; ``best``
  falls back to ``last``) or a packed ``.safetensors`` artefact (:func:`onebit.export.load_packed`), with what
  is known about it (registry name, number of classes, preprocessing family, the run's data set).
* :func:`open_eval_data`: an ImageNet-layout folder (``DIR/val/<class>/*`` or ``DIR/<class>/*``) or CIFAR python
  batches (``cifar-10-batches-py`` / ``cifar-100-python``, the test split), preprocessed as
  :mod:`onebit.data.preprocess` says.
* :func:`evaluate`: counts top-k hits per class over batches; the counting is the functional core
  (:func:`topk_hits`, :func:`class_counts`), :class:`EvalResult` derives the accuracies.
* :func:`predict_images`: softmax top-k of image files.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from onebit.checkpoint import RunDir, RunDirError
from onebit.config import ConfigError, RunConfig
from onebit.data import DataSetError, FolderLoader, TensorLoader, load_cifar
from onebit.data.classes import CIFAR10_CLASSES, cifar_class_names, imagenet_classes, imagenet_wnids
from onebit.data.preprocess import ImageFiles, Preprocess, cifar_inputs, folder_dataset, model_family, preprocess_for
from onebit.export import ExportError, load_packed, packed_metadata
from onebit.models.io import ModelLoadError, input_channels, load_model

__all__ = [
    "EvalData",
    "EvalError",
    "EvalResult",
    "LoadedModel",
    "Prediction",
    "class_counts",
    "check_compatible",
    "class_names_for",
    "detect_data",
    "evaluate",
    "load_eval_model",
    "load_run_model",
    "model_num_classes",
    "open_eval_data",
    "predict_images",
    "resolve_preprocess",
    "topk_hits",
]


class EvalError(ValueError):
    """A model and data set that cannot be evaluated together, or an input that cannot be read; the message names
    the file or folder and what is wrong."""


# ---------------------------------------------------------------------------------------------------------- models
@dataclass
class LoadedModel:
    """A model to evaluate and what its source says about it.

    Attributes:
        model: the model, in eval mode, on the CPU.
        ref: the reference it was loaded from.
        kind: ``name`` (registered, untrained), ``model_dir``, ``run_dir`` or ``packed``.
        name: the registry name (the base model's for a ``quantized`` one).
        num_classes: output classes (``None`` if unknown).
        family: preprocessing family (:data:`onebit.data.preprocess.PRESETS`).
        data: the run's data set name (run directories only), e.g. ``cifar10``.
        data_root: the run's ``data.root``.
        checkpoint: the checkpoint folder read (run directories only).
        note: a remark for the user, e.g. that ``best`` fell back to ``last``.
    """

    model: nn.Module
    ref: str
    kind: str
    name: str
    num_classes: int | None
    family: str
    data: str | None = None
    data_root: str | None = None
    checkpoint: str | None = None
    note: str | None = None

    def describe(self) -> dict[str, Any]:
        out = {"ref": self.ref, "kind": self.kind, "name": self.name, "num_classes": self.num_classes}
        out.update({k: v for k, v in (("checkpoint", self.checkpoint), ("note", self.note)) if v is not None})
        return out


def _base_name(spec: dict[str, Any] | None) -> str:
    """The registry name of a spec; for a ``quantized`` model, the name of the model it quantised."""
    spec = spec or {}
    while spec.get("name") == "quantized" and isinstance(spec.get("kwargs", {}).get("base"), dict):
        spec = spec["kwargs"]["base"]
    return str(spec.get("name", "?"))


def _spec_classes(spec: dict[str, Any] | None) -> int | None:
    kwargs = (spec or {}).get("kwargs", {})
    n = kwargs.get("num_classes")
    if isinstance(n, int) and not isinstance(n, bool):
        return n
    base = kwargs.get("base")
    return _spec_classes(base) if isinstance(base, dict) else None


def model_num_classes(model: nn.Module) -> int | None:
    """The number of output classes: ``num_classes`` of the model's ``onebit_spec``, else the output size of its last
    ``nn.Linear``, else ``None``."""
    n = _spec_classes(getattr(model, "onebit_spec", None))
    if n is not None:
        return n
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def _checkpoint_tags(run: RunDir) -> list[str]:
    if not run.checkpoints.is_dir():
        return []
    tags = {p.name.removesuffix(".old") for p in run.checkpoints.iterdir() if p.is_dir() and p.name[0] != "."}
    return sorted(t for t in tags if run.checkpoint(t) is not None)


def load_run_model(run_dir: str | Path, checkpoint: str = "best") -> tuple[nn.Module, RunConfig, Path, str | None]:
    """The model of a run directory with the weights of one checkpoint, binarized as that checkpoint's stage trained.

    Args:
        run_dir: a ``onebit train`` run directory (``config.json`` + ``checkpoints/``).
        checkpoint: a checkpoint tag: ``best`` (falls back to ``last`` when the run has no best checkpoint),
            ``last``, or a stage tag such as ``stage2_step2``.

    Returns:
        ``(model, cfg, checkpoint folder, note)``; ``note`` says when ``best`` fell back to ``last``.

    Raises:
        EvalError: no such checkpoint (the message lists the tags the run has).
    """
    run = RunDir(run_dir)
    cfg = run.read_config()
    tag, note = checkpoint, None
    if checkpoint == "best" and run.checkpoint("best") is None:
        tag, note = "last", "no best checkpoint: evaluated the last one"
    ck = run.checkpoint(tag)
    if ck is None:
        tags = _checkpoint_tags(run)
        raise EvalError(
            f"{run_dir}: no checkpoint {checkpoint!r} (the run has {', '.join(tags) if tags else 'no checkpoint yet'})"
        )
    model, _ = load_model(run_dir, tag)  # binarized as the checkpoint's stage trained
    return model.eval(), cfg, ck, note


def _cifar_like(size: Any, num_classes: int | None) -> bool:
    """A 32-pixel input and 10 or 100 classes: a model trained on CIFAR (hint of a model dir or packed file)."""
    return isinstance(size, list) and len(size) == 3 and size[-1] == 32 and num_classes in (10, 100)


#: onebit's own errors, whose messages already name the file: passed through as they are
_OWN_ERRORS = (EvalError, ModelLoadError, DataSetError, ExportError, ConfigError, RunDirError)


def load_eval_model(ref: str | Path, checkpoint: str = "best") -> LoadedModel:
    """Load a model to evaluate from a packed ``.safetensors`` file, a model directory, a run directory or a
    registered name (see :class:`LoadedModel`).

    Family: from the registry name (:func:`onebit.data.preprocess.model_family`), except ``cifar`` for a run trained
    on CIFAR and for a model directory or packed file that records a 32 x 32 input and has 10 or 100 classes.

    Raises:
        EvalError, ModelLoadError, ExportError, CheckpointError, ConfigError: a reference that does not load; an
            unreadable or malformed file is an :class:`EvalError` naming it.
    """
    path = Path(ref)
    try:
        if path.is_file():
            model = load_packed(path)
            spec = getattr(model, "onebit_spec", None)
            meta = packed_metadata(path).get("meta") or {}
            n = model_num_classes(model)
            family = "cifar" if _cifar_like(meta.get("input_size"), n) else model_family(_base_name(spec))
            return LoadedModel(model.eval(), str(ref), "packed", _base_name(spec), n, family)
        if path.is_dir() and not (path / "model.json").exists() and RunDir(path).has_config():
            model, cfg, ck, note = load_run_model(path, checkpoint)
            name = _base_name(getattr(model, "onebit_spec", None))
            data = cfg.data.name
            family = "cifar" if data.startswith("cifar") else model_family(name)
            n = model_num_classes(model)
            return LoadedModel(model, str(ref), "run_dir", name, n, family, data, cfg.data.root, str(ck), note)
        if not path.exists() and path.suffix == ".safetensors":
            raise EvalError(f"{ref}: no such packed file")
        model, info = load_model(ref)
    except (OSError, ValueError, KeyError) as e:
        if isinstance(e, _OWN_ERRORS):
            raise
        raise EvalError(f"{ref}: unreadable ({type(e).__name__}: {e})") from e
    spec = getattr(model, "onebit_spec", None)
    n = model_num_classes(model)
    family = "cifar" if _cifar_like(info.get("input_size"), n) else model_family(_base_name(spec))
    kind = "model_dir" if path.is_dir() else "name"
    return LoadedModel(model.eval(), str(ref), kind, _base_name(spec), n, family)


def class_names_for(loaded: LoadedModel) -> list[str] | None:
    """Names of the model's output classes: ImageNet's for 1000 classes; for a run trained on CIFAR, the names in its
    data folder's meta file (CIFAR-10's official names when the folder cannot be read); else ``None``."""
    n = loaded.num_classes
    if n == 1000:
        return list(imagenet_classes())
    if loaded.data in ("cifar10", "cifar100"):
        if loaded.data_root:
            try:
                names = cifar_class_names(loaded.data_root, loaded.data)
            except DataSetError:
                names = []
            if len(names) == n:
                return names
        if loaded.data == "cifar10" and n == 10:
            return list(CIFAR10_CLASSES)
    return None


def resolve_preprocess(
    loaded: LoadedModel, data_kind: str | None = None, preset: str | None = None, **overrides: Any
) -> Preprocess:
    """The preprocessing for ``loaded`` on data of ``data_kind`` (``imagenet``, ``cifar10``, ``cifar100``, or
    ``None`` for image files): CIFAR batches always use the ``cifar`` family, otherwise ``preset`` or the model's
    family; ``overrides`` (``resize``, ``crop``, ``interpolation``, ``mean``, ``std``; ``None`` = keep) replace
    fields of the preset.

    Raises:
        DataSetError: see :func:`onebit.data.preprocess.preprocess_for`; a resize or crop asked for CIFAR batches.
    """
    if data_kind in ("cifar10", "cifar100"):
        for key in ("resize", "crop", "interpolation"):
            if overrides.get(key) is not None:
                raise DataSetError(f"CIFAR batches are evaluated at their native 32 x 32: --{key} does not apply")
        if preset not in (None, "cifar"):
            raise DataSetError(f"CIFAR batches use the cifar preprocessing, not {preset!r}")
        family = "cifar"
    else:
        family = preset or loaded.family
    return preprocess_for(family, **overrides)


# ------------------------------------------------------------------------------------------------------------ data
@dataclass
class EvalData:
    """Batches of a labelled evaluation set (re-iterable) and what they hold.

    Attributes:
        loader: yields ``(x [N, 3, S, S] float, y [N] int64)``.
        num_samples: images the loader visits (unreadable ones included; see ``skipped``).
        classes: class names of the data set (folder names / CIFAR names), in label order.
        kind: ``imagenet``, ``cifar10`` or ``cifar100``.
        path: the folder the images are read from.
        preprocess: the transform applied.
        skipped: unreadable images skipped so far (path -> error); only with ``skip_unreadable``.
    """

    loader: Iterable[tuple[Tensor, Tensor]]
    num_samples: int
    classes: list[str]
    kind: str
    path: Path
    preprocess: Preprocess
    skipped: dict[str, str] = field(default_factory=dict)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return iter(self.loader)


_CIFAR_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_CIFAR_FILES = {"cifar10": ("batches.meta", "test_batch"), "cifar100": ("meta", "test")}


def detect_data(path: str | Path) -> tuple[str, Path]:
    """What an evaluation data folder holds: ``("cifar10" | "cifar100", folder)`` for CIFAR python batches (the
    folder itself or its ``cifar-10-batches-py`` / ``cifar-100-python``), ``("imagenet", DIR/val)`` for an
    ImageNet layout with a ``val`` folder, else ``("imagenet", DIR)`` (``DIR`` is the folder of class folders).

    Raises:
        EvalError: a missing path, a file, or a folder with ``train/`` but no ``val/``.
    """
    path = Path(path)
    if not path.exists():
        raise EvalError(f"{path}: no such directory (expected DIR/val/<class>/*, DIR/<class>/*, or CIFAR batches)")
    if not path.is_dir():
        raise EvalError(f"{path}: not a directory (expected DIR/val/<class>/*, DIR/<class>/*, or CIFAR batches)")
    for kind, inner in _CIFAR_DIRS.items():
        for folder in (path / inner, path):
            if all((folder / f).is_file() for f in _CIFAR_FILES[kind]):
                return kind, folder
    if (path / "val").is_dir():
        return "imagenet", path / "val"
    if (path / "train").is_dir() and not any(p.is_dir() and p.name != "train" for p in path.iterdir()):
        raise EvalError(f"{path}: has train/ but no val/ folder (evaluation reads DIR/val/<class>/* or DIR/<class>/*)")
    return "imagenet", path


def _spread(n: int, limit: int) -> slice:
    """``limit`` evenly spaced items of ``n`` (all when ``limit`` is 0 or at least ``n``)."""
    if not limit or limit >= n:
        return slice(None)
    return slice(0, (n // limit) * limit, n // limit)


class _Checked:
    """Iterates a :class:`FolderLoader`, stopping at the first unreadable image unless they are to be skipped."""

    def __init__(self, loader: FolderLoader, skip: bool, skipped: dict[str, str]) -> None:
        self.loader, self.skip, self.skipped = loader, skip, skipped

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        self.loader.bad.clear()
        with warnings.catch_warnings():  # the loader's end-of-epoch warning: the result lists the skipped files
            warnings.filterwarnings("ignore", message="skipped .* unreadable image")
            for batch in self.loader:
                if self.loader.bad and not self.skip:
                    bad, error = next(iter(self.loader.bad.items()))
                    raise EvalError(f"{bad}: unreadable image ({error}); --skip-unreadable evaluates without it")
                yield batch
        self.skipped.clear()
        self.skipped.update(self.loader.bad)


def open_eval_data(
    path: str | Path,
    pre: Preprocess | Callable[[str], Preprocess],
    batch_size: int = 100,
    workers: int = 0,
    limit: int = 0,
    skip_unreadable: bool = False,
    num_classes: int | None = None,
) -> EvalData:
    """The evaluation batches of a data folder (see :func:`detect_data`).

    An ImageNet-1k model (``num_classes=1000``) on a folder holding only some of ImageNet's classes, named by their
    WordNet ids (a class subset of the val split): each image is labelled with its class's ImageNet index (position
    among the 1000 sorted ids), not its position among the folder's classes, and ``classes`` are the 1000 ids.

    Args:
        path: ImageNet-layout folder or CIFAR batches folder.
        pre: the preprocessing, or a function of the detected kind returning it (e.g. a partial
            :func:`resolve_preprocess`).
        batch_size, workers: loader batch size and DataLoader worker processes (image folders).
        limit: evaluate only this many evenly spaced images (0 = all).
        skip_unreadable: leave unreadable image files out (listed in ``skipped``) instead of stopping with an error.
        num_classes: the model's number of classes, when known (see above).

    Raises:
        EvalError, DataSetError: a missing or empty folder, no images, unreadable batches.
    """
    kind, folder = detect_data(path)
    pre = pre(kind) if callable(pre) else pre
    if kind == "imagenet":
        ds = folder_dataset(folder, pre)
        ds.samples = ds.samples[_spread(len(ds.samples), limit)]
        wnids = imagenet_wnids()
        if num_classes == len(wnids) and len(ds.classes) < len(wnids) and set(ds.classes) <= set(wnids):
            index = {w: i for i, w in enumerate(wnids)}
            ds.samples = [(path, index[ds.classes[label]]) for path, label in ds.samples]
            ds.classes = list(wnids)
        skipped: dict[str, str] = {}
        loader = FolderLoader(ds, batch_size, shuffle=False, num_workers=workers, seed=0)
        return EvalData(_Checked(loader, skip_unreadable, skipped), len(ds), ds.classes, kind, folder, pre, skipped)
    _, _, x, y, classes = load_cifar(folder, kind)
    if not len(y):
        raise EvalError(f"{folder}: the {kind} test batch holds no images")
    part = _spread(len(y), limit)
    x, y = cifar_inputs(x[part], pre), y[part]
    return EvalData(TensorLoader(x, y, batch_size, shuffle=False), len(y), classes, kind, folder, pre)


# ---------------------------------------------------------------------------------------------- counting (core)
def topk_hits(logits: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> Tensor:
    """Bool [len(ks), N]: whether each sample's label is among its ``k`` highest logits, for each ``k``.

    Ties are broken by :func:`torch.topk` (the lower index first on the CPU).
    """
    k_max = min(max(ks), logits.shape[1])
    pred = logits.topk(k_max, dim=1).indices
    match = pred == labels[:, None]
    return torch.stack([match[:, : min(k, k_max)].any(dim=1) for k in ks])


def class_counts(hits: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Int64 [1 + len(ks), num_classes]: row 0 the images of each class, row 1 + i the hits of ``ks[i]`` per class."""
    rows = [torch.ones_like(labels, dtype=torch.int64), *hits.to(torch.int64)]
    out = torch.zeros(len(rows), num_classes, dtype=torch.int64, device=labels.device)
    for i, r in enumerate(rows):
        out[i].index_add_(0, labels, r)
    return out


@dataclass
class EvalResult:
    """Counts of an evaluation and what derives from them.

    Attributes:
        ks: the k of each top-k row (1, and 5 when the model has at least 5 classes).
        counts: int64 [1 + len(ks), num_classes] (see :func:`class_counts`).
        time_s: wall time of the pass (data loading included).
        skipped: unreadable images left out (path -> error).
    """

    ks: tuple[int, ...]
    counts: Tensor
    time_s: float
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def images(self) -> int:
        return int(self.counts[0].sum())

    @property
    def num_classes(self) -> int:
        return int(self.counts.shape[1])

    def correct(self, k: int) -> int:
        return int(self.counts[1 + self.ks.index(k)].sum())

    def accuracy(self, k: int) -> float | None:
        """Fraction of images whose label is in the top ``k`` (``None`` when ``k`` was not counted)."""
        if k not in self.ks:
            return None
        return self.correct(k) / self.images if self.images else float("nan")

    @property
    def top1(self) -> float | None:
        return self.accuracy(1)

    @property
    def top5(self) -> float | None:
        return self.accuracy(5)

    def per_class(self, classes: Sequence[str] | None = None, names: Sequence[str] | None = None) -> list[dict]:
        """One row per class: ``index``, ``class`` (the data set's class name), ``name`` (e.g. the ImageNet name),
        ``images`` and ``top<k>`` (fraction, ``None`` for a class without images)."""
        rows = []
        for c in range(self.num_classes):
            n = int(self.counts[0, c])
            row: dict[str, Any] = {"index": c, "images": n}
            if classes is not None:
                row["class"] = classes[c]
            if names is not None:
                row["name"] = names[c]
            for i, k in enumerate(self.ks):
                row[f"top{k}"] = int(self.counts[1 + i, c]) / n if n else None
            rows.append(row)
        return rows

    def to_dict(self, classes: Sequence[str] | None = None, names: Sequence[str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"images": self.images, "classes": self.num_classes}
        for k in (1, 5):
            out[f"top{k}"] = self.accuracy(k)
            out[f"top{k}_correct"] = self.correct(k) if k in self.ks else None
        out["time_s"] = self.time_s
        out["images_per_s"] = self.images / self.time_s if self.time_s > 0 else None
        out["skipped"] = dict(self.skipped)
        out["per_class"] = self.per_class(classes, names)
        return out


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    num_classes: int | None = None,
    *,
    device: str | torch.device = "cpu",
    ks: Sequence[int] = (1, 5),
    on_batch: Callable[[int], None] | None = None,
) -> EvalResult:
    """Top-k accuracy of ``model`` in eval mode over labelled ``batches``, overall and per class.

    Args:
        model: the model (moved to ``device``; its train/eval mode is restored afterwards).
        batches: ``(x, y)`` pairs, e.g. an :class:`EvalData`.
        num_classes: the data set's number of classes (default: the model's); the logits must have that many.
        device: where to run.
        ks: the k of top-k; those above the number of classes are left out (top-5 only with 5 classes or more).
        on_batch: called with the number of images of each batch done (progress).

    Raises:
        EvalError: logits of another width than ``num_classes``, or labels outside ``0 .. num_classes - 1``.
    """
    device = torch.device(device)
    n_classes = num_classes or model_num_classes(model)
    if n_classes is None:
        raise EvalError("the number of classes is unknown: pass num_classes")
    ks = tuple(k for k in ks if k <= n_classes) or (1,)
    counts = torch.zeros(1 + len(ks), n_classes, dtype=torch.int64)
    was_training = model.training
    model.to(device).eval()
    t0 = time.perf_counter()
    try:
        for x, y in batches:
            logits = model(x.to(device, non_blocking=True))
            if logits.dim() != 2 or logits.shape[1] != n_classes:
                shape = tuple(logits.shape)
                raise EvalError(f"the model gives logits of shape {shape}, the data has {n_classes} classes")
            y = y.to(device)
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_classes):
                raise EvalError(f"labels outside 0 .. {n_classes - 1}")
            counts += class_counts(topk_hits(logits, y, ks), y, n_classes).cpu()
            if on_batch is not None:
                on_batch(len(y))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    finally:
        model.train(was_training)
    return EvalResult(ks, counts, time.perf_counter() - t0, dict(getattr(batches, "skipped", {}) or {}))


def check_compatible(loaded: LoadedModel, data: EvalData) -> None:
    """Raise :class:`EvalError` when the model's classes or input channels do not fit the data set."""
    if loaded.num_classes is not None and loaded.num_classes != len(data.classes):
        raise EvalError(
            f"{loaded.ref}: the model has {loaded.num_classes} classes, {data.path} has {len(data.classes)} "
            f"({data.kind}); evaluate it on a data set with the classes it was trained on"
        )
    channels = input_channels(loaded.model)
    if channels != 3:
        raise EvalError(f"{loaded.ref}: the model takes {channels}-channel input, {data.path} holds RGB images")


# ------------------------------------------------------------------------------------------------------- predict
@dataclass
class Prediction:
    """The top-k classes of one image: indices, softmax probabilities and (when known) class names."""

    image: str
    indices: list[int]
    probs: list[float]
    names: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        top = [{"index": i, "prob": p} for i, p in zip(self.indices, self.probs)]
        if self.names is not None:
            for t, name in zip(top, self.names):
                t["name"] = name
        return {"image": self.image, "top": top}


@torch.no_grad()
def predict_images(
    model: nn.Module,
    paths: Sequence[str | Path],
    pre: Preprocess,
    *,
    k: int = 5,
    device: str | torch.device = "cpu",
    names: Sequence[str] | None = None,
    batch_size: int = 32,
) -> list[Prediction]:
    """Softmax top-``k`` of each image file, preprocessed with ``pre``.

    Raises:
        EvalError: a missing or unreadable image (the message names it).
    """
    for p in paths:
        if not Path(p).is_file():
            raise EvalError(f"{p}: no such image file")
    ds = ImageFiles(paths, pre)
    device = torch.device(device)
    was_training = model.training
    model.to(device).eval()
    out: list[Prediction] = []
    try:
        for start in range(0, len(ds), batch_size):
            items = [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
            for it in items:
                if isinstance(it, dict):
                    raise EvalError(f"{it['bad']}: unreadable image ({it['error']})")
            logits = model(torch.stack([it[0] for it in items]).to(device)).float()
            probs = logits.softmax(dim=1)
            top = probs.topk(min(k, probs.shape[1]), dim=1)
            for j, (vals, idx) in enumerate(zip(top.values.cpu().tolist(), top.indices.cpu().tolist())):
                label = [names[i] for i in idx] if names is not None else None
                out.append(Prediction(str(paths[start + j]), idx, vals, label))
    finally:
        model.train(was_training)
    return out

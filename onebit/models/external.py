"""Third-party models by name and local weights files, for teachers (:func:`onebit.distill.load_teacher`).

* :func:`build_external` builds ``timm:NAME`` (``timm.create_model(NAME, pretrained=False)``) or ``torchvision:NAME``
  (``torchvision.models.get_model(NAME, weights=None)``, a classification model), randomly initialised, or with the
  library's pretrained weights when asked (``pretrained=True``: then timm/torchvision fetch them as they would on the
  user's machine; onebit itself never downloads anything).
  timm and torchvision are optional: ``pip install "onebit[timm]"`` / ``pip install "onebit[torchvision]"``
  (torchvision only works with the torch build it was released for, e.g. torchvision 0.29 with torch 2.14).
* :func:`read_state_dict` reads a local weights file: ``.safetensors``, or a ``.pth``/``.pt`` torch file read with
  ``torch.load(weights_only=True)`` (never unpickling code) holding a bare state dict or ``{"model": ...}`` /
  ``{"state_dict": ...}`` (a ``module.`` prefix on every key, as DataParallel writes, is removed).
* :func:`load_state` loads it strictly, after a key-by-key comparison that turns any mismatch into one line
  (missing/unexpected counts with the first names, shape mismatches). BatchNorm's ``num_batches_tracked`` may be
  missing (files saved before PyTorch 0.4.1 have none; BatchNorm fills it in).

Every error is an :class:`ExternalModelError`, a :class:`onebit.models.io.ModelLoadError` (a ``ValueError``), so the
command line reports it on one line with exit code 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from onebit.models.io import ModelLoadError

__all__ = ["EXTERNAL_SOURCES", "ExternalModelError", "build_external", "load_state", "read_state_dict"]

#: The third-party model sources and how to install each.
EXTERNAL_SOURCES: dict[str, str] = {
    "timm": 'pip install "onebit[timm]"',
    "torchvision": 'pip install "onebit[torchvision]" (a torchvision released for this torch build)',
}

_SHOWN = 3  # names shown per kind of mismatch


class ExternalModelError(ModelLoadError):
    """A third-party model that cannot be built, or a weights file that cannot be read or does not fit."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def _close(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _import(source: str):
    """The ``timm`` module, or ``torchvision.models``; a one-line error naming what to install when it is missing."""
    try:
        if source == "timm":
            import timm

            return timm
        import torchvision.models

        return torchvision.models
    except Exception as e:  # ImportError, or torchvision's RuntimeError/OSError for a torch build it was not made for
        raise ExternalModelError(
            f"{source}: models need {source}, which cannot be imported ({_first_line(e)}); "
            f"install it: {EXTERNAL_SOURCES[source]}"
        ) from None


def external_names(source: str) -> list[str]:
    """The classifiers ``source`` builds: ``timm.list_models()``, or torchvision's classification models
    (``torchvision.models.list_models(module=torchvision.models)``: no detection or segmentation model, whose
    builders would download backbone weights)."""
    lib = _import(source)
    return list(lib.list_models()) if source == "timm" else list(lib.list_models(module=lib))


def check_external(source: str, name: str) -> None:
    """Raise an :class:`ExternalModelError` (with close matches) unless ``source`` knows model ``name``."""
    if source not in EXTERNAL_SOURCES:
        raise ExternalModelError(f"unknown model source {source!r}; known: {', '.join(EXTERNAL_SOURCES)}")
    lib = _import(source)
    known = lib.is_model(name) if source == "timm" else name.lower() in external_names(source)
    if not known:
        base = name.split(".")[0] if source == "timm" else name.lower()  # timm: NAME.TAG names a weights tag
        what = "model" if source == "timm" else "classification model"
        raise ExternalModelError(
            f"{source}:{name}: {source} has no {what} {name!r}{_close(base, external_names(source))}"
        )


def build_external(source: str, name: str, num_classes: int | None = None, pretrained: bool = False) -> nn.Module:
    """Build ``source``'s model ``name``: without weights (``pretrained=False`` / ``weights=None``), or with the
    library's own pretrained weights (``pretrained=True``: timm's ``pretrained=True`` / torchvision's
    ``weights="DEFAULT"``, fetched by that library into its cache, as it would on the user's machine).

    Args:
        source: ``timm`` or ``torchvision``.
        name: the library's model name (timm also takes ``NAME.TAG``; the tag only selects a config).
        num_classes: the classifier width (``None``: the library's default, 1000 for ImageNet models); must be
            ``None`` with ``pretrained`` (a resized head would be random).
        pretrained: load the library's pretrained weights.
    """
    check_external(source, name)
    if pretrained and num_classes is not None:
        raise ExternalModelError(
            f"{source}:{name}: pretrained weights come with their own classifier; give no num_classes"
        )
    lib = _import(source)
    kwargs = {} if num_classes is None else {"num_classes": int(num_classes)}
    try:
        if source == "timm":
            return lib.create_model(name, pretrained=pretrained, **kwargs)
        return lib.get_model(name, weights="DEFAULT" if pretrained else None, **kwargs)
    except Exception as e:
        raise ExternalModelError(f"{source}:{name}: cannot build it: {_first_line(e)}") from None


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a local weights file (see the module docstring for the formats)."""
    path = Path(path)
    if not path.is_file():
        what = "a directory, not a weights file" if path.is_dir() else "no such weights file"
        raise ExternalModelError(f"{path}: {what}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)  # weights_only: never unpickle code
    except (OSError, RuntimeError, ValueError, SafetensorError, EOFError) as e:
        kind = "a safetensors file" if path.suffix == ".safetensors" else "a weights-only torch file"
        raise ExternalModelError(f"{path}: cannot read it as {kind}: {_first_line(e)}") from None
    except Exception as e:  # pickle.UnpicklingError and friends: not plain tensors
        raise ExternalModelError(f"{path}: cannot read it as a weights-only torch file: {_first_line(e)}") from None
    if isinstance(state, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not state:
        raise ExternalModelError(f"{path}: not a state dict (expected a mapping of names to tensors)")
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise ExternalModelError(
            f"{path}: not a state dict: {len(bad)} entries are not tensors ({', '.join(bad[:_SHOWN])})"
        )
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def _names(keys: list[str]) -> str:
    more = f", ... (+{len(keys) - _SHOWN})" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def load_state(model: nn.Module, state: Mapping[str, Tensor], source: str, what: str) -> None:
    """Load ``state`` (read from ``source``) into ``model`` strictly; any mismatch is one line naming ``what``."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {list(state[k].shape)}, model {list(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_names(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_names(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches ({_names(shapes)})")
    if problems:
        raise ExternalModelError(f"{source} does not fit {what}: " + "; ".join(problems))
    model.load_state_dict(dict(state), strict=True)

"""Import and export of the papers' released checkpoints (layouts: ``docs/official-code.md``, *Checkpoint layouts*).

A family file declares each official layout it can read with :func:`register_layout`; the engine
(:func:`load_official`, :func:`export_official`) is shared by all of them::

    model = load_official("bnext_tiny", "checkpoint.pth.tar")   # official state dict -> our model (eval mode)
    sd = export_official(model, "bnext_tiny")                    # our model -> official keys, shapes, dtypes

**Validation.** Every layout with a packaged key list (``onebit/models/official_keys/<name>.json``, a compact copy of
``<name>.keys.json``, the full key dump of the official model, made by :func:`compact_keys`) is checked key by key: a
missing key, a key of the wrong shape, or (with ``strict=True``) a key the official code never saves is an
:class:`OfficialCheckpointError` naming the key, the layout, what was expected and the closest keys. Every official
key must then map to a key of our model (or be declared unused by the layout's ``key_map`` returning ``None``), and
every key of our model must be filled, so an import can never leave part of the model at its random initialisation.
Temperatures, BN statistics and everything else in the state dict are state like any other and come from the
checkpoint.

**Files.** Only tensors are read: ``.pth``/``.pth.tar``/``.pt`` through ``torch.load(weights_only=True)`` (no pickled
code runs), ``.safetensors`` through safetensors. Checkpoint dicts holding ``state_dict`` or ``model`` are unwrapped
and a DataParallel/DDP ``module.`` prefix is removed.

This module is the engine only and imports no model family: each family registers its layouts next to its model
(ReActNet-A in ``reactnet.py``, BNext in ``bnext.py``/``bnext_quant.py``, the ResNet-style ones in ``resnet.py``).
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from onebit.registry import Registry

__all__ = [
    "LAYOUTS",
    "OfficialCheckpointError",
    "OfficialLayout",
    "compact_keys",
    "export_official",
    "load_official",
    "official_keys",
    "read_state_dict",
    "register_layout",
    "write_compact_keys",
]

#: Columns of a row of ``state_dict`` in a compact key file.
COMPACT_COLUMNS = ("key", "shape", "dtype", "kind", "note")
_PACKAGED_DIR = "official_keys"
_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}


class OfficialCheckpointError(ValueError):
    """An official checkpoint does not match its layout (missing, unexpected or misshapen keys, unreadable file)."""


@dataclass(frozen=True)
class OfficialLayout:
    """How one official state-dict layout maps onto one of our models.

    Attributes:
        name: stem of the keys file (``bnext_tiny``, ``reactnet_a_step1``, ...).
        build: builds our (randomly initialised) model for this layout.
        key_map: official key -> our state-dict key (``None``: known-unused, dropped on import).
        to_ours: converts an official tensor to our shape/layout (default identity), given the official key.
        to_official: the inverse of ``to_ours`` for export, given the official key.
        description: one line for listings.
        keys: name of the packaged key list to validate against (default: ``name``).
        model_only: fnmatch patterns of our state-dict keys that no official key provides; they keep the values
            ``build`` gave them on import and are not exported. Empty by default: every key of our model must come
            from the checkpoint.
        options: keyword arguments of ``build`` that :func:`load_official` passes through (e.g. ``se_bits`` of the
            quantised BNext): settings of the official constructor that change the forward but not the keys.
    """

    name: str
    build: Callable[[], nn.Module]
    key_map: Callable[[str], str | None]
    to_ours: Callable[[str, Tensor], Tensor] | None = None
    to_official: Callable[[str, Tensor], Tensor] | None = None
    description: str = ""
    keys: str | None = None
    model_only: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


LAYOUTS: Registry[OfficialLayout] = Registry("official layout")


def register_layout(layout: OfficialLayout) -> OfficialLayout:
    """Register an official layout under ``layout.name`` (a second registration of a name is an error)."""
    LAYOUTS.register(layout.name, layout)
    return layout


# ------------------------------------------------------------------------------------------------ compact key lists
def compact_keys(keys_json: dict) -> dict:
    """The compact, packaged form of one full key dump ``<model>.keys.json`` of an instantiated official model.

    Keeps per key only what import/export need — key, shape, dtype, kind (``param``/``buffer``) and the note
    (``""``, ``"unused_in_forward"`` or ``"no_effect_on_forward"``), as rows in the column order of
    ``COMPACT_COLUMNS`` — plus the ``param_counts`` and ``ops`` blocks that the complexity tests compare against.
    """
    rows = [
        [e["key"], [int(s) for s in e["shape"]], e["dtype"], e["kind"], e.get("note", "")]
        for e in keys_json["state_dict"]
    ]
    return {
        "model": keys_json["model"],
        "official_source": keys_json.get("official_source", ""),
        "columns": list(COMPACT_COLUMNS),
        "param_counts": keys_json["param_counts"],
        "ops": keys_json["ops"],
        "state_dict": rows,
    }


def _dump_compact(compact: dict) -> str:
    # No indentation, but one key per line so that a changed layout gives a readable diff.
    head = {k: v for k, v in compact.items() if k != "state_dict"}
    sep = (",", ":")
    body = ",\n".join(json.dumps(r, separators=sep) for r in compact["state_dict"])
    return json.dumps(head, separators=sep)[:-1] + ',"state_dict":[\n' + body + "\n]}\n"


def write_compact_keys(src_dir: str | os.PathLike, dst_dir: str | os.PathLike | None = None) -> list[Path]:
    """Regenerate the packaged key lists from a folder of full key dumps (one file per ``*.keys.json``).

    Args:
        src_dir: folder holding ``<model>.keys.json`` files.
        dst_dir: where to write ``<model>.json``; default the package's ``official_keys`` folder.

    Returns:
        The written paths.
    """
    dst = Path(dst_dir) if dst_dir is not None else Path(__file__).with_name(_PACKAGED_DIR)
    dst.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sorted(Path(src_dir).glob("*.keys.json")):
        compact = compact_keys(json.loads(src.read_text()))
        out = dst / f"{compact['model']}.json"
        out.write_text(_dump_compact(compact))
        written.append(out)
    official_keys.cache_clear()
    return written


@cache
def official_keys(name: str) -> dict | None:
    """The packaged compact key list of an official layout (see :func:`compact_keys`), or ``None`` if none ships.

    The result is cached and shared: treat it as read-only.
    """
    res = resources.files("onebit.models").joinpath(_PACKAGED_DIR, f"{name}.json")
    if not res.is_file():
        return None
    return json.loads(res.read_text())


def _spec_of(layout: OfficialLayout) -> dict[str, tuple[tuple[int, ...], str]] | None:
    compact = official_keys(layout.keys or layout.name)
    if compact is None:
        return None
    return {row[0]: (tuple(row[1]), row[2]) for row in compact["state_dict"]}


# ------------------------------------------------------------------------------------------------------ reading
def read_state_dict(source: Mapping[str, Any] | str | os.PathLike) -> dict[str, Tensor]:
    """A flat ``{key: tensor}`` from a state dict, a checkpoint dict or a file, with any ``module.`` prefix removed.

    Args:
        source: a state dict; a checkpoint dict holding it under ``state_dict`` or ``model``; or a path to a
            ``.pth``/``.pth.tar``/``.pt`` file (read with ``torch.load(weights_only=True, map_location="cpu")``, so no
            pickled code is executed) or a ``.safetensors`` file.

    Raises:
        OfficialCheckpointError: unreadable file, or entries that are not tensors.
    """
    obj: Any = source
    if isinstance(source, (str, os.PathLike)):
        obj = _load_file(Path(source))
    if not isinstance(obj, Mapping):
        raise OfficialCheckpointError(f"expected a state dict or a checkpoint dict, got {type(obj).__name__}")
    for wrapper in ("state_dict", "model"):
        # Training scripts save {"epoch", "state_dict", "optimizer", ...}; some tools use "model".
        if isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    bad = [k for k, v in obj.items() if not torch.is_tensor(v)]
    if bad:
        raise OfficialCheckpointError(
            f"not a state dict: {len(bad)} entries are not tensors (e.g. {bad[:3]}); expected {{key: tensor}} or a "
            "checkpoint dict holding one under 'state_dict' or 'model'"
        )
    state = dict(obj)
    # DataParallel/DDP prefix every key with "module." (twice when wrapped twice).
    while state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _load_file(path: Path) -> Any:
    """The object in a checkpoint file; every way the file can be unreadable is an :class:`OfficialCheckpointError`
    of one line naming the file (a truncated or corrupt file: ``<file>: not a readable checkpoint (<reason>)``)."""
    if not path.is_file():
        raise OfficialCheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except SafetensorError as e:  # a bad header, a truncated body, a file that is no safetensors file
            raise OfficialCheckpointError(f"{path}: not a readable checkpoint ({_reason(e)})") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as e:  # truncated/corrupt files raise RuntimeError, EOFError, IndexError, struct.error, ...
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
        found = re.search(r"WeightsUnpickler error:\s*(.*?)\.?(?:\n|\. |$)", text, re.S)
        detail = found.group(1).strip() if found else ""
        if "weights only load failed" not in text.lower() or detail.startswith("Unsupported operand"):
            # a bad opcode is a corrupt file; an object the safe unpickler refuses (a class, a call) is pickled code
            raise OfficialCheckpointError(f"{path}: not a readable checkpoint ({detail or _reason(e)})") from e
        raise OfficialCheckpointError(
            f"{path}: cannot read it with torch.load(weights_only=True) ({detail or _reason(e)}): "
            "only tensors and plain containers are read (pickled code is never executed); if you trust the file, "
            "re-save its state dict elsewhere with torch.save(torch.load(path, weights_only=False)['state_dict'], "
            "new_path)."
        ) from e


def _reason(e: BaseException) -> str:
    """The first sentence of an exception's message, on one line (its type name when the message is empty)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    first = text.splitlines()[0].split(". ")[0].rstrip(".").strip() if text else ""
    if not first:
        return "the file ends early" if isinstance(e, EOFError) else type(e).__name__
    return first


# ---------------------------------------------------------------------------------------------------- import/export
def _closest(key: str, candidates: Iterable[str], n: int = 3) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=n, cutoff=0.4)
    return f" (closest: {', '.join(map(repr, close))})" if close else ""


def _listing(keys: list[str], limit: int = 5) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(map(repr, keys[:limit])) + more


def _check_against_spec(
    state: dict[str, Tensor], spec: dict[str, tuple[tuple[int, ...], str]], name: str, strict: bool
) -> dict[str, Tensor]:
    missing = [k for k in spec if k not in state]
    unexpected = [k for k in state if k not in spec]
    if missing:
        # Renamed keys (a wrong layout, e.g. flat `weights` vs 4-D `weight`) show up as missing + unexpected pairs.
        extra = (
            f"; the checkpoint also has {len(unexpected)} keys the layout lacks, e.g. {unexpected[0]!r}"
            f"{_closest(unexpected[0], spec)}"
            if unexpected
            else ""
        )
        fits = _layouts_with_keys(set(state))
        if fits:
            extra += f"; these keys are exactly those of layout(s) {', '.join(map(repr, fits))}"
        raise OfficialCheckpointError(
            f"layout {name!r}: {len(missing)} official keys are missing: {_listing(missing)}; "
            f"first missing key {missing[0]!r} (expected shape {list(spec[missing[0]][0])}, "
            f"{spec[missing[0]][1]}){_closest(missing[0], state)}{extra}"
        )
    if unexpected:
        msg = f"layout {name!r}: {len(unexpected)} keys are not in the official layout: {_listing(unexpected)}"
        if strict:
            raise OfficialCheckpointError(
                f"{msg}; e.g. {unexpected[0]!r}{_closest(unexpected[0], spec)}. Pass strict=False to ignore them."
            )
        warnings.warn(f"{msg}; ignored (strict=False)", stacklevel=3)
    for k, (shape, dtype) in spec.items():
        t = state[k]
        if tuple(t.shape) != shape:
            raise OfficialCheckpointError(
                f"layout {name!r}: key {k!r} has shape {list(t.shape)}, the official layout has {list(shape)}"
            )
        if t.is_floating_point() != _DTYPES[dtype].is_floating_point:
            raise OfficialCheckpointError(f"layout {name!r}: key {k!r} has dtype {t.dtype}, expected {dtype}")
    return {k: state[k] for k in spec}


def _layouts_with_keys(keys: set[str]) -> list[str]:
    """Registered layouts whose official key set is exactly ``keys`` (to suggest the right layout in errors)."""
    found = []
    for n in LAYOUTS.list():
        spec = _spec_of(LAYOUTS.get(n))
        if spec is not None and set(spec) == keys:
            found.append(n)
    return found


def _is_model_only(key: str, layout: OfficialLayout) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in layout.model_only)


def load_official(
    layout: str,
    state_dict_or_path: Mapping[str, Any] | str | os.PathLike,
    *,
    strict: bool = True,
    model: nn.Module | None = None,
    **options: Any,
) -> nn.Module:
    """Build our model for an official layout and fill it from an official checkpoint.

    Args:
        layout: a registered layout name (``LAYOUTS.list()``), e.g. ``"bnext_tiny"`` or ``"reactnet_a"``.
        state_dict_or_path: see :func:`read_state_dict` (state dict, checkpoint dict, ``module.`` prefix, file).
        strict: if ``False``, keys that the official layout does not contain are ignored with a warning instead of
            raising. Missing and misshapen keys are always errors.
        model: load into this model instead of building a new one with the layout's ``build``.
        **options: the layout's constructor options (``OfficialLayout.options``), passed to its ``build``, e.g.
            ``load_official("bnext_tiny_quant", sd, se_bits=4)``. Not allowed together with ``model``.

    Returns:
        Our model holding the checkpoint's values, **in eval mode**: a training-mode forward would update the BN
        statistics and (BNext) clamp latent weights in place, so the loaded state would no longer be the checkpoint.
        Call ``.train()`` to fine-tune. Values of keys the layout declares unused are kept on the model (attribute
        ``_official_unused``) so that :func:`export_official` reproduces them bit-exactly.

    Raises:
        KeyError: unknown layout (lists the closest names).
        OfficialCheckpointError: a missing, unexpected (``strict=True``) or misshapen key, naming it, the layout,
            what was expected and the closest keys; or a layout that does not cover our model.
        TypeError: an option the layout does not take, or options together with ``model``.
    """
    lay = LAYOUTS.get(layout)
    unknown = sorted(set(options) - set(lay.options))
    if unknown:
        takes = f"takes only {', '.join(map(repr, lay.options))}" if lay.options else "takes no options"
        raise TypeError(f"layout {lay.name!r} {takes}; got {', '.join(map(repr, unknown))}")
    if options and model is not None:
        raise TypeError(f"layout {lay.name!r}: options {sorted(options)} configure a built model; not with model=")
    state = read_state_dict(state_dict_or_path)
    spec = _spec_of(lay)
    if spec is not None:
        state = _check_against_spec(state, spec, lay.name, strict)
    model = model if model is not None else lay.build(**options)
    ours = model.state_dict()
    mapped: dict[str, Tensor] = {}
    source_of: dict[str, str] = {}
    unused: dict[str, Tensor] = {}
    for k, v in state.items():
        ok = lay.key_map(k)
        if ok is None:
            unused[k] = v
            continue
        if ok not in ours:
            if spec is None and not strict:
                warnings.warn(f"layout {lay.name!r}: key {k!r} has no place in our model; ignored", stacklevel=2)
                continue
            raise OfficialCheckpointError(
                f"layout {lay.name!r}: official key {k!r} maps to {ok!r}, which our model does not have"
                f"{_closest(ok, ours)}"
            )
        if ok in source_of:
            raise OfficialCheckpointError(
                f"layout {lay.name!r}: official keys {source_of[ok]!r} and {k!r} both map to our key {ok!r}"
            )
        t = lay.to_ours(k, v) if lay.to_ours is not None else v
        if t.shape != ours[ok].shape:
            raise OfficialCheckpointError(
                f"layout {lay.name!r}: official key {k!r} (shape {list(v.shape)}) gives shape {list(t.shape)} for "
                f"our key {ok!r}, which has shape {list(ours[ok].shape)}"
            )
        mapped[ok], source_of[ok] = t, k
    unfilled = [k for k in ours if k not in mapped and not _is_model_only(k, lay)]
    if unfilled:
        raise OfficialCheckpointError(
            f"layout {lay.name!r}: {len(unfilled)} keys of our model get no value from the checkpoint: "
            f"{_listing(unfilled)}; first one {unfilled[0]!r}{_closest(unfilled[0], state)}"
        )
    model.load_state_dict(mapped, strict=False)  # completeness was checked above, with the layout's exceptions
    if unused:
        store = dict(getattr(model, "_official_unused", {}))
        store[lay.name] = {k: v.detach().clone() for k, v in unused.items()}
        model._official_unused = store
    return model.eval()


def export_official(model: nn.Module, layout: str) -> dict[str, Tensor]:
    """Our model's state in an official layout: the keys, shapes and dtypes of the official key list, on CPU.

    Import followed by export reproduces the official state dict bit-exactly (keys the layout declares unused are
    taken from the imported checkpoint when the model came from :func:`load_official`, else zero-filled).

    Args:
        model: a model of the layout's architecture (as built by the layout, or loaded with :func:`load_official`).
        layout: a registered layout name with a packaged key list.

    Returns:
        ``{official key: tensor}`` in the official order; tensors are copies (float64 models are cast back to the
        official float32).

    Raises:
        OfficialCheckpointError: the layout has no key list, or the model does not fit the layout (a key is missing,
            has the wrong shape, or a key of the model would not be exported).
    """
    lay = LAYOUTS.get(layout)
    spec = _spec_of(lay)
    if spec is None:
        raise OfficialCheckpointError(f"layout {lay.name!r} has no packaged key list; cannot export")
    ours = model.state_dict()
    kept = getattr(model, "_official_unused", {}).get(lay.name, {})
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    for k, (shape, dtype) in spec.items():
        ok = lay.key_map(k)
        if ok is None:
            t = kept.get(k)
            if t is None or tuple(t.shape) != shape:
                t = torch.zeros(shape, dtype=_DTYPES[dtype])
        else:
            if ok not in ours:
                raise OfficialCheckpointError(
                    f"layout {lay.name!r}: our key {ok!r} (for official {k!r}) is not in the model{_closest(ok, ours)}"
                    f"; is this a {lay.name} model?"
                )
            t = ours[ok]
            t = lay.to_official(k, t) if lay.to_official is not None else t
            used.add(ok)
        if tuple(t.shape) != shape:
            raise OfficialCheckpointError(
                f"layout {lay.name!r}: official key {k!r} needs shape {list(shape)}, the model gives {list(t.shape)}"
            )
        out[k] = t.detach().to(device="cpu", dtype=_DTYPES[dtype], copy=True).contiguous()
    lost = [k for k in ours if k not in used and not _is_model_only(k, lay)]
    if lost:
        raise OfficialCheckpointError(
            f"layout {lay.name!r}: {len(lost)} keys of the model have no official counterpart and would be lost: "
            f"{_listing(lost)}; is this a {lay.name} model?"
        )
    return out

"""Deployable artefacts of a binary network: the packed 1-bit safetensors file and an ONNX inference graph.

**Packed artefact** (:func:`export_packed` / :func:`load_packed`). One safetensors file whose metadata names the
registered model (``model.onebit_spec``: name + kwargs) it is rebuilt from, and whose tensors are

* ``<layer>.weight.bits`` (uint8 ``[out, ceil(n / 8)]``) for every binary layer with ``binarize_weight`` on: the signs
  of the weight *as the eval forward uses it*, flattened over the n input values of each output channel and packed
  with :func:`onebit.kernels.pack.pack_bits` (little bit order, bit 1 = +1);
* ``<layer>.weight.scale`` ([out], the weight's dtype) beside it when the eval weight is ``scale · (±1)`` with a scale
  other than 1 (ReActNet's alpha = mean|W| per output channel, already computed: the scale is *folded*, the artefact
  holds the weight the forward multiplies with, not the latent weight);
* ``<layer>.weight.zeros`` (int32 flat indices), only when the eval weight has exact zeros: the official sign(0) = 0
  that one bit cannot hold (a trained latent weight is practically never exactly 0, so this is normally absent);
* ``<layer>.weight.codes`` (uint8) plus ``.min``, ``.max``, ``.scale`` for a layer quantised by
  :func:`onebit.quantize.quantize_`: its integer codes packed at their bit width (b bits each, in little bit order,
  so two 4-bit codes per byte) and the floats that reconstruct the quantised weight bit-exactly;
* ``real.float32``: every other parameter and buffer, in state-dict order, concatenated into one flat tensor per
  dtype (the rebuilt model knows each name and shape; metadata ``onebit.real_layout`` is a digest of them that
  catches a file written for another structure). BN running statistics are included: they are needed at eval, and
  folding them into the affine parameters would not be bit-exact. ``num_batches_tracked`` (training only) and the
  buffers of folded weight binarizers (the temperature) are left out.

So the file is #Param (MB) (binary weights at 1 bit, every other parameter at 32 bit) plus the BN statistics
(1.25 % for BNext-T, 1.1 % for ReActNet-A), the per-channel scales (0.55 % for ReActNet-A, none for BNext) and a few
kB of header: 1.013 x #Param for BNext-T (13.49 MiB), 1.018 x for ReActNet-A. :func:`load_packed` rebuilds the model
from the registry, writes the weights back and replaces every weight binarizer by :class:`FoldedWeight` (the weight
*is* the binarized weight), so the loaded eval model computes the logits of the exported eval model exactly.

**ONNX** (:func:`export_onnx`): an inference copy (:func:`inference_model`) with binarized weights baked in as
constants, input binarizers as a plain ``Sign`` (sign(0) = 0, as the eval model; ``x >= 0`` when a binarizer uses
sign(0) = +1), zero padding of the binarized input kept in ``Conv``'s pads, and no straight-through residue (no
autograd Functions, clamps of latent weights or λ, abs-means). Needs ``pip install "onebit[onnx]"``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from onebit.analysis.complexity import quantized_size_mib
from onebit.binarize import ApproxSign, Binarizer, Identity, ProgressiveSign, SignIdentitySTE, SignSTE
from onebit.kernels.pack import pack_bits, packed_length, to_bits, unpack_bits
from onebit.layers.binary import BinaryMixin
from onebit.layers.quant import QuantMixin, activation_dims, asym_quantize
from onebit.models._registry import MODELS
from onebit.report import atomic_write

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ExportError",
    "FoldedWeight",
    "PlainSign",
    "QuantizedInference",
    "binarized_weight",
    "compare_onnx",
    "export_onnx",
    "export_packed",
    "fold_weights_",
    "inference_model",
    "load_packed",
    "param_mb",
]

#: ``metadata["onebit.format"]`` of a packed artefact, and the layout version this module writes and reads.
FORMAT = "onebit.packed"
FORMAT_VERSION = 1
_BITS, _SCALE, _ZEROS = ".weight.bits", ".weight.scale", ".weight.zeros"
_CODES, _QMIN, _QMAX, _QSCALE = ".weight.codes", ".weight.min", ".weight.max", ".weight.qscale"


class ExportError(ValueError):
    """A model that cannot be exported as asked, or a packed file that cannot be read; the message says which
    layer or file, and what is missing or wrong."""


# ------------------------------------------------------------------------------------------------- inference modules
class FoldedWeight(Binarizer):
    """Weight "binarizer" of a layer whose weight already *is* its binarized eval weight (``scale · (±1)``): returns
    it unchanged. Used by :func:`load_packed` and :func:`inference_model`; re-binarizing would not be exact for
    ReActNet's alpha · sign(W) (the abs-mean of n copies of alpha is not always alpha in floating point)."""

    def forward(self, w: Tensor) -> Tensor:
        return w


class PlainSign(Binarizer):
    """sign(x) with ``zero`` for exact zeros, without a straight-through Function: what an exporter should see.

    ``zero=0`` exports as ONNX ``Sign``; ``zero=1`` as ``Where(x >= 0, 1, -1)``.
    """

    def __init__(self, zero: float = 0.0) -> None:
        super().__init__()
        if zero not in (0.0, 1.0, -1.0):
            raise ValueError(f"PlainSign: zero must be 0, 1 or -1, got {zero}")
        self.zero = float(zero)

    def forward(self, x: Tensor) -> Tensor:
        if self.zero == 0.0:
            return torch.sign(x)
        one = torch.ones((), dtype=x.dtype, device=x.device)
        if self.zero == 1.0:
            return torch.where(x >= 0, one, -one)
        return torch.where(x > 0, one, -one)

    def extra_repr(self) -> str:
        return f"zero={self.zero}"


# ---------------------------------------------------------------------------------------------- binarized weights
def _packable_layers(model: nn.Module) -> list[tuple[str, BinaryMixin]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BinaryMixin) and m.binarize_weight]


@torch.no_grad()
def _eval_weight(layer: BinaryMixin) -> Tensor:
    """The weight the layer's eval forward uses, computed without clamping the caller's latent weight in place."""
    w = layer.weight.detach()
    if layer.latent_clip is not None and layer.latent_clip_when == "always":
        w = w.clamp(-layer.latent_clip, layer.latent_clip)
    if isinstance(layer.weight_binarizer, FoldedWeight):
        return w
    # ProgressiveSign runs its clamp(W / T) branch in place on a fresh tensor, never on w itself
    return layer.weight_binarizer(w)


@torch.no_grad()
def binarized_weight(layer: BinaryMixin, name: str = "layer") -> tuple[Tensor, Tensor, Tensor]:
    """The eval weight of a binary layer split as ``scale · sign``: ``(signs, scale, zeros)``.

    Args:
        layer: a binary conv/linear with ``binarize_weight`` on.
        name: its name, for error messages.

    Returns:
        ``signs`` (bool, weight shape: ``True`` for +1 and for exact zeros, see :func:`onebit.kernels.pack.to_bits`),
        ``scale`` ([out], the weight's dtype; 1 for sign-only binarizers), ``zeros`` (int32 flat indices of exact
        zeros, usually empty). ``torch.where(zeros, 0, scale · (2 · signs - 1))`` is the eval weight, bit for bit.

    Raises:
        ExportError: the eval weight is not ``scale · (±1 or 0)`` per output channel, e.g. a progressive binarizer
            whose temperature is still above its threshold.
    """
    wb = _eval_weight(layer)
    flat = wb.reshape(wb.shape[0], -1)
    mag = flat.abs()
    scale = mag.amax(dim=1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero channel: any scale reconstructs it
    two_valued = (mag == 0) | (mag == scale[:, None])
    if not bool(two_valued.all()) or not bool(torch.isfinite(scale).all()):
        wbin = layer.weight_binarizer
        if isinstance(wbin, ProgressiveSign):
            t = float(wbin.temperature.reshape(-1)[0])
            raise ExportError(
                f"{name}: the progressive weight binarizer is not in its binary regime (temperature {t:.3g} >= "
                f"threshold {wbin.threshold:g}), so its eval weight clamp(W / T) is not ±1; set the temperature below "
                "the threshold first (onebit.binarize.set_temperature(model, 0.0)), as a trained checkpoint has"
            )
        bad = int((~two_valued).any(dim=1).nonzero()[0, 0]) if not bool(two_valued.all()) else 0
        raise ExportError(
            f"{name}: the eval weight of output channel {bad} is not one magnitude times ±1 "
            f"(weight binarizer {type(wbin).__name__}); only sign-like binarizers can be packed to 1 bit"
        )
    signs = to_bits(wb)
    zeros = (flat == 0).reshape(-1).nonzero().reshape(-1).to(torch.int32)
    return signs, scale, zeros


def _unfold(signs: Tensor, scale: Tensor, zeros: Tensor, dtype: torch.dtype) -> Tensor:
    """scale · (±1), zeros at ``zeros``: the inverse of :func:`binarized_weight`."""
    s = scale.to(dtype).reshape(-1, *([1] * (signs.dim() - 1)))
    w = torch.where(signs, s, -s)  # = s * (±1) exactly: negation is exact
    if zeros.numel():
        w.view(-1)[zeros.long()] = 0
    return w


def _fold_layer_(layer: BinaryMixin, weight: Tensor) -> None:
    with torch.no_grad():
        layer.weight.copy_(weight)
    layer.weight_binarizer = FoldedWeight()
    layer.latent_clip = None  # the weight is final, not a latent to keep in range


@torch.no_grad()
def fold_weights_(model: nn.Module) -> int:
    """Replace, in place, every binary layer's latent weight by its eval binarized weight (``scale · (±1)``) and its
    weight binarizer by :class:`FoldedWeight`; eval logits are unchanged. Returns how many layers were folded.

    Raises:
        ExportError: see :func:`binarized_weight` (checked for every layer before any is changed).
    """
    layers = _packable_layers(model)
    parts = [(m, binarized_weight(m, n)) for n, m in layers]
    for m, (signs, scale, zeros) in parts:
        _fold_layer_(m, _unfold(signs, scale, zeros, m.weight.dtype))
    return len(parts)


def param_mb(model: nn.Module) -> float:
    """#Param (MB) as ``onebit summary`` reports it (``docs/official-code.md``, *Model size*): binary latent weights at
    1 bit, every other parameter at 32 bit, BN statistics not counted, in MiB. Equals
    ``onebit.analysis.complexity(model).mb`` without a forward."""
    binary = {id(m.weight) for _, m in _packable_layers(model)}
    n_bin = sum(p.numel() for p in model.parameters() if id(p) in binary)
    n_real = sum(p.numel() for p in model.parameters() if id(p) not in binary)
    return (n_bin + 32 * n_real) / 8 / 2**20


# ------------------------------------------------------------------------------------------------ quantised codes
def _quant_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantMixin) and m.quantizes_weight]


def _pack_codes(codes: Tensor, bits: int) -> Tensor:
    """b-bit codes (uint8) as one little-bit-order bit stream of ``ceil(numel · b / 8)`` bytes."""
    shifts = torch.arange(bits, dtype=torch.uint8)
    planes = (codes.reshape(-1, 1) >> shifts) & 1  # [n, b]: bit k of each code, least significant first
    return pack_bits(planes.reshape(-1).bool())


def _unpack_codes(packed: Tensor, bits: int, numel: int) -> Tensor:
    planes = unpack_bits(packed, numel * bits).reshape(numel, bits).to(torch.uint8)
    weights = (torch.ones(bits, dtype=torch.uint8) << torch.arange(bits, dtype=torch.uint8)).to(torch.uint8)
    return (planes * weights).sum(dim=1, dtype=torch.uint8)


def _dequantize(codes: Tensor, q: dict[str, Any], dtype: torch.dtype) -> Tensor:
    # the order of weight_codes' documented formula, so the product is the forward's weight bit for bit
    levels = 2 ** int(q["bits"]) - 1
    return (codes.to(dtype) / levels * (q["max"] - q["min"] + q["eps"]) + q["min"]) * q["scale"]


class _FrozenQuantWeight:
    """Mixed into a rebuilt quantised layer: its weight already holds the dequantised codes, so the forward uses it
    as is, and its codes are the stored ones (re-quantising a quantised weight does not give the same codes: the
    abs-mean scale changes)."""

    _frozen_codes: dict[str, Any]

    def quantized_weight(self) -> Tensor:
        return self.weight  # type: ignore[attr-defined]

    def weight_codes(self) -> dict[str, Any]:
        return dict(self._frozen_codes)


def _freeze_quant_layer_(layer: nn.Module, weight: Tensor, codes: dict[str, Any]) -> None:
    with torch.no_grad():
        layer.weight.copy_(weight)  # type: ignore[operator]
    layer._frozen_codes = codes
    cls = type(layer)
    frozen = _FROZEN_CLASSES.get(cls)
    if frozen is None:
        frozen = type(f"Frozen{cls.__name__}", (_FrozenQuantWeight, cls), {"__module__": __name__})
        _FROZEN_CLASSES[cls] = frozen
    layer.__class__ = frozen


_FROZEN_CLASSES: dict[type, type] = {}


# ---------------------------------------------------------------------------------------------------- packed export
def _spec_json(model: nn.Module) -> str:
    spec = getattr(model, "onebit_spec", None)
    if spec is None:
        raise ExportError(
            "the model was not built by a registered entrypoint (no onebit_spec), so a packed file could not name "
            "what to rebuild; build it with onebit.create_model(...) or load it with onebit.models.io.load_model"
        )
    try:
        return json.dumps(spec, sort_keys=True)
    except TypeError as e:
        raise ExportError(f"the model's construction kwargs are not JSON-serialisable ({e}): {spec!r}") from None


def _skipped_keys(model: nn.Module, keys: Sequence[str]) -> set[str]:
    """State keys the artefact does not store: BN ``num_batches_tracked`` and the buffers of folded binarizers."""
    prefixes = tuple(
        f"{name}.weight_binarizer." if name else "weight_binarizer." for name, _ in _packable_layers(model)
    )
    return {k for k in keys if k.endswith("num_batches_tracked") or (prefixes and k.startswith(prefixes))}


def _real_layout(state: dict[str, Tensor], skip: set[str]) -> tuple[list[tuple[str, Tensor]], str]:
    """The stored real tensors in state-dict order, and a digest of their names, shapes and dtypes.

    They are stored concatenated, one flat tensor per dtype (``real.float32``): per-tensor entries would cost about
    90 header bytes each (0.3 % of ReActNet-A, 0.4 % of BNext-T), while the rebuilt model already knows every
    name and shape; the digest tells a file written for another model structure from a matching one.
    """
    items = [(k, v) for k, v in state.items() if k not in skip]
    desc = json.dumps([[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in items])
    return items, hashlib.sha256(desc.encode()).hexdigest()[:32]


def _real_key(dtype: torch.dtype) -> str:
    return "real." + str(dtype).removeprefix("torch.")


@torch.no_grad()
def export_packed(model: nn.Module, path: str | Path, *, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``model`` as a packed 1-bit safetensors artefact (see the module docstring), atomically.

    Args:
        model: a model built by a registered entrypoint (it has ``onebit_spec``), in any mode: the artefact holds
            what its *eval* forward computes with. It is not modified.
        path: the ``.safetensors`` file to write (its folder is created).
        meta: JSON-able extra information kept in the metadata (e.g. ``{"input_size": [3, 224, 224]}``).

    Returns:
        ``{"path", "bytes", "mib", "param_mb", "ratio", "binary_layers", "quantized_layers", "tensors",
        "header_bytes"}``; ``ratio`` = file MiB / #Param (MB). A quantised model also has ``"quantized_mb"``
        (:func:`onebit.analysis.complexity.quantized_size_mib`) and ``"ratio_quantized"``.

    Raises:
        ExportError: no ``onebit_spec``, a weight that is not binary at eval (see :func:`binarized_weight`), or
            metadata that is not JSON-able.
    """
    spec = _spec_json(model)
    state = model.state_dict()
    tensors: dict[str, Tensor] = {}
    packed_keys: set[str] = set()
    for name, layer in _packable_layers(model):
        signs, scale, zeros = binarized_weight(layer, name or "(root)")
        tensors[name + _BITS] = pack_bits(signs.reshape(signs.shape[0], -1).cpu(), dim=1)
        if not bool((scale == 1).all()):
            tensors[name + _SCALE] = scale.cpu()
        if zeros.numel():
            tensors[name + _ZEROS] = zeros.cpu()
        packed_keys.add(f"{name}.weight")
    quant_layers = _quant_layers(model)
    for name, layer in quant_layers:
        q = layer.weight_codes()  # type: ignore[operator]
        tensors[name + _CODES] = _pack_codes(q["codes"].cpu(), int(q["bits"]))
        tensors[name + _QMIN] = q["min"].cpu()
        tensors[name + _QMAX] = q["max"].cpu()
        tensors[name + _QSCALE] = q["scale"].cpu()
        packed_keys.add(f"{name}.weight")
    items, digest = _real_layout(state, _skipped_keys(model, list(state)) | packed_keys)
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for _, value in items:
        by_dtype.setdefault(value.dtype, []).append(value.detach().reshape(-1).cpu())
    for dtype, parts in by_dtype.items():
        tensors[_real_key(dtype)] = torch.cat(parts)
    # safetensors refuses shared or strided storage: independent contiguous copies
    tensors = {k: v.contiguous().clone() for k, v in tensors.items()}
    quant_meta = {n: int(m.weight_bits) for n, m in quant_layers}  # type: ignore[union-attr]
    try:
        metadata = {
            "onebit.format": FORMAT,
            "onebit.version": str(FORMAT_VERSION),
            "onebit.model": spec,
            "onebit.quant_bits": json.dumps(quant_meta, sort_keys=True),
            "onebit.real_layout": digest,
            "onebit.real_tensors": str(len(items)),
            "onebit.meta": json.dumps(meta or {}, sort_keys=True),
        }
    except TypeError as e:
        raise ExportError(f"meta is not JSON-serialisable: {e}") from None
    path = Path(path)
    _atomic_save(tensors, metadata, path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = int.from_bytes(f.read(8), "little")
    mb = param_mb(model)
    report: dict[str, Any] = {
        "path": str(path),
        "bytes": size,
        "mib": size / 2**20,
        "param_mb": mb,
        "ratio": size / 2**20 / mb if mb else float("nan"),
        "binary_layers": len(_packable_layers(model)),
        "quantized_layers": len(quant_layers),
        "tensors": len(tensors),
        "header_bytes": header + 8,
    }
    if quant_layers:
        report["quantized_mb"] = quantized_size_mib(model)
        report["ratio_quantized"] = report["mib"] / report["quantized_mb"]
    return report


def _atomic_save(tensors: dict[str, Tensor], metadata: dict[str, str], path: Path) -> None:
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


# ------------------------------------------------------------------------------------------------------ packed load
def _read_packed(path: Path) -> tuple[dict[str, str], dict[str, Tensor]]:
    if not path.is_file():
        raise ExportError(f"{path}: no such packed artefact")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            if metadata.get("onebit.format") != FORMAT:
                found = sorted(metadata) or "none"
                raise ExportError(
                    f"{path}: not a onebit packed artefact (metadata 'onebit.format' is "
                    f"{metadata.get('onebit.format')!r}, expected {FORMAT!r}; metadata keys: {found})"
                )
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise ExportError(f"{path}: not a readable safetensors file, truncated or corrupt ({e})") from None
    version = metadata.get("onebit.version")
    if version != str(FORMAT_VERSION):
        raise ExportError(f"{path}: packed layout version {version!r}, this onebit reads version {FORMAT_VERSION}")
    return metadata, tensors


def _json_field(path: Path, metadata: dict[str, str], key: str) -> Any:
    if key not in metadata:
        raise ExportError(f"{path}: metadata {key!r} is missing")
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as e:
        raise ExportError(f"{path}: metadata {key!r} is not valid JSON ({e})") from None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check_tensor(path: Path, key: str, t: Tensor, shape: Sequence[int] | None, dtype: torch.dtype) -> Tensor:
    """``t`` if it has the ``dtype`` and ``shape`` (``None``: any 1-d length) the format or the model expects, else
    an ExportError naming the file, the tensor and what was expected (the dtype is checked first)."""
    if t.dtype != dtype:
        raise ExportError(f"{path}: tensor {key!r} is {_dtype_name(t.dtype)}, expected {_dtype_name(dtype)}")
    if shape is None and t.dim() != 1:
        raise ExportError(f"{path}: tensor {key!r} has shape {tuple(t.shape)}, expected a 1-d tensor")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ExportError(
            f"{path}: tensor {key!r} is {t.dtype} {tuple(t.shape)}, the model needs {dtype} {tuple(shape)}"
        )
    return t


def _take(path: Path, tensors: dict[str, Tensor], key: str, shape: Sequence[int], dtype: torch.dtype) -> Tensor:
    if key not in tensors:
        raise ExportError(f"{path}: tensor {key!r} is missing")
    return _check_tensor(path, key, tensors.pop(key), shape, dtype)


def packed_metadata(path: str | Path) -> dict[str, Any]:
    """The model spec and user ``meta`` of a packed artefact without building the model: ``{"model", "meta",
    "quant_bits"}``."""
    path = Path(path)
    metadata, _ = _read_packed(path)
    return {k: _json_field(path, metadata, f"onebit.{k}") for k in ("model", "meta", "quant_bits")}


class _SkipRandomInit(TorchFunctionMode):
    """Skips initialisation (every ``torch.nn.init`` function, ``Tensor.uniform_``/``normal_``) while a model is
    built whose parameters and stored buffers are all overwritten from the file next (the buffers it does not store
    are set explicitly or replaced): saves seconds for BNext-T. Tensor factories and ``fill_``/``zero_`` still run."""

    _SKIP = (torch.Tensor.uniform_, torch.Tensor.normal_)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self._SKIP or getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else next(iter((kwargs or {}).values()))
        return func(*args, **(kwargs or {}))


def _build(path: Path, entry: Any, spec: dict[str, Any]) -> nn.Module:
    kwargs = spec.get("kwargs", {})
    try:
        with _SkipRandomInit():
            return entry(**kwargs)
    except (TypeError, ValueError) as e:
        raise ExportError(f"{path}: cannot rebuild {spec['name']!r} from its kwargs {kwargs}: {e}") from None


@torch.no_grad()
def load_packed(path: str | Path) -> nn.Module:
    """Rebuild the eval model of a packed artefact written by :func:`export_packed`.

    The model is built from the registry name and kwargs in the metadata, every tensor is checked against it (name,
    shape, dtype), binary weights are unpacked to ``scale · (±1)`` with :class:`FoldedWeight` binarizers, and
    quantised weights are dequantised from their codes. The result is in eval mode; its logits equal the exported
    model's eval logits.

    Raises:
        ExportError: a missing, truncated, foreign or inconsistent file; the message names the file and what is
            missing or wrong.
    """
    path = Path(path)
    metadata, tensors = _read_packed(path)
    spec = _json_field(path, metadata, "onebit.model")
    quant_bits = _json_field(path, metadata, "onebit.quant_bits")
    if not isinstance(spec, dict) or "name" not in spec:
        raise ExportError(f"{path}: metadata 'onebit.model' has no model name: {spec!r}")
    try:
        entry = MODELS.get(spec["name"])
    except KeyError as e:
        raise ExportError(f"{path}: {e.args[0]}") from None
    model = _build(path, entry, spec)

    folds: list[tuple[BinaryMixin, Tensor]] = []
    frozen: list[tuple[nn.Module, Tensor, dict[str, Any]]] = []
    restored: set[str] = set()
    for name, layer in _packable_layers(model):
        w = layer.weight
        out, n = w.shape[0], w[0].numel()
        bits = _take(path, tensors, name + _BITS, (out, packed_length(n)), torch.uint8)
        signs = unpack_bits(bits, n, dim=1).reshape(w.shape)
        scale = tensors.pop(name + _SCALE, None)
        if scale is None:
            scale = torch.ones(out, dtype=w.dtype)
        else:  # written in the weight's dtype, one positive magnitude per output channel
            _check_tensor(path, name + _SCALE, scale, (out,), w.dtype)
            if not bool((torch.isfinite(scale) & (scale > 0)).all()):
                raise ExportError(f"{path}: tensor {name + _SCALE!r} holds non-finite or non-positive scales")
        zeros = tensors.pop(name + _ZEROS, torch.zeros(0, dtype=torch.int32))
        _check_tensor(path, name + _ZEROS, zeros, None, torch.int32)  # flat indices of the exact zeros
        if zeros.numel() and (int(zeros.min()) < 0 or int(zeros.max()) >= w.numel()):
            raise ExportError(f"{path}: tensor {name + _ZEROS!r} holds indices outside the weight ({w.numel()})")
        folds.append((layer, _unfold(signs, scale, zeros, w.dtype)))
        restored.add(f"{name}.weight")
    quant = dict(_quant_layers(model))
    if not isinstance(quant_bits, dict):
        raise ExportError(f"{path}: metadata 'onebit.quant_bits' is not a layer -> bits mapping: {quant_bits!r}")
    if sorted(quant) != sorted(quant_bits):
        raise ExportError(
            f"{path}: quantised layers in the file {sorted(quant_bits)} do not match the rebuilt model {sorted(quant)}"
        )
    for name, layer in quant.items():
        w = layer.weight
        ref = layer.weight_codes()  # shapes and dtypes of min/max/scale for this layer
        bits = quant_bits[name]
        if type(bits) is not int or bits != int(ref["bits"]):
            raise ExportError(
                f"{path}: metadata 'onebit.quant_bits' gives layer {name!r} {bits!r} bits, the rebuilt model "
                f"quantises it to {ref['bits']}"
            )
        packed = _take(path, tensors, name + _CODES, (packed_length(w.numel() * bits),), torch.uint8)
        q = {"bits": bits, "eps": ref["eps"]}
        for key, suffix in (("min", _QMIN), ("max", _QMAX), ("scale", _QSCALE)):
            q[key] = _take(path, tensors, name + suffix, ref[key].shape, ref[key].dtype)
        codes = _unpack_codes(packed, bits, w.numel()).reshape(w.shape)
        frozen.append((layer, _dequantize(codes, q, w.dtype), {**ref, **q, "codes": codes}))
        restored.add(f"{name}.weight")

    own = model.state_dict()
    items, digest = _real_layout(own, _skipped_keys(model, list(own)) | restored)
    if metadata.get("onebit.real_layout") != digest:
        raise ExportError(
            f"{path}: its real tensors (metadata 'onebit.real_layout' = {metadata.get('onebit.real_layout')!r}, "
            f"{metadata.get('onebit.real_tensors')} tensors) were not written for the model {spec['name']!r} as this "
            f"onebit builds it ({digest!r}, {len(items)} tensors)"
        )
    state: dict[str, Tensor] = {}
    for dtype in dict.fromkeys(v.dtype for _, v in items):
        group = [(k, v) for k, v in items if v.dtype == dtype]
        flat = _take(path, tensors, _real_key(dtype), (sum(v.numel() for _, v in group),), dtype)
        for (k, v), part in zip(group, flat.split([v.numel() for _, v in group])):
            state[k] = part.reshape(v.shape)
    for key, value in own.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros_like(value, device="cpu")  # training bookkeeping, not stored
    if tensors:
        extra = sorted(tensors)
        raise ExportError(f"{path}: {len(extra)} tensors the model {spec['name']!r} does not have, e.g. {extra[:3]}")
    model.load_state_dict(state, strict=False, assign=False)
    for layer, weight in folds:
        _fold_layer_(layer, weight)
    for layer, weight, codes in frozen:
        _freeze_quant_layer_(layer, weight, codes)
    return model.eval()


# --------------------------------------------------------------------------------------------------------- ONNX
def _all_quant_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantMixin)]


class QuantizedInference(nn.Module):
    """Inference form of a layer quantised by :func:`onebit.quantize.quantize_`: its quantised weight as a constant
    and its input quantiser (clip, then min-max quantisation per sample, dynamic or calibrated) as plain tensor ops
    (``onebit.layers.quant.asym_quantize``) instead of the straight-through Function; the same values as the layer's
    eval forward.

    Args:
        layer: a ``QuantConv2d`` (zero padding) or ``QuantLinear``.
        name: its name, for error messages.
    """

    def __init__(self, layer: nn.Module, name: str = "layer") -> None:
        super().__init__()
        self.conv = isinstance(layer, nn.Conv2d)
        if self.conv and layer.padding_mode != "zeros":  # type: ignore[union-attr]
            raise ExportError(f"{name}: quantised conv with padding_mode={layer.padding_mode!r} is not exportable")
        with torch.no_grad():
            self.register_buffer("weight", layer.quantized_weight().detach().clone())  # type: ignore[operator]
            bias = getattr(layer, "bias", None)
            self.register_buffer("bias", None if bias is None else bias.detach().clone())
            self.quantize_input = bool(layer.quantizes_input)
            self.bits = int(layer.act_bits)  # type: ignore[arg-type]
            self.register_buffer("clip_val", layer.input_clip_val.detach().clone())  # type: ignore[union-attr]
            calibrated = self.quantize_input and layer.activations == "calibrated"
            self.register_buffer("act_range", layer.act_range.detach().clone() if calibrated else None)
        if self.act_range is not None and bool(torch.isnan(self.act_range).any()):
            raise ExportError(f"{name}: calibrated activation ranges were never recorded; run quantize.calibrate first")
        if self.conv:
            self.stride, self.padding = layer.stride, layer.padding
            self.dilation, self.groups = layer.dilation, layer.groups

    def forward(self, x: Tensor) -> Tensor:
        if self.quantize_input:
            # the order of the layer's own clip: min with hi, then max with lo
            x = torch.maximum(torch.minimum(x, self.clip_val[1]), self.clip_val[0])
            value_range = None if self.act_range is None else (self.act_range[0], self.act_range[1])
            x = asym_quantize(x, self.bits, activation_dims(x), value_range)
        if self.conv:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        out = F.linear(x, self.weight)
        return out + self.bias if self.bias is not None else out  # bias after the product, as QuantLinear


_SIGN_LIKE = (SignSTE, ApproxSign, SignIdentitySTE, PlainSign)  # forward = sign(x, zero); HardSign is a SignSTE


@torch.no_grad()
def inference_model(model: nn.Module) -> nn.Module:
    """An eval copy of ``model`` with nothing but the inference computation, for exporters.

    Binary weights are folded (:func:`fold_weights_`), sign-like input binarizers become :class:`PlainSign` (same
    values, no straight-through Function), latent-weight clamps are off, parameters that an eval forward clamps in
    place (BNext's λ, ``scale_clamp_when="always"``) are clamped once here so that the graph holds no clamp, and
    quantised layers become :class:`QuantizedInference` (constant quantised weight, input quantiser as plain ops).
    ``model`` itself is not modified.

    Raises:
        ExportError: an input binarizer whose eval forward is not a sign (it could not become a comparison), or a
            weight that is not binary at eval.
    """
    m = copy.deepcopy(model).eval()
    fold_weights_(m)
    for name, layer in _all_quant_layers(m):
        parent, _, child = name.rpartition(".")
        setattr(m.get_submodule(parent) if parent else m, child, QuantizedInference(layer, name))
    for name, layer in m.named_modules():
        if isinstance(layer, BinaryMixin) and layer.binarize_input:
            ib = layer.input_binarizer
            if isinstance(ib, _SIGN_LIKE):
                layer.input_binarizer = PlainSign(getattr(ib, "zero", 0.0))
            elif not isinstance(ib, Identity):
                raise ExportError(f"{name}: input binarizer {type(ib).__name__} has no plain sign form to export")
        if isinstance(layer, BinaryMixin):
            layer.training_path = "module"  # the module path: what PlainSign/FoldedWeight compute, nothing fused
        if getattr(layer, "scale_clamp_when", None) == "always" and isinstance(getattr(layer, "scale", None), Tensor):
            # BNext's 1x1 Info-RCP clamps λ on .data in every forward; do it once so the graph has no clamp
            layer.scale.clamp_(0.0, 1.0)
            layer.scale_clamp_when = "train"
    return m


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_shape: Sequence[int] = (1, 3, 224, 224),
    opset: int = 17,
    *,
    dynamo: bool = False,
    fold_constants: bool = False,
) -> dict[str, Any]:
    """Export the inference graph of ``model`` (see :func:`inference_model`) to ONNX, atomically.

    The graph has one input ``input`` and one output ``logits``, both with a dynamic batch dimension. The default
    exporter is torch's TorchScript-based one (``dynamo=False``): it exports every registered model at about a second
    each and needs only the ``onnx`` package; ``dynamo=True`` uses the ``torch.export`` exporter (needs
    ``onnxscript``; about 20 s for a small model on one CPU core).

    Args:
        model: the model (not modified).
        path: the ``.onnx`` file to write.
        input_shape: example input shape (N, C, H, W) used for tracing.
        opset: ONNX opset version.
        dynamo: use the ``torch.export``-based exporter (opset 18 at least).
        fold_constants: let the TorchScript exporter fold constants, which also fuses each BN into the conv before
            it; off by default so a binary conv's weight stays ``scale · (±1)`` with the BN a separate node (what a
            packed runtime wants to read), and the export is faster.

    Returns:
        ``{"path", "bytes", "opset", "input_shape", "exporter", "ops": {op type: count}}`` (``ops`` needs ``onnx``).
    """
    import warnings

    if dynamo and opset < 18:
        opset = 18  # the torch.export exporter implements opset 18 and up (its down-conversion fails on Reduce* axes)
    m = inference_model(model)
    p = next(iter(m.parameters()), None)
    x = torch.zeros(*input_shape, dtype=p.dtype if p is not None else torch.float32)
    path = Path(path)

    def _export(tmp: Path) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            # the TorchScript exporter announces its deprecation on every call; the choice is documented above
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")  # F.pad's Slice: harmless
            # the quantisers' per-shape choice of reduction dims is meant to be fixed in the graph
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            kwargs: dict[str, Any] = {
                "input_names": ["input"],
                "output_names": ["logits"],
                "opset_version": opset,
                "dynamo": dynamo,
            }
            if dynamo:
                kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
            else:
                kwargs["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
                kwargs["do_constant_folding"] = fold_constants
            try:
                torch.onnx.export(m, (x,), str(tmp), **kwargs)
            except Exception as e:
                missing = _missing_module(e)
                if missing is None:
                    raise  # an exporter failure, not a missing extra
                raise ExportError(f'ONNX export needs the onnx extra: pip install "onebit[onnx]" ({missing})') from e

    atomic_write(path, _export)
    report: dict[str, Any] = {
        "path": str(path),
        "bytes": path.stat().st_size,
        "opset": opset,
        "input_shape": list(input_shape),
        "exporter": "dynamo" if dynamo else "torchscript",
    }
    try:
        import onnx
    except ImportError:
        return report
    graph = onnx.load(str(path), load_external_data=False).graph
    ops: dict[str, int] = {}
    for node in graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    report["ops"] = dict(sorted(ops.items()))
    return report


def _missing_module(e: BaseException) -> str | None:
    """What is missing when the ONNX exporter failed for want of an optional module (``onnx``, ``onnxscript``): an
    ``ImportError``, or torch's ``OnnxExporterError`` raised from one ("Module onnx is not installed!"); else
    ``None``."""
    exporter_error = getattr(torch.onnx, "OnnxExporterError", ())
    if not isinstance(e, ImportError | exporter_error):
        return None
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ImportError):
            name = getattr(cause, "name", None)
            return f"module {name!r} is not installed" if name else str(cause)
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


@torch.no_grad()
def compare_onnx(model: nn.Module, path: str | Path, x: Tensor) -> dict[str, float]:
    """Run the ONNX file with onnxruntime (CPU) and ``model`` in eval mode on ``x``; compare the logits.

    Returns:
        ``{"max_abs_diff", "logit_scale": max(1, max |logits|), "rel": max_abs_diff / logit_scale}``.
    """
    import onnxruntime as ort

    was_training = model.training
    model.eval()
    try:
        ref = model(x).float()
    finally:
        model.train(was_training)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.cpu().numpy()})[0])
    diff = float((out - ref.cpu()).abs().max())
    scale = max(1.0, float(ref.abs().max()))
    return {"max_abs_diff": diff, "logit_scale": scale, "rel": diff / scale}

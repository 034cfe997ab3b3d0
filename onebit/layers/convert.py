"""Model rewrites: ``binarize_`` swaps float layers for binary ones; ``set_binarization`` flips stage switches;
``set_training_path`` picks how binary layers train."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass, field

from torch import nn

from onebit.binarize import BINARIZERS
from onebit.layers.binary import BinaryConv2d, BinaryLinear, BinaryMixin, _copy_float_
from onebit.layers.fused import TRAINING_PATHS

__all__ = ["BinarizeConfig", "binarize_", "binary_layers", "set_binarization", "set_training_path"]


@dataclass
class BinarizeConfig:
    """What :func:`binarize_` swaps and how.

    Attributes:
        input_binarizer, weight_binarizer: registered names (see ``onebit.binarize.BINARIZERS``).
        binarize_input, binarize_weight: initial stage switches of the new layers.
        skip_first, skip_last: keep the first conv and the last linear/conv real-valued (standard BNN practice).
        include, exclude: fnmatch patterns on module names; ``include`` empty means every conv/linear.
        linear: also swap ``nn.Linear`` layers.
        pad_value: padding value of binarized conv inputs (0 official, -1/+1 for packed kernels).
    """

    input_binarizer: str = "ste_sign"
    weight_binarizer: str = "scaled_sign"
    binarize_input: bool = True
    binarize_weight: bool = True
    skip_first: bool = True
    skip_last: bool = True
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    linear: bool = True
    pad_value: float = 0.0

    def __post_init__(self) -> None:
        for attr in ("include", "exclude"):
            if isinstance(getattr(self, attr), str):
                raise TypeError(f"BinarizeConfig.{attr} must be a list of patterns, got a string")
        for name in (self.input_binarizer, self.weight_binarizer):
            BINARIZERS.get(name)  # raises a KeyError with close matches


def binary_layers(model: nn.Module) -> Iterator[tuple[str, BinaryMixin]]:
    """(name, module) of every binary conv/linear layer, in registration order."""
    for name, m in model.named_modules():
        if isinstance(m, BinaryMixin):
            yield name, m


def set_binarization(model: nn.Module, activations: bool | None = None, weights: bool | None = None) -> int:
    """Set ``binarize_input`` / ``binarize_weight`` on every binary layer (``None`` leaves it). Returns the count."""
    n = 0
    for _, m in binary_layers(model):
        if activations is not None:
            m.binarize_input = activations
        if weights is not None:
            m.binarize_weight = weights
        n += 1
    return n


def binarize_(model: nn.Module, cfg: BinarizeConfig | None = None) -> dict:
    """Replace ``nn.Conv2d`` (and ``nn.Linear``) layers by their binary versions in place, weights copied.

    Returns a report ``{"binarized": [names], "kept": [names]}``.
    """
    cfg = cfg or BinarizeConfig()
    candidates = [
        (n, m) for n, m in model.named_modules() if type(m) is nn.Conv2d or (cfg.linear and type(m) is nn.Linear)
    ]
    # first/last are decided over every conv/linear layer, not only the candidates: with linear=False the last
    # layer may be a linear head that stays real anyway, and then no conv needs to be kept real for it
    layers = [n for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    skip = set()
    if cfg.skip_first and layers:
        convs = [n for n, m in candidates if isinstance(m, nn.Conv2d)]
        if convs:
            skip.add(convs[0])
    if cfg.skip_last and layers:
        skip.add(layers[-1])
    report: dict[str, list[str]] = {"binarized": [], "kept": []}
    for name, m in candidates:
        chosen = name not in skip
        if cfg.include:
            chosen = chosen and any(fnmatch.fnmatch(name, p) for p in cfg.include)
        if any(fnmatch.fnmatch(name, p) for p in cfg.exclude):
            chosen = False
        if not chosen:
            report["kept"].append(name)
            continue
        kw = dict(
            input_binarizer=cfg.input_binarizer,
            weight_binarizer=cfg.weight_binarizer,
            binarize_input=cfg.binarize_input,
            binarize_weight=cfg.binarize_weight,
        )
        if isinstance(m, nn.Conv2d):
            new: nn.Module = BinaryConv2d(
                m.in_channels,
                m.out_channels,
                m.kernel_size,
                m.stride,
                m.padding,
                m.dilation,
                m.groups,
                m.bias is not None,
                m.padding_mode,
                m.weight.device,
                m.weight.dtype,
                pad_value=cfg.pad_value,
                **kw,
            )
        else:
            new = BinaryLinear(m.in_features, m.out_features, m.bias is not None, m.weight.device, m.weight.dtype, **kw)
        new.train(m.training)
        _copy_float_(new, m)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
        report["binarized"].append(name)
    return report


def set_training_path(model: nn.Module, path: str) -> int:
    """Set ``training_path`` (``"lean"``, ``"module"`` or ``"reference"``) on every binary layer; returns the count.

    ``"lean"`` (the default of new layers) computes the same forward as ``"module"`` (the binarizer modules), bit
    for bit, and saves int8 signs; ``"reference"`` computes what the official code computes, the way it computes
    it (the baseline of ``benchmarks/train_step.py``; its weights may differ in the last bit, see
    ``onebit.binarize``).
    """
    if path not in TRAINING_PATHS:
        raise ValueError(f"training path must be one of {TRAINING_PATHS}, got {path!r}")
    n = 0
    for m in model.modules():
        if isinstance(m, BinaryMixin):
            m.training_path = path
            n += 1
    return n

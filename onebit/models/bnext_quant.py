"""Quantised BNext (``hpi-xnor/BNext`` ``src/bnext_quant.py``; ``docs/official-code.md``, *Quantised BNext*) and the
generic ``quantized`` entrypoint that rebuilds any model rewritten by :func:`onebit.layers.quant.quantize_`.

``bnext_quant.py``'s ``BNext(num_classes, size, quant=True, se_bits)`` is BNext-T/S/M/L with

* the stem conv quantised W8 (its 3-channel 8-bit image input is not quantised),
* both SE convs of every processor quantised W = A = ``se_bits`` (default 32: left in float; the paper's W4/A8 SE
  setting is *not* expressible there, one argument sets both — :func:`onebit.layers.quant.quantize_` can),
* the classifier W8/A8 with clip 25 (its inputs clipped to ±25),
* the recoupling weight λ clamped to [0, 1] in training only, in every processor (``bnext.py`` also clamps it in
  eval in the 1x1 processors),
* an unused scalar parameter ``fc.scale`` (0.0) and the clip buffers in the state dict.

Here that is :class:`~onebit.models.bnext.BNext` rewritten by :func:`~onebit.layers.quant.quantize_` with
:func:`official_quant_config`, so the quantisers are the library's (documented in ``onebit.layers.quant``) and the state
dict has the official keys; ``load_official("bnext_tiny_quant", sd, se_bits=8)`` imports the released layout.

All quantised convs use the official ``QuantizeConv`` behaviour for 32-bit weights (``quantize_w32``): they still
pass through the min-max quantiser with 2^32 - 1 levels, about one ulp from the float weight.

``bnext_quant.py``'s own ``size="large"`` is a 48-wide network that is not in the paper (its ``"super"`` is BNext-L);
:func:`bnext_large_quant` is BNext-L (the widths of ``bnext.py``).

**BNext-18** (``birealnet_quant.py`` ``birealnet18(quant=True, se_bits=8)``, layout ``bnext18_quant``;
``docs/official-code.md``, *BNext-18*, calls the file a buggy copy): :class:`~onebit.models.bnext.BNext18` with the
7x7 stem W8 (image input not quantised), the SE convs at W ``se_bits`` / A **2·se_bits** (as that file does), the
real 1x1 downsample convs replaced by quantised W8/A8 convs **with a bias** (their 4-D inputs quantised per sample
and channel over space), the classifier W8/A8. Not reproduced: that file's eval-mode weight expression ``(b - W) + W``
(differs from b by at most an ulp, like the BNext-18 ``HardSign`` quirk that ``bnext.py`` documents); with
``num_classes != 1000`` its small stem stays float, here it is a 32/32 quantised conv that computes the float conv.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from onebit.layers.quant import QuantConfig, QuantConv2d, quantize_
from onebit.models._registry import MODELS, register_model
from onebit.models.bnext import (
    BNEXT_CHANNELS,
    BNext,
    BNext18,
    BNext18Block,
    ELMAttention,
    InfoRCP,
    SqueezeExpand,
    official_key_map,
)
from onebit.models.official import OfficialLayout, register_layout

__all__ = [
    "bnext18_quant_config",
    "bnext_18_quant",
    "bnext_large_quant",
    "bnext_middle_quant",
    "bnext_quant",
    "bnext_small_quant",
    "bnext_tiny_quant",
    "official_quant_config",
    "quantized",
]


def official_quant_config(se_bits: int = 32) -> QuantConfig:
    """The quantisation of ``bnext_quant.py`` with ``quant=True``: I-S-E-O = 8/8-se/se-se/se-8/8, weight scale
    2·abs-mean, clips 1000 (convs) and 25 (classifier), dynamic activations, the 8-bit image input left alone."""
    return QuantConfig(
        input=(8, 8),
        squeeze=(se_bits, se_bits),
        expand=(se_bits, se_bits),
        output=(8, 8),
        weight_scale=2.0,
        conv_clip=1000.0,
        linear_clip=25.0,
        activations="dynamic",
        image_input=None,
        quantize_w32=True,
    )


def bnext18_quant_config(se_bits: int = 8) -> QuantConfig:
    """``birealnet_quant.py``'s quantisation: I-S-E-O = 8/8-se/2se-se/2se-8/8 (SE activations at twice the SE weight
    bits), otherwise as :func:`official_quant_config`."""
    if not 2 <= se_bits <= 8:
        raise ValueError(f"bnext18_quant: se_bits must be 2..8 (its SE activations use 2*se_bits <= 16), got {se_bits}")
    cfg = official_quant_config(se_bits)
    cfg.squeeze = cfg.expand = (se_bits, 2 * se_bits)
    return cfg


def _add_unused_fc_scale(model: nn.Module) -> None:
    # Official QuantizeLinear registers a scalar `scale` parameter (0.0) that its forward never reads; kept so that
    # the state dict is the official one.
    model.fc.register_parameter("scale", nn.Parameter(torch.zeros((), dtype=model.fc.weight.dtype)))


def bnext_quant(
    size: str | Sequence[int] = "tiny",
    num_classes: int = 1000,
    quant: bool = True,
    se_bits: int = 32,
    **kw: Any,
) -> BNext:
    """The network of ``bnext_quant.py`` ``BNext(num_classes, size, quant, se_bits)``.

    Args:
        size: ``tiny``/``small``/``middle``/``large`` or a channel list (see :data:`BNEXT_CHANNELS`).
        num_classes: classifier width (the stem has stride 1 when it is not 1000, as official).
        quant: quantise stem, SE and classifier (``False``: the float network with ``bnext_quant.py``'s λ clamp).
        se_bits: weight and activation bits of both SE convs (32: float).
        **kw: passed to :class:`~onebit.models.bnext.BNext` (``in_chans``, ``stem_stride``).
    """
    channels = BNEXT_CHANNELS[size] if isinstance(size, str) else tuple(size)
    model = BNext(channels, num_classes, **kw)
    for m in model.modules():
        if isinstance(m, (InfoRCP, ELMAttention)):
            m.scale_clamp_when = "train"  # bnext_quant.py clamps λ in training only, also in the 1x1 processors
        if isinstance(m, SqueezeExpand):
            m.se[2].inplace = False  # as official (same values; keeps the pre-ReLU tensor for hooks)
    if quant:
        quantize_(model, official_quant_config(se_bits))
        _add_unused_fc_scale(model)
    return model


@register_model
def bnext_18_quant(num_classes: int = 1000, se_bits: int = 8, quant: bool = True, **kw: Any) -> BNext18:
    """BNext-18 of ``birealnet_quant.py`` (stem W8, SE W ``se_bits`` / A 2·``se_bits``, downsample W8/A8 with bias,
    fc W8/A8); see the module docstring. ``**kw`` go to :class:`~onebit.models.bnext.BNext18` (``widths``,
    ``small_stem``, ...)."""
    model = BNext18(num_classes, **kw)
    if not quant:
        return model
    cfg = bnext18_quant_config(se_bits)
    quantize_(model, cfg)
    if isinstance(model.maxpool, nn.Identity):  # birealnet_quant.py keeps its small CIFAR stem a plain conv
        model.conv1.weight_bits, model.conv1.quantize_w32 = 32, False
    for block in model.modules():
        if isinstance(block, BNext18Block) and block.Attention.downsample is not None:
            old = block.Attention.downsample[1]
            new = QuantConv2d(
                old.in_channels,
                old.out_channels,
                1,
                bias=True,
                device=old.weight.device,
                dtype=old.weight.dtype,
                weight_bits=8,
                act_bits=8,
                clip=cfg.conv_clip,
                weight_scale=cfg.weight_scale,
                quantize_w32=True,
            )
            with torch.no_grad():
                new.weight.copy_(old.weight)
                new.bias.zero_()
            block.Attention.downsample[1] = new
    _add_unused_fc_scale(model)
    return model


@register_model
def bnext_tiny_quant(num_classes: int = 1000, se_bits: int = 32, quant: bool = True) -> BNext:
    """BNext-T of ``bnext_quant.py`` (stem W8, SE W/A ``se_bits``, fc W8/A8)."""
    return bnext_quant("tiny", num_classes, quant, se_bits)


@register_model
def bnext_small_quant(num_classes: int = 1000, se_bits: int = 32, quant: bool = True) -> BNext:
    """BNext-S of ``bnext_quant.py`` (stem W8, SE W/A ``se_bits``, fc W8/A8)."""
    return bnext_quant("small", num_classes, quant, se_bits)


@register_model
def bnext_middle_quant(num_classes: int = 1000, se_bits: int = 32, quant: bool = True) -> BNext:
    """BNext-M of ``bnext_quant.py`` (stem W8, SE W/A ``se_bits``, fc W8/A8)."""
    return bnext_quant("middle", num_classes, quant, se_bits)


@register_model
def bnext_large_quant(num_classes: int = 1000, se_bits: int = 32, quant: bool = True) -> BNext:
    """BNext-L of ``bnext_quant.py`` (stem W8, SE W/A ``se_bits``, fc W8/A8)."""
    return bnext_quant("large", num_classes, quant, se_bits)


@register_model
def quantized(base: dict, quant: dict, num_classes: int | None = None) -> nn.Module:
    """A registered model rewritten by :func:`~onebit.layers.quant.quantize_` (what ``quantize_`` records in
    ``onebit_spec``, so that ``save_model_dir``/``load_model`` rebuild quantised models).

    Lives with the model zoo because entrypoints must be registered whenever ``onebit.models`` is imported, and
    ``onebit.quantize`` must stay importable without the zoo.

    Args:
        base: the base model's ``onebit_spec`` (``{"name", "kwargs"}``).
        quant: a :meth:`QuantConfig.to_dict`.
        num_classes: must equal the base model's when given.
    """
    kwargs = dict(base.get("kwargs", {}))
    if num_classes is not None and kwargs.get("num_classes", num_classes) != num_classes:
        raise ValueError(f"quantized: num_classes={num_classes} differs from the base model's {kwargs['num_classes']}")
    model = MODELS.get(base["name"])(**kwargs)
    quantize_(model, QuantConfig.from_dict(quant))
    return model


register_layout(
    OfficialLayout(
        name="bnext18_quant",
        build=bnext_18_quant,
        key_map=official_key_map,
        options=("se_bits",),
        description="hpi-xnor/BNext src/birealnet_quant.py birealnet18(num_classes=1000, quant=True, se_bits)",
    )
)
register_layout(
    OfficialLayout(
        name="bnext_tiny_quant",
        build=bnext_tiny_quant,
        key_map=official_key_map,
        options=("se_bits",),
        description='hpi-xnor/BNext src/bnext_quant.py BNext(num_classes=1000, size="tiny", quant=True, se_bits)',
    )
)

"""Narrow members of the zoo's families for the bundled digits (1 channel, 16x16): the same blocks and binarizers as
the ImageNet models, at widths a 2-core CPU trains in seconds. Used by the studies (``onebit study resnet-family``,
``landscape``, ``bnext-blocks``, ...)."""

from __future__ import annotations

import dataclasses

from torch import nn

from onebit.layers import set_binarization
from onebit.models._registry import register_model
from onebit.models.bnext import BNext, BNext18
from onebit.models.resnet import BINARY_RESNET18, BIREALNET18, REACTNET_RESNET18, STRONG_BASELINE, BinaryResNet

__all__ = ["bnext18_digits", "bnext_digits", "float_resnet_digits", "resnet_digits"]

_RESNETS = {
    "binary_resnet18": BINARY_RESNET18,
    "birealnet18": BIREALNET18,
    "strong_baseline": STRONG_BASELINE,
    "reactnet_resnet18": REACTNET_RESNET18,
}


@register_model
def resnet_digits(
    num_classes: int = 10, family: str = "birealnet18", width: int = 8, step: int = 2, in_chans: int = 1
) -> BinaryResNet:
    """A binary ResNet-18 family member (same depths and blocks) with stage widths w, 2w, 4w, 8w and the CIFAR
    stem. ``family``: binary_resnet18, birealnet18, strong_baseline or reactnet_resnet18."""
    try:
        base = _RESNETS[family]
    except KeyError:
        raise ValueError(f"family must be one of {sorted(_RESNETS)}, got {family!r}") from None
    cfg = dataclasses.replace(base, widths=(width, 2 * width, 4 * width, 8 * width))
    return BinaryResNet(cfg, num_classes, in_chans=in_chans, cifar_stem=True, step=step)


@register_model
def bnext_digits(
    num_classes: int = 10, width: int = 8, elm_attention: bool = True, infor_recoupling: bool = True, in_chans: int = 1
) -> BNext:
    """BNext-T's block pattern (ELM-Attention in the even blocks >= 2, which are the stride-2 ones) at widths
    w, 2w, 4w, 4w, 8w, 8w with stem stride 1: BNext blocks with Info-RCP / ELM-Attention switchable (BNext Table 4).
    """
    w = width
    channels = (w, 2 * w, 4 * w, 4 * w, 8 * w, 8 * w)
    return BNext(
        channels,
        num_classes,
        in_chans=in_chans,
        stem_stride=1,
        elm_attention=elm_attention,
        infor_recoupling=infor_recoupling,
    )


@register_model
def bnext18_digits(num_classes: int = 10, width: int = 8, in_chans: int = 1) -> BNext18:
    """BNext-18 (ELM-Attention in every block) with stage widths w, 2w, 4w, 8w and the small stem."""
    return BNext18(num_classes, in_chans=in_chans, small_stem=True, widths=(width, 2 * width, 4 * width, 8 * width))


@register_model
def float_resnet_digits(
    num_classes: int = 10, family: str = "strong_baseline", width: int = 8, in_chans: int = 1
) -> nn.Module:
    """:func:`resnet_digits` with binarization switched off: a real-valued teacher.

    The default ``strong_baseline`` family keeps a PReLU in every block, so the float network is non-linear (the
    plain ``binary_resnet18`` blocks have no activation besides the sign and would collapse to a linear map). A run
    or model directory of this entrypoint loads as a float model, which the binary entrypoints cannot express: the
    binarization switches are attributes, not weights, so a run directory alone would rebuild the model binarized.
    """
    model = resnet_digits(num_classes, family=family, width=width, in_chans=in_chans)
    set_binarization(model, activations=False, weights=False)
    return model

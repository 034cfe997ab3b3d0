"""Fused packed modules of the binary ResNets (Bi-Real Net and the ReActNet ResNet-18 variant), registered with
:func:`onebit.kernels.engine.register_fuser` and run by :func:`onebit.kernels.pack_`: each Bi-Real block's shift
``move0`` and ``bn1`` folded into its packed conv.
"""

from __future__ import annotations

from torch import nn

from onebit.kernels.engine import PackedConv2d, PackReport, _not_packable, binary_weight_signs, register_fuser
from onebit.layers import BinaryConv2d
from onebit.models.resnet import BiRealBlock

__all__: list[str] = []


@register_fuser
def _fuse_resnet(model: nn.Module, report: PackReport, backend: str | None) -> None:
    for name, blk in list(model.named_modules()):
        if not isinstance(blk, BiRealBlock) or not isinstance(blk.binary_conv, BinaryConv2d):
            continue
        conv = blk.binary_conv
        why = _not_packable(conv)
        if why or isinstance(binary_weight_signs(conv), str):
            continue
        blk.binary_conv = PackedConv2d(conv, shift=blk.move0, bn=blk.bn1, backend=backend)
        blk.move0, blk.bn1 = None, None
        report.fused[name] = "Bi-Real block: shift, sign+pack, conv, BN"

"""ReActNet-A (= the AdamBNN network) and its smaller configurations.

Computes what ``liuzechun/ReActNet`` ``mobilenet/*/reactnet.py`` and ``liuzechun/AdamBNN`` ``step*/reactnet.py``
compute (``docs/official-code.md``, *ReActNet-A*), with the official module names so that official state dicts map 1:1:

* stem ``feature.0``: 3x3 conv (stride 2 on ImageNet, 1 otherwise), BN, no activation;
* block ``feature.i`` (C -> P in {C, 2C}, stride s = 2 iff C != P and P != channels[1]):
  O1 = BN1(BinConv3x3_s(ApproxSign(X + b11))) + AvgPool2(X) (pool only if s = 2);
  O1 = PReLU1(O1 + b12) + b13;  A = ApproxSign(O1 + b21);
  O2 = BN2(BinConv1x1(A)) + O1, or, when P = 2C, concat[BN2_1(Conv1x1_down1(A)) + O1, BN2_2(Conv1x1_down2(A)) + O1];
  out = PReLU2(O2 + b22) + b23;
* head: global average pool, ``fc``.

Binary convs use ApproxSign on the input (sign(0) = 0, zero padding after binarization) and alpha * sign(W) weights
(clip-STE 1). ``step=1`` builds AdamBNN's step-1 network (binary activations, real weights); ``step=2`` both binary.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from onebit.binarize import ApproxSign, ScaledSign
from onebit.layers import BinaryConv2d, LearnableBias, set_binarization, shift_and_conv
from onebit.layers.activations import prelu_forward
from onebit.layers.fused import _observed
from onebit.models._registry import register_model
from onebit.models.official import OfficialLayout, register_layout

__all__ = ["ReActBlock", "ReActNet", "reactnet_a", "reactnet_digits"]

REACTNET_A_CHANNELS = (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)


def _binary_conv(cin: int, cout: int, k: int, stride: int, zero: float) -> BinaryConv2d:
    return BinaryConv2d(
        cin,
        cout,
        k,
        stride=stride,
        padding=k // 2,
        bias=False,
        input_binarizer=ApproxSign(zero=zero),
        weight_binarizer=ScaledSign(clip=1.0, zero=zero),
    )


class FirstConv(nn.Module):
    """Stem: 3x3 conv (no bias) then BN, no activation (official ``firstconv3x3``)."""

    def __init__(self, in_chans: int, out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn1(self.conv1(x))


class ReActBlock(nn.Module):
    """One ReActNet-A block (official ``BasicBlock``); see the module docstring for the computation."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, zero: float = 0.0) -> None:
        super().__init__()
        if planes not in (inplanes, 2 * inplanes):
            raise ValueError(f"a ReActNet block maps C -> C or 2C, got {inplanes} -> {planes}")
        self.inplanes, self.planes, self.stride = inplanes, planes, stride
        self.move11 = LearnableBias(inplanes)
        self.binary_3x3 = _binary_conv(inplanes, inplanes, 3, stride, zero)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.move12 = LearnableBias(inplanes)
        self.prelu1 = nn.PReLU(inplanes)
        self.move13 = LearnableBias(inplanes)
        self.move21 = LearnableBias(inplanes)
        if planes == inplanes:
            self.binary_pw = _binary_conv(inplanes, planes, 1, 1, zero)
            self.bn2 = nn.BatchNorm2d(planes)
        else:
            self.binary_pw_down1 = _binary_conv(inplanes, inplanes, 1, 1, zero)
            self.binary_pw_down2 = _binary_conv(inplanes, inplanes, 1, 1, zero)
            self.bn2_1 = nn.BatchNorm2d(inplanes)
            self.bn2_2 = nn.BatchNorm2d(inplanes)
        self.move22 = LearnableBias(planes)
        self.prelu2 = nn.PReLU(planes)
        self.move23 = LearnableBias(planes)

    def _shared_reference_binarization(self) -> bool:
        """The reference training path of a widening block, nothing observing its 1x1 convs: binarize once."""
        d1, d2 = self.binary_pw_down1, self.binary_pw_down2
        return (
            getattr(d1, "training_path", None) == "reference"
            and getattr(d2, "training_path", None) == "reference"
            and torch.is_grad_enabled()
            and type(d1.input_binarizer) is type(d2.input_binarizer)
            and d1.binarize_input == d2.binarize_input
            and getattr(d1.input_binarizer, "zero", 0.0) == getattr(d2.input_binarizer, "zero", 0.0)
            and d1.pad_value == 0.0
            and d2.pad_value == 0.0
            and not _observed(d1, d2, d1.input_binarizer, d2.input_binarizer, self.move21)
        )

    def forward(self, x: Tensor) -> Tensor:
        # the shifts move11/move21 run inside the lean binary conv (fused.shift_and_conv); same values either way
        out1 = self.bn1(shift_and_conv(self.binary_3x3, self.move11, x))
        if self.stride == 2:
            x = F.avg_pool2d(x, kernel_size=2, stride=2)
        out1 = x + out1
        # lean training path: the PReLUs' backward as plain float passes (activations.LeanPReLUFunction), same values
        lean = getattr(self.binary_3x3, "training_path", None) == "lean"
        out1 = self.move13(prelu_forward(self.prelu1, self.move12(out1), lean))
        if self.planes == self.inplanes:
            out2 = self.bn2(shift_and_conv(self.binary_pw, self.move21, out1))
            # the reference path adds in place, as the official block; elsewhere a hook may hold bn2's output
            reference = getattr(self.binary_pw, "training_path", None) == "reference" and torch.is_grad_enabled()
            out2 = out2.add_(out1) if reference and not _observed(self.bn2) else out2 + out1
        elif self._shared_reference_binarization():
            # reference path: one RSign for both convs, as the official block (one saved float sign, not two)
            d1, d2 = self.binary_pw_down1, self.binary_pw_down2
            a = d1.input_binarizer.reference(self.move21(out1)) if d1.binarize_input else self.move21(out1)
            # in-place residual adds on the BN outputs, as the official block (BN's backward does not keep them)
            out2 = torch.cat(
                [self.bn2_1(d1.forward_binarized(a)).add_(out1), self.bn2_2(d2.forward_binarized(a)).add_(out1)], dim=1
            )
        else:
            # one shared shift (official: one move21); fused, each conv adds it itself and both save the same out1
            out2 = torch.cat(
                [
                    self.bn2_1(shift_and_conv(self.binary_pw_down1, self.move21, out1)) + out1,
                    self.bn2_2(shift_and_conv(self.binary_pw_down2, self.move21, out1)) + out1,
                ],
                dim=1,
            )
        return self.move23(prelu_forward(self.prelu2, self.move22(out2), lean))


class ReActNet(nn.Module):
    """ReActNet-A style network over a channel list (entry 0 = stem width, then one block per entry).

    Args:
        channels: stem width followed by each block's output width.
        num_classes: classifier width.
        in_chans: input channels (3 for images, 1 for the bundled digits).
        stem_stride: stride of the stem conv; default 2 for ImageNet (num_classes == 1000), else 1.
        step: 1 = binary activations, real weights (AdamBNN step 1); 2 = binary activations and weights.
        zero: value sign(0) takes (0.0 official code, 1.0 papers).
    """

    def __init__(
        self,
        channels: Sequence[int] = REACTNET_A_CHANNELS,
        num_classes: int = 1000,
        in_chans: int = 3,
        stem_stride: int | None = None,
        step: int = 2,
        zero: float = 0.0,
    ) -> None:
        super().__init__()
        if step not in (1, 2):
            raise ValueError(f"step must be 1 (binary activations) or 2 (binary activations and weights), got {step}")
        stem_stride = stem_stride if stem_stride is not None else (2 if num_classes == 1000 else 1)
        self.channels = list(channels)
        self.num_classes = num_classes
        feature: list[nn.Module] = [FirstConv(in_chans, channels[0], stem_stride)]
        for i in range(1, len(channels)):
            cin, cout = channels[i - 1], channels[i]
            stride = 2 if (cin != cout and cout != channels[1]) else 1
            feature.append(ReActBlock(cin, cout, stride, zero))
        self.feature = nn.ModuleList(feature)
        self.fc = nn.Linear(channels[-1], num_classes)
        set_binarization(self, activations=True, weights=step == 2)

    def forward_features(self, x: Tensor) -> Tensor:
        for block in self.feature:
            x = block(x)
        return x

    def forward_head(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def reactnet_a(num_classes: int = 1000, step: int = 2, **kw) -> ReActNet:
    """ReActNet-A / AdamBNN (MobileNet-V1 based, 1024-wide head). 7.53 MB, 4.82e9 BOPs, 0.87e8 OPs at 224."""
    return ReActNet(REACTNET_A_CHANNELS, num_classes, step=step, **kw)


@register_model
def reactnet_digits(num_classes: int = 10, step: int = 2, width: int = 32, **kw) -> ReActNet:
    """A small ReActNet-A for the bundled 8x8 digits (upsampled, 1 channel): widths w, 2w, 4w, 4w, 8w, 8w.

    Same blocks as ReActNet-A, two stride-2 reductions; the stem keeps stride 1.
    """
    w = width
    kw.setdefault("in_chans", 1)
    return ReActNet((w, 2 * w, 4 * w, 4 * w, 8 * w, 8 * w), num_classes, step=step, **kw)


# ------------------------------------------------------------------------------------------------ official layouts
# ReActNet-A's official checkpoint layouts (engine: onebit.models.official).
def _identity_key(key: str) -> str:
    return key


_FLAT = re.compile(r"^feature\.(\d+)\.(binary_3x3|binary_pw|binary_pw_down1|binary_pw_down2)\.weights$")


def _flat_conv_shape(key: str) -> tuple[int, int, int, int] | None:
    """The 4-D shape of a ReActNet-repo flat ``weights`` key (all binary convs of ReActNet-A keep C_in -> C_in)."""
    m = _FLAT.match(key)
    if m is None:
        return None
    c = REACTNET_A_CHANNELS[int(m.group(1)) - 1]
    k = 3 if m.group(2) == "binary_3x3" else 1
    return (c, c, k, k)


def _flat_key_map(key: str) -> str:
    return key[: -len("weights")] + "weight" if _FLAT.match(key) else key


def _flat_to_ours(key: str, t: Tensor) -> Tensor:
    shape = _flat_conv_shape(key)
    # The official HardBinaryConv views its [Cout*Cin*k*k, 1] parameter to [Cout, Cin, k, k] (row-major).
    return t.reshape(shape) if shape is not None and t.numel() == torch.Size(shape).numel() else t


def _flat_to_official(key: str, t: Tensor) -> Tensor:
    return t.reshape(-1, 1) if _FLAT.match(key) else t


register_layout(
    OfficialLayout(
        "reactnet_a",
        build=lambda: reactnet_a(step=2),
        key_map=_identity_key,
        description="AdamBNN step 2 (= ReActNet-A), binary weights as 4-D `weight` (liuzechun/AdamBNN step2)",
    )
)
register_layout(
    OfficialLayout(
        "reactnet_a_step1",
        build=lambda: reactnet_a(step=1),
        key_map=_identity_key,
        description="AdamBNN/ReActNet-A step 1: binary activations, real weights (liuzechun/AdamBNN step1)",
    )
)
register_layout(
    OfficialLayout(
        "reactnet_a_reactnet_repo_layout",
        build=lambda: reactnet_a(step=2),
        key_map=_flat_key_map,
        to_ours=_flat_to_ours,
        to_official=_flat_to_official,
        description="ReActNet-A step 2 of liuzechun/ReActNet (binary weights flat `weights` [Cout*Cin*k*k, 1])",
    )
)

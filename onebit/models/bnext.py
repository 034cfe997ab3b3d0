"""BNext: BNext-T/S/M/L (``hpi-xnor/BNext`` ``src/bnext.py``) and BNext-18 (``src/birealnet.py``).

Computes what the released code computes (``docs/official-code.md``, *BNext* and *BNext-18*), with the official
module names, so official state dicts map onto ours with three renames only (see :func:`official_key_map`).

**Processors.** Every block is built from processors that share one binary branch

    Z = PReLU_b(BN_1(BinConv_s(HardSign(X + b))))        (``move``, ``binary_conv``, ``norm1``, ``activation2``)

where ``binary_conv`` binarizes its input with :class:`~onebit.binarize.HardSign` (sign, clip-STE 1.5, sign(0) = 0,
zero padding after binarization) and its weight with :class:`~onebit.binarize.ProgressiveSign`
(clamp(W / max(T, 1e-8), -1, 1), sign(W) once T < threshold; identity STE; no scaling factor; latent weights clamped
in place to [-1.5, 1.5]). Info-recoupling ("Info-RCP") then mixes a reference with Z through a learnable convex weight
λ (``scale``, [1, C, 1, 1], init 0.5, clamped in place to [0, 1]) and gates Z by an SE branch:

    M = λ ⊙ ref + (1 - λ) ⊙ Z;   Z = sigmoid(SE(M)) ⊙ Z          (SE: GAP, 1x1 C -> C/8 (+bias), ReLU, 1x1 C/8 -> C)

* :class:`InfoRCP` (official ``FFN_3x3`` / ``FFN_1x1``): R = X (2x2 avg-pooled if stride 2), ref = R,
  out = BN_2(Z) + R. Without recoupling neither the mix, the gate nor ``norm2`` is applied.
* :class:`ELMAttention` (official ``Attention``): R = PReLU_a(X), then avg-pooled (``bnext.py``, stride 2) or passed
  through the ``downsample`` path (BNext-18: AvgPool 2x2 -> real 1x1 conv -> BN); after the recoupling
  Z = Z ⊙ R (the ELM product), out = BN_2(Z) + R (``norm2`` also without recoupling).
  ``bnext.py`` mixes the raw input (pooled if stride 2), ``birealnet.py`` mixes R (``mix_with="residual"``).

**When λ is clamped** (the official code does it on ``.data`` in place): ``FFN_1x1`` on every forward, ``FFN_3x3`` and
``Attention`` of ``bnext.py`` only in training; BNext-18: ``FFN_3x3`` on every forward, ``Attention`` in training.
**When the latent weights are clamped**: in training only for BNext-T/S/M/L, on every forward for BNext-18.
Hard-sign thresholds: T < 1e-7 (``bnext.py``) and T < 1e-5 (``birealnet.py``).

**BNext-T/S/M/L** (``feature.0`` stem, ``feature.i`` blocks, then ``prelu``, GAP, ``fc``): the stem is a 3x3 conv
(stride 2; stride 1 when ``num_classes != 1000``) and BN, no activation; it owns an unused ``prelu`` (init value C0).
Block i maps C_in = list[i-1] to C_out = list[i], with stride 2 iff C_in != C_out and C_out != list[1]; its 3x3
processor (C_in -> C_in, the block stride) is stored as ``Attention`` and is an ELM-Attention for even i >= 2 only
(**[paper≠code]**: the paper puts ELM-Attention in every block), an Info-RCP 3x3 otherwise; then one ``FFN`` 1x1
Info-RCP, or ``FFN_1`` and ``FFN_2`` on the same input concatenated to 2C when the width doubles.
Ablations (the official ``ELM_Attention`` / ``Infor_Recoupling`` switches): ``elm_attention=False`` makes every 3x3
processor an Info-RCP stored as ``FFN_3x3``; ``infor_recoupling=False`` drops ``se``/``scale`` everywhere.

**BNext-18**: 7x7/2 stem conv, BN, 3x3/2 max pool (CIFAR, ``num_classes != 1000``: 3x3/1 conv, no pool), four stages
``layer0..layer3`` of two blocks (widths 64..512), each block an ELM-Attention (C_in -> C_out, stride, downsample) and
an Info-RCP 3x3; head PReLU, GAP, ``fc``. The official BNext-18 ``HardSign`` adds and removes a constant 1 in its
straight-through expression, which perturbs the ±1 outputs by one ulp; here the sign is exact.

All computation happens in the dtype of the parameters (``model.double()`` gives a float64 model, temperature buffers
included), which is how equivalence with the official code is checked (see ``docs/official-code.md``, *Numerical
equivalence*).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from onebit.binarize import HardSign, ProgressiveSign
from onebit.layers import BinaryConv2d, LearnableBias, SqueezeExpand, shift_and_conv
from onebit.layers.fused_bnext import chain_supported, lean_processor_chain
from onebit.models._registry import register_model
from onebit.models.official import OfficialLayout, register_layout

__all__ = [
    "BNEXT_CHANNELS",
    "BNext",
    "BNext18",
    "BNext18Block",
    "BNextBlock",
    "BNextStem",
    "ELMAttention",
    "InfoRCP",
    "SqueezeExpand",
    "bnext_18",
    "bnext_binary_conv",
    "bnext_large",
    "bnext_middle",
    "bnext_small",
    "bnext_tiny",
    "official_key_map",
]


def _widths(base: int, stages: Sequence[int]) -> tuple[int, ...]:
    """Stem width ``base``, one block of 2*base, then ``stages[k]`` blocks of width 4*base * 2^k."""
    out = [base, 2 * base]
    for k, n in enumerate(stages):
        out += [4 * base * 2**k] * n
    return tuple(out)


#: Entry 0 = stem width, then the output width of each block (``docs/official-code.md``, *BNext*).
BNEXT_CHANNELS: dict[str, tuple[int, ...]] = {
    "tiny": _widths(32, (2, 2, 6, 2)),
    "small": _widths(48, (2, 2, 6, 2)),
    "middle": _widths(48, (4, 4, 8, 4)),
    "large": _widths(64, (4, 4, 16, 4)),
}

#: Temperature below which the weight binarizer switches from clamp(W / T) to sign(W).
BNEXT_THRESHOLD = 1e-7
BNEXT18_THRESHOLD = 1e-5

_WHEN = ("train", "always")


def _check_when(name: str, value: str) -> str:
    if value not in _WHEN:
        raise ValueError(f"{name} must be one of {_WHEN}, got {value!r}")
    return value


def bnext_binary_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    threshold: float = BNEXT_THRESHOLD,
    latent_clip_when: str = "train",
) -> BinaryConv2d:
    """BNext's binary conv (official ``HardSign`` + ``HardBinaryConv``) as one :class:`BinaryConv2d`.

    Input: sign with clip-STE 1.5 (inert temperature buffer). Weight: progressive clamp(W / T, -1, 1), hard sign
    below ``threshold``, identity STE, no scale. Padding k//2 with zeros after binarization, no bias. Latent weights
    clamped in place to [-1.5, 1.5] in training (``latent_clip_when="train"``) or on every forward (``"always"``).
    """
    conv = BinaryConv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        bias=False,
        input_binarizer=HardSign(clip=1.5),
        weight_binarizer=ProgressiveSign(threshold=threshold),
        pad_value=0.0,
        latent_clip=1.5,
        latent_clip_when=_check_when("latent_clip_when", latent_clip_when),
    )
    with torch.no_grad():
        # The official latent weights start at N(0, 1) * 1e-3 (small, so that clamp(W / T) starts near 0), not at
        # nn.Conv2d's Kaiming-uniform default.
        conv.weight.normal_().mul_(1e-3)
    return conv


class _Processor(nn.Module):
    """Parameters and the binary branch shared by :class:`InfoRCP` and :class:`ELMAttention`.

    Every official parameter is created even where the forward does not use it (``activation1`` of the Info-RCP
    processors, ``norm2`` of Info-RCP without recoupling), so that official checkpoints round-trip and parameter
    counts match the released models.
    """

    def __init__(
        self,
        inplanes: int,
        planes: int,
        kernel_size: int,
        stride: int,
        infor_recoupling: bool,
        threshold: float,
        latent_clip_when: str,
        scale_clamp_when: str,
    ) -> None:
        super().__init__()
        self.inplanes, self.planes, self.stride = inplanes, planes, stride
        self.infor_recoupling = bool(infor_recoupling)
        self.scale_clamp_when = _check_when("scale_clamp_when", scale_clamp_when)
        self.move = LearnableBias(inplanes)
        self.binary_conv = bnext_binary_conv(inplanes, planes, kernel_size, stride, threshold, latent_clip_when)
        self.norm1 = nn.BatchNorm2d(planes)
        self.norm2 = nn.BatchNorm2d(planes)
        self.activation1 = nn.PReLU(inplanes)
        self.activation2 = nn.PReLU(planes)
        if self.infor_recoupling:
            self.se = SqueezeExpand(planes)
            self.scale = nn.Parameter(torch.full((1, planes, 1, 1), 0.5))

    def branch(self, x: Tensor) -> Tensor:
        """Z = PReLU_b(BN_1(BinConv(HardSign(x + b))))."""
        return self.activation2(self.norm1(shift_and_conv(self.binary_conv, self.move, x)))

    def recouple(self, ref: Tensor, z: Tensor) -> Tensor:
        """sigmoid(SE(λ ⊙ ref + (1 - λ) ⊙ z)) ⊙ z, clamping λ to [0, 1] first when the official code does."""
        if self.training or self.scale_clamp_when == "always":
            # In place on .data like the official code: no version bump, so a graph of an earlier forward that saved
            # λ stays valid, and the clamp is invisible to autograd.
            self.scale.data.clamp_(0.0, 1.0)
        mix = self.scale * ref + (1 - self.scale) * z
        return self.se(mix) * z

    def lean_forward(self, x: Tensor, elm: bool) -> Tensor:
        """The lean training path: the binary conv, then the float chain as one autograd Function that keeps the
        conv output (and, for ELM, the input) instead of every intermediate (``onebit.layers.fused_bnext``). Same
        ops in the same order as ``forward``, so the same values, bit for bit."""
        c = shift_and_conv(self.binary_conv, self.move, x)
        self.scale.data.clamp_(0.0, 1.0)  # training: every processor clamps λ (see recouple)
        return lean_processor_chain(self, c, x, elm)

    def extra_repr(self) -> str:
        return (
            f"{self.inplanes}, {self.planes}, stride={self.stride}, infor_recoupling={self.infor_recoupling}, "
            f"scale_clamp_when={self.scale_clamp_when!r}"
        )


class InfoRCP(_Processor):
    """Info-RCP processor without ELM (official ``FFN_3x3`` with k = 3, ``FFN_1x1`` with k = 1).

    out = BN_2(sigmoid(SE(λR + (1-λ)Z)) ⊙ Z) + R, R = X (avg-pooled 2x2 if stride 2), Z the binary branch.
    Without recoupling: out = Z + R (``norm2`` exists but is skipped, as in the official code).

    Args:
        inplanes, planes: input and output widths (equal in every released model).
        kernel_size: 3 (``FFN_3x3``) or 1 (``FFN_1x1``).
        stride: 1, or 2 (residual avg-pooled; never used by the released configurations).
        infor_recoupling: build and apply the λ-mix, SE gate and ``norm2``.
        threshold: hard-sign temperature threshold of the weight binarizer.
        latent_clip_when: ``"train"`` (bnext.py) or ``"always"`` (BNext-18) latent-weight clamping.
        scale_clamp_when: ``"train"`` (bnext.py ``FFN_3x3``) or ``"always"`` (``FFN_1x1``, BNext-18 ``FFN_3x3``).
    """

    def __init__(
        self,
        inplanes: int,
        planes: int | None = None,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        infor_recoupling: bool = True,
        threshold: float = BNEXT_THRESHOLD,
        latent_clip_when: str = "train",
        scale_clamp_when: str = "train",
    ) -> None:
        planes = inplanes if planes is None else planes
        if planes != inplanes:
            raise ValueError(f"an Info-RCP processor keeps its width (its residual is X), got {inplanes} -> {planes}")
        super().__init__(
            inplanes, planes, kernel_size, stride, infor_recoupling, threshold, latent_clip_when, scale_clamp_when
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1 and chain_supported(self, elm=False):
            return self.lean_forward(x, elm=False)
        residual = F.avg_pool2d(x, 2, 2) if self.stride == 2 else x
        z = self.branch(x)
        if self.infor_recoupling:
            z = self.norm2(self.recouple(residual, z))
        return z + residual


class ELMAttention(_Processor):
    """ELM-Attention processor (official ``Attention``): Info-RCP gate, then the product with the PReLU'd residual.

    R = PReLU_a(X), then ``downsample(R)`` if given, else AvgPool 2x2 when stride 2;
    Z = binary branch; if recoupling: Z = sigmoid(SE(λ ref + (1-λ) Z)) ⊙ Z; out = BN_2(Z ⊙ R) + R.

    Args:
        inplanes, planes: widths (equal in ``bnext.py``; BNext-18's first block of a stage doubles them).
        stride: stride of the binary 3x3 conv.
        downsample: module applied to PReLU_a(X) to form R (BNext-18: AvgPool -> real 1x1 conv -> BN).
        mix_with: ``"input"`` mixes X (pooled if stride 2; ``bnext.py``), ``"residual"`` mixes R (``birealnet.py``).
        infor_recoupling, threshold, latent_clip_when, scale_clamp_when: see :class:`InfoRCP`.
    """

    def __init__(
        self,
        inplanes: int,
        planes: int | None = None,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        mix_with: str = "input",
        infor_recoupling: bool = True,
        threshold: float = BNEXT_THRESHOLD,
        latent_clip_when: str = "train",
        scale_clamp_when: str = "train",
    ) -> None:
        planes = inplanes if planes is None else planes
        if mix_with not in ("input", "residual"):
            raise ValueError(f"mix_with must be 'input' or 'residual', got {mix_with!r}")
        if planes != inplanes and downsample is None:
            raise ValueError(f"a width change {inplanes} -> {planes} needs a downsample path for the residual")
        if mix_with == "input" and planes != inplanes:
            raise ValueError("mixing the raw input needs equal widths; use mix_with='residual'")
        super().__init__(inplanes, planes, 3, stride, infor_recoupling, threshold, latent_clip_when, scale_clamp_when)
        self.mix_with = mix_with
        self.downsample = downsample

    def _shortcut(self, x: Tensor) -> Tensor:
        if self.downsample is not None:
            return self.downsample(x)
        return F.avg_pool2d(x, 2, 2) if self.stride == 2 else x

    def forward(self, x: Tensor) -> Tensor:
        if self.downsample is None and self.mix_with == "input" and chain_supported(self, elm=True):
            return self.lean_forward(x, elm=True)
        residual = self._shortcut(self.activation1(x))
        z = self.branch(x)
        if self.infor_recoupling:
            if self.mix_with == "residual":
                ref = residual
            else:
                ref = F.avg_pool2d(x, 2, 2) if self.stride == 2 else x
            z = self.recouple(ref, z)
        return self.norm2(z * residual) + residual


class BNextStem(nn.Module):
    """Stem of BNext-T/S/M/L (official ``firstconv3x3``): 3x3 conv (no bias), BN, **no activation**.

    ``prelu`` is created (C0 slopes, each initialised to the value C0, as the official constructor does) but never
    used in the forward; it exists so the official state dict maps completely.
    """

    def __init__(self, in_chans: int, out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.prelu = nn.PReLU(out, init=float(out))

    def forward(self, x: Tensor) -> Tensor:
        return self.bn1(self.conv1(x))


class BNextBlock(nn.Module):
    """One BNext-T/S/M/L block (official ``BasicBlock`` and its ablation variants).

    A 3x3 processor (C -> C, the block stride) followed by one 1x1 Info-RCP (``FFN``), or two (``FFN_1``, ``FFN_2``,
    concatenated) when the block doubles the width.

    Args:
        inplanes, planes: block input and output widths (planes in {C, 2C}).
        stride: stride of the 3x3 processor.
        elm: use ELM-Attention for the 3x3 processor (else an Info-RCP 3x3).
        mixer_name: attribute name of the 3x3 processor: ``"Attention"`` in the full model and the no-recoupling
            ablation (also for its Info-RCP blocks), ``"FFN_3x3"`` when ELM-Attention is switched off.
        infor_recoupling: passed to every processor.
    """

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        *,
        elm: bool = True,
        mixer_name: str = "Attention",
        infor_recoupling: bool = True,
    ) -> None:
        super().__init__()
        if planes not in (inplanes, 2 * inplanes):
            raise ValueError(f"a BNext block maps C -> C or 2C, got {inplanes} -> {planes}")
        self.inplanes, self.planes, self.stride = inplanes, planes, stride
        self.mixer_name = mixer_name
        if elm:
            mixer: nn.Module = ELMAttention(inplanes, inplanes, stride, infor_recoupling=infor_recoupling)
        else:
            mixer = InfoRCP(inplanes, inplanes, 3, stride, infor_recoupling=infor_recoupling)
        self.add_module(mixer_name, mixer)
        # The 1x1 processors clamp λ on every forward (train and eval), unlike the 3x3 ones.
        ffn = dict(infor_recoupling=infor_recoupling, scale_clamp_when="always")
        if planes == inplanes:
            self.FFN = InfoRCP(inplanes, inplanes, 1, **ffn)
        else:
            self.FFN_1 = InfoRCP(inplanes, inplanes, 1, **ffn)
            self.FFN_2 = InfoRCP(inplanes, inplanes, 1, **ffn)

    @property
    def mixer(self) -> nn.Module:
        """The 3x3 processor, whatever its attribute name."""
        return getattr(self, self.mixer_name)

    def forward(self, x: Tensor) -> Tensor:
        x = self.mixer(x)
        if self.planes == self.inplanes:
            return self.FFN(x)
        return torch.cat([self.FFN_1(x), self.FFN_2(x)], dim=1)


class BNext(nn.Module):
    """BNext-T/S/M/L over a channel list (entry 0 = stem width, then one block per entry).

    Args:
        channels: stem width followed by each block's output width (see :data:`BNEXT_CHANNELS`).
        num_classes: classifier width.
        in_chans: input channels.
        stem_stride: stem conv stride; default 2 for ImageNet (``num_classes == 1000``), else 1 (CIFAR), as official.
        elm_attention: ELM-Attention in the even blocks >= 2 (off: every 3x3 processor is an Info-RCP ``FFN_3x3``).
        infor_recoupling: λ-mix and SE gate in every processor.
    """

    def __init__(
        self,
        channels: Sequence[int] = BNEXT_CHANNELS["tiny"],
        num_classes: int = 1000,
        in_chans: int = 3,
        stem_stride: int | None = None,
        elm_attention: bool = True,
        infor_recoupling: bool = True,
    ) -> None:
        super().__init__()
        if stem_stride is None:
            stem_stride = 2 if num_classes == 1000 else 1
        self.channels = list(channels)
        self.num_classes = num_classes
        self.num_features = self.channels[-1]
        self.elm_attention, self.infor_recoupling = bool(elm_attention), bool(infor_recoupling)
        feature: list[nn.Module] = [BNextStem(in_chans, self.channels[0], stem_stride)]
        for i in range(1, len(self.channels)):
            cin, cout = self.channels[i - 1], self.channels[i]
            stride = 2 if (cin != cout and cout != self.channels[1]) else 1
            feature.append(
                BNextBlock(
                    cin,
                    cout,
                    stride,
                    elm=self.elm_attention and i >= 2 and i % 2 == 0,
                    mixer_name="Attention" if self.elm_attention else "FFN_3x3",
                    infor_recoupling=self.infor_recoupling,
                )
            )
        self.feature = nn.ModuleList(feature)
        self.prelu = nn.PReLU(self.num_features)
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """Stem and blocks: the feature map before the head's PReLU."""
        for block in self.feature:
            x = block(x)
        return x

    def forward_head(self, x: Tensor) -> Tensor:
        """PReLU, global average pool, ``fc`` (no dropout: the official drop rates are never used)."""
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.prelu(x), 1), 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class BNext18Block(nn.Module):
    """One BNext-18 block (official ``birealnet.py`` ``BasicBlock``): ELM-Attention then an Info-RCP 3x3.

    The attention maps C_in -> C_out with the stride; when either changes, its residual is PReLU_a(X) passed through
    ``downsample`` = AvgPool2d(2, stride) -> real 1x1 conv (no bias) -> BN, and the λ-mix uses that residual.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.inplanes, self.planes, self.stride = inplanes, planes, stride
        downsample = None
        if stride != 1 or inplanes != planes:
            downsample = nn.Sequential(
                nn.AvgPool2d(kernel_size=2, stride=stride),
                nn.Conv2d(inplanes, planes, kernel_size=1, bias=False),
                nn.BatchNorm2d(planes),
            )
        common = dict(threshold=BNEXT18_THRESHOLD, latent_clip_when="always")
        self.Attention = ELMAttention(
            inplanes, planes, stride, downsample, mix_with="residual", scale_clamp_when="train", **common
        )
        self.FFN = InfoRCP(planes, planes, 3, 1, scale_clamp_when="always", **common)

    def forward(self, x: Tensor) -> Tensor:
        return self.FFN(self.Attention(x))


class BNext18(nn.Module):
    """BNext-18 (official ``birealnet.py`` ``BNext18``): a ResNet-18 layout of BNext blocks.

    Args:
        num_classes: classifier width.
        in_chans: input channels.
        small_stem: 3x3/1 stem conv without max pool (CIFAR). Default: ``num_classes != 1000``, as official.
        widths: output widths of ``layer0..layer3``.
        depths: blocks per stage.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        small_stem: bool | None = None,
        widths: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (2, 2, 2, 2),
    ) -> None:
        super().__init__()
        if len(widths) != len(depths):
            raise ValueError(f"one width per stage: got {len(widths)} widths and {len(depths)} depths")
        small_stem = num_classes != 1000 if small_stem is None else small_stem
        self.num_classes = num_classes
        self.num_features = widths[-1]
        self.num_stages = len(widths)
        c0 = widths[0]
        if small_stem:
            self.conv1 = nn.Conv2d(in_chans, c0, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_chans, c0, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(c0)
        cin = c0
        for s, (width, depth) in enumerate(zip(widths, depths)):
            stride = 1 if s == 0 else 2
            blocks = [BNext18Block(cin if b == 0 else width, width, stride if b == 0 else 1) for b in range(depth)]
            self.add_module(f"layer{s}", nn.Sequential(*blocks))
            cin = width
        self.prelu = nn.PReLU(self.num_features)
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """Stem (conv, BN, max pool; no activation) and the four stages."""
        x = self.maxpool(self.bn1(self.conv1(x)))
        for s in range(self.num_stages):
            x = getattr(self, f"layer{s}")(x)
        return x

    def forward_head(self, x: Tensor) -> Tensor:
        """PReLU, global average pool, ``fc``."""
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.prelu(x), 1), 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------------------------------------- entrypoints
@register_model
def bnext_18(num_classes: int = 1000, **kw) -> BNext18:
    """BNext-18 (ResNet-18 layout, ELM-Attention in every block). 12.06 M parameters, 5.4 MiB, 1.68e9 BOPs."""
    return BNext18(num_classes, **kw)


@register_model
def bnext_tiny(num_classes: int = 1000, elm_attention: bool = True, infor_recoupling: bool = True, **kw) -> BNext:
    """BNext-T (base width 32, stages 1:1:3:1). 30.86 M parameters, 13.3 MiB, 4.82e9 BOPs."""
    return BNext(
        BNEXT_CHANNELS["tiny"], num_classes, elm_attention=elm_attention, infor_recoupling=infor_recoupling, **kw
    )


@register_model
def bnext_small(num_classes: int = 1000, elm_attention: bool = True, infor_recoupling: bool = True, **kw) -> BNext:
    """BNext-S (base width 48, stages 1:1:3:1). 68.59 M parameters, 26.7 MiB, 10.84e9 BOPs."""
    return BNext(
        BNEXT_CHANNELS["small"], num_classes, elm_attention=elm_attention, infor_recoupling=infor_recoupling, **kw
    )


@register_model
def bnext_middle(num_classes: int = 1000, elm_attention: bool = True, infor_recoupling: bool = True, **kw) -> BNext:
    """BNext-M (base width 48, stages 2:2:4:2). 134.5 M parameters, 46.5 MiB, 20.09e9 BOPs."""
    return BNext(
        BNEXT_CHANNELS["middle"], num_classes, elm_attention=elm_attention, infor_recoupling=infor_recoupling, **kw
    )


@register_model
def bnext_large(num_classes: int = 1000, elm_attention: bool = True, infor_recoupling: bool = True, **kw) -> BNext:
    """BNext-L (base width 64, stages 2:2:8:2). 326.5 M parameters, 106.3 MiB, 52.15e9 BOPs."""
    return BNext(
        BNEXT_CHANNELS["large"], num_classes, elm_attention=elm_attention, infor_recoupling=infor_recoupling, **kw
    )


# ------------------------------------------------------------------------------------------------ official layouts
_ACT_TEMPERATURE = ".binary_activation.temperature"
_CONV_TEMPERATURE = ".binary_conv.temperature"


def official_key_map(key: str) -> str:
    """Official BNext / BNext-18 state-dict key -> ours (both files use the same processor names).

    The official code binarizes the conv input in a separate ``binary_activation`` module and keeps the weight
    temperature on ``binary_conv``; here both binarizers live inside the :class:`BinaryConv2d`, so only the two
    temperature buffers move. A leading ``module.`` (DataParallel/DDP checkpoints) is dropped; every other key is
    unchanged.
    """
    key = key.removeprefix("module.")
    if key.endswith(_ACT_TEMPERATURE):
        return key[: -len(_ACT_TEMPERATURE)] + ".binary_conv.input_binarizer.temperature"
    if key.endswith(_CONV_TEMPERATURE):
        return key[: -len(_CONV_TEMPERATURE)] + ".binary_conv.weight_binarizer.temperature"
    return key


register_layout(
    OfficialLayout(
        name="bnext18",
        build=bnext_18,
        key_map=official_key_map,
        description="hpi-xnor/BNext src/birealnet.py BNext18(num_classes=1000)",
    )
)
for _size, _build in (("tiny", bnext_tiny), ("small", bnext_small), ("middle", bnext_middle), ("large", bnext_large)):
    register_layout(
        OfficialLayout(
            name=f"bnext_{_size}",
            build=_build,
            key_map=official_key_map,
            description=f'hpi-xnor/BNext src/bnext.py BNext(num_classes=1000, size="{_size}")',
        )
    )

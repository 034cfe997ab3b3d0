"""Binary ResNet-18 family: ReActNet's Bi-Real based ResNet-18, BinaryNet-18, Bi-Real Net 18 and the strong baseline.

All four are configurations (:class:`BinaryResNetConfig`) of one builder, :class:`BinaryResNet`: a ResNet-18 trunk of
four stages (64, 128, 256, 512 channels; the first block of stages 2-4 halves the resolution), binary 3x3 convs,
real-valued stem, shortcut convs and classifier. They differ in what surrounds each binary conv:

=====================  =========================================================================  ===============
model                  unit around each binary 3x3 conv (``B`` = input binarizer)                 shortcut
=====================  =========================================================================  ===============
``reactnet_resnet18``  PReLU(BN(conv(B(x + b0))) + s(x) + b1) + b2                                 every conv
``birealnet18``        BN(conv(B(x))) + s(x)                                                      every conv
``strong_baseline``    PReLU(g * conv(B(BN(x)))) + s(x)                                           every conv
``binary_resnet18``    BN(conv(B(BN(conv(B(x)))))) + s(x)                                         every 2 convs
=====================  =========================================================================  ===============

``s`` is the identity, or, on the first block of stages 2-4, a real-valued downsample (AvgPool2d(2, 2) -> 1x1 conv
-> BN for the Bi-Real family, 1x1 stride-2 conv -> BN for BinaryNet-18). Stem: 7x7 stride-2 conv -> BN -> max-pool
3x3/2 (ImageNet, ``num_classes == 1000``) or 3x3 stride-1 conv -> BN without max-pool (CIFAR, any other class count),
the rule of the official BNext-18 code. Head: global average pool -> ``fc``.

``step=1`` builds the first stage of the two-step recipe (binary activations, real weights), ``step=2`` binarizes
both; :func:`onebit.layers.set_binarization` switches between them on a built model.

Complexity at 224x224 (MACs; BOPs = binary convs, FLOPs = real convs and ``fc``):

=====================  ===========  ============  =======  ==================================================
model                  params       BOPs          FLOPs    reference
=====================  ===========  ============  =======  ==================================================
``reactnet_resnet18``  11,704,424   1.676e9       1.378e8  official keys file: same params, BOPs and FLOPs
``birealnet18``        11,689,512   1.676e9       1.378e8  Bi-Real paper 1.68e9 / 1.39e8
``strong_baseline``    11,696,360   1.676e9       1.378e8  AdamBNN Table 3: 1.68e9 / 1.54e8 (see below)
``binary_resnet18``    11,689,512   1.676e9       1.378e8  (BNN-style ResNet-18, no published count)
=====================  ===========  ============  =======  ==================================================

The strong baseline's printed 1.54e8 FLOPs is not a conv/fc MAC count: a ResNet-18 with 16 binary 3x3 convs has
real MACs only in the 7x7 stem (118.0e6), three 1x1 shortcut convs (19.3e6) and ``fc`` (0.5e6), 1.378e8 in all, 10.5 %
below the table, which evidently also counts real element-wise work (BN, scaling, PReLU, pooling, additions).
Counting as well one FLOP per output element of each real element-wise operation (BN, PReLU, scale, shortcut
addition, global average pool; pooling: one per window tap) gives 1.480e8 for ``strong_baseline`` (-3.9 %, see
``tests/test_resnet.py``).
The same table supports this reading: its Real-to-Binary row (1.56e8) exceeds the strong baseline by about the
element-wise cost of Real-to-Binary's gating (pooling and rescaling; its dense layers have only ~0.35e6 MACs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from onebit.binarize import build_binarizer
from onebit.layers import BinaryConv2d, LearnableBias, set_binarization, shift_and_conv
from onebit.models._registry import register_model
from onebit.models.official import OfficialLayout, register_layout

__all__ = [
    "BINARY_RESNET18",
    "BIREALNET18",
    "REACTNET_RESNET18",
    "STRONG_BASELINE",
    "BasicBlock",
    "BiRealBlock",
    "BinaryResNet",
    "BinaryResNetConfig",
    "ChannelScale",
    "binary_resnet18",
    "birealnet18",
    "official_key_map",
    "reactnet_resnet18",
    "strong_baseline",
]

_ACTS = ("none", "rprelu", "prelu")
_DOWNSAMPLES = ("avgpool", "conv")


@dataclass(frozen=True)
class BinaryResNetConfig:
    """One member of the binary ResNet family.

    Attributes:
        block: ``"bireal"``: one binary 3x3 conv per block with a shortcut around it (Bi-Real's "double skip");
            ``"basic"``: the standard ResNet BasicBlock, two binary 3x3 convs and one shortcut.
        depths: blocks per stage.
        widths: channels per stage.
        input_binarizer: activation binarizer (registered name in ``onebit.binarize.BINARIZERS``).
        weight_binarizer: weight binarizer (likewise).
        shift: ``move0``: learnable per-channel shift before the sign (ReActNet's RSign threshold). Bi-Real blocks only.
        pre_norm: ``bn0``: BN on the real input before the sign (Real-to-Binary's BN -> sign -> conv order).
            Bi-Real blocks only.
        post_norm: ``bn1`` (``bn2``): BN on each binary conv's output.
        gain: ``scale``: learned per-channel output scale after the conv (XNOR-Net++ style). Bi-Real blocks only.
        act: Bi-Real blocks only. ``"none"``; ``"rprelu"``: PReLU(O + b1) + b2 *after* the shortcut addition
            (``move1``, ``prelu``, ``move2``: ReActNet); ``"prelu"``: PReLU *before* the addition (``prelu``:
            Real-to-Binary), so the shortcut path stays linear.
        stem_act: PReLU after the stem BN (``act1``).
        downsample: shortcut of the stride-2 blocks: ``"avgpool"`` = AvgPool2d(2, 2) -> 1x1 conv -> BN (Bi-Real,
            ReActNet, Real-to-Binary; keys ``downsample.1``/``.2``), ``"conv"`` = 1x1 stride-2 conv -> BN (standard
            ResNet; keys ``downsample.0``/``.1``).
    """

    block: str = "bireal"
    depths: tuple[int, ...] = (4, 4, 4, 4)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    input_binarizer: str = "approx_sign"
    weight_binarizer: str = "scaled_sign"
    shift: bool = False
    pre_norm: bool = False
    post_norm: bool = True
    gain: bool = False
    act: str = "none"
    stem_act: bool = False
    downsample: str = "avgpool"

    def __post_init__(self) -> None:
        if self.block not in ("bireal", "basic"):
            raise ValueError(f"block must be 'bireal' or 'basic', got {self.block!r}")
        if self.act not in _ACTS:
            raise ValueError(f"act must be one of {_ACTS}, got {self.act!r}")
        if self.downsample not in _DOWNSAMPLES:
            raise ValueError(f"downsample must be one of {_DOWNSAMPLES}, got {self.downsample!r}")
        if len(self.depths) != len(self.widths):
            raise ValueError(f"{len(self.depths)} depths for {len(self.widths)} widths")
        if self.block == "basic" and (self.shift or self.pre_norm or self.gain or self.act != "none"):
            raise ValueError("shift, pre_norm, gain and act are options of 'bireal' blocks only")


#: ReActNet's "Bi-Real based" ResNet-18 (liuzechun/ReActNet ``resnet/*/birealnet.py``; docs/official-code.md).
REACTNET_RESNET18 = BinaryResNetConfig(shift=True, act="rprelu")
#: Bi-Real Net 18 (Liu et al. 2018): sign -> binary conv -> BN, a real shortcut around every binary conv.
BIREALNET18 = BinaryResNetConfig()
#: Martinez et al. 2020's strong baseline (see :func:`strong_baseline`).
STRONG_BASELINE = BinaryResNetConfig(
    input_binarizer="ste_sign", pre_norm=True, post_norm=False, gain=True, act="prelu", stem_act=True
)
#: BinaryNet-18: ResNet-18 BasicBlocks with every 3x3 conv binarized as in BNN (Courbariaux et al. 2016).
BINARY_RESNET18 = BinaryResNetConfig(
    block="basic", depths=(2, 2, 2, 2), input_binarizer="ste_sign", weight_binarizer="ste_sign", downsample="conv"
)


class ChannelScale(nn.Module):
    """Learned per-channel output scale x * g, g of shape [1, C, 1, 1] initialised to 1 (XNOR-Net++'s channel form)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight

    def extra_repr(self) -> str:
        return str(self.weight.shape[1])


def _binary_conv3x3(cin: int, cout: int, stride: int, cfg: BinaryResNetConfig, zero: float) -> BinaryConv2d:
    # Fresh binarizer modules per conv; zero padding after binarization, as every official implementation computes.
    return BinaryConv2d(
        cin,
        cout,
        3,
        stride=stride,
        padding=1,
        bias=False,
        input_binarizer=build_binarizer(cfg.input_binarizer, zero=zero),
        weight_binarizer=build_binarizer(cfg.weight_binarizer, zero=zero),
    )


def _downsample(cin: int, cout: int, stride: int, kind: str) -> nn.Sequential | None:
    """The real-valued shortcut of a block that changes shape (``None`` when the identity fits)."""
    if stride == 1 and cin == cout:
        return None
    if kind == "conv":
        return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    # Pool first, then the 1x1 conv: 4x fewer real MACs than convolving at the input resolution.
    pool: nn.Module = nn.AvgPool2d(kernel_size=2, stride=stride) if stride != 1 else nn.Identity()
    return nn.Sequential(pool, nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))


class BiRealBlock(nn.Module):
    """One binary 3x3 conv with its own real shortcut (Bi-Real's "double skip": two per ResNet BasicBlock).

    ``out = post(pre_add(scale(bn1(conv(B(move0(bn0(x))))))) + s(x))`` where each optional part is present when
    :class:`BinaryResNetConfig` asks for it: ``bn0`` (``pre_norm``), ``move0`` (``shift``), ``bn1`` (``post_norm``),
    ``scale`` (``gain``), ``pre_add`` = PReLU (``act="prelu"``), ``post`` = PReLU(. + b1) + b2 (``act="rprelu"``).
    With ``REACTNET_RESNET18`` the attribute names are those of the official ``BasicBlock``.
    """

    def __init__(self, inplanes: int, planes: int, stride: int, cfg: BinaryResNetConfig, zero: float = 0.0) -> None:
        super().__init__()
        self.inplanes, self.planes, self.stride, self.act = inplanes, planes, stride, cfg.act
        self.bn0 = nn.BatchNorm2d(inplanes) if cfg.pre_norm else None
        self.move0 = LearnableBias(inplanes) if cfg.shift else None
        self.binary_conv = _binary_conv3x3(inplanes, planes, stride, cfg, zero)
        self.bn1 = nn.BatchNorm2d(planes) if cfg.post_norm else None
        self.scale = ChannelScale(planes) if cfg.gain else None
        if cfg.act == "rprelu":
            self.move1 = LearnableBias(planes)
            self.prelu = nn.PReLU(planes)
            self.move2 = LearnableBias(planes)
        elif cfg.act == "prelu":
            self.prelu = nn.PReLU(planes)
        self.downsample = _downsample(inplanes, planes, stride, cfg.downsample)

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if self.bn0 is not None:
            out = self.bn0(out)
        out = shift_and_conv(self.binary_conv, self.move0, out)  # the shift runs inside the lean conv
        if self.bn1 is not None:
            out = self.bn1(out)
        if self.scale is not None:
            out = self.scale(out)
        if self.act == "prelu":
            out = self.prelu(out)
        out = out + (x if self.downsample is None else self.downsample(x))
        if self.act == "rprelu":
            out = self.move2(self.prelu(self.move1(out)))
        return out


class BasicBlock(nn.Module):
    """ResNet BasicBlock with both 3x3 convs binary: ``bn2(conv2(B(bn1(conv1(B(x)))))) + s(x)``.

    No real-valued activation: as in BNN, the sign in front of each conv is the block's non-linearity (a ReLU before
    it would leave only {0, 1}).
    """

    def __init__(self, inplanes: int, planes: int, stride: int, cfg: BinaryResNetConfig, zero: float = 0.0) -> None:
        super().__init__()
        self.inplanes, self.planes, self.stride = inplanes, planes, stride
        self.binary_conv1 = _binary_conv3x3(inplanes, planes, stride, cfg, zero)
        self.bn1 = nn.BatchNorm2d(planes) if cfg.post_norm else None
        self.binary_conv2 = _binary_conv3x3(planes, planes, 1, cfg, zero)
        self.bn2 = nn.BatchNorm2d(planes) if cfg.post_norm else None
        self.downsample = _downsample(inplanes, planes, stride, cfg.downsample)

    def forward(self, x: Tensor) -> Tensor:
        out = self.binary_conv1(x)
        if self.bn1 is not None:
            out = self.bn1(out)
        out = self.binary_conv2(out)
        if self.bn2 is not None:
            out = self.bn2(out)
        return out + (x if self.downsample is None else self.downsample(x))


class BinaryResNet(nn.Module):
    """The builder of the family: real stem, ``layer1..layerN`` of binary blocks, global average pool, ``fc``.

    Args:
        cfg: which family member (see :class:`BinaryResNetConfig` and the module constants).
        num_classes: classifier width.
        in_chans: input channels.
        cifar_stem: 3x3 stride-1 stem without max-pool (CIFAR) instead of 7x7 stride 2 + max-pool (ImageNet);
            default: CIFAR stem iff ``num_classes != 1000``, as the official code decides.
        step: 1 = binary activations, real weights (first step of the two-step recipe); 2 = both binary.
        zero: value sign(0) takes (0.0 official code, 1.0 the papers).
    """

    def __init__(
        self,
        cfg: BinaryResNetConfig = REACTNET_RESNET18,
        num_classes: int = 1000,
        in_chans: int = 3,
        cifar_stem: bool | None = None,
        step: int = 2,
        zero: float = 0.0,
    ) -> None:
        super().__init__()
        if step not in (1, 2):
            raise ValueError(f"step must be 1 (binary activations) or 2 (binary activations and weights), got {step}")
        self.cfg, self.num_classes = cfg, num_classes
        cifar = num_classes != 1000 if cifar_stem is None else cifar_stem
        width = cfg.widths[0]
        if cifar:
            self.conv1 = nn.Conv2d(in_chans, width, 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_chans, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.PReLU(width) if cfg.stem_act else nn.Identity()
        self.maxpool = nn.Identity() if cifar else nn.MaxPool2d(3, 2, 1)
        block = BiRealBlock if cfg.block == "bireal" else BasicBlock
        inplanes = width
        for i, (depth, planes) in enumerate(zip(cfg.depths, cfg.widths)):
            blocks = []
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(inplanes, planes, stride, cfg, zero))
                inplanes = planes
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = inplanes
        self.fc = nn.Linear(inplanes, num_classes)
        set_binarization(self, activations=True, weights=step == 2)

    def stages(self) -> list[nn.Sequential]:
        """The stages ``layer1..layerN`` in order."""
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.cfg.depths))]

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for stage in self.stages():
            x = stage(x)
        return x

    def forward_head(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def reactnet_resnet18(num_classes: int = 1000, step: int = 2, **kw) -> BinaryResNet:
    """ReActNet's "Bi-Real based" ResNet-18, 65.5 % top-1 in the ReActNet paper (``docs/official-code.md``, *ReActNet
    ResNet-18*).

    Stem 7x7/2 -> BN -> max-pool (no activation); 4 stages x 4 blocks, each
    ``O = BN(BinConv3x3(ApproxSign(X + b0))) + s(X); out = PReLU(O + b1) + b2`` with alpha * sign(W) weights;
    ``s`` = AvgPool2d(2, 2) -> real 1x1 conv -> BN on the first block of stages 2-4. Module names are the official
    ones, so official checkpoints map key for key (layouts ``reactnet_resnet18`` and ``reactnet_resnet18_step1``).
    11,704,424 parameters; 1.676e9 BOPs, 1.378e8 FLOPs at 224.

    Args:
        num_classes: classifier width; anything but 1000 selects the CIFAR stem.
        step: 1 = binary activations, real weights (``resnet/1_step1``); 2 = both binary (``resnet/2_step2``).
        **kw: ``in_chans``, ``cifar_stem``, ``zero`` (see :class:`BinaryResNet`).
    """
    return BinaryResNet(REACTNET_RESNET18, num_classes, step=step, **kw)


@register_model
def birealnet18(num_classes: int = 1000, step: int = 2, **kw) -> BinaryResNet:
    """Bi-Real Net 18 (Liu et al. 2018): a real-valued shortcut around every binary conv ("double skip").

    Block ``BN(BinConv3x3(ApproxSign(X))) + s(X)`` with no other non-linearity; ApproxSign (Bi-Real's piecewise
    polynomial gradient) on activations, magnitude-aware alpha * sign(W) weights; ``s`` as in
    :func:`reactnet_resnet18`. ReActNet's ResNet-18 is this network plus RSign shifts and RPReLU.
    11,689,512 parameters; 1.676e9 BOPs, 1.378e8 FLOPs at 224 (paper: 1.68e9 / 1.39e8).

    Args:
        num_classes: classifier width; anything but 1000 selects the CIFAR stem.
        step: 1 = binary activations, real weights; 2 = both binary.
        **kw: ``in_chans``, ``cifar_stem``, ``zero`` (see :class:`BinaryResNet`).
    """
    return BinaryResNet(BIREALNET18, num_classes, step=step, **kw)


@register_model
def strong_baseline(num_classes: int = 1000, step: int = 2, **kw) -> BinaryResNet:
    """The "strong baseline" of Martinez et al. 2020 (Real-to-Binary, §4.1), AdamBNN's network for its analyses.

    Reading of the design (AdamBNN only names it "a ResNet-18 based binary neural network" with Bi-Real-like OPs;
    the rest follows the Real-to-Binary paper):

    * Bi-Real's double skip: 16 binary 3x3 convs, each with its own real shortcut;
    * the order BN -> sign -> binary conv (BN on the real input, ``bn0``, not after the conv);
    * binary-conv outputs rescaled by a learned per-channel factor (XNOR-Net++; the per-channel form, since the
      factorised C x H x W form would tie the parameters to one input resolution), on top of AdamBNN eq. 2's
      alpha * sign(W) weights;
    * PReLU instead of ReLU/none, applied to the scaled conv output *before* the shortcut addition, and after the
      stem BN;
    * real-valued downsample shortcuts AvgPool2d(2, 2) -> 1x1 conv -> BN; real 7x7 stem and ``fc``;
    * activations binarized with the clipped STE (gradient 1[|x| <= 1], AdamBNN eq. 1), weights with alpha * sign(W)
      and a clipped STE (eq. 2);
    * two-step training (binary activations first, ``step=1``; then binary weights, ``step=2``).

    11,696,360 parameters; 1.676e9 BOPs and 1.378e8 conv/fc FLOPs at 224 (AdamBNN Table 3: 1.68e9 / 1.54e8; the
    table's FLOPs also count element-wise work, see the module docstring).

    Args:
        num_classes: classifier width; anything but 1000 selects the CIFAR stem.
        step: 1 = binary activations, real weights; 2 = both binary.
        **kw: ``in_chans``, ``cifar_stem``, ``zero`` (see :class:`BinaryResNet`).
    """
    return BinaryResNet(STRONG_BASELINE, num_classes, step=step, **kw)


@register_model
def binary_resnet18(num_classes: int = 1000, step: int = 2, **kw) -> BinaryResNet:
    """BinaryNet-18 (BNext Fig. 2b): a plain ResNet-18 with every 3x3 conv binarized as in BNN.

    Standard BasicBlocks, two per stage: ``BN(BinConv(sign(BN(BinConv(sign(X)))))) + s(X)``, one shortcut per pair
    of binary convs, ``s`` = real 1x1 stride-2 conv -> BN on the first block of stages 2-4. sign(x) and sign(W) with
    clipped STEs (BNN's hardtanh gradient), no weight scaling (the following BN absorbs it).
    11,689,512 parameters; 1.676e9 BOPs, 1.378e8 FLOPs at 224.

    Args:
        num_classes: classifier width; anything but 1000 selects the CIFAR stem.
        step: 1 = binary activations, real weights; 2 = both binary.
        **kw: ``in_chans``, ``cifar_stem``, ``zero`` (see :class:`BinaryResNet`).
    """
    return BinaryResNet(BINARY_RESNET18, num_classes, step=step, **kw)


# --------------------------------------------------------------------------------------------------- official layouts
def official_key_map(key: str) -> str:
    """Official ReActNet ResNet-18 key -> ours: the module names are the official ones, so only a leading ``module.``
    (DataParallel checkpoints) is dropped. Both steps share the layout (step 1 stores real convs under the same
    ``binary_conv.weight`` names)."""
    return key.removeprefix("module.")


register_layout(
    OfficialLayout(
        name="reactnet_resnet18",
        build=lambda: reactnet_resnet18(step=2),
        key_map=official_key_map,
        description="liuzechun/ReActNet resnet/2_step2 birealnet18 (binary activations and weights)",
    )
)
register_layout(
    OfficialLayout(
        name="reactnet_resnet18_step1",
        build=lambda: reactnet_resnet18(step=1),
        key_map=official_key_map,
        description="liuzechun/ReActNet resnet/1_step1 birealnet18 (binary activations, real weights)",
    )
)

"""Real-valued (float) ResNet-18 and ResNet-34 for ImageNet: the papers' teachers and real-valued baselines.

* AdamBNN (and ReActNet, whose training code it reuses) distils every step from a real-valued **ResNet-34**
  (torchvision's released ``resnet34`` weights in the official code); BNext-18 uses the same teacher alone.
* The real-valued **ResNet-18** is the reference of AdamBNN's Fig. 1/2 (loss landscape and accuracy curves of real-
  valued vs binary ResNet-18) and the 69.74 % float baseline BNext compares its binary ResNet-18 against.

The layout is torchvision's ``resnet18`` / ``resnet34`` exactly: the same module names, so ``state_dict()`` has the
same keys and shapes (``conv1``, ``bn1``, ``layer1.0.conv1`` ... ``layer4.1.bn2``, ``layerN.0.downsample.0/1`` for
the strided first block of stages 2-4, ``fc``), and torchvision's released weights file loads with
``load_state_dict(strict=True)`` without torchvision installed. onebit never downloads weights: pass the file, e.g.
as a teacher ``resnet34@/path/resnet34-b627a593.pth`` (see :func:`onebit.distill.load_teacher`).

Arithmetic as torchvision's: stem 7x7/2 conv (no bias) -> BN -> ReLU -> 3x3/2 max pool (padding 1); stages of
BasicBlocks (3x3 conv -> BN -> ReLU -> 3x3 conv -> BN, plus the identity or a 1x1 strided conv -> BN shortcut, then
ReLU) with 64, 128, 256, 512 channels, the first block of stages 2-4 at stride 2; global average pool -> ``fc``.
Initialisation as torchvision's default: convs Kaiming-normal (fan_out, ReLU gain), BN weight 1 and bias 0, ``fc``
PyTorch's default Linear init (no zero-init of the last BN of a block).

==========  ==========  =================
model       blocks      parameters (1000)
==========  ==========  =================
resnet18    2, 2, 2, 2  11,689,512
resnet34    3, 4, 6, 3  21,797,672
==========  ==========  =================
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from onebit.models._registry import register_model

__all__ = ["FloatBasicBlock", "FloatResNet", "resnet18", "resnet34"]

_WIDTHS = (64, 128, 256, 512)


class FloatBasicBlock(nn.Module):
    """A real-valued ResNet BasicBlock: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class FloatResNet(nn.Module):
    """The ImageNet ResNet trunk with BasicBlocks (``depths`` blocks per stage), torchvision's module names.

    Args:
        depths: BasicBlocks per stage (``(2, 2, 2, 2)``: ResNet-18, ``(3, 4, 6, 3)``: ResNet-34).
        num_classes: width of ``fc``.
        in_chans: input channels of the stem (3 for torchvision's layout; another value changes ``conv1``'s shape).
    """

    def __init__(self, depths: Sequence[int], num_classes: int = 1000, in_chans: int = 3) -> None:
        super().__init__()
        if len(depths) != 4 or any(d < 1 for d in depths):
            raise ValueError(f"depths must be four positive block counts, got {tuple(depths)}")
        self.conv1 = nn.Conv2d(in_chans, _WIDTHS[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(_WIDTHS[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_planes = _WIDTHS[0]
        for i, (planes, depth) in enumerate(zip(_WIDTHS, depths, strict=True)):
            stride = 1 if i == 0 else 2
            blocks = [FloatBasicBlock(in_planes, planes, stride)]
            blocks += [FloatBasicBlock(planes, planes) for _ in range(depth - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            in_planes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(_WIDTHS[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


@register_model
def resnet18(num_classes: int = 1000, in_chans: int = 3) -> FloatResNet:
    """Real-valued ResNet-18 (torchvision's layout and init; 11.69 M parameters with 1000 classes)."""
    return FloatResNet((2, 2, 2, 2), num_classes=num_classes, in_chans=in_chans)


@register_model
def resnet34(num_classes: int = 1000, in_chans: int = 3) -> FloatResNet:
    """Real-valued ResNet-34 (torchvision's layout and init; 21.80 M parameters with 1000 classes): AdamBNN's and
    BNext-18's teacher."""
    return FloatResNet((3, 4, 6, 3), num_classes=num_classes, in_chans=in_chans)

"""The real-valued squeeze-and-expand (SE) gate of BNext's Info-RCP processors (a layer: the quantiser and the
packed engine recognise it, so it lives below both)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SqueezeExpand"]


class SqueezeExpand(nn.Module):
    """Real-valued SE gate of Info-RCP: sigmoid(conv(relu(conv(GAP(x))))), C -> C/ratio -> C, both convs with bias.

    The layers sit in ``se`` at indices 1 and 3 (0 = pooling, 2 = ReLU) as in the official ``SqueezeAndExpand``.
    """

    def __init__(self, channels: int, ratio: int = 8) -> None:
        super().__init__()
        hidden = channels // ratio
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.se(x))

"""Real-valued helpers around binary convolutions: learnable shifts (RSign threshold) and RPReLU."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LearnableBias", "RPReLU"]


class LearnableBias(nn.Module):
    """Per-channel additive shift x + b, b of shape [1, C, 1, 1] initialised to 0 (ReActNet's RSign threshold
    written as "shift, then sign", and the shifts of RPReLU). Parameter name ``bias`` as in the official code."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        b = self.bias if x.dim() == 4 else self.bias.view(1, -1, *([1] * (x.dim() - 2)))
        return x + b

    def extra_repr(self) -> str:
        return str(self.bias.shape[1])


class RPReLU(nn.Module):
    """ReActNet's RPReLU: PReLU(x + b_in) + b_out, per channel (PReLU slope init 0.25)."""

    def __init__(self, channels: int, init: float = 0.25) -> None:
        super().__init__()
        self.shift_in = LearnableBias(channels)
        self.prelu = nn.PReLU(channels, init=init)
        self.shift_out = LearnableBias(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.shift_out(self.prelu(self.shift_in(x)))

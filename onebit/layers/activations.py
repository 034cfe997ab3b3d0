"""Real-valued helpers around binary convolutions: learnable shifts (RSign threshold) and RPReLU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["LeanPReLUFunction", "LearnableBias", "RPReLU", "prelu_forward"]


def _observed(module: nn.Module) -> bool:
    """Whether a forward hook (the module's or a global one) would see this module's call."""
    from torch.nn.modules import module as _module

    return bool(_module._global_forward_pre_hooks or _module._global_forward_hooks) or bool(
        module._forward_pre_hooks or module._forward_hooks
    )


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


class LeanPReLUFunction(torch.autograd.Function):
    """``F.prelu(x, a)`` with a backward of plain float passes (torch's CPU PReLU backward is several times slower
    than a few multiplications). Saves what autograd saves for ``F.prelu``: the input (and the slopes)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        return F.prelu(x, weight)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        x, weight = ctx.saved_tensors
        per_channel = weight.numel() > 1
        slope = weight.view(1, -1, *([1] * (x.dim() - 2))) if per_channel else weight.reshape(())
        g_w = None
        if ctx.needs_input_grad[1]:  # d/da = x where x <= 0
            g_w = g * x.clamp(max=0.0)
            g_w = g_w.sum([d for d in range(x.dim()) if d != 1]) if per_channel else g_w.sum().reshape(weight.shape)
        g_x = None
        if ctx.needs_input_grad[0]:  # d/dx = 1 where x > 0 else a; sign(x) clamped at 0 is the float mask x > 0
            g_x = x.sign().clamp_(min=0.0).mul_(1 - slope).add_(slope).mul_(g)
        return g_x, g_w


def prelu_forward(module: nn.PReLU, x: Tensor, lean: bool) -> Tensor:
    """``module(x)``, through :class:`LeanPReLUFunction` when ``lean`` and autograd records, the input has a channel
    dimension and no hook observes the module (the same value either way)."""
    plain = type(module) is nn.PReLU and "forward" not in module.__dict__
    if lean and plain and torch.is_grad_enabled() and x.dim() >= 2 and not _observed(module):
        return LeanPReLUFunction.apply(x, module.weight)
    return module(x)

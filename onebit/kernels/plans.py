"""The per-input-shape plan cache shared by the packed block executors (:mod:`onebit.kernels.chain`,
:mod:`onebit.kernels.bnext_chain`, :mod:`onebit.kernels.fuse_resnet`).

A fused module keeps, in its plain attribute ``_plans``, one plan per input shape ``(n, h, w)``: the kernel
arguments with every call-invariant field filled and the tensors they point at. A plan answers ``current(module)``
(whether the module still computes with what it points at); one that does not is rebuilt. The cache is bounded
(:data:`MAX_PLANS`: many input shapes, e.g. a fuzzer, clear it). The modules drop their plans themselves when their
buffers move (``_apply``), on a copy and on re-chaining.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["MAX_PLANS", "hand_over", "handed_bits", "lookup"]

MAX_PLANS = 64  # per module


def lookup(module: nn.Module, n: int, h: int, w: int, make: Callable[[int, int, int], Any]) -> Any:
    """The current plan of ``module`` for inputs ``[n, ·, h, w]``, built by ``make(n, h, w)`` when there is none or
    the cached one is no longer current."""
    plans = module.__dict__.setdefault("_plans", {})  # (a module unpickled from an older version has none)
    plan = plans.get((n, h, w))
    if plan is None or not plan.current(module):
        plan = make(n, h, w)
        if len(plans) >= MAX_PLANS:
            plans.clear()
        plans[(n, h, w)] = plan
    return plan


def hand_over(nxt: nn.Module | None, y: Tensor, bits: Tensor | None) -> Tensor:
    """Leave ``bits`` (the packed input of ``nxt``, emitted with the output ``y``) with ``nxt``, which uses them only
    when it is called on this very ``y``; returns ``y``. A plain attribute: skips ``nn.Module.__setattr__`` on the hot
    path."""
    if bits is not None and nxt is not None:
        nxt.__dict__["_handoff"] = (y, bits)
    return y


def handed_bits(xp: Tensor | None, shape: tuple[int, ...]) -> Tensor | None:
    """``xp`` when it is packed input bits of ``shape`` (contiguous int64 words, as a handoff always is), else
    ``None``: the input is packed again."""
    if xp is None or xp.shape != shape or xp.dtype != torch.int64 or not xp.is_contiguous():
        return None
    return xp

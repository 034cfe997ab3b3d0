"""The compiled path of :class:`onebit.kernels.fuse.FusedReActBlock`: one native call per block from a cached plan.

A block's generic forward makes two :func:`~onebit.kernels.ops.binary_conv` calls with their argument checks,
allocations, the residual's permute and ``F.avg_pool2d`` for a stride-2 residual: at batch 1 that Python/torch work
between the kernels is a fifth of the model's time, and it does not parallelise. Here the call-invariant work is done
once per input shape (:class:`ReActPlan`: both convs' kernel arguments with every field but the data pointers filled,
the shapes of the results) and a call is one ``ob_react_block`` (``csrc/chain.c``): sign+pack of the input unless the
previous block handed its bits over, the 2x2 average pool of a stride-2 residual (torch's arithmetic order), the 3x3
conv with its epilogue, the 1x1 conv with its epilogue and the next block's sign+pack. The intermediates (packed
input, pooled residual, O1 and its bits) are temporaries of that call (so calls from several threads do not share
them; buffers kept in the plan measured no faster); the output and the handed-over bits are fresh tensors of every
call (the output is the caller's; the bits wait for the next block). Results are bitwise those of the generic path
(the same kernels, the same pool arithmetic).

Plans are dropped when the block's buffers move (``_apply``), when it is re-chained, and on a copy (``deepcopy``,
pickle); one whose weights or epilogues were replaced since is rebuilt. Shapes the fused call does not take (an odd
input at stride 2, whose residual broadcasts or fails as in the eval block; an input smaller than the kernel) run the
generic path, which gives the eval block's result or error. ``ONEBIT_REACT_PLANS=0`` (or setting :data:`enabled`)
switches this path off, for comparisons.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from onebit.kernels import _native, plans
from onebit.kernels._native import KernelArgumentError
from onebit.kernels.ops import ConvEpilogue, PackedWeight, _args_template, _ptr, _require_cpu

if TYPE_CHECKING:
    from onebit.kernels.fuse import FusedReActBlock

__all__ = ["ReActPlan", "enabled", "run_block"]

enabled = os.environ.get("ONEBIT_REACT_PLANS", "1") != "0"  # the plan path of FusedReActBlock (tests, benchmarks)


@dataclass(eq=False)
class ReActPlan:
    """Call-invariant native-path state of one :class:`~onebit.kernels.fuse.FusedReActBlock` for one input shape.

    The argument structs point into the objects held here (weights, epilogue vectors, the input shift): the plan
    keeps them alive, and :meth:`current` tells whether the block still uses them."""

    fused: bool  # ob_react_block takes this shape (else the generic path runs: broadcasting, the eval's errors)
    pw1: PackedWeight | None = None
    ep1: ConvEpilogue | None = None
    pw2: PackedWeight | None = None
    ep2: ConvEpilogue | None = None
    shift_src: Tensor | None = None  # the block's shift_in, and its flat float32 copy whose pointer is passed
    shift: Tensor | None = None
    nxt: object = None  # the block whose input bits are emitted (None: none)
    next_pad: int = 0
    c1: _native.ConvArgs | None = None
    c2: _native.ConvArgs | None = None
    c1_ref: object = None  # ctypes.byref of c1, c2 (built once)
    c2_ref: object = None
    stride: int = 1
    xp_shape: tuple[int, int, int, int] = (0, 0, 0, 0)  # the packed input (handed over or packed in the call)
    out_shape: tuple[int, int, int, int] = (0, 0, 0, 0)  # NHWC output
    bits_shape: tuple[int, int, int, int] | None = None  # the next block's packed input, or None

    def current(self, block: FusedReActBlock) -> bool:
        """Whether ``block`` still computes with what this plan points at (a few identity checks per call)."""
        conv1 = block._modules["conv1"]
        d = block.__dict__
        return (
            conv1.pw is self.pw1
            and conv1.epilogue is self.ep1
            and d["conv2_pw"] is self.pw2
            and d["conv2_ep"] is self.ep2
            and d["shift_in"] is self.shift_src
            and d["_next"] is self.nxt
            and d["next_pad"] == self.next_pad
            and getattr(self.ep1, "_checked_for", None) == self.pw1.out_channels  # type: ignore[union-attr]
            and getattr(self.ep2, "_checked_for", None) == self.pw2.out_channels  # type: ignore[union-attr]
        )


def _make_plan(block: FusedReActBlock, n: int, h: int, w: int) -> ReActPlan:
    conv1 = block._modules["conv1"]
    pw1, pw2 = conv1.pw, block.conv2_pw
    c, planes, stride = block.inplanes, block.planes, block.stride
    nxt = block.__dict__["_next"]
    plan = ReActPlan(
        fused=False, pw1=pw1, ep1=conv1.epilogue, pw2=pw2, ep2=block.conv2_ep, shift_src=block.shift_in, nxt=nxt,
        next_pad=block.next_pad, stride=stride,
    )  # fmt: skip
    geometry = (
        stride in (1, 2)
        and pw1.stride == stride
        and pw1.in_channels == c
        and pw1.out_channels == c
        and pw2.in_channels == c
        and pw2.out_channels == planes
        and pw2.kernel_size == (1, 1)
        and pw2.stride == 1
        and pw2.padding == 0
        and pw1.wq.device.type == "cpu"
        and pw2.wq.device.type == "cpu"
    )
    if not geometry:
        return plan
    try:
        oh, ow = pw1.out_size(h, w)
    except KernelArgumentError:
        return plan  # the generic path raises the eval block's error
    if (oh, ow) != ((h, w) if stride == 1 else (h // 2, w // 2)):
        return plan  # a residual that broadcasts (or does not fit): the generic path does what the eval block does
    ep1, ep2 = conv1.epilogue, block.conv2_ep
    if getattr(ep1, "_checked_for", None) != c or getattr(ep2, "_checked_for", None) != planes:
        return plan  # an epilogue changed in place: the generic path checks it again on every call
    shift = None
    if block.shift_in is not None:
        shift = block.shift_in.detach().reshape(-1).float().contiguous()
        _require_cpu(shift, torch.float32, c, "fused ReActNet block shift")
    pad = pw1.padding
    k1, k2 = (c + 63) // 64, (planes + 63) // 64
    a1 = _native.ConvArgs.from_buffer_copy(_args_template(pw1, ep1))  # checks what it points at
    a1.n, a1.hp, a1.wp, a1.h, a1.w, a1.oh, a1.ow = n, h + 2 * pad, w + 2 * pad, h, w, oh, ow
    a2 = _native.ConvArgs.from_buffer_copy(_args_template(pw2, ep2))
    a2.n, a2.hp, a2.wp, a2.h, a2.w, a2.oh, a2.ow = n, oh, ow, oh, ow, oh, ow
    bits_shape = None
    if nxt is not None:
        p = block.next_pad
        a2.bph = a2.bpw = p
        bits_shape = (n, oh + 2 * p, ow + 2 * p, k2)
    c1_ref, c2_ref = ctypes.byref(a1), ctypes.byref(a2)
    plan.fused = True
    plan.shift, plan.c1, plan.c2 = shift, a1, a2
    plan.c1_ref, plan.c2_ref = c1_ref, c2_ref
    plan.xp_shape = (n, h + 2 * pad, w + 2 * pad, k1)
    plan.out_shape = (n, oh, ow, planes)
    plan.bits_shape = bits_shape
    return plan


def run_block(block: FusedReActBlock, x: Tensor, xp: Tensor | None) -> Tensor | None:
    """The block's output for ``x`` (float32 CPU ``[N, C, H, W]``, checked by the caller) in one native call, with
    ``xp`` the bits of its input handed over by the previous block (or ``None``); ``None`` (nothing done) for a
    shape the fused call does not take."""
    n, _, h, w = x.shape
    plan = plans.lookup(block, n, h, w, lambda n, h, w: _make_plan(block, n, h, w))
    if not plan.fused:
        return None
    xp = plans.handed_bits(xp, plan.xp_shape)
    xn = x.permute(0, 2, 3, 1)
    if not xn.is_contiguous():
        xn = xn.contiguous()  # held until the call returns: the kernel reads it
    out = torch.empty(plan.out_shape, dtype=torch.float32)
    bits = None if plan.bits_shape is None else torch.empty(plan.bits_shape, dtype=torch.int64)  # zeroed in C
    _native.check(
        _native.load().ob_react_block(  # type: ignore[union-attr]
            plan.c1_ref, plan.c2_ref, xn.data_ptr(), _ptr(plan.shift), _ptr(xp), plan.stride, out.data_ptr(),
            _ptr(bits), torch.get_num_threads(),
        ),
        "ob_react_block",
    )  # fmt: skip
    return plans.hand_over(plan.nxt, out.permute(0, 3, 1, 2), bits)  # type: ignore[arg-type]

"""The compiled path of :class:`onebit.kernels.fuse.FusedBNextProcessor`: one native call per processor from a plan.

A processor's float tail around its binary conv is five small kernels (the ELM residual pass, sign+pack, the conv,
the pooled λ-mix mean, the SE gate, the gate + residual tail); called one by one from Python, the argument building,
allocations and permutes between them cost about as much as the float passes themselves at batch 1, and they do not
parallelise. Here the call-invariant work is done once per input shape (:class:`BNextPlan`: the conv's kernel
arguments and the processor's :class:`BNextArgs` with every field but the data pointers of the input and output,
built and passed by reference once; the shapes of the results) and a call is one ``ob_bnext_processor``
(``csrc/bnext_chain.c``), which runs the same kernels in the same order with the same thread count as the multi-call
path below, so the results are bitwise the same. Its temporaries (packed input, R, Z, pooled mix, gate) belong to
the call; the output and the handed-over bits are fresh tensors of every call (or the caller's ``out``).

The residual R is formed in the call from the input where the processor's geometry allows: the input itself
(Info-RCP, stride 1), ``ob_elm_residual`` with PReLU_a (ELM-Attention without a downsample, 2x2-pooled at stride 2)
or with a slope of ones, i.e. the plain 2x2 pool (Info-RCP at stride 2, whose mix reference is that same pool); a
processor whose residual passes through torch modules (BNext-18's downsample, another activation) hands R and the
mix reference over to the call. A processor with a non-linear SE module (e.g. quantised) runs the multi-call path,
which calls it in torch on the pooled vectors.

Plans are dropped when the processor's buffers move (``_apply``), when it is re-chained, and on a copy
(``deepcopy``, pickle); one whose weights, epilogue, shift or buffers were replaced since is rebuilt. Shapes the fused
kernels do not take (a residual that broadcasts or does not fit, an epilogue changed in place) run the generic path,
which gives the eval processor's result or error. ``ONEBIT_BNEXT_PLANS=0`` (or setting :data:`enabled`) runs the
previous multi-call path instead, for comparisons.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from onebit.kernels import _native, plans
from onebit.kernels._native import KernelArgumentError, _i, _p  # the ctypes field types of both structs
from onebit.kernels.ops import ConvEpilogue, PackedWeight, _args_template, _nhwc, _ptr, _require_cpu

if TYPE_CHECKING:
    from onebit.kernels.fuse import FusedBNextProcessor

__all__ = ["BNextArgs", "BNextPlan", "check_out", "enabled", "run"]

enabled = os.environ.get("ONEBIT_BNEXT_PLANS", "1") != "0"  # the one-call path of FusedBNextProcessor


class BNextArgs(ctypes.Structure):
    """Mirror of ``ob_bnext_args`` in ``csrc/bitconv.h`` (field order and types must match)."""

    _fields_ = [
        ("elm", _i),
        ("residual", _i),
        ("slope", _p),
        ("shift", _p),
        ("recouple", _i),
        ("mix_residual", _i),
        ("lam", _p),
        ("oml", _p),
        ("hd", _i),
        ("w1", _p),
        ("b1", _p),
        ("w2", _p),
        ("b2", _p),
        ("g2", _p),
        ("h2", _p),
        ("thresh", _p),
        ("bpad", _i),
    ]


# how the one call forms the residual R (ob_bnext_args.residual)
_R_INPUT, _R_PASS, _R_CALLER = 0, 1, 2


@dataclass(eq=False)
class BNextPlan:
    """Call-invariant native-path state of one :class:`~onebit.kernels.fuse.FusedBNextProcessor` for one input shape.

    The argument structs point into the objects held here (weights, epilogue, shifts, buffers): the plan keeps them
    alive, and :meth:`current` tells whether the processor still uses them."""

    fused: bool  # the native kernels take this shape (else the generic path runs: broadcasting, the eval's errors)
    single: bool = False  # ob_bnext_processor takes it (else the multi-call path)
    pw: PackedWeight | None = None
    ep: ConvEpilogue | None = None
    shift_src: Tensor | None = None  # the conv's input shift
    nxt: object = None  # the next processor (its bits are emitted when emit_pad >= 0)
    next_shift: Tensor | None = None
    bufs: tuple[Tensor, ...] = ()  # the processor's buffers (held: their ids are compared)
    buf_ids: tuple[int, ...] = ()
    args: _native.ConvArgs | None = None  # the conv's kernel arguments but input, output and thread count
    args_ref: object = None  # ctypes.byref(args), built once
    bargs: BNextArgs | None = None
    bargs_ref: object = None
    ones: Tensor | None = None  # the slope of ones of an Info-RCP stride-2 pool (R_PASS)
    mode: int = _R_INPUT
    oh: int = 0
    ow: int = 0
    c: int = 0
    cin: int = 0
    pad: int = 0  # the conv's padding (border of its packed input)
    xp_shape: tuple[int, int, int, int] = (0, 0, 0, 0)  # packed input with the conv's border
    out_shape: tuple[int, int, int, int] = (0, 0, 0, 0)  # NHWC output
    bits_shape: tuple[int, int, int, int] | None = None  # the next processor's packed input, or None
    emit_pad: int = -1  # border of the next processor's packed input emitted by the tail pass; -1: none
    # data pointers for the multi-call path (checked in _make_plan; plans are dropped when buffers move)
    shift: int | None = None
    emit_t: int | None = None
    slope1: int = 0  # PReLU_a slope (0: no C residual pass)
    lam: int = 0  # λ and 1 - λ (0: no recoupling)
    one_minus_lam: int = 0
    se: tuple[int, int, int, int, int] | None = None  # (hidden width, w1, b1, w2, b2) of a linear SE gate
    g2: int = 0  # BN2 gain and shift
    h2: int = 0

    def current(self, proc: FusedBNextProcessor) -> bool:
        """Whether ``proc`` still computes with what this plan points at (a few identity checks per call)."""
        conv = proc._modules["conv"]
        nxt = proc.__dict__["_next"]
        return (
            conv.pw is self.pw
            and conv.epilogue is self.ep
            and conv.shift is self.shift_src
            and nxt is self.nxt
            and (nxt is None or nxt._modules["conv"].shift is self.next_shift)
            and tuple(map(id, proc._buffers.values())) == self.buf_ids
            and getattr(self.ep, "_checked_for", None) == self.c
        )


def _make_plan(proc: FusedBNextProcessor, n: int, h: int, w: int) -> BNextPlan:
    """The call-invariant state for inputs ``[n, Cin, h, w]``, with every tensor the kernels will read by pointer
    checked (device, dtype, contiguity, size) once here instead of on every call."""
    conv = proc._modules["conv"]
    pw, ep = conv.pw, conv.epilogue
    nxt = proc.__dict__["_next"]
    bufs = tuple(proc._buffers.values())
    plan = BNextPlan(
        fused=False, pw=pw, ep=ep, shift_src=conv.shift, nxt=nxt,
        next_shift=None if nxt is None else nxt._modules["conv"].shift, bufs=bufs, buf_ids=tuple(map(id, bufs)),
    )  # fmt: skip
    oh, ow = pw.out_size(h, w)  # raises as F.conv2d for an input smaller than the kernel
    c, cin = pw.out_channels, pw.in_channels
    plan.c, plan.cin = c, cin
    if getattr(ep, "_checked_for", None) != c or pw.wq.device.type != "cpu":
        return plan  # an epilogue changed in place: the generic path checks it again on every call
    args = _native.ConvArgs.from_buffer_copy(_args_template(pw, ep))  # checks weights and epilogue
    _require_cpu(conv.shift, torch.float32, cin, "processor input shift")
    _require_cpu(proc.g2, torch.float32, c, "BN2 gain")
    _require_cpu(proc.h2, torch.float32, c, "BN2 shift")
    if proc._c_residual:
        _require_cpu(proc.slope1, torch.float32, cin, "PReLU_a slope")
    recouple, linear = proc.recouple, proc._se_linear
    hd = 0
    if recouple:
        _require_cpu(proc.lam, torch.float32, c, "lambda")
        _require_cpu(proc.one_minus_lam, torch.float32, c, "1 - lambda")
        if linear:
            hd = proc.se_w1.shape[0]
            _require_cpu(proc.se_w1, torch.float32, hd * c, "SE weight 1")
            _require_cpu(proc.se_b1, torch.float32, hd, "SE bias 1")
            _require_cpu(proc.se_w2, torch.float32, c * hd, "SE weight 2")
            _require_cpu(proc.se_b2, torch.float32, c, "SE bias 2")
    # The fused tail reads Z, R and the mix reference as [N, OH, OW, C]: with the C residual pass R is
    # [N, h/2, w/2, Cin] at stride 2 (floor, as avg_pool2d), [N, h, w, Cin] else. Any other geometry (an odd
    # input: the conv gives ceil(h/2); a residual of other width) goes the generic path, which broadcasts as the
    # eval processor does or raises its error.
    stride = proc.stride
    pooled = (h // 2, w // 2) if stride == 2 else (h, w)
    fits = pooled == (oh, ow) and cin == c
    if proc._c_residual and not fits:
        return plan
    plan.fused = True
    pad = pw.padding
    args.n, args.hp, args.wp, args.h, args.w, args.oh, args.ow = n, h + 2 * pad, w + 2 * pad, h, w, oh, ow
    emit = nxt is not None and nxt.conv.shift is not None
    if emit:
        _require_cpu(nxt.conv.shift, torch.float32, c, "next processor's shift")
        emit = nxt.conv.pw.in_channels == c
    emit_pad = nxt.conv.pw.padding if emit else -1
    plan.args, plan.args_ref = args, ctypes.byref(args)
    plan.oh, plan.ow, plan.pad, plan.emit_pad = oh, ow, pad, emit_pad
    plan.xp_shape = (n, h + 2 * pad, w + 2 * pad, (cin + 63) // 64)
    plan.out_shape = (n, oh, ow, c)
    plan.bits_shape = (n, oh + 2 * emit_pad, ow + 2 * emit_pad, (c + 63) // 64) if emit else None
    plan.shift = _ptr(conv.shift)
    plan.emit_t = _ptr(nxt.conv.shift) if emit else None
    plan.slope1 = proc.slope1.data_ptr() if proc._c_residual else 0
    plan.lam = proc.lam.data_ptr() if recouple else 0
    plan.one_minus_lam = proc.one_minus_lam.data_ptr() if recouple else 0
    if recouple and linear:
        plan.se = (hd, proc.se_w1.data_ptr(), proc.se_b1.data_ptr(), proc.se_w2.data_ptr(), proc.se_b2.data_ptr())
    plan.g2, plan.h2 = proc.g2.data_ptr(), proc.h2.data_ptr()
    # the one call: how it forms R (see the module docstring); a non-linear SE stays on the multi-call path
    mix_residual = proc.mix_residual
    slope = plan.slope1
    if proc._c_residual:
        mode = _R_PASS
    elif not proc.elm and fits and stride == 1:
        mode = _R_INPUT
    elif not proc.elm and fits:
        mode, mix_residual = _R_PASS, True  # R = the 2x2 pool of X, which is also Info-RCP's mix reference
        plan.ones = torch.ones(cin, dtype=torch.float32)
        slope = plan.ones.data_ptr()
    elif not proc.elm:
        return plan  # a residual that broadcasts (or fails): decided per call by the multi-call path
    else:
        mode = _R_CALLER  # R through torch modules (a downsample, another activation)
    plan.mode = mode
    plan.single = not recouple or linear
    se = plan.se or (0, 0, 0, 0, 0)
    bargs = BNextArgs(
        elm=int(proc.elm), residual=mode, slope=slope, shift=plan.shift, recouple=int(recouple),
        mix_residual=int(mix_residual), lam=plan.lam, oml=plan.one_minus_lam, hd=se[0], w1=se[1], b1=se[2],
        w2=se[3], b2=se[4], g2=plan.g2, h2=plan.h2, thresh=plan.emit_t, bpad=max(emit_pad, 0),
    )  # fmt: skip
    plan.bargs, plan.bargs_ref = bargs, ctypes.byref(bargs)
    return plan


def run(proc: FusedBNextProcessor, x: Tensor, xp: Tensor | None, out: Tensor | None, offset: int) -> Tensor | None:
    """The processor's output for ``x`` (float32 CPU ``[N, Cin, H, W]``, checked by the caller), written into ``out``
    (NHWC ``[N, OH, OW, C_total]``, at channel ``offset``) when given, with ``xp`` the bits of its input handed over
    by the previous processor (or ``None``); ``None`` (nothing done) for a shape the native kernels do not take."""
    n, _, h, w = x.shape
    plan = plans.lookup(proc, n, h, w, lambda n, h, w: _make_plan(proc, n, h, w))
    if not plan.fused:
        return None
    xp = plans.handed_bits(xp, plan.xp_shape)
    if not (enabled and plan.single):
        return _run_calls(proc, plan, x, xp, out, offset)
    r = ref = None
    if plan.mode == _R_CALLER:
        pooled_x, rt = proc._residual(x)
        want = (n, plan.c, plan.oh, plan.ow)
        mixes_x = proc.recouple and not proc.mix_residual
        if rt.shape != want or (mixes_x and pooled_x.shape != want):
            return None  # broadcast or refused by the generic path, as by the eval processor
        r = _nhwc(rt.float())  # held until the call returns: the kernel reads them
        ref = _nhwc(pooled_x.float()) if mixes_x else None
    xn = x.permute(0, 2, 3, 1)
    if not xn.is_contiguous():
        xn = xn.contiguous()  # held until the call returns: the kernel reads it
    bits = None
    if out is None:
        dst, ldo, offset = torch.empty(plan.out_shape, dtype=torch.float32), plan.c, 0
        if plan.bits_shape is not None:
            bits = torch.empty(plan.bits_shape, dtype=torch.int64)  # zeroed in C
    else:
        check_out(out, n, plan.oh, plan.ow, plan.c, offset, x.device)
        dst, ldo = out, out.shape[3]
    _native.check(
        _native.load().ob_bnext_processor(  # type: ignore[union-attr]
            plan.args_ref, plan.bargs_ref, xn.data_ptr(), _ptr(xp), _ptr(r), _ptr(ref), dst.data_ptr(), ldo, offset,
            _ptr(bits), torch.get_num_threads(),
        ),
        "ob_bnext_processor",
    )  # fmt: skip
    return plans.hand_over(plan.nxt, dst.permute(0, 3, 1, 2), bits)  # type: ignore[arg-type]


def _run_calls(
    proc: FusedBNextProcessor, plan: BNextPlan, x: Tensor, xp: Tensor | None, out: Tensor | None, offset: int
) -> Tensor | None:
    """The multi-call path (a non-linear SE module; ``ONEBIT_BNEXT_PLANS=0``): the kernels of ``ob_bnext_processor``
    called one by one, with the residual and the temporaries formed in torch. ``None`` (nothing done) for a residual
    that does not match the conv output: the generic path then does what the eval processor does."""
    lib = _native.load()
    n, _, h, w = x.shape
    oh, ow, c = plan.oh, plan.ow, plan.c
    thr = torch.get_num_threads()
    if proc._c_residual:
        xn = _nhwc(x)  # held: the kernels read it
        cin = x.shape[1]
        rh, rw = (h // 2, w // 2) if proc.stride == 2 else (h, w)
        want_px = proc.stride == 2 and proc.recouple and not proc.mix_residual
        # r and px (when wanted) in one allocation
        rpx = torch.empty(2 if want_px else 1, n, rh, rw, cin, dtype=torch.float32)
        r = rpx[0]
        px = rpx[1] if want_px else None
        _native.check(
            lib.ob_elm_residual(  # type: ignore[union-attr]
                xn.data_ptr(), n, h, w, cin, plan.slope1, proc.stride, _ptr(px), r.data_ptr(), thr
            ),
            "ob_elm_residual",
        )
        pooled_x = x if px is None else px.permute(0, 3, 1, 2)
        r = r.permute(0, 3, 1, 2)
    else:
        pooled_x, r = proc._residual(x)
        want = (n, c, oh, ow)
        if r.shape != want or (proc.recouple and not proc.mix_residual and pooled_x.shape != want):
            return None  # broadcast or refused by the generic path, as by the eval processor
    if xp is None:
        xp = torch.zeros(plan.xp_shape, dtype=torch.int64)
        xn = _nhwc(x)  # held: the kernel reads it
        _native.check(
            lib.ob_pack_nhwc(  # type: ignore[union-attr]
                xn.data_ptr(), plan.shift, n, h, w, plan.cin, plan.pad, plan.pad, plan.xp_shape[3],
                xp.data_ptr(), thr,
            ),
            "ob_pack_nhwc",
        )  # fmt: skip
    zn = torch.empty(n, oh, ow, c, dtype=torch.float32)  # Z = PReLU_b(BN1(conv)), NHWC
    args = _native.ConvArgs.from_buffer_copy(plan.args)  # type: ignore[arg-type]
    args.x, args.out_f, args.nthreads = xp.data_ptr(), zn.data_ptr(), thr
    _native.check(lib.ob_conv(ctypes.byref(args)), "ob_conv")  # type: ignore[union-attr]
    if proc.recouple:
        ref = r if proc.mix_residual else pooled_x
        se = plan.se
        hd = se[0] if se is not None else 0
        # the pooled mix m, the gate a and the SE hidden layer in one allocation
        scratch = torch.empty(2 * n * c + n * hd, dtype=torch.float32)
        m, a = scratch[: n * c].view(n, c), scratch[n * c : 2 * n * c].view(n, c)
        refn = _nhwc(ref.float())  # held: the kernel reads it; [N, OH, OW, C] (checked above)
        _native.check(
            lib.ob_mix_mean(  # type: ignore[union-attr]
                refn.data_ptr(), zn.data_ptr(), n, oh * ow, c, plan.lam, plan.one_minus_lam, m.data_ptr(), thr
            ),
            "ob_mix_mean",
        )  # fmt: skip
        if se is not None:  # one C pass: both products, ReLU, sigmoid, BN2's gain
            _native.check(
                lib.ob_se_gate(  # type: ignore[union-attr]
                    m.data_ptr(), n, c, hd, se[1], se[2], se[3], se[4], plan.g2, a.data_ptr(),
                    a.data_ptr() + 4 * n * c, thr,
                ),
                "ob_se_gate",
            )  # fmt: skip
        else:
            a = (proc._se_gate(m) * proc.g2).float().contiguous()
            if a.shape != (n, c):
                raise KernelArgumentError(f"SE gate gave {tuple(a.shape)} for [{n}, {c}] pooled vectors")
    else:
        a = proc.g2.expand(n, c).contiguous()
    rn = _nhwc(r.float())
    check_out(out, n, oh, ow, c, offset, x.device)
    dst = torch.empty(n, oh, ow, c, dtype=torch.float32) if out is None else out
    bits, pad = None, 0
    if plan.emit_pad >= 0 and out is None:
        pad = plan.emit_pad
        bits = torch.zeros(n, oh + 2 * pad, ow + 2 * pad, (c + 63) // 64, dtype=torch.int64)
    _native.check(
        lib.ob_gate_residual(  # type: ignore[union-attr]
            zn.data_ptr(), rn.data_ptr(), n, oh, ow, c, a.data_ptr(), plan.h2, int(proc.elm),
            dst.data_ptr() + 4 * offset, dst.shape[3], plan.emit_t if bits is not None else None, _ptr(bits), pad,
            (c + 63) // 64, 0, thr,
        ),
        "ob_gate_residual",
    )  # fmt: skip
    return plans.hand_over(proc._next, dst.permute(0, 3, 1, 2), bits)  # type: ignore[arg-type]


def check_out(out: Tensor | None, n: int, oh: int, ow: int, c: int, offset: int, device: torch.device) -> None:
    """``out`` (unless ``None``) can take ``c`` channels at ``offset`` of an ``[n, oh, ow, ·]`` NHWC result: what
    the kernels writing into it (by pointer, rows of ``out.shape[3]`` floats) need."""
    if out is not None and (
        out.dim() != 4
        or out.shape[:3] != (n, oh, ow)
        or offset < 0
        or offset + c > out.shape[3]
        or not out.is_contiguous()
        or out.dtype != torch.float32
        or out.device != device
    ):
        raise KernelArgumentError(
            f"out {out.dtype} {tuple(out.shape)} on {out.device} cannot take {c} channels at {offset} of "
            f"[{n}, {oh}, {ow}, ·] (contiguous float32 on {device})"
        )

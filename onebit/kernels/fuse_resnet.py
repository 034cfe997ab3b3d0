"""Fused packed modules of the binary ResNets (:mod:`onebit.models.resnet`: Bi-Real Net 18, ReActNet's ResNet-18 and
their relatives), registered with :func:`onebit.kernels.engine.register_fuser` and run by :func:`onebit.kernels.pack_`.

* Bi-Real blocks whose float work after the binary conv is what the kernel epilogue computes, in its order — BN,
  the residual, optionally RPReLU (``act="rprelu"``, after the addition) — become :class:`FusedBiRealBlock`: the whole
  block ``post(BN(conv(sign(x + b))) + s(x))`` is one ``ob_conv`` call with the residual in the epilogue, which on
  small maps (:data:`HANDOFF_MAX_PIXELS`) also emits the next block's packed input ``sign(out + b_next)`` (handed
  over: the next block skips its sign+pack). That is ``birealnet18`` (no shift, no activation) and
  ``reactnet_resnet18`` (shift, RPReLU). The per-call Python work
  (argument checks, the kernel-argument struct, shapes) is done once per input shape (:class:`_BiRealPlan`, the
  scheme of :mod:`onebit.kernels.chain`). The real-valued downsample ``AvgPool2d(2) -> 1x1 conv -> BN`` stays in
  torch with the BN folded into the conv (:class:`~onebit.kernels.fuse.FoldedConvBN`, channels_last weight), so its
  output is NHWC memory that the epilogue reads in place.
* Other Bi-Real configurations (``bn0`` before the sign, a channel ``scale``, PReLU before the addition: the strong
  baseline) keep a :class:`~onebit.kernels.engine.PackedConv2d` with the shift ``move0`` and ``bn1`` folded in, the
  rest of the block in float.
* The stem of every :class:`~onebit.models.resnet.BinaryResNet`: ``conv1`` and ``bn1`` folded into one convolution
  with a channels_last weight, so ``act1``, ``maxpool`` and the first block run on NHWC memory.

Results: a fused block computes ``(scale * dot + bias) + res`` (then RPReLU) in float32 with separate multiply and
add, the operations of the separate packed conv and torch addition: bitwise the unfused packed path for identity
shortcuts. The folded BNs (stem, downsample) round differently from conv -> BN: equal to the eval model within the
packed engine's tolerance (see :mod:`onebit.kernels.engine`).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from onebit.kernels import _native, plans
from onebit.kernels._native import KernelArgumentError
from onebit.kernels.engine import (
    PackedConv2d,
    PackReport,
    _check_input,
    _not_packable,
    _set_child,
    binary_weight_signs,
    register_fuser,
)
from onebit.kernels.fuse import FoldedConvBN, _link
from onebit.kernels.ops import (
    ConvEpilogue,
    PackedWeight,
    _args_template,
    _nhwc,
    _require_cpu,
    binary_conv,
    pack_activations,
    resolve_backend,
)
from onebit.layers import BinaryConv2d, LearnableBias
from onebit.models.resnet import BinaryResNet, BiRealBlock

__all__ = ["FusedBiRealBlock"]

#: Largest output (pixels per image) whose bits a block emits for the next one; on larger maps the next block packs
#: its input itself. Measured with the AVX2 kernel (Zen 3, 1 thread): the sign+pack in the conv epilogue costs about
#: twice a separate ``ob_pack_nhwc`` on 56x56x64 and 28x28x128 outputs (+65 us against 33 us; +40 against 17), less
#: than the separate call with its Python work on 14x14x256 and 7x7x512. Read when a plan is made.
HANDOFF_MAX_PIXELS = 14 * 14


class FusedBiRealBlock(nn.Module):
    """A Bi-Real block ``post(BN(conv(sign(x + b))) + s(x))`` (:class:`~onebit.models.resnet.BiRealBlock` without
    ``bn0``, ``scale`` or a pre-addition PReLU; ``post`` = nothing or RPReLU) as one packed conv whose epilogue adds
    the shortcut.

    ``conv`` holds the packed weight, the input shift and the epilogue: BN (α folded), then the residual (added by
    the kernel, not part of ``conv`` itself), then RPReLU, and, when :meth:`chain` linked a next block and the output
    has at most :data:`HANDOFF_MAX_PIXELS` pixels, the bits of ``sign(out + shift_next)`` with that block's padding as
    border. ``downsample``: the shortcut of a block that
    changes shape, ``AvgPool2d(2) -> 1x1 conv`` with its BN folded in (any other shortcut module is kept as it is).

    On the native backend a call is the shortcut (torch), a sign+pack of the input unless the previous block handed
    its bits over, and one ``ob_conv`` from a plan cached per input shape (``_plans``); the generic path (other
    backends and devices; shapes the plan does not take: a shortcut that broadcasts or does not fit, as in the eval
    block) calls :func:`~onebit.kernels.ops.binary_conv` with the same epilogue.
    """

    def __init__(self, block: BiRealBlock, backend: str | None = None) -> None:
        super().__init__()
        if not _fusable(block):
            raise ValueError("not a Bi-Real block of the fused form (no bn0, no scale, act 'none' or 'rprelu')")
        self.backend = backend
        self.inplanes, self.planes, self.stride, self.act = block.inplanes, block.planes, block.stride, block.act
        rprelu = block.act == "rprelu"
        self.conv = PackedConv2d(
            block.binary_conv,  # type: ignore[arg-type]
            shift=block.move0,
            bn=block.bn1,
            prelu=block.prelu if rprelu else None,
            act_in=block.move1.bias.detach().reshape(-1) if rprelu else None,
            act_out=block.move2.bias.detach().reshape(-1) if rprelu else None,
            backend=backend,
        )
        self.downsample = _fold_downsample(block.downsample)
        self.next_pad = 1
        self._next: FusedBiRealBlock | None = None
        self._handoff: tuple[Tensor, Tensor] | None = None
        self._plans: dict[tuple[int, int, int], _BiRealPlan] = {}  # per input shape (n, h, w)

    def chain(self, nxt: FusedBiRealBlock | None) -> None:
        """Emit the packed input of ``nxt`` (``sign(out + nxt's shift)``, border = its padding; ``None``: stop) from
        this block's kernel call, on outputs of at most :data:`HANDOFF_MAX_PIXELS` pixels: for a block whose input
        is this one's output (checked at run time: the bits are used only when ``nxt`` receives this very tensor)."""
        _link(self, nxt)
        self.__dict__["_plans"] = {}
        self.next_pad = 1 if nxt is None else nxt.conv.pw.padding
        ep = self.conv.epilogue
        ep.thresh = None if nxt is None else nxt.conv.shift
        self.conv.epilogue = ep.checked(self.planes)

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        super()._apply(fn, recurse)  # conv (a PackedConv2d) and the shortcut move themselves
        self.__dict__["_plans"] = {}  # they hold data pointers of the buffers
        self.__dict__["_handoff"] = None
        return self

    def __getstate__(self) -> dict:
        # a copy (deepcopy, pickle) starts without plans: theirs would point at this module's buffers
        return {**self.__dict__, "_plans": {}, "_handoff": None}

    def forward(self, x: Tensor) -> Tensor:
        d = self.__dict__
        handoff = d["_handoff"]
        if handoff is not None:
            d["_handoff"] = None  # plain attribute: skips nn.Module.__setattr__ on the hot path
        xp = handoff[1] if handoff is not None and handoff[0] is x else None
        x = _check_input(x, self.inplanes, "fused Bi-Real block")
        if x.is_cpu:
            n, _, h, w = x.shape
            # plans exist for the native backend only (other backends: the generic path, every call)
            plan = plans.lookup(self, n, h, w, self._make_plan) if resolve_backend(self.backend) == "native" else None
            if plan is not None and plan.fused:
                y = self._forward_native(plan, x, xp)
                if y is not None:
                    return y
        return self._forward_generic(x, xp)

    def _forward_generic(self, x: Tensor, xp: Tensor | None, res: Tensor | None = None) -> Tensor:
        """The eval block's operations through :func:`~onebit.kernels.ops.binary_conv` (any backend and device):
        its broadcasting of the shortcut and its errors, in its order (conv, shortcut, addition). ``res``: the
        shortcut when the caller already computed it."""
        conv = self.__dict__["_modules"]["conv"]
        pw = conv.pw
        n, _, h, w = x.shape
        oh, ow = pw.out_size(h, w)  # the conv's error first, as in the eval block
        if res is None:
            res = x if self.downsample is None else self.downsample(x)
        want = (n, self.planes, oh, ow)
        full = torch.broadcast_shapes(res.shape, want)  # raises as `out + s(x)` does in the eval block
        if tuple(full) != want:
            raise KernelArgumentError(f"shortcut {tuple(res.shape)} does not fit the conv output {list(want)}")
        if xp is None or xp.shape != (n, h + 2 * pw.padding, w + 2 * pw.padding, (self.inplanes + 63) // 64):
            xp = pack_activations(x, conv.shift, pw.padding, backend=self.backend)
        y, _, _ = binary_conv(xp, pw, (h, w), conv.epilogue, residual=res.expand(want), backend=self.backend)
        return y  # type: ignore[return-value]

    def _forward_native(self, plan: _BiRealPlan, x: Tensor, xp: Tensor | None) -> Tensor | None:
        """One ``ob_conv`` from ``plan`` (of this input shape, fused; CPU float32 ``x`` checked by the caller), with
        ``xp`` the input's bits when the previous block handed them over; ``None`` (nothing done) for a shortcut
        of another shape than the conv output (the generic path then does what the eval block does)."""
        lib = _native.load()
        thr = torch.get_num_threads()
        xp = plans.handed_bits(xp, plan.xp_shape)
        if xp is None:
            xn = x if x.is_contiguous(memory_format=torch.channels_last) else _nhwc(x).permute(0, 3, 1, 2)
            xp = torch.zeros(plan.xp_shape, dtype=torch.int64)
            n, c, h, w = x.shape
            _native.check(
                lib.ob_pack_nhwc(  # type: ignore[union-attr]
                    xn.data_ptr(), plan.shift, n, h, w, c, plan.pad, plan.pad, plan.xp_shape[3], xp.data_ptr(), thr
                ),
                "ob_pack_nhwc",
            )
        ds = self.downsample
        if ds is None:
            r = x  # the plan checked that the conv output has its shape
        else:
            r = ds(x)
            if r.shape != plan.res_shape or r.dtype is not torch.float32 or not r.is_cpu:
                return self._forward_generic(x, xp, r)  # broadcasts or fails as in the eval block
        if not r.is_contiguous(memory_format=torch.channels_last):
            r = _nhwc(r).permute(0, 3, 1, 2)  # held until the call returns: the kernel reads NHWC memory
        y = torch.empty(plan.res_shape, dtype=torch.float32, memory_format=torch.channels_last)  # NHWC memory
        a = _native.ConvArgs.from_buffer_copy(plan.args)
        a.x, a.res, a.out_f, a.nthreads = xp.data_ptr(), r.data_ptr(), y.data_ptr(), thr
        bits = None
        if plan.bits_shape is not None:
            bits = torch.zeros(plan.bits_shape, dtype=torch.int64)  # the border stays zero
            a.out_bits = bits.data_ptr()
        _native.check(lib.ob_conv(ctypes.byref(a)), "ob_conv")  # type: ignore[union-attr]
        return plans.hand_over(plan.nxt, y, bits)  # type: ignore[arg-type]

    def _make_plan(self, n: int, h: int, w: int) -> _BiRealPlan:
        conv = self.__dict__["_modules"]["conv"]
        pw, ep, nxt = conv.pw, conv.epilogue, self.__dict__["_next"]
        plan = _BiRealPlan(
            fused=False, pw=pw, ep=ep, shift_src=conv.shift, nxt=nxt, next_pad=self.next_pad, backend=self.backend
        )
        c, o = self.inplanes, self.planes
        if pw.in_channels != c or pw.out_channels != o or pw.wq.device.type != "cpu":
            return plan
        if getattr(ep, "_checked_for", None) != o:
            return plan  # an epilogue changed in place: the generic path checks it again on every call
        try:
            oh, ow = pw.out_size(h, w)
        except KernelArgumentError:
            return plan  # the generic path raises the eval block's error
        if self.downsample is None and (oh, ow, o) != (h, w, c):
            return plan  # an identity shortcut that broadcasts or fails: as the eval block, on the generic path
        shift = conv.shift
        if shift is not None:
            _require_cpu(shift, torch.float32, c, "fused Bi-Real block shift")
        pad = pw.padding
        a = _native.ConvArgs.from_buffer_copy(_args_template(pw, ep))  # checks what it points at
        a.n, a.hp, a.wp, a.h, a.w, a.oh, a.ow, a.res_c = n, h + 2 * pad, w + 2 * pad, h, w, oh, ow, o
        if nxt is not None and oh * ow <= HANDOFF_MAX_PIXELS:
            a.bph = a.bpw = self.next_pad
            plan.bits_shape = (n, oh + 2 * self.next_pad, ow + 2 * self.next_pad, (o + 63) // 64)
        plan.fused = True
        plan.args = a
        plan.shift = None if shift is None else shift.data_ptr()
        plan.pad = pad
        plan.xp_shape = (n, h + 2 * pad, w + 2 * pad, (c + 63) // 64)
        plan.res_shape = torch.Size((n, o, oh, ow))
        return plan

    def pack_description(self) -> str:
        """The line of this module in the pack report."""
        post = ", RPReLU" if self.act == "rprelu" else ""
        return f"fused Bi-Real block {self.conv.desc}, residual{post} s{self.stride}"

    def extra_repr(self) -> str:
        dev = self.conv.pw.words.device
        return (
            f"{self.inplanes}->{self.planes}, stride={self.stride}, act={self.act}, "
            f"backend={resolve_backend(self.backend, dev)}"
        )


@dataclass(eq=False)
class _BiRealPlan:
    """Call-invariant native-path state of one :class:`FusedBiRealBlock` for one input shape: the ``ob_conv``
    arguments with every field but the data pointers of the call (input bits, shortcut, outputs) and the thread count
    filled in. The struct points into the objects held here (weight, epilogue, shift): the plan keeps them alive, and
    :meth:`current` tells whether the block still uses them."""

    fused: bool  # the plan path takes this shape (else the generic path runs: broadcasting, the eval's errors)
    pw: PackedWeight
    ep: ConvEpilogue
    shift_src: Tensor | None
    nxt: FusedBiRealBlock | None  # the block whose input bits are emitted (None: none)
    next_pad: int
    backend: str | None  # the block's backend when the plan was made (native)
    args: _native.ConvArgs | None = None
    shift: int | None = None  # data pointer of the input shift (sign+pack when no bits were handed over)
    pad: int = 0
    xp_shape: tuple[int, int, int, int] = (0, 0, 0, 0)  # the packed input (handed over or packed in the call)
    res_shape: torch.Size = torch.Size()  # the shortcut and the output, NCHW (NHWC memory)
    bits_shape: tuple[int, int, int, int] | None = None  # the next block's packed input, or None

    def current(self, block: FusedBiRealBlock) -> bool:
        """Whether ``block`` still computes with what this plan points at (a few identity checks per call)."""
        conv = block.__dict__["_modules"]["conv"]
        return (
            conv.pw is self.pw
            and conv.epilogue is self.ep
            and conv.shift is self.shift_src
            and block.__dict__["_next"] is self.nxt
            and block.__dict__["next_pad"] == self.next_pad
            and block.__dict__["backend"] == self.backend
            and getattr(self.ep, "_checked_for", None) == self.pw.out_channels
        )


class _Require4D(nn.Module):
    """What remains of the stem BN once :class:`~onebit.kernels.fuse.FoldedConvBN` folded it into ``conv1``: its input
    check. ``BatchNorm2d`` refuses a non-4-D input (an unbatched image, which ``conv1`` accepts) with a
    ``ValueError``; this raises :class:`~onebit.kernels._native.KernelArgumentError` (a ``ValueError``) there."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise KernelArgumentError(f"expected 4D input (got {x.dim()}D input)")
        return x


def _fusable(block: BiRealBlock) -> bool:
    """Whether the block's float work after its binary conv is the kernel epilogue's: BN, residual, RPReLU."""
    if block.bn0 is not None or block.scale is not None or block.act not in ("none", "rprelu"):
        return False
    if block.move0 is not None and not isinstance(block.move0, LearnableBias):
        return False
    if block.bn1 is not None and not isinstance(block.bn1, nn.BatchNorm2d):
        return False
    if block.act == "rprelu":
        return (
            type(block.prelu) is nn.PReLU
            and isinstance(block.move1, LearnableBias)
            and isinstance(block.move2, LearnableBias)
        )
    return True


def _fold_downsample(ds: nn.Module | None) -> nn.Module | None:
    """The shortcut with a trailing ``Conv2d -> BatchNorm2d`` folded into one channels_last conv (its output is then
    NHWC memory: what the kernel epilogue reads); any other shortcut unchanged."""
    if not isinstance(ds, nn.Sequential) or len(ds) < 2:
        return ds
    conv, bn = ds[-2], ds[-1]
    if type(conv) is not nn.Conv2d or type(bn) is not nn.BatchNorm2d or conv.padding_mode != "zeros":
        return ds
    if bn.running_mean is None or bn.running_var is None:
        return ds
    return nn.Sequential(*list(ds)[:-2], FoldedConvBN(conv, bn))


def _fuse_stem(model: BinaryResNet, name: str, report: PackReport) -> None:
    conv, bn = model.conv1, model.bn1
    if type(conv) is not nn.Conv2d or type(bn) is not nn.BatchNorm2d or conv.padding_mode != "zeros":
        return
    if bn.running_mean is None or bn.running_var is None:
        return
    model.conv1 = FoldedConvBN(conv, bn)  # type: ignore[assignment]
    model.bn1 = _Require4D()  # type: ignore[assignment]
    report.fused[f"{name}.conv1" if name else "conv1"] = (
        "ResNet stem: bn1 folded into conv1 (channels_last output: act1, maxpool and the first block on NHWC memory)"
    )


@register_fuser
def _fuse_resnet(model: nn.Module, report: PackReport, backend: str | None) -> None:
    for name, net in list(model.named_modules()):
        if isinstance(net, BinaryResNet):
            _fuse_stem(net, name, report)
    prev: FusedBiRealBlock | None = None
    for name, blk in list(model.named_modules()):
        if not isinstance(blk, BiRealBlock):
            continue
        conv = blk.binary_conv
        if not isinstance(conv, BinaryConv2d) or _not_packable(conv) or isinstance(binary_weight_signs(conv), str):
            prev = None
            continue  # left to the generic pass, which records the reason
        if not _fusable(blk):
            blk.binary_conv = PackedConv2d(conv, shift=blk.move0, bn=blk.bn1, backend=backend)
            blk.move0, blk.bn1 = None, None
            report.fused[name] = "Bi-Real block: shift, sign+pack, conv, BN"
            prev = None
            continue
        fused = FusedBiRealBlock(blk, backend)
        _set_child(model, name, fused)
        report.fused[name] = (
            "Bi-Real block: "
            + ("shift, " if blk.move0 is not None else "")
            + "sign+pack, conv"
            + (", BN" if blk.bn1 is not None else "")
            + ", residual"
            + (", RPReLU" if blk.act == "rprelu" else "")
            + " and the next block's sign+pack in one kernel call"
            + ("; shortcut BN folded into its 1x1 conv" if _folded(fused.downsample) else "")
        )
        # Blocks in module order feed each other (BinaryResNet's stages): hand each one's packed output to the next.
        # A wrong link would only waste the bits: a handoff is used when the input tensor is the output.
        if prev is not None:
            prev.chain(fused)
        prev = fused


def _folded(ds: nn.Module | None) -> bool:
    return isinstance(ds, nn.Sequential) and len(ds) > 0 and isinstance(ds[-1], FoldedConvBN)

"""Model-specific fused packed modules and the fusers that install them (registered with
:func:`onebit.kernels.engine.register_fuser`, run by :func:`onebit.kernels.pack_`).

* ReActNet-A: the stem → :class:`FoldedConvBN`; blocks → :class:`FusedReActBlock` (shift, sign+pack, 3x3 conv, BN,
  residual, RPReLU, the next sign+pack, 1x1 conv(s), BN, residual, RPReLU and the sign+pack of the *next block's*
  input; one native call per block from a per-shape plan, :mod:`onebit.kernels.chain`);
* BNext processors → :class:`FusedBNextProcessor` (shift, BN₁ and PReLU_b folded into the packed conv; pooled λ-mix,
  SE gate, BN₂ + residual + the next sign+pack; one native call per processor, :mod:`onebit.kernels.bnext_chain`);
  width-doubling blocks → :class:`FusedBNextBlock`; the stem → :class:`FoldedConvBN`;
(Bi-Real style ResNet blocks: :mod:`onebit.kernels.fuse_resnet`.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from onebit.kernels import bnext_chain as _bnext_chain
from onebit.kernels import chain as _chain
from onebit.kernels._native import KernelArgumentError
from onebit.kernels.bnext_chain import check_out
from onebit.kernels.engine import (
    PackedConv2d,
    PackReport,
    _bn_affine,
    _check_input,
    _not_packable,
    _set_child,
    _target_device,
    _to,
    _vec,
    binary_weight_signs,
    register_fuser,
)
from onebit.kernels.ops import (
    ConvEpilogue,
    PackedWeight,
    _nhwc,
    binary_conv,
    pack_activations,
    pack_weight,
    resolve_backend,
)
from onebit.layers import BinaryConv2d, SqueezeExpand
from onebit.models.bnext import BNextBlock, BNextStem, ELMAttention, InfoRCP
from onebit.models.reactnet import FirstConv, ReActBlock

__all__ = ["FoldedConvBN", "FusedBNextBlock", "FusedBNextProcessor", "FusedReActBlock"]


class FusedReActBlock(nn.Module):
    """A ReActNet-A block (:class:`onebit.models.reactnet.ReActBlock`) in two packed-conv calls.

    Call 1: 3x3 conv on sign(x + b11), epilogue BN1 + residual (x, 2x2-pooled at stride 2) + RPReLU(b12, PReLU1, b13)
    → float O1 and the bits of sign(O1 + b21). Call 2: the 1x1 conv (both halves as one conv of 2C outputs when the
    width doubles), epilogue BN2 + O1 + RPReLU(b22, PReLU2, b23) → float output, and, when the next module is a fused
    block too, the bits of its input sign(out + b11_next), handed over so it skips its own sign+pack.

    On the native backend a call is one ``ob_react_block`` from a plan cached per input shape (``_plans``, see
    :mod:`onebit.kernels.chain`: the same kernels and pool arithmetic, bitwise the same results); the calls below are
    the generic path (other backends and devices, shapes the plan does not take).
    """

    def __init__(self, block: nn.Module, backend: str | None = None) -> None:
        super().__init__()
        self.backend = backend
        self.inplanes, self.planes, self.stride = block.inplanes, block.planes, block.stride
        for name in ("binary_3x3", "binary_pw", "binary_pw_down1", "binary_pw_down2"):
            conv = getattr(block, name, None)
            if conv is not None:
                why = _not_packable(conv)
                signs = why or binary_weight_signs(conv)
                if isinstance(signs, str):
                    raise ValueError(f"{name}: {signs}")
        c = self.inplanes
        self.shift_in = _vec(block.move11.bias)
        self.conv1 = PackedConv2d(
            block.binary_3x3,
            bn=block.bn1,
            prelu=block.prelu1,
            act_in=block.move12.bias.detach().reshape(-1),
            act_out=block.move13.bias.detach().reshape(-1),
            backend=backend,
        )
        self.conv1.epilogue.thresh = _vec(block.move21.bias)
        self.conv1.epilogue = self.conv1.epilogue.checked(c)
        if self.planes == c:
            pw = PackedConv2d(block.binary_pw, bn=block.bn2, prelu=block.prelu2, backend=backend)
            ep = pw.epilogue
        else:
            d1 = PackedConv2d(block.binary_pw_down1, bn=block.bn2_1, backend=backend)
            d2 = PackedConv2d(block.binary_pw_down2, bn=block.bn2_2, backend=backend)
            pw = d1
            pw.pw = _concat_weights(d1.pw, d2.pw)
            ep = ConvEpilogue(
                scale=torch.cat([d1.epilogue.scale, d2.epilogue.scale]),
                bias=torch.cat([d1.epilogue.bias, d2.epilogue.bias]),  # type: ignore[list-item]
                slope=block.prelu2.weight,
            ).checked(self.planes)
        ep.act_in = _vec(block.move22.bias)
        ep.act_out = _vec(block.move23.bias)
        self.conv2_pw = pw.pw
        self.conv2_ep = ep.checked(self.planes)
        self.next_shift: Tensor | None = None  # b11 of the next fused block, set by pack_
        self.next_pad = 1
        self._handoff: tuple[Tensor, Tensor] | None = None
        self._next: FusedReActBlock | None = None
        self._plans: dict[tuple[int, int, int], _chain.ReActPlan] = {}  # per input shape (n, h, w): chain.py

    def chain(self, nxt: FusedReActBlock | None) -> None:
        """Emit the packed input of ``nxt`` (``None``: stop) from this block's last kernel call."""
        _link(self, nxt)
        self.__dict__["_plans"] = {}
        self.next_shift = None if nxt is None else nxt.shift_in
        self.next_pad = 1 if nxt is None else nxt.conv1.pw.padding
        self.conv2_ep.thresh = self.next_shift
        self.conv2_ep = self.conv2_ep.checked(self.planes)

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        # as PackedConv2d._apply: conv1 moves itself (a child module); the second conv and the shifts move here
        super()._apply(fn, recurse)
        dev = _target_device(fn)
        if self.conv2_pw.words.device != dev:
            self.conv2_pw = self.conv2_pw.to(dev)
            self.conv2_ep = self.conv2_ep.to(dev).checked(self.planes)
            self.shift_in = _to(self.shift_in, dev)  # type: ignore[assignment]
            self.next_shift = _to(self.next_shift, dev)
            self._handoff = None
        self.__dict__["_plans"] = {}  # they hold data pointers of the buffers
        return self

    def __getstate__(self) -> dict:
        # a copy (deepcopy, pickle) starts without plans: theirs would point at this module's buffers
        return {**self.__dict__, "_plans": {}, "_handoff": None}

    def forward(self, x: Tensor) -> Tensor:
        handoff = self._handoff
        if handoff is not None:
            self.__dict__["_handoff"] = None  # plain attribute: skips nn.Module.__setattr__ on the hot path
        x_in = x
        x = _check_input(x, self.inplanes, "fused ReActNet block")
        xp = handoff[1] if handoff is not None and handoff[0] is x_in else None
        if _chain.enabled and x.device.type == "cpu" and resolve_backend(self.backend) == "native":
            y = _chain.run_block(self, x, xp)  # one native call from a per-shape plan (onebit/kernels/chain.py)
            if y is not None:
                return y
        h, w = x.shape[2:]
        if xp is None:
            xp = pack_activations(x, self.shift_in, self.conv1.pw.padding, backend=self.backend)
        res = F.avg_pool2d(x, kernel_size=2, stride=2) if self.stride == 2 else x
        res = _broadcast_residual(res, self.conv1.pw.out_size(h, w))
        o1, a_bits, _ = binary_conv(
            xp, self.conv1.pw, (h, w), self.conv1.epilogue, residual=res, bits_pad=0, backend=self.backend
        )
        ep = self.conv2_ep
        emit = self._next is not None
        out, nbits, _ = binary_conv(
            a_bits,  # type: ignore[arg-type]
            self.conv2_pw,
            tuple(o1.shape[2:]),  # type: ignore[union-attr,arg-type]
            ep,
            residual=o1,
            bits_pad=self.next_pad if emit else None,
            backend=self.backend,
        )
        if emit:
            self._next.__dict__["_handoff"] = (out, nbits)  # type: ignore[union-attr]
        return out  # type: ignore[return-value]

    def pack_description(self) -> str:
        """The line of this module in the pack report."""
        return f"fused block {self.inplanes}->{self.planes} s{self.stride}"

    def extra_repr(self) -> str:
        dev = self.conv2_pw.words.device
        return f"{self.inplanes}->{self.planes}, stride={self.stride}, backend={resolve_backend(self.backend, dev)}"


class FusedBNextProcessor(nn.Module):
    """A BNext processor (:class:`~onebit.models.bnext.InfoRCP` or :class:`~onebit.models.bnext.ELMAttention`) with
    its binary branch packed and its float tail in one pass.

    Branch: Z = PReLU_b(BN₁(sign(X + b) ⊛ W)) in one kernel call (shift, sign+pack, conv, BN₁, PReLU_b folded).
    Gate (with Info-RCP recoupling): GAP(λ·ref + (1−λ)·Z) = λ·GAP(ref) + (1−λ)·GAP(Z) — linear, so the mix itself is
    never formed — then the SE gate s = sigmoid(SE(·)) on the pooled vectors. Tail, one pass over Z and R
    (``ob_gate_residual``): Info-RCP ``BN₂(s ⊙ Z) + R``, ELM-Attention ``BN₂(s ⊙ Z ⊙ R) + R`` with BN₂ folded into
    ``a = g₂ s`` and ``h₂``. R = X (Info-RCP) or PReLU_a(X) through the original shortcut (ELM); 2x2-pooled at stride 2.
    The result equals the float processor up to float rounding (BN folding, the pooled mix).

    On the native backend a call is one ``ob_bnext_processor`` from a plan cached per input shape (``_plans``, see
    :mod:`onebit.kernels.bnext_chain`: the same kernels in the same order, bitwise the same results);
    :meth:`_forward_generic` is the torch-op path (other backends and devices, shapes the kernels do not take).
    """

    def __init__(self, proc: nn.Module, backend: str | None = None) -> None:
        super().__init__()
        if not isinstance(proc, (InfoRCP, ELMAttention)):
            raise ValueError(f"not a BNext processor: {type(proc).__name__}")
        self.backend = backend
        self.elm = isinstance(proc, ELMAttention)
        self.stride = proc.stride
        self.recouple = proc.infor_recoupling
        self.conv = PackedConv2d(
            proc.binary_conv, shift=proc.move, bn=proc.norm1, prelu=proc.activation2, backend=backend
        )
        self.mix_residual = self.elm and proc.mix_with == "residual"
        if self.elm:
            self.activation1 = proc.activation1
            self.downsample = proc.downsample
        # ELM's PReLU_a (and 2x2 pooling) in one C pass over X on the compiled path (a real downsample stays in torch)
        self._c_residual = self.elm and type(proc.activation1) is nn.PReLU and proc.downsample is None
        if self._c_residual:
            slope = proc.activation1.weight.detach().reshape(-1).float()
            self.register_buffer("slope1", slope.expand(proc.inplanes).clone(), persistent=False)
        c = proc.planes
        uses_bn2 = self.elm or self.recouple  # Info-RCP without recoupling skips norm2 (as the official code)
        g2, h2 = _bn_affine(proc.norm2 if uses_bn2 else None, c)
        self.register_buffer("g2", g2.float(), persistent=False)
        self.register_buffer("h2", h2.float(), persistent=False)
        self.se: nn.Module | None = None
        self._se_linear = False
        if self.recouple:
            lam = proc.scale.detach().reshape(-1).float()
            if proc.scale_clamp_when == "always":  # eval clamps λ only where the processor clamps on every forward
                lam = lam.clamp(0.0, 1.0)
            self.register_buffer("lam", lam.clone(), persistent=False)
            self.register_buffer("one_minus_lam", 1 - lam, persistent=False)
            # the plain SE (pool, 1x1 conv, ReLU, 1x1 conv) runs as two matrix products on the pooled vectors;
            # any other (e.g. quantised) SE module is called on the pooled [N, C, 1, 1] input (pooling is a no-op)
            seq = getattr(proc.se, "se", None)
            self._se_linear = (
                type(proc.se) is SqueezeExpand
                and type(seq[1]) is nn.Conv2d
                and type(seq[3]) is nn.Conv2d
                and type(seq[2]) is nn.ReLU
            )
            if self._se_linear:
                for i, tag in ((1, "1"), (3, "2")):
                    conv = seq[i]
                    self.register_buffer(
                        f"se_w{tag}",
                        conv.weight.detach().reshape(conv.out_channels, -1).float().contiguous(),
                        persistent=False,
                    )
                    b = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
                    self.register_buffer(f"se_b{tag}", b.detach().float().clone(), persistent=False)
            else:
                self.se = proc.se
        self.desc = ("ELM-Attention" if self.elm else "Info-RCP") + f" {self.conv.desc}"
        self._next: FusedBNextProcessor | None = None
        self._handoff: tuple[Tensor, Tensor] | None = None
        self._plans: dict[tuple[int, int, int], _bnext_chain.BNextPlan] = {}  # per input shape (n, h, w)

    def chain(self, nxt: FusedBNextProcessor | None) -> None:
        """Also emit the packed input of ``nxt`` (sign(out + its shift), with its border) from the tail pass, for a
        processor whose input is this one's output (checked at run time: the handoff is used only when ``nxt``
        receives this very tensor)."""
        _link(self, nxt)
        self._plans.clear()

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        super()._apply(fn, recurse)
        self._plans.clear()  # they hold data pointers of the buffers
        self.__dict__["_handoff"] = None
        return self

    def __getstate__(self) -> dict:
        # a copy (deepcopy, pickle) starts without plans: theirs would point at this module's buffers
        return {**self.__dict__, "_plans": {}, "_handoff": None}

    def _se_gate(self, pooled: Tensor) -> Tensor:
        """sigmoid(SE(pooled)) for ``pooled [N, C]`` -> ``[N, C]``."""
        if self._se_linear:
            hdn = torch.addmm(self.se_b1, pooled, self.se_w1.t()).clamp_min_(0.0)
            return torch.sigmoid(torch.addmm(self.se_b2, hdn, self.se_w2.t()))
        n, c = pooled.shape
        return self.se(pooled.reshape(n, c, 1, 1)).reshape(n, c)  # type: ignore[misc]

    def forward(self, x: Tensor, out: Tensor | None = None, offset: int = 0) -> Tensor:
        """``x`` float ``[N, C, H, W]``. ``out``: an NHWC float32 ``[N, OH, OW, C_total]`` to write this processor's
        channels into at ``offset`` (one part of a channel concatenation); then ``out`` is returned as NCHW view."""
        handoff = self._handoff
        if handoff is not None:
            self.__dict__["_handoff"] = None  # plain attribute: skips nn.Module.__setattr__ on the hot path
        xp = handoff[1] if handoff is not None and handoff[0] is x else None
        x = _check_input(x, self.conv.pw.in_channels, "fused BNext processor")
        if x.device.type == "cpu" and resolve_backend(self.backend) == "native":
            y = _bnext_chain.run(self, x, xp, out, offset)  # one native call from a per-shape plan (bnext_chain.py)
            if y is not None:
                return y
        return self._forward_generic(x, xp, out, offset)

    def _forward_generic(self, x: Tensor, xp: Tensor | None, out: Tensor | None, offset: int) -> Tensor:
        """The torch-op path (pure-torch or int8 backend, any device; and the native backend's fallback for shapes
        the fused kernels do not take): the eval processor's operations, with its broadcasting and its errors."""
        pooled_x, r = self._residual(x)
        z = self.conv(x, xp)  # [N, C, OH, OW], NHWC memory
        n, c, oh, ow = z.shape
        zn = _nhwc(z)  # free: the kernel wrote NHWC
        if self.recouple:
            ref = r if self.mix_residual else pooled_x
            m = self.lam * ref.float().mean((2, 3)) + self.one_minus_lam * zn.mean((1, 2))
            a = self._se_gate(m) * self.g2
        else:
            a = self.g2.expand(n, c)
        a = a.float().contiguous()
        rn = _nhwc(r.float())
        check_out(out, n, oh, ow, c, offset, x.device)
        v = a.reshape(n, 1, 1, c) * zn
        if self.elm:
            v = v * rn
        res = (v + self.h2) + rn
        if out is None:
            return res.permute(0, 3, 1, 2)
        out[..., offset : offset + c] = res
        return out.permute(0, 3, 1, 2)

    def _residual(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(pooled_x, r)``: X (2x2-pooled at stride 2), Info-RCP's residual and the mix reference of ELM-Attention
        in bnext.py; and the residual R."""
        uses_x = not self.elm or (self.recouple and not self.mix_residual)
        pooled_x = F.avg_pool2d(x, 2, 2) if self.stride == 2 and uses_x else x
        if not self.elm:
            return pooled_x, pooled_x
        a1 = self.activation1(x)
        if self.downsample is not None:
            return pooled_x, self.downsample(a1)
        return pooled_x, (F.avg_pool2d(a1, 2, 2) if self.stride == 2 else a1)

    def pack_description(self) -> str:
        """The line of this module in the pack report."""
        return f"fused processor {self.desc}"

    def extra_repr(self) -> str:
        return f"{self.desc}, stride={self.stride}, recouple={self.recouple}"


def _broadcast_residual(res: Tensor, size: tuple[int, int]) -> Tensor:
    """``res [N, C, h, w]`` for a conv output of ``size``: itself when it fits, else broadcast as the eval block's
    ``res + conv(x)`` broadcasts (a stride-2 block on an odd input pools to floor(h/2), the conv gives ceil(h/2):
    only a 1-pixel-wide residual broadcasts), or the error broadcasting raises (a ``RuntimeError``)."""
    if tuple(res.shape[2:]) == size:
        return res
    n, c = res.shape[:2]
    full = torch.broadcast_shapes(res.shape, (n, c, *size))  # raises as `res + conv` does in the eval block
    if tuple(full) != (n, c, *size):  # a residual larger than the conv output (not produced by these blocks)
        raise KernelArgumentError(f"residual {tuple(res.shape)} is larger than the conv output {size}")
    return res.expand(full)


class FusedBNextBlock(nn.Module):
    """A width-doubling BNext block (3x3 processor, then ``FFN_1`` and ``FFN_2`` on the same input, concatenated)
    whose two 1x1 processors write their halves of the output in place (no concatenation copy)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.mixer = block.mixer
        self.FFN_1, self.FFN_2 = block.FFN_1, block.FFN_2
        self.inplanes, self.planes = block.inplanes, block.planes

    def forward(self, x: Tensor) -> Tensor:
        x = self.mixer(x)
        n, _, h, w = x.shape
        c = self.inplanes
        oh, ow = (h, w) if self.FFN_1.stride == 1 else (h // 2, w // 2)
        out = torch.empty(n, oh, ow, self.planes, dtype=torch.float32, device=x.device)
        self.FFN_1(x, out=out, offset=0)
        return self.FFN_2(x, out=out, offset=c)


class FoldedConvBN(nn.Module):
    """A float ``BN(conv(x))`` (the BNext, ReActNet and binary ResNet stems) as one convolution with the BN folded
    into its weight and bias, the weight in channels_last so that the output is NHWC memory, which the packed block
    after it reads without a copy. Equal to the float pair up to float rounding (the fold)."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        g, h = _bn_affine(bn, conv.out_channels)
        w = conv.weight.detach().double() * g.reshape(-1, 1, 1, 1)
        b = h if conv.bias is None else conv.bias.detach().double() * g + h
        dtype = conv.weight.dtype
        self.register_buffer("weight", w.to(dtype).contiguous(memory_format=torch.channels_last), persistent=False)
        self.register_buffer("bias", b.to(dtype), persistent=False)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        if conv.padding_mode != "zeros":
            raise ValueError(f"cannot fold {conv}: padding_mode {conv.padding_mode!r}")

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        o, i, kh, kw = self.weight.shape
        return f"{i}->{o} k{kh}x{kw} s{self.stride[0]}, BN folded"


def _link(module: nn.Module, nxt: nn.Module | None) -> None:
    """``module._next = nxt`` as a plain attribute: registered as a submodule, the next block would appear inside
    this one (named_modules, repr, the pack report) and be moved twice by ``model.to``."""
    object.__setattr__(module, "_next", nxt)


def _concat_weights(a: PackedWeight, b: PackedWeight) -> PackedWeight:
    """One packed weight with the output channels of ``a`` then ``b`` (same input, kernel and geometry)."""
    signs = torch.cat([a.signs(), b.signs()])
    return pack_weight(signs, a.stride, a.padding, a.pad_value, int8=a.w8 is not None)


@register_fuser
def _fuse_reactnet(model: nn.Module, report: PackReport, backend: str | None) -> None:
    for name, stem in list(model.named_modules()):
        if type(stem) is FirstConv and stem.conv1.padding_mode == "zeros":
            _set_child(model, name, FoldedConvBN(stem.conv1, stem.bn1))
            report.fused[name] = "ReActNet stem: BN folded into the conv (channels_last output)"
    for name, seq in list(model.named_modules()):
        if not isinstance(seq, (nn.ModuleList, nn.Sequential)):
            continue
        prev: FusedReActBlock | None = None
        for i, block in enumerate(list(seq)):
            full = f"{name}.{i}" if name else str(i)
            if not isinstance(block, ReActBlock):
                prev = None
                continue
            try:
                fused = FusedReActBlock(block, backend)
            except ValueError as e:
                report.float_layers[full] = str(e)
                prev = None
                continue
            seq[i] = fused
            report.fused[full] = "ReActBlock: shift+sign+pack, 3x3, BN, residual, RPReLU, sign+pack, 1x1, BN, RPReLU"
            if prev is not None:
                prev.chain(fused)
            prev = fused


@register_fuser
def _fuse_bnext(model: nn.Module, report: PackReport, backend: str | None) -> None:
    for name, stem in list(model.named_modules()):
        if type(stem) is BNextStem and stem.conv1.padding_mode == "zeros":
            _set_child(model, name, FoldedConvBN(stem.conv1, stem.bn1))
            report.fused[name] = "BNext stem: BN folded into the conv (channels_last output)"
    for name, proc in list(model.named_modules()):
        if not isinstance(proc, (InfoRCP, ELMAttention)) or not isinstance(proc.binary_conv, BinaryConv2d):
            continue
        conv = proc.binary_conv
        why = _not_packable(conv)
        signs = why or binary_weight_signs(conv)
        if isinstance(signs, str):
            continue  # left to the generic pass, which records the reason
        _set_child(model, name, FusedBNextProcessor(proc, backend))
        report.fused[name] = (
            f"BNext {'ELM-Attention' if isinstance(proc, ELMAttention) else 'Info-RCP'}: shift, sign+pack, conv, BN1,"
            " PReLU_b; pooled λ-mix, SE gate; BN2, residual and the next sign+pack in one pass"
        )
    for name, blk in list(model.named_modules()):
        if (
            isinstance(blk, BNextBlock)
            and blk.planes != blk.inplanes
            and isinstance(getattr(blk, "FFN_1", None), FusedBNextProcessor)
            and isinstance(getattr(blk, "FFN_2", None), FusedBNextProcessor)
        ):
            _set_child(model, name, FusedBNextBlock(blk))
    # Hand each processor's packed output to the next one in execution (= module) order, except where the next one
    # does not read it: FFN_1 -> FFN_2 (both read the 3x3 processor's output) and FFN_2 -> the next block (reads the
    # concatenation). A wrong link would only waste the bits: a handoff is used when the input tensor is the output.
    procs = [(n, m) for n, m in model.named_modules() if isinstance(m, FusedBNextProcessor)]
    for (name, p), (_, q) in zip(procs, procs[1:]):
        if not name.endswith(("FFN_1", "FFN_2")):
            p.chain(q)

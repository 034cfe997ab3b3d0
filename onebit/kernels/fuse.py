"""Model-specific fused packed modules and the fusers that install them (registered with
:func:`onebit.kernels.engine.register_fuser`, run by :func:`onebit.kernels.pack_`).

* ReActNet-A blocks → :class:`FusedReActBlock` (shift, sign+pack, 3x3 conv, BN, residual, RPReLU, the next
  sign+pack, 1x1 conv(s), BN, residual, RPReLU and the sign+pack of the *next block's* input, in two kernel calls);
* BNext processors → :class:`FusedBNextProcessor` (shift, BN₁ and PReLU_b folded into the packed conv; pooled λ-mix,
  SE gate, BN₂ + residual + the next sign+pack in one pass); width-doubling blocks → :class:`FusedBNextBlock`; the
  stem → :class:`FoldedConvBN`;
(Bi-Real style ResNet blocks: :mod:`onebit.kernels.fuse_resnet`.)
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from onebit.kernels import _native
from onebit.kernels import chain as _chain
from onebit.kernels._native import KernelArgumentError
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
    _args_template,
    _nhwc,
    _ptr,
    _require_cpu,
    binary_conv,
    pack_activations,
    pack_weight,
    resolve_backend,
)
from onebit.layers import BinaryConv2d, SqueezeExpand
from onebit.models.bnext import BNextBlock, BNextStem, ELMAttention, InfoRCP
from onebit.models.reactnet import ReActBlock

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
        self._plans: dict[tuple[int, int, int], _ProcessorPlan] = {}

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
            y = self._forward_native(x, xp, out, offset)
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
        _check_out(out, n, oh, ow, c, offset, x.device)
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

    def _make_plan(self, n: int, h: int, w: int) -> _ProcessorPlan:
        """The call-invariant state for inputs ``[n, C, h, w]``, with every tensor the kernels will read by pointer
        checked (device, dtype, contiguity, size) once here instead of on every call."""
        conv = self.conv
        pw = conv.pw
        oh, ow = pw.out_size(h, w)  # raises as F.conv2d for an input smaller than the kernel
        c, cin = pw.out_channels, pw.in_channels
        args = _native.ConvArgs.from_buffer_copy(_args_template(pw, conv.epilogue))  # checks weights and epilogue
        _require_cpu(conv.shift, torch.float32, cin, "processor input shift")
        _require_cpu(self.g2, torch.float32, c, "BN2 gain")
        _require_cpu(self.h2, torch.float32, c, "BN2 shift")
        if self._c_residual:
            _require_cpu(self.slope1, torch.float32, cin, "PReLU_a slope")
        if self.recouple:
            _require_cpu(self.lam, torch.float32, c, "lambda")
            _require_cpu(self.one_minus_lam, torch.float32, c, "1 - lambda")
            if self._se_linear:
                hd = self.se_w1.shape[0]
                _require_cpu(self.se_w1, torch.float32, hd * c, "SE weight 1")
                _require_cpu(self.se_b1, torch.float32, hd, "SE bias 1")
                _require_cpu(self.se_w2, torch.float32, c * hd, "SE weight 2")
                _require_cpu(self.se_b2, torch.float32, c, "SE bias 2")
        # The fused tail reads Z, R and the mix reference as [N, OH, OW, C]: with the C residual pass R is
        # [N, h/2, w/2, Cin] at stride 2 (floor, as avg_pool2d), [N, h, w, Cin] else. Any other geometry (an odd
        # input: the conv gives ceil(h/2); a residual of other width) goes the generic path, which broadcasts as the
        # eval processor does or raises its error.
        rh, rw = (h // 2, w // 2) if self.stride == 2 else (h, w)
        fused = not self._c_residual or ((rh, rw) == (oh, ow) and cin == c)
        pad = pw.padding
        args.n, args.hp, args.wp, args.h, args.w, args.oh, args.ow = n, h + 2 * pad, w + 2 * pad, h, w, oh, ow
        nxt = self._next
        emit = nxt is not None and nxt.conv.shift is not None
        if emit:
            _require_cpu(nxt.conv.shift, torch.float32, c, "next processor's shift")  # type: ignore[union-attr]
            emit = nxt.conv.pw.in_channels == c  # type: ignore[union-attr]
        plan = _ProcessorPlan(
            args=args,
            fused=fused,
            oh=oh,
            ow=ow,
            c=c,
            cin=cin,
            pad=pad,
            xp_shape=(n, h + 2 * pad, w + 2 * pad, (pw.in_channels + 63) // 64),
            shift=_ptr(conv.shift),
            emit_pad=nxt.conv.pw.padding if emit else -1,  # type: ignore[union-attr]
            emit_t=_ptr(nxt.conv.shift) if emit else None,  # type: ignore[union-attr]
            slope1=self.slope1.data_ptr() if self._c_residual else 0,
            lam=self.lam.data_ptr() if self.recouple else 0,
            one_minus_lam=self.one_minus_lam.data_ptr() if self.recouple else 0,
            se=(
                (
                    self.se_w1.shape[0],
                    self.se_w1.data_ptr(),
                    self.se_b1.data_ptr(),
                    self.se_w2.data_ptr(),
                    self.se_b2.data_ptr(),
                )
                if self.recouple and self._se_linear
                else None
            ),  # fmt: skip
            g2=self.g2.data_ptr(),
            h2=self.h2.data_ptr(),
        )
        if len(self._plans) >= 64:  # many input shapes (e.g. a fuzzer): keep the cache bounded
            self._plans.clear()
        self._plans[(n, h, w)] = plan
        return plan

    def _forward_native(self, x: Tensor, xp: Tensor | None, out: Tensor | None, offset: int) -> Tensor | None:
        """The compiled-kernel path of :meth:`forward` (CPU, float32 ``x`` of the conv's channels, as
        :func:`_check_input` leaves it): the same operations as the generic path, with the call-invariant work
        (kernel arguments, shapes, pointer checks) done once per input shape. ``None`` (nothing done) for a shape
        whose residual does not match the conv output: the generic path then does what the eval processor does."""
        lib = _native.load()
        n, _, h, w = x.shape
        plan = self._plans.get((n, h, w)) or self._make_plan(n, h, w)
        if not plan.fused:
            return None
        if xp is not None and (xp.shape != plan.xp_shape or xp.dtype != torch.int64 or not xp.is_contiguous()):
            xp = None  # not bits of this layout (a handoff always is): pack again
        oh, ow, c = plan.oh, plan.ow, plan.c
        thr = torch.get_num_threads()
        if self._c_residual:
            xn = _nhwc(x)  # held: the kernels read it
            cin = x.shape[1]
            rh, rw = (h // 2, w // 2) if self.stride == 2 else (h, w)
            want_px = self.stride == 2 and self.recouple and not self.mix_residual
            # r and px (when wanted) in one allocation
            rpx = torch.empty(2 if want_px else 1, n, rh, rw, cin, dtype=torch.float32)
            r = rpx[0]
            px = rpx[1] if want_px else None
            _native.check(
                lib.ob_elm_residual(  # type: ignore[union-attr]
                    xn.data_ptr(), n, h, w, cin, plan.slope1, self.stride, _ptr(px), r.data_ptr(), thr
                ),
                "ob_elm_residual",
            )
            pooled_x = x if px is None else px.permute(0, 3, 1, 2)
            r = r.permute(0, 3, 1, 2)
        else:
            pooled_x, r = self._residual(x)
            want = (n, c, oh, ow)
            if r.shape != want or (self.recouple and not self.mix_residual and pooled_x.shape != want):
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
        args = _native.ConvArgs.from_buffer_copy(plan.args)
        args.x, args.out_f, args.nthreads = xp.data_ptr(), zn.data_ptr(), thr
        _native.check(lib.ob_conv(ctypes.byref(args)), "ob_conv")  # type: ignore[union-attr]
        if self.recouple:
            ref = r if self.mix_residual else pooled_x
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
                a = (self._se_gate(m) * self.g2).float().contiguous()
                if a.shape != (n, c):
                    raise KernelArgumentError(f"SE gate gave {tuple(a.shape)} for [{n}, {c}] pooled vectors")
        else:
            a = self.g2.expand(n, c).contiguous()
        rn = _nhwc(r.float())
        _check_out(out, n, oh, ow, c, offset, x.device)
        dst = torch.empty(n, oh, ow, c, dtype=torch.float32) if out is None else out
        bits, pad = None, 0
        if plan.emit_pad >= 0 and out is None:
            pad = plan.emit_pad
            bits = torch.zeros(n, oh + 2 * pad, ow + 2 * pad, (c + 63) // 64, dtype=torch.int64)
        _native.check(
            lib.ob_gate_residual(  # type: ignore[union-attr]
                zn.data_ptr(), rn.data_ptr(), n, oh, ow, c, a.data_ptr(), plan.h2, int(self.elm),
                dst.data_ptr() + 4 * offset, dst.shape[3], plan.emit_t if bits is not None else None, _ptr(bits), pad,
                (c + 63) // 64, 0, thr,
            ),
            "ob_gate_residual",
        )  # fmt: skip
        y = dst.permute(0, 3, 1, 2)
        if bits is not None:
            self._next.__dict__["_handoff"] = (y, bits)  # type: ignore[union-attr]
        return y

    def pack_description(self) -> str:
        """The line of this module in the pack report."""
        return f"fused processor {self.desc}"

    def extra_repr(self) -> str:
        return f"{self.desc}, stride={self.stride}, recouple={self.recouple}"


def _check_out(out: Tensor | None, n: int, oh: int, ow: int, c: int, offset: int, device: torch.device) -> None:
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


@dataclass
class _ProcessorPlan:
    """Call-invariant native-path state of one :class:`FusedBNextProcessor` for one input shape."""

    args: _native.ConvArgs  # the conv's kernel arguments but input, output and thread count
    fused: bool  # the fused kernels take this shape (else the generic path runs: broadcasting, the eval's errors)
    oh: int
    ow: int
    c: int
    cin: int
    pad: int  # the conv's padding (border of its packed input)
    xp_shape: tuple[int, int, int, int]  # packed input with the conv's border
    shift: int | None  # the conv's input shift (sign+pack when no producer handed the bits over)
    emit_pad: int  # border of the next processor's packed input emitted by the tail pass; -1: none
    emit_t: int | None  # the next processor's shift
    # data pointers of the buffers the kernels read (checked in _make_plan; plans are dropped when buffers move)
    slope1: int  # PReLU_a slope (0: no C residual pass)
    lam: int  # λ and 1 - λ (0: no recoupling)
    one_minus_lam: int
    se: tuple[int, int, int, int, int] | None  # (hidden width, w1, b1, w2, b2) of the linear SE gate, or None
    g2: int  # BN2 gain and shift
    h2: int


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
    """A float ``BN(conv(x))`` (the BNext stem) as one convolution with the BN folded into its weight and bias, the
    weight in channels_last so that the output is NHWC memory, which the packed processor after it reads without a
    copy. Equal to the float pair up to float rounding (the fold)."""

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

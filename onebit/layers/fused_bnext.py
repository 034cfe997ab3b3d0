"""The lean training path of BNext's float chain: one autograd Function per processor, after its binary conv.

A BNext processor (``docs/official-code.md``, *BNext*) follows its binary conv with a chain of real-valued ops

    Z = PReLU_b(BN_1(C));  M = λ ⊙ ref + (1 - λ) ⊙ Z;  S = sigmoid(SE(M));  Z = S ⊙ Z;
    Info-RCP:      out = BN_2(Z) + X                          (ref = R = X)
    ELM-Attention: R = pool(PReLU_a(X)); out = BN_2(Z ⊙ R) + R  (ref = pool(X); pool = 2x2 average at stride 2)

which autograd records op by op: it keeps C, BN_1(C), Z, X, the gated Z and (ELM) Z ⊙ R, five or six float copies
per processor. :class:`LeanProcessorFunction` runs the same ops in the same order in its forward (so the output is
bit-identical to the module path in every dtype; the batch statistics and running averages are updated exactly as
``nn.BatchNorm2d`` does) and saves only the conv output C (and, for ELM-Attention, the input X) plus per-channel
statistics. Its backward recomputes BN_1(C), Z and the gate input from them and applies the hand-written chain rule:

* the λ-mix only reaches the output through the SE branch's global average pool, so its gradient is constant over
  space: d/dM = dP / (H W) with P = mean(M), and dλ = Σ_n dP ⊙ (mean(ref) - mean(Z));
* the SE branch (tensors of [N, C, 1, 1]) is differentiated by hand as matrix products;
* BN and PReLU use the aten backward kernels of ``F.batch_norm`` and ``F.prelu``.

Used by :mod:`onebit.models.bnext` on the ``"lean"`` training path while autograd records, for the processors of
``bnext.py`` (Info-RCP at stride 1, ELM-Attention without a downsample path mixing the raw input) with
recoupling on, no autocast and no forward hooks on the chain's modules; everything else runs the module path.
``tests/test_lean_bnext.py`` checks values and gradients against the module and reference paths.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from onebit.layers.fused import _observed
from onebit.layers.se import SqueezeExpand

__all__ = ["ChainSpec", "LeanProcessorFunction", "lean_processor_chain"]


@dataclass(frozen=True)
class ChainSpec:
    """Non-tensor arguments of :class:`LeanProcessorFunction`: ``elm`` (ELM-Attention, else Info-RCP), the stride
    of the processor (ELM only; pools R and ref 2x2), and each BN's momentum (running-average factor) and eps."""

    elm: bool
    stride: int
    momentum1: float
    eps1: float
    momentum2: float
    eps2: float


def _bn_factor(bn: nn.BatchNorm2d) -> float:
    """The running-average factor ``nn.BatchNorm2d.forward`` uses, after counting this batch as it does."""
    bn.num_batches_tracked.add_(1)
    if bn.momentum is None:
        return 1.0 / float(bn.num_batches_tracked)
    return bn.momentum


def _bn_forward(x: Tensor, bn_w: Tensor, bn_b: Tensor, rm: Tensor, rv: Tensor, factor: float, eps: float):
    """Training-mode batch norm (the kernel behind ``F.batch_norm``): output, batch mean, batch inverse std."""
    return torch.ops.aten.native_batch_norm(x, bn_w, bn_b, rm, rv, True, factor, eps)


def _se_forward(p: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> tuple[Tensor, Tensor]:
    """``SqueezeExpand`` on the pooled input: conv, ReLU, conv, sigmoid. Returns (gate, hidden ReLU output)."""
    hidden = torch.relu(F.conv2d(p, w1, b1))
    return torch.sigmoid(F.conv2d(hidden, w2, b2)), hidden


def _se_backward(g_gate: Tensor, gate: Tensor, hidden: Tensor, pooled: Tensor, w1: Tensor, w2: Tensor):
    """Gradients of :func:`_se_forward` (pooled input, both weights, both biases) as matrix products on [N, C]."""
    n = gate.shape[0]
    g_h2 = (g_gate * gate * (1 - gate)).reshape(n, -1)  # sigmoid'
    h = hidden.reshape(n, -1)
    g_w2 = (g_h2.t() @ h).view_as(w2)
    g_h1 = (g_h2 @ w2.reshape(w2.shape[0], -1)) * (h > 0)  # ReLU' (0 at 0, as torch)
    g_w1 = (g_h1.t() @ pooled.reshape(n, -1)).view_as(w1)
    g_pooled = (g_h1 @ w1.reshape(w1.shape[0], -1)).view_as(pooled)
    return g_pooled, g_w1, g_h1.sum(0), g_w2, g_h2.sum(0)


def _unpool_even(g: Tensor, like: Tensor) -> Tensor | None:
    """The 2x2 average pool's backward when it tiles ``like`` exactly (even sizes): each pixel gets g / 4."""
    n, c, h, w = like.shape
    if h % 2 or w % 2 or g.shape[2:] != (h // 2, w // 2):
        return None
    g4 = g.div(4).contiguous()
    return g4[:, :, :, None, :, None].expand(n, c, h // 2, 2, w // 2, 2).reshape(n, c, h, w)


def _pool(t: Tensor, stride: int) -> Tensor:
    return F.avg_pool2d(t, 2, 2) if stride == 2 else t


def _unpool(g: Tensor, like: Tensor, stride: int) -> Tensor:
    if stride != 2:
        return g
    fast = _unpool_even(g, like)
    if fast is not None:
        return fast
    return torch.ops.aten.avg_pool2d_backward(g, like, [2, 2], [2, 2], [0, 0], False, True, None)


class LeanProcessorFunction(torch.autograd.Function):
    """The float chain of a BNext processor after its binary conv output ``c`` (see the module docstring).

    Inputs: ``c``, ``x`` (the processor input), BN_1 weight/bias, PReLU_b slopes, λ, the SE conv weights and biases,
    BN_2 weight/bias, PReLU_a slopes (ELM, else ``None``), the four running-stat buffers (updated in place, not
    differentiated) and a :class:`ChainSpec`.
    """

    @staticmethod
    def forward(ctx, c, x, w1, b1, a_b, lam, se_w1, se_b1, se_w2, se_b2, w2, b2, a_a, rm1, rv1, rm2, rv2, spec):
        y1, mean1, invstd1 = _bn_forward(c, w1, b1, rm1, rv1, spec.momentum1, spec.eps1)
        z = F.prelu(y1, a_b)
        positive = y1 > 0  # the PReLU's branch: the recomputed BN_1(c) may differ in the last bit
        if spec.elm:
            residual = _pool(F.prelu(x, a_a), spec.stride)
            ref = _pool(x, spec.stride)
        else:
            residual = ref = x
        del y1
        # the ops of _Processor.recouple, in its order; in place on fresh temporaries (the same ops on the same
        # operands, so the same values, with fewer full-size allocations)
        mix = (lam * ref).add_((1 - lam) * z)
        pooled = F.adaptive_avg_pool2d(mix, 1)
        del mix
        gate, hidden = _se_forward(pooled, se_w1, se_b1, se_w2, se_b2)
        zg = gate * z
        del z
        u = zg.mul_(residual) if spec.elm else zg
        y2, mean2, invstd2 = _bn_forward(u, w2, b2, rm2, rv2, spec.momentum2, spec.eps2)
        del u, zg
        out = y2.add_(residual)
        ref_mean = ref.mean((2, 3), keepdim=True)
        saved_x = x if spec.elm else None
        saved_residual = residual if spec.elm else None  # pooled at stride 2: cheaper to keep than to recompute
        ctx.save_for_backward(
            c, positive, saved_x, w1, b1, a_b, lam, se_w1, se_b1, se_w2, se_b2, w2, b2, a_a,
            mean1, invstd1, mean2, invstd2, pooled, gate, ref_mean, hidden, saved_residual,
        )  # fmt: skip
        ctx.spec = spec
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (c, positive, x, w1, b1, a_b, lam, se_w1, se_b1, se_w2, se_b2, w2, b2, a_a, mean1, invstd1, mean2, invstd2,
         pooled, gate, ref_mean, hidden, residual) = ctx.saved_tensors  # fmt: skip
        spec: ChainSpec = ctx.spec
        need = ctx.needs_input_grad
        shape = (1, -1, 1, 1)
        # Recompute BN_1(c) (the per-channel affine map of the BN kernel; may differ from the forward in the last bit,
        # which is why the PReLU's branch was saved) and Z. Few passes over full-size tensors, no torch.where or
        # masked_fill (slow on CPU): masks are applied as float factors.
        scale1 = invstd1 * w1
        y1 = torch.addcmul((b1 - mean1 * scale1).view(shape), c, scale1.view(shape))
        z = F.prelu(y1, a_b)
        zg = gate * z
        if spec.elm:
            u = zg * residual
        else:
            u = zg
        # out = BN_2(u) + residual
        gu, g_w2, g_b2 = torch.ops.aten.native_batch_norm_backward(
            g, u, w2, None, None, mean2, invstd2, True, spec.eps2, [True, need[10], need[11]]
        )
        del u
        if spec.elm:
            g_residual = torch.addcmul(g, gu, zg)
            gzg = gu.mul_(residual)
            del residual
        else:
            g_residual = g
            gzg = gu
        del zg
        # gate: zg = S * Z
        g_gate = (gzg * z).sum((2, 3), keepdim=True)
        z_mean = z.mean((2, 3), keepdim=True) if need[5] else None
        del z
        # SE on the pooled mix (tensors of [N, C, 1, 1])
        g_pooled, g_se_w1, g_se_b1, g_se_w2, g_se_b2 = _se_backward(g_gate, gate, hidden, pooled, se_w1, se_w2)
        g_mix = g_pooled / (gzg.shape[2] * gzg.shape[3])  # d mean / d M, constant over space
        # Z gets the gate's gradient and the mix's (1 - λ) share
        g_z = gzg.mul_(gate).add_(g_mix * (1 - lam))
        # PReLU_b: d/dy = 1 where y > 0 else a; d/da = y where y <= 0 (min(y, 0): a flipped last bit adds ~0)
        g_a_b = y1.clamp_(max=0.0).mul_(g_z).sum((0, 2, 3)) if need[4] else None
        slope = a_b.view(shape)
        # the PReLU's factor slope + 1[y > 0] (1 - slope), written into y1's buffer (one pass, no allocation)
        g_y1 = g_z.mul_(torch.addcmul(slope, positive, 1 - slope, out=y1))
        del y1
        g_c, g_w1, g_b1 = torch.ops.aten.native_batch_norm_backward(
            g_y1, c, w1, None, None, mean1, invstd1, True, spec.eps1, [need[0], need[2], need[3]]
        )
        del g_y1
        g_lam = (g_pooled * (ref_mean - z_mean)).sum(0, keepdim=True) if need[5] else None
        g_ref = g_mix * lam  # constant over space
        g_x = g_a_a = None
        if spec.elm:
            g_r = _unpool(g_residual, x, spec.stride)  # the gradient of PReLU_a(x), full size
            slope_a = a_a.view(shape)
            g_a_a = (g_r * x.clamp(max=0.0)).sum((0, 2, 3)) if need[12] else None
            # PReLU_a's factor from the exact input: sign(x) clamped at 0 is the float mask x > 0
            g_x = x.sign().clamp_(min=0.0).mul_(1 - slope_a).add_(slope_a).mul_(g_r)
            if spec.stride == 2:  # ref = pool(x) joins x directly, not through PReLU_a
                if x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0:
                    g_x.add_(g_ref.div(4))  # a constant over space, spread over exact 2x2 tiles
                else:
                    g_x.add_(_unpool(g_ref.expand_as(g_residual).contiguous(), x, spec.stride))
            else:
                g_x.add_(g_ref)
        elif need[1]:
            g_x = g_residual + g_ref
        return (
            g_c, g_x, g_w1, g_b1, g_a_b, g_lam, g_se_w1, g_se_b1, g_se_w2, g_se_b2, g_w2, g_b2, g_a_a,
            None, None, None, None, None,
        )  # fmt: skip


def _plain_bn(bn: nn.Module) -> bool:
    return type(bn) is nn.BatchNorm2d and bn.affine and bn.track_running_stats and bn.running_mean is not None


def chain_supported(proc: nn.Module, elm: bool) -> bool:
    """Whether :func:`lean_processor_chain` expresses this processor in its current state."""
    se = getattr(proc, "se", None)
    if not (proc.training and torch.is_grad_enabled() and getattr(proc, "infor_recoupling", False)) or se is None:
        return False
    if torch.is_autocast_enabled("cpu") or (torch.cuda.is_available() and torch.is_autocast_enabled("cuda")):
        return False
    if getattr(proc.binary_conv, "training_path", None) != "lean":
        return False
    if not (_plain_bn(proc.norm1) and _plain_bn(proc.norm2)):
        return False
    if type(proc.activation2) is not nn.PReLU or (elm and type(proc.activation1) is not nn.PReLU):
        return False
    seq = getattr(se, "se", None)
    if not isinstance(seq, nn.Sequential) or len(seq) != 4:
        return False
    pool, conv1, relu, conv2 = seq
    if not (type(pool) is nn.AdaptiveAvgPool2d and type(relu) is nn.ReLU):
        return False
    for conv in (conv1, conv2):
        if type(conv) is not nn.Conv2d or conv.kernel_size != (1, 1) or conv.bias is None or conv.groups != 1:
            return False
    mods = [proc, proc.norm1, proc.norm2, proc.activation2, se, *seq]
    if elm:
        mods.append(proc.activation1)
    if type(se).forward is not SqueezeExpand.forward or any("forward" in m.__dict__ for m in mods):
        return False  # a replaced forward (a subclass's, or one patched onto an instance) is not what we compute
    return not _observed(*mods)


def lean_processor_chain(proc: nn.Module, c: Tensor, x: Tensor, elm: bool) -> Tensor:
    """The processor's output from its binary conv output ``c`` and its input ``x`` (λ already clamped)."""
    bn1, bn2 = proc.norm1, proc.norm2
    spec = ChainSpec(elm, proc.stride if elm else 1, _bn_factor(bn1), bn1.eps, _bn_factor(bn2), bn2.eps)
    conv1, conv2 = proc.se.se[1], proc.se.se[3]
    return LeanProcessorFunction.apply(
        c, x, bn1.weight, bn1.bias, proc.activation2.weight, proc.scale,
        conv1.weight, conv1.bias, conv2.weight, conv2.bias, bn2.weight, bn2.bias,
        proc.activation1.weight if elm else None,
        bn1.running_mean, bn1.running_var, bn2.running_mean, bn2.running_var, spec,
    )  # fmt: skip

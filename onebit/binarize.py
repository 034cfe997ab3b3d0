"""Binarizers: the straight-through estimators of AdamBNN, ReActNet and BNext.

Every estimator comes three ways (autograd ``Function``, plain function, ``nn.Module``) and is registered in
:data:`BINARIZERS` under a snake_case name, so layers accept ``"approx_sign"`` or ``ApproxSign()`` alike.

**sign(0).** The released code of all three papers uses ``torch.sign``, so an input of exactly 0 binarizes to 0;
the papers' equations define sign(0) = +1. Every sign here takes ``zero`` (the value an exact 0 maps to): the
default ``0.0`` matches the official code; ``zero=1.0`` gives the papers' convention (and a true two-valued
output, which bit-packed kernels need).

Gradients (``mask`` = indicator): all pseudo-gradients below are applied to the incoming gradient ``g``.

======================  ===============================  =============================================  ==========
name                    forward                          backward                                        paper/code
======================  ===============================  =============================================  ==========
``ste_sign``            sign(x)                          g * 1[|x| <= clip]  (clip 1.0; BNext 1.5)      AdamBNN eq.1
``bnext_sign``          sign(x)                          g * 1[|x| <= 1.5]; holds an inert temperature  BNext
``approx_sign``         sign(x)                          g * max(0, 2 - 2|x|)                           ReActNet
``sign_identity_ste``   sign(w)                          g (identity, no clip)                          BNext w
``scaled_sign``         alpha_o * sign(w), alpha detach  g * 1[|w| <= clip] (clip 1.0; no alpha factor) AdamBNN eq.2
``progressive_sign``    clamp(w / T, -1, 1); sign if     g (identity, no 1/T factor, no mask)            BNext
                        T < threshold
``identity``            x                                g                                               (float)
======================  ===============================  =============================================  ==========

Only what backward needs is saved: a bool mask for the clipped STEs, the input itself for ApproxSign.

**Reference forms.** Every module also has :meth:`Binarizer.reference`: the same forward value and pseudo-gradient
computed the way the released code computes them (composed element-wise ops and the "detach trick"
``value.detach() - surrogate.detach() + surrogate``, float masks and polynomial pieces), so autograd keeps the float
input and its intermediates. Binary layers use it on their ``"reference"`` training path (the baseline of
``benchmarks/train_step.py``); the default ``"lean"`` path (``onebit.layers.fused``) keeps only signs and masks.
The detach trick is exact for activations (|surrogate| <= 1.5 around a sign of the same sign) but not always for
weights: ReActNet's ``alpha * sign(W) - clip(W) + clip(W)`` and BNext's ``clamp(W / T) - W + W`` at 0 < T < 1 may
differ from the exact value in the last bit, as in the official code (``docs/official-code.md``, *Building blocks*).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from onebit.registry import Registry

__all__ = [
    "BINARIZERS",
    "ApproxSign",
    "Binarizer",
    "HardSign",
    "Identity",
    "ProgressiveSign",
    "ScaledSign",
    "SignIdentitySTE",
    "SignSTE",
    "approx_sign",
    "approx_sign_reference",
    "build_binarizer",
    "channel_abs_mean",
    "clamp_latent_",
    "progressive_sign",
    "get_temperature",
    "hard_sign_reference",
    "progressive_sign_reference",
    "progressive_value",
    "scaled_sign",
    "scaled_sign_reference",
    "scaled_sign_value",
    "set_temperature",
    "sign",
    "sign_identity_ste",
    "ste_sign",
    "ste_sign_reference",
]

BINARIZERS: Registry[type[nn.Module]] = Registry("binarizer")


def sign(x: Tensor, zero: float = 0.0) -> Tensor:
    """Sign with an explicit value for exact zeros (``0.0``: official code, ``1.0``: the papers)."""
    s = torch.sign(x)
    if zero != 0.0:
        s = torch.where(x == 0, torch.full_like(s, zero), s)
    return s


def channel_abs_mean(w: Tensor) -> Tensor:
    """alpha_o = mean |W[o]| over every dim but the first (AdamBNN eq. 2), shaped to broadcast against ``w``."""
    dims = tuple(range(1, w.dim()))
    return w.abs().mean(dim=dims, keepdim=True) if dims else w.abs()


def scaled_sign_value(w: Tensor, zero: float = 0.0) -> Tensor:
    """The forward value of :func:`scaled_sign` (no autograd): alpha_o * sign(W)."""
    return channel_abs_mean(w) * sign(w, zero)


def progressive_value(w: Tensor, temperature: Tensor, threshold: float, zero: float = 0.0) -> Tensor:
    """The forward value of :func:`progressive_sign` (no autograd): clamp(W / max(T, 1e-8), -1, 1), sign(W) below
    the threshold."""
    # the switch compares the buffer in its own dtype, as the official code does; the clamp runs in w's dtype
    if bool(temperature.reshape(-1)[0] < threshold):
        return sign(w, zero)
    return (w / temperature.to(w.dtype).clamp_min(1e-8)).clamp_(-1.0, 1.0)


# ----------------------------------------------------------------------------------------------- autograd Functions
class SignSTEFunction(torch.autograd.Function):
    """sign forward; clipped straight-through backward g * 1[|x| <= clip] (clip ``None``: no clipping)."""

    @staticmethod
    def forward(ctx, x: Tensor, clip: float | None, zero: float) -> Tensor:
        if clip is not None and ctx.needs_input_grad[0]:
            ctx.save_for_backward(x.abs() <= clip)  # a bool mask: 1 byte per element, not the float input
        ctx.clip = clip
        return sign(x, zero)

    @staticmethod
    def backward(ctx, g: Tensor):
        if ctx.clip is None:
            return g, None, None
        (mask,) = ctx.saved_tensors
        return g * mask, None, None


class ApproxSignFunction(torch.autograd.Function):
    """sign forward; backward the derivative of ReActNet's piecewise quadratic: g * max(0, 2 - 2|x|)."""

    @staticmethod
    def forward(ctx, x: Tensor, zero: float) -> Tensor:
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(x)
        return sign(x, zero)

    @staticmethod
    def backward(ctx, g: Tensor):
        (x,) = ctx.saved_tensors
        return g * (2.0 - 2.0 * x.abs()).clamp_min_(0.0), None


class ScaledSignFunction(torch.autograd.Function):
    """alpha_o * sign(W) forward (alpha detached); backward g * 1[|W| <= clip], no alpha factor."""

    @staticmethod
    def forward(ctx, w: Tensor, clip: float | None, zero: float) -> Tensor:
        if clip is not None and ctx.needs_input_grad[0]:  # no mask under no_grad (evaluation, exports)
            ctx.save_for_backward(w.abs() <= clip)
        ctx.clip = clip
        return scaled_sign_value(w, zero)

    @staticmethod
    def backward(ctx, g: Tensor):
        if ctx.clip is None:
            return g, None, None
        (mask,) = ctx.saved_tensors
        return g * mask, None, None


class ProgressiveSignFunction(torch.autograd.Function):
    """clamp(W / max(T, 1e-8), -1, 1), or sign(W) once T < threshold; identity backward."""

    @staticmethod
    def forward(ctx, w: Tensor, temperature: Tensor, threshold: float, zero: float) -> Tensor:
        return progressive_value(w, temperature, threshold, zero)

    @staticmethod
    def backward(ctx, g: Tensor):
        return g, None, None, None


# ------------------------------------------------------------------------------------------------- functional forms
def ste_sign(x: Tensor, clip: float | None = 1.0, zero: float = 0.0) -> Tensor:
    """sign(x) with the clipped STE: d/dx = 1[|x| <= clip]. ``clip=1.0`` AdamBNN (eq. 1), ``1.5`` BNext."""
    return SignSTEFunction.apply(x, clip, zero)


def approx_sign(x: Tensor, zero: float = 0.0) -> Tensor:
    """sign(x) with ReActNet's ApproxSign gradient 2 - 2|x| on (-1, 1), 0 elsewhere."""
    return ApproxSignFunction.apply(x, zero)


def sign_identity_ste(w: Tensor, zero: float = 0.0) -> Tensor:
    """sign(w) with the identity STE (no clip): the BNext weight estimator below its temperature threshold."""
    return SignSTEFunction.apply(w, None, zero)


def scaled_sign(w: Tensor, clip: float | None = 1.0, zero: float = 0.0) -> Tensor:
    """alpha * sign(w), alpha the detached channel-wise abs-mean (AdamBNN eq. 2, ReActNet ``HardBinaryConv``)."""
    return ScaledSignFunction.apply(w, clip, zero)


def progressive_sign(w: Tensor, temperature: Tensor | float, threshold: float = 1e-7, zero: float = 0.0) -> Tensor:
    """BNext progressive binarization clamp(w / T, -1, 1), hard sign once T < threshold; identity STE."""
    if not torch.is_tensor(temperature):
        temperature = torch.tensor([float(temperature)], dtype=w.dtype, device=w.device)
    return ProgressiveSignFunction.apply(w, temperature, threshold, zero)


# ---------------------------------------------------------------------------- reference forms (official arithmetic)
def _detach_trick(value: Tensor, surrogate: Tensor) -> Tensor:
    """``value`` in the forward, the gradient of ``surrogate`` in the backward, the way the official code writes it."""
    return value.detach() - surrogate.detach() + surrogate


def approx_sign_reference(x: Tensor, zero: float = 0.0) -> Tensor:
    """:func:`approx_sign` as ReActNet's ``BinaryActivation`` computes it: float masks, the quadratic pieces of the
    sign approximation, and the detach trick (autograd keeps x, -x, three masks and two complements)."""
    out_forward = sign(x, zero)
    # bool masks converted to float32 at each use, as the official code does (six conversions, not three); with a
    # float64 x they promote (0/1 are exact either way)
    m1, m2, m3 = (x < -1, x < 0, x < 1)
    f32 = torch.float32
    out1 = (-1) * m1.to(f32) + (x * x + 2 * x) * (1 - m1.to(f32))
    out2 = out1 * m2.to(f32) + (-x * x + 2 * x) * (1 - m2.to(f32))
    out3 = out2 * m3.to(f32) + 1 * (1 - m3.to(f32))
    return _detach_trick(out_forward, out3)


def ste_sign_reference(x: Tensor, clip: float | None = 1.0, zero: float = 0.0) -> Tensor:
    """:func:`ste_sign` as sign(x).detach() - clamp(x).detach() + clamp(x) (identity surrogate without a clip)."""
    return _detach_trick(sign(x, zero), x if clip is None else x.clamp(-clip, clip))


def hard_sign_reference(x: Tensor, temperature: Tensor, clip: float | None = 1.5, zero: float = 0.0) -> Tensor:
    """BNext's ``HardSign`` arithmetic: sign(clamp(x / max(T, 1e-8), -1, 1)) (= sign(x)) with the clip-STE trick."""
    replace = x if clip is None else x.clamp(-clip, clip)
    value = sign(x.div(temperature.clamp(min=1e-8)).clamp(-1, 1), zero)
    return (value - replace).detach() + replace


def scaled_sign_reference(w: Tensor, clip: float | None = 1.0, zero: float = 0.0) -> Tensor:
    """ReActNet's ``HardBinaryConv`` arithmetic: alpha from nested means of |W| (detached), then
    alpha * sign(W) - clamp(W).detach() + clamp(W)."""
    alpha = w.abs()
    for d in reversed(range(1, w.dim())):
        alpha = alpha.mean(dim=d, keepdim=True)
    clipped = w if clip is None else w.clamp(-clip, clip)
    return _detach_trick(alpha.detach() * sign(w, zero), clipped)


def progressive_sign_reference(w: Tensor, temperature: Tensor, threshold: float = 1e-7, zero: float = 0.0) -> Tensor:
    """BNext's ``HardBinaryConv`` arithmetic: the progressive value, then value - W.detach() + W (identity STE)."""
    if bool(temperature.reshape(-1)[0] < threshold):
        value = sign(w, zero)
    else:
        value = (w / temperature.clamp(min=1e-8)).clamp(-1, 1)
    return _detach_trick(value, w)


@torch.no_grad()
def clamp_latent_(w: Tensor, bound: float = 1.5) -> Tensor:
    """Clamp latent weights in place to [-bound, bound] (BNext clamps to 1.5 before each training forward)."""
    return w.clamp_(-bound, bound)


# ---------------------------------------------------------------------------------------------------------- Modules
class Binarizer(nn.Module):
    """Base class: marks a module as a binarizer (used by metrics and exporters to find binarization points)."""

    #: False only for the identity; a progressive binarizer counts as binary (it ends as a hard sign).
    is_binary: bool = True

    def reference(self, x: Tensor) -> Tensor:
        """Same value and pseudo-gradient as ``forward``, computed with the official code's composed ops (the
        ``"reference"`` training path). Binarizers without an official form fall back to ``forward``."""
        return self(x)


@BINARIZERS.register("identity")
class Identity(Binarizer):
    """No binarization: forward x, backward g. Used for the real-valued half of a staged recipe."""

    is_binary = False

    def forward(self, x: Tensor) -> Tensor:
        return x


@BINARIZERS.register("ste_sign")
class SignSTE(Binarizer):
    """sign(x) with clipped STE, d/dx = 1[|x| <= clip] (AdamBNN: clip 1.0; BNext: 1.5; ``None``: no clip).

    Args:
        clip: half-width of the window where the gradient passes; outside it is zero (saturation).
        zero: value an exact 0 maps to (0.0 official code, 1.0 the papers).
    """

    def __init__(self, clip: float | None = 1.0, zero: float = 0.0) -> None:
        super().__init__()
        self.clip, self.zero = clip, zero

    def forward(self, x: Tensor) -> Tensor:
        return ste_sign(x, self.clip, self.zero)

    def reference(self, x: Tensor) -> Tensor:
        return ste_sign_reference(x, self.clip, self.zero)

    def extra_repr(self) -> str:
        return f"clip={self.clip}, zero={self.zero}"


@BINARIZERS.register("bnext_sign")
class HardSign(SignSTE):
    """BNext's ``HardSign``: sign(x) with clip-STE range 1.5.

    Holds the official ``temperature`` buffer (shape [1], init 1) so checkpoints round-trip; it has **no effect on
    the forward**, exactly as in the released code (its progressive switch is never turned on).
    """

    def __init__(self, clip: float | None = 1.5, zero: float = 0.0) -> None:
        super().__init__(clip, zero)
        self.register_buffer("temperature", torch.ones(1))

    def reference(self, x: Tensor) -> Tensor:
        return hard_sign_reference(x, self.temperature, self.clip, self.zero)


@BINARIZERS.register("approx_sign")
class ApproxSign(Binarizer):
    """ReActNet / AdamBNN ``BinaryActivation``: sign(x) forward, gradient 2 + 2x on [-1, 0), 2 - 2x on [0, 1),
    0 elsewhere (derivative of the piecewise-quadratic approximation of sign)."""

    def __init__(self, zero: float = 0.0) -> None:
        super().__init__()
        self.zero = zero

    def forward(self, x: Tensor) -> Tensor:
        return approx_sign(x, self.zero)

    def reference(self, x: Tensor) -> Tensor:
        return approx_sign_reference(x, self.zero)


@BINARIZERS.register("sign_identity_ste")
class SignIdentitySTE(Binarizer):
    """sign(w) with identity gradient (no clipping mask); pair it with latent-weight clamping."""

    def __init__(self, zero: float = 0.0) -> None:
        super().__init__()
        self.zero = zero

    def forward(self, w: Tensor) -> Tensor:
        return sign_identity_ste(w, self.zero)

    def reference(self, w: Tensor) -> Tensor:
        return ste_sign_reference(w, None, self.zero)


@BINARIZERS.register("scaled_sign")
class ScaledSign(Binarizer):
    """ReActNet / AdamBNN weight binarizer: alpha_o * sign(W), alpha_o = mean|W[o]| (detached, from the unclipped
    latent weights); gradient 1[|W| <= clip] (clip 1.0: the derivative of clamp(W, -1, 1)), not scaled by alpha."""

    def __init__(self, clip: float | None = 1.0, zero: float = 0.0) -> None:
        super().__init__()
        self.clip, self.zero = clip, zero

    def forward(self, w: Tensor) -> Tensor:
        return scaled_sign(w, self.clip, self.zero)

    def reference(self, w: Tensor) -> Tensor:
        return scaled_sign_reference(w, self.clip, self.zero)

    def extra_repr(self) -> str:
        return f"clip={self.clip}, zero={self.zero}"


@BINARIZERS.register("progressive_sign")
class ProgressiveSign(Binarizer):
    """BNext progressive weight binarization (BoolNet-style): Wb = clamp(W / max(T, 1e-8), -1, 1) while
    T >= threshold, sign(W) below it. Gradient: identity (no 1/T factor, no mask).

    The temperature is a buffer (saved in checkpoints; eval output depends on it). The official schedule multiplies
    it by 0.9 after every epoch. Thresholds: 1e-7 in ``bnext.py`` (BNext-T/S/M/L), 1e-5 in ``birealnet.py``
    (BNext-18).
    """

    def __init__(self, threshold: float = 1e-7, temperature: float = 1.0, zero: float = 0.0) -> None:
        super().__init__()
        self.threshold, self.zero = threshold, zero
        self.register_buffer("temperature", torch.full((1,), float(temperature)))

    def forward(self, w: Tensor) -> Tensor:
        return ProgressiveSignFunction.apply(w, self.temperature, self.threshold, self.zero)

    def reference(self, w: Tensor) -> Tensor:
        return progressive_sign_reference(w, self.temperature, self.threshold, self.zero)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, T={float(self.temperature[0]):.3g}"


def build_binarizer(spec: str | nn.Module | None, **kwargs) -> nn.Module:
    """A binarizer from a registered name (with ``kwargs``), a module (returned as is) or ``None`` (identity)."""
    if spec is None:
        return Identity()
    if isinstance(spec, nn.Module):
        return spec
    return BINARIZERS.build(spec, **kwargs)


@torch.no_grad()
def set_temperature(model: nn.Module, temperature: float) -> int:
    """Set every progressive-binarization temperature in ``model`` (and the inert ``HardSign`` ones, which the
    official schedule decays alongside). Returns how many buffers were set."""
    n = 0
    for m in model.modules():
        t = getattr(m, "temperature", None)
        if isinstance(m, Binarizer) and torch.is_tensor(t):
            t.fill_(float(temperature))
            n += 1
    return n


def get_temperature(model: nn.Module) -> float | None:
    """The temperature of the first progressive binarizer in ``model`` (``None`` when it has none)."""
    for m in model.modules():
        if isinstance(m, ProgressiveSign):
            return float(m.temperature.reshape(-1)[0])
    return None

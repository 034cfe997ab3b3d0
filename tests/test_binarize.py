"""Tests for onebit.binarize: forward values, pseudo-gradients against explicit formulas, the three forms.

Straight-through estimators are not true derivatives, so there is no gradcheck here: every backward is compared to
the documented formula, written out explicitly in float64, and to autograd of the official "detach trick".
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from onebit.binarize import (
    BINARIZERS,
    ApproxSign,
    ApproxSignFunction,
    Binarizer,
    HardSign,
    Identity,
    ProgressiveSign,
    ProgressiveSignFunction,
    ScaledSign,
    ScaledSignFunction,
    SignIdentitySTE,
    SignSTE,
    SignSTEFunction,
    approx_sign,
    build_binarizer,
    channel_abs_mean,
    clamp_latent_,
    get_temperature,
    progressive_sign,
    scaled_sign,
    set_temperature,
    sign,
    sign_identity_ste,
    ste_sign,
)

SHAPE = (4, 3, 2, 2)  # 48 elements: a [Cout, Cin, kh, kw] weight or an [N, C, H, W] activation


def grid(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Deterministic test points with the edge cases in it: exact 0, ±0.5, ±1, ±1.5 (the clip points), values just
    inside/outside them and far outside. All are exactly representable in float32, so both dtypes see the same
    points. Shuffled with a fixed permutation so every channel gets a mix."""
    base = torch.arange(-20, 21, dtype=torch.float64) / 8  # -2.5 .. 2.5 step 1/8: contains 0, ±0.5, ±1, ±1.5
    extra = torch.tensor([3.0, -3.0, 0.3, -0.7, 0.9990234375, -1.0009765625, 1.4990234375], dtype=torch.float64)
    x = torch.cat([base, extra])
    perm = torch.randperm(x.numel(), generator=torch.Generator().manual_seed(0))
    return x[perm].reshape(SHAPE).to(dtype)


def upstream(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A non-constant incoming gradient, so that 'g * pseudo-gradient' is checked, not just the pseudo-gradient."""
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)


def fwd_bwd(fn, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    y.backward(g)
    return y.detach(), x.grad


def alpha_ref(w: torch.Tensor) -> torch.Tensor:
    """alpha_o = mean |W[o]| over every dim but the first (AdamBNN eq. 2), written independently."""
    return w.abs().flatten(1).mean(1).reshape(-1, *([1] * (w.dim() - 1)))


def approx_quadratic_ref(x: torch.Tensor) -> torch.Tensor:
    """ReActNet's BinaryActivation as released: piecewise quadratic (x^2+2x on [-1,0), -x^2+2x on [0,1), ±1 outside)
    for the backward, sign for the forward, joined with the detach trick."""
    mask1 = (x < -1).to(x.dtype)
    mask2 = (x < 0).to(x.dtype)
    mask3 = (x < 1).to(x.dtype)
    out1 = -1 * mask1 + (x * x + 2 * x) * (1 - mask1)
    out2 = out1 * mask2 + (-x * x + 2 * x) * (1 - mask2)
    out3 = out2 * mask3 + 1 * (1 - mask3)
    return torch.sign(x).detach() - out3.detach() + out3


def clip_ste_ref(x: torch.Tensor, clip: float) -> torch.Tensor:
    """The official "detach trick" clip-STE: forward sign(x), backward d clamp(x, -clip, clip)/dx."""
    c = x.clamp(-clip, clip)
    return (torch.sign(x) - c).detach() + c


# Reference forward value and pseudo-gradient (d out / d x, before multiplying by g) of every registered binarizer,
# built with its default arguments. Adding a binarizer to the registry without adding it here fails the test below.
REFERENCE = {
    "identity": (lambda x: x, lambda x: torch.ones_like(x)),
    "ste_sign": (torch.sign, lambda x: (x.abs() <= 1.0).to(x.dtype)),
    "bnext_sign": (torch.sign, lambda x: (x.abs() <= 1.5).to(x.dtype)),
    "approx_sign": (torch.sign, lambda x: torch.where(x.abs() < 1, 2 - 2 * x.abs(), torch.zeros_like(x))),
    "sign_identity_ste": (torch.sign, lambda x: torch.ones_like(x)),
    "scaled_sign": (lambda w: alpha_ref(w) * torch.sign(w), lambda w: (w.abs() <= 1.0).to(w.dtype)),
    # default temperature T = 1 >= threshold: soft clamp(W / 1, -1, 1), identity gradient
    "progressive_sign": (lambda w: w.clamp(-1, 1), lambda w: torch.ones_like(w)),
}

SIGN_LIKE = ["ste_sign", "bnext_sign", "approx_sign", "sign_identity_ste"]


def test_reference_table_covers_registry():
    assert set(REFERENCE) == set(BINARIZERS.list())


def test_registered_binarizers_are_binarizer_modules():
    for name in BINARIZERS.list():
        m = BINARIZERS.build(name)
        assert isinstance(m, Binarizer), name
        assert not list(m.parameters()), f"{name} must not hold trainable parameters"
    assert BINARIZERS.build("identity").is_binary is False
    assert all(BINARIZERS.build(n).is_binary for n in SIGN_LIKE + ["scaled_sign"])


@pytest.mark.parametrize("name", BINARIZERS.list())
def test_forward_and_pseudo_gradient_match_reference(name):
    x, g = grid(), upstream()
    y, gx = fwd_bwd(BINARIZERS.build(name), x, g)
    fwd, grad = REFERENCE[name]
    torch.testing.assert_close(y, fwd(x), rtol=0, atol=0)
    torch.testing.assert_close(gx, g * grad(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", BINARIZERS.list())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_shape_preserved(name, dtype):
    m = BINARIZERS.build(name).to(dtype)
    x = grid(dtype)
    y, gx = fwd_bwd(m, x, upstream(dtype))
    assert y.dtype == dtype and gx.dtype == dtype
    assert y.shape == x.shape and gx.shape == x.shape
    # float32 gives the same values as float64 on these exactly representable points
    y64, g64 = fwd_bwd(BINARIZERS.build(name), grid(), upstream(dtype).double())
    torch.testing.assert_close(y.double(), y64, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(gx.double(), g64, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------------------------------- forward values
@pytest.mark.parametrize("name", SIGN_LIKE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sign_forward_is_ternary_with_sign0_zero(name, dtype):
    x = grid(dtype)
    y = BINARIZERS.build(name)(x)
    assert set(y.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert torch.equal(y[x == 0], torch.zeros_like(y[x == 0]))  # official code: torch.sign, sign(0) = 0
    assert torch.equal(y[x > 0], torch.ones_like(y[x > 0]))
    assert torch.equal(y[x < 0], -torch.ones_like(y[x < 0]))


@pytest.mark.parametrize("name", SIGN_LIKE)
def test_sign_forward_zero_one_maps_exact_zero_to_plus_one(name):
    x = grid()
    assert (x == 0).any()
    y = BINARIZERS.build(name, zero=1.0)(x)
    assert set(y.unique().tolist()) == {-1.0, 1.0}
    expected = torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
    assert torch.equal(y, expected)


def test_sign_function_zero_argument():
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, -1e-30, 3.0])
    assert torch.equal(sign(x), torch.tensor([-1.0, 0.0, 0.0, 1.0, -1.0, 1.0]))
    assert torch.equal(sign(x, zero=1.0), torch.tensor([-1.0, 1.0, 1.0, 1.0, -1.0, 1.0]))
    assert torch.equal(sign(x, zero=-1.0), torch.tensor([-1.0, -1.0, -1.0, 1.0, -1.0, 1.0]))


@pytest.mark.parametrize("zero", [0.0, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scaled_sign_forward_is_alpha_times_sign(zero, dtype):
    w = grid(dtype)
    y = ScaledSign(zero=zero)(w)
    alpha = alpha_ref(w)
    assert alpha.shape == (SHAPE[0], 1, 1, 1)
    s = torch.sign(w) if zero == 0.0 else torch.where(w >= 0, 1.0, -1.0).to(dtype)
    torch.testing.assert_close(y, alpha * s, rtol=0, atol=0)
    # every output channel takes values in alpha_o * {-1, (0,) 1} only
    allowed = {-1.0, 1.0} if zero else {-1.0, 0.0, 1.0}
    for o in range(SHAPE[0]):
        assert set((y[o] / alpha[o]).unique().tolist()) <= allowed
        assert float(alpha[o]) > 0


def test_scaled_sign_alpha_per_row_for_linear_weight():
    w = torch.tensor([[1.0, -3.0, 2.0], [-0.5, 0.5, 0.0]], dtype=torch.float64)
    # alpha_0 = (1 + 3 + 2) / 3 = 2, alpha_1 = (0.5 + 0.5 + 0) / 3 = 1/3
    y = scaled_sign(w)
    expected = torch.tensor([[2.0, -2.0, 2.0], [-1 / 3, 1 / 3, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(channel_abs_mean(w), torch.tensor([[2.0], [1 / 3]], dtype=torch.float64))


def test_scaled_sign_alpha_is_detached():
    # If alpha were differentiated, d sum(alpha_o * sign(W)) / dW would pick up sum_j sign(W_oj) * sign(W_oi) / n.
    w = grid()
    _, gw = fwd_bwd(ScaledSign(), w, torch.ones(SHAPE, dtype=torch.float64))
    torch.testing.assert_close(gw, (w.abs() <= 1).to(w.dtype), rtol=0, atol=0)
    # and a gradient that depended on alpha would change when one weight of the channel grows; this one does not
    w2 = w.clone()
    w2[0, 0, 0, 0] = 100.0
    _, gw2 = fwd_bwd(ScaledSign(), w2, torch.ones(SHAPE, dtype=torch.float64))
    mask = torch.ones(SHAPE, dtype=torch.bool)
    mask[0, 0, 0, 0] = False
    assert torch.equal(gw2[mask], gw[mask])


def test_identity_returns_input_unchanged():
    x = grid()
    assert Identity()(x) is x


# ------------------------------------------------------------------------------------------------ pseudo-gradients
@pytest.mark.parametrize("clip", [1.0, 1.5])
def test_clip_ste_gradient_formula_and_detach_trick(clip):
    x, g = grid(), upstream()
    # the clip points themselves are in the test set, and pass the gradient (|x| <= clip, inclusive)
    assert (x == clip).any() and (x == -clip).any()
    y, gx = fwd_bwd(SignSTE(clip=clip), x, g)
    mask = (x.abs() <= clip).to(x.dtype)
    torch.testing.assert_close(gx, g * mask, rtol=0, atol=0)
    assert torch.equal(gx[x == clip], g[x == clip]) and torch.equal(gx[x == -clip], g[x == -clip])
    assert torch.equal(gx[x.abs() > clip], torch.zeros_like(gx[x.abs() > clip]))
    y_ref, g_ref = fwd_bwd(lambda t: clip_ste_ref(t, clip), x, g)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(gx, g_ref, rtol=0, atol=0)


def test_clip_ste_none_is_identity_gradient():
    x, g = grid(), upstream()
    y, gx = fwd_bwd(SignSTE(clip=None), x, g)
    assert torch.equal(y, torch.sign(x))
    assert torch.equal(gx, g)


def test_bnext_sign_equals_clip_ste_1p5():
    x, g = grid(), upstream()
    y, gx = fwd_bwd(HardSign(), x, g)
    y_ref, g_ref = fwd_bwd(lambda t: clip_ste_ref(t, 1.5), x, g)
    assert HardSign().clip == 1.5
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(gx, g_ref, rtol=0, atol=0)


def test_approx_sign_gradient_formula():
    x, g = grid(), upstream()
    _, gx = fwd_bwd(ApproxSign(), x, g)
    inside = x.abs() < 1
    torch.testing.assert_close(gx[inside], (g * (2 - 2 * x.abs()))[inside], rtol=0, atol=0)
    # zero at and outside ±1
    assert (x.abs() == 1).any()
    assert torch.equal(gx[~inside], torch.zeros_like(gx[~inside]))
    # 2 at x = 0 (the peak), both halves: 2 + 2x on [-1, 0), 2 - 2x on [0, 1)
    assert torch.equal(gx[x == 0], 2 * g[x == 0])
    half = x == -0.5
    assert torch.equal(gx[half], g[half] * (2 + 2 * -0.5))


def test_approx_sign_matches_autograd_of_piecewise_quadratic():
    x, g = grid(), upstream()
    y, gx = fwd_bwd(ApproxSign(), x, g)
    y_ref, g_ref = fwd_bwd(approx_quadratic_ref, x, g)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(gx, g_ref, rtol=0, atol=1e-15)


def test_sign_identity_ste_gradient_is_identity():
    x, g = grid(), upstream()
    y, gx = fwd_bwd(SignIdentitySTE(), x, g)
    y_ref, g_ref = fwd_bwd(lambda t: (torch.sign(t) - t).detach() + t, x, g)
    assert torch.equal(y, torch.sign(x))
    assert torch.equal(gx, g)
    torch.testing.assert_close(gx, g_ref, rtol=0, atol=0)


@pytest.mark.parametrize("clip", [1.0, 1.5])
def test_scaled_sign_gradient_no_alpha_and_mask(clip):
    w, g = grid(), upstream()
    y, gw = fwd_bwd(ScaledSign(clip=clip), w, g)
    torch.testing.assert_close(gw, g * (w.abs() <= clip).to(w.dtype), rtol=0, atol=0)

    def detach_trick(t):  # ReActNet HardBinaryConv: (alpha*sign(W) - clip(W)).detach() + clip(W), alpha detached
        c = t.clamp(-clip, clip)
        return (alpha_ref(t).detach() * torch.sign(t) - c).detach() + c

    y_ref, g_ref = fwd_bwd(detach_trick, w, g)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(gw, g_ref, rtol=0, atol=0)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 0.1])
@pytest.mark.parametrize("threshold", [1e-7, 1e-5])
def test_progressive_sign_soft_phase(temperature, threshold):
    w, g = grid() * 0.2, upstream()  # |W| <= 0.6: with T < 1 some outputs saturate, others stay inside (-1, 1)
    # the module keeps T in a float32 buffer: the reference divides by that stored value
    m = ProgressiveSign(threshold=threshold, temperature=temperature).double()
    t_stored = float(m.temperature)
    assert t_stored == pytest.approx(temperature, rel=1e-7)
    for form, t in ((m, t_stored), (lambda x: progressive_sign(x, temperature, threshold), temperature)):
        y, gw = fwd_bwd(form, w, g)
        torch.testing.assert_close(y, (w / t).clamp(-1, 1), rtol=0, atol=0)
        assert ((y.abs() < 1) & (y != 0)).any()  # really soft: values strictly inside (-1, 1) ...
        if temperature < 1:
            assert (y.abs() == 1).any()  # ... and saturated ones
        # identity gradient: no 1/T factor, no clipping mask (saturated |W/T| > 1 entries still get g)
        assert torch.equal(gw, g)


@pytest.mark.parametrize("threshold", [1e-7, 1e-5])
def test_progressive_sign_hard_phase_below_threshold(threshold):
    w, g = grid(), upstream()
    w[0, 0, 0, 0] = threshold / 100  # tiny weight: sign gives 1, the soft clamp W/T would not
    below = ProgressiveSign(threshold=threshold, temperature=threshold / 10).double()
    y, gw = fwd_bwd(below, w, g)
    assert torch.equal(y, torch.sign(w))
    assert torch.equal(gw, g)
    # exactly at the threshold it is still the soft clamp (the switch is "T < threshold"); float64 T, so exact
    y_at, g_at = fwd_bwd(lambda x: progressive_sign(x, threshold, threshold), w, g)
    torch.testing.assert_close(y_at, (w / threshold).clamp(-1, 1), rtol=0, atol=0)
    assert float(y_at[0, 0, 0, 0]) == pytest.approx(0.01)
    assert torch.equal(g_at, g)
    # zero=1.0 applies in the hard phase
    y1 = ProgressiveSign(threshold=threshold, temperature=0.0, zero=1.0).double()(w)
    assert torch.equal(y1, torch.where(w >= 0, 1.0, -1.0).double())


def test_progressive_sign_thresholds_differ():
    # T = 1e-6 is below BNext-18's 1e-5 threshold (hard sign) but above BNext's 1e-7 (still soft)
    w = torch.tensor([[2e-7, -5e-7, 3.0, 0.0]], dtype=torch.float64)
    t = 1e-6
    assert torch.equal(progressive_sign(w, t, threshold=1e-5), torch.sign(w))
    torch.testing.assert_close(progressive_sign(w, t, threshold=1e-7), (w / t).clamp(-1, 1), rtol=0, atol=0)
    assert not torch.equal(progressive_sign(w, t, threshold=1e-7), torch.sign(w))


def test_progressive_sign_temperature_floor():
    # with the switch disabled (threshold 0) a vanishing T is floored at 1e-8: clamp(W / max(T, 1e-8), -1, 1)
    w = torch.tensor([[5e-9, -2.5e-9, 1.0]], dtype=torch.float64)
    y = progressive_sign(w, 1e-12, threshold=0.0)
    torch.testing.assert_close(y, torch.tensor([[0.5, -0.25, 1.0]], dtype=torch.float64), rtol=1e-12, atol=0)


def test_progressive_sign_accepts_tensor_or_float_temperature():
    w = grid()
    a = progressive_sign(w, 0.5)
    b = progressive_sign(w, torch.tensor([0.5]))  # float32 buffer, float64 weight: output stays float64
    assert a.dtype == b.dtype == torch.float64
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# -------------------------------------------------------------------------------------------- three forms agree
THREE_FORMS = [
    (
        "ste_sign_clip1.5_zero1",
        lambda x: SignSTEFunction.apply(x, 1.5, 1.0),
        lambda x: ste_sign(x, 1.5, 1.0),
        SignSTE(clip=1.5, zero=1.0),
    ),
    ("ste_sign_default", lambda x: SignSTEFunction.apply(x, 1.0, 0.0), ste_sign, SignSTE()),
    ("approx_sign", lambda x: ApproxSignFunction.apply(x, 0.0), approx_sign, ApproxSign()),
    ("approx_sign_zero1", lambda x: ApproxSignFunction.apply(x, 1.0), lambda x: approx_sign(x, 1.0), ApproxSign(1.0)),
    ("sign_identity_ste", lambda x: SignSTEFunction.apply(x, None, 0.0), sign_identity_ste, SignIdentitySTE()),
    ("scaled_sign", lambda x: ScaledSignFunction.apply(x, 1.0, 0.0), scaled_sign, ScaledSign()),
    (
        "scaled_sign_clip1.5",
        lambda x: ScaledSignFunction.apply(x, 1.5, 0.0),
        lambda x: scaled_sign(x, 1.5),
        ScaledSign(clip=1.5),
    ),
    (
        "progressive_soft",
        lambda x: ProgressiveSignFunction.apply(x, torch.tensor([0.5]), 1e-7, 0.0),
        lambda x: progressive_sign(x, 0.5),
        ProgressiveSign(temperature=0.5),
    ),
    (
        "progressive_hard_1e-5",
        lambda x: ProgressiveSignFunction.apply(x, torch.tensor([1e-6]), 1e-5, 1.0),
        lambda x: progressive_sign(x, 1e-6, threshold=1e-5, zero=1.0),
        ProgressiveSign(threshold=1e-5, temperature=1e-6, zero=1.0),
    ),
]


@pytest.mark.parametrize("case", THREE_FORMS, ids=[c[0] for c in THREE_FORMS])
def test_function_functional_and_module_agree(case):
    _, function_form, functional_form, module_form = case
    x, g = grid(), upstream()
    y0, g0 = fwd_bwd(function_form, x, g)
    for form in (functional_form, module_form):
        y, gx = fwd_bwd(form, x, g)
        assert torch.equal(y, y0)
        assert torch.equal(gx, g0)


# ---------------------------------------------------------------------------------------------------- temperature
def test_hard_sign_temperature_is_inert():
    x, g = grid(), upstream()
    m = HardSign()
    assert m.temperature.shape == (1,) and float(m.temperature) == 1.0
    assert "temperature" in m.state_dict()
    y1, g1 = fwd_bwd(m, x, g)
    for t in (1e-9, 0.01, 0.5, 100.0):
        m.temperature.fill_(t)
        y, gx = fwd_bwd(m, x, g)
        assert torch.equal(y, y1)
        assert torch.equal(gx, g1)


def test_set_and_get_temperature():
    model = nn.Sequential(
        HardSign(), ProgressiveSign(temperature=0.3), SignSTE(), nn.Sequential(ProgressiveSign()), ScaledSign()
    )
    assert get_temperature(model) == pytest.approx(0.3)  # the first progressive binarizer
    n = set_temperature(model, 0.25)
    assert n == 3  # two ProgressiveSign + the inert HardSign buffer; SignSTE/ScaledSign have none
    assert float(model[0].temperature) == 0.25
    assert float(model[1].temperature) == 0.25
    assert float(model[3][0].temperature) == 0.25
    assert get_temperature(model) == 0.25
    # the new temperature is what the forward uses
    w = grid().float()
    torch.testing.assert_close(model[1](w), (w / 0.25).clamp(-1, 1), rtol=0, atol=0)


def test_temperature_absent():
    model = nn.Sequential(HardSign(), SignSTE(), nn.Linear(2, 2))
    assert get_temperature(model) is None  # HardSign is not a progressive binarizer
    assert set_temperature(nn.Sequential(SignSTE(), nn.Linear(2, 2)), 0.5) == 0


def test_set_temperature_ignores_non_binarizer_temperature():
    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("temperature", torch.ones(1))

    model = nn.Sequential(Other(), ProgressiveSign())
    assert set_temperature(model, 0.5) == 1
    assert float(model[0].temperature) == 1.0


def test_set_temperature_drives_progressive_to_hard_sign():
    m = ProgressiveSign()
    w = torch.tensor([[1e-9, -0.3, 0.0]])
    assert not torch.equal(m(w), torch.sign(w))
    set_temperature(m, 1e-9)
    assert torch.equal(m(w), torch.sign(w))


# ---------------------------------------------------------------------------------------------------- helpers
def test_clamp_latent_in_place():
    w = nn.Parameter(torch.tensor([-3.0, -1.5, -0.2, 0.0, 1.49, 2.0]))
    out = clamp_latent_(w)
    assert out is w  # in place, on a leaf that requires grad, without autograd complaining
    assert torch.equal(w.detach(), torch.tensor([-1.5, -1.5, -0.2, 0.0, 1.49, 1.5]))
    clamp_latent_(w, 1.0)
    assert torch.equal(w.detach(), torch.tensor([-1.0, -1.0, -0.2, 0.0, 1.0, 1.0]))
    assert w.grad is None and w.requires_grad


def test_build_binarizer_from_name_module_none():
    assert isinstance(build_binarizer(None), Identity)
    for name in BINARIZERS.list():
        assert type(build_binarizer(name)) is BINARIZERS.get(name)
    m = ApproxSign()
    assert build_binarizer(m) is m
    custom = nn.Tanh()  # any module is accepted as is
    assert build_binarizer(custom) is custom
    b = build_binarizer("ste_sign", clip=1.5, zero=1.0)
    assert isinstance(b, SignSTE) and (b.clip, b.zero) == (1.5, 1.0)
    p = build_binarizer("progressive_sign", threshold=1e-5, temperature=0.5)
    assert p.threshold == 1e-5 and float(p.temperature) == 0.5


def test_build_binarizer_unknown_name_suggests():
    with pytest.raises(KeyError) as info:
        build_binarizer("ste_sgn")
    msg = str(info.value)
    assert "did you mean" in msg and "'ste_sign'" in msg
    with pytest.raises(KeyError, match="approx_sign"):
        build_binarizer("aprox_sign")

"""Tests for onebit.layers: binary conv/linear reduce to their float parents, match sign references and explicit
gradient formulas, pad binarized inputs as documented; the stage switches, binarize_ and the real-valued helpers."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onebit.binarize import BINARIZERS, HardSign, ProgressiveSign, SignIdentitySTE, set_temperature
from onebit.layers import (
    BinarizeConfig,
    BinaryConv2d,
    BinaryLinear,
    LearnableBias,
    RPReLU,
    binarize_,
    binary_layers,
    is_binary_layer,
    set_binarization,
)

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=F64) * scale


def alpha_ref(w: torch.Tensor) -> torch.Tensor:
    return w.abs().flatten(1).mean(1).reshape(-1, *([1] * (w.dim() - 1)))


def copy_params_(dst: nn.Module, src: nn.Module) -> None:
    with torch.no_grad():
        dst.weight.copy_(src.weight)
        if src.bias is not None:
            dst.bias.copy_(src.bias)


# Detach-trick references (the official code's way of writing each estimator), float64.
def ste_ref(x, clip=1.0):
    c = x.clamp(-clip, clip)
    return (torch.sign(x) - c).detach() + c


def approx_ref(x):
    q = torch.where(
        x < -1,
        -torch.ones_like(x),
        torch.where(x < 0, x * x + 2 * x, torch.where(x < 1, -x * x + 2 * x, torch.ones_like(x))),
    )
    return (torch.sign(x) - q).detach() + q


def scaled_ref(w, clip=1.0):
    c = w.clamp(-clip, clip)
    return (alpha_ref(w).detach() * torch.sign(w) - c).detach() + c


def identity_ste_ref(w):
    return (torch.sign(w) - w).detach() + w


def progressive_ref(w, t):
    return ((w / t).clamp(-1, 1) - w).detach() + w


INPUT_REFS = {
    "ste_sign": ste_ref,
    "bnext_sign": lambda x: ste_ref(x, 1.5),
    "approx_sign": approx_ref,
    "identity": lambda x: x,
}
WEIGHT_REFS = {
    "scaled_sign": scaled_ref,
    "sign_identity_ste": identity_ste_ref,
    "progressive_sign": lambda w: progressive_ref(w, 0.5),  # built with temperature=0.5 below
    "identity": lambda w: w,
}

CONV_CONFIGS = [  # (cin, cout, k, stride, padding, dilation, groups, bias)
    (3, 4, 3, 1, 0, 1, 1, False),
    (3, 4, 3, 2, 1, 1, 1, True),
    (4, 6, 3, 1, 2, 2, 2, True),
    (4, 8, (3, 1), 2, (1, 2), 1, 4, False),
    (2, 2, 1, 1, 0, 1, 1, True),
    (3, 4, 3, 1, "same", 1, 1, True),
]
CONV_IDS = [f"c{i}" for i in range(len(CONV_CONFIGS))]


def make_pair(cfg, **binary_kw):
    cin, cout, k, s, p, d, g, b = cfg
    ref = nn.Conv2d(cin, cout, k, s, p, d, g, b, dtype=F64)
    with torch.no_grad():
        ref.weight.copy_(randn(*ref.weight.shape, seed=1))
        if b:
            ref.bias.copy_(randn(cout, seed=2))
    layer = BinaryConv2d(cin, cout, k, s, p, d, g, b, dtype=F64, **binary_kw)
    copy_params_(layer, ref)
    x = randn(2, cin, 7, 6, seed=3, scale=1.3)
    return ref, layer, x


def grads(module_or_fn, params, x, g):
    x = x.detach().clone().requires_grad_(True)
    for p in params:
        p.grad = None
    out = module_or_fn(x)
    out.backward(g)
    return out.detach(), x.grad, [p.grad.clone() for p in params]


# ------------------------------------------------------------------------------------------- reduce to float layers
SWITCH_CASES = [
    (cfg, name, switches)
    for cfg, cid in zip(CONV_CONFIGS, CONV_IDS)
    for name, switches in [
        ("none", dict(input_binarizer=None, weight_binarizer=None)),
        ("off", dict(binarize_input=False, binarize_weight=False)),
        # identity binarizers with a non-zero pad_value but the input switch off: float zero padding must be used
        ("identity_padm1", dict(input_binarizer="identity", weight_binarizer="identity", pad_value=-1.0)),
    ]
    if not (cfg[4] == "same" and "pad_value" in switches)  # pad_value needs integer padding
]


@pytest.mark.parametrize(
    "cfg,name,switches", SWITCH_CASES, ids=[f"{CONV_IDS[CONV_CONFIGS.index(c)]}-{n}" for c, n, _ in SWITCH_CASES]
)
def test_conv_identity_equals_nn_conv(cfg, name, switches):
    ref, layer, x = make_pair(cfg, **switches)
    if "pad_value" in switches:
        layer.binarize_input = False  # identity binarizer but switch off: float padding (zeros) must be used
    params_ref = [p for p in (ref.weight, ref.bias) if p is not None]
    params = [p for p in (layer.weight, layer.bias) if p is not None]
    g = randn(*ref(x).shape, seed=4)
    y_ref, gx_ref, gp_ref = grads(ref, params_ref, x, g)
    y, gx, gp = grads(layer, params, x, g)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=0)
    for a, b in zip(gp, gp_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("padding_mode", ["reflect", "circular", "replicate"])
def test_conv_identity_equals_nn_conv_padding_modes(padding_mode):
    ref = nn.Conv2d(2, 3, 3, padding=1, padding_mode=padding_mode, dtype=F64)
    layer = BinaryConv2d(
        2, 3, 3, padding=1, bias=True, padding_mode=padding_mode, dtype=F64, binarize_input=False, binarize_weight=False
    )
    copy_params_(layer, ref)
    x = randn(1, 2, 5, 5, seed=5)
    torch.testing.assert_close(layer(x), ref(x), rtol=0, atol=0)
    # with sign binarizers the padding mode applies to the binarized input
    layer.binarize_input = True
    layer.binarize_weight = True
    xs = F.pad(torch.sign(x), (1, 1, 1, 1), mode=padding_mode)
    w = alpha_ref(layer.weight.detach()) * torch.sign(layer.weight.detach())
    torch.testing.assert_close(layer(x), F.conv2d(xs, w, layer.bias), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    "switches",
    [dict(input_binarizer=None, weight_binarizer=None), dict(binarize_input=False, binarize_weight=False)],
    ids=["none", "off"],
)
def test_linear_identity_equals_nn_linear(bias, switches):
    ref = nn.Linear(5, 3, bias=bias, dtype=F64)
    layer = BinaryLinear(5, 3, bias=bias, dtype=F64, **switches)
    copy_params_(layer, ref)
    x = randn(4, 5, seed=6)
    g = randn(4, 3, seed=7)
    params_ref = [p for p in (ref.weight, ref.bias) if p is not None]
    params = [p for p in (layer.weight, layer.bias) if p is not None]
    y_ref, gx_ref, gp_ref = grads(ref, params_ref, x, g)
    y, gx, gp = grads(layer, params, x, g)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=0)
    for a, b in zip(gp, gp_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_binary_layers_subclass_float_layers_with_same_parameter_names():
    conv = BinaryConv2d(3, 4, 3, bias=True)
    lin = BinaryLinear(3, 4)
    assert isinstance(conv, nn.Conv2d) and isinstance(lin, nn.Linear)
    assert [n for n, _ in conv.named_parameters()] == [n for n, _ in nn.Conv2d(3, 4, 3).named_parameters()]
    assert [n for n, _ in lin.named_parameters()] == [n for n, _ in nn.Linear(3, 4).named_parameters()]
    assert is_binary_layer(conv) and is_binary_layer(lin) and not is_binary_layer(nn.Conv2d(3, 4, 3))
    assert "binarize_input=True" in repr(conv) and "binarize_weight=True" in repr(lin)


# -------------------------------------------------------------------------------------------- sign forward values
@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=CONV_IDS)
def test_conv_sign_binarizers_equal_sign_reference(cfg):
    ref, layer, x = make_pair(cfg)  # defaults: ste_sign input, scaled_sign weight
    w = layer.weight.detach()
    s, p, d, g = cfg[3], cfg[4], cfg[5], cfg[6]
    expected = F.conv2d(torch.sign(x), alpha_ref(w) * torch.sign(w), layer.bias, s, p, d, g)
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    # it is not the float conv (the test would be vacuous otherwise)
    assert not torch.allclose(layer(x), ref(x))


@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=CONV_IDS)
def test_conv_sign_identity_weights_equal_plain_sign_conv(cfg):
    _, layer, x = make_pair(cfg, weight_binarizer=SignIdentitySTE())
    w = layer.weight.detach()
    s, p, d, g = cfg[3], cfg[4], cfg[5], cfg[6]
    expected = F.conv2d(torch.sign(x), torch.sign(w), layer.bias, s, p, d, g)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)
    assert set(layer.binary_weight().detach().unique().tolist()) <= {-1.0, 0.0, 1.0}  # no alpha scale


def test_linear_sign_binarizers_equal_sign_reference():
    layer = BinaryLinear(6, 3, dtype=F64)
    with torch.no_grad():
        layer.weight.copy_(randn(3, 6, seed=8))
        layer.bias.copy_(randn(3, seed=9))
    x = randn(5, 6, seed=10)
    w = layer.weight.detach()
    expected = F.linear(torch.sign(x), alpha_ref(w) * torch.sign(w), layer.bias)
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    layer2 = BinaryLinear(6, 3, bias=False, dtype=F64, weight_binarizer="sign_identity_ste")
    copy_params_(layer2, nn.Linear(6, 3, bias=False, dtype=F64))
    w2 = layer2.weight.detach()
    torch.testing.assert_close(layer2(x), F.linear(torch.sign(x), torch.sign(w2)), rtol=0, atol=0)


def test_binary_weight_is_what_forward_uses():
    layer = BinaryConv2d(3, 4, 3, dtype=F64)
    with torch.no_grad():
        layer.weight.copy_(randn(4, 3, 3, 3, seed=11))
    w = layer.weight.detach()
    torch.testing.assert_close(layer.binary_weight().detach(), alpha_ref(w) * torch.sign(w), rtol=1e-15, atol=0)
    layer.binarize_weight = False
    assert layer.binary_weight() is layer.weight


# ------------------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("in_name", list(INPUT_REFS))
@pytest.mark.parametrize("w_name", list(WEIGHT_REFS))
def test_conv_gradients_match_detach_trick_reference(in_name, w_name):
    cfg = (4, 6, 3, 2, 1, 1, 2, True)
    wkw = {"temperature": 0.5} if w_name == "progressive_sign" else {}
    _, layer, x = make_pair(cfg, input_binarizer=in_name, weight_binarizer=BINARIZERS.build(w_name, **wkw).double())
    with torch.no_grad():
        layer.weight.mul_(1.2)  # some |W| > 1: the weight mask is not all ones
    w_leaf = layer.weight.detach().clone().requires_grad_(True)
    b_leaf = layer.bias.detach().clone().requires_grad_(True)

    def reference(xx):
        return F.conv2d(INPUT_REFS[in_name](xx), WEIGHT_REFS[w_name](w_leaf), b_leaf, 2, 1, 1, 2)

    g = randn(*layer(x).shape, seed=12)
    y, gx, (gw, gb) = grads(layer, [layer.weight, layer.bias], x, g)
    y_ref, gx_ref, (gw_ref, gb_ref) = grads(reference, [w_leaf, b_leaf], x, g)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gb, gb_ref, rtol=1e-10, atol=1e-12)


def test_conv_gradients_explicit_formula():
    # grad_x = conv_transpose(g, Wb) * 1[|x| <= 1];  grad_W = corr(sign(x), g) * 1[|W| <= 1] (no alpha factor)
    cfg = (3, 4, 3, 1, 1, 1, 1, False)
    _, layer, x = make_pair(cfg)
    with torch.no_grad():
        layer.weight.mul_(1.3)
    w = layer.weight.detach()
    g = randn(*layer(x).shape, seed=13)
    _, gx, (gw,) = grads(layer, [layer.weight], x, g)
    wb = alpha_ref(w) * torch.sign(w)
    mask_x = (x.abs() <= 1).to(F64)
    mask_w = (w.abs() <= 1).to(F64)
    assert 0 < mask_x.mean() < 1 and 0 < mask_w.mean() < 1  # both masks bite
    gx_expected = torch.nn.grad.conv2d_input(x.shape, wb, g, padding=1) * mask_x
    gw_expected = torch.nn.grad.conv2d_weight(torch.sign(x), w.shape, g, padding=1) * mask_w
    torch.testing.assert_close(gx, gx_expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gw, gw_expected, rtol=1e-10, atol=1e-12)


def test_linear_gradients_explicit_formula():
    layer = BinaryLinear(6, 3, dtype=F64, input_binarizer="approx_sign")
    with torch.no_grad():
        layer.weight.copy_(randn(3, 6, seed=14, scale=1.2))
    x = randn(5, 6, seed=15)
    g = randn(5, 3, seed=16)
    w = layer.weight.detach()
    _, gx, (gw, gb) = grads(layer, [layer.weight, layer.bias], x, g)
    wb = alpha_ref(w) * torch.sign(w)
    torch.testing.assert_close(gx, (g @ wb) * (2 - 2 * x.abs()).clamp_min(0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gw, (g.t() @ torch.sign(x)) * (w.abs() <= 1), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gb, g.sum(0), rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------------------------------------- padding
def test_pad_value_zero_border_by_hand():
    # 1->1 channel, 3x3 all-ones weight (sign 1, identity STE), all-positive 3x3 input (sign 1), padding 1.
    # Center output: 9 taps of 1*1 = 9. Corner: 4 in-bounds taps + 5 padded taps.
    # pad 0 -> 4 + 5*0 = 4; pad -1 -> 4 - 5 = -1; pad +1 -> 4 + 5 = 9. Edge (non-corner): 6 in + 3 padded.
    x = torch.full((1, 1, 3, 3), 0.7, dtype=F64)
    expected = {0.0: (4.0, 6.0), -1.0: (-1.0, 3.0), 1.0: (9.0, 9.0)}
    for pad_value, (corner, edge) in expected.items():
        layer = BinaryConv2d(1, 1, 3, padding=1, dtype=F64, weight_binarizer="sign_identity_ste", pad_value=pad_value)
        with torch.no_grad():
            layer.weight.fill_(0.3)
        y = layer(x).detach()
        assert y.shape == (1, 1, 3, 3)
        assert float(y[0, 0, 1, 1]) == 9.0
        assert float(y[0, 0, 0, 0]) == corner and float(y[0, 0, 2, 2]) == corner
        assert float(y[0, 0, 0, 1]) == edge and float(y[0, 0, 1, 0]) == edge


def test_pad_value_zero_pads_binarized_input_not_raw_input():
    # pad 0 of the binarized input: equal to F.pad(sign(x), 0) then an unpadded conv
    layer = BinaryConv2d(2, 3, 3, padding=1, dtype=F64)
    with torch.no_grad():
        layer.weight.copy_(randn(3, 2, 3, 3, seed=17))
    x = randn(1, 2, 4, 5, seed=18)
    w = layer.weight.detach()
    wb = alpha_ref(w) * torch.sign(w)
    torch.testing.assert_close(layer(x), F.conv2d(F.pad(torch.sign(x), (1, 1, 1, 1)), wb), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pad_value", [-1.0, 1.0])
@pytest.mark.parametrize(
    "geom", [dict(padding=1), dict(padding=(1, 2), stride=2), dict(padding=2, dilation=2, groups=2)], ids=str
)
def test_pad_value_equals_fpad_then_unpadded_conv(pad_value, geom):
    geom = dict(geom)
    padding = geom.pop("padding")
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    layer = BinaryConv2d(2, 4, 3, padding=padding, bias=True, dtype=F64, pad_value=pad_value, **geom)
    with torch.no_grad():
        layer.weight.copy_(randn(*layer.weight.shape, seed=19))
        layer.bias.copy_(randn(4, seed=20))
    x = randn(2, 2, 6, 7, seed=21)
    w = layer.weight.detach()
    xp = F.pad(torch.sign(x), (pw, pw, ph, ph), value=pad_value)
    expected = F.conv2d(
        xp,
        alpha_ref(w) * torch.sign(w),
        layer.bias,
        geom.get("stride", 1),
        0,
        geom.get("dilation", 1),
        geom.get("groups", 1),
    )
    y = layer(x)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    # and it differs from the zero-padded (official) result
    layer.pad_value = 0.0
    assert not torch.allclose(layer(x), y)


def test_pad_value_input_gradient_ignores_padding():
    # padded constants carry no gradient; grad_x equals the reference through F.pad
    layer = BinaryConv2d(2, 3, 3, padding=1, dtype=F64, pad_value=-1.0)
    with torch.no_grad():
        layer.weight.copy_(randn(3, 2, 3, 3, seed=22))
    x = randn(1, 2, 4, 4, seed=23)
    w_leaf = layer.weight.detach().clone().requires_grad_(True)
    g = randn(1, 3, 4, 4, seed=24)
    _, gx, (gw,) = grads(layer, [layer.weight], x, g)
    _, gx_ref, (gw_ref,) = grads(
        lambda t: F.conv2d(F.pad(ste_ref(t), (1, 1, 1, 1), value=-1.0), scaled_ref(w_leaf)), [w_leaf], x, g
    )
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-12, atol=1e-12)


def test_pad_value_argument_validation():
    with pytest.raises(ValueError):
        BinaryConv2d(2, 2, 3, padding=1, padding_mode="reflect", pad_value=-1.0)
    with pytest.raises(ValueError):
        BinaryConv2d(2, 2, 3, padding="same", pad_value=1.0)
    BinaryConv2d(2, 2, 3, padding="same", pad_value=0.0)  # the default is fine with string padding
    assert "pad_value=-1.0" in repr(BinaryConv2d(2, 2, 3, padding=1, pad_value=-1.0))


# ---------------------------------------------------------------------------------------------------- latent clip
def _big_weight_layer(**kw) -> BinaryConv2d:
    layer = BinaryConv2d(1, 2, 1, dtype=F64, weight_binarizer="sign_identity_ste", **kw)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([3.0, -0.5], dtype=F64).view(2, 1, 1, 1))
    return layer


def test_latent_clip_train_only():
    layer = _big_weight_layer(latent_clip=1.5)
    assert layer.latent_clip_when == "train"
    x = randn(1, 1, 2, 2, seed=25)
    layer.eval()
    layer(x)
    assert float(layer.weight.detach()[0]) == 3.0  # eval: untouched
    layer.train()
    layer(x)
    assert layer.weight.flatten().tolist() == [1.5, -0.5]  # train: clamped in place before the forward
    assert isinstance(layer.weight, nn.Parameter) and layer.weight.requires_grad


def test_latent_clip_always():
    layer = _big_weight_layer(latent_clip=1.0, latent_clip_when="always")
    layer.eval()
    layer(randn(1, 1, 2, 2, seed=26))
    assert layer.weight.flatten().tolist() == [1.0, -0.5]


def test_latent_clip_none_never_clamps():
    layer = _big_weight_layer()
    layer.train()
    layer(randn(1, 1, 2, 2, seed=27))
    assert float(layer.weight.detach()[0]) == 3.0


def test_latent_clip_train_backward_still_works():
    layer = _big_weight_layer(latent_clip=1.5)
    layer.train()
    x = randn(1, 1, 2, 2, seed=28, scale=0.5)
    layer(x).sum().backward()
    # identity STE on the weights: dL/dW_o = sum of sign(x) over the positions of output channel o
    expected = torch.sign(x).sum().expand(2).reshape(2, 1, 1, 1)
    torch.testing.assert_close(layer.weight.grad, expected, rtol=0, atol=0)


def test_latent_clip_when_validated():
    with pytest.raises(ValueError, match="latent_clip_when"):
        BinaryConv2d(1, 1, 1, latent_clip=1.5, latent_clip_when="eval")
    with pytest.raises(ValueError, match="latent_clip_when"):
        BinaryLinear(1, 1, latent_clip=1.5, latent_clip_when="sometimes")


def test_latent_clip_linear():
    layer = BinaryLinear(2, 1, bias=False, dtype=F64, latent_clip=1.5)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-4.0, 0.2]], dtype=F64))
    layer.train()
    layer(randn(1, 2, seed=29))
    assert layer.weight.flatten().tolist() == [-1.5, 0.2]


# ------------------------------------------------------------------------------------------------ stage switches
def _two_layer_model():
    torch.manual_seed(0)
    return nn.Sequential(
        BinaryConv2d(2, 3, 3, padding=1, dtype=F64),
        nn.ReLU(),
        BinaryConv2d(3, 3, 1, dtype=F64, input_binarizer="approx_sign"),
        nn.Conv2d(3, 2, 1, dtype=F64),
    )


def test_set_binarization_switches_and_count():
    model = _two_layer_model()
    conv = model[0]
    x = randn(1, 2, 4, 4, seed=30)
    w = conv.weight.detach()
    wb = alpha_ref(w) * torch.sign(w)

    assert set_binarization(model, activations=True, weights=False) == 2  # only the two binary layers count
    assert all(m.binarize_input and not m.binarize_weight for _, m in binary_layers(model))
    torch.testing.assert_close(conv(x), F.conv2d(torch.sign(x), w, padding=1), rtol=1e-12, atol=1e-12)

    assert set_binarization(model, activations=False, weights=True) == 2
    torch.testing.assert_close(conv(x), F.conv2d(x, wb, padding=1), rtol=1e-12, atol=1e-12)

    assert set_binarization(model, activations=True) == 2  # weights=None leaves weights on
    assert all(m.binarize_input and m.binarize_weight for _, m in binary_layers(model))
    torch.testing.assert_close(conv(x), F.conv2d(torch.sign(x), wb, padding=1), rtol=1e-12, atol=1e-12)

    assert set_binarization(model, activations=False, weights=False) == 2
    torch.testing.assert_close(conv(x), F.conv2d(x, w, padding=1), rtol=0, atol=0)

    assert set_binarization(model) == 2  # nothing changed
    assert all(not m.binarize_input and not m.binarize_weight for _, m in binary_layers(model))
    assert set_binarization(nn.Sequential(nn.Conv2d(1, 1, 1)), activations=True) == 0


def test_binary_layers_lists_names_in_order():
    model = _two_layer_model()
    assert [n for n, _ in binary_layers(model)] == ["0", "2"]


# ------------------------------------------------------------------------------------------------------- binarize_
def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            stem=nn.Conv2d(3, 8, 3, padding=1, bias=False),
            bn0=nn.BatchNorm2d(8),
            features=nn.Sequential(
                nn.Conv2d(8, 8, 3, padding=1, bias=False),
                nn.BatchNorm2d(8),
                nn.ReLU(),
                nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2, bias=True),
                nn.BatchNorm2d(8),
            ),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            fc1=nn.Linear(8, 8),
            head=nn.Linear(8, 5),
        )
    ).double()


def test_binarize_default_keeps_first_conv_and_last_linear():
    model = small_cnn()
    originals = {
        n: (m.weight.detach().clone(), None if m.bias is None else m.bias.detach().clone())
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }
    model.eval()
    report = binarize_(model)
    assert report == {"binarized": ["features.0", "features.3", "fc1"], "kept": ["stem", "head"]}
    assert type(model.stem) is nn.Conv2d and type(model.head) is nn.Linear
    assert isinstance(model.features[0], BinaryConv2d) and isinstance(model.features[3], BinaryConv2d)
    assert isinstance(model.fc1, BinaryLinear)
    for name, (w, b) in originals.items():
        m = model.get_submodule(name)
        assert torch.equal(m.weight.detach(), w), name
        assert (m.bias is None) == (b is None)
        if b is not None:
            assert torch.equal(m.bias.detach(), b)
        assert m.weight.dtype == F64
        assert not m.training  # mode carried over
    conv = model.features[3]
    assert (conv.stride, conv.padding, conv.groups, conv.in_channels) == ((2, 2), (1, 1), 2, 8)
    assert conv.binarize_input and conv.binarize_weight and conv.pad_value == 0.0
    # defaults: ste_sign input, scaled_sign weight
    assert type(conv.input_binarizer) is BINARIZERS.get("ste_sign")
    assert type(conv.weight_binarizer) is BINARIZERS.get("scaled_sign")
    assert model(randn(2, 3, 6, 6, seed=31)).shape == (2, 5)


def test_binarize_with_switches_off_keeps_output():
    model = small_cnn()
    with torch.no_grad():  # non-trivial BN statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(randn(8, seed=32) * 0.1)
                m.running_var.copy_(randn(8, seed=33).abs() + 0.5)
    model.eval()
    x = randn(2, 3, 6, 6, seed=34)
    before = model(x)
    report = binarize_(model, BinarizeConfig(binarize_input=False, binarize_weight=False))
    assert len(report["binarized"]) == 3
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    # switching binarization on changes the output (so the equality above is not vacuous)
    set_binarization(model, activations=True, weights=True)
    assert not torch.allclose(model(x), before)


def test_binarize_include_exclude_patterns():
    model = small_cnn()
    report = binarize_(model, BinarizeConfig(include=["features.*"]))
    assert report["binarized"] == ["features.0", "features.3"]
    assert sorted(report["kept"]) == ["fc1", "head", "stem"]
    assert type(model.fc1) is nn.Linear

    model = small_cnn()
    report = binarize_(model, BinarizeConfig(exclude=["features.3", "fc*"]))
    assert report["binarized"] == ["features.0"]
    assert type(model.features[3]) is nn.Conv2d

    # include does not override skip_first/skip_last; exclude wins over include
    model = small_cnn()
    report = binarize_(model, BinarizeConfig(include=["stem", "features.0", "head"], exclude=["features.0"]))
    assert report["binarized"] == []
    assert sorted(report["kept"]) == ["fc1", "features.0", "features.3", "head", "stem"]


def test_binarize_skip_flags_linear_flag_and_options():
    model = small_cnn()
    cfg = BinarizeConfig(
        skip_first=False,
        skip_last=False,
        input_binarizer="approx_sign",
        weight_binarizer="sign_identity_ste",
        pad_value=-1.0,
    )
    report = binarize_(model, cfg)
    assert report == {"binarized": ["stem", "features.0", "features.3", "fc1", "head"], "kept": []}
    assert type(model.stem.input_binarizer) is BINARIZERS.get("approx_sign")
    assert type(model.head.weight_binarizer) is BINARIZERS.get("sign_identity_ste")
    assert model.features[0].pad_value == -1.0

    model = small_cnn()
    report = binarize_(model, BinarizeConfig(linear=False, skip_last=False))
    assert report["binarized"] == ["features.0", "features.3"]
    assert type(model.fc1) is nn.Linear and type(model.head) is nn.Linear
    assert "fc1" not in report["kept"]  # not a candidate at all


def test_binarize_linear_false_still_binarizes_last_conv():
    model = small_cnn()
    report = binarize_(model, BinarizeConfig(linear=False))
    assert report["binarized"] == ["features.0", "features.3"]


def test_binarize_is_idempotent_and_validates_names():
    model = small_cnn()
    binarize_(model)
    second = binarize_(model)
    assert second == {"binarized": [], "kept": ["stem", "head"]}
    assert sum(1 for _ in binary_layers(model)) == 3
    with pytest.raises(KeyError, match="did you mean"):
        BinarizeConfig(input_binarizer="ste_sgn")
    with pytest.raises(KeyError):
        BinarizeConfig(weight_binarizer="nope")


def test_binarize_conv_only_model_skips_last_conv():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3), nn.Conv2d(2, 2, 3))
    assert binarize_(model) == {"binarized": ["1"], "kept": ["0", "2"]}


# --------------------------------------------------------------------------------------------- real-valued helpers
def test_learnable_bias():
    lb = LearnableBias(3).double()
    assert lb.bias.shape == (1, 3, 1, 1) and torch.equal(lb.bias, torch.zeros_like(lb.bias))
    assert list(lb.state_dict()) == ["bias"]
    with torch.no_grad():
        lb.bias.copy_(torch.tensor([1.0, -2.0, 0.5], dtype=F64).view(1, 3, 1, 1))
    x4 = randn(2, 3, 2, 2, seed=35)
    y4 = lb(x4)
    for c, b in enumerate([1.0, -2.0, 0.5]):
        assert torch.equal(y4[:, c], x4[:, c] + b)
    x2 = randn(4, 3, seed=36)
    torch.testing.assert_close(lb(x2), x2 + torch.tensor([1.0, -2.0, 0.5], dtype=F64), rtol=0, atol=0)
    x3 = randn(2, 3, 5, seed=37)
    torch.testing.assert_close(lb(x3), x3 + torch.tensor([1.0, -2.0, 0.5], dtype=F64).view(1, 3, 1), rtol=0, atol=0)
    lb(x4).sum().backward()
    assert torch.equal(lb.bias.grad.flatten(), torch.full((3,), float(x4[:, 0].numel()), dtype=F64))


def test_rprelu_formula():
    m = RPReLU(3).double()
    assert torch.equal(m.prelu.weight, torch.full((3,), 0.25, dtype=F64))  # PyTorch PReLU default init
    assert set(m.state_dict()) == {"shift_in.bias", "prelu.weight", "shift_out.bias"}
    b1 = torch.tensor([0.5, -1.0, 0.0], dtype=F64)
    a = torch.tensor([0.25, 0.1, -0.3], dtype=F64)
    b2 = torch.tensor([-0.2, 0.3, 1.0], dtype=F64)
    with torch.no_grad():
        m.shift_in.bias.copy_(b1.view(1, 3, 1, 1))
        m.prelu.weight.copy_(a)
        m.shift_out.bias.copy_(b2.view(1, 3, 1, 1))
    x = randn(2, 3, 3, 3, seed=38)
    y = x + b1.view(1, 3, 1, 1)
    expected = torch.where(y >= 0, y, a.view(1, 3, 1, 1) * y) + b2.view(1, 3, 1, 1)
    torch.testing.assert_close(m(x), expected, rtol=0, atol=0)
    assert not torch.equal(m(x), x)
    assert RPReLU(2, init=0.1).prelu.weight.tolist() == pytest.approx([0.1, 0.1])


# --------------------------------------------------------------------------------------------------- state_dict
BUFFERS = {"bnext_sign": ["temperature"], "progressive_sign": ["temperature"]}


@pytest.mark.parametrize("in_name", BINARIZERS.list())
@pytest.mark.parametrize("w_name", BINARIZERS.list())
def test_state_dict_keys_equal_nn_conv_plus_binarizer_buffers(in_name, w_name):
    layer = BinaryConv2d(2, 3, 3, bias=True, input_binarizer=in_name, weight_binarizer=w_name)
    expected = set(nn.Conv2d(2, 3, 3).state_dict())
    expected |= {f"input_binarizer.{b}" for b in BUFFERS.get(in_name, [])}
    expected |= {f"weight_binarizer.{b}" for b in BUFFERS.get(w_name, [])}
    assert set(layer.state_dict()) == expected


def test_state_dict_roundtrip_with_nn_conv():
    ref = nn.Conv2d(2, 3, 3, bias=True)
    layer = BinaryConv2d(2, 3, 3, bias=True)
    assert list(layer.state_dict()) == list(ref.state_dict())
    layer.load_state_dict(ref.state_dict(), strict=True)
    assert torch.equal(layer.weight, ref.weight) and torch.equal(layer.bias, ref.bias)
    ref.load_state_dict(layer.state_dict(), strict=True)
    lin = BinaryLinear(4, 2)
    assert list(lin.state_dict()) == list(nn.Linear(4, 2).state_dict())


def test_temperature_buffers_in_layers_follow_set_temperature():
    layer = BinaryConv2d(2, 3, 3, dtype=F64, input_binarizer=HardSign(), weight_binarizer=ProgressiveSign())
    assert set_temperature(nn.Sequential(layer), 0.5) == 2
    assert float(layer.state_dict()["weight_binarizer.temperature"]) == 0.5
    assert float(layer.state_dict()["input_binarizer.temperature"]) == 0.5
    x = randn(1, 2, 4, 4, seed=39)
    w = layer.weight.detach()
    torch.testing.assert_close(layer(x), F.conv2d(torch.sign(x), (w / 0.5).clamp(-1, 1)), rtol=1e-12, atol=1e-12)

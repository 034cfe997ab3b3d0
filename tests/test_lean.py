"""The lean training path (onebit.layers.fused) against the module path and the official-arithmetic reference path."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import onebit
from onebit.binarize import set_temperature
from onebit.layers import BinaryConv2d, BinaryLinear, LearnableBias, set_training_path, shift_and_conv
from onebit.layers.fused import lean_spec
from onebit.models.bnext import BNext, BNext18
from onebit.models.reactnet import ReActNet
from onebit.models.resnet import REACTNET_RESNET18, BinaryResNet

F64 = torch.float64


def _saved(fn) -> list[torch.Tensor]:
    """Tensors autograd saves while ``fn()`` runs, each storage once."""
    got: dict[int, torch.Tensor] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        got.setdefault(t.untyped_storage().data_ptr(), t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, list(got.values())


def _step(model, x: torch.Tensor, path: str, autocast: bool = False):
    """Forward + backward of a fixed loss on ``path``; returns (output, {name: grad})."""
    set_training_path(model, path)
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(x)
    out.float().square().sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_grads_close(a: dict, b: dict, rtol: float, atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=lambda m, k=k: f"{k}: {m}")


#: Narrow versions of the registered models (same classes and blocks: stride-2 and width-doubling blocks, ELM and
#: Info-RCP processors, Bi-Real units), so that the default suite stays fast; the full sizes run under ``slow``.
SMALL = {
    "reactnet_a": lambda: ReActNet((8, 16, 32, 32, 64, 64), num_classes=10),
    "bnext_tiny": lambda: BNext((8, 16, 32, 32, 64, 64, 64), num_classes=10),
    "bnext_18": lambda: BNext18(num_classes=10, widths=(8, 16, 16, 32)),
    "reactnet_resnet18": lambda: BinaryResNet(replace(REACTNET_RESNET18, widths=(8, 16, 16, 32)), num_classes=10),
}


def _model(name: str, dtype=F64, full: bool = False):
    torch.manual_seed(0)
    model = onebit.create_model(name, num_classes=10) if full else SMALL[name]()
    return model.to(dtype).train()


def _x(dtype=F64, size: int = 32) -> torch.Tensor:
    return torch.randn(2, 3, size, size, dtype=dtype, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------------------------------------------------- models
def _three_paths(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step on the module, lean and reference paths: the lean forward equals the module's bitwise, its gradients
    equal both others' in float64. Returns the lean and reference outputs."""
    out_m, g_m = _step(model, x, "module")
    out_l, g_l = _step(model, x, "lean")
    out_r, g_r = _step(model, x, "reference")
    assert torch.equal(out_l, out_m)  # the forward must not change at all
    _assert_grads_close(g_l, g_m, rtol=1e-10, atol=1e-12)
    _assert_grads_close(g_l, g_r, rtol=1e-10, atol=1e-12)
    return out_l, out_r


def _model_paths(name: str, full: bool) -> None:
    out_l, out_r = _three_paths(_model(name, full=full), _x())
    if name == "bnext_tiny":
        assert torch.equal(out_r, out_l)  # HardSign's and (at T = 1) the weight's detach trick are exact
    else:
        # alpha * sign(W) - clip(W) + clip(W) and the nested means of the official code round differently
        torch.testing.assert_close(out_r, out_l, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["reactnet_a", "bnext_tiny", "reactnet_resnet18"])
def test_lean_equals_module_and_reference_float64(name):
    _model_paths(name, full=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["reactnet_a", "bnext_tiny"])
def test_lean_equals_module_and_reference_full_size(name):
    _model_paths(name, full=True)


@pytest.mark.parametrize("name", ["reactnet_a", "bnext_tiny"])
def test_lean_forward_bit_identical_float32(name):
    model, x = _model(name, torch.float32), _x(torch.float32)
    out_m, g_m = _step(model, x, "module")
    out_l, g_l = _step(model, x, "lean")
    assert torch.equal(out_l, out_m)
    # float32 backward: the fused BNext chain (onebit.layers.fused_bnext) sums in another order than autograd, and
    # float32 gradients of a deep BNN carry errors of 1e-3 relative to float64 on either path. So the lean gradients
    # are held to the float64 ones no less accurately than the module path's.
    _, g_t = _step(_model(name), x.double(), "module")
    assert g_l.keys() == g_t.keys()
    for k, truth in g_t.items():
        scale = float(truth.abs().max())
        err_l = float((g_l[k].double() - truth).abs().max())
        err_m = float((g_m[k].double() - truth).abs().max())
        assert err_l <= 3 * err_m + 1e-5 * scale + 1e-12, (k, err_l, err_m, scale)


@pytest.mark.parametrize("temperature", [0.3, 1e-9])
def test_bnext_temperature_schedule(temperature):
    """Progressive clamp(W / T) in the middle of the schedule, the hard sign below the threshold (BNext-18: 1e-5)."""
    model, x = _model("bnext_18"), _x()
    assert set_temperature(model, temperature) > 0
    out_l, out_r = _three_paths(model, x)
    torch.testing.assert_close(out_r, out_l, rtol=1e-12, atol=1e-14)  # clamp(W/T) - W + W may round at T < 1


def test_channels_last_same_results():
    model, x = _model("bnext_18"), _x()
    out, grads = _step(model, x, "lean")
    model = model.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    out_m, g_m = _step(model, x_cl, "module")
    out_l, g_l = _step(model, x_cl, "lean")
    assert torch.equal(out_l, out_m)
    _assert_grads_close(g_l, g_m, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out_l, out, rtol=1e-12, atol=1e-12)
    _assert_grads_close(g_l, grads, rtol=1e-10, atol=1e-12)


def test_bf16_autocast_runs_and_is_close():
    """Model: lean and module paths agree under autocast (a whole binary net in bf16 flips signs, so it is not
    compared with float32). Layer: the bf16 conv of exact signs is close to the float32 one."""
    model, x = _model("reactnet_resnet18", torch.float32), _x(torch.float32)
    out_m, g_m = _step(model, x, "module", autocast=True)
    out_l, g_l = _step(model, x, "lean", autocast=True)
    assert out_l.dtype == torch.bfloat16
    assert torch.equal(out_l, out_m)  # the conv runs in bf16 on both paths, on the same operands
    _assert_grads_close(g_l, g_m, rtol=2e-2, atol=1e-2)
    conv, shift = _conv("bnext_sign", "progressive_sign").float(), LearnableBias(4)
    xs = torch.randn(2, 4, 8, 8)
    out32 = shift_and_conv(conv, shift, xs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out16 = shift_and_conv(conv, shift, xs)
    assert out16.dtype == torch.bfloat16
    torch.testing.assert_close(out16.float(), out32, rtol=2e-2, atol=2e-2 * float(out32.detach().abs().max()))


# ---------------------------------------------------------------------------------------------------------- memory
def _conv(input_binarizer, weight_binarizer="scaled_sign", **kw) -> BinaryConv2d:
    torch.manual_seed(0)
    return BinaryConv2d(
        4, 6, 3, padding=1, input_binarizer=input_binarizer, weight_binarizer=weight_binarizer, **kw
    ).double()


def test_saved_tensors_are_int8_signs_not_float_copies():
    conv, shift = _conv("bnext_sign"), LearnableBias(4).double()
    x = torch.randn(2, 4, 8, 8, dtype=F64, requires_grad=True)
    own = {p.untyped_storage().data_ptr() for p in (*conv.parameters(), *shift.parameters())}

    def activations(saved):
        return [t for t in saved if t.untyped_storage().data_ptr() not in own]

    set_training_path(conv, "lean")
    _, saved = _saved(lambda: shift_and_conv(conv, shift, x))
    acts = activations(saved)
    assert [t.dtype for t in acts] == [torch.int8] and acts[0].shape == x.shape  # one byte per element, no float
    set_training_path(conv, "reference")
    _, saved = _saved(lambda: shift_and_conv(conv, shift, x))
    floats = [t for t in activations(saved) if t.is_floating_point() and t.numel() == x.numel()]
    assert len(floats) >= 2  # the clamp's input and the conv's float sign


def test_approx_sign_saves_only_the_pre_shift_input():
    conv, shift = _conv("approx_sign"), LearnableBias(4).double()
    x = torch.randn(2, 4, 8, 8, dtype=F64, requires_grad=True)
    own = {p.untyped_storage().data_ptr() for p in (*conv.parameters(), *shift.parameters())}
    _, saved = _saved(lambda: shift_and_conv(conv, shift, x))
    acts = [t for t in saved if t.untyped_storage().data_ptr() not in own]
    assert len(acts) == 1 and acts[0].untyped_storage().data_ptr() == x.untyped_storage().data_ptr()


def test_model_saves_far_less_than_reference():
    model, x = _model("reactnet_a", torch.float32), _x(torch.float32, 64)
    own = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}

    def nbytes(path):
        set_training_path(model, path)
        _, saved = _saved(lambda: model(x))
        return sum(t.untyped_storage().nbytes() for t in saved if t.untyped_storage().data_ptr() not in own)

    lean, ref = nbytes("lean"), nbytes("reference")
    assert lean < 0.35 * ref, (lean, ref)  # the reference saves one float sign per widening block, as official


# ------------------------------------------------------------------------------------------ every binarizer variant
INPUTS = [
    ("ste_sign", {}),
    ("ste_sign", {"clip": None}),
    ("bnext_sign", {}),
    ("approx_sign", {}),
    ("ste_sign", {"zero": 1.0}),
]
WEIGHTS = [
    ("scaled_sign", {}),
    ("progressive_sign", {"temperature": 1.0}),
    ("progressive_sign", {"temperature": 0.25}),
    ("progressive_sign", {"temperature": 1e-9}),
    ("ste_sign", {}),
    ("sign_identity_ste", {}),
    ("identity", {}),
]


@pytest.mark.parametrize("weight", WEIGHTS, ids=lambda w: f"{w[0]}{w[1]}")
@pytest.mark.parametrize("inp", INPUTS, ids=lambda i: f"{i[0]}{i[1]}")
def test_layer_variants_lean_vs_module_vs_reference(inp, weight):
    from onebit.binarize import build_binarizer

    torch.manual_seed(0)
    conv = BinaryConv2d(
        4,
        6,
        3,
        stride=2,
        padding=1,
        groups=2,
        bias=True,
        input_binarizer=build_binarizer(inp[0], **inp[1]),
        weight_binarizer=build_binarizer(weight[0], **weight[1]),
        latent_clip=1.5,
    ).double()
    shift = LearnableBias(4).double()
    with torch.no_grad():
        shift.bias.normal_()
        conv.weight.mul_(4)  # some latent weights outside the clip windows
    x = torch.randn(2, 4, 9, 9, dtype=F64) * 2
    x[0, :, :2] = -shift.bias.detach().view(1, 4, 1, 1)  # exact zeros after the shift: sign(0) = zero
    assert lean_spec(conv) is not None
    results = {}
    for path in ("module", "lean", "reference"):
        set_training_path(conv, path)
        xi = x.clone().requires_grad_(True)
        conv.zero_grad(set_to_none=True)
        shift.zero_grad(set_to_none=True)
        out = shift_and_conv(conv, shift, xi)
        (out * torch.linspace(-1, 1, out.numel(), dtype=F64).view_as(out)).sum().backward()
        results[path] = (out.detach(), xi.grad, shift.bias.grad, conv.weight.grad, conv.bias.grad)
    assert torch.equal(results["lean"][0], results["module"][0])
    for other in ("module", "reference"):
        for a, b in zip(results["lean"][1:], results[other][1:]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(results["reference"][0], results["lean"][0], rtol=1e-12, atol=1e-12)


def test_real_weights_stage_and_float_input_fallback():
    conv = _conv("approx_sign", binarize_weight=False)
    assert lean_spec(conv).weight_kind == "float"
    conv.binarize_input = False  # a stage with real activations: nothing to fuse, the module path runs
    assert lean_spec(conv) is None
    assert lean_spec(_conv("ste_sign", pad_value=-1.0)) is None


# ------------------------------------------------------------------------------------------------------- switches
def test_set_training_path_counts_and_validates():
    model = _model("reactnet_resnet18")
    assert set_training_path(model, "reference") == 16  # 4 stages x 4 Bi-Real units
    assert {m.training_path for m in model.modules() if hasattr(m, "training_path")} == {"reference"}
    with pytest.raises(ValueError, match="training path must be one of"):
        set_training_path(model, "fast")
    assert BinaryConv2d(2, 2, 3).training_path == "lean"  # the default of new layers


def test_hooks_keep_seeing_the_shifted_input():
    """A pre-hook on the conv (DynamicsTracker's saturation count) sees move11(x), so the shift is not fused; a hook
    on the input binarizer (analysis capture) makes the layer run its binarizer modules."""
    from onebit.models.reactnet import ReActBlock

    torch.manual_seed(0)
    block = ReActBlock(8, 8).double().train()
    with torch.no_grad():
        block.move11.bias.normal_()
    x = torch.randn(2, 8, 6, 6, dtype=F64)
    plain = block(x)
    seen, called = [], []
    h1 = block.binary_3x3.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    h2 = block.binary_pw.input_binarizer.register_forward_pre_hook(lambda m, a: called.append(True))
    hooked = block(x)
    h1.remove()
    h2.remove()
    assert torch.equal(seen[0], block.move11(x))
    assert called == [True]
    assert torch.equal(hooked, plain)


def test_binary_linear_reference_path():
    torch.manual_seed(0)
    lin = BinaryLinear(5, 3, input_binarizer="approx_sign").double()
    x = torch.randn(4, 5, dtype=F64)
    outs = {}
    for path in ("lean", "reference"):
        set_training_path(lin, path)
        lin.zero_grad(set_to_none=True)
        outs[path] = lin(x)
        outs[path].sum().backward()
        outs[path] = (outs[path].detach(), lin.weight.grad.clone())
    torch.testing.assert_close(outs["lean"], outs["reference"], rtol=1e-12, atol=1e-12)


def test_no_grad_and_eval_use_the_module_path():
    model, x = _model("bnext_tiny"), _x()
    with torch.no_grad():
        a = model(x)
    b = model(x)
    assert torch.equal(a, b.detach())
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()
    assert F.cross_entropy(b, torch.zeros(2, dtype=torch.long)).isfinite()


# ------------------------------------------------------------------------------------- GEMM weight gradient (CPU)
@pytest.mark.parametrize("name", ["reactnet_a", "bnext_tiny", "bnext_18"])
def test_gemm_weight_grad_models_float64(name, monkeypatch):
    """Every k x k binary conv of the narrow models through the im2col + GEMM weight gradient: the three paths agree."""
    import onebit.layers.fused as fused

    monkeypatch.setattr(fused, "GEMM_WEIGHT_GRAD_MIN_TAPS", 1)
    _three_paths(_model(name), _x())


@pytest.mark.parametrize("input_binarizer", ["ste_sign", "approx_sign"])
@pytest.mark.parametrize(
    ("cin", "k", "stride", "padding", "size"),
    [(256, 3, 1, 1, 6), (256, 3, 2, 1, 7), (64, 5, 2, 2, (9, 6)), (300, 3, 1, 0, 5)],
)
def test_gemm_weight_grad_layer_float64(input_binarizer, cin, k, stride, padding, size, monkeypatch):
    """One conv above (and, patched, below) the GEMM threshold: strides, paddings, odd and non-square sizes, a shift
    and a bias, against the module path's autograd (float64)."""
    import onebit.layers.fused as fused

    monkeypatch.setattr(fused, "GEMM_WEIGHT_GRAD_MIN_TAPS", 64)
    torch.manual_seed(0)
    conv = BinaryConv2d(cin, 24, k, stride, padding, bias=True, input_binarizer=input_binarizer).to(F64)
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.randn(3, cin, h, w, dtype=F64) * 1.5
    shift = (torch.randn(1, cin, 1, 1, dtype=F64) * 0.1).requires_grad_()
    assert fused._gemm_weight_grad_ok(x, conv.weight, lean_spec(conv), F64)
    grads = {}
    for path in ("lean", "module"):
        conv.training_path = path
        xx = x.clone().requires_grad_()
        out = conv(xx, shift=shift)
        out.square().sum().backward(inputs=[xx, shift, conv.weight, conv.bias])
        grads[path] = [xx.grad, shift.grad.clone(), conv.weight.grad, conv.bias.grad]
        shift.grad = conv.weight.grad = conv.bias.grad = None
    for a, b in zip(grads["lean"], grads["module"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)

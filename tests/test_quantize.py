"""Post-training quantisation (onebit.quantize), the quantised BNext (onebit.models.bnext_quant), `onebit quantize`."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onebit.analysis.complexity import quantized_size_mib
from onebit.cli import main
from onebit.config import DataConfig
from onebit.data import build_data, load_digits_tensors
from onebit.layers import BinaryConv2d
from onebit.layers.convert import set_binarization
from onebit.models import create_model, export_official, load_official
from onebit.models.bnext import BNext, ELMAttention, InfoRCP, SqueezeExpand
from onebit.models.bnext_quant import bnext_quant
from onebit.models.io import load_model, save_model_dir
from onebit.models.official import official_keys
from onebit.quantize import (
    DEFAULT_BITS,
    QuantConfig,
    QuantConv2d,
    QuantLinear,
    asym_quantize,
    calibrate,
    finetune,
    quant_layers,
    quantize_,
)
from onebit.train.loop import evaluate

SMALL = (8, 16, 32, 32, 64, 64)  # bnext_digits widths: stem, then blocks (two stride-2 ELM blocks)


# --------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def digits():
    xt, yt, xv, yv = load_digits_tensors(16)
    return xt, yt, xv, yv


@pytest.fixture(scope="module")
def trained(digits):
    """bnext_digits after 10 training steps: weights and BN statistics away from their initial values (kept short:
    a test suite on 2 cores, not an accuracy target)."""
    torch.manual_seed(0)
    xt, yt, _, _ = digits
    model = create_model("bnext_digits")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for i in range(0, 320, 32):
        loss = F.cross_entropy(model(xt[i : i + 32]), yt[i : i + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _copy(model: nn.Module) -> nn.Module:
    new = create_model(model.onebit_spec["name"], **model.onebit_spec["kwargs"])
    new.load_state_dict(model.state_dict())
    return new.eval()


def _loader(x, y, batch=64):
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(y), batch)]


# ----------------------------------------------------------------------------------------------- the quantiser
def test_level_formula_by_hand():
    v = [0.0, 0.1, 0.5, 0.74, 1.0, -0.3]
    for bits in (2, 3, 8):
        levels = 2**bits - 1
        mn, mx = min(v), max(v)
        d = (mx - mn) + 1e-8
        expected = [round((x - mn) / d * levels) / levels * d + mn for x in v]  # Python round: half to even
        got = asym_quantize(torch.tensor([v], dtype=torch.float64), bits, dims=1)[0]
        assert got.tolist() == expected
    # a constant group quantises to itself (the 1e-8 keeps the denominator non-zero)
    const = torch.full((1, 5), 0.25, dtype=torch.float64)
    assert torch.equal(asym_quantize(const, 4, dims=1), const)


def _ref_groups(w: torch.Tensor, group_shape: tuple[int, ...], bits: int, clip: float, scale_mult: float = 2.0):
    """Eq. 6 with the official details, one group at a time, with Python loops (float64 reference)."""
    s = scale_mult * w.abs().reshape(w.shape[0], -1).mean(1)
    out = torch.empty_like(w)
    levels = 2**bits - 1
    for idx in torch.cartesian_prod(*[torch.arange(n) for n in group_shape]).reshape(-1, len(group_shape)):
        idx = tuple(int(i) for i in idx)
        g = (w[idx] / s[idx[0]]).clamp(-clip, clip)
        mn, mx = g.min(), g.max()
        q = torch.round((g - mn) / (mx - mn + 1e-8) * levels) / levels * (mx - mn + 1e-8) + mn
        out[idx] = q * s[idx[0]]
    return out


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_per_row_and_per_kernel_min_max(bits):
    torch.manual_seed(0)
    pw = QuantConv2d(6, 5, 1, weight_bits=bits, act_bits=8).double()  # 1x1: one group per output row
    stem = QuantConv2d(3, 4, 3, padding=1, bias=False, weight_bits=bits, act_bits=8).double()  # per (out, in) kernel
    fc = QuantLinear(7, 3, weight_bits=bits, act_bits=8).double()
    for layer, group_shape in ((pw, (5,)), (stem, (4, 3)), (fc, (3,))):
        with torch.no_grad():
            layer.weight.normal_()
        ref = _ref_groups(layer.weight.detach(), group_shape, bits, float(layer.weight_clip_val[1]))
        torch.testing.assert_close(layer.quantized_weight(), ref, rtol=0, atol=1e-12)
        codes = layer.weight_codes()["codes"].reshape(*group_shape, -1)
        # every group spans the full code range: its own min -> 0 and max -> 2^b - 1
        assert (codes.amin(-1) == 0).all() and (codes.amax(-1) == 2**bits - 1).all()
        assert len(torch.unique(codes)) <= 2**bits


def test_activations_per_sample_and_clip():
    fc = QuantLinear(6, 2, act_bits=3, clip=25.0)
    x = torch.randn(4, 6) * 10
    x[0, 0] = 300.0  # clipped to 25 before the min-max
    q = fc.quantized_input(x)
    for n in range(4):  # per sample over the channels: no sample depends on the others
        assert torch.equal(q[n], fc.quantized_input(x[n : n + 1])[0])
        assert len(torch.unique(q[n])) <= 8
    assert float(q[0].max()) == pytest.approx(25.0)
    se = QuantConv2d(6, 2, 1, act_bits=4)
    x4 = torch.randn(3, 6, 1, 1)
    torch.testing.assert_close(se.quantized_input(x4)[:, :, 0, 0], asym_quantize(x4[:, :, 0, 0], 4, dims=1))


def test_weight_codes_reconstruct_the_forward_weight_bitwise():
    torch.manual_seed(1)
    for dtype in (torch.float32, torch.float64):
        for layer in (
            QuantConv2d(3, 8, 3, weight_bits=8, dtype=dtype),
            QuantConv2d(16, 4, 1, weight_bits=4, dtype=dtype),
            QuantLinear(32, 10, weight_bits=2, clip=25.0, weight_scale=1.0, dtype=dtype),
        ):
            c = layer.weight_codes()
            assert c["codes"].dtype == torch.uint8 and c["codes"].shape == layer.weight.shape
            assert int(c["codes"].max()) <= 2 ** c["bits"] - 1
            levels = 2 ** c["bits"] - 1
            rebuilt = (c["codes"].to(dtype) / levels * (c["max"] - c["min"] + 1e-8) + c["min"]) * c["scale"]
            assert torch.equal(rebuilt, layer.quantized_weight())
    with pytest.raises(ValueError, match="32-bit"):
        QuantLinear(4, 2, weight_bits=32).weight_codes()


def test_straight_through_gradient_zero_outside_the_clip():
    torch.manual_seed(2)
    fc = QuantLinear(8, 4, weight_bits=4, act_bits=32, clip=0.8, weight_scale=1.0)
    x = torch.randn(5, 8)
    wq = fc.quantized_weight()
    wq_leaf = wq.detach().requires_grad_()
    F.linear(x, wq_leaf, fc.bias).square().sum().backward()
    wq.backward(wq_leaf.grad)  # the gradient reaching the float weight through the quantiser
    scaled = fc.weight.detach() / fc.weight.detach().abs().mean(1, keepdim=True)
    inside = (scaled < 0.8) & (scaled > -0.8)
    assert (~inside).any() and inside.any()
    assert torch.all(fc.weight.grad[~inside] == 0)
    # inside: the identity (through W / s and back through * s, hence a rounding of float32)
    torch.testing.assert_close(fc.weight.grad[inside], wq_leaf.grad[inside], rtol=1e-6, atol=0)


def test_32_bits_is_the_float_layer():
    torch.manual_seed(3)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    q = QuantConv2d(4, 6, 3, padding=1, weight_bits=32, act_bits=32)
    q.load_state_dict(conv.state_dict(), strict=False)
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(q(x), conv(x))


# ---------------------------------------------------------------------------------------------------------- config
def test_bits_parsing():
    cfg = QuantConfig.from_bits("8/8-4/8-4/4-8/8")
    assert (cfg.input, cfg.squeeze, cfg.expand, cfg.output) == ((8, 8), (4, 8), (4, 4), (8, 8))
    assert cfg.bits == "8/8-4/8-4/4-8/8"
    assert QuantConfig.from_bits("4/8").bits == "4/8-4/8-4/8-4/8"
    assert QuantConfig.from_bits(" 8 / 8-32/32-32/32-8/8").squeeze == (32, 32)
    assert QuantConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert QuantConfig().bits == DEFAULT_BITS


@pytest.mark.parametrize(
    ("bits", "match"),
    [
        ("8/8-4/8", "expected 4 groups"),
        ("8/8-4/8-4/8-8/8-8/8", "expected 4 groups"),
        ("8-8-8-8", "'W/A'"),
        ("8/8-4/8-4/x-8/8", r"'expand'.*'4/x'"),
        ("9/8-4/8-4/8-8/8", r"input: weight bits must be 2..8 or 32"),
        ("8/8-4/1-4/8-8/8", r"squeeze: activation bits must be 2..16 or 32"),
        ("8/8-4/8-4/8-16/8", r"output: weight bits"),
    ],
)
def test_bits_errors(bits, match):
    with pytest.raises(ValueError, match=match):
        QuantConfig.from_bits(bits)


def test_config_errors():
    with pytest.raises(ValueError, match="activations must be one of"):
        QuantConfig(activations="static")
    with pytest.raises(ValueError, match="weight_scale"):
        QuantConfig(weight_scale=0)
    with pytest.raises(ValueError, match="unknown QuantConfig fields"):
        QuantConfig.from_dict({"inputs": [8, 8]})
    with pytest.raises(TypeError, match="string"):
        QuantConfig.from_bits(8)


# ---------------------------------------------------------------------------------------------------------- rewrite
def test_quantize_report(trained):
    model = _copy(trained)
    n_se = sum(isinstance(m, SqueezeExpand) for m in model.modules())
    n_binary = sum(isinstance(m, BinaryConv2d) for m in model.modules())
    report = quantize_(model, "8/8-4/8-4/4-8/8")
    layers = report["layers"]
    assert report["bits"] == "8/8-4/8-4/4-8/8" and report["activations"] == "dynamic"
    assert layers["feature.0.conv1"] == {"role": "input", "weight_bits": 8, "act_bits": 8, "input_quantized": False}
    assert layers["fc"] == {"role": "output", "weight_bits": 8, "act_bits": 8, "input_quantized": True}
    squeeze = [n for n, v in layers.items() if v["role"] == "squeeze"]
    expand = [n for n, v in layers.items() if v["role"] == "expand"]
    assert len(squeeze) == len(expand) == n_se > 0
    assert all(n.endswith("se.se.1") for n in squeeze) and all(n.endswith("se.se.3") for n in expand)
    assert all(layers[n]["act_bits"] == 4 for n in expand)
    assert isinstance(model.feature[0].conv1, QuantConv2d) and isinstance(model.fc, QuantLinear)
    assert sum(isinstance(m, BinaryConv2d) for m in model.modules()) == n_binary  # binary layers untouched
    assert len(list(quant_layers(model))) == len(layers)
    with pytest.raises(ValueError, match="already has quantised layers"):
        quantize_(model)
    # the image input is quantised below 8 bits (official rule) or when forced
    assert quantize_(_copy(trained), "8/4-4/8-4/8-8/8")["layers"]["feature.0.conv1"]["input_quantized"]
    forced = quantize_(_copy(trained), QuantConfig(image_input=True))
    assert forced["layers"]["feature.0.conv1"]["input_quantized"]


def _logit_changes(model: nn.Module, x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Relative mean logit change and top-1 agreement with the unquantised model at 8, 4 and 2 bits."""
    errors, agree = [], []
    binary = next(m for m in model.modules() if isinstance(m, BinaryConv2d)).binarize_weight
    with torch.no_grad():
        ref = model(x)
        for bits in ("8/8", "4/4", "2/2"):
            q = _copy(model)
            set_binarization(q, binary, binary)
            quantize_(q, bits)
            out = q(x)
            errors.append(float((out - ref).abs().mean() / ref.abs().mean()))
            agree.append(float((out.argmax(1) == ref.argmax(1)).float().mean()))
    return errors, agree


def test_fewer_bits_change_logits_more(trained, digits):
    xv = digits[2]
    # With its binary layers switched off the network is continuous: 8 bits change the logits very slightly.
    torch.manual_seed(5)
    continuous = create_model("bnext_digits").eval()
    set_binarization(continuous, False, False)
    errors, agree = _logit_changes(continuous, xv)
    assert 0 < errors[0] < 0.02 and agree[0] > 0.98
    assert errors[0] < errors[1] < errors[2]
    # The BNN amplifies any change through sign flips (it is chaotic: docs/official-code.md, *Numerical
    # equivalence*), but fewer bits still change more.
    errors, agree = _logit_changes(_copy(trained), xv)
    assert 0 < errors[0] < errors[1] < errors[2]
    assert agree[0] > 0.8 and agree[0] >= agree[2]


def test_finetune_updates_only_quantised_params(trained, digits):
    xt, yt, _, _ = digits
    model = _copy(trained)
    quantize_(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quant_keys = {f"{n}.{p}" for n, m in quant_layers(model) for p in ("weight", "bias") if getattr(m, p) is not None}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    stats = finetune(model, _loader(xt, yt), epochs=1, lr=1e-3, max_batches=3)
    assert stats["steps"] == 3 and len(stats["loss"]) == 1 and math.isfinite(stats["loss"][0])
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= quant_keys
    assert "fc.weight" in changed and "feature.0.conv1.weight" in changed
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert not model.training  # the mode it had
    with pytest.raises(ValueError, match="no quantised layers"):
        finetune(_copy(trained), _loader(xt, yt), epochs=1)


def test_calibrated_ranges(trained, digits):
    xt, yt, xv, _ = digits
    model = _copy(trained)
    quantize_(model, QuantConfig(activations="calibrated"))
    with pytest.raises(RuntimeError, match="never calibrated"):
        model(xv[:4])
    # the inputs each calibrated layer sees while calibrating: quantised weights, float activations
    float_model = _copy(trained)
    quantize_(float_model, "8/32-4/32-4/32-8/32")
    seen: dict[str, list[torch.Tensor]] = {}
    names = {n for n, m in quant_layers(model) if m.quantizes_input}
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, n=n: seen.setdefault(n, []).append(args[0]))
        for n, m in float_model.named_modules()
        if n in names
    ]
    batches = _loader(xt[:128], yt[:128])
    with torch.no_grad():
        for x, _ in batches:
            float_model(x)
    for h in hooks:
        h.remove()
    ranges = calibrate(model, batches, batches=2)
    assert set(ranges) == names
    for n, (lo, hi) in ranges.items():
        clip = 25.0 if n == "fc" else 1000.0
        allx = torch.cat([t.flatten() for t in seen[n]]).clamp(-clip, clip)
        assert (lo, hi) == (float(allx.min()), float(allx.max()))
    out = model(xv[:8])
    assert torch.isfinite(out).all()
    # static ranges: a sample's output does not depend on the rest of the batch
    torch.testing.assert_close(model(xv[:1]), out[:1])


def test_save_and_load_quantised_model_dir(trained, digits, tmp_path):
    model = _copy(trained)
    quantize_(model, QuantConfig.from_bits("8/8-4/8-4/8-8/8", activations="calibrated"))
    calibrate(model, _loader(digits[0][:64], digits[1][:64]), batches=1)
    save_model_dir(model, tmp_path / "q")
    loaded, _ = load_model(tmp_path / "q")
    assert isinstance(loaded.fc, QuantLinear) and loaded.fc.activations == "calibrated"
    x = digits[2][:16]
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model(x))


def test_size_estimate_matches_the_spec():
    compact = official_keys("bnext_tiny")["param_counts"]
    with torch.device("meta"):
        tiny = create_model("bnext_tiny")
        quantize_(tiny, "8/8-4/8-4/8-8/8")
        se8 = create_model("bnext_tiny_quant", se_bits=8)
    # binary 1 bit, SE weights 4 bit, stem/fc weights 8 bit, rest fp32 (docs/official-code.md, *Model size*)
    assert quantized_size_mib(tiny) == pytest.approx(compact["mb_postquant_se4_io8_rest32_MiB"], abs=1e-9)
    assert quantized_size_mib(se8) == pytest.approx(
        official_keys("bnext_tiny_quant")["param_counts"]["mb_postquant_se8_io8_rest32_MiB"], abs=1e-9
    )


# -------------------------------------------------------------------------------------------- official quant BNext
def _synthetic_official_state(layout: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with exactly the official keys, shapes and dtypes (from the packaged key list)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape, dtype, _kind, _note in official_keys(layout)["state_dict"]:
        if key.endswith("clip_val"):
            c = 25 if key.startswith("fc.") else 1000
            out[key] = torch.tensor([-c, c], dtype=getattr(torch, dtype))
        elif dtype == "int64":
            out[key] = torch.randint(0, 1000, shape, generator=g)
        elif key.endswith(("running_var", "bn1.weight", "norm1.weight", "norm2.weight")):
            out[key] = 0.75 + 0.5 * torch.rand(shape, generator=g)
        elif key.endswith("temperature"):
            out[key] = torch.full(shape, 0.9**3)
        elif key.endswith(".scale") and len(shape) == 4:
            out[key] = torch.rand(shape, generator=g)
        else:
            out[key] = 0.1 * torch.randn(shape, generator=g)
    return out


@pytest.mark.parametrize(("layout", "model_name"), [("bnext18_quant", "bnext_18_quant")])
def test_official_bnext18_quant_import_export(layout, model_name):
    state = _synthetic_official_state(layout, seed=1)
    model = load_official(layout, state, se_bits=4)
    assert model.onebit_spec == {"name": model_name, "kwargs": {"num_classes": 1000, "se_bits": 4, "quant": True}}
    exported = export_official(model, layout)
    assert list(exported) == list(state)
    assert all(torch.equal(exported[k], v) and exported[k].dtype == v.dtype for k, v in state.items())
    with pytest.raises(ValueError, match="se_bits must be 2..8"):
        load_official(layout, state, se_bits=32)


def test_official_quant_import_export_and_se_bits():
    state = _synthetic_official_state("bnext_tiny_quant")
    model = load_official("bnext_tiny_quant", state, se_bits=8)
    exported = export_official(model, "bnext_tiny_quant")
    assert list(exported) == list(state)
    assert all(torch.equal(exported[k], v) and exported[k].dtype == v.dtype for k, v in state.items())
    se = model.feature[1].Attention.se.se
    assert (se[1].weight_bits, se[1].act_bits, se[3].weight_bits, se[3].act_bits) == (8, 8, 8, 8)
    assert not model.feature[0].conv1.quantizes_input and model.fc.act_bits == 8
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 32, 32))).all()
    # (what se_bits does to the forward is checked against the float64 reference below, on a small network)
    with pytest.raises(TypeError, match="takes only 'se_bits'"):
        load_official("bnext_tiny_quant", state, bits=4)
    with pytest.raises(TypeError, match="takes no options"):
        load_official("bnext_tiny", {}, se_bits=4)


def _ref_weight(w: torch.Tensor, bits: int, clip: float) -> torch.Tensor:
    """The official weight quantiser written out (docs/official-code.md, *Quantised BNext*): s = 2 mean|W| per output
    channel, clip, min-max per row (1x1, fc) or per (out, in) kernel (k > 1), rescale. 32 bits still go through the
    formula (official QuantizeConv)."""
    s = 2 * w.abs().reshape(w.shape[0], -1).mean(1).reshape(-1, *[1] * (w.dim() - 1))
    v = (w / s).clamp(-clip, clip)
    g = v.reshape(w.shape[0], w.shape[1], -1) if w.dim() == 4 and w.shape[-1] > 1 else v.reshape(w.shape[0], -1)
    mn, mx = g.min(-1, keepdim=True).values, g.max(-1, keepdim=True).values
    levels = 2**bits - 1
    q = torch.round((g - mn) / (mx - mn + 1e-8) * levels) / levels * (mx - mn + 1e-8) + mn
    return q.reshape(w.shape) * s


def _ref_act(x: torch.Tensor, bits: int, clip: float) -> torch.Tensor:
    """The official activation quantiser (same section): [N, C, 1, 1] squeezed to [N, C] and min-max per sample;
    [N, C, H, W] min-max per (sample, channel) over space; clipped first. 32 bits: unchanged."""
    if bits == 32:
        return x
    g = x.reshape(x.shape[0], -1) if x.dim() == 2 or x.shape[-1] * x.shape[-2] == 1 else x.flatten(2)
    g = g.clamp(-clip, clip)
    mn, mx = g.min(-1, keepdim=True).values, g.max(-1, keepdim=True).values
    levels = 2**bits - 1
    return (torch.round((g - mn) / (mx - mn + 1e-8) * levels) / levels * (mx - mn + 1e-8) + mn).reshape(x.shape)


def _patch_reference(ref: nn.Module, quant: nn.Module, stem: str, se_bits: tuple[int, int]) -> None:
    """Replace the forwards of ``ref``'s stem, SE convs, downsample convs and fc by the official formulas, with the
    biases of ``quant`` (whose downsample convs have one that the float model lacks)."""
    conv = ref.get_submodule(stem)
    conv.forward = lambda x, c=conv: F.conv2d(x, _ref_weight(c.weight, 8, 1000), None, c.stride, c.padding)
    for m in ref.modules():
        if isinstance(m, SqueezeExpand):
            for c in (m.se[1], m.se[3]):
                c.forward = lambda x, c=c: F.conv2d(
                    _ref_act(x, se_bits[1], 1000), _ref_weight(c.weight, se_bits[0], 1000), c.bias
                )
    for name, m in ref.named_modules():
        if name.endswith("downsample.1"):
            bias = quant.get_submodule(name).bias
            m.forward = lambda x, c=m, b=bias: F.conv2d(_ref_act(x, 8, 1000), _ref_weight(c.weight, 8, 1000), b)
    fc = ref.fc
    fc.forward = lambda x, c=fc: F.linear(_ref_act(x, 8, 25), _ref_weight(c.weight, 8, 25)) + c.bias


def _randomise_(model: nn.Module) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("binary_conv.weight"):
                p.uniform_(-1, 1)
            elif name.endswith(".scale") and p.dim() == 4:
                p.uniform_(0, 1)
            elif name.endswith("downsample.1.bias"):
                p.normal_()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 1.5)


def _float_state(quant: nn.Module) -> dict[str, torch.Tensor]:
    skip = ("clip_val", "fc.scale", "downsample.1.bias")
    return {k: v for k, v in quant.state_dict().items() if not k.endswith(skip)}


@pytest.mark.parametrize("se_bits", [8, 4, 32])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_quant_bnext_matches_float64_reference(se_bits, mode):
    torch.manual_seed(4)
    quant = bnext_quant(SMALL, num_classes=10, se_bits=se_bits, in_chans=3).double()
    _randomise_(quant)
    float_model = BNext(SMALL, num_classes=10, in_chans=3).double()
    float_model.load_state_dict(_float_state(quant))
    ref = BNext(SMALL, num_classes=10, in_chans=3).double()
    ref.load_state_dict(_float_state(quant))
    for m in ref.modules():
        if isinstance(m, (InfoRCP, ELMAttention)):
            m.scale_clamp_when = "train"  # bnext_quant.py: λ clamped in training only
    _patch_reference(ref, quant, "feature.0.conv1", (se_bits, se_bits))
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    for m in (quant, ref, float_model):
        m.train(mode == "train")
    out, expected, plain = quant(x), ref(x), float_model(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)
    assert (out - plain).abs().max() > 1e-6  # the quantisation is really applied


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_quant_bnext18_matches_float64_reference(mode):
    torch.manual_seed(6)
    kw = dict(num_classes=10, small_stem=False, widths=(8, 16, 32, 64))
    quant = create_model("bnext_18_quant", se_bits=4, **kw).double()
    assert quant.layer1[0].Attention.downsample[1].bias is not None
    assert quant.layer0[0].FFN.se.se[1].act_bits == 8  # birealnet_quant.py: SE activations at 2 * se_bits
    _randomise_(quant)
    ref = create_model("bnext_18", **kw).double()
    ref.load_state_dict(_float_state(quant))
    _patch_reference(ref, quant, "conv1", (4, 8))
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    quant.train(mode == "train")
    ref.train(mode == "train")
    torch.testing.assert_close(quant(x), ref(x), rtol=0, atol=1e-10)


def test_32_bit_weights_go_through_the_quantiser_in_the_official_model():
    torch.manual_seed(7)
    quant = bnext_quant(SMALL, num_classes=10, se_bits=32, in_chans=3)
    se = quant.feature[1].FFN_1.se.se[1]
    assert not se.quantizes_input  # activations at 32 bits are skipped ...
    w = se.weight.detach()
    wq = se.quantized_weight().detach()  # ... weights are quantised with 2^32 - 1 levels: within an ulp or two
    assert torch.equal(wq, _ref_weight(w, 32, 1000))
    assert (wq - w).abs().max() <= 1e-6 * w.abs().max()
    plain = QuantConv2d(8, 4, 1, weight_bits=32, act_bits=32)
    assert plain.quantized_weight() is plain.weight  # the generic 32/32 layer is the float layer


def test_quant_bnext_does_not_clamp_lambda_in_eval():
    model = bnext_quant(SMALL, num_classes=10, se_bits=8, in_chans=3).eval()
    ffn = model.feature[3].FFN
    with torch.no_grad():
        ffn.scale.fill_(1.25)
        model(torch.randn(1, 3, 16, 16))
    assert torch.all(ffn.scale == 1.25)
    model.train()(torch.randn(2, 3, 16, 16))
    assert torch.all(ffn.scale == 1.0)


# ---------------------------------------------------------------------------------------------------------- command
def test_quantize_command(trained, tmp_path, capsys):
    src = save_model_dir(_copy(trained), tmp_path / "model")
    out = tmp_path / "q"
    rc = main(["quantize", str(src), "--bits", "8/8-4/8-4/8-8/8", "--finetune-epochs", "1", "--finetune-batches",
               "2", "--lr", "1e-4", "--out", str(out), "--limit-val", "120"])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "8/8-4/8-4/8-8/8" in printed and "top-1" in printed
    report = json.loads((out / "quantize.json").read_text())
    assert report["bits"] == "8/8-4/8-4/8-8/8" and report["finetune"]["steps"] == 2
    assert report["size_mib"]["quantized"] < report["size_mib"]["float"]
    # the reported accuracies are those of the source, of quantize_ alone, and of the written model
    val = build_data(DataConfig(limit_val=120)).val
    assert report["before"] == evaluate(_copy(trained), val, torch.device("cpu"))
    direct = _copy(trained)
    quantize_(direct, "8/8-4/8-4/8-8/8")
    assert report["after"] == evaluate(direct, val, torch.device("cpu"))
    loaded, _ = load_model(out)
    assert sum(1 for _ in quant_layers(loaded)) == len(report["layers"])
    assert report["after_finetune"] == evaluate(loaded, val, torch.device("cpu"))

    assert main(["quantize", str(src), "--bits", "8/8-4/8", "--out", str(tmp_path / "bad")]) == 2
    assert "expected 4 groups" in capsys.readouterr().err
    assert main(["quantize", "bnext_digits", "--bits", "8/8"]) == 2
    assert "give --out" in capsys.readouterr().err


def test_quantize_command_on_a_run_directory(trained, tmp_path, capsys):
    """A run directory: the model of its last checkpoint and the data of its config.json (here 64 val images)."""
    from onebit.checkpoint import save_weights
    from onebit.config import ModelConfig, RunConfig, save_json

    run = tmp_path / "run"
    cfg = RunConfig(
        model=ModelConfig(name="bnext_digits", num_classes=10), data=DataConfig(limit_train=64, limit_val=64)
    )
    save_json(cfg, run / "config.json")
    last = run / "checkpoints" / "last"
    save_weights(trained, last / "model.safetensors")
    torch.save({}, last / "state.pt")
    (last / "meta.json").write_text("{}")
    assert main(["quantize", str(run), "--bits", "8/4-4/8-4/4-8/8", "--calibrate", "1"]) == 0
    out = run / "quantized" / "8_4-4_8-4_4-8_8"
    report = json.loads((out / "quantize.json").read_text())
    assert report["data"].endswith("64 train / 64 val") and report["config"]["activations"] == "calibrated"
    assert report["layers"]["feature.0.conv1"]["input_quantized"]  # 4-bit image input
    assert set(report["calibration"]) == {n for n, v in report["layers"].items() if v["input_quantized"]}
    val = build_data(cfg.data).val
    assert report["before"] == evaluate(_copy(trained), val, torch.device("cpu"))
    loaded, _ = load_model(out)
    assert report["after"] == evaluate(loaded, val, torch.device("cpu"))
    assert "calibrated (1 batches)" in capsys.readouterr().out

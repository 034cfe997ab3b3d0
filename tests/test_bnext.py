"""BNext family: structure against the official key lists, forward/backward, and the official code's exact semantics.

Numerical checks run in float64 against small functional references written from ``docs/official-code.md`` (*BNext*
and *BNext-18*); mini configurations of the real classes keep them fast on a 2-core CPU. The official key lists are
the ones shipped in ``onebit/models/official_keys/``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from onebit.binarize import HardSign, ProgressiveSign, set_temperature
from onebit.layers import BinaryConv2d
from onebit.models import create_model, list_models
from onebit.models.bnext import (
    BNEXT18_THRESHOLD,
    BNEXT_THRESHOLD,
    BNext,
    BNext18,
    ELMAttention,
    InfoRCP,
    bnext_binary_conv,
    official_key_map,
)
from onebit.models.official import LAYOUTS, official_keys

LAYOUT_NAMES = ["bnext18", "bnext_tiny", "bnext_small", "bnext_middle", "bnext_large"]
MODEL_NAMES = ["bnext_18", "bnext_tiny", "bnext_small", "bnext_middle", "bnext_large"]


def _keys_file(name: str) -> dict:
    """The shipped key list of an official layout, its ``state_dict`` rows as dicts (``key``, ``shape``, ...)."""
    compact = official_keys(name)
    assert compact is not None, f"no packaged key list for {name}"
    return {**compact, "state_dict": [dict(zip(compact["columns"], row)) for row in compact["state_dict"]]}


def _meta_model(name: str) -> nn.Module:
    """Build without allocating (BNext-L has 326 M parameters): shapes and counts only."""
    with torch.device("meta"):
        return LAYOUTS.get(name).build()


def _mini_bnext(**kw) -> BNext:
    """8 -> 16 (FFN_3x3 mixer, two 1x1 FFNs), 16 -> 32 stride 2 (ELM), 32 -> 32 (FFN_3x3 mixer)."""
    return BNext((8, 16, 32, 32), num_classes=10, **kw)


def _mini_bnext18() -> BNext18:
    return BNext18(num_classes=10, widths=(8, 16), depths=(1, 1))


@torch.no_grad()
def _randomize_(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """Non-trivial values for everything the official init leaves at 0 / 1 / 0.25, so wiring errors show."""

    def rand(t: Tensor, lo: float, hi: float) -> None:
        t.copy_(torch.rand(t.shape, generator=gen, dtype=t.dtype) * (hi - lo) + lo)

    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            rand(m.weight, 0.5, 1.5)
            rand(m.bias, -0.2, 0.2)
            rand(m.running_mean, -0.2, 0.2)
            rand(m.running_var, 0.5, 1.5)
        elif isinstance(m, nn.PReLU):
            rand(m.weight, 0.0, 0.5)
        elif isinstance(m, BinaryConv2d):
            rand(m.weight, -1.4, 1.4)
    for name, p in model.named_parameters():
        if name.endswith("move.bias"):
            rand(p, -0.3, 0.3)
        elif name.endswith("scale"):
            rand(p, 0.0, 1.0)
    return model


# ---------------------------------------------------------------------------------------- functional spec references
def _bn(bn: nn.BatchNorm2d, x: Tensor, training: bool) -> Tensor:
    if training:  # batch statistics; the module's running buffers are left alone
        return F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _ref_branch(p, x: Tensor, training: bool) -> Tensor:
    conv = p.binary_conv
    w, t = conv.weight, float(conv.weight_binarizer.temperature)
    wb = torch.sign(w) if t < conv.weight_binarizer.threshold else (w / max(t, 1e-8)).clamp(-1, 1)
    z = F.conv2d(torch.sign(x + p.move.bias), wb, stride=p.stride, padding=w.shape[-1] // 2)
    return F.prelu(_bn(p.norm1, z, training), p.activation2.weight)


def _ref_gate(p, ref: Tensor, z: Tensor) -> Tensor:
    se = p.se.se
    lam = p.scale.clamp(0, 1)
    h = F.relu(se[1](F.adaptive_avg_pool2d(lam * ref + (1 - lam) * z, 1)))
    return torch.sigmoid(se[3](h)) * z


def _ref_processor(p, x: Tensor, training: bool) -> Tensor:
    """docs/official-code.md: *BNext* (bnext.py Attention / FFN) and *BNext-18* (birealnet.py Attention / FFN_3x3)."""
    pool = (lambda t: F.avg_pool2d(t, 2, 2)) if p.stride == 2 else (lambda t: t)
    z = _ref_branch(p, x, training)
    if isinstance(p, ELMAttention):
        r = F.prelu(x, p.activation1.weight)
        if p.downsample is not None:
            ds = p.downsample
            r = _bn(ds[2], ds[1](F.avg_pool2d(r, 2, 2)), training)
        else:
            r = pool(r)
        if p.infor_recoupling:
            z = _ref_gate(p, r if p.mix_with == "residual" else pool(x), z)
        return _bn(p.norm2, z * r, training) + r
    r = pool(x)
    if p.infor_recoupling:
        z = _bn(p.norm2, _ref_gate(p, r, z), training)
    return z + r


def _processors(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, InfoRCP | ELMAttention)]


# ------------------------------------------------------------------------------------------------ registry, structure
def test_models_are_registered():
    assert set(MODEL_NAMES) <= set(list_models("bnext*"))
    assert set(LAYOUT_NAMES) <= set(LAYOUTS.list("bnext*"))


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_parameter_counts_equal_official(name: str):
    keys = _keys_file(name)
    model = _meta_model(name)
    counts = keys["param_counts"]
    assert sum(p.numel() for p in model.parameters()) == counts["n_total"]
    n_binary = sum(m.weight.numel() for m in model.modules() if isinstance(m, BinaryConv2d))
    assert n_binary == counts["n_binary"]


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_key_map_is_a_bijection_onto_our_state_dict(name: str):
    keys = _keys_file(name)
    layout = LAYOUTS.get(name)
    ours = {k: tuple(v.shape) for k, v in _meta_model(name).state_dict().items()}
    mapped = {}
    for entry in keys["state_dict"]:
        key = layout.key_map(entry["key"])
        assert key in ours, f"{entry['key']} -> {key} is not in our state dict"
        assert ours[key] == tuple(entry["shape"]), key
        assert key not in mapped, f"{entry['key']} and {mapped.get(key)} map to the same key"
        mapped[key] = entry["key"]
    assert set(mapped) == set(ours), f"keys without an official counterpart: {sorted(set(ours) - set(mapped))[:5]}"
    renamed = {k for k, v in mapped.items() if k != v}
    assert all(k.endswith(("input_binarizer.temperature", "weight_binarizer.temperature")) for k in renamed)


def test_key_map_renames_only_temperatures():
    assert official_key_map("module.feature.3.FFN.binary_conv.weight") == "feature.3.FFN.binary_conv.weight"
    assert (
        official_key_map("feature.2.Attention.binary_activation.temperature")
        == "feature.2.Attention.binary_conv.input_binarizer.temperature"
    )
    assert (
        official_key_map("layer1.0.FFN.binary_conv.temperature")
        == "layer1.0.FFN.binary_conv.weight_binarizer.temperature"
    )
    assert official_key_map("feature.0.prelu.weight") == "feature.0.prelu.weight"


def test_processor_placement_and_policies():
    tiny = _meta_model("bnext_tiny")
    for i, block in enumerate(tiny.feature):
        if i == 0:
            assert block.conv1.stride == (2, 2) and block.prelu.weight.shape == (32,)
            continue
        # ELM-Attention only in even blocks >= 2 (docs/official-code.md, *BNext*); the stride-2 blocks 2, 4, 6, 12
        # are all even
        assert isinstance(block.Attention, ELMAttention) == (i >= 2 and i % 2 == 0), i
        assert (block.Attention.stride == 2) == (i in (2, 4, 6, 12)), i
        assert block.Attention.scale_clamp_when == "train"
        ffns = [block.FFN] if block.planes == block.inplanes else [block.FFN_1, block.FFN_2]
        assert all(f.scale_clamp_when == "always" and f.binary_conv.kernel_size == (1, 1) for f in ffns)
    convs = [m for m in tiny.modules() if isinstance(m, BinaryConv2d)]
    assert {(c.weight_binarizer.threshold, c.latent_clip, c.latent_clip_when) for c in convs} == {
        (BNEXT_THRESHOLD, 1.5, "train")
    }
    assert all(isinstance(c.input_binarizer, HardSign) and c.input_binarizer.clip == 1.5 for c in convs)

    b18 = _meta_model("bnext18")
    assert b18.conv1.kernel_size == (7, 7) and isinstance(b18.maxpool, nn.MaxPool2d)
    for s in range(4):
        for b, block in enumerate(getattr(b18, f"layer{s}")):
            assert isinstance(block.Attention, ELMAttention) and block.Attention.mix_with == "residual"
            assert block.Attention.scale_clamp_when == "train" and block.FFN.scale_clamp_when == "always"
            assert (block.Attention.downsample is not None) == (s > 0 and b == 0)
    convs = [m for m in b18.modules() if isinstance(m, BinaryConv2d)]
    assert len(convs) == 16
    assert {(c.weight_binarizer.threshold, c.latent_clip_when) for c in convs} == {(BNEXT18_THRESHOLD, "always")}


@pytest.mark.parametrize("elm", [True, False])
@pytest.mark.parametrize("rcp", [True, False])
def test_ablation_switches_build_official_names(elm: bool, rcp: bool):
    with torch.device("meta"):
        model = create_model("bnext_tiny", elm_attention=elm, infor_recoupling=rcp)
    names = set(dict(model.named_modules()))
    mixer = "Attention" if elm else "FFN_3x3"
    other = "FFN_3x3" if elm else "Attention"
    assert all(f"feature.{i}.{mixer}" in names and f"feature.{i}.{other}" not in names for i in range(1, 14))
    assert isinstance(model.feature[2].get_submodule(mixer), ELMAttention if elm else InfoRCP)
    assert isinstance(model.feature[3].get_submodule(mixer), InfoRCP)
    keys = model.state_dict().keys()
    assert any(k.endswith(".scale") for k in keys) == rcp
    assert any(".se.se." in k for k in keys) == rcp
    assert all(f"feature.{i}.{mixer}.norm2.weight" in keys for i in range(1, 14))  # created even when unused


@pytest.mark.parametrize("elm", [True, False])
@pytest.mark.parametrize("rcp", [True, False])
def test_ablations_match_reference(elm: bool, rcp: bool):
    gen = torch.Generator().manual_seed(3)
    model = _randomize_(_mini_bnext(elm_attention=elm, infor_recoupling=rcp).double(), gen).eval()
    x = torch.randn(2, 8, 8, 8, generator=gen, dtype=torch.float64)
    for block in model.feature[1:]:
        y = block(x)
        ref = _ref_processor(block.mixer, x, False)
        if block.planes == block.inplanes:
            ref = _ref_processor(block.FFN, ref, False)
        else:
            ref = torch.cat([_ref_processor(block.FFN_1, ref, False), _ref_processor(block.FFN_2, ref, False)], 1)
        torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
        x = y


def test_norm2_use_without_recoupling():
    """Info-RCP skips norm2 without recoupling, ELM-Attention still applies it (docs/official-code.md, *BNext*)."""
    gen = torch.Generator().manual_seed(0)
    model = _randomize_(_mini_bnext(infor_recoupling=False).double(), gen).eval()
    x = torch.randn(2, 16, 8, 8, generator=gen, dtype=torch.float64)
    elm, ffn = model.feature[2].Attention, model.feature[2].FFN_1
    before = (elm(x), ffn(x[:, :16]))
    with torch.no_grad():
        elm.norm2.bias.add_(1.0)
        ffn.norm2.bias.add_(1.0)
    assert not torch.equal(elm(x), before[0])
    assert torch.equal(ffn(x[:, :16]), before[1])


# -------------------------------------------------------------------------------------------- exact semantics (fp64)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("family", ["bnext", "bnext18"])
def test_processors_match_spec_reference(family: str, training: bool):
    gen = torch.Generator().manual_seed(1)
    model = _mini_bnext() if family == "bnext" else _mini_bnext18()
    model = _randomize_(model.double(), gen).train(training)
    x = torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64)
    inputs: dict[str, Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: inputs.__setitem__(n, a[0])) for n, m in _processors(model)]
    outputs: dict[str, Tensor] = {}
    hooks += [m.register_forward_hook(lambda m, a, o, n=n: outputs.__setitem__(n, o)) for n, m in _processors(model)]
    model(x)
    for h in hooks:
        h.remove()
    assert len(outputs) == len(_processors(model)) > 0
    for name, p in _processors(model):
        torch.testing.assert_close(outputs[name], _ref_processor(p, inputs[name], training), rtol=1e-12, atol=1e-12)


def test_bnext_mixes_input_but_bnext18_mixes_residual():
    """Changing PReLU_a moves the λ-mix of BNext-18's attention but not bnext.py's (which mixes the raw input).

    The ELM product changes the output of both, so compare what enters the SE gate.
    """
    gen = torch.Generator().manual_seed(2)
    bnext, bnext18 = (_randomize_(m.double(), gen).eval() for m in (_mini_bnext(), _mini_bnext18()))
    for p in (bnext.feature[2].Attention, bnext18.layer1[0].Attention):
        x = torch.randn(2, p.inplanes, 8, 8, generator=gen, dtype=torch.float64)
        mixes: list[Tensor] = []
        h = p.se.register_forward_pre_hook(lambda m, a: mixes.append(a[0]))  # noqa: B023 (removed in this iteration)
        for slope in (0.1, 0.9):
            with torch.no_grad():
                p.activation1.weight.fill_(slope)
            p(x)
        h.remove()
        assert torch.equal(mixes[0], mixes[1]) == (p.mix_with == "input")


def test_binary_conv_temperature_by_hand():
    """5 input channels, 1 output, 1x1: out = sum_c sign(x_c) * Wb_c, Wb from clamp(W / T, -1, 1) or sign(W)."""
    w = torch.tensor([0.2, -0.6, 1.2, 5e-8, 0.9], dtype=torch.float64).view(1, 5, 1, 1)
    x = torch.tensor([1.0, -2.0, 0.3, 4.0, 0.0], dtype=torch.float64).view(1, 5, 1, 1)  # sign: 1, -1, 1, 1, 0
    expected = {
        # T: (BNext-T/S/M/L threshold 1e-7, BNext-18 threshold 1e-5)
        1.0: (0.2 + 0.6 + 1.0 + 5e-8, 0.2 + 0.6 + 1.0 + 5e-8),
        0.5: (0.4 + 1.0 + 1.0 + 1e-7, 0.4 + 1.0 + 1.0 + 1e-7),
        1e-6: (1.0 + 1.0 + 1.0 + 0.05, 4.0),  # between the thresholds: BNext still clamps 5e-8 / 1e-6 = 0.05
        1e-9: (4.0, 4.0),  # below both: sign(W)
    }
    for col, threshold in enumerate((BNEXT_THRESHOLD, BNEXT18_THRESHOLD)):
        conv = bnext_binary_conv(5, 1, 1, threshold=threshold).double()
        with torch.no_grad():
            conv.weight.copy_(w)
        for t, want in expected.items():
            assert set_temperature(conv, t) == 2  # the progressive weight T and the inert activation T
            for training in (False, True):
                xg = x.clone().requires_grad_(True)
                conv.train(training)
                conv.weight.grad = None
                y = conv(xg)
                assert y.item() == pytest.approx(want[col], rel=1e-12, abs=1e-15)
                y.sum().backward()
                # identity STE on W (gradient = sign(x), no 1/T, no mask); clip-STE 1.5 on x (|-2|, |4| blocked)
                assert conv.weight.grad.flatten().tolist() == [1.0, -1.0, 1.0, 1.0, 0.0]
                wb = conv.weight_binarizer(conv.weight).detach().flatten().tolist()
                assert xg.grad.flatten().tolist() == pytest.approx([wb[0], 0.0, wb[2], 0.0, wb[4]])


def test_set_temperature_reaches_every_binarizer():
    model = _mini_bnext18()
    convs = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert set_temperature(model, 0.125) == 2 * len(convs)
    assert all(float(c.weight_binarizer.temperature) == 0.125 for c in convs)
    assert all(float(c.input_binarizer.temperature) == 0.125 for c in convs)
    assert sum(isinstance(m, ProgressiveSign) for m in model.modules()) == len(convs)


@pytest.mark.parametrize("family", ["bnext", "bnext18"])
def test_scale_clamp_train_vs_eval(family: str):
    """λ clamps to [0, 1] in place: FFN_1x1 and BNext-18 FFN_3x3 always, bnext FFN_3x3 / Attention in training only."""
    model = (_mini_bnext() if family == "bnext" else _mini_bnext18()).double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    procs = _processors(model)
    kinds = {type(p).__name__ + ("_1x1" if p.binary_conv.kernel_size == (1, 1) else "") for _, p in procs}
    assert kinds == ({"InfoRCP", "InfoRCP_1x1", "ELMAttention"} if family == "bnext" else {"InfoRCP", "ELMAttention"})
    raw = torch.tensor([-0.5, 0.25, 1.75], dtype=torch.float64)

    def reset() -> None:
        with torch.no_grad():
            for _, p in procs:
                p.scale.copy_(raw.repeat(p.planes)[: p.planes].view(1, -1, 1, 1))

    reset()
    model.eval()
    with torch.no_grad():
        model(x)
    for name, p in procs:
        clamped = bool(p.scale.min() >= 0 and p.scale.max() <= 1)
        expect = p.binary_conv.kernel_size == (1, 1) or (family == "bnext18" and isinstance(p, InfoRCP))
        assert clamped == expect, name
        assert p.scale_clamp_when == ("always" if expect else "train"), name
    reset()
    model.train()
    model(x).sum().backward()
    for name, p in procs:
        assert p.scale.min() >= 0 and p.scale.max() <= 1, name
        assert p.scale.grad is not None, name


@pytest.mark.parametrize("family", ["bnext", "bnext18"])
def test_latent_weight_clamp_train_vs_eval(family: str):
    model = (_mini_bnext() if family == "bnext" else _mini_bnext18()).double()
    convs = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        for c in convs:
            c.weight.fill_(2.0)
        model.eval()(x)
    eval_max = max(float(c.weight.detach().max()) for c in convs)
    assert eval_max == (1.5 if family == "bnext18" else 2.0)
    with torch.no_grad():
        model.train()(x)
    assert max(float(c.weight.detach().max()) for c in convs) == 1.5


def test_stem_prelu_is_unused_and_initialised_to_width():
    model = _randomize_(_mini_bnext().double(), torch.Generator().manual_seed(0)).eval()
    stem = model.feature[0]
    assert torch.equal(BNext((8, 16), 10).feature[0].prelu.weight.detach(), torch.full((8,), 8.0))
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    before = model(x)
    with torch.no_grad():
        stem.prelu.weight.fill_(-3.0)
    assert torch.equal(model(x), before)


def test_binary_latent_init_scale():
    torch.manual_seed(0)
    conv = bnext_binary_conv(64, 64, 3)
    assert 0.8e-3 < float(conv.weight.detach().std()) < 1.2e-3
    assert conv.bias is None and conv.padding == (1, 1) and conv.pad_value == 0.0


# -------------------------------------------------------------------------------------------- full models, CIFAR
@pytest.mark.parametrize("name", ["bnext_tiny", "bnext_18"])
def test_forward_backward_float64(name: str):
    torch.manual_seed(0)
    model = create_model(name).double().train()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features, 1, 1)
    out = model.forward_head(feats)
    assert out.shape == (2, 1000) and out.dtype == torch.float64 and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    # the stem PReLU and the Info-RCP activation1 are unused in the official forward, so they get no gradient
    unused = {f"{n}.activation1.weight" for n, m in model.named_modules() if isinstance(m, InfoRCP)}
    unused |= {"feature.0.prelu.weight"} if name != "bnext_18" else set()
    for n, p in model.named_parameters():
        assert (p.grad is None) == (n in unused), n
        assert n in unused or torch.isfinite(p.grad).all(), n
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 1000) and torch.isfinite(y).all()


@pytest.mark.parametrize(
    "name",
    [  # > 5 s each on a 2-core CPU; BNext-T covers the same code path in the default suite
        pytest.param("bnext_small", marks=pytest.mark.slow),
        pytest.param("bnext_middle", marks=pytest.mark.slow),
        pytest.param("bnext_large", marks=pytest.mark.slow),
    ],
)
def test_larger_models_forward_eval(name: str):
    model = create_model(name).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, 1000) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["bnext_tiny", "bnext_18"])
def test_cifar_variants_keep_resolution_in_the_stem(name: str):
    with torch.device("meta"):
        cifar, imagenet = create_model(name, num_classes=10), create_model(name)
    if name == "bnext_18":
        assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
        assert isinstance(cifar.maxpool, nn.Identity) and isinstance(imagenet.maxpool, nn.MaxPool2d)
        assert imagenet.conv1.stride == (2, 2)
    else:
        assert cifar.feature[0].conv1.stride == (1, 1) and imagenet.feature[0].conv1.stride == (2, 2)
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=1).eval()  # also checks in_chans
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, 1, 16, 16))
    # 16 px with a stride-1 stem: BNext-T halves 4 times (blocks 2, 4, 6, 12), BNext-18 3 times (layer1..3)
    assert feats.shape[-2:] == ((1, 1) if name == "bnext_tiny" else (2, 2))
    assert model.forward_head(feats).shape == (2, 10)


def test_official_round_trip_bnext18():
    """Export to the official layout, re-import (with the DDP prefix), export again: bit-identical."""
    from onebit.models import official

    torch.manual_seed(0)
    model = _randomize_(official.LAYOUTS.get("bnext18").build(), torch.Generator().manual_seed(5))
    set_temperature(model, 0.9**7)
    exported = official.export_official(model, "bnext18")
    assert set(exported) == {e["key"] for e in _keys_file("bnext18")["state_dict"]}
    loaded = official.load_official("bnext18", {f"module.{k}": v for k, v in exported.items()})
    again = official.export_official(loaded, "bnext18")
    assert all(torch.equal(again[k], v) for k, v in exported.items())
    assert float(loaded.layer2[1].FFN.binary_conv.weight_binarizer.temperature) == pytest.approx(0.9**7)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)

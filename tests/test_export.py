"""The packed 1-bit artefact: exact round trip of the eval logits, bit layout, size vs #Param (MB), bad files, CLI."""

import json

import pytest
import torch
from model_helpers import trained_like
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import onebit
from onebit.analysis.complexity import complexity
from onebit.binarize import channel_abs_mean
from onebit.cli import main
from onebit.export import (
    FORMAT,
    ExportError,
    FoldedWeight,
    _pack_codes,
    _unpack_codes,
    export_packed,
    load_packed,
    packed_metadata,
    param_mb,
)
from onebit.kernels.pack import pack_bits, unpack_bits
from onebit.layers.binary import BinaryMixin
from onebit.models import create_model


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _rewrite(src, dst, tensors=None, metadata=None):
    """Copy a safetensors file with some tensors/metadata replaced (``None`` values delete)."""
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        ts = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    for k, v in (tensors or {}).items():
        ts.pop(k) if v is None else ts.__setitem__(k, v)
    for k, v in (metadata or {}).items():
        meta.pop(k) if v is None else meta.__setitem__(k, v)
    save_file(ts, str(dst), metadata=meta)


DIGITS = [("reactnet_digits", {}), ("bnext_digits", {}), ("bnext18_digits", {}), ("resnet_digits", {})]


@pytest.mark.parametrize("name,kwargs", DIGITS + [("resnet_digits", {"family": "binary_resnet18"})])
def test_digits_models_round_trip_exactly(tmp_path, name, kwargs):
    torch.manual_seed(0)
    model = trained_like(create_model(name, **kwargs))
    x = torch.randn(4, 1, 16, 16)
    ref = _logits(model, x)
    report = export_packed(model, tmp_path / "m.safetensors")
    loaded = load_packed(tmp_path / "m.safetensors")
    assert not loaded.training
    assert torch.equal(_logits(loaded, x), ref)
    assert report["bytes"] == (tmp_path / "m.safetensors").stat().st_size
    assert report["param_mb"] == pytest.approx(complexity(model, (1, 16, 16)).mb, rel=1e-12)
    # every binary layer of the loaded model uses exactly the exported model's eval weight
    for (n, a), (_, b) in zip(model.named_modules(), loaded.named_modules()):
        if isinstance(a, BinaryMixin) and a.binarize_weight:
            assert isinstance(b.weight_binarizer, FoldedWeight), n
            with torch.no_grad():
                assert torch.equal(b.binary_weight(), a.binary_weight()), n


def test_bit_layout_and_folded_scale_match_the_latent_weights(tmp_path):
    """ReActNet: bit = 1 for W >= 0 along (in, kh, kw) of each output channel; scale = mean|W| (float64 check)."""
    torch.manual_seed(1)
    model = trained_like(create_model("reactnet_digits"))
    export_packed(model, tmp_path / "m.safetensors")
    layer = model.feature[2].binary_3x3
    w = layer.weight.detach()
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        bits = f.get_tensor("feature.2.binary_3x3.weight.bits")
        scale = f.get_tensor("feature.2.binary_3x3.weight.scale")
        assert f.metadata()["onebit.format"] == FORMAT
        assert json.loads(f.metadata()["onebit.model"])["name"] == "reactnet_digits"
    flat = w.reshape(w.shape[0], -1)
    assert bits.dtype == torch.uint8 and bits.shape == (w.shape[0], (flat.shape[1] + 7) // 8)
    # independent reference of the little-bit-order layout: bit k of byte j is value 8j + k
    ref = torch.zeros_like(bits)
    for k in range(flat.shape[1]):
        ref[:, k // 8] |= ((flat[:, k] >= 0).to(torch.uint8) << (k % 8)).to(torch.uint8)
    assert torch.equal(bits, ref)
    assert torch.equal(unpack_bits(bits, flat.shape[1], dim=1), flat >= 0)
    assert torch.equal(scale, channel_abs_mean(w).reshape(-1))
    ref64 = flat.double().abs().mean(dim=1)
    assert bool(((scale.double() - ref64).abs() <= 1e-6 * ref64).all())  # (not assert_close: it imports DTensor, 5 s)


def test_bnext_has_no_scales_and_refuses_the_progressive_regime(tmp_path):
    torch.manual_seed(0)
    model = create_model("bnext_digits")  # fresh: T = 1, clamp(W / T) is not ±1
    with pytest.raises(ExportError, match=r"temperature 1 .*set_temperature"):
        export_packed(model, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
    assert list(tmp_path.iterdir()) == []
    report = export_packed(trained_like(model), tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert sum(k.endswith(".weight.bits") for k in keys) == report["binary_layers"] == 13
    assert not any(k.endswith(".weight.scale") for k in keys)  # sign only: the scale is 1
    # the real tensors are stored once, fp32, concatenated: every parameter but the binary weights + BN statistics
    n_real = sum(p.numel() for n, p in model.named_parameters() if not n.endswith("binary_conv.weight"))
    n_stats = sum(2 * m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    n_temps = 13  # the inert temperature of each HardSign input binarizer
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        assert f.get_tensor("real.float32").numel() == n_real + n_stats + n_temps


def test_exact_zero_weights_keep_the_official_sign_of_zero(tmp_path):
    """sign(0) = 0 at eval cannot be one bit: the artefact lists the zeros and the loaded model reproduces them."""
    torch.manual_seed(2)
    model = trained_like(create_model("reactnet_digits"))
    layer = model.feature[1].binary_pw_down1
    with torch.no_grad():
        layer.weight.view(-1)[[0, 5, 77]] = 0.0
        eval_w = layer.binary_weight()
    assert int((eval_w == 0).sum()) == 3
    x = torch.randn(3, 1, 16, 16)
    export_packed(model, tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        assert f.get_tensor("feature.1.binary_pw_down1.weight.zeros").tolist() == [0, 5, 77]
    loaded = load_packed(tmp_path / "m.safetensors")
    with torch.no_grad():
        assert torch.equal(loaded.feature[1].binary_pw_down1.binary_weight(), eval_w)
    assert torch.equal(_logits(loaded, x), _logits(model, x))


def test_reactnet_a_round_trip_and_size(tmp_path):
    torch.manual_seed(0)
    model = trained_like(create_model("reactnet_a"))
    x = torch.randn(2, 3, 32, 32)
    report = export_packed(model, tmp_path / "reactnet_a.safetensors")
    assert torch.equal(_logits(load_packed(tmp_path / "reactnet_a.safetensors"), x), _logits(model, x))
    assert report["param_mb"] == pytest.approx(7.528, abs=1e-3)  # docs/official-code.md: 7.53
    # BN statistics (1.1 %) and the 10,912 folded alphas (0.55 %) are the overhead
    assert 1.0 < report["ratio"] <= 1.02


def test_bnext_tiny_artefact_is_within_2_percent_and_14_mb(tmp_path):
    torch.manual_seed(0)
    model = trained_like(create_model("bnext_tiny"))
    x = torch.randn(2, 3, 32, 32)
    report = export_packed(model, tmp_path / "bnext_tiny.safetensors", meta={"input_size": [3, 224, 224]})
    size = (tmp_path / "bnext_tiny.safetensors").stat().st_size
    assert report["bytes"] == size and report["mib"] == size / 2**20
    assert report["param_mb"] == pytest.approx(complexity(model, (3, 32, 32)).mb, rel=1e-12)
    assert report["param_mb"] == pytest.approx(13.32, abs=5e-3)  # paper: 13.3 MB
    assert size <= 14 * 2**20  # the papers' MB are MiB (docs/official-code.md)
    assert 1.0 < report["ratio"] <= 1.02
    assert packed_metadata(tmp_path / "bnext_tiny.safetensors")["meta"] == {"input_size": [3, 224, 224]}
    assert torch.equal(_logits(load_packed(tmp_path / "bnext_tiny.safetensors"), x), _logits(model, x))


@pytest.mark.parametrize("bits", ["8/8-4/8-4/8-8/8", "8/8-3/8-5/8-2/8"])
def test_quantized_model_stores_codes_at_their_bit_width(tmp_path, bits):
    from onebit.quantize import quantize_

    torch.manual_seed(0)
    model = trained_like(create_model("bnext_digits"))
    quantize_(model, bits)
    x = torch.randn(3, 1, 16, 16)
    report = export_packed(model, tmp_path / "q.safetensors")
    assert report["quantized_layers"] == 2 * 13 + 2  # SE squeeze/expand per processor, stem, classifier
    loaded = load_packed(tmp_path / "q.safetensors")
    assert torch.equal(_logits(loaded, x), _logits(model, x))
    layer = model.feature[3].FFN.se.se[3]  # an expand conv
    codes = layer.weight_codes()
    with safe_open(str(tmp_path / "q.safetensors"), framework="pt") as f:
        packed = f.get_tensor("feature.3.FFN.se.se.3.weight.codes")
    b = codes["bits"]
    assert packed.numel() == (codes["codes"].numel() * b + 7) // 8  # e.g. two 4-bit codes per byte
    assert torch.equal(_unpack_codes(packed, b, codes["codes"].numel()), codes["codes"].reshape(-1))
    # the loaded layer reports the stored codes, so re-exporting it writes the same tensors
    assert torch.equal(loaded.feature[3].FFN.se.se[3].weight_codes()["codes"], codes["codes"])


@pytest.mark.parametrize("bits", range(2, 9))
def test_code_packing_round_trips(bits):
    g = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2**bits, (37, 5), generator=g, dtype=torch.uint8)
    packed = _pack_codes(codes, bits)
    assert packed.numel() == (codes.numel() * bits + 7) // 8
    assert torch.equal(_unpack_codes(packed, bits, codes.numel()), codes.reshape(-1))
    if bits == 4:  # two codes per byte, the first in the low nibble
        assert int(packed[0]) == int(codes.reshape(-1)[0]) | int(codes.reshape(-1)[1]) << 4
    if bits == 8:
        assert torch.equal(packed, codes.reshape(-1))
    assert torch.equal(
        _pack_codes(torch.tensor([1, 0, 1], dtype=torch.uint8), 1), pack_bits(torch.tensor([1, 0, 1]).bool())
    )


def test_param_mb_matches_the_summary_for_step1_models():
    model = create_model("reactnet_digits", step=1)  # real weights: nothing counts as binary
    assert param_mb(model) == pytest.approx(complexity(model, (1, 16, 16)).mb, rel=1e-12)
    assert param_mb(model) == pytest.approx(4 * sum(p.numel() for p in model.parameters()) / 2**20)


@pytest.fixture(scope="module")
def artefact(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("packed") / "m.safetensors"
    export_packed(trained_like(create_model("reactnet_digits", width=8)), path)
    return path


def test_missing_truncated_and_foreign_files_are_named(tmp_path, artefact):
    with pytest.raises(ExportError, match=r"nope\.safetensors: no such packed artefact"):
        load_packed(tmp_path / "nope.safetensors")
    data = artefact.read_bytes()
    for cut in (4, 200, len(data) // 2, len(data) - 1):
        (tmp_path / "cut.safetensors").write_bytes(data[:cut])
        with pytest.raises(ExportError, match=r"cut\.safetensors: not a readable safetensors file"):
            load_packed(tmp_path / "cut.safetensors")
    save_file({"weight": torch.zeros(3)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ExportError, match=r"foreign\.safetensors: not a onebit packed artefact"):
        load_packed(tmp_path / "foreign.safetensors")


def test_inconsistent_files_say_what_is_wrong(tmp_path, artefact):
    bad = tmp_path / "bad.safetensors"
    cases = [
        ({}, {"onebit.version": "99"}, r"layout version '99'"),
        ({}, {"onebit.model": None}, r"metadata 'onebit.model' is missing"),
        ({}, {"onebit.model": "{not json"}, r"'onebit.model' is not valid JSON"),
        ({}, {"onebit.model": json.dumps({"name": "no_such_model", "kwargs": {}})}, r"no_such_model"),
        ({}, {"onebit.model": json.dumps({"name": "reactnet_digits", "kwargs": {"width": 16}})}, r"model needs"),
        # step 1 has the same layers with real weights: the real tensors were written for another structure
        ({}, {"onebit.model": json.dumps({"name": "reactnet_digits", "kwargs": {"width": 8, "step": 1}})}, "not wr"),
        ({"feature.1.binary_3x3.weight.bits": None}, {}, r"tensor 'feature.1.binary_3x3.weight.bits' is missing"),
        ({"feature.1.binary_3x3.weight.bits": torch.zeros(3, 3, dtype=torch.uint8)}, {}, r"the model needs"),
        ({"real.float32": torch.zeros(5)}, {}, r"'real.float32' is torch.float32 \(5,\)"),
        ({"extra": torch.zeros(2)}, {}, r"1 tensors the model 'reactnet_digits' does not have"),
    ]
    for tensors, metadata, message in cases:
        _rewrite(artefact, bad, tensors, metadata)
        with pytest.raises(ExportError, match=message):
            load_packed(bad)


SCALE = "feature.1.binary_3x3.weight.scale"  # ReActNet's alpha: one float32 per output channel (8 at width 8)
ZEROS = "feature.1.binary_3x3.weight.zeros"  # not in the file (no exact zeros): added by the tampering
BITS = "feature.1.binary_3x3.weight.bits"


def _tensor(path, key):
    """Tensor ``key`` of the safetensors file ``path`` (``None`` when absent)."""
    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor(key) if key in f.keys() else None  # noqa: SIM118


# (id, tensor key, tampered value from the stored one, message after "<file>: ")
DTYPE_CASES = [
    ("scale-bool", SCALE, lambda t: t > 0, rf"tensor '{SCALE}' is bool, expected float32"),
    ("scale-int32", SCALE, lambda t: t.to(torch.int32), rf"tensor '{SCALE}' is int32, expected float32"),
    ("scale-int64", SCALE, lambda t: t.to(torch.int64), rf"tensor '{SCALE}' is int64, expected float32"),
    ("scale-fp16", SCALE, lambda t: t.half(), rf"tensor '{SCALE}' is float16, expected float32"),
    ("scale-bf16", SCALE, lambda t: t.bfloat16(), rf"tensor '{SCALE}' is bfloat16, expected float32"),
    ("scale-fp64", SCALE, lambda t: t.double(), rf"tensor '{SCALE}' is float64, expected float32"),
    ("scale-complex", SCALE, lambda t: t.to(torch.complex64), rf"tensor '{SCALE}' is complex64, expected float32"),
    (
        "scale-shape",
        SCALE,
        lambda t: t[:-1],
        rf"tensor '{SCALE}' is torch.float32 \(7,\), the model needs torch.float32 \(8,\)",
    ),
    ("scale-negative", SCALE, lambda t: -t, rf"tensor '{SCALE}' holds non-finite or non-positive scales"),
    ("scale-nan", SCALE, lambda t: t * float("nan"), rf"tensor '{SCALE}' holds non-finite or non-positive scales"),
    ("zeros-int64", ZEROS, lambda t: torch.tensor([0, 1]), rf"tensor '{ZEROS}' is int64, expected int32"),
    ("zeros-float", ZEROS, lambda t: torch.tensor([0.0, 1.0]), rf"tensor '{ZEROS}' is float32, expected int32"),
    ("zeros-bool", ZEROS, lambda t: torch.tensor([True]), rf"tensor '{ZEROS}' is bool, expected int32"),
    (
        "zeros-2d",
        ZEROS,
        lambda t: torch.tensor([[0, 1]], dtype=torch.int32),
        rf"tensor '{ZEROS}' has shape \(1, 2\), expected a 1-d",
    ),
    (
        "zeros-range",
        ZEROS,
        lambda t: torch.tensor([-1], dtype=torch.int32),
        rf"tensor '{ZEROS}' holds indices outside the weight",
    ),
    ("bits-int8", BITS, lambda t: t.to(torch.int8), rf"tensor '{BITS}' is int8, expected uint8"),
    ("real-fp64", "real.float32", lambda t: t.double(), r"tensor 'real.float32' is float64, expected float32"),
]


@pytest.mark.parametrize(("key", "make", "message"), [c[1:] for c in DTYPE_CASES], ids=[c[0] for c in DTYPE_CASES])
def test_tensors_of_the_wrong_dtype_or_shape_are_named(tmp_path, artefact, key, make, message):
    bad = tmp_path / "bad.safetensors"
    _rewrite(artefact, bad, {key: make(_tensor(artefact, key))})
    with pytest.raises(ExportError, match=rf"bad\.safetensors: {message}"):
        load_packed(bad)


def test_scale_dtype_is_the_weight_dtype_the_exporter_writes(artefact):
    assert _tensor(artefact, SCALE).dtype == torch.float32 and _tensor(artefact, BITS).dtype == torch.uint8
    loaded = load_packed(artefact)  # the untampered file loads
    assert loaded.feature[1].binary_3x3.weight.dtype == torch.float32


def test_quantized_codes_and_bits_are_checked(tmp_path):
    from onebit.quantize import quantize_

    torch.manual_seed(0)
    model = trained_like(create_model("bnext_digits"))
    quantize_(model, "8/8-4/8-4/8-8/8")
    good = tmp_path / "q.safetensors"
    export_packed(model, good)
    codes = "feature.3.FFN.se.se.3.weight.codes"
    with safe_open(str(good), framework="pt") as f:
        meta, packed, qmin = dict(f.metadata()), f.get_tensor(codes), f.get_tensor("feature.3.FFN.se.se.3.weight.min")
    bits = json.loads(meta["onebit.quant_bits"])
    bad = tmp_path / "bad.safetensors"
    cases = [
        ({codes: packed.to(torch.int16)}, {}, rf"tensor '{codes}' is int16, expected uint8"),
        ({"feature.3.FFN.se.se.3.weight.min": qmin.half()}, {}, r"weight.min' is float16, expected float32"),
        ({}, {"onebit.quant_bits": json.dumps({**bits, "feature.3.FFN.se.se.3": 5})}, r"gives layer .* 5 bits"),
        ({}, {"onebit.quant_bits": json.dumps({**bits, "feature.3.FFN.se.se.3": "4"})}, r"gives layer .* '4' bits"),
        ({}, {"onebit.quant_bits": "[4]"}, r"'onebit.quant_bits' is not a layer -> bits mapping"),
    ]
    for tensors, metadata, message in cases:
        _rewrite(good, bad, tensors, metadata)
        with pytest.raises(ExportError, match=message):
            load_packed(bad)


def test_export_is_atomic(tmp_path, artefact, monkeypatch):
    import onebit.export

    out = tmp_path / "m.safetensors"
    out.write_bytes(artefact.read_bytes())

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(onebit.export, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        export_packed(trained_like(create_model("reactnet_digits", width=8)), out)
    assert out.read_bytes() == artefact.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left


def test_model_without_spec_is_refused(tmp_path):
    from onebit.layers import BinaryConv2d

    with pytest.raises(ExportError, match="no onebit_spec"):
        export_packed(nn.Sequential(BinaryConv2d(4, 4, 3, padding=1)), tmp_path / "m.safetensors")


def test_cli_exports_a_run_directory(tmp_path, capsys):
    from onebit.checkpoint import save_checkpoint
    from onebit.config import ModelConfig, RunConfig, save_json
    from onebit.models.io import load_model

    torch.manual_seed(0)
    run = tmp_path / "run"
    run.mkdir()
    save_json(RunConfig(model=ModelConfig(name="bnext_digits", num_classes=10)), run / "config.json")
    save_checkpoint(run / "checkpoints", "last", trained_like(create_model("bnext_digits")), {}, {})
    code = main(["export", str(run), "--format", "packed", "--out", str(tmp_path / "run.safetensors")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "#Param (MB" in out and "size / #Param" in out
    model, info = load_model(run)
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(_logits(load_packed(tmp_path / "run.safetensors"), x), _logits(model, x))
    meta = packed_metadata(tmp_path / "run.safetensors")["meta"]
    assert meta == {"source": str(run), "input_size": info["input_size"]}

    # a fresh BNext (T = 1) is refused with the remedy, exit code 2
    code = main(["export", "bnext_digits", "--out", str(tmp_path / "fresh.safetensors")])
    out = capsys.readouterr().err
    assert code == 2 and "set_temperature" in " ".join(out.split())
    assert main(["export", str(tmp_path / "missing_dir"), "--out", str(tmp_path / "x.safetensors")]) == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [n for n in onebit.list_models() if n != "quantized" and not n.endswith("digits") and n != "resnet_digits"]
)
def test_every_registered_imagenet_model_round_trips(tmp_path, name):
    torch.manual_seed(0)
    model = trained_like(create_model(name))
    x = torch.randn(2, 3, 32, 32)
    report = export_packed(model, tmp_path / "m.safetensors")
    assert torch.equal(_logits(load_packed(tmp_path / "m.safetensors"), x), _logits(model, x))
    if "quant" not in name:
        assert 1.0 < report["ratio"] <= 1.02, report
    else:  # codes at their bit width; per-group min/max/scale (not counted by the paper) are the overhead
        assert report["mib"] < report["param_mb"] and report["ratio_quantized"] < 1.1, report

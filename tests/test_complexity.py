"""Complexity counts (onebit.analysis.complexity): a hand-computed case and the official key files' numbers."""

from __future__ import annotations

import io
import json

import pytest
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import onebit.models  # noqa: F401  (registers the families' layouts)
from onebit.analysis.complexity import ComplexityReport, complexity, format_table
from onebit.layers import BinaryConv2d
from onebit.models.official import LAYOUTS, official_keys

# A 224x224 forward of BNext-L (52e9 binary MACs, 326 M parameters) takes well over 10 s on a 2-core CPU; the next
# largest (BNext-M, 20e9) stays below. Anything above this many binary MACs is marked slow.
SLOW_BOPS = 30e9


def _layouts_with_keys() -> list:
    params = []
    for name in LAYOUTS.list():
        compact = official_keys(LAYOUTS.get(name).keys or name)
        if compact is None:
            continue
        slow = compact["ops"]["BOPs"] > SLOW_BOPS
        params.append(pytest.param(name, compact, marks=[pytest.mark.slow] if slow else [], id=name))
    return params


def _close(ours: float, theirs: float, rel: float = 0.005) -> bool:
    return abs(ours - theirs) <= rel * abs(theirs)


@pytest.mark.parametrize(("layout", "compact"), _layouts_with_keys())
def test_counts_match_official_keys(layout, compact):
    model = LAYOUTS.get(layout).build()
    per_kind = compact["ops"]["per_kind_macs"]
    # Step-1 files count the convs that step 2 binarizes as binary (their model binarizes activations only).
    stage1 = "binarized_in_step2" in per_kind
    report = complexity(model, (3, 224, 224), assume_binary=stage1)
    pc, ops = compact["param_counts"], compact["ops"]
    measured = {
        "n_binary": report.n_binary,
        "n_nonbinary": report.n_real,
        "mb_1bit_binary_fp32_rest_MiB": report.mb_float_rest,
        "BOPs": report.bops,
        "FLOPs_nonbinary_macs": report.flops,
        "OPs": report.ops,
    }
    expected = {**{k: pc[k] for k in list(measured)[:3]}, **{k: ops[k] for k in list(measured)[3:]}}
    off = {k: (measured[k], expected[k]) for k in measured if not _close(measured[k], expected[k])}
    assert not off, f"{layout}: (measured, keys file) differ by > 0.5 %: {off}"
    if stage1:
        as_is = complexity(model, (3, 224, 224))
        assert as_is.bops == 0 and as_is.n_binary == 0
        assert as_is.flops == report.bops + report.flops


def _tiny(binarize_input: bool = True, binarize_weight: bool = True) -> nn.Sequential:
    conv = BinaryConv2d(4, 8, 3, padding=1, binarize_input=binarize_input, binarize_weight=binarize_weight)
    return nn.Sequential(conv, nn.Flatten(), nn.Linear(8 * 6 * 6, 10))


def test_hand_computed():
    report = complexity(_tiny(), (4, 6, 6))
    conv_macs = 6 * 6 * 8 * (4 * 3 * 3)  # output positions x output channels x (C_in k k)
    fc_macs = 288 * 10
    assert report.n_binary == 8 * 4 * 3 * 3
    assert report.n_real == 288 * 10 + 10
    assert report.mb == (288 * 1 + 2890 * 32) / 8 / 2**20
    assert (report.bops, report.flops) == (conv_macs, fc_macs)
    assert report.ops == conv_macs / 64 + fc_macs == 3042
    assert report.binary_share == conv_macs / (conv_macs + fc_macs)
    rows = {r.name: r for r in report.layers}
    assert (rows["0"].kind, rows["0"].macs, rows["0"].params_binary) == ("binary", conv_macs, 288)
    assert (rows["2"].kind, rows["2"].macs, rows["2"].params_real) == ("real", fc_macs, 2890)


@pytest.mark.parametrize(("bi", "bw"), [(False, True), (True, False), (False, False)])
def test_half_binary_layers_count_as_flops(bi, bw):
    report = complexity(_tiny(bi, bw), (4, 6, 6))
    assert report.bops == 0
    assert report.flops == 10368 + 2880
    # The weight is binary storage iff binarize_weight is on, whatever the input does.
    assert report.n_binary == (288 if bw else 0)
    assert complexity(_tiny(bi, bw), (4, 6, 6), assume_binary=True).bops == 10368


def test_shared_module_counts_every_call():
    lin = nn.Linear(5, 5)
    report = complexity(nn.Sequential(lin, nn.ReLU(), lin), (5,))
    assert report.flops == 2 * 25 and report.n_real == 30
    assert [r.calls for r in report.layers if r.type == "Linear"] == [2]


def test_model_left_untouched():
    model = _tiny()
    conv = model[0]
    conv.latent_clip, conv.latent_clip_when = 0.01, "always"
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    complexity(model, (4, 6, 6))
    assert model.training and conv.latent_clip == 0.01
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not conv._forward_hooks


def test_report_serialisation_and_table():
    report = complexity(_tiny(), (4, 6, 6))
    d = json.loads(json.dumps(report.to_dict()))
    assert d["bops"] == 10368 and d["mb"] == report.mb and len(d["layers"]) == 2
    assert "layers" not in report.to_dict(per_layer=False)
    assert isinstance(report, ComplexityReport)
    console = Console(width=160, record=True, file=io.StringIO())
    for per_layer in (False, True):
        table = format_table(report, per_layer=per_layer)
        assert isinstance(table, Table)
        console.print(table)
    text = console.export_text()
    assert "BOPs" in text and "BinaryConv2d" in text


def test_quantised_layers_count_their_bits_and_qops():
    from onebit.analysis.complexity import quantized_size_mib
    from onebit.models import create_model
    from onebit.quantize import QuantConfig, quantize_

    model = create_model("bnext_tiny").eval()
    before = complexity(model, (3, 64, 64))
    quantize_(model, QuantConfig.from_bits("8/8-4/8-4/8-8/8"))
    after = complexity(model, (3, 64, 64))
    assert after.n_real == before.n_real and after.flops == before.flops and after.bops == before.bops
    assert after.mb == pytest.approx(quantized_size_mib(model), abs=1e-12)
    assert after.mb < before.mb
    assert 0 < after.qmacs <= after.flops
    assert after.ops_quant == pytest.approx(after.bops / 64 + after.flops - after.qmacs * 7 / 8)
    assert before.qmacs == 0 and before.ops_quant == before.ops

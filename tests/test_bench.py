"""``onebit bench`` and the benchmark library: fp32 baseline equivalence, JSON output, errors."""

from __future__ import annotations

import json

import torch

from onebit.cli import main
from onebit.kernels.benchmark import bench_model, fast_float_model
from onebit.models import create_model
from onebit.models.io import save_model_dir


def test_fast_float_model_equals_eval_model():
    model = create_model("reactnet_digits", width=8).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        ref = model(x)
        out = fast_float_model(model)(x)
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_bench_model_reports_every_variant():
    model = create_model("reactnet_digits", width=8)
    r = bench_model(model, resolution=16, in_chans=1, warmup=1, repeats=2)
    assert {"fp32", "fp32_channels_last", "packed"} <= set(r["latency_ms"])
    assert r["speedup"]["packed_vs_fp32"] > 0
    assert r["max_abs_logit_diff"] < 1e-3
    assert not r["pack_report"]["float_layers"] and r["pack_report"]["fused"]
    assert set(r["per_layer_ms"]["packed"]) == set(r["per_layer_ms"]["fp32"])
    assert torch.get_num_threads() >= 1


def test_bench_cli_prints_ratio_and_writes_json(capsys, tmp_path):
    model_dir = save_model_dir(create_model("reactnet_digits", width=8), tmp_path / "m")
    code = main(["bench", str(model_dir), "--resolution", "16", "--repeats", "2", "--warmup", "1", "--threads", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "packed / fp32 speed ratio" in out and "per block" in out
    data = json.loads((model_dir / "bench.json").read_text())
    assert data["threads"] == 1 and data["resolution"] == 16 and data["model"] == str(model_dir)
    assert data["backend"]["backend"] in ("native", "torch")


def test_bench_cli_errors(capsys, tmp_path):
    assert main(["bench", "no_such_model"]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["bench", "reactnet_digits", "--threads", "0"]) == 2

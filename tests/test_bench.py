"""``onebit bench`` and the benchmark library: fp32 baseline equivalence, JSON output, errors."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from onebit.cli import main
from onebit.kernels.benchmark import bench_model, cpu_info, fast_float_model, fastest, time_variants
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


# ------------------------------------------------------------------------------------ packed artefacts (.safetensors)
def _artefact(tmp_path):
    """A tiny model exported through the CLI, as a user does: ``onebit export ... --format packed``."""
    model_dir = save_model_dir(create_model("reactnet_digits", width=8), tmp_path / "m")
    path = tmp_path / "digits.safetensors"
    assert main(["export", str(model_dir), "--format", "packed", "--out", str(path), "--resolution", "16"]) == 0
    return model_dir, path


def test_bench_packed_artefact_times_the_loaded_model_against_its_fp32(capsys, tmp_path, monkeypatch):
    model_dir, path = _artefact(tmp_path)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    code = main(["bench", str(path), "--repeats", "1", "--warmup", "0", "--no-per-layer"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "packed artefact" in out and "reactnet_digits" in out and "packed / fp32 speed ratio" in out
    data = json.loads((tmp_path / "bench-digits.json").read_text())
    # the input size the artefact records (onebit export --resolution 16, 1 channel), not the default 224
    assert data["resolution"] == 16
    assert data["artefact"]["model"]["name"] == "reactnet_digits"
    assert data["artefact"]["meta"]["source"] == str(model_dir)
    assert {"fp32", "fp32_channels_last", "packed"} <= set(data["latency_ms"])
    assert data["speedup"]["packed_vs_fp32"] > 0 and data["max_abs_logit_diff"] < 1e-3
    assert data["images_per_s"]["packed"] > 0
    assert not data["pack_report"]["float_layers"]


def test_bench_packed_artefact_packed_only(capsys, tmp_path):
    _, path = _artefact(tmp_path)
    out_json = tmp_path / "b.json"
    code = main(["bench", str(path), "--repeats", "1", "--warmup", "0", "--packed-only", "--out", str(out_json)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "speed ratio" not in out and "per block" in out
    data = json.loads(out_json.read_text())
    assert set(data["latency_ms"]) == {"packed"} and data["fp32_best"] is None and data["speedup"] == {}
    assert set(data["per_layer_ms"]) == {"packed"}


def test_bench_packed_artefact_errors(capsys, tmp_path):
    assert main(["bench", str(tmp_path / "missing.safetensors")]) == 2
    assert "no such packed artefact" in capsys.readouterr().err
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    assert main(["bench", str(foreign)]) == 2
    assert "not a onebit packed artefact" in capsys.readouterr().err
    assert main(["bench", "reactnet_digits", "--resolution", "4"]) == 2


# ---------------------------------------------------------------------------------------- benchmark library pieces
def test_time_variants_warms_up_and_rotates():
    calls: list[str] = []
    variants = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    wall, cpu = time_variants(variants, warmup=2, repeats=3)
    assert calls[:6] == ["a", "a", "b", "b", "c", "c"]
    assert calls[6:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # each round starts one later
    assert all(len(v) == 3 for v in (*wall.values(), *cpu.values()))
    assert fastest({"fp32": 2.0, "fp32_channels_last": 1.0, "packed": 0.1}) == "fp32_channels_last"


def test_cpu_info_names_the_isa():
    info = cpu_info()
    assert info["model"] and info["logical_cpus"] >= 1
    assert {"avx2", "avx512f", "avx512_vpopcntdq"} <= set(info["isa"]) or platform.machine() not in ("x86_64", "AMD64")


# ------------------------------------------------------------------------------------------- benchmark scripts
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_packed_throughput_script_end_to_end(tmp_path, capsys):
    out = tmp_path / "tp.json"
    old = torch.get_num_threads()
    args = ["--models", "reactnet_digits", "--resolution", "16", "--batches", "1", "3", "--threads", "1"]
    report = _script("packed_throughput").main([*args, "--repeats", "1", "--warmup", "0", "--out", str(out)])
    assert torch.get_num_threads() == old
    assert "speed-up" in capsys.readouterr().out
    rows = json.loads(out.read_text())["results"]
    assert [r["batch"] for r in rows] == [1, 3] and rows == report["results"]
    for r in rows:
        assert r["images_per_s"]["packed"] == pytest.approx(r["batch"] * 1e3 / r["latency_ms"]["packed"])
        assert r["fp32_best"] in ("fp32", "fp32_channels_last") and r["speedup"]["packed_vs_fp32"] > 0


def test_peer_lce_driver_and_onebit_side():
    peer = _script("peer_lce")
    src = peer.driver_source()
    compile(src, "lce_driver.py", "exec")  # the LCE side is valid Python (it runs in the LCE environment)
    assert all(v in src for v in peer.LCE_VARIANTS) and peer.MARK in src
    threads = torch.get_num_threads()
    try:
        side = peer.OnebitSide(resolution=32, threads=1, backend=None, warmup=0)
        rounds = [side.round(1), side.round(1)]
    finally:
        torch.set_num_threads(threads)
    assert side.macs["binary"] == 1_676_279_808 * 32 * 32 // (224 * 224)  # Bi-Real Net 18's BOPs, scaled
    assert not side.pack_report["float_layers"]
    res = peer.summarize(rounds, list(side.variants))
    assert set(res["median_ms"]) == {"onebit_packed", "onebit_fp32", "onebit_fp32_channels_last"}
    assert all(len(v) == 2 for v in res["samples_ms"].values())


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_script_runs_its_cpu_parts_and_exits_0(tmp_path):
    cmd = ["bash", str(BENCHMARKS / "gpu_check.sh"), "--cpu", "--smoke-models", "reactnet_digits"]
    cmd += ["--smoke-resolution", "16", "--out-dir", str(tmp_path)]
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "smoke ok" in done.stdout and "SKIPPED" in done.stdout
    smoke = json.loads((tmp_path / "gpu_check_cpu_smoke.json").read_text())
    assert smoke["infer"]["results"] and smoke["train"]["results"]["reactnet_digits"]["ratios"]

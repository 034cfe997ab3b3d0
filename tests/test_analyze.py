"""``onebit analyze``: figures of a tiny real run, the saturation count, peak counting, graceful skips, the CLI."""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from onebit.analysis.analyze import (
    analyze_run,
    capture_binarizer_inputs,
    channel_cam,
    count_peaks,
    find_peaks,
    first_binary_conv,
    sdam,
    share_outside,
    ste_bound,
)
from onebit.binarize import ApproxSign, Identity, SignSTE
from onebit.checkpoint import load_weights
from onebit.cli import main
from onebit.config import apply_overrides, load_json
from onebit.data import build_data
from onebit.models.io import build_model
from onebit.recipes import get_recipe
from onebit.report import read_metrics
from onebit.train import run

PNG = b"\x89PNG\r\n\x1a\n"


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=160)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real two-stage run, small enough for seconds on a CPU."""
    out = tmp_path_factory.mktemp("run") / "tiny"
    cfg = apply_overrides(
        get_recipe("adambnn_digits", smoke=True), ["stages.*.epochs=2", "data.limit_train=64", "data.limit_val=32"]
    )
    run(cfg, out_dir=out, console=_quiet())
    return out


def _write_records(run_dir, records):
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _with_dynamics(src, dst):
    """A copy of ``src`` that has every piece the analysis can use: ``dyn`` epoch records (synthetic values where
    the runner did not write them) and ``stage<i>_<name>_epoch1`` checkpoints (copies of the stage checkpoints
    where the runner did not keep them)."""
    shutil.copytree(src, dst)
    cfg = load_json(dst / "config.json")
    name, layer = first_binary_conv(build_model(cfg))
    rng = np.random.default_rng(0)
    records = read_metrics(dst / "metrics.jsonl")
    for r in records:
        if r.get("type") == "epoch" and "dyn" not in r:
            sat = float(rng.uniform(0.1, 0.4))
            r["dyn"] = {
                "saturation": {name: sat},
                "saturation_mean": sat,
                "zero_grad_share": sat / 2,
                "zero_grad_layers": {name: sat / 2},
                "cam_mean": {name: 0.05},
                "sdam": {name: 0.01},
                "first_layer": name,
                "first_cam": rng.uniform(0.02, 0.1, layer.out_channels).tolist(),
                "update_cam_first": rng.uniform(1e-5, 1e-3, layer.out_channels).tolist(),
            }
    _write_records(dst, records)
    for i, stage in enumerate(cfg.stages):
        tag = f"stage{i + 1}_{stage.name}"
        if not (dst / "checkpoints" / f"{tag}_epoch1").exists():
            shutil.copytree(dst / "checkpoints" / tag, dst / "checkpoints" / f"{tag}_epoch1")
    return dst


# ---------------------------------------------------------------------------------------------------- helpers
def test_peaks_one_gaussian_is_one_peak():
    x = np.random.default_rng(0).normal(0.0, 0.3, 20_000)
    assert count_peaks(x).count == 1


def test_peaks_three_separated_gaussians_are_three():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(-1.3, 0.15, 6000), rng.normal(0.0, 0.2, 12_000), rng.normal(1.3, 0.15, 6000)])
    pk = count_peaks(torch.tensor(x))
    assert pk.count == 3
    assert pk.positions == pytest.approx([-1.3, 0.0, 1.3], abs=0.1)


def test_find_peaks_plateau_edge_and_prominence():
    assert find_peaks(np.array([0, 1, 3, 3, 3, 1, 0])).tolist() == [3]  # a flat top counts once, at its middle
    assert find_peaks(np.array([5, 3, 1, 0, 2, 0])).tolist() == [0, 4]  # a maximum at an end counts
    # a ripple of 1 % on a peak of 100 is not a peak at 2 % prominence, a 10 % bump is
    assert find_peaks(np.array([0, 50, 100, 50, 51, 40, 0]), 0.02).tolist() == [2]
    assert find_peaks(np.array([0, 50, 100, 40, 50, 30, 0]), 0.02).tolist() == [2, 4]
    assert find_peaks(np.zeros(5)).tolist() == []


def test_ste_bound_share_outside_cam_sdam():
    assert ste_bound(ApproxSign()) == 1.0 and ste_bound(SignSTE(1.5)) == 1.5
    assert ste_bound(SignSTE(None)) is None and ste_bound(Identity()) is None
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 1.0, 1.01])
    assert share_outside(x, 1.0) == pytest.approx(2 / 6)  # |x| == bound still passes the gradient
    assert share_outside(x, None) == 0.0
    w = torch.tensor([[1.0, -1.0], [0.5, -0.1]])
    assert channel_cam(w).tolist() == pytest.approx([1.0, 0.3])
    assert sdam(w) == pytest.approx(0.35)


# ---------------------------------------------------------------------------------------------------- on a run
@pytest.fixture(scope="module")
def analysed(tiny_run, tmp_path_factory):
    """The analysis of a copy of the tiny run that has every input the analysis can use."""
    run_dir = _with_dynamics(tiny_run, tmp_path_factory.mktemp("dyn") / "run")
    return run_dir, analyze_run(run_dir, samples=20, console=_quiet())


def test_every_figure_is_a_png(analysed):
    run_dir, res = analysed
    stages = [s.name for s in load_json(run_dir / "config.json").stages]
    expected = {"latent_distribution", "ff_c2i", "saturation"}
    for s in stages:
        expected |= {f"activations_{s}", f"latent_kernels_{s}", f"update_cam_{s}"}
    assert set(res["figures"]) == expected and res["skipped"] == []
    for path in res["figures"].values():
        assert path.startswith(str(run_dir / "analysis"))
        with open(path, "rb") as f:
            assert f.read(8) == PNG
    saved = json.loads((run_dir / "analysis" / "analysis.json").read_text())
    assert [r["stage"] for r in saved["stages"]] == stages
    for row in saved["stages"]:
        for key in ("val_top1", "ff_mean", "c2i", "saturation_epoch1", "saturation_end", "zero_grad_share"):
            assert row[key] is not None, key
        assert row["first_outside_epoch1"] is not None and row["sdam_first"] > 0 and row["latent_peaks"] >= 1
    assert "| stage |" in (run_dir / "analysis" / "summary.md").read_text()


def test_share_outside_equals_a_brute_force_count(analysed):
    run_dir, res = analysed
    cfg = load_json(run_dir / "config.json")
    images = build_data(cfg.data, cfg.seed).val.images[:20]
    assert res["samples"] == 20
    for i, stage in enumerate(cfg.stages):
        row = res["stages"][i]
        tag = f"stage{i + 1}_{stage.name}"
        for key, ck in (("end", tag), ("epoch1", f"{tag}_epoch1")):
            model = build_model(cfg)
            load_weights(model, run_dir / "checkpoints" / ck / "model.safetensors")
            model.eval()
            layer = dict(model.named_modules())[row["first_layer"]]
            seen = []
            # an independent capture: the conv's own input over a complete forward pass of the whole model
            handle = layer.register_forward_pre_hook(lambda m, args, seen=seen: seen.append(args[0].numpy().copy()))
            with torch.no_grad():
                model(images)
            handle.remove()
            x = np.concatenate([a.ravel() for a in seen])
            outside = sum(1 for v in x.tolist() if abs(v) > row["ste_bound"])
            assert row[f"first_outside_{key}"] == pytest.approx(outside / len(x), abs=1e-12)
        captured = capture_binarizer_inputs(model, layer, images, batch_size=7)  # batching does not change values
        assert torch.equal(captured, torch.from_numpy(x))


def test_missing_dynamics_skip_with_a_note_through_the_cli(tiny_run, tmp_path, capsys):
    run_dir = tmp_path / "old"
    shutil.copytree(tiny_run, run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    for r in records:
        r.pop("dyn", None)
        r.pop("dyn_stage", None)
    _write_records(run_dir, records)
    for p in (run_dir / "checkpoints").glob("*_epoch*"):
        shutil.rmtree(p)
    assert main(["analyze", str(run_dir), "--samples", "8"]) == 0
    printed = capsys.readouterr().out
    assert "dyn.update_cam_first" in printed and "dyn.saturation_mean" in printed and "_epoch<k>" in printed
    assert "optimisation dynamics per stage" in printed
    res = json.loads((run_dir / "analysis" / "analysis.json").read_text())
    assert "update_cam" not in " ".join(res["figures"]) and "saturation" not in res["figures"]
    assert {"latent_distribution", "ff_c2i"} <= set(res["figures"])
    assert all(Path(p).exists() for p in res["figures"].values())
    assert all(r["saturation_end"] is None and r["first_outside_end"] is not None for r in res["stages"])
    assert "Skipped" in (run_dir / "analysis" / "summary.md").read_text()


def test_cli_errors(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nowhere")]) == 2
    assert main(["analyze", str(tmp_path), "--samples", "0"]) == 2
    assert "error" in capsys.readouterr().err


def test_without_checkpoints_the_distribution_comes_from_the_stage_records(tiny_run, tmp_path):
    run_dir = tmp_path / "nockpt"
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns("checkpoints"))
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.normal(-1.2, 0.1, 3000), rng.normal(0, 0.2, 6000), rng.normal(1.2, 0.1, 3000)])
    counts, edges = np.histogram(values, bins=121, range=(-1.6, 1.6))
    records = read_metrics(run_dir / "metrics.jsonl")
    for r in records:
        if r.get("type") == "stage":
            r["dyn_stage"] = {"latent_hist": {"edges": edges.tolist(), "counts": counts.tolist()}}
    _write_records(run_dir, records)
    console = _quiet()
    res = analyze_run(run_dir, samples=8, console=console)
    assert [r["latent_peaks"] for r in res["stages"]] == [3, 3]
    assert "latent_distribution" in res["figures"] and not any(k.startswith("activations") for k in res["figures"])
    assert "no checkpoint of stage 1" in console.file.getvalue()

"""The command line: summary, import-official, recipes, and the default job (slow)."""

import json
import subprocess
import sys
import time

import pytest
import torch

from onebit.cli import main
from onebit.models import create_model, load_official
from onebit.models.io import load_model, save_model_dir
from onebit.models.official import LAYOUTS, export_official, official_keys


def _run(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().out


@pytest.mark.parametrize("name", ["bnext_tiny", "reactnet_a", "bnext18", "reactnet_resnet18"])
def test_summary_json_matches_keys_file(capsys, name):
    layout = name
    model = {"bnext18": "bnext_18"}.get(name, name)
    code, out = _run(capsys, "summary", model, "--json")
    assert code == 0
    got = json.loads(out)
    ref = official_keys(layout)
    assert got["mb"] == pytest.approx(ref["param_counts"]["mb_1bit_binary_fp32_rest_MiB"], rel=5e-3)
    assert got["bops"] == pytest.approx(ref["ops"]["BOPs"], rel=5e-3)
    assert got["ops"] == pytest.approx(ref["ops"]["OPs"], rel=5e-3)


def test_summary_table_prints_paper_units(capsys):
    code, out = _run(capsys, "summary", "bnext_tiny")
    assert code == 0
    assert "13.32" in out and "4.817e+09" in out and "8.861e+07" in out


def test_summary_unknown_model_is_an_error(capsys):
    code, out = _run(capsys, "summary", "bnext_tinny")
    assert code == 2 and "did you mean 'bnext_tiny'" in out


def test_import_official_writes_a_loadable_model_dir(capsys, tmp_path):
    torch.manual_seed(0)
    src = create_model("reactnet_a")
    sd = {f"module.{k}": v for k, v in export_official(src, "reactnet_a").items()}
    torch.save({"epoch": 3, "state_dict": sd}, tmp_path / "model_best.pth.tar")
    code, out = _run(
        capsys,
        "import-official",
        "reactnet_a",
        str(tmp_path / "model_best.pth.tar"),
        "--out",
        str(tmp_path / "imported"),
    )
    assert code == 0, out
    assert "7.53" in out
    model, info = load_model(tmp_path / "imported")
    assert info["layout"] == "reactnet_a"
    x = torch.randn(1, 3, 32, 32)
    ref = load_official("reactnet_a", sd).eval()
    assert torch.equal(model.eval()(x), ref(x))
    code, out = _run(capsys, "summary", str(tmp_path / "imported"), "--json")
    assert code == 0 and json.loads(out)["bops"] == official_keys("reactnet_a")["ops"]["BOPs"]


def test_import_official_reports_bad_checkpoint(capsys, tmp_path):
    torch.save({"state_dict": {"fc.weight": torch.zeros(3, 3)}}, tmp_path / "bad.pth")
    code, out = _run(capsys, "import-official", "reactnet_a", str(tmp_path / "bad.pth"), "--out", str(tmp_path / "o"))
    assert code == 2 and "fc.weight" in out


def test_model_spec_round_trip(tmp_path):
    m = create_model("reactnet_digits", width=4)
    assert m.onebit_spec == {"name": "reactnet_digits", "kwargs": {"num_classes": 10, "step": 2, "width": 4}}
    save_model_dir(m, tmp_path / "m")
    back, _ = load_model(tmp_path / "m")
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), back.state_dict().values()))


def test_recipes_lists_headers(capsys):
    code, out = _run(capsys, "recipes")
    assert code == 0 and "adambnn_digits" in out and "Expected" in out


@pytest.mark.slow
def test_default_job_reaches_95_percent_under_3_minutes(tmp_path):
    t0 = time.time()
    p = subprocess.run(
        [sys.executable, "-m", "onebit", "train", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    elapsed = time.time() - t0
    assert p.returncode == 0, p.stdout + p.stderr
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["stages"][1]["val_top1"] >= 0.95
    assert "val top-1" in p.stdout and "Run directory" in p.stdout
    assert elapsed < 180, f"default job took {elapsed:.0f} s"


def test_import_official_passes_layout_options(capsys, tmp_path):
    torch.manual_seed(0)
    sd = export_official(LAYOUTS.get("bnext18_quant").build(), "bnext18_quant")
    torch.save(sd, tmp_path / "q.pth")
    args = ["import-official", "bnext18_quant", str(tmp_path / "q.pth"), "--out", str(tmp_path / "imported")]
    code, out = _run(capsys, *args, "--option", "se_bits=4")
    assert code == 0, out
    model, _ = load_model(tmp_path / "imported")
    x = torch.randn(2, 3, 32, 32)
    ref = load_official("bnext18_quant", sd, se_bits=4).eval()
    assert torch.equal(model.eval()(x), ref(x))
    assert not torch.equal(ref(x), load_official("bnext18_quant", sd, se_bits=8).eval()(x))
    code, out = _run(capsys, *args[:-1], str(tmp_path / "o2"), "--option", "colour=red")
    assert code == 2 and "se_bits" in out

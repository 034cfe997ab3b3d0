"""The command line: summary, import-official, recipes, the command registry, the one error path (exit codes,
stderr), the post-training quantisation workflow, and the default job (slow)."""

import argparse
import json
import pkgutil
import subprocess
import sys

import pytest
import torch

import onebit.commands
from onebit.cli import build_parser, main
from onebit.commands import COMMANDS
from onebit.commands import recipes as recipes_command
from onebit.config import ConfigError
from onebit.models import create_model, load_official
from onebit.models.io import load_model, save_model_dir
from onebit.models.official import LAYOUTS, export_official, official_keys
from onebit.quantize import quant_layers
from onebit.train import RunInterrupted, TrainingDiverged
from onebit.train.ptq import QuantizeResult, quantize_model


def _run(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().out


def _run_err(capsys, *argv):
    """Exit code, stdout and stderr of ``onebit ARGV``."""
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


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
    code, out, err = _run_err(capsys, "summary", "bnext_tinny")
    assert code == 2 and "did you mean 'bnext_tiny'" in err and not out


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
    code, out, err = _run_err(
        capsys, "import-official", "reactnet_a", str(tmp_path / "bad.pth"), "--out", str(tmp_path / "o")
    )
    assert code == 2 and "fc.weight" in err


def test_model_spec_round_trip(tmp_path):
    m = create_model("reactnet_digits", width=4)
    assert m.onebit_spec == {"name": "reactnet_digits", "kwargs": {"num_classes": 10, "step": 2, "width": 4}}
    save_model_dir(m, tmp_path / "m")
    back, _ = load_model(tmp_path / "m")
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), back.state_dict().values()))


def test_recipes_lists_headers(capsys):
    code, out = _run(capsys, "recipes")
    assert code == 0 and "adambnn_digits" in out and "Expected" in out


def test_default_job_reaches_95_percent(tmp_path):
    """The README's main claim: the default `onebit train` (the AdamBNN two-step recipe on the bundled digits, about a
    minute on 2 cores) reaches at least 95 % val top-1 after step 2. Run in the default suite so CI guards it."""
    p = subprocess.run(
        [sys.executable, "-m", "onebit", "train", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["stages"][1]["val_top1"] >= 0.95
    assert "val top-1" in p.stdout and "Run directory" in p.stdout


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
    code, out, err = _run_err(capsys, *args[:-1], str(tmp_path / "o2"), "--option", "colour=red")
    assert code == 2 and "se_bits" in err


# ------------------------------------------------------------------------------------------------ command registry
def test_every_subcommand_is_registered_exactly_once():
    names = [c.NAME for c in COMMANDS]
    assert len(names) == len(set(names)) and len(COMMANDS) == len(set(COMMANDS))
    modules = {m.name for m in pkgutil.iter_modules(onebit.commands.__path__)} - {"common"}
    assert {c.__name__.rsplit(".", 1)[1] for c in COMMANDS} == modules  # no module left out of the tuple
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == names
    assert names[:4] == ["train", "summary", "import-official", "recipes"]
    assert all(callable(c.run) and callable(c.add_parser) for c in COMMANDS)


def test_import_official_help_names_the_layouts_not_files():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices["import-official"].format_help()
    assert "LAYOUTS" in text and "bnext_tiny" in " ".join(text.split())
    assert not any(f"{folder}/" in text for folder in ("spec", "shared"))  # no folder outside the repository


# ---------------------------------------------------------------------------------------------- the error path
def test_unknown_recipe_is_one_error_line_on_stderr(capsys, tmp_path):
    code, out, err = _run_err(capsys, "train", "no_such_recipe", "--out", str(tmp_path / "r"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: unknown recipe 'no_such_recipe'")
    assert not (tmp_path / "r").exists()


def test_bad_override_is_one_error_line_on_stderr(capsys, tmp_path):
    code, out, err = _run_err(capsys, "train", "--smoke", "stages.0.optim.lrr=1", "--out", str(tmp_path / "r"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and "stages.0.optim.lr" in err
    code, out, err = _run_err(capsys, "train", "--resume", str(tmp_path / "r"), "--smoke")
    assert code == 2 and out == "" and err.startswith("error: --resume")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=0", "data.batch_size must be >= 1, got 0"),
        ("data.batch_size=-5", "data.batch_size must be >= 1, got -5"),
        ("data.eval_batch_size=0", "data.eval_batch_size must be >= 1, got 0"),
        ("stages.*.optim.lr=nan", "stages.*.optim.lr must be a finite number >= 0, got nan"),
        ("stages.*.optim.lr=-1", "stages.*.optim.lr must be >= 0, got -1.0"),
        ("stages.*.epochs=0", "stages.*.epochs must be >= 1, got 0"),
        ("stages.0.epochs=-1", "stages.0.epochs must be >= 1, got -1"),
    ],
)
def test_out_of_domain_override_fails_before_the_run_directory_exists(capsys, tmp_path, override, message):
    run_dir = tmp_path / "D"
    code, out, err = _run_err(capsys, "train", "--smoke", override, "--out", str(run_dir))
    assert (code, out, err) == (2, "", f"error: {message}\n")
    assert not run_dir.exists() and list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def official_files(tmp_path_factory):
    """A valid safetensors and .pth of official reactnet_resnet18 tensors (a few keys: the files are cut anyway)."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("official")
    torch.manual_seed(0)
    state = export_official(LAYOUTS.get("reactnet_resnet18").build(), "reactnet_resnet18")
    state = dict(list(state.items())[:12])
    save_file(state, str(folder / "ckpt.safetensors"))
    torch.save({"state_dict": state}, folder / "ckpt.pth")
    return folder


@pytest.mark.parametrize("name", ["ckpt.safetensors", "ckpt.pth"])
def test_import_official_truncated_file_is_one_error_line(capsys, tmp_path, official_files, name):
    data = (official_files / name).read_bytes()
    trunc = tmp_path / f"trunc_{name}"
    trunc.write_bytes(data[: len(data) // 2])
    out_dir = tmp_path / "imported"
    code, out, err = _run_err(capsys, "import-official", "reactnet_resnet18", str(trunc), "--out", str(out_dir))
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"error: {trunc}: not a readable checkpoint (") and err.endswith(")\n"), err
    assert not out_dir.exists()


@pytest.mark.parametrize(("blocked", "dynamo"), [("onnx", False), ("onnxscript", True)])
def test_export_onnx_without_the_extra_is_one_error_line(capsys, monkeypatch, tmp_path, blocked, dynamo):
    monkeypatch.setitem(sys.modules, blocked, None)  # as if not installed
    argv = ["export", "reactnet_digits", "--format", "onnx", "--resolution", "16", "--out", str(tmp_path / "m.onnx")]
    code, out, err = _run_err(capsys, *argv, *(["--dynamo"] if dynamo else []))
    assert code == 2 and out == "" and err.count("\n") == 1, err
    hint = 'ONNX export needs the onnx extra: pip install "onebit[onnx]"'
    assert err == f"error: {hint} (module {blocked!r} is not installed)\n"
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left


def test_export_onnx_keeps_exporter_bugs_as_tracebacks(monkeypatch, tmp_path):
    from onebit.export import ExportError, export_onnx

    model = create_model("reactnet_digits", width=4)

    def raising(exc):
        def export(*args, **kwargs):
            raise exc

        return export

    def from_import_error():
        try:
            raise ModuleNotFoundError("No module named 'onnx'", name="onnx")
        except ImportError as e:
            raise torch.onnx.OnnxExporterError("Module onnx is not installed!") from e

    try:
        from_import_error()
    except torch.onnx.OnnxExporterError as e:
        missing = e
    cases = [
        (RuntimeError("exporter bug"), RuntimeError),
        (torch.onnx.OnnxExporterError("unsupported op"), torch.onnx.OnnxExporterError),
        (ModuleNotFoundError("No module named 'onnxscript'", name="onnxscript"), ExportError),
        (missing, ExportError),
    ]
    for exc, expected in cases:
        monkeypatch.setattr(torch.onnx, "export", raising(exc))
        with pytest.raises(expected) as e:
            export_onnx(model, tmp_path / "m.onnx", (1, 1, 16, 16))
        if expected is ExportError:
            assert 'pip install "onebit[onnx]"' in str(e.value)
        assert list(tmp_path.iterdir()) == []


def test_train_errors_are_reported_by_rank_0_only(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert _run_err(capsys, "train", "no_such_recipe") == (2, "", "")
    monkeypatch.setenv("RANK", "0")
    assert _run_err(capsys, "train", "no_such_recipe")[2].startswith("error: ")


def test_python_m_onebit_exits_2_on_a_user_mistake():
    p = subprocess.run(
        [sys.executable, "-m", "onebit", "train", "no_such_recipe"], capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stdout == "" and p.stderr.startswith("error: unknown recipe") and p.stderr.count("\n") == 1


def _raising(exc):
    def run(args, console):
        raise exc

    return run


@pytest.mark.parametrize(
    ("exc", "code", "text"),
    [
        (KeyboardInterrupt(), 130, "interrupted"),
        (RunInterrupted("interrupted at step 5; resume with onebit train --resume r"), 130, "resume with"),
        (TrainingDiverged("training stopped: loss is nan"), 1, "loss is nan"),
        (ConfigError("bad value"), 2, "error: bad value"),
        (FileNotFoundError("no such file: x"), 2, "error: no such file: x"),
    ],
)
def test_exit_codes_of_interrupts_divergence_and_user_mistakes(capsys, monkeypatch, exc, code, text):
    monkeypatch.setattr(recipes_command, "run", _raising(exc))
    got, out, err = _run_err(capsys, "recipes")
    assert got == code and out == "" and text in err and err.count("\n") == 1


@pytest.mark.parametrize("exc", [RuntimeError("boom"), ValueError("a bug"), KeyError("a bug")])
def test_unexpected_exceptions_propagate(capsys, monkeypatch, exc):
    # recipes declares no USER_ERRORS: a plain ValueError / KeyError there is a bug, not the user's mistake
    monkeypatch.setattr(recipes_command, "run", _raising(exc))
    with pytest.raises(type(exc), match="boom|a bug"):
        main(["recipes"])
    assert capsys.readouterr().err == ""


# -------------------------------------------------------------------------------- post-training quantisation
@pytest.mark.parametrize(
    ("name", "kwargs", "se"), [("reactnet_digits", {"width": 4}, False), ("bnext_digits", {}, True)]
)
def test_quantize_model_library_function(tmp_path, name, kwargs, se):
    torch.manual_seed(0)
    src = save_model_dir(create_model(name, **kwargs).eval(), tmp_path / "src")
    res = quantize_model(
        src,
        bits="8/8-4/8-4/8-8/8",
        calibrate_batches=1,
        finetune_epochs=1,
        finetune_batches=1,
        finetune_lr=1e-4,
        limit_train=64,
        limit_val=48,
    )
    assert isinstance(res, QuantizeResult)
    assert res.out == src / "quantized" / "8_8-4_8-4_8-8_8" and res.bits == "8/8-4/8-4/8-8/8"
    assert res.data.endswith("64 train / 48 val")
    assert bool(res.notes) != se  # the note about the unused S and E widths only without an SE branch
    assert res.finetune["steps"] == 1 and res.calibration and res.config["activations"] == "calibrated"
    assert res.size_mib["quantized"] < res.size_mib["float"]
    for m in (res.before, res.after, res.after_finetune):
        assert set(m) >= {"val_loss", "val_top1", "val_top5"} and 0 <= m["val_top1"] <= 1
    report = json.loads((res.out / "quantize.json").read_text())
    assert report == json.loads(json.dumps(res.to_dict()))
    loaded, info = load_model(res.out)
    assert info["quantize"] == {"bits": res.bits, "source": str(src)}
    assert sum(1 for _ in quant_layers(loaded)) == len(res.layers) == sum(1 for _ in quant_layers(res.model))


def test_quantize_model_rejects_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="expected 4 groups"):
        quantize_model("bnext_digits", bits="8/8-4/8", out_dir=tmp_path / "q")
    with pytest.raises(ConfigError, match="give out_dir"):
        quantize_model("bnext_digits", bits="8/8")
    with pytest.raises(ConfigError, match=">= 0"):
        quantize_model("bnext_digits", out_dir=tmp_path / "q", calibrate_batches=-1)
    assert not (tmp_path / "q").exists()

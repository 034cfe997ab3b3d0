"""Teachers by spec (onebit.distill.teachers, onebit.models.external), onebit's float ResNet-18/34 in torchvision's
layout, and Python ``nn.Module`` teachers in ``onebit.train.run`` (onebit.train.task). Default environment: no timm
or torchvision needed (their paths: tests/test_teachers_external.py, marked ``external``)."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import subprocess
import sys

import pytest
import torch
from rich.console import Console
from safetensors.torch import save_file
from torch import nn

from onebit.cli import main
from onebit.config import ConfigError, apply_overrides
from onebit.distill import load_teacher
from onebit.distill.teachers import TeacherSpecError, parse_teacher_spec
from onebit.models import create_model
from onebit.models.io import ModelLoadError
from onebit.recipes import get_recipe
from onebit.train import run
from onebit.train.task import lift_python_teachers

# one stage of one epoch on 64 digits, 1 channel at 8 px: about a second
TINY = ["data.limit_train=32", "data.limit_val=16", "data.batch_size=16", "threads=1", "stages.*.epochs=1"]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def _tiny_cfg(*overrides: str):
    cfg = apply_overrides(get_recipe("adambnn_digits", smoke=True), [*TINY, *overrides])
    cfg.stages = cfg.stages[:1]
    return cfg


# ------------------------------------------------------------------------------------------------- float ResNet
def _torchvision_layout(depths: tuple[int, ...], num_classes: int = 1000) -> list[tuple[str, tuple[int, ...]]]:
    """torchvision's ResNet state dict (BasicBlock), key by key in its order, written from its layout."""

    def bn(prefix: str, c: int) -> list:
        return [(f"{prefix}.{k}", (c,)) for k in ("weight", "bias", "running_mean", "running_var")] + [
            (f"{prefix}.num_batches_tracked", ())
        ]

    keys = [("conv1.weight", (64, 3, 7, 7)), *bn("bn1", 64)]
    cin = 64
    for stage, (c, depth) in enumerate(zip((64, 128, 256, 512), depths, strict=True), start=1):
        for b in range(depth):
            p = f"layer{stage}.{b}"
            keys += [(f"{p}.conv1.weight", (c, cin, 3, 3)), *bn(f"{p}.bn1", c)]
            keys += [(f"{p}.conv2.weight", (c, c, 3, 3)), *bn(f"{p}.bn2", c)]
            if b == 0 and stage > 1:
                keys += [(f"{p}.downsample.0.weight", (c, cin, 1, 1)), *bn(f"{p}.downsample.1", c)]
            cin = c
    return keys + [("fc.weight", (num_classes, 512)), ("fc.bias", (num_classes,))]


@pytest.mark.parametrize(("name", "depths"), [("resnet18", (2, 2, 2, 2)), ("resnet34", (3, 4, 6, 3))])
def test_float_resnet_state_dict_is_torchvisions_layout(name, depths):
    model = create_model(name)
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == _torchvision_layout(depths)


@pytest.mark.parametrize(("name", "count"), [("resnet18", 11_689_512), ("resnet34", 21_797_672)])
def test_float_resnet_parameters_forward_and_init(name, count):
    torch.manual_seed(0)
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == count  # 11.69 M / 21.80 M
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1000)
    assert create_model(name, num_classes=10)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # torchvision's default init: convs Kaiming-normal with fan_out and the ReLU gain, BN weight 1 bias 0
    w = model.layer4[0].conv1.weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / (512 * 9)), rel=0.02)
    assert abs(w.mean().item()) < 1e-3
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in bns)


# ------------------------------------------------------------------------------------------------------ specs
@pytest.mark.parametrize(
    ("spec", "source", "name", "weights"),
    [
        ("timm:efficientnet_b0", "timm", "efficientnet_b0", None),
        ("timm:resnet18.a1_in1k@/w/r18.safetensors", "timm", "resnet18.a1_in1k", "/w/r18.safetensors"),
        ("torchvision:resnet34@/w/resnet34-b627a593.pth", "torchvision", "resnet34", "/w/resnet34-b627a593.pth"),
        ("resnet34", "onebit", "resnet34", None),
        ("resnet34@w.pth", "onebit", "resnet34", "w.pth"),
        ("python:teacher_1", "python", "teacher_1", None),
    ],
)
def test_parse_teacher_spec(spec, source, name, weights):
    p = parse_teacher_spec(spec)
    assert (p.source, p.name, None if p.weights is None else str(p.weights)) == (source, name, weights)


def test_parse_directories_and_files(tmp_path):
    d = tmp_path / "model@v1"  # an existing path is never split at '@'
    d.mkdir()
    assert parse_teacher_spec(str(d)).source == "dir"
    p = parse_teacher_spec(f"{d}@{tmp_path / 'w.pth'}")
    assert (p.source, p.name, p.weights) == ("dir", str(d), tmp_path / "w.pth")
    (tmp_path / "w.pth").write_bytes(b"")
    assert parse_teacher_spec(str(tmp_path / "w.pth")).source == "file"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("tim:resnet18", "unknown source 'tim:'; did you mean 'timm:'?"),
        ("torchvison:resnet34", "did you mean 'torchvision:'?"),
        ("resnt34", "did you mean resnet34"),
        ("resnet34@", "SPEC@FILE"),
        ("resnet34@/nonexistent/w.pth", "weights file /nonexistent/w.pth: no such file"),
        ("./no/such/run", "no such file or directory"),
        ("python:t", "teachers={'t': module}"),
        ("timm:", "needs a name"),
    ],
)
def test_spec_errors_are_one_line_user_errors(spec, expected):
    with pytest.raises(TeacherSpecError) as info:
        load_teacher(spec)
    msg = str(info.value)
    assert expected in msg and "\n" not in msg, msg
    assert isinstance(info.value, ModelLoadError) and isinstance(info.value, ValueError)  # CLI: exit 2


def test_directory_that_is_not_a_model_is_an_error(tmp_path):
    with pytest.raises(TeacherSpecError, match="neither a model directory"):
        load_teacher(str(tmp_path))
    (tmp_path / "w.pth").write_bytes(b"")
    with pytest.raises(TeacherSpecError, match="needs a model.json beside it"):
        load_teacher(str(tmp_path / "w.pth"))


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed here")
def test_timm_missing_names_the_extra():
    with pytest.raises(TeacherSpecError, match=r'pip install "onebit\[timm\]"'):
        load_teacher("timm:resnet18")


# ------------------------------------------------------------------------------------------- weights files
@pytest.fixture(scope="module")
def resnet34_10(tmp_path_factory):
    """onebit's ResNet-34 with 10 classes (eval) and its state dict saved four ways."""
    torch.manual_seed(1)
    model = create_model("resnet34", num_classes=10).eval()
    sd = model.state_dict()
    d = tmp_path_factory.mktemp("r34")
    torch.save(sd, d / "bare.pth")
    torch.save({"model": sd, "epoch": 3}, d / "wrapped.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, d / "dataparallel.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "weights.safetensors"))
    return model, d


@pytest.mark.parametrize("file", ["bare.pth", "wrapped.pt", "dataparallel.pth", "weights.safetensors"])
def test_onebit_resnet34_at_file(resnet34_10, file):
    model, d = resnet34_10
    teacher = load_teacher(f"resnet34@{d / file}", num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(teacher(x), model(x))
    rec = teacher.record()
    assert rec["arch"] == "resnet34" and rec["class"] == "FloatResNet" and rec["weights"] == str(d / file)
    assert rec["params_m"] == pytest.approx(21.290, abs=1e-3) and rec["accuracy"] is None


def test_weights_that_do_not_fit_name_the_keys(resnet34_10, tmp_path):
    _, d = resnet34_10
    with pytest.raises(TeacherSpecError) as info:  # 10-class file, 1000-class model
        load_teacher(f"resnet34@{d / 'bare.pth'}")
    assert "2 shape mismatches (fc.weight: file [10, 512], model [1000, 512], fc.bias: file [10]" in str(info.value)
    with pytest.raises(TeacherSpecError, match="built with num_classes=7"):
        load_teacher(f"resnet34@{d / 'bare.pth'}", num_classes=7)
    torch.save(create_model("resnet18", num_classes=10).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(TeacherSpecError) as info:
        load_teacher(f"resnet34@{tmp_path / 'r18.pth'}", num_classes=10)
    msg = str(info.value)
    assert "\n" not in msg and "missing keys (layer1.2.conv1.weight, layer1.2.bn1.weight" in msg, msg
    assert "unexpected" not in msg


def test_files_that_are_not_state_dicts(tmp_path):
    torch.save({"epoch": 3}, tmp_path / "meta.pth")
    with pytest.raises(TeacherSpecError, match="not a state dict"):
        load_teacher(f"resnet18@{tmp_path / 'meta.pth'}")
    torch.save(nn.Linear(2, 2), tmp_path / "pickled.pth")  # a pickled module: never unpickled
    with pytest.raises(TeacherSpecError, match="cannot read it as a weights-only torch file"):
        load_teacher(f"resnet18@{tmp_path / 'pickled.pth'}")
    (tmp_path / "bad.safetensors").write_bytes(b"nonsense")
    with pytest.raises(TeacherSpecError, match="cannot read it as a safetensors file"):
        load_teacher(f"resnet18@{tmp_path / 'bad.safetensors'}")


# ------------------------------------------------------------------------------------------ Python teachers
class TinyTeacher(nn.Module):
    def __init__(self, in_chans: int = 1, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 4, 3, padding=1)
        self.fc = nn.Linear(4, classes)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_lift_python_teachers_keys():
    a, b = TinyTeacher(), TinyTeacher()
    cfg = _tiny_cfg()
    cfg.stages[0].teachers = [a, "resnet_digits"]
    cfg.stages[0].assistants = [b, a]
    lifted, modules = lift_python_teachers(cfg, {"given": b})
    assert lifted.stages[0].teachers == ["python:TinyTeacher", "resnet_digits"]
    assert lifted.stages[0].assistants == ["python:given", "python:TinyTeacher"]
    assert modules == {"given": b, "TinyTeacher": a}
    assert cfg.stages[0].teachers[0] is a  # the caller's config is left alone
    with pytest.raises(ConfigError, match="must be a name"):
        lift_python_teachers(cfg, {"a b": a})


def test_run_with_a_module_teacher_in_the_config(tmp_path):
    """Used to fail writing config.json (TypeError: ... not JSON serializable)."""
    cfg = _tiny_cfg()
    teacher = TinyTeacher()
    cfg.stages[0].teachers = [teacher]
    result = run(cfg, out_dir=tmp_path / "run", console=_quiet())
    written = json.loads((tmp_path / "run/config.json").read_text())
    assert written["stages"][0]["teachers"] == ["python:TinyTeacher"]
    (rec,) = result.summary["stages"][0]["teachers"]
    assert rec["spec"] == "python:TinyTeacher" and rec["class"] == "TinyTeacher" and rec["role"] == "teacher"
    assert rec["params_m"] == pytest.approx(sum(p.numel() for p in teacher.parameters()) / 1e6, abs=1e-4)
    assert not any(p.requires_grad for p in teacher.parameters())  # frozen, as every teacher

    # a run directory as a teacher knows its accuracy: the final val top-1 of its summary
    t = load_teacher(str(tmp_path / "run"))
    assert t.record()["accuracy"] == result.summary["final"]["val_top1"]


def test_python_teachers_by_key_and_resume(tmp_path):
    cfg = _tiny_cfg("stages.0.teachers=python:t")
    with pytest.raises(TeacherSpecError, match=r"teachers=\{'t': module\}"):
        run(cfg, out_dir=tmp_path / "none", console=_quiet())
    assert not (tmp_path / "none").exists()
    with pytest.raises(ConfigError, match="no stage names other"):
        run(cfg, out_dir=tmp_path / "none", teachers={"t": TinyTeacher(), "other": TinyTeacher()}, console=_quiet())
    teacher = TinyTeacher()
    run(cfg, out_dir=tmp_path / "run", teachers={"t": teacher}, console=_quiet())
    assert json.loads((tmp_path / "run/config.json").read_text())["stages"][0]["teachers"] == ["python:t"]
    with pytest.raises(TeacherSpecError, match=r"a resumed run needs it again"):
        run(resume=tmp_path / "run", console=_quiet())
    run(resume=tmp_path / "run", teachers={"t": teacher}, console=_quiet())


def test_teacher_classes_must_be_the_students(tmp_path):
    cfg = _tiny_cfg()
    cfg.stages[0].teachers = [TinyTeacher(classes=7)]
    with pytest.raises(TeacherSpecError) as info:
        run(cfg, out_dir=tmp_path / "run", console=_quiet())
    msg = str(info.value)
    assert "gives logits of shape [7], but the student has 10 classes" in msg and "\n" not in msg
    assert not (tmp_path / "run").exists()  # nothing was trained: nothing left behind
    cfg.stages[0].teachers = [TinyTeacher(in_chans=3)]
    with pytest.raises(TeacherSpecError, match=r"cannot take the student's input \(1x8x8\)"):
        run(cfg, out_dir=tmp_path / "run", console=_quiet())


def test_resnet34_at_file_teaches_a_stage(resnet34_10, tmp_path):
    _, d = resnet34_10
    cfg = _tiny_cfg("data.channels=3", f"stages.0.teachers=resnet34@{d / 'weights.safetensors'}")
    cfg.model.kwargs["in_chans"] = 3
    result = run(cfg, out_dir=tmp_path / "run", console=_quiet())
    (rec,) = result.summary["stages"][0]["teachers"]
    assert rec["arch"] == "resnet34" and rec["weights"] == str(d / "weights.safetensors")


def test_cli_reports_a_bad_teacher_on_one_line(capsys, tmp_path):
    code = main(["train", "adambnn_digits", "--smoke", "stages.0.teachers=tim:resnet18", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean 'timm:'?" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_adambnn_reactnet_a_smoke_with_onebit_resnet34_teacher(tmp_path):
    """The acceptance command: ``onebit train adambnn_reactnet_a --smoke stages.*.teachers=resnet34@FILE``
    (ReActNet-A at 16 px on 3-channel digits, 10 classes; about 1.5 minutes on 2 CPU cores)."""
    torch.manual_seed(0)
    torch.save(create_model("resnet34", num_classes=10).state_dict(), tmp_path / "r34.pth")
    out = tmp_path / "run"
    args = ["train", "adambnn_reactnet_a", "--smoke", f"stages.*.teachers=resnet34@{tmp_path / 'r34.pth'}"]
    proc = subprocess.run(
        [sys.executable, "-m", "onebit", *args, "--out", str(out)], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [s["teachers"][0]["arch"] for s in summary["stages"]] == ["resnet34", "resnet34"]

"""Teachers from timm and torchvision, for real (the second CI environment, ``.ci/teachers.sh``: torch 2.14.1,
torchvision 0.29.1, timm). Every test is marked ``external`` and the file is skipped where timm or torchvision is
missing (the default environment)."""

from __future__ import annotations

import io
import json

import pytest
import torch
from rich.console import Console
from safetensors.torch import save_file

pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

from onebit.cli import main  # noqa: E402  (after the skips)
from onebit.config import apply_overrides  # noqa: E402
from onebit.data import write_imagefolder_fixture  # noqa: E402
from onebit.distill import load_teacher  # noqa: E402
from onebit.distill.teachers import TeacherSpecError  # noqa: E402
from onebit.models import create_model  # noqa: E402
from onebit.recipes import get_recipe  # noqa: E402
from onebit.report import read_metrics  # noqa: E402
from onebit.train import run  # noqa: E402

pytestmark = pytest.mark.external

SMALL_TIMM = "mobilenetv3_small_050"  # 0.6 M parameters with 10 classes; any input size from 16 px


@pytest.fixture(autouse=True)
def _few_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(min(n, 2))
    yield
    torch.set_num_threads(n)


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_float_resnet_equals_torchvision(name):
    """onebit's resnet18/34: torchvision's keys and shapes, and with torchvision's (random-init) weights copied in,
    identical logits in eval and in train mode."""
    torch.manual_seed(0)
    tv = torchvision.models.get_model(name, weights=None)
    ours = create_model(name)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in tv.state_dict().items()]
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    for train in (False, True):
        tv.train(train)
        ours.train(train)
        with torch.no_grad():
            assert torch.equal(ours(x), tv(x)), f"train={train}"


@pytest.fixture(scope="module")
def tv_resnet34_file(tmp_path_factory):
    torch.manual_seed(1)
    tv = torchvision.models.resnet34(weights=None).eval()
    path = tmp_path_factory.mktemp("tv") / "resnet34.pth"
    torch.save(tv.state_dict(), path)
    return tv, path


def test_torchvision_resnet34_at_file_and_onebit_resnet34_read_the_same_file(tv_resnet34_file):
    tv, path = tv_resnet34_file
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = tv(x)
    theirs = load_teacher(f"torchvision:resnet34@{path}")
    ours = load_teacher(f"resnet34@{path}")
    assert torch.equal(theirs(x), ref) and torch.equal(ours(x), ref)
    assert theirs.record()["arch"] == "torchvision:resnet34" and ours.record()["arch"] == "resnet34"
    assert theirs.record()["params_m"] == ours.record()["params_m"] == pytest.approx(21.7977, abs=1e-4)


def test_weights_of_another_model_name_the_keys(tv_resnet34_file):
    _, path = tv_resnet34_file
    with pytest.raises(TeacherSpecError) as info:
        load_teacher(f"torchvision:resnet18@{path}")
    msg = str(info.value)
    assert "\n" not in msg and "unexpected keys (layer1.2.conv1.weight" in msg, msg
    with pytest.raises(TeacherSpecError, match=r"built with num_classes=10: .*fc.weight: file \[1000, 512\]"):
        load_teacher(f"torchvision:resnet34@{path}", num_classes=10)


def test_timm_teacher_by_name_and_safetensors_file(tmp_path):
    import timm

    torch.manual_seed(2)
    model = timm.create_model(SMALL_TIMM, pretrained=False, num_classes=10).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    teacher = load_teacher(f"timm:{SMALL_TIMM}@{tmp_path / 'w.safetensors'}", num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(teacher(x), model(x))
    assert teacher.record()["arch"] == f"timm:{SMALL_TIMM}"
    default = load_teacher(f"timm:{SMALL_TIMM}")  # no num_classes: timm's default ImageNet head
    assert default(x).shape == (2, 1000)


@pytest.mark.parametrize(
    ("spec", "hint"),
    [
        ("timm:efficientnet_b00", "did you mean efficientnet_b0"),
        ("torchvision:resnet345", "did you mean resnet34"),
        ("tim:efficientnet_b0", "did you mean 'timm:'?"),
        ("torchvision:fasterrcnn_resnet50_fpn", "no classification model"),  # its builder would download a backbone
    ],
)
def test_unknown_names_suggest_close_ones(spec, hint):
    with pytest.raises(TeacherSpecError) as info:
        load_teacher(spec)
    assert hint in str(info.value) and "\n" not in str(info.value)


def test_bnext_recipe_step_with_timm_and_torchvision_teachers(tmp_path):
    """BNext-T's smoke step (gap-sensitive ensemble, knowledge boosting) distilling from a timm strong teacher and a
    torchvision assistant, built with the student's 10 classes (random init: no weights are downloaded)."""
    cfg = apply_overrides(
        get_recipe("bnext_tiny", smoke=True),
        [f"stages.0.teachers=timm:{SMALL_TIMM}", "stages.0.assistants=torchvision:resnet18", "threads=2"],
    )
    result = run(cfg, out_dir=tmp_path / "run", console=_quiet())
    recs = result.summary["stages"][0]["teachers"]
    assert [(r["role"], r["arch"]) for r in recs] == [
        ("teacher", f"timm:{SMALL_TIMM}"),
        ("assistant", "torchvision:resnet18"),
    ]
    assert all(r["params_m"] > 0 and r["accuracy"] is None for r in recs)
    epochs = [r for r in read_metrics(tmp_path / "run/metrics.jsonl") if r["type"] == "epoch"]
    assert epochs and all(r["active_assistant"] == "torchvision:resnet18" for r in epochs)
    written = json.loads((tmp_path / "run/config.json").read_text())["stages"][0]
    assert written["teachers"] == [f"timm:{SMALL_TIMM}"] and written["assistants"] == ["torchvision:resnet18"]


def test_bnext_cli_step_and_a_teacher_of_other_classes(tmp_path, tv_resnet34_file, capsys):
    _, path = tv_resnet34_file
    out = tmp_path / "run"
    args = ["train", "bnext_tiny", f"stages.0.teachers=torchvision:resnet34@{path}", "--smoke", "--out", str(out)]
    code = main(args)
    err = capsys.readouterr().err
    # a 1000-class ImageNet teacher for a 10-class student: one line at stage start, nothing left behind
    assert code == 2 and "built with num_classes=10" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    code = main([*args[:2], f"stages.0.teachers=timm:{SMALL_TIMM}", "--smoke", "--out", str(out)])
    assert code == 0 and (out / "summary.json").exists()


def test_bnext_tiny_on_an_imagenet_folder_with_torchvision_and_file_teachers(tmp_path, tv_resnet34_file, capsys):
    """The issue's acceptance command: `onebit train bnext_tiny data.root=FOLDER
    stages.*.teachers=torchvision:resnet34,resnet34@FILE` — the real BNext-T config (1000 classes) on a generated
    ImageNet-layout folder, shrunk to 32 px and one short epoch; then `onebit eval` of the run."""
    _, path = tv_resnet34_file
    data = write_imagefolder_fixture(tmp_path / "data", classes=3, train_per_class=4, val_per_class=2)
    out = tmp_path / "run"
    args = ["train", "bnext_tiny", f"data.root={data}", "data.image_size=32", "data.val_resize=33"]
    args += ["data.batch_size=4", "data.eval_batch_size=4", "data.num_workers=0", "data.limit_train=8"]
    args += ["stages.0.epochs=1", "stages.0.schedule.warmup_epochs=0"]
    args += [f"stages.*.teachers=torchvision:resnet34,resnet34@{path}", "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    teachers = summary["stages"][0]["teachers"]
    assert [t["arch"] for t in teachers] == ["torchvision:resnet34", "resnet34"]
    assert teachers[1]["weights"] == str(path)
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(data), "--resize", "33", "--crop", "32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 6

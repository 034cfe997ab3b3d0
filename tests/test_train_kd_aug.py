"""The runner with knowledge distillation (teachers, assistant schedule) and batch augmentation (CIFAR pickle
fixture, crop + MixUp), including an interrupted-and-resumed run that ends bit-identical."""

import io
import json
import signal

import pytest
import torch
from rich.console import Console
from run_helpers import identical, train_cli, wait_for_step
from safetensors.torch import load_file

from onebit.config import apply_overrides
from onebit.data.cifar import write_cifar_fixture
from onebit.recipes import get_recipe
from onebit.report import read_metrics
from onebit.train import run

TINY = ["data.limit_train=64", "data.limit_val=32", "data.batch_size=16", "threads=1"]


def _quiet():
    return Console(file=io.StringIO(), width=120)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "run"
    run(
        apply_overrides(get_recipe("adambnn_digits", smoke=True), [*TINY, "stages.*.epochs=1"]),
        out_dir=out,
        console=_quiet(),
    )
    return out


def test_distillation_stage_uses_the_teachers(teacher_run, tmp_path):
    base = [*TINY, "stages.*.epochs=2"]
    plain = run(
        apply_overrides(get_recipe("adambnn_digits", smoke=True), base), out_dir=tmp_path / "ce", console=_quiet()
    )
    kd_cfg = apply_overrides(
        get_recipe("adambnn_digits", smoke=True),
        [
            *base,
            f"stages.*.teachers={teacher_run}",
            "stages.*.assistants=reactnet_digits",
            "stages.*.kd_loss=gap_ensemble_official",
        ],
    )
    kd = run(kd_cfg, out_dir=tmp_path / "kd", console=_quiet())
    steps = [r for r in read_metrics(tmp_path / "kd/metrics.jsonl") if r["type"] == "step"]
    ce_steps = [r for r in read_metrics(tmp_path / "ce/metrics.jsonl") if r["type"] == "step"]
    assert len(steps) == len(ce_steps) and steps[0]["loss"] != ce_steps[0]["loss"]
    # the official ensemble loss is half a soft cross-entropy: below the plain CE at the same (initial) weights
    assert steps[0]["loss"] < ce_steps[0]["loss"]
    assert [s["name"] for s in kd.summary["stages"]] == [s["name"] for s in plain.summary["stages"]]
    epochs = [r for r in read_metrics(tmp_path / "kd/metrics.jsonl") if r["type"] == "epoch"]
    assert epochs and all(r["active_assistant"] == "reactnet_digits" and len(r["teachers"]) == 2 for r in epochs)
    # teachers never enter the student's state
    assert set(load_file(str(tmp_path / "kd/checkpoints/stage2_step2/model.safetensors"))) == set(
        load_file(str(tmp_path / "ce/checkpoints/stage2_step2/model.safetensors"))
    )


AUG = [
    "data.name=cifar10",
    "data.image_size=16",
    "data.train_augment=cifar",
    "data.mixup=0.2",
    "model.kwargs.in_chans=3",
    "data.limit_train=0",
    "data.limit_val=0",
    "data.batch_size=8",
    "threads=1",
    "stages.*.epochs=3",
]


def test_augmented_cifar_run_resumes_bit_identically(tmp_path):
    root = write_cifar_fixture(tmp_path / "cifar", "cifar10", n_train=48, n_test=16)
    args = ["--smoke", *AUG, f"data.root={root}"]
    ref = train_cli(*args, "--out", str(tmp_path / "ref"))
    log, _ = ref.communicate(timeout=600)
    assert ref.returncode == 0, log
    p = train_cli(*args, "--out", str(tmp_path / "cut"))
    wait_for_step(tmp_path / "cut", 10, p)
    p.send_signal(signal.SIGINT)
    log, _ = p.communicate(timeout=300)
    assert p.returncode == 130, log
    r = train_cli("--resume", str(tmp_path / "cut"))
    log, _ = r.communicate(timeout=600)
    assert r.returncode == 0, log
    a = load_file(str(tmp_path / "ref/checkpoints/stage2_step2/model.safetensors"))
    b = load_file(str(tmp_path / "cut/checkpoints/stage2_step2/model.safetensors"))
    assert identical(a, b)
    summary = json.loads((tmp_path / "ref/summary.json").read_text())
    assert "cifar" in summary["data"] or "48 train" in summary["data"]


def test_teacher_renormalisation_from_config(teacher_run, tmp_path):
    from onebit.data import build_data
    from onebit.train.recipe import build_task

    cfg = apply_overrides(
        get_recipe("adambnn_digits", smoke=True),
        [
            *TINY,
            "data.name=cifar10",
            f"stages.0.teachers={teacher_run}",
            "stages.0.teacher_mean=0.5,0.5,0.5",
            "stages.0.teacher_std=0.25,0.25,0.25",
        ],
    )
    root = write_cifar_fixture(tmp_path / "c", "cifar10", n_train=8, n_test=8)
    cfg.data.root = str(root)
    data = build_data(cfg.data, 0)
    task = build_task(cfg.stages[0], data, torch.device("cpu"))
    t = task.teachers[0]
    x = torch.randn(2, 3, 4, 4)
    mean, std = torch.tensor(data.mean).view(1, 3, 1, 1), torch.tensor(data.std).view(1, 3, 1, 1)
    expected = (x * std + mean - 0.5) / 0.25
    assert torch.allclose(t.normalize(x), expected, atol=1e-6)

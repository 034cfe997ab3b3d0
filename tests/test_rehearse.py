"""CPU rehearsal of the ImageNet recipes (``onebit rehearse``): the real configs for a few steps on a generated
ImageNet-layout folder, then ``onebit eval`` on the result. One fast case (AdamBNN on ReActNet-A: step 1 -> best ->
step 2 with the ResNet-34 teacher) in the default suite; every ImageNet recipe in the slow suite; the BNext-T
rehearsal with the paper's timm teachers in the second environment (``external``)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from onebit.cli import main
from onebit.config import to_dict
from onebit.recipes import get_recipe, list_recipes, paper_teachers
from onebit.rehearse import rehearsal_config, rehearsal_teachers, rehearse

IMAGENET_RECIPES = [r for r in list_recipes() if get_recipe(r).data.name == "imagenet"]


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for i, x in enumerate(v):
                out.update(_flat(x, f"{key}.{i}."))
        else:
            out[key] = v
    return out


#: the only settings a rehearsal may change (onebit.rehearse module docstring)
ALLOWED = {"recipe", "data.root", "data.image_size", "data.val_resize", "data.batch_size", "data.eval_batch_size"}
ALLOWED |= {"data.limit_train", "data.num_workers"}
STAGE_ALLOWED = {"teachers", "assistants", "epochs", "schedule.warmup_epochs"}


def test_imagenet_recipes_are_the_ones_rehearsed():
    assert set(IMAGENET_RECIPES) == {
        "reactnet_a",
        "adambnn_reactnet_a",
        "bnext_18",
        "bnext_tiny",
        "bnext_small",
        "bnext_middle",
        "bnext_large",
    }


@pytest.mark.parametrize("recipe", IMAGENET_RECIPES)
def test_rehearsal_changes_only_what_a_cpu_run_must(recipe, tmp_path):
    real, reh = _flat(to_dict(get_recipe(recipe))), _flat(to_dict(rehearsal_config(recipe, tmp_path)))
    assert real.keys() == reh.keys()
    changed = {k for k in real if real[k] != reh[k]}
    allowed = ALLOWED | {f"stages.{i}.{k}" for i in range(8) for k in STAGE_ALLOWED}
    assert changed <= allowed, changed - allowed
    cfg = rehearsal_config(recipe, tmp_path)
    strong, assistants = paper_teachers(recipe)
    assert strong, f"{recipe}: the paper distils it from a teacher"
    for s in cfg.stages:
        assert len(s.teachers) == len(strong) and len(s.assistants) == len(assistants)
        assert s.epochs >= max(2, len(assistants))  # every assistant gets an epoch
    assert cfg.model.num_classes == 1000 and cfg.data.image_size == 32
    # the evaluation resize keeps its ratio to the crop: 256/224 (ReActNet), 235/224 (BNext)
    assert cfg.data.val_resize == (33 if recipe.startswith("bnext") else 36)


def test_rehearsal_teachers_by_mode():
    assert rehearsal_teachers("bnext_middle", "paper") == (
        ["timm:efficientnet_b4"],
        ["timm:efficientnet_b0", "timm:efficientnet_b2"],
    )
    assert rehearsal_teachers("bnext_middle", "standin") == (["resnet18"], ["resnet18", "resnet18"])
    assert rehearsal_teachers("adambnn_reactnet_a", "paper") == (["resnet34"], [])  # torchvision's = onebit's
    assert rehearsal_teachers("bnext_tiny", "none") == ([], [])
    want = "paper" if importlib.util.find_spec("timm") else "standin"
    assert rehearsal_teachers("bnext_tiny", "auto") == rehearsal_teachers("bnext_tiny", want)
    with pytest.raises(ValueError, match="auto, paper, standin or none"):
        rehearsal_teachers("bnext_tiny", "all")
    with pytest.raises(ValueError, match="ImageNet recipes"):
        rehearsal_config("bnext_18_cifar10", "x")


def _epochs(run_dir):
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if r.get("type") == "epoch"]


def test_adambnn_reactnet_a_rehearsal_then_eval(tmp_path, capsys):
    """The default-suite case: the real AdamBNN ReActNet-A config (1000 classes, Adam lr 1.25e-3, official weight
    decay split, per-epoch linear decay with the official offset, ResNet-34 teacher with the soft-CE loss), step 1 ->
    best checkpoint -> step 2, then `onebit eval` of the run gives the rehearsal's own evaluation."""
    assert main(["rehearse", "adambnn_reactnet_a", "--out", str(tmp_path), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["step1", "step2"]
    for s in summary["stages"]:
        assert s["teachers"][0]["arch"] == "resnet34" and s["teachers"][0]["spec"] == "resnet34"
        assert "best_epoch" in s
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["stages"][1]["init_from"] == "best" and cfg["model"]["num_classes"] == 1000
    assert (run / "checkpoints/stage1_step1_best").is_dir() and (run / "checkpoints/best").is_dir()
    epochs = _epochs(run)
    assert len(epochs) == 4 and all("kd_weights" in e and "val_loss" in e for e in epochs)
    assert res["eval"]["images"] == 8

    code = main(["eval", str(run), "--data", str(tmp_path / "data"), "--resize", "36", "--crop", "32", "--json"])
    assert code == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["top1"] == res["eval"]["top1"] and ev["images"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("recipe", IMAGENET_RECIPES)
def test_every_imagenet_recipe_rehearses(recipe, tmp_path):
    res = rehearse(recipe, tmp_path, teachers="standin")
    stages = res.summary["stages"]
    assert len(stages) == len(res.config.stages)
    strong, assistants = paper_teachers(recipe)
    epochs = _epochs(res.run_dir)
    if assistants:  # BNext's knowledge boosting: every assistant teaches in turn, with the strong teacher
        n, e_total = len(assistants), res.config.stages[0].epochs
        assert {e * n // e_total for e in range(e_total)} == set(range(n))  # each assistant gets an epoch
        assert all(len(e["teachers"]) == 2 and len(e["kd_weights"]) >= 1 for e in epochs)
    if res.config.stages[0].temperature is not None:  # progressive binarization, T = 0.9^epoch
        assert [e["temperature"] for e in epochs] == pytest.approx([0.9 ** e["epoch"] for e in epochs])
    assert res.eval.images == 8


@pytest.mark.external
@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="needs timm (the second CI environment)")
def test_bnext_tiny_rehearsal_with_the_paper_timm_teachers(tmp_path):
    res = rehearse("bnext_tiny", tmp_path, teachers="paper", epochs=2)
    teachers = res.summary["stages"][0]["teachers"]
    assert [t["arch"] for t in teachers] == ["timm:efficientnet_b2", "timm:efficientnet_b0"]
    assert res.eval.images == 8

"""Best-epoch checkpoints per stage (validation top-1, ties keep the earlier), the run-level ``best``, and
``StageConfig.init_from="best"``: stage 2 starts from stage 1's best epoch, also across resumes."""

import io
import json
import shutil

import pytest
import torch
from rich.console import Console
from run_helpers import comparable_metrics, identical
from safetensors.torch import load_file

import onebit.train.recipe as recipe
from onebit.checkpoint import CheckpointError, RunDir, load_checkpoint
from onebit.config import ConfigError, apply_overrides
from onebit.models.io import build_model, load_model
from onebit.recipes import get_recipe
from onebit.train import RunInterrupted, run
from onebit.train.rundir import load_best

TINY = ["data.limit_train=64", "data.limit_val=32", "data.batch_size=16", "threads=1", "stages.*.epochs=3"]
STEPS = 4  # per epoch: 64 / 16

#: val top-1 reported per evaluate call: 3 epochs + the stage's final evaluation, per stage. Stage 1's best is
#: epoch 1 (epoch 2 ties it: the earlier stays); stage 2's is epoch 0 (epoch 2 ties it).
SCRIPT = [0.5, 0.8, 0.8, 0.3, 0.6, 0.4, 0.6, 0.2]


class _Spy:
    def __init__(self) -> None:
        self.calls: list[dict] = []  # evaluations so far (the script position)
        self.starts: list[dict] = []  # the model's state when stage 2 set up from scratch (no resume state)


@pytest.fixture
def spy(monkeypatch):
    """The real evaluation with a scripted val top-1, and the model's state as stage 2 starts."""
    s = _Spy()
    real_eval, real_start = recipe.evaluate, recipe._Runner._start_stage

    def evaluate(model, batches, device):
        val = real_eval(model, batches, device)
        s.calls.append(val)
        return {**val, "val_top1": SCRIPT[len(s.calls) - 1]}

    def start_stage(self, i, state):
        st = real_start(self, i, state)
        if i == 1 and state is None:
            s.starts.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return st

    monkeypatch.setattr(recipe, "evaluate", evaluate)
    monkeypatch.setattr(recipe._Runner, "_start_stage", start_stage)
    monkeypatch.setattr(recipe, "plot_run", lambda *a, **k: [])  # not needed here: faster runs
    return s


def _quiet():
    return Console(file=io.StringIO(), width=120)


def _cfg(*extra):
    return apply_overrides(get_recipe("adambnn_digits", smoke=True), [*TINY, *extra])


def _weights(run_dir, tag):
    return load_file(str(RunDir(run_dir).checkpoint(tag) / "model.safetensors"))


def _meta(run_dir, tag):
    return json.loads((RunDir(run_dir).checkpoint(tag) / "meta.json").read_text())


def test_best_checkpoints_and_stage2_from_best(spy, tmp_path):
    out = tmp_path / "run"
    res = run(_cfg(), out_dir=out, console=_quiet())
    rd = RunDir(out)
    # stage 2 started from stage 1's best epoch (every weight and buffer), not from where stage 1 ended
    (start,) = spy.starts
    best1 = _weights(out, "stage1_step1_best")
    assert identical(start, best1) and not identical(start, _weights(out, "stage1_step1"))
    meta = _meta(out, "stage1_step1_best")
    assert (meta["stage_index"], meta["best_epoch"], meta["val_top1"], meta["global_step"]) == (0, 1, 0.8, 2 * STEPS)
    # the run-level best is the last stage's best: epoch 0 of stage 2 (its tie at epoch 2 keeps epoch 0)
    assert identical(_weights(out, "best"), _weights(out, "stage2_step2_best"))
    assert not identical(_weights(out, "best"), _weights(out, "stage2_step2"))
    assert _meta(out, "best")["best_epoch"] == 0 and _meta(out, "best")["stage_index"] == 1
    assert [(s["best_epoch"], s["best_val_top1"]) for s in res.summary["stages"]] == [(1, 0.8), (0, 0.6)]
    assert json.loads(rd.summary_json.read_text())["stages"][0]["best_epoch"] == 1
    # a best checkpoint is checked and loaded as any other; load_model takes it on request, the latest by default
    state, _ = load_checkpoint(rd.checkpoint("best"), build_model(rd.read_config()))
    assert state["stage_index"] == 1 and state["best"]["epoch"] == 0
    assert identical(load_model(out, checkpoint="best")[0].state_dict(), _weights(out, "best"))
    assert identical(load_model(out)[0].state_dict(), _weights(out, "last"))
    # with init_from=last (ReActNet's step 2) stage 2 carries on from where stage 1 ended
    spy.calls.clear()
    run(_cfg("stages.1.init_from=last", "stages.1.epochs=1"), out_dir=tmp_path / "last", console=_quiet())
    assert identical(spy.starts[1], _weights(tmp_path / "last", "stage1_step1"))


def test_resume_inside_stage2_and_at_the_boundary(spy, tmp_path, monkeypatch):
    ref, out = tmp_path / "ref", tmp_path / "run"
    run(_cfg(), out_dir=ref, console=_quiet())
    # the same run, interrupted in epoch 1 of stage 2 (after stage 2's best epoch 0 was written)
    spy.calls.clear()
    polls = []

    def is_set(self):
        polls.append(1)
        return len(polls) == 4 * STEPS + 2

    monkeypatch.setattr(recipe._InterruptFlag, "is_set", is_set)
    with pytest.raises(RunInterrupted):
        run(_cfg(), out_dir=out, console=_quiet())
    state = torch.load(RunDir(out).checkpoint("last") / "state.pt", weights_only=True)
    assert state["stage_index"] == 1 and (state["best"]["epoch"], state["best"]["val_top1"]) == (0, 0.6)
    # a resume point that records a best epoch needs its checkpoint
    best2 = out / "checkpoints/stage2_step2_best"
    shutil.move(best2, tmp_path / "aside")
    with pytest.raises(CheckpointError, match="stage2_step2_best"):
        run(resume=out, console=_quiet())
    shutil.move(tmp_path / "aside", best2)
    res = run(resume=out, console=_quiet())
    assert [(s["best_epoch"], s["best_val_top1"]) for s in res.summary["stages"]] == [(1, 0.8), (0, 0.6)]
    for tag in ("stage1_step1_best", "stage2_step2_best", "best", "stage2_step2"):
        assert identical(_weights(out, tag), _weights(ref, tag)), tag
    assert comparable_metrics(out) == comparable_metrics(ref)
    # resumed at the end of stage 1, stage 2 starts from stage 1's best again
    shutil.rmtree(out / "checkpoints/last")
    shutil.copytree(out / "checkpoints/stage1_step1", out / "checkpoints/last")
    del spy.calls[4:]
    run(resume=out, console=_quiet())
    assert identical(spy.starts[-1], _weights(ref, "stage1_step1_best"))
    assert identical(_weights(out, "stage2_step2"), _weights(ref, "stage2_step2"))
    assert comparable_metrics(out) == comparable_metrics(ref)
    # ... and refuses to start when that checkpoint is gone
    shutil.rmtree(out / "checkpoints/last")
    shutil.copytree(out / "checkpoints/stage1_step1", out / "checkpoints/last")
    shutil.rmtree(out / "checkpoints/stage1_step1_best")
    with pytest.raises(CheckpointError, match="stage1_step1_best"):
        run(resume=out, console=_quiet())


def test_load_best_names_the_missing_checkpoint(tmp_path):
    cfg = _cfg()
    with pytest.raises(CheckpointError, match=r"stage1_step1_best: missing.*stage 2 'step2' starts from it"):
        load_best(tmp_path, cfg, 0, build_model(cfg), "cpu")


def test_init_from_is_a_closed_choice_and_the_adambnn_recipes_use_best():
    with pytest.raises(ConfigError, match="init_from"):
        _cfg("stages.1.init_from=first")
    for name in ("adambnn_digits", "adambnn_digits_bwba", "adambnn_reactnet_a"):
        for smoke in (False, True):
            assert [s.init_from for s in get_recipe(name, smoke=smoke).stages] == ["last", "best"], name
    assert [s.init_from for s in get_recipe("reactnet_a").stages] == ["last", "last"]  # ReActNet: the last epoch

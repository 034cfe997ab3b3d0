"""What the epoch records log for BNext's figures (temperature, train/val loss, the KD weight of each teacher), how
the KD losses expose their weights without changing their values, and the run's plots (one line per stage)."""

import io

import matplotlib
import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from run_helpers import comparable_metrics

import onebit.distill.task as task_mod
import onebit.train.recipe as recipe
from onebit.analysis.plots import figure_ff, figure_kd_weights, kd_weight_segments, stage_segments
from onebit.config import apply_overrides
from onebit.distill import KD_LOSSES
from onebit.distill.task import TeacherWeightMeter
from onebit.recipes import get_recipe
from onebit.report import read_metrics
from onebit.train import RunInterrupted, run

matplotlib.use("Agg")

KD = [
    "data.limit_train=64",
    "data.limit_val=32",
    "data.batch_size=16",
    "threads=1",
    "stages.*.epochs=2",
    "stages.*.teachers=resnet_digits",
    "stages.*.assistants=reactnet_digits,float_resnet_digits",
    "stages.*.kd_loss=gap_ensemble_official",
    "stages.1.temperature=1.0",
    "stages.1.temperature_decay=0.5",
]


def _quiet():
    return Console(file=io.StringIO(), width=120)


# ------------------------------------------------------------------------------------------------------- losses
@pytest.mark.parametrize("name", ["soft_ce", "kl", "gap_ensemble_official", "gap_ensemble_paper"])
def test_kd_losses_report_their_weights_without_changing_the_loss(name):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 5, generator=g, requires_grad=True)
    ts = [torch.randn(6, 5, generator=g) * k for k in (1.0, 3.0, 0.5)]
    fn = KD_LOSSES.get(name)
    plain = fn(s, ts)
    (g_plain,) = torch.autograd.grad(plain, s)
    stats = {}
    logged = fn(s, ts, stats=stats)
    (g_logged,) = torch.autograd.grad(logged, s)
    assert torch.equal(plain, logged) and torch.equal(g_plain, g_logged)
    w = stats["weights"]
    assert w.shape == (3,) and not w.requires_grad and float(w.sum()) == pytest.approx(1.0)
    log_s = F.log_softmax(s.detach(), dim=1)
    if name == "gap_ensemble_official":  # α = softmax over teachers of the per-sample soft CE
        ce = torch.stack([-(F.softmax(t, 1) * log_s).sum(1) for t in ts], 1)
    elif name == "gap_ensemble_paper":  # σ = softmax over teachers of −Σ p_S log p_T
        ce = torch.stack([-(log_s.exp() * F.log_softmax(t, 1)).sum(1) for t in ts], 1)
    else:
        ce = torch.zeros(6, 3)  # plain averages: 1/n each
    torch.testing.assert_close(w, F.softmax(ce, dim=1).mean(0))


def test_weight_meter_averages_per_teacher_and_round_trips():
    m = TeacherWeightMeter()
    m.add(("a", "s"), torch.tensor([0.2, 0.8]))
    m.add(("a", "s"), torch.tensor([0.4, 0.6]))
    state = m.state_dict()
    m2 = TeacherWeightMeter()
    m2.load_state_dict(state)
    m2.add(("b", "s"), torch.tensor([0.5, 0.5]))  # another assistant: "s" is averaged over both lists
    assert m2.pop() == pytest.approx({"a": 0.3, "s": (0.8 + 0.6 + 0.5) / 3, "b": 0.5})
    assert m2.pop() == {}  # popped: the next epoch starts empty
    zeroed = TeacherWeightMeter()
    zeroed.load_state_dict(state, zero=True)  # a non-zero rank: same lists, no counts
    assert [e["teachers"] for e in zeroed.state_dict()] == [["a", "s"]] and zeroed.pop() == {}


# ------------------------------------------------------------------------------------------------------ records
def test_epoch_records_log_the_figures_inputs_and_survive_a_resume(tmp_path, monkeypatch):
    cfg = get_recipe("adambnn_digits", smoke=True)
    added = []
    real_add = task_mod.TeacherWeightMeter.add

    def add(self, names, weights):
        added.append((names, weights.detach().clone()))
        real_add(self, names, weights)

    monkeypatch.setattr(task_mod.TeacherWeightMeter, "add", add)
    ref = tmp_path / "ref"
    run(apply_overrides(cfg, KD), out_dir=ref, console=_quiet())
    epochs = [r for r in read_metrics(ref / "metrics.jsonl") if r["type"] == "epoch"]
    assert len(epochs) == 4 and len(added) == 16
    for k, r in enumerate(epochs):
        steps = added[4 * k : 4 * k + 4]
        names = steps[0][0]
        assert list(r["kd_weights"]) == list(names) == r["teachers"]
        mean = torch.stack([w for _, w in steps]).double().mean(0)
        assert list(r["kd_weights"].values()) == pytest.approx(mean.tolist(), abs=1e-12)
        assert sum(r["kd_weights"].values()) == pytest.approx(1.0)
        assert r["train_loss"] > 0 and r["val_loss"] > 0
    # the assistant switches half-way through each stage
    assert [r["teachers"][0] for r in epochs] == ["reactnet_digits", "float_resnet_digits"] * 2
    assert ["temperature" in r for r in epochs] == [False, False, True, True]
    assert [r["temperature"] for r in epochs[2:]] == [1.0, 0.5]
    for f in ("accuracy", "ff_ratio", "loss", "temperature", "kd_weights"):
        assert (ref / "plots" / f"{f}.png").read_bytes()[:4] == b"\x89PNG", f
    # interrupted in the middle of an epoch and resumed: the same records, KD weights included
    polls = []

    def is_set(self):
        polls.append(1)
        return len(polls) == 6

    monkeypatch.setattr(recipe._InterruptFlag, "is_set", is_set)
    monkeypatch.setattr(recipe, "plot_run", lambda *a, **k: [])
    out = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        run(apply_overrides(cfg, KD), out_dir=out, console=_quiet())
    run(resume=out, console=_quiet())
    assert comparable_metrics(out) == comparable_metrics(ref)


# -------------------------------------------------------------------------------------------------------- plots
def _records():
    recs = []
    for i, (stage, n) in enumerate([("step1", 6), ("step2", 4)]):
        start = len([r for r in recs if r["type"] == "step"])
        for k in range(n):
            gs = start + k + 1
            recs.append({"type": "step", "stage": stage, "stage_index": i, "global_step": gs, "acc": 0.5,
                         "ff_ratio": 1e-3 / gs})  # fmt: skip
            if k % 2 == 1:
                teacher = "a1" if k < 2 else "a2"
                recs.append({"type": "epoch", "stage": stage, "stage_index": i, "epoch": k // 2, "global_step": gs,
                             "ff_ratio": 1e-3, "val_top1": 0.5, "train_loss": 1.0, "val_loss": 1.1,
                             "kd_weights": {teacher: 0.4, "strong": 0.6}})  # fmt: skip
        recs.append({"type": "stage", "name": stage, "index": i, "global_step": start + n})
    return recs


def test_series_are_split_at_stage_boundaries():
    recs = _records()
    ff = stage_segments(recs, "ff_ratio")
    assert [(s.stage, s.x) for s in ff] == [("step1", [1, 2, 3, 4, 5, 6]), ("step2", [7, 8, 9, 10])]
    ep = stage_segments(recs, "ff_ratio", kind="epoch")
    assert [s.x for s in ep] == [[2, 4, 6], [8, 10]]
    by_epoch = stage_segments(recs, "val_loss", kind="epoch", x=None)  # the run's epoch count
    assert [s.x for s in by_epoch] == [[1, 2, 3], [4, 5]]
    kd = kd_weight_segments(recs)
    # "strong" runs through each stage (two lines); the assistants only while active
    assert [s.x for s in kd["strong"]] == [[1, 2, 3], [4, 5]]
    assert [s.x for s in kd["a1"]] == [[1], [4]] and [s.x for s in kd["a2"]] == [[2, 3], [5]]


def test_ff_plot_draws_each_stage_as_its_own_line():
    recs = _records()
    fig = figure_ff(recs)
    lines = [ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) > 0 and ln.get_linestyle() != "None"]
    lines = [ln for ln in lines if ln.get_marker() == "o"]  # the epoch means (the per-step dots have no line)
    assert [list(ln.get_xdata()) for ln in lines] == [[2, 4, 6], [8, 10]]
    dots = [ln for ln in fig.axes[0].get_lines() if ln.get_marker() == "."]
    assert [list(ln.get_xdata()) for ln in dots] == [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10]]
    kd = figure_kd_weights(recs)
    assert len([ln for ln in kd.axes[0].get_lines() if ln.get_marker() == "o"]) == 6

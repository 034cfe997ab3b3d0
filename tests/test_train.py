"""The training spine end to end: run directory, per-stage checkpoints, resume after SIGKILL and Ctrl-C, NaN stop."""

import json
import signal
from pathlib import Path

import pytest
import torch
from run_helpers import identical, train_cli, wait_for_step
from safetensors.torch import load_file
from torch import nn

from onebit.checkpoint import find_checkpoint
from onebit.config import apply_overrides
from onebit.models import register_model
from onebit.models._registry import MODELS
from onebit.recipes import get_recipe
from onebit.report import read_metrics
from onebit.train import EpochMeter, RunDirError, TrainingDiverged, run, train_one_epoch, train_steps
from onebit.train.tasks import ClassificationTask

# Tiny, fast and with enough steps per stage to kill a run in the middle of one.
TINY = ["data.limit_train=192", "data.limit_val=64", "data.batch_size=32", "stages.*.epochs=3", "threads=1"]


def _cfg(*extra):
    return apply_overrides(get_recipe("adambnn_digits", smoke=True), TINY + list(extra))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    p = train_cli("--smoke", *TINY, "--out", str(out))
    log, _ = p.communicate(timeout=600)
    assert p.returncode == 0, log
    return out, log


def test_run_directory_contents(reference_run):
    out, log = reference_run
    for f in ("config.json", "metrics.jsonl", "summary.json", "summary.md", "plots/accuracy.png", "plots/ff_ratio.png"):
        assert (out / f).exists(), f
    assert (out / "plots/accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for tag in ("stage1_step1", "stage2_step2"):
        assert find_checkpoint(out / "checkpoints", tag) is not None
    recs = read_metrics(out / "metrics.jsonl")
    steps = [r for r in recs if r["type"] == "step"]
    assert steps and all("ff_ratio" in r for r in steps)
    assert [r["global_step"] for r in steps] == list(range(1, len(steps) + 1))
    stages = [r for r in recs if r["type"] == "stage"]
    assert [s["name"] for s in stages] == ["step1", "step2"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and len(summary["stages"]) == 2
    assert "step2" in log and "Run directory" in log and "val top-1" in log
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["stages"][0]["optim"]["weight_decay"] == 5e-6 and cfg["stages"][1]["optim"]["weight_decay"] == 0.0


def test_stage2_inherits_every_latent_weight(tmp_path):
    cfg = _cfg("stages.0.epochs=1", "stages.1.epochs=1", "stages.1.optim.lr=0")
    res = run(cfg, out_dir=tmp_path / "r")
    s1 = load_file(str(tmp_path / "r/checkpoints/stage1_step1/model.safetensors"))
    s2 = load_file(str(tmp_path / "r/checkpoints/stage2_step2/model.safetensors"))
    # with lr 0 in stage 2 every parameter is the stage-1 value (BN running stats still move)
    params = {k for k, _ in res.model.named_parameters()}
    assert params and all(torch.equal(s1[k], s2[k]) for k in params)
    assert all(m.binarize_weight for m in res.model.modules() if hasattr(m, "binarize_weight"))


def _final_weights(run_dir: Path) -> dict:
    return load_file(str(run_dir / "checkpoints/stage2_step2/model.safetensors"))


def test_sigkill_mid_stage_then_resume_is_bitidentical(reference_run, tmp_path):
    ref_dir, _ = reference_run
    out = tmp_path / "killed"
    steps_per_stage = 3 * 6  # 3 epochs x ceil(192/32)
    p = train_cli("--smoke", *TINY, "checkpoint_every=1", "--out", str(out))
    wait_for_step(out, steps_per_stage + 4, p)  # inside stage 2, epoch 1
    p.send_signal(signal.SIGKILL)
    p.wait()
    meta = json.loads((find_checkpoint(out / "checkpoints", "last") / "meta.json").read_text())
    assert meta["stage_index"] == 1 and not meta["stage_done"], meta
    r = train_cli("--resume", str(out))
    log, _ = r.communicate(timeout=600)
    assert r.returncode == 0, log
    assert "Resuming" in log
    assert identical(_final_weights(out), _final_weights(ref_dir))
    steps = [x["global_step"] for x in read_metrics(out / "metrics.jsonl") if x["type"] == "step"]
    assert steps == list(range(1, 2 * steps_per_stage + 1))  # no step lost or repeated in the metrics


def test_ctrl_c_leaves_resumable_checkpoint(reference_run, tmp_path):
    ref_dir, _ = reference_run
    out = tmp_path / "interrupted"
    p = train_cli("--smoke", *TINY, "--out", str(out))
    wait_for_step(out, 5, p)
    p.send_signal(signal.SIGINT)
    log, _ = p.communicate(timeout=300)
    assert p.returncode == 130, log
    assert "resume with" in log
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    r = train_cli("--resume", str(out))
    log, _ = r.communicate(timeout=600)
    assert r.returncode == 0, log
    assert identical(_final_weights(out), _final_weights(ref_dir))


class _NaNAfter(nn.Module):
    """Returns NaN logits from its 5th training forward on: a stand-in for a diverging model."""

    def __init__(self, num_classes=10, **_):
        super().__init__()
        self.net = MODELS.get("reactnet_digits")(num_classes=num_classes, width=4)
        self.calls = 0

    def forward(self, x):
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls >= 5:
                out = out * float("nan")
        return out


def test_nan_after(num_classes=10, **kw):  # noqa: PT028 (a model entrypoint, not a test)
    return _NaNAfter(num_classes, **kw)


test_nan_after.__test__ = False  # keep pytest from collecting the entrypoint
if "test_nan_after" not in MODELS:
    register_model(test_nan_after)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = _cfg("model.name=test_nan_after", "checkpoint_every=2")
    cfg.model.kwargs = {}
    with pytest.raises(TrainingDiverged, match="nan.*last good checkpoint"):
        run(cfg, out_dir=tmp_path / "r")
    ck = find_checkpoint(tmp_path / "r/checkpoints", "last")
    meta = json.loads((ck / "meta.json").read_text())
    assert meta["global_step"] == 4  # steps 1-4 were finite; step 5 was not applied
    assert all(torch.isfinite(v).all() for v in load_file(str(ck / "model.safetensors")).values())
    assert json.loads((tmp_path / "r/run.json").read_text())["status"] == "diverged"


def test_resume_errors(tmp_path):
    with pytest.raises(RunDirError, match="no such directory"):
        run(resume=tmp_path / "missing")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign/config.json").write_text("{}")
    with pytest.raises(RunDirError, match="not a onebit run directory"):
        run(resume=tmp_path / "foreign")
    (tmp_path / "foreign/run.json").write_text('{"status": "x"}')
    with pytest.raises(RunDirError, match="not a onebit run record"):
        run(resume=tmp_path / "foreign")


def test_existing_run_dir_is_not_overwritten(tmp_path):
    cfg = _cfg("stages.*.epochs=1")
    run(cfg, out_dir=tmp_path / "r")
    with pytest.raises(RunDirError, match="already holds a run"):
        run(_cfg(), out_dir=tmp_path / "r")


def test_cli_reports_unknown_override_key(tmp_path):
    p = train_cli("--smoke", "stages.0.optim.lrr=1", "--out", str(tmp_path / "x"))
    log, _ = p.communicate(timeout=120)
    assert p.returncode == 2
    assert "stages.0.optim.lrr" in log and "stages.0.optim.lr" in log


def test_training_paths_and_channels_last_train_the_same_model(tmp_path):
    """`training_path` and `channels_last` change how the step runs, not what it learns (to float tolerance)."""
    short = ["stages.0.epochs=1", "stages.1.epochs=1", "data.limit_train=64"]
    finals = {}
    for name, extra in {
        "lean": ["training_path=lean"],
        "reference": ["training_path=reference"],
        "module_cl": ["training_path=module", "channels_last=true"],
    }.items():
        res = run(_cfg(*short, *extra), out_dir=tmp_path / name)
        finals[name] = {k: v.detach().clone() for k, v in res.model.state_dict().items()}
        layers = [m for m in res.model.modules() if hasattr(m, "training_path")]
        assert layers and all(m.training_path == extra[0].split("=")[1] for m in layers)
    for other in ("reference", "module_cl"):
        for k, v in finals["lean"].items():
            if v.is_floating_point():
                assert torch.allclose(v, finals[other][k], atol=1e-4, rtol=1e-4), (other, k)
    with pytest.raises(Exception, match="training_path"):
        run(_cfg("training_path=fast"), out_dir=tmp_path / "bad")


def test_load_model_of_a_run_restores_the_stage_binarization(tmp_path):
    from onebit.models.io import load_model

    cfg = _cfg("stages.0.epochs=1", "stages.1.epochs=1", "data.limit_train=32", "stages.1.binarize_weights=false")
    res = run(cfg, out_dir=tmp_path / "r")
    model, _ = load_model(tmp_path / "r")
    flags = {(m.binarize_input, m.binarize_weight) for m in model.modules() if hasattr(m, "binarize_weight")}
    assert flags == {(True, False)}
    x = torch.randn(4, 1, 16, 16)
    assert torch.equal(model.eval()(x), res.model.eval()(x))


def _steps_setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(4, 3, 2, 2, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(5)]
    return model, torch.optim.SGD(model.parameters(), lr=0.1), batches


class _StopAfter:
    """A stop flag that is set from the third poll on (as a Ctrl-C during step 3 would be)."""

    def __init__(self) -> None:
        self.polls = 0

    def is_set(self) -> bool:
        self.polls += 1
        return self.polls >= 3


def test_train_steps_yields_a_record_per_step_and_stops_after_the_flagged_one():
    kw = dict(device=torch.device("cpu"), lr_for_step=lambda s: 0.1, start_step=7)
    model, opt, batches = _steps_setup()
    recs = list(train_steps(model, ClassificationTask(), batches, opt, meter=EpochMeter(), **kw))
    assert [r.step for r in recs] == [8, 9, 10, 11, 12] and not any(r.interrupted for r in recs)
    assert all(r.loss == r.loss and 0.0 <= r.acc <= 1.0 and r.lr == 0.1 for r in recs)
    # train_one_epoch drains the same generator: same weights, and the stage step after the last batch
    model2, opt2, _ = _steps_setup()
    meter = EpochMeter()
    assert train_one_epoch(model2, ClassificationTask(), batches, opt2, meter=meter, **kw) == 12
    assert meter.steps == 5 and meter.samples == 20
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))
    # a stop flag set during step 3: that step is finished, reported as interrupted, and the epoch ends
    model3, opt3, _ = _steps_setup()
    recs = list(train_steps(model3, ClassificationTask(), batches, opt3, meter=EpochMeter(), stop=_StopAfter(), **kw))
    assert [r.interrupted for r in recs] == [False, False, True]

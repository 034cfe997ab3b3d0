"""TensorBoard mirror of the metrics stream (optional extra ``onebit[tensorboard]``)."""

import importlib.util
import sys

import pytest

from onebit.config import ConfigError, apply_overrides
from onebit.recipes import get_recipe
from onebit.report import TensorBoardMirror, numeric_scalars, read_metrics
from onebit.train import run

TINY = ["data.limit_train=64", "data.limit_val=32", "data.batch_size=32", "stages.*.epochs=1", "threads=1"]


def test_numeric_scalars_flattens_numbers_only():
    rec = {"type": "epoch", "loss": 1.5, "n": 3, "ok": True, "name": "s", "dyn": {"a": {"b": 2}, "l": [1]}, "x": None}
    assert numeric_scalars(rec) == {"loss": 1.5, "n": 3.0, "dyn/a/b": 2.0}


def test_tensorboard_mirrors_every_numeric_scalar(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = apply_overrides(get_recipe("adambnn_digits", smoke=True), [*TINY, "tensorboard=true"])
    run(cfg, out_dir=tmp_path / "r")
    recs = read_metrics(tmp_path / "r/metrics.jsonl")
    acc = EventAccumulator(str(tmp_path / "r/tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for rec in recs:  # every number of every record is there, at the record's global step
        for key, value in numeric_scalars({k: v for k, v in rec.items() if k != "global_step"}).items():
            tag = f"{rec['type']}/{key}"
            assert tag in tags, tag
            got = {e.step: e.value for e in acc.Scalars(tag)}
            assert got[rec["global_step"]] == pytest.approx(value, rel=1e-6, nan_ok=True), tag
    steps = [r for r in recs if r["type"] == "step"]
    assert [e.step for e in acc.Scalars("step/loss")] == [r["global_step"] for r in steps]
    assert "epoch/val_top1" in tags and "stage/c2i_run" in tags


def test_missing_tensorboard_is_a_clear_error(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    cfg = apply_overrides(get_recipe("adambnn_digits", smoke=True), [*TINY, "tensorboard=true"])
    with pytest.raises(ConfigError, match=r'pip install "onebit\[tensorboard\]"'):
        run(cfg, out_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()  # refused before anything was written
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` of a None entry raises ImportError
    with pytest.raises(ImportError, match=r'pip install "onebit\[tensorboard\]"'):
        TensorBoardMirror(tmp_path / "tb")

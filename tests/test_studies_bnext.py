"""`onebit study bnext-schemes` / `ptq` / `training-curves` at their smoke budget (shared with the generic study
test), and the measurement helpers of :mod:`onebit.studies.bnext` against hand-computed references."""

import json
import math
from pathlib import Path

import pytest

from onebit.checkpoint import RunDir
from onebit.studies.bnext import (
    DCKD,
    END_TEMPERATURE,
    FINETUNES,
    PLAIN,
    PTQ_SETTINGS,
    SCHEMES,
    loss_gap,
    monotone_nonincreasing,
    schedule_matches,
    stretched_decay,
    teacher_kc,
)
from onebit.studies.common import epoch_records, slug


# ----------------------------------------------------------------------------------------------- helper references
@pytest.mark.parametrize("epochs", [2, 3, 6, 8])
def test_stretched_decay_reaches_the_end_temperature_at_the_last_epoch(epochs):
    d = stretched_decay(epochs)
    assert 0 < d < 1
    assert math.isclose(d ** (epochs - 1), END_TEMPERATURE, rel_tol=1e-12)
    assert math.isclose(stretched_decay(8), 0.3, rel_tol=1e-12)  # the kd study's 0.3 over 8 epochs
    assert stretched_decay(1) == 1.0


def test_monotone_nonincreasing_with_tolerance():
    assert monotone_nonincreasing([90.0, 90.0, 89.5, 80.0])
    assert not monotone_nonincreasing([90.0, 90.5, 89.0])
    assert monotone_nonincreasing([90.0, 90.25, 89.0], tol=0.28)  # one val image of 360
    assert monotone_nonincreasing([]) and monotone_nonincreasing([1.0])


def test_loss_gap_and_schedule_by_hand():
    recs = [
        {"epoch": 0, "train_loss": 2.0, "val_loss": 1.5, "temperature": 1.0},
        {"epoch": 1, "train_loss": 1.0, "val_loss": 1.25, "temperature": 0.5},
        {"epoch": 2, "train_loss": 0.5, "val_loss": 0.5, "temperature": 0.25},
    ]
    assert loss_gap(recs) == pytest.approx((-0.5 + 0.25 + 0.0) / 3, abs=1e-15)
    assert math.isnan(loss_gap([]))
    assert schedule_matches(recs, 1.0, 0.5)
    assert not schedule_matches(recs, 1.0, 0.3)
    assert not schedule_matches([{"epoch": 0, "train_loss": 1, "val_loss": 1}], 1.0, 0.5)  # no temperature
    assert not schedule_matches([], 1.0, 0.5)


# ------------------------------------------------------------------------------------------------ smoke studies
def _table_rows(md: str, first_cell: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in md.splitlines()
        if line.startswith(f"| {first_cell}")
    ]


def test_schemes_select_the_lowest_kc_teacher_and_train_longer(smoke_study):
    path, _, runs = smoke_study("bnext-schemes")
    md = path.read_text()
    for label, *_ in SCHEMES:
        assert _table_rows(md, label), label
    ctx = json.loads((path.parent / "bnext-schemes" / "results.json").read_text())[0]["context"]
    kcs = {role: teacher_kc(ctx[role]) for role in ("weak", "strong")}
    assert ctx["kc_low"] == ctx[min(kcs, key=kcs.get)] and ctx["kc_high"] == ctx[max(kcs, key=kcs.get)]
    assert ctx["kc_low"] != ctx["kc_high"]
    root = runs / "bnext-schemes"
    first = RunDir(root / slug(SCHEMES[0][0]) / "seed0").read_config().stages[0]
    long = RunDir(root / slug(SCHEMES[-1][0]) / "seed0").read_config().stages[0]
    assert long.epochs == 2 * first.epochs
    assert first.teachers == [ctx["kc_high"]]
    ra = RunDir(root / slug(SCHEMES[3][0]) / "seed0").read_config()
    assert ra.data.randaugment and ra.stages[0].kd_loss == "gap_ensemble_official"


def test_ptq_table_has_every_setting_and_the_cache(smoke_study):
    path, _, runs = smoke_study("ptq")
    md = path.read_text()
    for bits in PTQ_SETTINGS:
        assert _table_rows(md, bits), bits
    cache = json.loads((runs / "ptq" / "BNext_student" / "seed0" / "ptq" / "results.json").read_text())
    assert len(cache) == (len(PTQ_SETTINGS) - 1) * len(FINETUNES)
    for rec in cache.values():
        assert 0 <= rec["quant"] <= 100 and 0 <= rec["tuned"] <= 100
    # the float row is the model the run trained: its val top-1 in the run's own summary
    summary = RunDir(runs / "ptq" / "BNext_student" / "seed0").read_summary()
    assert {round(r["float"], 6) for r in cache.values()} == {round(100 * summary["stages"][-1]["val_top1"], 6)}


def test_training_curves_record_the_schedule_and_both_losses(smoke_study):
    path, _, runs = smoke_study("training-curves")
    md = path.read_text()
    assert (path.parent / "training-curves" / "curves.png").stat().st_size > 0
    for variant in (DCKD, PLAIN):
        run_dir = runs / "training-curves" / slug(variant) / "seed0"
        recs = epoch_records(Path(run_dir))
        st = RunDir(run_dir).read_config().stages[0]
        assert recs and schedule_matches(recs, st.temperature, st.temperature_decay)
        assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in recs)
    rows = _table_rows(md.split("## Curves", 1)[1], "1 ")
    assert len(rows) == 1 and len(rows[0]) == 10 and rows[0][1] == "1"  # epoch 1 at T = 1

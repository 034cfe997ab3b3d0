"""The ``saturation`` study (AdamBNN Figs. 2-5, 7): its measurement functions against hand-computed references, its
variants, and its smoke report (shared with the generic study test through the ``smoke_study`` fixture)."""

import json
import math
from pathlib import Path

import numpy as np
import torch

from onebit.metrics.dynamics import histogram
from onebit.studies import STUDIES
from onebit.studies.common import epoch_records
from onebit.studies.dynamics import (
    ADAM,
    FLOAT,
    SGD,
    TWO,
    _first_sat,
    _paired_shares,
    max_abs,
    mean_abs,
    share_below_min,
    share_near_one,
    val_drops,
)


def test_share_below_min_counts_strictly_below_the_other_minimum():
    # min(b) = 0.15: 0.1 and 0.05 are below, 0.15 (equal) is not
    assert share_below_min([0.1, 0.2, 0.15, 0.05], [0.15, 0.4]) == 0.5
    assert share_below_min([1.0, 2.0], [0.5]) == 0.0
    assert math.isnan(share_below_min([], [1.0])) and math.isnan(share_below_min([1.0], []))


def test_paired_shares_pair_runs_by_seed():
    sgd = [{"seed": 0, "m": {"update_cam": [1.0, 3.0]}}, {"seed": 1, "m": {"update_cam": [1.0, 3.0]}}]
    adam = [{"seed": 1, "m": {"update_cam": [0.5]}}, {"seed": 0, "m": {"update_cam": [2.0]}}]
    assert _paired_shares(sgd, adam) == [50.0, 0.0]


def test_share_near_one_matches_the_direct_count():
    w = torch.tensor([-1.2, -0.95, -0.5, 0.0, 0.3, 0.91, 2.0, -0.89], dtype=torch.float64)
    h = histogram(w)
    ref = float((w.abs() >= 0.9).double().mean())  # 4 of 8: -1.2, -0.95, 0.91, 2.0 (beyond the range)
    assert ref == 0.5
    assert share_near_one(h, 0.9) == ref
    assert share_near_one(h, 0.0) == 1.0
    empty = {"edges": h["edges"], "counts": torch.zeros_like(h["counts"]), "below": 0, "above": 0}
    assert math.isnan(share_near_one(empty))


def test_max_abs_bounds_the_largest_weight_within_one_bin():
    g = torch.Generator().manual_seed(0)
    w = (torch.rand(1000, generator=g, dtype=torch.float64) - 0.5) * 0.8  # inside ±0.4
    h = histogram(w)
    width = 3.0 / 201
    m = max_abs(h)
    assert float(w.abs().max()) <= m <= float(w.abs().max()) + width + 1e-12
    assert max_abs(histogram(torch.tensor([0.1, 2.0]))) == math.inf


def test_mean_abs_is_the_mean_magnitude_up_to_half_a_bin():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(5000, generator=g, dtype=torch.float64) * 0.3
    h = histogram(w)
    assert abs(mean_abs(h) - float(w.abs().mean())) <= 0.5 * 3.0 / 201
    # weights beyond the range count at its edge (a lower bound): -2 and 3 count as 1.5 each
    assert math.isclose(mean_abs(histogram(torch.tensor([-2.0, 3.0], dtype=torch.float64))), 1.5)


def test_val_drops_sums_the_falls_between_epochs():
    assert val_drops([50.0, 60.0, 55.0, 70.0, 65.0, 80.0]) == 10.0
    assert val_drops([1.0, 2.0, 3.0]) == 0.0
    assert val_drops([3.0]) == 0.0
    rng = np.random.default_rng(0)
    c = rng.uniform(0, 100, 20)
    assert math.isclose(val_drops(c), float(np.clip(-np.diff(c), 0, None).sum()))


def test_first_sat_reads_the_first_binary_layer_not_the_mean():
    dyn = {"saturation": {"a": 0.4, "b": 0.1}, "saturation_mean": 0.25, "first_layer": "a"}
    assert math.isclose(_first_sat(dyn), 40.0)
    assert math.isnan(_first_sat({"saturation": {}, "first_layer": "a"}))


def test_variants_compare_the_optimizers_on_strong_baseline():
    vs = {v.label: v.make() for v in STUDIES["saturation"].variants(6)}
    assert set(vs) == {SGD, ADAM, TWO, FLOAT}
    assert vs[SGD].stages[0].optim.name == "sgd" and vs[ADAM].stages[0].optim.name == "adam"
    assert vs[SGD].model.kwargs["family"] == vs[ADAM].model.kwargs["family"] == "strong_baseline"
    two = vs[TWO].stages
    assert [s.name for s in two] == ["step1", "step2"] and sum(s.epochs for s in two) == 6
    assert two[0].binarize_activations and not two[0].binarize_weights
    f = vs[FLOAT].stages[0]
    assert vs[FLOAT].model.name == "float_resnet_digits" and not f.binarize_activations and not f.binarize_weights


def test_smoke_report_covers_every_figure(smoke_study):
    path, docs, runs = smoke_study("saturation")
    md = path.read_text()
    claims = json.loads((docs / "saturation" / "claims.json").read_text())["claims"]
    sources = {c["source"] for c in claims}
    assert any("larger in magnitude" in c["claim"] for c in claims)
    for fig in ("Fig. 2(a)", "Fig. 2(b)", "Fig. 3", "Fig. 4", "Fig. 5", "Fig. 7", "Fig. 7(c)"):
        assert f"AdamBNN {fig}" in sources
    assert "34.3 %" in md and "42.54 vs 35.45 %" in md
    # the real-valued run trained without binarization: its first binary conv saw no binarized input
    run = Path(runs) / "saturation" / "float_adam_lr_0.01" / "seed0"
    recs = epoch_records(run)
    assert recs and recs[0]["dyn"]["saturation"] == {}
    row = next(line for line in md.splitlines() if line.startswith(f"| {FLOAT} |"))
    assert "— (real-valued)" in row

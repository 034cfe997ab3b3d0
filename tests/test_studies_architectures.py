"""The architecture and landscape studies (``landscape``, ``resnet-family``, ``bnext-blocks``): the landscape shape
measures against hand-computed grids, the variants' configs, and what the smoke reports contain."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from onebit.analysis.landscape import evaluate_loss, load_run_stage, sample_batches
from onebit.data import build_data
from onebit.studies import STUDIES
from onebit.studies.architectures import grid_stats, landscape_run

NAMES = ("landscape", "resnet-family", "bnext-blocks")


# ------------------------------------------------------------------------------------------------------ grid_stats
def test_grid_stats_of_a_quadratic_bowl():
    p = 11
    t = np.linspace(-1.0, 1.0, p)
    a, b = np.meshgrid(t, t, indexing="ij")
    z = 3.0 * a**2 + 3.0 * b**2 + 0.5
    s = grid_stats(z)
    h = 2.0 / (p - 1)
    assert s["minima"] == 1.0  # one basin: the centre
    assert s["nonconvex"] == 0.0
    assert s["roughness"] == pytest.approx(2 * 3.0 * h**2, rel=1e-12)  # second difference of k x² is 2 k h²
    assert s["rel_roughness"] == pytest.approx(4 / (p - 1) ** 2, rel=1e-12)  # scale-free: the 3 cancels
    assert s["mean_rise"] == pytest.approx(float(np.mean(z)) - 0.5, rel=1e-12)


def test_grid_stats_hand_computed_3x3():
    z = np.array([[0.0, 2.0, 1.0], [3.0, 1.0, 4.0], [2.0, 5.0, 0.5]])
    s = grid_stats(z)
    # second differences: columns (0-6+2, 2-2+5, 1-8+0.5) = (-4, 5, -6.5); rows (0-4+1, 3-2+4, 2-10+0.5) = (-3, 5, -7.5)
    d2 = np.array([-4, 5, -6.5, -3, 5, -7.5])
    assert s["roughness"] == pytest.approx(np.abs(d2).mean())
    assert s["nonconvex"] == pytest.approx(4 / 6)
    assert s["rel_roughness"] == pytest.approx(np.abs(d2).mean() / 5.0)
    assert s["mean_rise"] == pytest.approx(z.mean() - 1.0)
    # (0,0)=0 is below its 3 neighbours; (2,2)=0.5 below 1, 4, 5; the centre 1 is not below the corner 0
    assert s["minima"] == 2.0


def test_grid_stats_counts_every_pit_of_a_rugged_grid_and_skips_non_finite():
    z = np.ones((5, 5))
    z[::2, ::2] = 0.0  # nine isolated pits on a plateau
    assert grid_stats(z)["minima"] == 9.0
    z[0, 0] = np.nan  # a non-finite point is never a minimum and drops out of the means
    s = grid_stats(z)
    assert s["minima"] == 8.0 and np.isfinite(s["roughness"]) and np.isfinite(s["mean_rise"])
    with pytest.raises(ValueError, match="2-D grid"):
        grid_stats(np.zeros(7))


# -------------------------------------------------------------------------------------------------------- variants
def test_variants_are_the_claimed_configurations():
    real, binary = (v.make() for v in STUDIES["landscape"].variants(4))
    assert real.model.kwargs == binary.model.kwargs  # the same network
    assert not real.stages[0].binarize_activations and not real.stages[0].binarize_weights
    assert binary.stages[0].binarize_activations and binary.stages[0].binarize_weights

    fam = {v.label: v.make() for v in STUDIES["resnet-family"].variants(5)}
    strategy = fam["StrongBaseline + AdamBNN strategy"]
    s1, s2 = strategy.stages
    assert (s1.binarize_activations, s1.binarize_weights, s2.binarize_weights) == (True, False, True)  # BABW
    assert (s1.optim.name, s1.optim.weight_decay, s2.optim.weight_decay) == ("adam", 5e-6, 0.0)
    assert s1.epochs + s2.epochs == 5 and strategy.model.kwargs["family"] == "strong_baseline"
    assert [len(c.stages) for c in fam.values()] == [1, 1, 1, 2]

    blocks = {v.label: v.make() for v in STUDIES["bnext-blocks"].variants(4)}
    flags = {
        k: (c.model.kwargs.get("infor_recoupling", True), c.model.kwargs.get("elm_attention", True))
        for k, c in blocks.items()
    }
    assert sorted(flags.values()) == [(False, False), (False, True), (True, False), (True, True)]
    assert all(c.stages[0].temperature_decay == 0.3 for c in blocks.values())


# --------------------------------------------------------------------------------------------------- smoke reports
@pytest.mark.parametrize("name,claims", [("landscape", 3), ("resnet-family", 3), ("bnext-blocks", 6)])
def test_smoke_reports(smoke_study, name, claims):
    path, docs, _ = smoke_study(name)
    md = path.read_text()
    rec = json.loads((docs / name / "claims.json").read_text())
    assert len(rec["claims"]) == claims
    if name != "resnet-family":
        assert (docs / name / "landscapes.png").stat().st_size > 1000
        assert "local minima" in md and "rel. roughness" in md
    else:
        assert (docs / name / "accuracy.png").is_file() and "(+2.3 points)" in md
    if name == "bnext-blocks":
        assert "the text of §5.3 says the opposite" in md


def test_landscape_centre_is_the_trained_model_and_is_cached(smoke_study):
    _, _, runs = smoke_study("landscape")
    run_dir = runs / "landscape" / "binary" / "seed0"
    cached = sorted((run_dir / "landscape").glob("*.npz"))
    assert cached, "the report's landscape was not cached in the run directory"
    first = landscape_run(run_dir)
    again = landscape_run(run_dir)
    assert np.array_equal(first["landscape"].loss, again["landscape"].loss)
    model, cfg, _ = load_run_stage(run_dir)
    batches = sample_batches(build_data(cfg.data, cfg.seed).val, 256, 256)
    model.eval()
    loss, acc = evaluate_loss(model, torch.nn.functional.cross_entropy, batches)
    assert first["center_loss"] == pytest.approx(loss, rel=1e-5) and first["center_acc"] == pytest.approx(acc)
    assert first["samples"] == 32 and first["points"] == 5  # a smoke run's val sliver gets the small grid
    assert Path(cached[0]).with_suffix(".json").is_file()

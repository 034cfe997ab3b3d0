"""Loss landscapes (filter-normalised directions, grids, exact restore) and the AdamBNN two-node toy; both CLIs."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onebit.analysis.landscape import (
    default_loss,
    evaluate_loss,
    filter_normalize_,
    grid_coords,
    landscape_1d,
    landscape_2d,
    load_run_stage,
    plot_landscape,
    random_direction,
    sample_batches,
)
from onebit.analysis.toy import ToyConfig, clip_loss, gradient_sequence, sign_loss, toy_experiment, update_share
from onebit.cli import main
from onebit.layers import BinaryConv2d
from onebit.layers.activations import LearnableBias

PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


class Tiny(nn.Module):
    """Float conv + BN, a binary conv with in-place latent clamping in eval, a learnable shift, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.move = LearnableBias(4)
        self.bconv = BinaryConv2d(4, 4, 3, padding=1, latent_clip=0.05, latent_clip_when="always")
        self.bn2 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.bn(self.conv(x))
        x = self.bn2(self.bconv(self.move(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _tiny():
    torch.manual_seed(0)
    m = Tiny()
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for bn in (m.bn, m.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    x = torch.randn(10, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    return m, [(x[:6], y[:6]), (x[6:], y[6:])]


# ------------------------------------------------------------------------------------------------------- directions
def test_filter_normalisation_matches_filter_norms_and_zeroes_bias_and_bn():
    m, _ = _tiny()
    d = filter_normalize_(random_direction(m, seed=3), m)
    params = dict(m.named_parameters())
    assert set(d) == set(params)
    for name in ("conv.weight", "bconv.weight", "fc.weight"):
        w, v = params[name].detach(), d[name]
        torch.testing.assert_close(v.flatten(1).norm(dim=1), w.flatten(1).norm(dim=1), rtol=1e-5, atol=1e-6)
        assert not torch.equal(v, w)  # a direction, not the weights
    for name in ("conv.bias", "bn.weight", "bn.bias", "move.bias", "bn2.weight", "bn2.bias", "fc.bias"):
        assert torch.count_nonzero(d[name]) == 0, name


def test_random_direction_is_reproducible_and_seed_dependent():
    m, _ = _tiny()
    a, b, c = random_direction(m, 0), random_direction(m, 0), random_direction(m, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc.weight"], c["fc.weight"])


def test_grid_coords_are_symmetric_with_an_exact_centre():
    for n, s in ((5, 1.0), (7, 0.3), (21, 0.7), (6, 1.0)):
        c = grid_coords(n, s)
        assert c[0] == -s and c[-1] == s and np.array_equal(c, -c[::-1])
        if n % 2:
            assert c[n // 2] == 0.0


# ------------------------------------------------------------------------------------------------------ landscapes
def test_1d_centre_equals_plain_loss_and_weights_restored_bit_exactly():
    m, batches = _tiny()
    m.train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.eval()
    plain = evaluate_loss(m, default_loss, batches)
    with torch.no_grad():
        ref_ce = float(sum(F.cross_entropy(m(x), y, reduction="sum") for x, y in batches)) / 10
    m.train()
    # the eval forward above clamped the binary latent weight in place: restore it to compare against `before`
    m.load_state_dict(before)
    res = landscape_1d(m, default_loss, batches, points=5, span=0.5, seed=0)
    assert res.alphas[2] == 0.0
    assert res.loss[2] == pytest.approx(plain[0], rel=1e-6) and res.acc[2] == plain[1]
    assert res.loss[2] == pytest.approx(ref_ce, rel=1e-5)
    assert not np.allclose(res.loss, res.loss[2])  # the perturbation changes the loss
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "weights or buffers not restored"
    assert m.training  # the mode is restored too
    assert isinstance(m.bconv, BinaryConv2d) and m.bconv.binarize_weight  # binarizers stay in place


def test_restore_happens_when_an_evaluation_fails():
    m, batches = _tiny()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    calls = []

    def failing(out, y):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return F.cross_entropy(out, y)

    with pytest.raises(RuntimeError, match="boom"):
        landscape_1d(m, failing, batches, points=5)
    assert all(torch.equal(before[k], m.state_dict()[k]) for k in before)


class Quadratic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(5, 4, bias=False)

    def forward(self, x):
        return self.lin(x)


def test_2d_grid_of_a_quadratic_is_point_symmetric_with_minimum_at_centre():
    torch.manual_seed(0)
    m = Quadratic()
    x = torch.randn(8, 5, dtype=torch.float64)
    m.double()
    target = m(x).detach()  # theta is the exact minimiser of the MSE, so L(a, b) is a quadratic form
    res = landscape_2d(m, F.mse_loss, [(x, target)], points=7, span=0.8, seed=2)
    assert res.loss.shape == (7, 7) and res.loss[3, 3] == 0.0
    np.testing.assert_allclose(res.loss, res.loss[::-1, ::-1], rtol=1e-9, atol=1e-12)  # L(-a, -b) = L(a, b)
    assert (res.loss[np.arange(7) != 3] > 0).all()
    assert np.isnan(res.acc).all()  # not a classifier
    # along an axis the quadratic scales with a^2
    np.testing.assert_allclose(res.loss[5, 3], 4 * res.loss[4, 3], rtol=1e-9)
    assert abs(res.info["directions"]["cosine"]) < 0.9


def test_plot_landscape_writes_pngs(tmp_path):
    m, batches = _tiny()
    r1 = landscape_1d(m, default_loss, batches, points=3)
    r2 = landscape_2d(m, default_loss, batches, points=3)
    files = plot_landscape(r1, tmp_path) + plot_landscape(r2, tmp_path)
    assert [f.name for f in files] == ["landscape_1d.png", "landscape_2d_contour.png", "landscape_3d.png"]
    assert all(f.read_bytes()[:8] == PNG for f in files)


def test_sample_batches_takes_the_first_k_in_order():
    x, y = torch.arange(10.0).view(10, 1), torch.arange(10)
    loader = [(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])]  # a plain iterable: iterated
    b = sample_batches(loader, 7, 3)
    assert [len(t) for _, t in b] == [3, 3, 1] and torch.equal(torch.cat([t for _, t in b]), y[:7])


# ------------------------------------------------------------------------------------------------------------- toy
def test_toy_surfaces_depend_on_signs_and_clip():
    w = torch.tensor([-1.7, -0.2, 0.0, 0.3, 2.5])
    a, b = torch.meshgrid(w, w, indexing="ij")
    z = sign_loss(a, b)
    assert set(z.unique().tolist()) == {0.0, 1.0, 4.0}
    assert torch.equal(z, sign_loss(a.sign() + (a == 0), b.sign() + (b == 0)))
    assert (
        clip_loss(torch.tensor(5.0), torch.tensor(7.0)) == 0.0
        and clip_loss(torch.tensor(-3.0), torch.tensor(-1.0)) == 4.0
    )


def test_toy_gradients_vanish_exactly_where_node_one_saturates():
    cfg = ToyConfig(steps=60)
    g, x = gradient_sequence(cfg)
    saturated = (x[:, 0] * cfg.start[0]).abs() > 1
    assert saturated.any() and (~saturated).any()
    assert torch.equal(g[:, 0] == 0, saturated)
    assert (g[:, 1] != 0).all()  # node 2 never saturates near the start


def test_toy_adam_puts_a_larger_share_of_its_update_in_the_vanishing_direction():
    res = toy_experiment()
    sgd, adam = res.shares["sgd"], res.shares["adam"]
    assert adam > 1.5 * sgd, (sgd, adam)
    assert 0.0 < res.numbers["w1_zero_gradient_fraction"] < 1.0
    # and it shows on the forward surface: Adam reaches the loss-0 cell, SGD is still in the w1 < 0 cell
    assert res.numbers["optimizers"]["adam"]["final_sign_loss"] == 0.0
    assert res.numbers["optimizers"]["sgd"]["final"][0] < 0.0
    # a property of the update rules, not of one seed or learning rate
    for seed in (1, 2):
        for lr_sgd, lr_adam in ((1e-4, 1e-3), (2e-3, 0.05)):
            r = toy_experiment(ToyConfig(seed=seed, lr_sgd=lr_sgd, lr_adam=lr_adam))
            assert r.shares["adam"] > r.shares["sgd"], (seed, r.shares)


def test_update_share():
    path = torch.tensor([[0.0, 0.0], [1.0, 3.0], [0.0, 4.0]])
    assert update_share(path, 0) == pytest.approx(2 / 6) and update_share(path, 1) == pytest.approx(4 / 6)


# ------------------------------------------------------------------------------------------------------------- CLI
def test_toy_landscape_cli(tmp_path, capsys):
    code = main(["toy-landscape", "--out", str(tmp_path), "--steps", "40"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "SGD" in out and "Adam" in out and "share" in out
    data = json.loads((tmp_path / "toy_landscape.json").read_text())
    assert len(data["grads"]) == 40
    o = data["optimizers"]
    assert o["adam"]["share_vanishing_direction"] > o["sgd"]["share_vanishing_direction"]
    for f in ("toy_surfaces_3d.png", "toy_contour.png", "toy_updates.png"):
        assert (tmp_path / f).read_bytes()[:8] == PNG, f


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from onebit.config import apply_overrides
    from onebit.recipes import get_recipe
    from onebit.train import run

    out = tmp_path_factory.mktemp("landscape") / "run"
    overrides = ["stages.*.epochs=1", "data.limit_train=64", "data.limit_val=32", "threads=1"]
    run(apply_overrides(get_recipe("adambnn_digits", smoke=True), overrides), out_dir=out)
    return out


def test_load_run_stage_binarizes_as_the_stage_trained(tiny_run):
    m1, cfg, info1 = load_run_stage(tiny_run, "step1")
    m2, _, info2 = load_run_stage(tiny_run)
    assert info1["stage"] == "step1" and info2["stage"] == cfg.stages[-1].name == "step2"
    layers1 = [m for m in m1.modules() if isinstance(m, BinaryConv2d)]
    layers2 = [m for m in m2.modules() if isinstance(m, BinaryConv2d)]
    assert layers1 and all(m.binarize_input and not m.binarize_weight for m in layers1)
    assert all(m.binarize_input and m.binarize_weight for m in layers2)
    with pytest.raises(ValueError, match="no stage"):
        load_run_stage(tiny_run, "step3")


def test_landscape_cli_on_a_run(tiny_run, tmp_path, capsys):
    out = tmp_path / "ls"
    code = main(["landscape", str(tiny_run), "--points", "5", "--samples", "16", "--out", str(out), "--json"])
    text = capsys.readouterr().out
    assert code == 0, text
    for f in ("landscape_1d.png", "landscape_2d_contour.png", "landscape_3d.png"):
        assert (out / f).read_bytes()[:8] == PNG, f
    grid = json.loads((out / "landscape_2d.json").read_text())
    assert len(grid["loss"]) == 5 and len(grid["loss"][0]) == 5
    assert grid["info"]["stage"] == "step2" and grid["info"]["data"]["samples"] == 16
    npz = np.load(out / "landscape_1d.npz")
    assert npz["loss"].shape == (5,) and npz["alphas"][2] == 0.0
    # the centre of the 1-D curve is the checkpoint's plain loss on the same 16 samples
    from onebit.data import build_data

    model, cfg, _ = load_run_stage(tiny_run)
    model.eval()
    batches = sample_batches(build_data(cfg.data, cfg.seed).val, 16, 256)
    assert npz["loss"][2] == pytest.approx(evaluate_loss(model, default_loss, batches)[0], rel=1e-6)


def test_landscape_cli_stage_and_errors(tiny_run, tmp_path, capsys):
    code = main(["landscape", str(tiny_run), "--stage", "1", "--mode", "1d", "--points", "3", "--samples", "8"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert (tiny_run / "landscape/step1/landscape_1d.png").exists()
    assert not (tiny_run / "landscape/step1/landscape_2d_contour.png").exists()
    code = main(["landscape", str(tiny_run), "--stage", "nope", "--points", "3"])
    assert code == 2 and "no stage 'nope'" in capsys.readouterr().err
    code = main(["landscape", str(tmp_path / "missing"), "--points", "3"])
    assert code == 2

"""Every registered optimizer against torch's own implementation; AdaBound against a hand-computed trace."""

import math

import pytest
import torch
from torch import nn

from onebit.config import OptimConfig
from onebit.layers import BinaryConv2d
from onebit.train.adabound import AdaBound
from onebit.train.optim import ADABOUND_FINAL_LR, OPTIMIZERS, PAPER_DEFAULT_LR, build_optimizer, default_lr


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.BatchNorm2d(3),
        BinaryConv2d(3, 4, 1),
        nn.Flatten(),
        nn.Linear(4, 2),
    ).double()


# the reference for each name: torch's class with the hyper-parameters spelled out (not read back from the registry)
def _torch_reference(name: str, groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    lr, betas, eps = cfg.lr, tuple(cfg.betas), cfg.eps
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, eps=eps)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
    if name == "amsgrad":
        return torch.optim.Adam(groups, lr=lr, betas=betas, eps=eps, amsgrad=True)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, eps=eps, alpha=0.99, momentum=0.0)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr, eps=1e-10)
    if name == "adadelta":
        return torch.optim.Adadelta(groups, lr=lr, rho=0.9, eps=1e-6)
    raise AssertionError(f"no torch reference for {name!r}: add one")


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS.list() if n != "adabound"])
def test_registered_optimizer_matches_torch_with_negative_decay(name):
    model = _net()
    cfg = OptimConfig(name=name, lr=0.05, weight_decay=-1e-2, other_weight_decay=3e-2)
    opt, _ = build_optimizer(model, cfg)
    decays = {g["name"]: g["weight_decay"] for g in opt.param_groups}
    assert decays["binary"] == -1e-2 and decays["real"] == 3e-2  # negative per-group decay accepted
    # the same groups over cloned parameters, built directly with torch
    ref_params = {id(p): p.detach().clone().requires_grad_(True) for p in model.parameters()}
    ref_groups = [
        {"params": [ref_params[id(p)] for p in g["params"]], "weight_decay": g["weight_decay"]}
        for g in opt.param_groups
    ]
    ref = _torch_reference(name, ref_groups, cfg)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        for p in model.parameters():
            g = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            p.grad, ref_params[id(p)].grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    for p in model.parameters():
        assert torch.equal(p.detach(), ref_params[id(p)].detach()), name


def test_negative_decay_changes_the_step():
    # a zero gradient isolates the decay term: with coupled L2 and decay -wd, the first step pushes w away from 0
    for name in OPTIMIZERS.list():
        w = nn.Parameter(torch.tensor([0.5, -0.25], dtype=torch.float64))
        opt = OPTIMIZERS.get(name)([{"params": [w], "weight_decay": -0.1}], OptimConfig(name=name, lr=0.01))
        w.grad = torch.zeros_like(w)
        opt.step()
        moved = w.detach() - torch.tensor([0.5, -0.25], dtype=torch.float64)
        assert torch.all(torch.sign(moved) == torch.tensor([1.0, -1.0], dtype=torch.float64)), name


def test_paper_default_learning_rates():
    assert default_lr("adam") == 1e-3 and default_lr("amsgrad") == 1e-3 and default_lr("adabound") == 1e-3
    assert default_lr("rmsprop") == 1e-2 and default_lr("adagrad") == 1e-2
    assert default_lr("adadelta") == 1.0 and default_lr("sgd") == 0.1
    assert ADABOUND_FINAL_LR == 0.1
    assert set(PAPER_DEFAULT_LR) <= set(OPTIMIZERS.list())
    with pytest.raises(KeyError, match="no default learning rate for 'adamw'"):
        default_lr("adamw")


def test_adabound_registered_with_paper_settings():
    opt, _ = build_optimizer(_net(), OptimConfig(name="adabound", lr=1e-3, weight_decay=-1e-4))
    assert isinstance(opt, AdaBound)
    g = opt.param_groups[0]
    assert g["final_lr"] == 0.1 and g["gamma"] == 1e-3 and g["base_lr"] == 1e-3 and not g["amsbound"]
    assert {x["name"]: x["weight_decay"] for x in opt.param_groups}["binary"] == -1e-4


# ------------------------------------------------------------------------------------------- AdaBound by hand
# beta1 = 1/2, beta2 = 3/4, eps = 0, lr = 0.1, final_lr = 0.2, gamma = 1/2: every number below is exact by hand.
HAND = dict(lr=0.1, betas=(0.5, 0.75), final_lr=0.2, gamma=0.5, eps=0.0)


def test_adabound_two_steps_by_hand():
    p = nn.Parameter(torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64))
    opt = AdaBound([p], **HAND)
    # step 1: m = g/2, v = g^2/4, sqrt(v) = |g|/2; step size 0.1 * sqrt(1/4) / (1/2) = 0.1; rate = 0.2/|g|
    # bounds: 0.2 * (1 - 1/1.5) = 1/15 and 0.2 * (1 + 1/0.5) = 0.6
    p.grad = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64)
    opt.step()
    # rates 0.2 (inside), 0.05 -> 1/15 (lower bound), 0.8 -> 0.6 (upper bound); updates rate * m
    want1 = [1 - 0.2 * 0.5, 1 - (1 / 15) * 2.0, 1 - 0.6 * 0.125]
    assert p.detach().tolist() == pytest.approx(want1, rel=1e-14)
    # step 2, g = [1, 1, 1]: m = [1/4 + 1/2, 1 + 1/2, 1/16 + 1/2] = [3/4, 3/2, 9/16]
    # v = 3/4 v1 + g^2/4 = [3/16 + 1/4, 3 + 1/4, 3/256 + 1/4] = [7/16, 13/4, 67/256]
    # step size 0.1 * sqrt(1 - 9/16) / (1 - 1/4) = 0.1 * (sqrt(7)/4) / (3/4) = sqrt(7)/30
    # bounds: 0.2 * (1 - 1/2) = 0.1 and 0.2 * (1 + 1) = 0.4
    p.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    s = math.sqrt(7) / 30
    rates = [s / math.sqrt(7 / 16), s / math.sqrt(13 / 4), s / math.sqrt(67 / 256)]  # 2/15, 0.0489, 0.1724
    rates = [min(max(r, 0.1), 0.4) for r in rates]
    assert rates[1] == 0.1  # the middle weight is held at the lower bound again
    want2 = [w - r * m for w, r, m in zip(want1, rates, [3 / 4, 3 / 2, 9 / 16])]
    assert p.detach().tolist() == pytest.approx(want2, rel=1e-14)


def test_adabound_decay_schedule_scaling_and_amsbound_by_hand():
    # coupled decay (negative), final_lr following lr / base_lr, and AMSBound's max of v, in one two-step trace
    p = nn.Parameter(torch.tensor([2.0], dtype=torch.float64))
    opt = AdaBound([{"params": [p], "weight_decay": -0.25}], amsbound=True, **HAND)
    p.grad = torch.tensor([1.5], dtype=torch.float64)
    opt.step()
    # g = 1.5 - 0.25 * 2 = 1; m = 1/2, v = 1/4; rate 0.2 inside [1/15, 0.6]; p = 2 - 0.1 = 1.9
    assert p.item() == pytest.approx(1.9, rel=1e-15)
    opt.param_groups[0]["lr"] = 0.05  # a schedule halves lr: final_lr follows to 0.1, bounds [0.05, 0.2]
    p.grad = torch.tensor([0.475], dtype=torch.float64)
    opt.step()
    # g = 0.475 - 0.25 * 1.9 = 0; m = 1/4; v = 3/16 but the AMSBound max keeps 1/4 (sqrt 1/2)
    # step size 0.05 * sqrt(7/16) / (3/4) = sqrt(7)/60; rate = sqrt(7)/30 = 0.0882 inside [0.05, 0.2]
    assert p.item() == pytest.approx(1.9 - (math.sqrt(7) / 30) * 0.25, rel=1e-14)
    state = opt.state_dict()
    assert state["param_groups"][0]["base_lr"] == 0.1  # survives a checkpoint, unlike the reference code's list


def test_adabound_with_open_bounds_is_adam():
    # gamma -> 0 opens the band to (~0, ~inf); with eps = 0 the two placements of eps coincide
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(5, 4, dtype=torch.float64))
    b = nn.Parameter(a.detach().clone())
    for amsgrad in (False, True):
        ours = AdaBound([{"params": [a], "weight_decay": -1e-2}], lr=1e-2, gamma=1e-12, eps=0.0, amsbound=amsgrad)
        ref = torch.optim.Adam([{"params": [b], "weight_decay": -1e-2}], lr=1e-2, eps=0.0, amsgrad=amsgrad)
        for _ in range(5):
            g = torch.randn_like(a)
            a.grad, b.grad = g.clone(), g.clone()
            ours.step()
            ref.step()
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-12, atol=1e-14)
    # with the default eps only the eps placement differs: eps / sqrt(1 - beta2^t) vs eps, visible on small
    # gradients in the first steps (~1e-7 here) yet far below the 5e-3 the weights move
    c = nn.Parameter(torch.randn(50, dtype=torch.float64))
    d = nn.Parameter(c.detach().clone())
    ours, ref = AdaBound([c], lr=1e-3, gamma=1e-12), torch.optim.Adam([d], lr=1e-3)
    for _ in range(5):
        g = torch.randn_like(c)
        c.grad, d.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(c.detach(), d.detach(), rtol=0, atol=1e-6)


def test_adabound_rejects_bad_arguments():
    p = [nn.Parameter(torch.zeros(1))]
    for kw in ({"lr": -1.0}, {"betas": (1.0, 0.9)}, {"final_lr": -0.1}, {"gamma": 0.0}, {"eps": -1.0}):
        with pytest.raises(ValueError):
            AdaBound(p, **kw)
    AdaBound(p, weight_decay=-1e-3)  # negative decay is a choice, not an error

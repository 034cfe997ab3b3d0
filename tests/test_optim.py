import math

import pytest
import torch
from torch import nn

from onebit.config import OptimConfig, ScheduleConfig
from onebit.layers import BinaryConv2d, LearnableBias
from onebit.models import create_model
from onebit.train.optim import OPTIMIZERS, build_optimizer, param_groups
from onebit.train.schedules import lr_at, set_lr


def _net():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        LearnableBias(4),
        BinaryConv2d(4, 4, 3),
        nn.PReLU(4),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


def test_paper_groups_by_role():
    m = _net()
    groups = {g["name"]: g for g in param_groups(m, OptimConfig(weight_decay=5e-6, other_weight_decay=1e-4))}
    ids = {n: {id(p) for p in g["params"]} for n, g in groups.items()}
    assert ids["binary"] == {id(m[3].weight)}
    assert ids["real"] == {id(m[0].weight), id(m[6].weight)}
    no_decay = (m[0].bias, m[1].weight, m[1].bias, m[2].bias, m[4].weight, m[6].bias)
    assert ids["no_decay"] == {id(p) for p in no_decay}
    assert groups["binary"]["weight_decay"] == 5e-6 and groups["real"]["weight_decay"] == 1e-4
    assert groups["no_decay"]["weight_decay"] == 0.0


def test_official_groups_follow_rank_and_name_rule():
    m = create_model("reactnet_digits", width=4)
    groups = {g["name"]: g for g in param_groups(m, OptimConfig(weight_decay=1e-5, wd_mode="official"))}
    for name, p in m.named_parameters():
        in_conv = any(p is q for q in groups["conv_or_4d"]["params"])
        assert in_conv == (p.ndim == 4 or "conv" in name), name
    # the learnable shifts are 4-D, so the released code decays them with the convs
    assert any(p is m.feature[1].move11.bias for p in groups["conv_or_4d"]["params"])
    assert groups["rest"]["weight_decay"] == 0.0


def test_every_parameter_in_exactly_one_group():
    m = create_model("reactnet_digits", width=4)
    for mode in ("paper", "official"):
        groups = param_groups(m, OptimConfig(wd_mode=mode))
        seen = [id(p) for g in groups for p in g["params"]]
        assert sorted(seen) == sorted(id(p) for p in m.parameters())
    with pytest.raises(ValueError, match="wd_mode"):
        param_groups(m, OptimConfig(wd_mode="other"))


def test_coupled_weight_decay_matches_torch_adam_with_negative_decay():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(3, 2, 1, 1))
    m = nn.Sequential()
    m.add_module("conv", BinaryConv2d(2, 3, 1, input_binarizer=None, weight_binarizer=None))
    m.conv.weight = w
    opt, lines = build_optimizer(m, OptimConfig(name="adam", lr=0.1, weight_decay=-1e-2))
    ref_w = w.detach().clone().requires_grad_(True)
    # torch validates only the constructor's default decay; a negative per-group decay is applied as given
    ref = torch.optim.Adam([{"params": [ref_w], "weight_decay": -1e-2}], lr=0.1)
    for _ in range(3):
        g = torch.randn_like(w)
        w.grad, ref_w.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    assert torch.equal(w.detach(), ref_w.detach())
    assert "binary" in lines[0] and "-0.01" in lines[0]


def test_optimizer_registry():
    m = _net()
    for name in OPTIMIZERS.list():
        opt, _ = build_optimizer(m, OptimConfig(name=name, lr=0.01))
        assert all(g["lr"] == 0.01 and g["initial_lr"] == 0.01 for g in opt.param_groups)
    assert isinstance(build_optimizer(m, OptimConfig(name="amsgrad"))[0].param_groups[0]["amsgrad"], bool)
    with pytest.raises(KeyError, match="did you mean 'adam'"):
        build_optimizer(m, OptimConfig(name="adma"))


def test_linear_per_step_and_official_per_epoch():
    c = ScheduleConfig(name="linear", per="step")
    assert lr_at(c, 1.0, 0, 10, 3) == 1.0
    assert lr_at(c, 1.0, 15, 10, 3) == pytest.approx(0.5)
    assert lr_at(c, 1.0, 30, 10, 3) == 0.0
    off = ScheduleConfig(name="linear", per="epoch", official_offset=True)
    # LambdaLR stepped before epoch 0: epoch e trains with lr * (1 - (e + 1) / E)
    assert [lr_at(off, 1.0, e * 10 + 3, 10, 4) for e in range(4)] == pytest.approx([0.75, 0.5, 0.25, 0.0])
    plain = ScheduleConfig(name="linear", per="epoch")
    assert [lr_at(plain, 1.0, e * 10, 10, 4) for e in range(4)] == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_cosine_with_warmup_prefix_matches_bnext_values():
    c = ScheduleConfig(name="cosine", per="epoch", warmup_epochs=5, warmup_lr_init=1e-5, lr_min=1e-7)
    lrs = [lr_at(c, 1e-3, e * 7, 7, 512) for e in range(6)]
    assert lrs[:5] == pytest.approx([1e-5, 2.08e-4, 4.06e-4, 6.04e-4, 8.02e-4])
    assert lrs[5] == pytest.approx(1e-3)
    last = lr_at(c, 1e-3, 511 * 7, 7, 512)
    assert last == pytest.approx(1e-7 + 0.5 * (1e-3 - 1e-7) * (1 + math.cos(math.pi * 506 / 512)))
    assert last > 4e-7  # the minimum is never reached, as in the released code
    step = ScheduleConfig(name="cosine", per="step", warmup_epochs=1)
    assert lr_at(step, 1.0, 5, 10, 4) == pytest.approx(0.5)  # half-way through the warm-up epoch


def test_set_lr_and_errors():
    m = _net()
    opt, _ = build_optimizer(m, OptimConfig(lr=0.2))
    assert set_lr(opt, ScheduleConfig(name="constant"), 7, 10, 2) == 0.2
    assert set_lr(opt, ScheduleConfig(name="linear"), 10, 10, 2) == pytest.approx(0.1)
    assert all(g["lr"] == pytest.approx(0.1) for g in opt.param_groups)
    with pytest.raises(ValueError, match="name must be one of"):
        lr_at(ScheduleConfig(name="step"), 1.0, 0, 1, 1)
    with pytest.raises(ValueError, match="per"):
        lr_at(ScheduleConfig(per="iteration"), 1.0, 0, 1, 1)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # the official order
def test_official_linear_matches_torch_lambdalr_stepped_before_each_epoch():
    # the released ReActNet/AdamBNN scripts: LambdaLR(lambda e: 1 - e / E), scheduler.step() at the start of epochs
    epochs, steps = 5, 3
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0 - e / epochs)
    cfg = ScheduleConfig(name="linear", per="epoch", official_offset=True)
    for e in range(epochs):
        sched.step()
        for s in range(steps):
            assert lr_at(cfg, 0.01, e * steps + s, steps, epochs) == pytest.approx(opt.param_groups[0]["lr"])


def test_per_step_linear_matches_torch_linearlr():
    total = 12
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5)
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.0, total_iters=total)
    cfg = ScheduleConfig(name="linear", per="step")
    for step in range(total + 1):
        assert lr_at(cfg, 0.5, step, 4, 3) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12)
        opt.step()
        sched.step()

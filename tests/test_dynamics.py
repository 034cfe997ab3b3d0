"""Dynamics metrics (AdamBNN §3.2) against brute-force references on a tiny binary model."""

import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from onebit.binarize import ApproxSign, HardSign, SignSTE
from onebit.layers import BinaryConv2d, BinaryLinear, set_binarization
from onebit.metrics import DynamicsTracker, cam, histogram, saturation_bound, saturation_share, sdam, zero_grad_share
from onebit.metrics import dynamics as dyn

SUMMARY_KEYS = {
    "saturation",
    "saturation_mean",
    "zero_grad_share",
    "zero_grad_layers",
    "cam_mean",
    "sdam",
    "first_layer",
    "first_cam",
    "update_cam_first",
}


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    m = nn.Sequential(
        BinaryConv2d(2, 3, 3, padding=1, input_binarizer=SignSTE(clip=1.0)),
        BinaryConv2d(3, 3, 3, padding=1, input_binarizer="bnext_sign"),  # HardSign, clip 1.5
        nn.Flatten(),
        BinaryLinear(3 * 4 * 4, 6, input_binarizer="approx_sign"),
        BinaryLinear(6, 5, input_binarizer=None),  # identity: no window, never counted
    )
    with torch.no_grad():  # latent weights beyond the clip-STE window of 1: their gradients are exactly zero
        m[0].weight.view(-1)[:5] = 2.0
        m[3].weight.view(-1)[::7] = -1.5
    return m


def _data():
    g = torch.Generator().manual_seed(1)
    return 2.0 * torch.randn(8, 2, 4, 4, generator=g), torch.randint(0, 5, (8,), generator=g)


def _capture(model: nn.Module) -> tuple[dict[str, list[torch.Tensor]], list]:
    seen: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, m in model.named_children():
        if isinstance(m, BinaryConv2d | BinaryLinear):
            handles.append(m.register_forward_pre_hook(lambda mod, args, n=name: seen[n].append(args[0].clone())))
            seen[name] = []
    return seen, handles


def _brute_cam(w: torch.Tensor) -> list[float]:
    out = []
    for o in range(w.shape[0]):
        vals = [abs(v) for v in w[o].flatten().tolist()]  # every input channel c and kernel position (i, j)
        out.append(sum(vals) / len(vals))
    return out


def _brute_sdam(w: torch.Tensor) -> float:
    c = _brute_cam(w)
    mu = sum(c) / len(c)
    return (sum((x - mu) ** 2 for x in c) / len(c)) ** 0.5


def test_functional_core_against_literal_loops():
    torch.manual_seed(0)
    for w in (torch.randn(4, 3, 3, 3), torch.randn(5, 7)):
        assert cam(w).tolist() == pytest.approx(_brute_cam(w), rel=1e-6)
        assert sdam(w) == pytest.approx(_brute_sdam(w), rel=1e-6)
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 1.0, 1.2, 3.0])
    assert saturation_share(x, 1.0) == 3 / 7  # |x| = 1 is inside the window
    assert saturation_share(x, 1.5) == 2 / 7
    g = torch.tensor([[0.0, 1.0], [-0.0, 2.0]])
    assert zero_grad_share(g) == 0.5
    assert saturation_bound(SignSTE(clip=1.0)) == 1.0 and saturation_bound(HardSign()) == 1.5
    assert saturation_bound(ApproxSign()) == 1.0 and saturation_bound(SignSTE(clip=None)) is None
    assert saturation_bound(nn.Identity()) is None


def test_histogram_matches_numpy_and_keeps_outliers_apart():
    torch.manual_seed(0)
    w = 0.8 * torch.randn(3000)
    w[:4] = torch.tensor([-1.5, 1.5, -7.0, 9.0])
    h = histogram(w, bins=201, range=(-1.5, 1.5))
    counts, edges = np.histogram(w.numpy().astype(np.float64), bins=201, range=(-1.5, 1.5))
    assert h["counts"].tolist() == counts.tolist()
    assert np.allclose(h["edges"].numpy(), edges)
    below, above = int((w < -1.5).sum()), int((w > 1.5).sum())
    assert h["below"] == below >= 1 and h["above"] == above >= 1
    assert int(h["counts"].sum()) + below + above == w.numel()
    with pytest.raises(ValueError):
        histogram(w, bins=10, range=(1.0, 1.0))


def test_tracker_against_brute_force_over_training():
    model = _model()
    tracker = DynamicsTracker(model)
    seen, handles = _capture(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = _data()
    layers = dict(model.named_children())
    bounds = {"0": 1.0, "1": 1.5, "3": 1.0}  # SignSTE clip, HardSign clip, ApproxSign window
    zero_brute = {k: [0, 0] for k in ("0", "1", "3", "4")}
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        tracker.after_backward()
        for k in zero_brute:
            vals = layers[k].weight.grad.flatten().tolist()
            zero_brute[k][0] += sum(1 for v in vals if v == 0.0)
            zero_brute[k][1] += len(vals)
        before = layers["0"].weight.detach().clone()
        tracker.before_step()
        opt.step()
        tracker.after_step()
        update = layers["0"].weight.detach() - before
    for h in handles:
        h.remove()

    s = tracker.epoch_summary()
    assert set(s) == SUMMARY_KEYS
    json.dumps(s, allow_nan=False)
    # saturation: explicit masks of the captured inputs, per layer and element-weighted overall
    brute = {}
    for k, b in bounds.items():
        outside = sum(int((xi.abs() > b).sum()) for xi in seen[k])
        brute[k] = (outside, sum(xi.numel() for xi in seen[k]))
    assert set(s["saturation"]) == set(bounds)  # the identity-binarized layer is never counted
    for k, (o, n) in brute.items():
        assert s["saturation"][k] == pytest.approx(o / n, rel=1e-12)
        assert 0 < o < n, k  # neither vacuous nor trivially saturated
    total = sum(n for _, n in brute.values())
    assert s["saturation_mean"] == pytest.approx(sum(o for o, _ in brute.values()) / total, rel=1e-12)
    # dead weights: literal counting of exact zeros in every binary layer's gradient
    for k, (z, n) in zero_brute.items():
        assert s["zero_grad_layers"][k] == pytest.approx(z / n, rel=1e-12)
    assert zero_brute["0"][0] > 0
    zs, ns = sum(z for z, _ in zero_brute.values()), sum(n for _, n in zero_brute.values())
    assert s["zero_grad_share"] == pytest.approx(zs / ns, rel=1e-12)
    # CAM / SDAM of the latent weights, and the update CAM of the first layer at the last step
    for k, m in layers.items():
        if k in zero_brute:
            c = _brute_cam(m.weight.detach())
            assert s["cam_mean"][k] == pytest.approx(sum(c) / len(c), rel=1e-6)
            assert s["sdam"][k] == pytest.approx(_brute_sdam(m.weight.detach()), rel=1e-5)
    assert s["first_layer"] == "0"
    assert s["first_cam"] == pytest.approx(_brute_cam(layers["0"].weight.detach()), rel=1e-6)
    assert s["update_cam_first"] == pytest.approx(_brute_cam(update), rel=1e-6)
    stats = tracker.update_stats()
    assert stats["cam"] == s["update_cam_first"]
    u = update.abs().flatten(1)
    assert stats["max"] == pytest.approx(u.amax(1).tolist())
    assert stats["zero_share"] == pytest.approx([float((r == 0).float().mean()) for r in u])

    # the summary reset the epoch accumulators
    s2 = tracker.epoch_summary()
    assert s2["saturation"] == {} and s2["saturation_mean"] is None and s2["zero_grad_share"] is None
    tracker.close()


def test_hooks_count_only_training_forwards_with_binarized_inputs():
    model = _model()
    tracker = DynamicsTracker(model)
    x, _ = _data()
    model.eval()
    model(x)
    assert tracker.epoch_summary()["saturation"] == {}
    model.train()
    set_binarization(model, activations=False)
    model(x)
    assert tracker.epoch_summary()["saturation"] == {}
    set_binarization(model, activations=True)
    model(x)
    assert set(tracker.epoch_summary()["saturation"]) == {"0", "1", "3"}
    model[0].binarize_input = False  # per layer
    model(x)
    assert set(tracker.epoch_summary()["saturation"]) == {"1", "3"}


def _train_step(model, tracker_list, x, y):
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    for t in tracker_list:
        t.after_backward()


def test_state_round_trip_resumes_mid_epoch():
    model = _model()
    x, y = _data()
    whole = DynamicsTracker(model)
    first = DynamicsTracker(model)
    _train_step(model, [whole, first], x, y)
    state = first.state_dict()
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.int64 for v in state.values())
    first.close()
    resumed = DynamicsTracker(model)
    resumed.load_state_dict(state)
    _train_step(model, [whole, resumed], 0.5 * x, y)
    a, b = whole.epoch_summary(), resumed.epoch_summary()
    for key in ("saturation", "saturation_mean", "zero_grad_share", "zero_grad_layers"):
        assert a[key] == b[key], key
    with pytest.raises(KeyError, match="sat_count"):
        resumed.load_state_dict({})
    with pytest.raises(ValueError, match="shape"):
        resumed.load_state_dict({k: v[:2] for k, v in state.items()})


def test_close_removes_hooks():
    model = _model()
    before = [len(m._forward_pre_hooks) for m in model]
    tracker = DynamicsTracker(model)
    assert [len(m._forward_pre_hooks) for m in model] == [n + 1 for n in before[:2]] + [0] + [n + 1 for n in before[3:]]
    tracker.close()
    assert [len(m._forward_pre_hooks) for m in model] == before
    model(_data()[0])
    assert tracker.epoch_summary()["saturation"] == {}


def test_stage_summary_histograms():
    model = _model()
    s = DynamicsTracker(model).stage_summary()
    json.dumps(s, allow_nan=False)
    weights = [model[i].weight.detach() for i in (0, 1, 3, 4)]
    h, h1 = s["latent_hist"], s["latent_hist_first"]
    assert len(h["edges"]) == 202 and len(h["counts"]) == 201
    assert h["edges"][0] == -1.5 and h["edges"][-1] == 1.5
    assert sum(h["counts"]) + h["below"] + h["above"] == sum(w.numel() for w in weights)
    assert h1["above"] == 5 and h1["below"] == 0  # the five latent weights set to 2.0
    assert sum(h1["counts"]) + h1["above"] == weights[0].numel()
    # the first layer's histogram is a part of the whole one
    assert all(a >= b for a, b in zip(h["counts"], h1["counts"]))


def test_summaries_sum_counts_over_ranks(monkeypatch, tmp_path):
    model = _model()
    x, y = _data()
    tracker = DynamicsTracker(model)
    _train_step(model, [tracker], x, y)
    state = tracker.state_dict()
    local = tracker.epoch_summary()
    # two ranks that saw different data: rank 1 counted nothing saturated and only non-zero gradients
    calls = []

    def fake_all_reduce(t, op=None):
        calls.append(t.shape)
        other = torch.zeros_like(t)
        other[1], other[2], other[3] = t[1], t[3], t[3]
        t.add_(other)

    monkeypatch.setattr(dyn.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dyn.dist, "all_reduce", fake_all_reduce)
    tracker.load_state_dict(state)
    summed = tracker.epoch_summary()
    assert calls == [torch.Size([4, 4])]
    for k, v in local["saturation"].items():
        assert summed["saturation"][k] == pytest.approx(v / 2, rel=1e-12)
    for k, v in local["zero_grad_layers"].items():
        assert summed["zero_grad_layers"][k] == pytest.approx(v / 2, rel=1e-12)
    monkeypatch.undo()

    # and the real collective on a one-rank gloo group
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        tracker.load_state_dict(state)
        assert tracker.epoch_summary()["saturation"] == local["saturation"]
    finally:
        dist.destroy_process_group()

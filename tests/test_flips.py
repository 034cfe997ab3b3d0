"""FF and C2I against a literal, element-by-element reading of AdamBNN eqs. 4-7."""

import itertools

import torch
from torch import nn

from onebit.layers import BinaryConv2d, BinaryLinear
from onebit.metrics import FlipTracker, c2i_ratio, ff_ratio
from onebit.metrics.flips import binary_latent_weights


def _sgn(v: float) -> int:
    return (v > 0) - (v < 0)


def _brute_flips(before: list[torch.Tensor], after: list[torch.Tensor]) -> float:
    s = 0.0
    for b, a in zip(before, after):
        for x, y in zip(b.flatten().tolist(), a.flatten().tolist()):
            s += abs(_sgn(y) - _sgn(x)) / 2  # eq. 4
    return s


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        BinaryConv2d(2, 3, 3, padding=1, input_binarizer="approx_sign"),
        nn.Flatten(),
        BinaryLinear(3 * 4 * 4, 5),
    )


def test_ff_and_c2i_match_brute_force_over_training():
    model = _model()
    weights = list(binary_latent_weights(model).values())
    # put a few weights exactly at 0 so the half-flip of eq. 4 is exercised
    with torch.no_grad():
        weights[0].view(-1)[:3] = 0.0
    init = [w.detach().clone() for w in weights]
    tracker = FlipTracker.for_model(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    total = sum(w.numel() for w in weights)
    per_layer_brute = [0.0, 0.0]
    x, y = torch.randn(8, 2, 4, 4), torch.randint(0, 5, (8,))
    for _ in range(6):
        before = [w.detach().clone() for w in weights]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        after = [w.detach().clone() for w in weights]
        got = float(tracker.update())
        want = _brute_flips(before, after) / total  # eq. 5
        assert abs(got - want) < 1e-12
        assert abs(ff_ratio(before, after) - want) < 1e-12
        for i in range(2):
            per_layer_brute[i] += _brute_flips([before[i]], [after[i]]) / weights[i].numel()
    assert sum(per_layer_brute) > 0  # the test would be vacuous without flips
    layers = tracker.pop_layer_ratios()
    for (name, got), want in zip(layers.items(), per_layer_brute):
        assert abs(got - want / 6) < 1e-12, name

    final = [w.detach() for w in weights]
    changed = _brute_flips(init, final) / total  # mean of eq. 6
    corr = (
        sum(_sgn(a) * _sgn(b) for i, f in zip(init, final) for a, b in zip(i.flatten().tolist(), f.flatten().tolist()))
        / total
    )
    c = tracker.c2i()
    assert abs(c["c2i_changed"] - changed) < 1e-12
    assert abs(c["c2i"] - corr) < 1e-12
    assert abs(c["c2i_eq7"] - (1 - changed / 2)) < 1e-12  # the printed eq. 7
    assert c2i_ratio(init, final) == c


def test_c2i_reading_spans_below_one_half():
    # every sign flipped: the sign correlation reaches -1, the printed eq. 7 cannot go below 0.5
    w = torch.tensor([1.0, -2.0, 3.0, -4.0])
    c = c2i_ratio([w], [-w])
    assert c["c2i"] == -1.0 and c["c2i_changed"] == 1.0 and c["c2i_eq7"] == 0.5


def test_tracker_state_round_trip_and_reset():
    model = _model()
    tr = FlipTracker.for_model(model)
    state = tr.state_dict()
    assert all(v.dtype == torch.int8 for k, v in state.items() if k.startswith("init."))  # signs kept as int8
    with torch.no_grad():
        for w in binary_latent_weights(model).values():
            w.neg_()
    assert tr.c2i()["c2i"] < -0.99
    tr2 = FlipTracker.for_model(model)
    tr2.load_state_dict(state)
    assert tr2.c2i() == tr.c2i()
    tr2.reset_reference()
    assert tr2.c2i()["c2i"] == 1.0
    assert float(tr2.update()) == 0.0


def test_tracker_state_keeps_the_open_epochs_layer_sums():
    # a run resumed inside an epoch must report the epoch's per-layer FF ratios over all of its steps
    model = _model()
    tr = FlipTracker.for_model(model)
    for _ in range(3):
        with torch.no_grad():
            for w in binary_latent_weights(model).values():
                w.add_(torch.randn_like(w))
        tr.update()
    resumed = FlipTracker.for_model(model)
    resumed.load_state_dict(tr.state_dict())
    assert resumed.pop_layer_ratios() == tr.pop_layer_ratios()
    # a state written before the sums were saved (init signs only) starts the epoch's sums at zero
    old = FlipTracker.for_model(model)
    old.load_state_dict({k: v for k, v in tr.state_dict().items() if k.startswith("init.")})
    assert all(v == 0.0 for v in old.pop_layer_ratios().values())


def test_tracker_keeps_int8_signs_on_weight_device():
    model = _model()
    tr = FlipTracker.for_model(model)
    for s in itertools.chain(tr.prev.values(), tr.init.values()):
        assert s.dtype == torch.int8

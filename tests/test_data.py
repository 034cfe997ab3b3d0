import torch

from onebit.config import DataConfig
from onebit.data import TensorLoader, build_data, load_digits_tensors


def test_digits_split_is_fixed_and_documented():
    xt, yt, xv, yv = load_digits_tensors(16)
    assert xt.shape == (1437, 1, 16, 16) and xv.shape == (360, 1, 16, 16)
    assert torch.bincount(yv).min() >= 35  # stratified: every class ~36 times in val
    xt2, yt2, _, _ = load_digits_tensors(16)
    assert torch.equal(xt, xt2) and torch.equal(yt, yt2)
    assert abs(float(xt.mean())) < 1e-5 and abs(float(xt.std()) - 1) < 1e-4


def test_loader_is_a_function_of_seed_and_epoch_and_skips_exactly():
    x, y = torch.randn(50, 1, 8, 8), torch.arange(50)
    a = TensorLoader(x, y, 16, shuffle=True, shift=1, seed=3)
    b = TensorLoader(x, y, 16, shuffle=True, shift=1, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    full = list(a.iterate())
    assert len(full) == len(a) == 4 and sum(len(t) for _, t in full) == 50
    skipped = list(b.iterate(skip=2))
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(full[2:], skipped))
    b.set_epoch(3)
    assert not torch.equal(next(iter(b))[1], full[0][1])


def test_translation_moves_content_by_at_most_shift():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 4, 4] = 1.0
    loader = TensorLoader(x.repeat(20, 1, 1, 1), torch.zeros(20, dtype=torch.long), 20, shuffle=False, shift=2)
    out, _ = next(iter(loader))
    pos = [divmod(int(o.flatten().argmax()), 8) for o in out]
    assert all(abs(r - 4) <= 2 and abs(c - 4) <= 2 for r, c in pos)
    assert len(set(pos)) > 1


def test_build_data_limits_and_unknown_name():
    d = build_data(DataConfig(limit_train=100, limit_val=20, image_size=8))
    assert d.train.num_samples == 100 and d.val.num_samples == 20 and d.in_chans == 1 and d.num_classes == 10
    try:
        build_data(DataConfig(name="digitz"))
    except KeyError as e:
        assert "did you mean 'digits'" in str(e)
    else:
        raise AssertionError("unknown data set accepted")


def test_repeated_augmentation_order_in_the_loader():
    d = build_data(DataConfig(limit_train=64, image_size=8, batch_size=16, aug_repeats=2))
    d.train.set_epoch(1)
    order, _ = d.train.epoch_order()
    assert len(order) == 64 and torch.equal(order[0::2], order[1::2])  # each drawn image twice in a row
    assert len(set(order.tolist())) == 32
    labels = torch.cat([y for _, y in d.train])
    assert torch.equal(labels[0::2], labels[1::2])
    try:
        build_data(DataConfig(aug_repeats=0))
    except ValueError as e:
        assert "aug_repeats" in str(e)
    else:
        raise AssertionError("aug_repeats=0 accepted")

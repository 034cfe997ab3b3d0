"""Batch augmentation: determinism, crop geometry, MixUp/CutMix label arithmetic, RandAugment, repeated order."""

import math

import pytest
import torch

from onebit.augment import (
    build_train_augment,
    cifar_crop_flip,
    cutmix,
    cutmix_box,
    mixup,
    soft_cross_entropy,
)
from onebit.data import repeated_order
from onebit.data.cifar import CIFAR_MEAN, CIFAR_STD


def _batch(b=6, c=3, s=32, k=10):
    g = torch.Generator().manual_seed(123)
    return torch.rand(b, c, s, s, generator=g), torch.randint(0, k, (b,), generator=g)


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_none_is_identity():
    x, y = _batch()
    aug = build_train_augment("none", 32, num_classes=10)
    xo, yo = aug(x, y, _g())
    assert xo is x and yo is y


@pytest.mark.parametrize(
    ("kind", "kwargs", "out_size"),
    [
        ("cifar", {}, 32),
        ("imagenet", {}, 24),
        ("cifar", {"randaugment": True}, 32),
        ("cifar", {"mixup": 0.8, "cutmix": 1.0}, 32),
        ("imagenet", {"randaugment": True, "mixup": 0.8, "mean": CIFAR_MEAN, "std": CIFAR_STD}, 24),
    ],
)
def test_shapes_dtypes_and_determinism(kind, kwargs, out_size):
    x, y = _batch()
    aug = build_train_augment(kind, 24, num_classes=10, **kwargs)
    x1, y1 = aug(x, y, _g(5))
    x2, y2 = aug(x, y, _g(5))
    assert x1.shape == (6, 3, out_size, out_size) and x1.dtype == torch.float32
    torch.testing.assert_close(x1, x2, rtol=0, atol=0)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    if aug.soft_labels:
        assert y1.shape == (6, 10) and y1.dtype == torch.float32
    else:
        assert torch.equal(y1, y)
    x3, _ = aug(x, y, _g(6))
    assert not torch.equal(x1, x3)  # another generator, another augmentation


def test_int_seed_equals_generator():
    x, y = _batch()
    aug = build_train_augment("cifar", 32, num_classes=10)
    torch.testing.assert_close(aug(x, y, 9)[0], aug(x, y, _g(9))[0], rtol=0, atol=0)


def test_cifar_crop_moves_content_at_most_padding():
    # One bright pixel per image: after the crop it is either gone (cropped out) or within 4 px (mod flip).
    b, s = 64, 32
    x = torch.zeros(b, 1, s, s)
    x[:, 0, 15, 10] = 1.0
    out = cifar_crop_flip(x, _g(1), padding=4, flip=False)
    shifts = set()
    for i in range(b):
        nz = out[i, 0].nonzero()
        assert len(nz) == 1  # a 4-px shift never crops out a pixel this far from the border
        dy, dx = int(nz[0, 0]) - 15, int(nz[0, 1]) - 10
        assert abs(dy) <= 4 and abs(dx) <= 4
        shifts.add((dy, dx))
    assert len(shifts) > 10  # offsets actually vary
    flipped = cifar_crop_flip(x, _g(1), padding=4, flip=True)
    cols = {int(flipped[i, 0].nonzero()[0, 1]) for i in range(b)}
    assert any(abs(c - 10) > 4 for c in cols) and all(abs(c - 10) <= 4 or abs(c - (s - 1 - 10)) <= 4 for c in cols)


def test_cifar_crop_pads_with_black_in_pixel_space():
    # Normalised constant-mean images: the padded border must be (0 - mean) / std, i.e. black before normalising.
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    x = torch.zeros(32, 3, 8, 8)  # normalised zeros = the mean colour
    aug = build_train_augment("cifar", 8, num_classes=10, mean=CIFAR_MEAN, std=CIFAR_STD)
    out, _ = aug(x, torch.zeros(32, dtype=torch.long), _g(2))
    values = {round(float(v), 4) for v in out[:, 0].unique()}
    assert values <= {0.0, round(float(-mean[0, 0, 0, 0] / std[0, 0, 0, 0]), 4)}
    assert len(values) == 2


def test_mixup_labels_are_lambda_mixes():
    x, y = _batch(b=4)
    xm, ym = mixup(x, y, 0.3, 10)
    torch.testing.assert_close(xm, 0.3 * x + 0.7 * x.flip(0))
    torch.testing.assert_close(ym.sum(1), torch.ones(4))
    for i in range(4):
        expect = torch.zeros(10)
        expect[y[i]] += 0.3
        expect[y.flip(0)[i]] += 0.7
        torch.testing.assert_close(ym[i], expect)


def test_cutmix_area_corrected_lambda_by_hand():
    x = torch.stack([torch.full((1, 10, 10), float(i)) for i in range(2)])
    y = torch.tensor([0, 1])
    # Box rows 2..6, cols 0..5 = 4 * 5 = 20 of 100 pixels replaced -> lambda 0.8.
    out, ym, lam = cutmix(x, y, (2, 6, 0, 5), 3)
    assert lam == pytest.approx(0.8)
    assert (out[0] == 1).sum() == 20 and (out[1] == 0).sum() == 20
    assert out[0, 0, 2:6, 0:5].eq(1).all() and out[0, 0, 6:, :].eq(0).all()
    torch.testing.assert_close(ym, torch.tensor([[0.8, 0.2, 0.0], [0.2, 0.8, 0.0]]))


def test_cutmix_box_and_area_corrected_lambda():
    # Side sqrt(1 - lam) of the image: 0.4 * 100 = 40 px when the centre is far from the borders; clipped boxes are
    # smaller and the returned lambda is always 1 - (kept box area) / (image area).
    g = _g(0)
    x, y = torch.zeros(2, 1, 100, 100), torch.tensor([0, 1])
    sizes = set()
    for _ in range(50):
        y0, y1, x0, x1 = box = cutmix_box(100, 100, 0.84, g)
        assert 0 <= y0 <= y1 <= 100 and 0 <= x0 <= x1 <= 100 and y1 - y0 <= 40 and x1 - x0 <= 40
        sizes.add((y1 - y0, x1 - x0))
        _, ym, lam = cutmix(x, y, box, 2)
        assert lam == pytest.approx(1 - (y1 - y0) * (x1 - x0) / 10000)
        assert float(ym[0, 0]) == pytest.approx(lam)
    assert (40, 40) in sizes and len(sizes) > 1


def test_randaugment_ignores_and_keeps_global_rng():
    x, y = _batch(b=4)
    aug = build_train_augment("cifar", 32, num_classes=10, randaugment=True)
    torch.manual_seed(1)
    a = aug(x, y, _g(7))[0]
    after = torch.rand(1)
    torch.manual_seed(2)
    b = aug(x, y, _g(7))[0]
    torch.manual_seed(1)
    assert torch.equal(a, b) and torch.equal(torch.rand(1), after)


def test_augment_soft_labels_sum_to_one_and_match_image_mix():
    x, y = _batch(b=8)
    for kw in ({"mixup": 0.8}, {"cutmix": 1.0}, {"mixup": 0.8, "cutmix": 1.0}):
        aug = build_train_augment("none", 32, num_classes=10, **kw)
        for seed in range(4):
            xo, yo = aug(x, y, _g(seed))
            torch.testing.assert_close(yo.sum(1), torch.ones(8))
            # Label weight of the image's own class (classes may coincide, so check images of distinct pairs).
            for i in range(8):
                j = 7 - i
                if y[i] == y[j]:
                    continue
                lam = float(yo[i, y[i]])
                if "cutmix" in kw and kw.get("mixup", 0) == 0:
                    kept = (xo[i] == x[i]).all(0).float().mean()
                    assert lam == pytest.approx(float(kept), abs=1e-6)
                elif "mixup" in kw and "cutmix" not in kw:
                    torch.testing.assert_close(xo[i], lam * x[i] + (1 - lam) * x[j])


def test_randaugment_changes_batch_and_stays_in_range():
    x, y = _batch(b=8)
    aug = build_train_augment("none", 32, num_classes=10, randaugment=True)
    xo, yo = aug(x, y, _g(3))
    assert xo.shape == x.shape and torch.equal(yo, y)
    assert not torch.allclose(xo, x)
    assert xo.min() >= 0 and xo.max() <= 1
    with pytest.raises(ValueError, match="0-10"):
        build_train_augment("none", 32, num_classes=10, randaugment=True, randaugment_m=20)


def test_bad_kind():
    with pytest.raises(ValueError, match="kind"):
        build_train_augment("autoaugment", 32, num_classes=10)


def test_repeated_order():
    n, r = 23, 3
    order = repeated_order(n, r, _g(0))
    assert order.shape == (n,) and order.dtype == torch.int64
    counts = torch.bincount(order, minlength=n)
    distinct = counts.nonzero().numel()
    assert distinct == math.ceil(n / r)
    # Every drawn index appears `repeats` times in a row, except the truncated last one.
    assert sorted(counts[counts > 0].tolist()) == [n - r * (distinct - 1)] + [r] * (distinct - 1)
    for k in range(distinct - 1):
        assert order[k * r : (k + 1) * r].unique().numel() == 1
    assert torch.equal(order, repeated_order(n, r, _g(0)))
    assert torch.equal(repeated_order(n, 1, _g(0)).sort().values, torch.arange(n))
    with pytest.raises(ValueError):
        repeated_order(n, 0)


def test_soft_cross_entropy():
    logits = torch.randn(5, 4, generator=_g(0))
    y = torch.tensor([0, 1, 2, 3, 0])
    hard = torch.nn.functional.cross_entropy(logits, y)
    torch.testing.assert_close(soft_cross_entropy(logits, y), hard)
    torch.testing.assert_close(soft_cross_entropy(logits, torch.nn.functional.one_hot(y, 4).float()), hard)
    t = torch.full((5, 4), 0.25)
    torch.testing.assert_close(soft_cross_entropy(logits, t), -logits.log_softmax(-1).mean(-1).mean())


def test_rand_augment_on_grey_images_equals_the_rgb_replica():
    from onebit.augment import rand_augment

    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    grey = rand_augment(x, torch.Generator().manual_seed(1), groups=3)
    rgb = rand_augment(x.expand(-1, 3, -1, -1).contiguous(), torch.Generator().manual_seed(1), groups=3)
    assert grey.shape == x.shape
    assert torch.equal(grey[:, 0], rgb[:, 0]) and torch.allclose(rgb[:, 0], rgb[:, 2], atol=1e-5)
    assert not torch.equal(grey, x)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        rand_augment(torch.rand(2, 2, 8, 8), torch.Generator().manual_seed(0))

"""The per-shape plan path of the fused ReActNet-A blocks (onebit/kernels/chain.py, csrc/chain.c): bitwise equal to
the generic path, plans reused and rebuilt when they should be, fresh outputs, the generic path's errors."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from test_kernels import _randomize_  # non-trivial BN statistics and shifts, zero weights nudged

from onebit.kernels import _native, chain, pack_
from onebit.kernels.fuse import FoldedConvBN, FusedReActBlock
from onebit.models.reactnet import ReActNet

NATIVE = _native.load() is not None
pytestmark = pytest.mark.skipif(not NATIVE, reason="compiled kernel not built (pure-torch path only)")


@pytest.fixture(scope="module")
def models():
    """A narrow ReActNet (stride-2 blocks with and without width doubling, chained blocks) and its packed copy."""
    torch.manual_seed(0)
    model = ReActNet((16, 32, 64, 64, 128, 128, 256), num_classes=10, stem_stride=2).eval()
    _randomize_(model)
    packed = copy.deepcopy(model)
    pack_(packed)
    assert sum(isinstance(m, FusedReActBlock) for m in packed.modules()) == 6
    return model, packed


def _blocks(packed):
    return [m for m in packed.modules() if isinstance(m, FusedReActBlock)]


def _generic(module, x):
    chain.enabled = False
    try:
        return module(x)
    finally:
        chain.enabled = True


def _x(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (3, 3, 48, 64), (2, 3, 64, 32)])
def test_fused_plan_path_equals_generic_path_bitwise(models, shape, threads, restore_threads):
    model, packed = models
    torch.set_num_threads(threads)  # restored by the restore_threads fixture
    x = _x(*shape)
    with torch.inference_mode():
        y = packed(x)
        ref = _generic(packed, x)
        ev = model(x)
    assert torch.equal(y, ref)
    assert (y - ev).abs().max() <= 1e-4 * ev.abs().max()
    assert all(b._plans and all(p.fused for p in b._plans.values()) for b in _blocks(packed))


def test_fused_plan_reused_and_second_shape_builds_another(models):
    _, packed = models
    for b in _blocks(packed):
        b._plans.clear()
    with torch.inference_mode():
        packed(_x(1, 3, 32, 32))
        first = [dict(b._plans) for b in _blocks(packed)]
        assert all(len(p) == 1 for p in first)
        packed(_x(1, 3, 32, 32, seed=2))
        assert all(b._plans == p and all(b._plans[k] is p[k] for k in p) for b, p in zip(_blocks(packed), first))
        packed(_x(2, 3, 64, 48))
        assert all(len(b._plans) == 2 for b in _blocks(packed))
        assert all(b._plans[k] is p[k] for b, p in zip(_blocks(packed), first) for k in p)


def test_fused_plan_outputs_are_fresh_tensors(models):
    """The output of one call is not overwritten by the next (no buffer of a returned tensor is reused)."""
    _, packed = models
    blk = _blocks(packed)[1]  # stride 2, 32 -> 64
    with torch.inference_mode():
        x1, x2 = _x(1, 32, 16, 16), _x(1, 32, 16, 16, seed=3)
        y1 = blk(x1)
        keep = y1.clone()
        y2 = blk(x2)
        assert torch.equal(y1, keep) and not torch.equal(y1, y2)
        assert y1.data_ptr() != y2.data_ptr()
        z1 = packed(_x(1, 3, 32, 32))
        zkeep = z1.clone()
        packed(_x(1, 3, 32, 32, seed=4))
        assert torch.equal(z1, zkeep)
        assert torch.equal(blk(x1), keep)


def test_fused_plan_single_blocks_and_handoff(models):
    """Each block alone (input packed in the call) and chained (bits handed over) equals the generic path."""
    _, packed = models
    blocks = _blocks(packed)
    with torch.inference_mode():
        x = packed.feature[0](_x(2, 3, 32, 32)) if hasattr(packed, "feature") else None
        assert x is not None
        for b in blocks:
            y = b(x)
            assert torch.equal(y, _generic(b, x)), b
            assert y.is_contiguous(memory_format=torch.channels_last)
            x = b(x)  # emits the next block's bits: the next call takes them
            assert blocks.index(b) == len(blocks) - 1 or b._next._handoff[0] is x


def test_fused_plan_errors_and_fallbacks_match_generic_path(models):
    _, packed = models
    blk = _blocks(packed)[1]  # stride 2
    with torch.inference_mode():
        for bad in (_x(1, 31, 8, 8), _x(32, 8, 8), torch.zeros(1, 32, 8, 8, dtype=torch.float64)):
            with pytest.raises(RuntimeError) as plan_err:
                blk(bad)
            with pytest.raises(RuntimeError) as gen_err:
                _generic(blk, bad)
            assert type(plan_err.value) is type(gen_err.value) and str(plan_err.value) == str(gen_err.value)
        # odd input at stride 2: a 1-pixel residual broadcasts as in the eval block, a larger one fails as there
        x = _x(1, 32, 3, 3)
        assert torch.equal(blk(x), _generic(blk, x))
        assert not blk._plans[(1, 3, 3)].fused
        with pytest.raises(RuntimeError) as plan_err:
            blk(_x(1, 32, 5, 5))
        with pytest.raises(RuntimeError) as gen_err:
            _generic(blk, _x(1, 32, 5, 5))
        assert str(plan_err.value) == str(gen_err.value)
        first = _blocks(packed)[0]  # stride 1, 3x3 padding 1: a 1x1 input is fine
        x = _x(2, 16, 1, 1)
        assert torch.equal(first(x), _generic(first, x))
        assert first(_x(0, 16, 4, 4)).shape == _generic(first, _x(0, 16, 4, 4)).shape == (0, 32, 4, 4)  # batch 0
    x = _x(1, 32, 8, 8).requires_grad_()
    with pytest.raises(RuntimeError, match="inference-only"):
        blk(x)


def test_fused_plans_dropped_on_move_copy_and_change(models):
    _, packed = models
    x = _x(1, 3, 32, 32)
    with torch.inference_mode():
        ref = packed(x)
        assert all(b._plans for b in _blocks(packed))
        dup = copy.deepcopy(packed)
        assert all(not b._plans and b._handoff is None for b in _blocks(dup))
        assert torch.equal(dup(x), ref)
        for b, d in zip(_blocks(packed), _blocks(dup)):
            plan = next(iter(d._plans.values()))
            assert plan.pw2 is d.conv2_pw and plan.pw2 is not b.conv2_pw  # the copy's own buffers
        assert all(not b._plans for b in _blocks(pickle.loads(pickle.dumps(packed))))
        packed.float()  # _apply: plans hold data pointers of the buffers
        assert all(not b._plans for b in _blocks(packed))
        assert torch.equal(packed(x), ref)
        # an epilogue changed in place or replaced: the block computes with the new one, as the generic path does
        blk = _blocks(dup)[2]
        blk.conv2_ep.bias = blk.conv2_ep.bias + 0.5
        y = dup(x)
        assert not torch.equal(y, ref) and torch.equal(y, _generic(dup, x))
        blk.conv2_ep = blk.conv2_ep.checked(blk.planes)
        assert torch.equal(dup(x), y) and blk._plans[(1, 8, 8)].ep2 is blk.conv2_ep


def test_torch_backend_builds_no_plans():
    torch.manual_seed(0)
    model = ReActNet((16, 32, 64), num_classes=10, stem_stride=2).eval()
    packed = copy.deepcopy(model)
    pack_(packed, backend="torch")
    with torch.inference_mode():
        packed(_x(1, 3, 16, 16))
    assert all(not b._plans for b in _blocks(packed))


def test_stem_folded_channels_last_and_logits_equal_eval(models):
    """The stem's BN is folded into its conv (channels_last output, which the first block reads without a copy), and
    the packed model's logits still match the float eval model."""
    model, packed = models
    assert isinstance(packed.feature[0], FoldedConvBN)
    x = _x(2, 3, 64, 64)
    with torch.inference_mode():
        stem = packed.feature[0](x)
        assert stem.permute(0, 2, 3, 1).is_contiguous()
        ref = model.feature[0](x)
        assert torch.allclose(stem, ref, rtol=1e-5, atol=1e-5)
        y, want = packed(x), model(x)
    assert torch.allclose(y, want, rtol=1e-4, atol=1e-4 * max(1.0, want.abs().max().item()))

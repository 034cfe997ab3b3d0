"""The fused Bi-Real blocks and the folded stem of the binary ResNets (onebit/kernels/fuse_resnet.py): equal to the
eval model (within the packed engine's tolerance), bitwise equal to the unfused packed path where the arithmetic is
the same (packed conv with BN folded, then the shortcut added and RPReLU applied in torch), the next block's bits
handed over only when it receives this very tensor, plans dropped when they should be, the eval model's errors."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kernels import _randomize_  # non-trivial BN statistics, shifts and slopes; zero weights nudged
from torch import nn

from onebit.kernels import _native, fuse_resnet, pack_
from onebit.kernels.engine import PackedConv2d
from onebit.kernels.fuse import FoldedConvBN
from onebit.kernels.fuse_resnet import FusedBiRealBlock
from onebit.kernels.ops import pack_activations
from onebit.models import create_model
from onebit.models.resnet import BIREALNET18, REACTNET_RESNET18, STRONG_BASELINE, BinaryResNet, BiRealBlock

NATIVE = _native.load() is not None
needs_native = pytest.mark.skipif(not NATIVE, reason="compiled kernel not built (pure-torch path only)")
CONFIGS = {"birealnet18": BIREALNET18, "reactnet_resnet18": REACTNET_RESNET18}


def _x(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _net(family: str) -> BinaryResNet:
    """A narrow member of ``family`` with the ImageNet stem (7x7/2 conv, BN, max-pool) and two stride-2 stages."""
    cfg = dataclasses.replace(CONFIGS[family], depths=(2, 2, 1), widths=(16, 32, 64))
    torch.manual_seed(0)
    model = BinaryResNet(cfg, num_classes=10, cifar_stem=False).eval()
    _randomize_(model)
    return model


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def nets(request):
    """(eval model, packed copy, pack report) of a narrow Bi-Real Net and of the ReActNet ResNet-18."""
    model = _net(request.param)
    packed = copy.deepcopy(model)
    report = pack_(packed)
    return model, packed, report


def _blocks(model: nn.Module) -> list[FusedBiRealBlock]:
    return [m for m in model.modules() if isinstance(m, FusedBiRealBlock)]


def _eval_blocks(model: nn.Module) -> list[BiRealBlock]:
    return [m for m in model.modules() if isinstance(m, BiRealBlock)]


def _close(out: torch.Tensor, ref: torch.Tensor, rel: float = 1e-4) -> bool:
    return out.shape == ref.shape and bool((out - ref).abs().max() <= rel * ref.abs().max())


def _unfused(block: BiRealBlock, fused: FusedBiRealBlock):
    """The packed path before the fusion: a PackedConv2d with the shift and BN folded in, the shortcut added and
    RPReLU applied in torch (the shortcut: the fused block's own, BN folded, so that the arithmetic is the same)."""
    conv = PackedConv2d(block.binary_conv, shift=block.move0, bn=block.bn1)

    def run(x: torch.Tensor) -> torch.Tensor:
        out = conv(x) + (x if fused.downsample is None else fused.downsample(x))
        if block.act == "rprelu":
            out = block.move2(block.prelu(block.move1(out)))
        return out

    return run


def _raises_like(fn_a, fn_b) -> None:
    """``fn_b`` raises an error of the type ``fn_a`` raises (the eval model's, which ours subclasses)."""
    with pytest.raises(Exception) as want:  # noqa: PT011 - the eval model's error is the expectation
        fn_a()
    with pytest.raises(type(want.value)):
        fn_b()


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (3, 3, 32, 48), (2, 3, 96, 64)])
def test_packed_net_equals_eval_model(nets, shape):
    model, packed, _ = nets
    x = _x(*shape)
    with torch.inference_mode():
        ref = copy.deepcopy(model).double()(x.double()).float()
        out = packed(x)
    assert _close(out, ref)
    assert torch.equal(out.argmax(1), ref.argmax(1))


def test_report_and_structure(nets):
    model, packed, report = nets
    fused = _blocks(packed)
    assert len(fused) == len(_eval_blocks(model)) == 5
    assert isinstance(packed.conv1, FoldedConvBN) and "bn1 folded" in report.fused["conv1"]
    assert packed.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    for name in ("layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0"):
        assert "one kernel call" in report.fused[name] and report.packed[name].startswith("fused Bi-Real block")
    assert "shortcut BN folded" in report.fused["layer2.0"] and "shortcut" not in report.fused["layer1.1"]
    assert ("RPReLU" in report.fused["layer1.0"]) == (packed.cfg.act == "rprelu")
    assert ("shift" in report.fused["layer1.0"]) == packed.cfg.shift
    # every block hands its packed output to the next one; the last block emits nothing
    assert [b._next for b in fused] == [*fused[1:], None]
    assert not report.float_layers


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_blocks_bitwise_equal_unfused_packed_path(nets, threads, restore_threads):
    """Block by block, fed the eval model's own activations: the fused call equals the separate packed conv +
    torch addition (+ RPReLU) bitwise, and the eval block within float rounding."""
    model, packed, _ = nets
    torch.set_num_threads(threads)  # restored by the restore_threads fixture
    with torch.inference_mode():
        x = model.maxpool(model.act1(model.bn1(model.conv1(_x(2, 3, 64, 64)))))
        x = x.contiguous(memory_format=torch.channels_last)
        for blk, fb in zip(_eval_blocks(model), _blocks(packed)):
            y = fb(x)
            assert y.is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(y, _unfused(blk, fb)(x)), fb
            assert torch.equal(y, fb._forward_generic(x, None))
            ref = blk(x)
            assert (y - ref).abs().max() <= 1e-5 * (1 + ref.abs().max())
            assert all(p.fused for p in fb._plans.values())
            x = ref.contiguous(memory_format=torch.channels_last)


@pytest.fixture
def handoff_everywhere(nets, monkeypatch):
    """Every block hands its bits over, whatever its output size (plans made again)."""
    monkeypatch.setattr(fuse_resnet, "HANDOFF_MAX_PIXELS", 10**9)
    for b in _blocks(nets[1]):
        b._plans.clear()
    yield
    for b in _blocks(nets[1]):
        b._plans.clear()


@needs_native
def test_handoff_bits_are_the_next_blocks_input_and_used_only_for_that_tensor(nets, handoff_everywhere):
    _, packed, _ = nets
    blocks = _blocks(packed)
    with torch.inference_mode():
        x = packed.maxpool(packed.act1(packed.bn1(packed.conv1(_x(1, 3, 64, 64)))))
        for b, nxt in zip(blocks, blocks[1:]):
            y = b(x)
            handed, bits = nxt._handoff
            assert handed is y
            assert torch.equal(bits, pack_activations(y, nxt.conv.shift, nxt.conv.pw.padding))
            # a different tensor (same values) is packed again, and a handoff is consumed by the next call
            z = nxt(y.clone())
            assert nxt._handoff is None
            b(x)
            assert torch.equal(nxt(y), z) and nxt._handoff is None
            x = y
        assert blocks[-1]._next is None


@needs_native
def test_handoff_not_used_for_another_tensor_with_other_values(nets, handoff_everywhere):
    _, packed, _ = nets
    b, nxt = _blocks(packed)[:2]
    with torch.inference_mode():
        x = _x(1, 16, 16, 16).contiguous(memory_format=torch.channels_last)
        y = b(x)
        other = -y  # the bits handed over would be wrong for it
        assert nxt._handoff is not None
        assert torch.equal(nxt(other), nxt._forward_generic(other, None))


@needs_native
def test_handoff_only_up_to_the_pixel_limit(nets):
    """By default only outputs of at most HANDOFF_MAX_PIXELS pixels are handed over (the next block packs larger
    ones itself); the results are the same either way."""
    _, packed, _ = nets
    blocks = _blocks(packed)
    with torch.inference_mode():
        for size in (6, 16):  # 16x16 and 8x8 outputs; then 6x6 and 3x3
            x = _x(1, 16, 2 * size, 2 * size).contiguous(memory_format=torch.channels_last)
            blocks[1].__dict__["_handoff"] = None
            y = blocks[0](x)
            assert (blocks[1]._handoff is not None) == (4 * size * size <= fuse_resnet.HANDOFF_MAX_PIXELS)
            z = blocks[1](y)
            assert torch.equal(z, blocks[1]._forward_generic(y, None))


@needs_native
def test_plans_reused_rebuilt_and_dropped(nets):
    _, packed, _ = nets
    x = _x(1, 3, 64, 64)
    for b in _blocks(packed):
        b._plans.clear()
    with torch.inference_mode():
        ref = packed(x)
        first = [dict(b._plans) for b in _blocks(packed)]
        assert all(len(p) == 1 for p in first)
        packed(_x(1, 3, 64, 64, seed=2))
        assert all(b._plans[k] is p[k] for b, p in zip(_blocks(packed), first) for k in p)
        packed(_x(2, 3, 96, 64))
        assert all(len(b._plans) == 2 for b in _blocks(packed))
        dup = copy.deepcopy(packed)
        assert all(not b._plans and b._handoff is None for b in _blocks(dup))
        assert torch.equal(dup(x), ref)
        for b, d in zip(_blocks(packed), _blocks(dup)):
            plan = next(iter(d._plans.values()))
            assert plan.pw is d.conv.pw and plan.pw is not b.conv.pw  # the copy's own buffers
        assert all(d._next is None or d._next in _blocks(dup) for d in _blocks(dup))
        pick = pickle.loads(pickle.dumps(packed))
        assert all(not b._plans for b in _blocks(pick)) and torch.equal(pick(x), ref)
        packed.to("cpu", torch.float32)  # _apply: plans hold data pointers of the buffers
        assert all(not b._plans and b._handoff is None for b in _blocks(packed))
        assert torch.equal(packed(x), ref)
        # re-chaining (here: stop after the first block) rebuilds the plans; the results do not change
        blocks = _blocks(dup)
        blocks[0].chain(None)
        assert not blocks[0]._plans and blocks[0].conv.epilogue.thresh is None
        assert torch.equal(dup(x), ref) and blocks[1]._handoff is None
        # an epilogue changed in place: the block computes with the new values (generic path, checked per call)
        blk = blocks[2]
        blk.conv.epilogue.bias = blk.conv.epilogue.bias + 0.5
        y = dup(x)
        assert not torch.equal(y, ref)
        blk.conv.epilogue = blk.conv.epilogue.checked(blk.planes)
        assert torch.equal(dup(x), y) and blk._plans[next(iter(blk._plans))].ep is blk.conv.epilogue


@needs_native
def test_torch_backend_equals_native_and_builds_no_plans():
    model = _net("reactnet_resnet18")
    native, ref = copy.deepcopy(model), copy.deepcopy(model)
    pack_(native)
    pack_(ref, backend="torch")
    x = _x(2, 3, 48, 48)
    with torch.inference_mode():
        assert torch.equal(native(x), ref(x))
    assert all(not b._plans for b in _blocks(ref))


def _odd_block(family: str, cin: int, cout: int, stride: int) -> tuple[BiRealBlock, FusedBiRealBlock]:
    torch.manual_seed(cin + cout + stride)
    blk = BiRealBlock(cin, cout, stride, CONFIGS[family]).eval()
    _randomize_(blk)
    return blk, FusedBiRealBlock(blk)


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_shapes_the_plan_does_not_take_give_the_eval_result_or_error(family):
    """A stride-2 block on an odd input: a 1-pixel pooled shortcut broadcasts (as in the eval block), a larger one
    fails; a 1x1 input fails in the pool; batch 0 gives an empty output."""
    blk, fb = _odd_block(family, 16, 32, 2)
    with torch.inference_mode():
        x = _x(2, 16, 3, 3)
        y, ref = fb(x), blk(x)
        assert y.shape == ref.shape == (2, 32, 2, 2) and (y - ref).abs().max() <= 1e-5 * (1 + ref.abs().max())
        assert torch.equal(y, fb._forward_generic(x, None))  # the shortcut's shape sends the call there
        for bad in (_x(1, 16, 5, 5), _x(1, 16, 1, 1), _x(1, 16, 33, 8)):
            _raises_like(lambda bad=bad: blk(bad), lambda bad=bad: fb(bad))
        assert fb(_x(0, 16, 8, 8)).shape == blk(_x(0, 16, 8, 8)).shape == (0, 32, 4, 4)
        same, fs = _odd_block(family, 16, 16, 1)
        x = _x(3, 16, 1, 1)
        assert (fs(x) - same(x)).abs().max() <= 1e-5 * (1 + same(x).abs().max())


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_bad_inputs_raise_the_eval_models_error_type(family):
    model = _net(family)
    packed = copy.deepcopy(model)
    pack_(packed)
    bad = (
        _x(2, 4, 32, 32),  # channels
        _x(3, 32, 32),  # unbatched: BatchNorm2d's ValueError in the eval stem
        _x(1, 3, 32, 32).double(),  # dtype
        _x(1, 3, 8, 8),  # too small for the stride-2 stages' pools
        _x(1, 3, 36, 36),  # odd input to a stride-2 block: shortcut and conv output differ
    )
    with torch.no_grad():
        for x in bad:
            _raises_like(lambda x=x: model(x), lambda x=x: packed(x))
    blk = _blocks(packed)[0]
    for x in (_x(1, 15, 8, 8), _x(16, 8, 8), torch.zeros(1, 16, 8, 8, dtype=torch.float64)):
        with pytest.raises(RuntimeError):
            blk(x)
    with pytest.raises(RuntimeError, match="inference-only"):
        blk(_x(1, 16, 8, 8).requires_grad_())


def test_other_bireal_configurations_keep_the_packed_conv():
    """bn0, a channel scale or a PReLU before the addition: not the epilogue's order; the conv is packed with its
    shift and BN folded, the block stays, the stem is folded."""
    cfg = dataclasses.replace(STRONG_BASELINE, depths=(1, 1), widths=(8, 16))
    torch.manual_seed(0)
    model = BinaryResNet(cfg, num_classes=10, cifar_stem=False).eval()
    _randomize_(model)
    packed = copy.deepcopy(model)
    report = pack_(packed)
    assert not _blocks(packed) and all(isinstance(b.binary_conv, PackedConv2d) for b in _eval_blocks(packed))
    assert report.fused["layer1.0"] == "Bi-Real block: shift, sign+pack, conv, BN" and "conv1" in report.fused
    x = _x(2, 3, 32, 32)
    with torch.no_grad():
        assert _close(packed(x), copy.deepcopy(model).double()(x.double()).float())


@settings(max_examples=20, deadline=None)
@given(
    family=st.sampled_from(sorted(CONFIGS)),
    cin=st.sampled_from([3, 16, 64, 70]),
    wide=st.booleans(),
    stride=st.sampled_from([1, 2]),
    n=st.integers(1, 3),
    h=st.integers(2, 12),
    w=st.integers(2, 12),
    layout=st.sampled_from(["contiguous", "channels_last"]),
    seed=st.integers(0, 2**16),
)
def test_random_blocks_equal_eval_block(family, cin, wide, stride, n, h, w, layout, seed):
    cout = 2 * cin if wide else cin
    blk, fb = _odd_block(family, cin, cout, stride)
    x = torch.randn(n, cin, h, w, generator=torch.Generator().manual_seed(seed))
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        try:
            ref = blk(x)
        except RuntimeError as e:
            with pytest.raises(type(e)):
                fb(x)
            return
        y = fb(x)
        assert y.shape == ref.shape and (y - ref).abs().max() <= 1e-5 * (1 + ref.abs().max())
        assert torch.equal(y, fb._forward_generic(x, None))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["birealnet18", "reactnet_resnet18"])
def test_full_model_at_224(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    _randomize_(model)
    packed = copy.deepcopy(model)
    pack_(packed)
    x = _x(1, 3, 224, 224)
    with torch.inference_mode():
        assert _close(packed(x), copy.deepcopy(model).double()(x.double()).float())

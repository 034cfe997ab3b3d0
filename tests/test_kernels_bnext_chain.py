"""The one-call plan path of the fused BNext processors (onebit/kernels/bnext_chain.py, csrc/bnext_chain.c): bitwise
equal to the multi-call path, close to the eval model, plans reused and rebuilt when they should be, the handoff of
packed bits, the in-place channel concatenation, fallbacks and the entry point's argument checks."""

from __future__ import annotations

import copy
import ctypes
import pickle

import pytest
import torch
from test_kernels import _processor as _make  # one BNext processor per variant
from test_kernels import _randomize_  # non-trivial BN statistics and shifts, zero weights nudged

from onebit.binarize import set_temperature
from onebit.kernels import _native, bnext_chain, pack_
from onebit.kernels.fuse import FusedBNextBlock, FusedBNextProcessor
from onebit.models.bnext import BNext

NATIVE = _native.load() is not None
pytestmark = pytest.mark.skipif(not NATIVE, reason="compiled kernel not built (pure-torch path only)")


def _x(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _calls(module, *args, **kw):
    """``module(*args)`` on the multi-call path (the kernels called one by one, as before the plans)."""
    bnext_chain.enabled = False
    try:
        return module(*args, **kw)
    finally:
        bnext_chain.enabled = True


KINDS = [
    "rcp1", "rcp3", "rcp3_s2", "rcp1_s2", "rcp_plain", "elm", "elm_s2", "elm_plain_s2", "elm_mix_r", "elm_mix_r_s2",
    "elm_relu", "elm_relu_s2", "elm_down", "rcp_se",
]  # fmt: skip


def _packed(*kinds: str, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """An eval ``Sequential`` of processors (randomised statistics, λ also outside [0, 1]) and its packed copy."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(*[_make(k) for k in kinds]).eval()
    set_temperature(model, 0.0)
    _randomize_(model)
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, "infor_recoupling", False):
                m.scale.uniform_(-0.3, 1.3)  # only the 1x1 processors clamp λ in eval
    packed = copy.deepcopy(model)
    pack_(packed)
    assert all(isinstance(m, FusedBNextProcessor) for m in packed)
    return model, packed


def _close(out, ref):
    assert out.shape == ref.shape
    assert (out - ref).abs().max() <= 1e-5 * (1 + ref.abs().max())


def _three_ways(packed, model, x):
    """The packed model's output on the one-call path, on the multi-call path, and the eval ``model``'s (run in its
    own dtype, returned as float32)."""
    with torch.inference_mode():
        return packed(x), _calls(packed, x), model(x.to(next(model.parameters()).dtype)).float()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_processor_plan_path_equals_multi_call_path_bitwise(kind, threads, restore_threads):
    model, packed = _packed(kind)
    proc = packed[0]
    torch.set_num_threads(threads)  # restored by the restore_threads fixture
    for shape in ((1, 24, 8, 10), (3, 24, 6, 4)):
        y, ref, ev = _three_ways(packed, model, _x(*shape))
        assert torch.equal(y, ref), shape
        _close(y, ev)
    plan = proc._plans[(3, 6, 4)]
    assert plan.fused
    assert plan.single == (kind != "rcp_se")  # a non-linear SE module keeps the multi-call path
    want = {"rcp1": 0, "rcp3": 0, "rcp_plain": 0, "rcp_se": 0, "elm_relu": 2, "elm_relu_s2": 2, "elm_down": 2}
    assert plan.mode == want.get(kind, 1)


@pytest.mark.parametrize("threads", [1, 2])
def test_bnext_model_plan_path_equals_multi_call_path(threads, restore_threads):
    """A narrow BNext (width-doubling blocks: FFN_1 and FFN_2 write their halves of the output in place; the chained
    handoff of packed bits; stride-2 ELM-Attention) at batch 1 and 2."""
    torch.manual_seed(0)
    model = BNext((16, 32, 64, 64, 128, 128, 256, 256), num_classes=10, stem_stride=2).eval()
    set_temperature(model, 0.0)
    _randomize_(model)
    packed = copy.deepcopy(model)
    pack_(packed)
    assert any(isinstance(m, FusedBNextBlock) for m in packed.modules())
    procs = [m for m in packed.modules() if isinstance(m, FusedBNextProcessor)]
    torch.set_num_threads(threads)  # restored by the restore_threads fixture
    for shape in ((1, 3, 32, 32), (2, 3, 64, 48)):
        y, ref, ev = _three_ways(packed, copy.deepcopy(model).double(), _x(*shape))
        assert torch.equal(y, ref)
        assert (y - ev).abs().max() <= 1e-4 * ev.abs().max()
        assert torch.equal(y.argmax(1), ev.argmax(1))
    assert all(p._plans and all(q.single for q in p._plans.values()) for p in procs)
    assert all(p._handoff is None for p in procs)  # every handoff emitted was taken


def test_block_concatenation_out_and_offset():
    """FFN_1 / FFN_2 of a width-doubling block write channels [offset, offset + C) of the caller's NHWC ``out`` and
    leave the others alone; no bits are emitted then; a bad ``out`` is refused as on the multi-call path."""
    _, packed = _packed("rcp1")
    proc = packed[0]
    x = _x(2, 24, 6, 8)
    with torch.inference_mode():
        alone = proc(x).permute(0, 2, 3, 1)
        for offset in (0, 24, 5):
            out = torch.full((2, 6, 8, 56), float("nan"))
            ref = out.clone()
            y = proc(x, out=out, offset=offset)
            _calls(proc, x, out=ref, offset=offset)
            assert torch.equal(out[..., offset : offset + 24], alone)
            assert out[..., :offset].isnan().all() and out[..., offset + 24 :].isnan().all()
            assert torch.equal(out.nan_to_num(7.0), ref.nan_to_num(7.0))
            assert y.shape == (2, 56, 6, 8) and y.data_ptr() == out.data_ptr()
        for bad_out, off in (
            (torch.empty(2, 6, 8, 30), 10),  # no room for 24 channels at 10
            (torch.empty(2, 6, 8, 48), -1),
            (torch.empty(2, 5, 8, 48), 0),
            (torch.empty(2, 6, 8, 48, dtype=torch.float64), 0),
            (torch.empty(2, 8, 6, 48).transpose(1, 2), 0),  # not contiguous
        ):
            with pytest.raises(_native.KernelArgumentError) as plan_err:
                proc(x, out=bad_out, offset=off)
            with pytest.raises(_native.KernelArgumentError) as call_err:
                _calls(proc, x, out=bad_out, offset=off)
            assert str(plan_err.value) == str(call_err.value)


def test_handoff_used_and_not_used():
    """A chained processor emits the next one's packed input; the next one uses it only for that very tensor, and
    equals its result with the input packed in its own call."""
    _, packed = _packed("elm", "rcp1", "elm_s2", "rcp3")
    p0, p1, p2, _p3 = packed
    x = _x(1, 24, 8, 8)
    with torch.inference_mode():
        y0 = p0(x)
        hand = p1._handoff
        assert hand is not None and hand[0] is y0 and hand[1].shape == (1, 8, 8, 1)  # 1x1 conv: no border
        bits = hand[1].clone()
        y1 = p1(y0)  # takes the bits
        assert p1._handoff is None and p2._handoff is not None and p2._handoff[1].shape == (1, 10, 10, 1)
        p2.__dict__["_handoff"] = None
        assert torch.equal(p1(y0), y1)  # packed in its own call
        assert torch.equal(_calls(p1, y0), y1)
        p1.__dict__["_handoff"] = (y0.clone(), bits)  # bits of another tensor: not used
        assert torch.equal(p1(y0), y1) and p1._handoff is None
        z = _x(1, 24, 8, 8, seed=5)
        p1.__dict__["_handoff"] = (z, bits)  # the tensor it was for: used as they are (the caller's contract)
        used = p1(z)
        p1.__dict__["_handoff"] = (z, bits)
        assert torch.equal(used, _calls(p1, z)) and not torch.equal(used, p1(z))
        p1.__dict__["_handoff"] = (z, bits[:, :, :4])  # not of the plan's layout: packed again
        assert torch.equal(p1(z), _calls(p1, z))
        # the emitted bits are those of the multi-call path
        p0(x)
        plan_bits = p1.__dict__.pop("_handoff")[1]
        _calls(p0, x)
        assert torch.equal(plan_bits, p1.__dict__.pop("_handoff")[1])


def test_outputs_are_fresh_tensors():
    _, packed = _packed("elm_s2", "rcp1")
    proc = packed[0]
    with torch.inference_mode():
        y1 = proc(_x(1, 24, 8, 8))
        keep, bits = y1.clone(), packed[1]._handoff[1]
        y2 = proc(_x(1, 24, 8, 8, seed=2))
        assert torch.equal(y1, keep) and not torch.equal(y1, y2) and y1.data_ptr() != y2.data_ptr()
        assert packed[1]._handoff[1].data_ptr() != bits.data_ptr()


@pytest.mark.parametrize("kind", ["rcp3_s2", "rcp1_s2", "elm_s2", "elm_relu_s2", "elm_down"])
def test_odd_sizes_fall_back_as_the_eval_processor(kind):
    """At stride 2 an odd input pools to floor(h/2) while the conv gives ceil(h/2): the eval processor broadcasts a
    1-pixel residual and fails otherwise; the packed one does the same (generic path), on every path."""
    model, packed = _packed(kind)
    proc = packed[0]
    for shape in ((1, 24, 3, 3), (2, 24, 5, 7), (1, 24, 8, 5)):
        x = _x(*shape)
        try:
            with torch.no_grad():
                ev = model(x)
        except RuntimeError as e:
            with pytest.raises(RuntimeError) as plan_err:
                packed(x)
            with pytest.raises(RuntimeError) as call_err:
                _calls(packed, x)
            assert type(plan_err.value) is type(call_err.value) and str(plan_err.value) == str(call_err.value)
            assert type(e) is RuntimeError or isinstance(plan_err.value, _native.KernelArgumentError)
            continue
        with torch.inference_mode():
            y = packed(x)
            assert torch.equal(y, _calls(packed, x))
        _close(y, ev)
        plan = proc._plans[(shape[0], shape[2], shape[3])]
        assert not plan.single or plan.mode == 2  # (a residual formed in torch is checked on every call)


def test_batch_zero_and_small_inputs():
    _, packed = _packed("elm", "rcp3")
    with torch.inference_mode():
        y = packed(_x(0, 24, 4, 4))
        assert y.shape == _calls(packed, _x(0, 24, 4, 4)).shape == (0, 24, 4, 4)
        x = _x(2, 24, 1, 1)  # 3x3 padding 1: a 1x1 input is fine
        assert torch.equal(packed(x), _calls(packed, x))


def test_plans_dropped_on_move_copy_and_change():
    _, packed = _packed("elm", "rcp1", "rcp3")
    procs = list(packed)
    x = _x(1, 24, 8, 8)
    with torch.inference_mode():
        ref = packed(x)
        assert all(p._plans for p in procs)
        first = [next(iter(p._plans.values())) for p in procs]
        packed(_x(1, 24, 8, 8, seed=2))
        assert all(next(iter(p._plans.values())) is f for p, f in zip(procs, first))  # reused
        packed(_x(2, 24, 6, 6))
        assert all(len(p._plans) == 2 for p in procs)  # a second shape builds another
        dup = copy.deepcopy(packed)
        assert all(not p._plans and p._handoff is None for p in dup)
        assert torch.equal(dup(x), ref)
        for p, d in zip(procs, dup):
            plan = next(iter(d._plans.values()))
            assert plan.pw is d.conv.pw and plan.pw is not p.conv.pw  # the copy's own buffers
        assert all(not p._plans for p in pickle.loads(pickle.dumps(packed)))
        packed.float()  # _apply: plans hold data pointers of the buffers
        assert all(not p._plans for p in procs)
        assert torch.equal(packed(x), ref)
        # weights changed: a replaced buffer, an epilogue changed in place or replaced, a new packed weight
        proc = dup[1]
        proc.g2 = proc.g2 * 1.5
        y = dup(x)
        assert not torch.equal(y, ref) and torch.equal(y, _calls(dup, x))
        ep = proc.conv.epilogue
        ep.bias = ep.bias + 0.25  # unchecked now: the generic path
        y2 = dup(x)
        assert not torch.equal(y2, y) and not proc._plans[(1, 8, 8)].fused
        proc.conv.epilogue = ep.checked(proc.conv.pw.out_channels)
        assert torch.equal(dup(x), y2) and proc._plans[(1, 8, 8)].single
        assert proc._plans[(1, 8, 8)].ep is proc.conv.epilogue
        other = _packed("rcp1", seed=3)[1][0]
        proc.conv.pw = other.conv.pw
        proc.conv.epilogue = other.conv.epilogue
        y3 = dup(x)
        assert not torch.equal(y3, y2) and torch.equal(y3, _calls(dup, x))
        dup[0].chain(None)  # re-chained: no bits emitted any more
        dup(x)
        assert dup[1]._handoff is None and dup[0]._plans[(1, 8, 8)].bits_shape is None


def test_torch_backend_builds_no_plans():
    torch.manual_seed(0)
    model = torch.nn.Sequential(_make("elm"), _make("rcp1")).eval()
    set_temperature(model, 0.0)
    pack_(model, backend="torch")
    with torch.inference_mode():
        model(_x(1, 24, 6, 6))
    assert all(not p._plans for p in model)


def test_entry_point_refuses_bad_arguments():
    """ob_bnext_processor validates the conv's and the processor's arguments before it touches memory: a refused
    call raises KernelArgumentError naming the violated precondition and leaves the outputs as they were; the good
    call equals the multi-call path."""
    _, packed = _packed("elm_s2", "rcp1")
    proc = packed[0]
    x = _x(1, 24, 6, 8)
    with torch.inference_mode():
        ref = _calls(proc, x)
        ref_bits = packed[1].__dict__.pop("_handoff")[1]
        proc(x)
        packed[1].__dict__.pop("_handoff")
    plan = proc._plans[(1, 6, 8)]
    lib = _native.load()
    xn = x.permute(0, 2, 3, 1).contiguous()
    out = torch.full((1, 3, 4, 24), float("nan"))
    bits = torch.full(tuple(ref_bits.shape), -7, dtype=torch.int64)

    def call(conv=None, bargs=None, **kw):
        a = dict(x=xn.data_ptr(), xp=None, r=None, ref=None, out=out.data_ptr(), ldo=24, offset=0,
                 bits=bits.data_ptr(), nthreads=2)  # fmt: skip
        a.update(kw)
        return lib.ob_bnext_processor(
            plan.args_ref if conv is None else conv, plan.bargs_ref if bargs is None else bargs, *a.values()
        )

    def conv_with(**change):
        a = _native.ConvArgs.from_buffer_copy(plan.args)
        for k, v in change.items():
            setattr(a, k, v)
        return ctypes.byref(a)

    def bargs_with(**change):
        a = bnext_chain.BNextArgs.from_buffer_copy(plan.bargs)
        for k, v in change.items():
            setattr(a, k, v)
        return ctypes.byref(a)

    for rc in (
        lib.ob_bnext_processor(None, plan.bargs_ref, xn.data_ptr(), None, None, None, out.data_ptr(), 24, 0, None, 1),
        lib.ob_bnext_processor(plan.args_ref, None, xn.data_ptr(), None, None, None, out.data_ptr(), 24, 0, None, 1),
        call(x=None),
        call(out=None),
        call(ldo=23),  # rows narrower than the channels
        call(ldo=30, offset=7),  # channels past the row
        call(offset=-1),
        call(conv=conv_with(oh=4)),  # output larger than the input allows
        call(conv=conv_with(k=2)),  # words per pixel inconsistent with 24 channels
        call(conv=conv_with(n=-1)),
        call(conv=conv_with(stride=3, oh=2, ow=3)),  # a stride the residual pass does not take
        call(conv=conv_with(h=7, hp=9, oh=4)),  # stride 2: the conv gives ceil(7/2), the pool floor(7/2)
        call(conv=conv_with(o=16, scale=None)),
        call(bargs=bargs_with(residual=3)),
        call(bargs=bargs_with(residual=0)),  # the input as residual at stride 2
        call(bargs=bargs_with(slope=None)),
        call(bargs=bargs_with(elm=2)),
        call(bargs=bargs_with(hd=0)),
        call(bargs=bargs_with(lam=None)),
        call(bargs=bargs_with(w2=None)),
        call(bargs=bargs_with(g2=None)),
        call(bargs=bargs_with(thresh=None)),  # bits without a threshold
        call(bargs=bargs_with(bpad=-1)),
        call(bargs=bargs_with(residual=2)),  # the caller's residual, not given
        call(bargs=bargs_with(residual=2, mix_residual=0), r=xn.data_ptr()),  # nor its mix reference
    ):
        assert rc == _native._EINVAL
        with pytest.raises(_native.KernelArgumentError, match="ob_bnext_processor.*precondition"):
            _native.check(rc, "ob_bnext_processor")
        assert out.isnan().all() and (bits == -7).all()
    assert call(conv=conv_with(n=0), x=None, out=None) == 0  # batch 0: nothing to do
    assert out.isnan().all() and (bits == -7).all()
    assert call() == 0
    assert torch.equal(out.permute(0, 3, 1, 2), ref) and torch.equal(bits, ref_bits)

"""Packed XOR-popcount engine: compiled kernel vs pure-torch reference vs F.conv2d on ±1 floats (exact integers),
the fused epilogues, and whole models packed with ``pack_`` against their float eval forward."""

from __future__ import annotations

import copy
import ctypes
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from onebit.binarize import set_temperature
from onebit.kernels import _native, backend_info, pack_, select_isa
from onebit.kernels.ops import ConvEpilogue, binary_conv, pack_activations, pack_weight, popcount64
from onebit.kernels.pack import pack_bits, to_bits
from onebit.layers import BinaryConv2d
from onebit.models import create_model

NATIVE = _native.load() is not None
needs_native = pytest.mark.skipif(not NATIVE, reason="compiled kernel not built (pure-torch path only)")
BACKENDS = ["torch", "native"] if NATIVE else ["torch"]


def _pm1(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t >= 0, 1.0, -1.0)


def _ref_dot(x: torch.Tensor, w: torch.Tensor, stride: int, pad: int, pad_value: float = 0.0) -> torch.Tensor:
    """Integer conv of sign(x) and sign(w) (sign(0) = +1) in float64, padding with ``pad_value``; NHWC int32."""
    xs = F.pad(_pm1(x).double(), (pad,) * 4, value=pad_value)
    return F.conv2d(xs, _pm1(w).double(), stride=stride).round().to(torch.int32).permute(0, 2, 3, 1)


def test_popcount64_matches_python():
    vals = [0, 1, -1, 2**63 - 1, -(2**63), 0x5555555555555555, -0x0123456789ABCDEF, 123456789]
    got = popcount64(torch.tensor(vals, dtype=torch.int64)).tolist()
    assert got == [bin(v & (2**64 - 1)).count("1") for v in vals]


@pytest.mark.parametrize("backend", BACKENDS)
def test_pack_activations_round_trips_with_pack_bits(backend):
    x = torch.randn(2, 70, 3, 5)
    x[0, 3, 1, 1] = 0.0  # sign(0) -> +1, as pack.py
    words = pack_activations(x, pad=1, backend=backend)
    assert words.shape == (2, 5, 7, 2)
    assert torch.equal(words[:, 0], torch.zeros_like(words[:, 0]))  # zero border
    inner = words[:, 1:-1, 1:-1].contiguous().view(torch.uint8)[..., : (70 + 7) // 8]
    assert torch.equal(inner, pack_bits(to_bits(x.permute(0, 2, 3, 1)), dim=-1))
    shift = torch.randn(70)
    shifted = pack_activations(x, shift, backend=backend).view(torch.uint8)[..., :9]
    assert torch.equal(shifted, pack_bits(to_bits((x + shift.view(1, -1, 1, 1)).permute(0, 2, 3, 1)), dim=-1))


def conv_shapes(n: int, c: int, o: int, hw: int, **extra) -> dict:
    """Hypothesis strategies for a random binary conv: batch, channels, outputs, spatial size up to the given
    maxima, 1x1/3x3, stride 1/2, a seed, plus ``extra`` strategies."""
    return dict(
        n=st.integers(1, n),
        c=st.integers(1, c),
        o=st.integers(1, o),
        h=st.integers(1, hw),
        w=st.integers(1, hw),
        k=st.sampled_from([1, 3]),
        stride=st.sampled_from([1, 2]),
        seed=st.integers(0, 2**16),
        **extra,
    )


@settings(max_examples=25, deadline=None)
@given(**conv_shapes(3, 300, 40, 9))
def test_binary_conv_exact_on_random_shapes(n, c, o, h, w, k, stride, seed):
    g = torch.Generator().manual_seed(seed)
    x, wt = torch.randn(n, c, h, w, generator=g), torch.randn(o, c, k, k, generator=g)
    pad = k // 2
    ref = _ref_dot(x, wt, stride, pad)
    pw = pack_weight(wt, stride, pad)
    for backend in BACKENDS:
        y, _, dot = binary_conv(
            pack_activations(x, pad=pad, backend=backend), pw, (h, w), want_int=True, backend=backend
        )
        assert torch.equal(dot, ref), backend
        assert torch.equal(y.permute(0, 2, 3, 1), ref.float())  # scale 1: the dot products as floats


@needs_native
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_work_sharing_by_output_groups_and_by_tiles(threads, restore_threads):
    """Wide layers share work by groups of output channels (C = 576: ~2 blocks of 8 per group, 13 groups, the last
    one partial, O = 100 not a multiple of 8), narrow ones by pixel tiles: both exact at any thread count."""
    g = torch.Generator().manual_seed(threads)
    torch.set_num_threads(threads)  # restored by the restore_threads fixture
    for c, o, k, s in ((576, 100, 3, 1), (576, 100, 3, 2), (40, 24, 3, 1), (1000, 200, 1, 1)):
        x, wt = torch.randn(2, c, 6, 5, generator=g), torch.randn(o, c, k, k, generator=g)
        pw = pack_weight(wt, s, k // 2)
        _, _, dot = binary_conv(pack_activations(x, pad=k // 2), pw, (6, 5), want_int=True, backend="native")
        assert torch.equal(dot, _ref_dot(x, wt, s, k // 2)), (c, o, k, s)


@pytest.mark.parametrize("pad_value", [-1.0, 1.0])
def test_plus_minus_one_padding(pad_value):
    x, wt = torch.randn(2, 67, 5, 6), torch.randn(9, 67, 3, 3)
    pw = pack_weight(wt, 1, 1, pad_value)
    for backend in BACKENDS:
        _, _, dot = binary_conv(pack_activations(x, pad=1, backend=backend), pw, (5, 6), want_int=True, backend=backend)
        assert torch.equal(dot, _ref_dot(x, wt, 1, 1, pad_value))


@needs_native
def test_padding_correction_by_border_class():
    """ob_conv sums the padding correction once per border class (taps cut at each side of the window) and adds one
    sum per border pixel; windows wider than the input (cut at both sides), strides, and a class table too large to
    build (over 2^20 ints: 17 x 9 classes x 6900 channels, corrected tap by tap instead) all give the exact
    integers."""

    def classes(out: int, size: int, k: int, s: int, pad: int) -> int:  # distinct (cut before, cut after) pairs
        starts = [i * s - pad for i in range(out)]
        return len({(min(max(0, -a), k), min(max(0, a + k - size), k)) for a in starts})

    g = torch.Generator().manual_seed(7)
    for n, c, o, (kh, kw), s, pad, (h, w) in (
        (2, 70, 24, (5, 5), 1, 4, (3, 4)),  # every window sticks out on both sides
        (1, 9, 16, (7, 3), 2, 3, (11, 6)),
        (1, 1, 6900, (33, 5), 1, 16, (17, 3)),  # too many classes: per tap
    ):
        oh, ow = (h + 2 * pad - kh) // s + 1, (w + 2 * pad - kw) // s + 1
        table = classes(oh, h, kh, s, pad) * classes(ow, w, kw, s, pad) * o
        assert (table > 2**20) == (o == 6900)
        x, wt = torch.randn(n, c, h, w, generator=g), torch.randn(o, c, kh, kw, generator=g)
        xs = F.pad(_pm1(x).double(), (pad,) * 4)
        ref = F.conv2d(xs, _pm1(wt).double(), stride=s).round().to(torch.int32).permute(0, 2, 3, 1)
        pw = pack_weight(wt, s, pad)
        _, _, dot = binary_conv(pack_activations(x, pad=pad), pw, (h, w), want_int=True, backend="native")
        assert torch.equal(dot, ref), (c, o, kh, kw, s, pad)


@needs_native
def test_every_isa_gives_the_same_integers():
    x, wt = torch.randn(2, 131, 7, 9), torch.randn(21, 131, 3, 3)
    pw, xp = pack_weight(wt, 2, 1), pack_activations(x, pad=1)
    ref = _ref_dot(x, wt, 2, 1)
    cpu_best = backend_info()["cpu_isa"]
    try:
        for isa in ("portable", "popcnt", "avx2", "avx512_vpopcntdq"):
            used = select_isa(isa)
            _, _, dot = binary_conv(xp, pw, (7, 9), want_int=True, backend="native")
            assert torch.equal(dot, ref), used
    finally:
        assert select_isa(None) == cpu_best


def test_fused_epilogue_native_equals_reference_bitwise():
    torch.manual_seed(0)
    n, c, o, h, w = 2, 45, 90, 6, 5
    x, wt = torch.randn(n, c, h, w), torch.randn(o, c, 3, 3)
    ep = ConvEpilogue(
        scale=torch.rand(o) + 0.1,
        bias=torch.randn(o),
        act_in=torch.randn(o) * 0.1,
        slope=torch.rand(o),
        act_out=torch.randn(o) * 0.1,
        thresh=torch.randn(o) * 0.1,
    )
    res = torch.randn(n, c, 3, 3)  # o % c: both halves of a doubled width get the same residual
    pw = pack_weight(wt, 2, 1)
    outs = {}
    for backend in BACKENDS:
        xp = pack_activations(x, pad=1, backend=backend)
        outs[backend] = binary_conv(xp, pw, (h, w), ep, residual=res, bits_pad=1, want_int=True, backend=backend)
    y, bits, dot = outs["torch"]
    # the reference epilogue against a float64 formula
    r = res.repeat(1, 2, 1, 1).permute(0, 2, 3, 1).double()
    v = dot.double() * ep.scale.double() + ep.bias.double() + r + ep.act_in.double()
    v = torch.where(v > 0, v, v * ep.slope.double()) + ep.act_out.double()
    assert (y.permute(0, 2, 3, 1).double() - v).abs().max() <= 1e-5 * (1 + v.abs().max())
    want_bits = F.pad(
        pack_activations(y.contiguous(), ep.thresh, backend="torch"), (0, 0, 1, 1, 1, 1)
    )  # sign+pack of y + thresh with a zero border of 1
    assert torch.equal(bits, want_bits)
    if NATIVE:
        yn, bn, dn = outs["native"]
        assert torch.equal(dn, dot) and torch.equal(bn, bits)
        assert torch.equal(yn, y)  # same float32 operations in the same order


def _nudge_zero_weights_(model):
    """Random init can draw an exact 0 latent weight (sign 0 in float, +1 packed): move it off zero."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BinaryConv2d):
                m.weight[m.weight == 0] = 1e-4


def _randomize_(model, seed=0):
    """Non-trivial BN statistics and shifts, so every fused term matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.3, 0.3, generator=g)
            elif type(m).__name__ == "LearnableBias":
                m.bias.uniform_(-0.2, 0.2, generator=g)
            elif isinstance(m, torch.nn.PReLU):
                m.weight.uniform_(0.0, 0.5, generator=g)
    _nudge_zero_weights_(model)


def _small(name: str) -> torch.nn.Module:
    """Narrow members of each fused family (same blocks as the full models, a fraction of the cost)."""
    from onebit.models.bnext import BNext
    from onebit.models.reactnet import ReActNet
    from onebit.models.resnet import REACTNET_RESNET18, BinaryResNet

    if name == "reactnet":
        return ReActNet((16, 32, 64, 64, 128, 128, 256), num_classes=10, stem_stride=2)
    if name == "bnext":
        return BNext((16, 32, 64, 64, 128, 128, 256, 256), num_classes=10, stem_stride=2)
    cfg = dataclasses.replace(REACTNET_RESNET18, depths=(1, 1, 1, 1), widths=(16, 32, 64, 128))
    return BinaryResNet(cfg, num_classes=10)


def _check_packed_model(model: torch.nn.Module, size: int, backend: str = "auto", device: str = "cpu") -> None:
    """Pack a copy of ``model`` on CPU, move it to ``device`` and compare its logits with the CPU eval model."""
    model.eval()
    set_temperature(model, 0.0)  # BNext: hard-sign weights (the trained state); no effect elsewhere
    _randomize_(model)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        # float64 reference: float32 convs round differently with the batch size (oneDNN picks other kernels), so a
        # float32 reference can itself flip a sign that sits within rounding of 0 (seen on reactnet_resnet18 at 64)
        ref = copy.deepcopy(model).double()(x.double()).float()
    packed = copy.deepcopy(model)
    report = pack_(packed, backend=backend)
    assert not report.float_layers and report.fused
    assert not any(isinstance(m, BinaryConv2d) for m in packed.modules())
    packed.to(device)
    with torch.no_grad():
        out = packed(x.to(device)).cpu()
    # float32 epilogues differ from the float model only by rounding (BN/alpha folded); no sign flips
    assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert torch.equal(out.argmax(1), ref.argmax(1))


@pytest.mark.parametrize("name", ["reactnet", "bnext", "resnet"])
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_packed_model_logits_equal_eval_model(name, backend):
    torch.manual_seed(0)
    _check_packed_model(_small(name), 32, backend)


def _processor(kind: str) -> torch.nn.Module:
    """One BNext processor of each residual and gate variant (24 channels; width-changing ones 24 -> 40)."""
    from onebit.models.bnext import ELMAttention, InfoRCP

    if kind == "rcp1":
        return InfoRCP(24, kernel_size=1, scale_clamp_when="always")
    if kind == "rcp3":
        return InfoRCP(24, kernel_size=3)
    if kind == "rcp3_s2":
        return InfoRCP(24, kernel_size=3, stride=2)
    if kind == "rcp1_s2":
        return InfoRCP(24, kernel_size=1, stride=2)
    if kind == "rcp_plain":
        return InfoRCP(24, kernel_size=3, infor_recoupling=False)
    if kind == "elm":
        return ELMAttention(24)
    if kind == "elm_s2":
        return ELMAttention(24, stride=2)
    if kind == "elm_plain":
        return ELMAttention(24, infor_recoupling=False)
    if kind == "elm_plain_s2":
        return ELMAttention(24, stride=2, infor_recoupling=False)
    if kind == "elm_mix_r":
        return ELMAttention(24, mix_with="residual")
    if kind == "elm_mix_r_s2":
        return ELMAttention(24, stride=2, mix_with="residual")
    if kind in ("elm_relu", "elm_relu_s2"):  # another activation: the residual is formed in torch, handed over
        proc = ELMAttention(24, stride=2 if kind.endswith("s2") else 1)
        proc.activation1 = torch.nn.ReLU()
        return proc
    if kind == "elm_down":  # BNext-18's width-changing attention: PReLU_a(X) -> pool -> real 1x1 conv -> BN, mixed
        down = torch.nn.Sequential(
            torch.nn.AvgPool2d(2, 2), torch.nn.Conv2d(24, 40, 1, bias=False), torch.nn.BatchNorm2d(40)
        )
        return ELMAttention(24, 40, stride=2, downsample=down, mix_with="residual")
    if kind == "rcp_se":  # a non-linear SE module: called in torch, on the multi-call path
        proc = InfoRCP(24, kernel_size=3)
        proc.se.se[2] = torch.nn.Hardtanh(0.0, 6.0)
        return proc
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["rcp1", "rcp3_s2", "rcp_plain", "elm", "elm_s2", "elm_plain", "elm_down"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_bnext_processor_equals_float(kind, backend):
    from onebit.kernels.fuse import FusedBNextProcessor

    torch.manual_seed(0)
    proc = _processor(kind).eval()
    set_temperature(proc, 0.0)
    _randomize_(proc)
    with torch.no_grad():
        if getattr(proc, "infor_recoupling", False):
            proc.scale.uniform_(-0.3, 1.3)  # outside [0, 1] too: only the 1x1 processors clamp λ in eval
    model = torch.nn.Sequential(proc).eval()
    x = torch.randn(2, 24, 8, 10, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(x)
    report = pack_(model, backend=backend)
    assert isinstance(model[0], FusedBNextProcessor) and report.fused
    with torch.no_grad():
        out = model(x)
    assert out.shape == ref.shape
    assert (out - ref).abs().max() <= 1e-5 * (1 + ref.abs().max())


@needs_native
@pytest.mark.parametrize("mul_r", [0, 1])
def test_gate_residual_and_mix_mean_kernels(mul_r):
    """ob_gate_residual does the torch fallback's float operations in the same order (bitwise equal);
    ob_mix_mean is the λ-weighted pooled mix to float rounding. Every ISA variant of both."""
    try:
        for isa in _each_isa():
            select_isa(isa)
            _check_gate_and_mix(mul_r)
    finally:
        select_isa(None)


def _check_gate_and_mix(mul_r):
    lib = _native.load()
    g = torch.Generator().manual_seed(mul_r)
    n, hh, ww, c = 2, 3, 5, 37
    hw = hh * ww
    z, r = torch.randn(n, hw, c, generator=g), torch.randn(n, hw, c, generator=g)
    a, h = torch.randn(n, c, generator=g), torch.randn(c, generator=g)
    v = a[:, None, :] * z
    if mul_r:
        v = v * r
    want = (v + h) + r
    # plain output, plus the packed bits of out + t with a border of 1 (the next conv's input)
    out = torch.full((n, hw, c), float("nan"))
    t = torch.randn(c, generator=g)
    bits = torch.zeros(n, hh + 2, ww + 2, 1, dtype=torch.int64)
    assert not lib.ob_gate_residual(
        z.data_ptr(), r.data_ptr(), n, hh, ww, c, a.data_ptr(), h.data_ptr(), mul_r, out.data_ptr(), c,
        t.data_ptr(), bits.data_ptr(), 1, 1, 0, 2,
    )  # fmt: skip
    assert torch.equal(out, want)
    nchw = out.reshape(n, hh, ww, c).permute(0, 3, 1, 2)
    assert torch.equal(bits, pack_activations(nchw, t, 1, backend="torch"))
    # one part of a concatenation: rows of ldo = c + 5 floats, channels at offset 3 (the rest untouched)
    wide = torch.full((n, hw, c + 5), float("nan"))
    assert not lib.ob_gate_residual(
        z.data_ptr(), r.data_ptr(), n, hh, ww, c, a.data_ptr(), h.data_ptr(), mul_r, wide.data_ptr() + 12, c + 5,
        None, None, 0, 1, 0, 1,
    )  # fmt: skip
    assert torch.equal(wide[..., 3 : 3 + c], want) and wide[..., :3].isnan().all() and wide[..., 3 + c :].isnan().all()
    lam = torch.rand(c, generator=g)
    oml = 1 - lam
    want = (lam.double() * r.double() + oml.double() * z.double()).mean(1)
    for threads in (1, 2, 3, 64):  # per-thread partial sums over row ranges (64 > rows: clamped)
        m = torch.full((n, c), float("nan"))
        assert (
            lib.ob_mix_mean(r.data_ptr(), z.data_ptr(), n, hw, c, lam.data_ptr(), oml.data_ptr(), m.data_ptr(), threads)
            == 0
        )
        assert (m.double() - want).abs().max() <= 1e-6, threads


def _each_isa():
    """The ISAs this CPU can run (each variant of a pass is compiled separately), best last; restores the best."""
    order = ["portable", "popcnt", "avx2", "avx512_vpopcntdq"]
    best = backend_info()["cpu_isa"]
    return order[: order.index(best) + 1] if best in order else [best]


@needs_native
@pytest.mark.parametrize("c, hd", [(37, 5), (512, 64)])  # 512 x 64: the rows are shared by the threads
def test_se_gate_kernel(c, hd):
    """ob_se_gate = g * sigmoid(W2 relu(W1 p + b1) + b2) on pooled vectors, to float rounding, any ISA/threads."""
    lib = _native.load()
    g = torch.Generator().manual_seed(c)
    n = 2
    p, w1, b1 = torch.randn(n, c, generator=g), torch.randn(hd, c, generator=g) / c**0.5, torch.randn(hd, generator=g)
    w2, b2, gain = torch.randn(c, hd, generator=g) / hd**0.5, torch.randn(c, generator=g), torch.randn(c, generator=g)
    want = torch.sigmoid(torch.relu(p.double() @ w1.double().t() + b1.double()) @ w2.double().t() + b2.double())
    want = want * gain.double()
    try:
        for isa in _each_isa():
            select_isa(isa)
            for threads in (1, 2, 3):
                a, hidden = torch.full((n, c), float("nan")), torch.empty(n, hd)
                assert not lib.ob_se_gate(
                    p.data_ptr(), n, c, hd, w1.data_ptr(), b1.data_ptr(), w2.data_ptr(), b2.data_ptr(),
                    gain.data_ptr(), a.data_ptr(), hidden.data_ptr(), threads,
                )  # fmt: skip
                assert (a.double() - want).abs().max() <= 1e-5, (isa, threads)
            # NaN in a pooled vector: NaN through the ReLU (torch's relu keeps it) into every gate of that image
            pn = p.clone()
            pn[1, 0] = float("nan")
            a = torch.zeros(n, c)
            assert not lib.ob_se_gate(
                pn.data_ptr(), n, c, hd, w1.data_ptr(), b1.data_ptr(), w2.data_ptr(), b2.data_ptr(),
                gain.data_ptr(), a.data_ptr(), hidden.data_ptr(), 2,
            )  # fmt: skip
            assert a[1].isnan().all() and not a[0].isnan().any(), isa
    finally:
        select_isa(None)


@needs_native
@pytest.mark.parametrize("stride, h, w", [(1, 5, 6), (2, 6, 8), (2, 7, 9)])
def test_elm_residual_kernel(stride, h, w):
    """ob_elm_residual: PReLU_a(X), and at stride 2 the 2x2 average pools of X and of PReLU_a(X) (floor sizes),
    bitwise as torch's prelu and avg_pool2d, on every ISA."""
    lib = _native.load()
    g = torch.Generator().manual_seed(stride * 100 + h)
    n, c = 2, 37
    x = torch.randn(n, c, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    slope = torch.rand(c, generator=g) - 0.5
    act = F.prelu(x, slope)
    want_r, want_px = (act, None) if stride == 1 else (F.avg_pool2d(act, 2, 2), F.avg_pool2d(x, 2, 2))
    rh, rw = (h, w) if stride == 1 else (h // 2, w // 2)
    xn = x.permute(0, 2, 3, 1)
    try:
        for isa in _each_isa():
            select_isa(isa)
            for threads in (1, 2):
                r = torch.full((n, rh, rw, c), float("nan"))
                px = torch.full((n, rh, rw, c), float("nan")) if stride == 2 else None
                assert not lib.ob_elm_residual(
                    xn.data_ptr(), n, h, w, c, slope.data_ptr(), stride, None if px is None else px.data_ptr(),
                    r.data_ptr(), threads,
                )  # fmt: skip
                assert torch.equal(r.permute(0, 3, 1, 2), want_r), (isa, threads)
                if px is not None:
                    assert torch.equal(px.permute(0, 3, 1, 2), want_px), (isa, threads)
    finally:
        select_isa(None)


def test_folded_bnext_stem():
    """pack_ folds the BNext stem's BN into its conv: channels_last output equal to the float stem."""
    from onebit.kernels.fuse import FoldedConvBN
    from onebit.models.bnext import BNextStem

    torch.manual_seed(0)
    model = torch.nn.Sequential(BNextStem(3, 16, 2)).eval()
    _randomize_(model)
    x = torch.randn(2, 3, 12, 10)
    with torch.no_grad():
        ref = model(x)
    report = pack_(model)
    assert isinstance(model[0], FoldedConvBN) and "0" in report.fused
    with torch.no_grad():
        out = model(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert (out - ref).abs().max() <= 1e-5 * (1 + ref.abs().max())


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_processor_at_several_input_sizes(backend):
    """The compiled path keeps call-invariant state per input shape: each shape gets its own, results stay right."""
    proc = _processor("elm_s2").eval()
    set_temperature(proc, 0.0)
    _randomize_(proc)
    model = torch.nn.Sequential(proc).eval()
    xs = [torch.randn(n, 24, h, w, generator=torch.Generator().manual_seed(h)) for n, h, w in ((2, 8, 10), (1, 6, 6))]
    with torch.no_grad():
        refs = [model(x) for x in xs]
    pack_(model, backend=backend)
    with torch.no_grad():
        for _ in range(2):
            for x, ref in zip(xs, refs):
                out = model(x)
                assert (out - ref).abs().max() <= 1e-5 * (1 + ref.abs().max())
        # a copy made after use computes with its own buffers: change the original's BN2 shift, the copy is unaffected
        twin = copy.deepcopy(model)
        model[0].h2.add_(1.0)
        out = twin(xs[0])
        assert (out - refs[0]).abs().max() <= 1e-5 * (1 + refs[0].abs().max())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["reactnet_a", "bnext_tiny", "reactnet_resnet18", "birealnet18", "bnext_18"])
def test_full_packed_models_at_64(name):
    torch.manual_seed(0)
    _check_packed_model(create_model(name), 64)


def test_forced_torch_path(monkeypatch):
    monkeypatch.setattr(_native, "_loaded", False)
    monkeypatch.setattr(_native, "_lib", None)
    monkeypatch.setenv("ONEBIT_KERNELS", "torch")
    info = backend_info()
    assert info["backend"] == "torch" and "ONEBIT_KERNELS" in info["reason"]
    with pytest.raises(RuntimeError, match="native"):
        binary_conv(
            torch.zeros(1, 1, 1, 1, dtype=torch.int64), pack_weight(torch.randn(2, 3, 1, 1)), (1, 1), backend="native"
        )
    conv = BinaryConv2d(37, 11, 3, padding=1).eval()
    model = torch.nn.Sequential(conv).eval()
    x = torch.randn(1, 37, 5, 5)
    with torch.no_grad():
        ref = model(x)
    report = pack_(model)
    assert report.backend["backend"] == "torch"
    with torch.no_grad():
        assert (model(x) - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_pack_refuses_training_and_grad():
    model = torch.nn.Sequential(BinaryConv2d(8, 8, 3, padding=1))
    with pytest.raises(RuntimeError, match="eval mode"):
        pack_(model)
    pack_(model.eval())
    with pytest.raises(RuntimeError, match="inference-only"):
        model(torch.randn(1, 8, 4, 4, requires_grad=True))


def test_soft_progressive_weights_stay_float():
    model = _small("bnext").eval()  # temperature 1: clamp(W / T), not binary yet
    with pytest.warns(RuntimeWarning, match="stay in float"):
        report = pack_(model)
    assert report.float_layers and all("not ±α" in v for v in report.float_layers.values())
    assert not report.packed


def test_pack_report_names_are_module_paths():
    """Chained fused blocks link to the next one without registering it as a submodule."""
    for name in ("reactnet", "bnext"):
        model = _small(name).eval()
        set_temperature(model, 0.0)
        report = pack_(model)
        names = dict(model.named_modules())
        assert report.packed and all(k in names and "_next" not in k for k in report.packed)
        assert all("_next" not in k for k in names)


# ------------------------------------------------------------------------------------------------ argument checks
@needs_native
def test_kernel_entry_points_refuse_bad_arguments():
    """Every exported function validates its arguments and returns a negative code, leaving its outputs untouched,
    with ob_last_error naming the violated precondition; the good call next to each bad one succeeds."""
    lib = _native.load()
    thr = 2

    def refused(rc, fn, outputs=()):
        assert rc == -1, (fn, rc)
        assert lib.ob_last_error().decode().startswith(fn + ": precondition"), lib.ob_last_error()
        for t in outputs:
            assert torch.isnan(t).all() if t.is_floating_point() else (t == -7).all(), fn

    # sign + pack: x [1, 3, 4, 70] -> [1, 3, 4, 2]
    x, out = torch.randn(1, 3, 4, 70), torch.full((1, 3, 4, 2), -7, dtype=torch.int64)
    for args in ((1, 3, 4, 70, 0, 0, 1), (1, 3, 4, 0, 0, 0, 0), (1, -3, 4, 70, 0, 0, 2), (1, 3, 4, 70, -1, 0, 2)):
        refused(lib.ob_pack_nhwc(x.data_ptr(), None, *args, out.data_ptr(), thr), "ob_pack_nhwc", [out])
    refused(lib.ob_pack_nhwc(None, None, 1, 3, 4, 70, 0, 0, 2, out.data_ptr(), thr), "ob_pack_nhwc", [out])
    assert lib.ob_pack_nhwc(x.data_ptr(), None, 1, 3, 4, 70, 0, 0, 2, out.data_ptr(), thr) == 0
    assert lib.ob_pack_nhwc(None, None, 0, 3, 4, 70, 0, 0, 2, None, thr) == 0  # batch 0: nothing to touch

    # conv: a 3x3, stride 1, padding 1 conv of 70 -> 9 channels on 5x6
    xs, wt = torch.randn(2, 70, 5, 6), torch.randn(9, 70, 3, 3)
    pw, xp = pack_weight(wt, 1, 1), pack_activations(xs, pad=1, backend="native")
    from onebit.kernels.ops import _args_template

    ep = ConvEpilogue(scale=torch.ones(9)).checked(9)
    y = torch.full((2, 5, 6, 9), float("nan"))
    bits = torch.full((2, 5, 6, 1), -7, dtype=torch.int64)

    def conv(**change):
        a = _native.ConvArgs.from_buffer_copy(_args_template(pw, ep))
        a.x, a.n, a.hp, a.wp, a.h, a.w, a.oh, a.ow = xp.data_ptr(), 2, 7, 8, 5, 6, 5, 6
        a.out_f, a.nthreads = y.data_ptr(), thr
        for k, v in change.items():
            setattr(a, k, v)
        return lib.ob_conv(ctypes.byref(a))

    for change in (
        dict(oh=6),  # output larger than the input allows
        dict(hp=6),  # border inconsistent with the padding
        dict(k=1),  # words per pixel inconsistent with 70 channels
        dict(x=None),
        dict(n=-1),
        dict(stride=0),
        dict(out_bits=bits.data_ptr(), bk=0),  # packed output without room for 9 bits
        dict(res=xs.data_ptr(), res_c=0),
        dict(scale=None),
        dict(kh=40, hp=7),
    ):
        refused(conv(**change), "ob_conv", [y, bits])
    assert conv() >= 0 and not y.isnan().any()
    assert conv(n=0, x=None) >= 0  # batch 0

    # BNext passes
    n, hh, ww, c = 1, 2, 3, 8
    z, r, a, hb = torch.randn(n, hh, ww, c), torch.randn(n, hh, ww, c), torch.randn(n, c), torch.randn(c)
    o, b = torch.full((n, hh, ww, c), float("nan")), torch.full((n, hh + 2, ww + 2, 1), -7, dtype=torch.int64)
    gate = [z.data_ptr(), r.data_ptr(), n, hh, ww, c, a.data_ptr(), hb.data_ptr(), 0, o.data_ptr()]
    refused(lib.ob_gate_residual(*gate, c - 1, None, None, 0, 1, 0, thr), "ob_gate_residual", [o])  # ldo < c
    refused(lib.ob_gate_residual(*gate, c, None, b.data_ptr(), 1, 1, 1, thr), "ob_gate_residual", [o, b])  # word 1
    refused(lib.ob_gate_residual(None, *gate[1:], c, None, None, 0, 1, 0, thr), "ob_gate_residual", [o])
    assert lib.ob_gate_residual(*gate, c, None, b.data_ptr(), 1, 1, 0, thr) == 0

    m = torch.full((n, c), float("nan"))
    mix = [r.data_ptr(), z.data_ptr(), n]
    lam = [a.data_ptr(), hb.data_ptr(), m.data_ptr(), thr]
    refused(lib.ob_mix_mean(*mix, 0, c, *lam), "ob_mix_mean", [m])  # the mean of no pixels
    refused(lib.ob_mix_mean(*mix, hh * ww, 0, *lam), "ob_mix_mean", [m])
    refused(lib.ob_mix_mean(None, *mix[1:], hh * ww, c, *lam), "ob_mix_mean", [m])
    assert lib.ob_mix_mean(None, None, 0, hh * ww, c, None, None, None, thr) == 0  # batch 0
    assert lib.ob_mix_mean(*mix, hh * ww, c, *lam) == 0

    res = torch.full((n, hh, ww, c), float("nan"))
    refused(lib.ob_elm_residual(z.data_ptr(), n, hh, ww, c, hb.data_ptr(), 3, None, res.data_ptr(), thr),
            "ob_elm_residual", [res])  # fmt: skip
    refused(lib.ob_elm_residual(z.data_ptr(), n, hh, ww, c, None, 1, None, res.data_ptr(), thr),
            "ob_elm_residual", [res])  # fmt: skip
    assert lib.ob_elm_residual(z.data_ptr(), n, 1, 1, c, hb.data_ptr(), 2, None, None, thr) == 0  # no output pixel

    hd = 3
    w1, w2, hidden = torch.randn(hd, c), torch.randn(c, hd), torch.empty(n, hd)
    g = torch.full((n, c), float("nan"))
    se = [w1.data_ptr(), hb.data_ptr(), w2.data_ptr(), hb.data_ptr(), hb.data_ptr(), g.data_ptr(), hidden.data_ptr()]
    refused(lib.ob_se_gate(a.data_ptr(), n, c, 0, *se, thr), "ob_se_gate", [g])
    refused(lib.ob_se_gate(None, n, c, hd, *se, thr), "ob_se_gate", [g])
    assert lib.ob_se_gate(a.data_ptr(), n, c, hd, *se, thr) == 0

    assert lib.ob_ceiling(10, 1, None) == 0
    assert lib.ob_last_error().decode() == "ob_ceiling: precondition `bits != NULL` violated"


@needs_native
def test_react_block_entry_point_refuses_bad_arguments():
    """ob_react_block (a fused ReActNet block in one call, onebit/kernels/chain.py) validates both convs' arguments
    and how they chain before it touches memory; the good call equals the block's generic path."""
    from onebit.kernels import chain
    from onebit.kernels.fuse import FusedReActBlock
    from onebit.models.reactnet import ReActNet

    lib, thr = _native.load(), 2
    model = ReActNet((16, 32, 64, 64), num_classes=10, stem_stride=2).eval()
    _randomize_(model)
    pack_(model)
    blk = [m for m in model.modules() if isinstance(m, FusedReActBlock)][1]  # 32 -> 64, stride 2, emits bits
    x = torch.randn(1, 32, 6, 8)
    with torch.no_grad():
        chain.enabled = False
        try:
            ref = blk(x)
        finally:
            chain.enabled = True
        ref_bits = blk._next.__dict__.pop("_handoff")[1]
        blk(x)
    plan = blk._plans[(1, 6, 8)]
    xn = x.permute(0, 2, 3, 1).contiguous()
    out = torch.full((1, 3, 4, 64), float("nan"))
    bits = torch.full(tuple(ref_bits.shape), -7, dtype=torch.int64)

    def call(c1=None, c2=None, **kw):
        a = dict(x=xn.data_ptr(), shift=plan.shift.data_ptr(), xp=None, stride=2, out=out.data_ptr(),
                 bits=bits.data_ptr())  # fmt: skip
        a.update(kw)
        c1 = plan.c1_ref if c1 is None else c1
        c2 = plan.c2_ref if c2 is None else c2
        return lib.ob_react_block(c1, c2, a["x"], a["shift"], a["xp"], a["stride"], a["out"], a["bits"], thr)

    def changed(args, **change):
        a = _native.ConvArgs.from_buffer_copy(args)
        for k, v in change.items():
            setattr(a, k, v)
        return ctypes.byref(a)

    for rc in (
        call(stride=1),  # not the conv's stride
        call(stride=3),
        call(x=None),
        call(out=None),
        call(c1=changed(plan.c1, c=31, k=1)),  # the conv's input is not the residual's width
        call(c1=changed(plan.c1, oh=4)),  # output larger than the input allows
        call(c2=changed(plan.c2, c=33)),  # the 1x1 conv does not read O1 (32 channels)
        call(c2=changed(plan.c2, h=2, hp=2, oh=2)),
        call(c2=changed(plan.c2, bk=0)),  # emitted bits without room for 64 channels
        call(c2=changed(plan.c2, n=2)),
        lib.ob_react_block(None, plan.c2_ref, xn.data_ptr(), None, None, 2, out.data_ptr(), None, thr),
    ):
        assert rc == -1
        assert lib.ob_last_error().decode().startswith("ob_react_block: precondition"), lib.ob_last_error()
        assert out.isnan().all() and (bits == -7).all()
    assert call() == 0
    assert torch.equal(out, ref.permute(0, 2, 3, 1)) and torch.equal(bits, ref_bits)
    zero = changed(plan.c1, n=0)
    assert lib.ob_react_block(zero, changed(plan.c2, n=0), None, None, None, 2, None, None, thr) == 0  # batch 0


@needs_native
def test_refused_kernel_call_raises_and_checks_at_the_boundary():
    """A non-zero code becomes an exception; ops refuse what does not fit before calling the kernel."""
    from onebit.kernels import KernelArgumentError

    lib = _native.load()
    lib.ob_pack_nhwc(None, None, 1, 1, 1, 0, 0, 0, 0, None, 1)
    with pytest.raises(KernelArgumentError, match="ob_pack_nhwc.*precondition") as e:
        _native.check(-1, "ob_pack_nhwc")
    assert isinstance(e.value, ValueError) and isinstance(e.value, RuntimeError)
    with pytest.raises(MemoryError):
        _native.check(-2, "ob_mix_mean")
    pw = pack_weight(torch.randn(4, 10, 3, 3), 1, 0)
    xp = pack_activations(torch.randn(1, 10, 2, 5), backend="native")
    with pytest.raises(RuntimeError, match="smaller than the kernel"):  # 2x5 without padding: no output pixel
        binary_conv(xp, pw, (2, 5), backend="native")
    with pytest.raises(KernelArgumentError, match="residual"):
        binary_conv(xp, pack_weight(torch.randn(4, 10, 1, 1)), (2, 5), residual=torch.randn(1, 4, 2, 4))
    # a non-contiguous packed input (a slice of a wider one) is read as its values, not as its memory layout
    wide = pack_activations(torch.randn(2, 70, 6, 8), pad=1, backend="native")  # [2, 8, 10, 2]
    part = wide[:, :, :6]  # a [2, 8, 6, 2] view: as the padded input of a 6 x 4 map
    assert not part.is_contiguous()
    pw = pack_weight(torch.randn(5, 70, 3, 3), 1, 1)
    ref = binary_conv(part.contiguous(), pw, (6, 4), want_int=True, backend="torch")[2]
    assert torch.equal(binary_conv(part, pw, (6, 4), want_int=True, backend="native")[2], ref)


@pytest.mark.parametrize("backend", BACKENDS + (["int8"] if hasattr(torch, "_int_mm") else []))
def test_nan_and_zero_binarize_to_plus_one(backend):
    """The packed sign rule: +1 unless x < 0, so 0 and NaN read as +1 (the float sign gives both 0) on every
    backend, in sign+pack and in the epilogue's packing of the next input."""
    x = torch.tensor([float("nan"), 0.0, -0.0, -1.0, 2.0, float("inf"), -float("inf"), -1e-30]).reshape(1, 8, 1, 1)
    want = [True, True, True, False, True, True, False, False]
    xp = pack_activations(x, backend=backend)
    if backend == "int8":
        assert (xp.flatten() > 0).tolist() == want
    else:
        assert to_bits(x.flatten()).tolist() == want
        assert torch.equal(xp, pack_activations(x, backend="torch"))
        assert [(int(xp.flatten()[0]) >> i) & 1 == 1 for i in range(8)] == want
    # the epilogue: y = dot * scale (scale NaN for channel 0, 0 for channel 1) packed with thresh 0
    ones = torch.ones(1, 1, 1, 1)
    pw = pack_weight(torch.ones(8, 1, 1, 1))
    scale = torch.tensor([float("nan"), 0.0, 1.0, -1.0, 1.0, 1.0, -1.0, -1e-30])
    ep = ConvEpilogue(scale=scale, thresh=torch.zeros(8))
    _, bits, _ = binary_conv(pack_activations(ones, backend=backend), pw, (1, 1), ep, bits_pad=0, backend=backend)
    got = (
        (bits.flatten() > 0).tolist()
        if backend == "int8"
        else [(int(bits.flatten()[0]) >> i) & 1 == 1 for i in range(8)]
    )
    assert got == want


@needs_native
def test_kernel_library_from_the_environment(monkeypatch, tmp_path):
    """ONEBIT_KERNEL_LIBRARY picks the library (the sanitizer build in CI); a path that does not load is an error."""
    path = backend_info()["library"]
    for var in ("_loaded", "_lib", "_path"):
        monkeypatch.setattr(_native, var, None if var != "_loaded" else False)
    monkeypatch.setenv("ONEBIT_KERNEL_LIBRARY", str(tmp_path / "missing.so"))
    with pytest.raises(FileNotFoundError, match="ONEBIT_KERNEL_LIBRARY"):
        _native.load()
    (tmp_path / "junk.so").write_text("not a library")
    monkeypatch.setenv("ONEBIT_KERNEL_LIBRARY", str(tmp_path / "junk.so"))
    with pytest.raises(OSError, match="failed to load"):
        _native.load()
    monkeypatch.setenv("ONEBIT_KERNEL_LIBRARY", path)
    assert _native.load() is not None and backend_info()["library"] == path


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
def test_narrow_inputs_exact_on_every_isa(threads, restore_threads):
    """Inputs of <= 32 channels (one half-empty word a pixel): exact dot products on the POPCNT and AVX2 kernels for
    odd and even kernel widths, strides 1-2, zero and +-1 padding, batch > 1, and 33 channels next to it."""
    g = torch.Generator().manual_seed(threads)
    cpu_best = backend_info()["cpu_isa"]
    torch.set_num_threads(threads)  # restored by the restore_threads fixture
    try:
        for c, o, (kh, kw), s, pad, pv, (h, w) in (
            (32, 32, (3, 3), 1, 1, 0.0, (9, 11)),
            (32, 24, (3, 3), 2, 1, 0.0, (10, 7)),
            (17, 9, (3, 3), 1, 1, 1.0, (5, 6)),
            (5, 16, (2, 2), 1, 0, 0.0, (4, 5)),
            (32, 8, (5, 5), 2, 2, -1.0, (9, 9)),
            (1, 8, (3, 3), 1, 0, 0.0, (3, 3)),
            (32, 40, (1, 3), 1, 1, 0.0, (6, 8)),
            (33, 16, (3, 3), 1, 1, 0.0, (6, 6)),
        ):
            x, wt = torch.randn(3, c, h, w, generator=g), torch.randn(o, c, kh, kw, generator=g)
            pw = pack_weight(wt, s, pad, pv)
            xp = pack_activations(x, pad=pad)
            xs = F.pad(_pm1(x).double(), (pad,) * 4, value=pv)
            ref = F.conv2d(xs, _pm1(wt).double(), stride=s).round().to(torch.int32).permute(0, 2, 3, 1)
            for isa in ("popcnt", "avx2"):
                select_isa(isa)
                _, _, dot = binary_conv(xp, pw, (h, w), want_int=True, backend="native")
                assert torch.equal(dot, ref), (isa, c, o, kh, kw, s, pad, pv)
    finally:
        select_isa(None)
        assert backend_info()["isa"] == cpu_best

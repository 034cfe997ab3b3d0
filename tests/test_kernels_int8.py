"""The ``"int8"`` backend (binary conv as an exact ``torch._int_mm`` GEMM): equal to the XOR-popcount reference on
CPU (``torch._int_mm`` runs there too), backend selection, device moves, and on CUDA (``gpu`` marker) the whole
packed models against their float eval forward."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kernels import _check_packed_model, _randomize_, _ref_dot, _small, conv_shapes

from onebit.binarize import set_temperature
from onebit.kernels import pack_
from onebit.kernels.engine import PackedConv2d
from onebit.kernels.fuse import FusedReActBlock
from onebit.kernels.ops import ConvEpilogue, _bits_to_words, binary_conv, pack_activations, pack_weight, resolve_backend
from onebit.models import create_model

pytestmark = pytest.mark.skipif(not hasattr(torch, "_int_mm"), reason="torch._int_mm not in this torch")
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")


def _as_words(b8: torch.Tensor) -> torch.Tensor:
    """int8 ±1/0 activations -> the reference's int64 words (+1 -> bit 1; -1 and the 0 border -> bit 0)."""
    return _bits_to_words(b8.cpu() > 0)


def _epilogue(o: int, g: torch.Generator) -> ConvEpilogue:
    return ConvEpilogue(
        scale=torch.rand(o, generator=g) + 0.1,
        bias=torch.randn(o, generator=g),
        act_in=torch.randn(o, generator=g) * 0.1,
        slope=torch.rand(o, generator=g),
        act_out=torch.randn(o, generator=g) * 0.1,
        thresh=torch.randn(o, generator=g) * 0.1,
    )


def _compare_with_reference(n, c, o, h, w, k, stride, pad_value, seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x, wt, shift = (
        torch.randn(n, c, h, w, generator=g),
        torch.randn(o, c, k, k, generator=g),
        torch.randn(c, generator=g),
    )
    pad = k // 2
    pw, ep = pack_weight(wt, stride, pad, pad_value), _epilogue(o, g)
    oh, ow = pw.out_size(h, w)
    res = torch.randn(n, max(1, o // 2) if o % 2 == 0 else o, oh, ow, generator=g)
    y, bits, dot = binary_conv(
        pack_activations(x, shift, pad, backend="torch"), pw, (h, w), ep, residual=res, bits_pad=1, want_int=True,
        backend="torch",
    )  # fmt: skip
    assert torch.equal(dot, _ref_dot(x + shift.view(1, -1, 1, 1), wt, stride, pad, pad_value))
    dv = torch.device(device)
    xp8 = pack_activations(x.to(dv), shift.to(dv), pad, backend="int8")
    assert xp8.dtype == torch.int8 and xp8.shape == (n, h + 2 * pad, w + 2 * pad, c)
    y8, bits8, dot8 = binary_conv(
        xp8, pw.to(dv), (h, w), ep.to(dv), residual=res.to(dv), bits_pad=1, want_int=True, backend="int8"
    )
    assert torch.equal(dot8.cpu(), dot)
    assert torch.equal(y8.cpu(), y)  # the same float32 epilogue operations in the same order
    assert torch.equal(_as_words(bits8), bits)  # same signs, same zero border


@settings(max_examples=25, deadline=None)
@given(**conv_shapes(2, 150, 24, 7, pad_value=st.sampled_from([0.0, 0.0, -1.0, 1.0])))
def test_int8_equals_reference_on_random_shapes(n, c, o, h, w, k, stride, pad_value, seed):
    _compare_with_reference(n, c, o, h, w, k, stride, pad_value, seed)


def test_int8_large_dot_products_are_exact():
    # |dot| up to 9·512 = 4608: far beyond int8, exact in the int32 accumulator
    x, wt = torch.ones(1, 512, 4, 4), torch.ones(3, 512, 3, 3)
    wt[1] = -1
    _, _, dot = binary_conv(
        pack_activations(x, pad=1, backend="int8"), pack_weight(wt, 1, 1), (4, 4), want_int=True, backend="int8"
    )
    assert dot[0, 1, 1].tolist() == [4608, -4608, 4608]
    assert torch.equal(dot, _ref_dot(x, wt, 1, 1))


@pytest.mark.parametrize("name", ["reactnet", "bnext", "resnet"])
def test_int8_packed_models_equal_eval_model_on_cpu(name):
    torch.manual_seed(0)
    _check_packed_model(_small(name), 32, "int8")


def test_int8_model_equals_torch_backend_bitwise():
    torch.manual_seed(0)
    model = _small("reactnet").eval()
    x = torch.randn(2, 3, 32, 32)
    outs = []
    for backend in ("torch", "int8"):
        m = copy.deepcopy(model)
        pack_(m, backend=backend)
        with torch.no_grad():
            outs.append(m(x))
    assert torch.equal(outs[0], outs[1])


def test_resolve_backend_selection():
    assert resolve_backend("int8") == "int8"
    assert resolve_backend("auto", "cuda") == "int8"  # decided from the device; no CUDA needed to decide
    assert resolve_backend(None, torch.device("cuda", 0)) == "int8"
    assert resolve_backend("auto", "cpu") in ("native", "torch")
    assert resolve_backend("torch", "cuda") == "torch"
    with pytest.raises(RuntimeError, match="CPU kernel"):
        resolve_backend("native", "cuda")
    with pytest.raises(ValueError, match="'int8'"):
        resolve_backend("int4")


def test_packed_input_dtype_must_match_backend():
    pw = pack_weight(torch.randn(4, 8, 3, 3), 1, 1)
    x = torch.randn(1, 8, 5, 5)
    with pytest.raises(ValueError, match="int8"):
        binary_conv(pack_activations(x, pad=1, backend="torch"), pw, (5, 5), backend="int8")
    with pytest.raises(ValueError, match="int64"):
        binary_conv(pack_activations(x, pad=1, backend="int8"), pw, (5, 5), backend="torch")


def test_packed_modules_follow_model_to_device():
    model = _small("reactnet").eval()
    report = pack_(model, backend="int8")
    assert report.backend["backend"] == "int8"
    model.to("meta")  # any device move: the packed weights, epilogues and shifts must follow, dtypes kept
    mods = [m for m in model.modules() if isinstance(m, (PackedConv2d, FusedReActBlock))]
    assert mods
    for m in mods:
        pws = [m.pw] if isinstance(m, PackedConv2d) else [m.conv2_pw]
        eps = [m.epilogue] if isinstance(m, PackedConv2d) else [m.conv2_ep]
        for pw in pws:
            assert pw.words.is_meta and pw.w8.is_meta and pw.w8.dtype == torch.int8 and pw.words.dtype == torch.int64
        for ep in eps:
            assert ep.scale.is_meta and ep.scale.dtype == torch.float32
        if isinstance(m, FusedReActBlock):
            assert m.shift_in.is_meta and (m.next_shift is None or m.next_shift.is_meta)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["reactnet_a", "bnext_tiny"])
def test_full_packed_models_at_64_int8_on_cpu(name):
    torch.manual_seed(0)
    _check_packed_model(create_model(name), 64, "int8")


@pytest.mark.gpu
@needs_cuda
@settings(max_examples=20, deadline=None)
@given(**conv_shapes(2, 300, 40, 9, pad_value=st.sampled_from([0.0, -1.0, 1.0])))
def test_int8_on_cuda_equals_cpu_reference(n, c, o, h, w, k, stride, pad_value, seed):
    _compare_with_reference(n, c, o, h, w, k, stride, pad_value, seed, device="cuda")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("name", ["reactnet_a", "bnext_tiny"])
def test_full_packed_models_at_64_on_cuda(name, monkeypatch):
    # TF32 in the float parts (stem, head) would differ from the CPU float32 reference by more than rounding
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    _check_packed_model(create_model(name), 64, "auto", device="cuda")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("name", ["reactnet", "bnext", "resnet"])
def test_pack_a_model_already_on_cuda(name, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    model = _small(name).eval()
    set_temperature(model, 0.0)
    _randomize_(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    model.cuda()
    assert pack_(model).backend["backend"] == "int8"  # auto on a CUDA model
    with torch.no_grad():
        out = model(x.cuda()).cpu()
    assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert torch.equal(out.argmax(1), ref.argmax(1))


def test_int8_matrix_is_built_only_for_the_int8_backend():
    """The CPU kernels never read the int8 matrix (8 bits per weight): it is built at first int8 use, or up front
    when the model is packed for the int8 backend."""
    g = torch.Generator().manual_seed(0)
    x, wt = torch.randn(1, 19, 5, 5, generator=g), torch.randn(7, 19, 3, 3, generator=g)
    pw = pack_weight(wt, 1, 1)
    assert pw.w8 is None
    assert torch.equal(pw.signs(), torch.where(wt >= 0, 1.0, -1.0))
    _, _, dot = binary_conv(pack_activations(x, pad=1, backend="int8"), pw, (5, 5), want_int=True, backend="int8")
    assert pw.w8 is not None and pw.w8.dtype == torch.int8
    _, _, ref = binary_conv(pack_activations(x, pad=1, backend="torch"), pw, (5, 5), want_int=True, backend="torch")
    assert torch.equal(dot, ref)
    for backend, built in (("auto", False), ("int8", True)):
        model = _small("reactnet").eval()
        pack_(model, backend=backend)
        pws = [m.pw for m in model.modules() if isinstance(m, PackedConv2d)]
        assert pws and all((pw.w8 is not None) == built for pw in pws), backend

"""The fused float chain of BNext's processors (onebit.layers.fused_bnext) on the lean training path."""

from __future__ import annotations

import copy

import pytest
import torch

from onebit.layers import set_training_path
from onebit.layers.activations import LeanPReLUFunction, prelu_forward
from onebit.layers.fused_bnext import ChainSpec, LeanProcessorFunction, chain_supported
from onebit.models.bnext import BNext, ELMAttention, InfoRCP

F64 = torch.float64


def _processor(kind: str, stride: int = 1, dtype=F64):
    torch.manual_seed(0)
    proc = ELMAttention(8, 8, stride) if kind == "elm" else InfoRCP(8, 8, 3 if kind == "rcp3" else 1)
    with torch.no_grad():  # move every parameter off its initial value (λ inside and outside [0, 1])
        for name, p in proc.named_parameters():
            p.add_(torch.randn_like(p) * (0.6 if name == "scale" else 0.3))
        proc.binary_conv.weight.mul_(300)
    return proc.to(dtype).train()


def _run(proc, x, path: str):
    set_training_path(proc, path)
    proc.zero_grad(set_to_none=True)
    xi = x.clone().requires_grad_(True)
    out = proc(xi)
    (out * torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    grads = {n: p.grad.clone() for n, p in proc.named_parameters() if p.grad is not None}
    return out.detach(), xi.grad, grads, {k: v.clone() for k, v in proc.state_dict().items()}


def _graph_has_chain(out: torch.Tensor) -> bool:
    seen, stack = set(), [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if type(fn).__name__ == "LeanProcessorFunctionBackward":
            return True
        stack.extend(f for f, _ in fn.next_functions)
    return False


@pytest.mark.parametrize("kind,stride,size", [("rcp3", 1, 6), ("rcp1", 1, 6), ("elm", 1, 6), ("elm", 2, 6)])
def test_processor_chain_equals_module_and_reference(kind, stride, size):
    proc = _processor(kind, stride)
    x = torch.randn(3, 8, size, size, dtype=F64) * 2
    res = {path: _run(copy.deepcopy(proc), x, path) for path in ("module", "lean", "reference")}
    out_l, gx_l, g_l, state_l = res["lean"]
    for path in ("module", "reference"):
        out, gx, g, state = res[path]
        assert torch.equal(out_l, out)  # same ops in the same order
        torch.testing.assert_close(gx_l, gx, rtol=1e-10, atol=1e-12)
        assert g_l.keys() == g.keys()
        for k in g:
            torch.testing.assert_close(g_l[k], g[k], rtol=1e-10, atol=1e-12, msg=lambda m, k=k: f"{k}: {m}")
        for k in state:  # running statistics, num_batches_tracked and the clamped λ
            assert torch.equal(state_l[k], state[k]), k


def test_float32_forward_bit_identical_and_running_stats():
    proc = _processor("elm", 2, torch.float32)
    x = torch.randn(4, 8, 10, 10)
    out_m, _, _, state_m = _run(copy.deepcopy(proc), x, "module")
    out_l, _, _, state_l = _run(copy.deepcopy(proc), x, "lean")
    assert torch.equal(out_l, out_m)
    for k in state_m:
        assert torch.equal(state_l[k], state_m[k]), k


def test_bn_momentum_none_cumulative_average():
    proc = _processor("rcp1")
    proc.norm1.momentum = proc.norm2.momentum = None
    x = torch.randn(2, 8, 5, 5, dtype=F64)
    a, b = copy.deepcopy(proc), copy.deepcopy(proc)
    for _ in range(2):
        _run(a, x, "module")
        _run(b, x, "lean")
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_model_uses_the_chain_and_saves_less():
    torch.manual_seed(0)
    model = BNext((8, 16, 32, 32, 64), num_classes=10).train()
    x = torch.randn(2, 3, 32, 32)
    own = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}

    def saved_bytes(path):
        set_training_path(model, path)
        got = {}

        def pack(t):
            if t.untyped_storage().data_ptr() not in own:
                got.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x)
        return out, sum(got.values())

    out, lean = saved_bytes("lean")
    assert _graph_has_chain(out)
    out_m, module = saved_bytes("module")
    assert not _graph_has_chain(out_m)
    assert lean < 0.5 * module, (lean, module)


def test_fallbacks_eval_no_grad_hooks_and_ablation():
    proc = _processor("rcp3")
    set_training_path(proc, "lean")
    assert chain_supported(proc, elm=False)
    with torch.no_grad():
        assert not chain_supported(proc, elm=False)
    proc.eval()
    assert not chain_supported(proc, elm=False)
    proc.train()
    h = proc.norm2.register_forward_hook(lambda m, a, o: None)
    assert not chain_supported(proc, elm=False)  # a hook must see norm2's own input and output
    h.remove()
    set_training_path(proc, "reference")
    assert not chain_supported(proc, elm=False)
    ablated = InfoRCP(8, 8, 3, infor_recoupling=False).train()
    assert not chain_supported(ablated, elm=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        set_training_path(proc, "lean")
        assert not chain_supported(proc, elm=False)


def _chain_inputs(proc, elm: bool) -> tuple[list, list]:
    """(differentiable inputs, running-stat buffers) of LeanProcessorFunction for ``proc``."""
    bn1, bn2, se1, se2 = proc.norm1, proc.norm2, proc.se.se[1], proc.se.se[3]
    params = [bn1.weight, bn1.bias, proc.activation2.weight, proc.scale, se1.weight, se1.bias, se2.weight]
    params += [se2.bias, bn2.weight, bn2.bias, proc.activation1.weight if elm else None]
    params = [p.detach().clone().requires_grad_(True) if p is not None else None for p in params]
    return params, [bn1.running_mean, bn1.running_var, bn2.running_mean, bn2.running_var]


@pytest.mark.parametrize("elm", [False, True])
def test_function_gradcheck_small(elm):
    """torch.autograd.gradcheck on the Function itself, all differentiable inputs at once."""
    proc = _processor("elm" if elm else "rcp1")
    c = torch.randn(2, 8, 4, 4, dtype=F64, requires_grad=True)
    x = torch.randn(2, 8, 4, 4, dtype=F64, requires_grad=True)
    params, buffers = _chain_inputs(proc, elm)
    spec = ChainSpec(elm, 1, 0.1, 1e-5, 0.1, 1e-5)

    def f(c, x, *ps):
        return LeanProcessorFunction.apply(c, x, *ps, *[b.clone() for b in buffers], spec)

    assert torch.autograd.gradcheck(f, [c, x, *params], eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("shape,slopes", [((2, 4, 5, 5), 4), ((2, 4, 5, 5), 1), ((6, 3), 3)])
def test_lean_prelu_function(shape, slopes):
    torch.manual_seed(0)
    prelu = torch.nn.PReLU(slopes).double()
    with torch.no_grad():
        prelu.weight.uniform_(-1, 1)
    x = torch.randn(shape, dtype=F64)
    x.view(-1)[:3] = 0.0  # exact zeros take the slope branch, as in torch
    g = torch.randn(shape, dtype=F64)
    results = []
    for lean in (False, True):
        xi = x.clone().requires_grad_(True)
        prelu.zero_grad(set_to_none=True)
        out = prelu_forward(prelu, xi, lean)
        out.backward(g)
        results.append((out.detach(), xi.grad, prelu.weight.grad))
    assert torch.equal(results[0][0], results[1][0])
    for a, b in zip(results[0][1:], results[1][1:]):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-13)
    xs = torch.where(x == 0, 0.5, x)  # gradcheck's central differences need points away from the kink
    assert torch.autograd.gradcheck(
        LeanPReLUFunction.apply, (xs.requires_grad_(True), prelu.weight.detach().clone().requires_grad_(True))
    )


@pytest.mark.parametrize("kind,stride", [("rcp1", 1), ("elm", 1), ("elm", 2)])
def test_backward_channels_last_and_broadcast_grad(kind, stride):
    """The hand-written backward on other layouts (channels_last tensors, an expanded stride-0 output gradient):
    gradients still equal the module path's in float64."""
    proc = _processor(kind, stride).to(memory_format=torch.channels_last)
    x = (torch.randn(2, 8, 6, 6, dtype=F64) * 2).contiguous(memory_format=torch.channels_last)
    grads = []
    for path in ("module", "lean"):
        p = copy.deepcopy(proc)
        set_training_path(p, path)
        xi = x.clone().requires_grad_(True)
        out = p(xi)
        out.sum().backward()  # the gradient of a sum: an expanded tensor
        grads.append([xi.grad] + [q.grad for q in p.parameters() if q.grad is not None])
    assert len(grads[0]) == len(grads[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)

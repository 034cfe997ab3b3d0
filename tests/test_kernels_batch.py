"""``onebit.kernels.BatchRunner``: chunked, concurrent batch runs of a packed model equal the model's own run."""

from __future__ import annotations

import copy
import pickle
import threading

import pytest
import torch
from torch import Tensor, nn

from onebit.kernels import BatchRunner
from onebit.kernels.benchmark import bench_model, fastest, float_variants, fp32_layout, harden_, packed_copy
from onebit.models import create_model

MODELS = {
    "reactnet_digits": {"width": 8},
    "bnext_digits": {"width": 8},
    "resnet_digits": {"family": "birealnet18", "width": 8},
}


@pytest.fixture(scope="module")
def packed_models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    out = {}
    for name, kw in MODELS.items():
        model = create_model(name, **kw).eval()
        harden_(model)  # BNext: the deployed hard-sign state, so that every binary layer packs
        out[name], report = packed_copy(model)
        assert not report.float_layers
    return out


def _x(n: int, c: int = 1) -> Tensor:
    return torch.randn(n, c, 16, 16, generator=torch.Generator().manual_seed(n))


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("nthreads", [1, 2])
def test_equals_the_model_on_the_whole_batch(packed_models, restore_threads, name, nthreads):
    model = packed_models[name]
    x = _x(7)
    with torch.inference_mode():
        torch.set_num_threads(1)
        per_chunk = {c: torch.cat([model(p) for p in x.split(c)]) for c in (1, 3)}
        torch.set_num_threads(nthreads)
        whole = model(x)
        for chunk in (1, 3, 7, 16):  # 3 does not divide 7; 7 and 16: one chunk, the model's own call
            y = BatchRunner(model, chunk)(x)
            assert y.shape == whole.shape and y.dtype == whole.dtype
            # the kernels give an image the same bits whatever its batch; torch's float stem/head may round
            # differently for another batch size, hence whole-batch equality to float32 rounding
            torch.testing.assert_close(y, whole, rtol=1e-5, atol=1e-5 * float(whole.abs().max()))
            if chunk in per_chunk:  # the same calls, one kernel thread each: bitwise
                assert torch.equal(y, per_chunk[chunk])
            else:
                assert torch.equal(y, whole)
    assert torch.get_num_threads() == nthreads


def test_plan_rule(restore_threads):
    r = BatchRunner(nn.Identity(), 4)
    assert r.plan(16, 2) == (4, 2) and r.plan(16, 1) == (4, 1) and r.plan(4, 2) == (1, 1) and r.plan(5, 8) == (2, 2)
    assert BatchRunner(nn.Identity(), 1, workers=1).plan(16, 2) == (16, 1)
    assert BatchRunner(nn.Identity(), 1, workers=3).plan(16, 8) == (16, 3)
    torch.set_num_threads(2)
    assert BatchRunner(nn.Identity()).describe(8) == {
        "images_per_chunk": 1,
        "chunks": 8,
        "workers": 2,
        "kernel_threads": 1,
    }
    with pytest.raises(ValueError):
        BatchRunner(nn.Identity(), 0)
    with pytest.raises(ValueError):
        BatchRunner(nn.Identity(), workers=0)


@pytest.mark.parametrize("nthreads", [1, 2])
def test_errors_are_the_models(packed_models, restore_threads, nthreads):
    model = packed_models["reactnet_digits"]
    runner = BatchRunner(model, 2)
    torch.set_num_threads(nthreads)
    bad = [torch.randn(1, 16, 16), torch.randn(5, 3, 16, 16), torch.randn(5, 1, 16, 16, dtype=torch.float64)]
    with torch.inference_mode():
        for x in bad:
            with pytest.raises(Exception) as want:
                model(x)
            with pytest.raises(want.type):  # the message may name the chunk's shape
                runner(x)
            assert torch.get_num_threads() == nthreads  # restored after a failed concurrent call
        empty = _x(0)
        assert torch.equal(runner(empty), model(empty))


def test_non_tensor_output_is_refused(restore_threads):
    class Pair(nn.Module):
        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            return x, x

    torch.set_num_threads(2)
    with pytest.raises(TypeError):
        BatchRunner(Pair())(_x(3))
    assert torch.get_num_threads() == 2


def test_copy_pickle_to_and_inner_model(packed_models, restore_threads):
    model = packed_models["bnext_digits"]
    runner = BatchRunner(model, 2)
    assert runner.model is model and "images_per_chunk=2" in repr(runner)
    x = _x(5)
    torch.set_num_threads(2)
    with torch.inference_mode():
        want = runner(x)
        for other in (copy.deepcopy(runner), pickle.loads(pickle.dumps(runner))):
            assert other.model is not model and other.images_per_chunk == 2
            assert torch.equal(other(x), want)
        moved = copy.deepcopy(runner).to("cpu").to(torch.float32)
        assert isinstance(moved, BatchRunner) and torch.equal(moved(x), want)


def test_modes_carried_into_workers_and_concurrent_callers(packed_models, restore_threads):
    model = packed_models["reactnet_digits"]
    runner = BatchRunner(model, 1)
    x = _x(6)
    torch.set_num_threads(2)
    with torch.inference_mode():
        want = runner(x)
        assert want.is_inference()
    with torch.no_grad():
        y = runner(x)
        assert not y.is_inference() and not y.requires_grad and torch.equal(y, want)
    results: list[Tensor] = []

    def call() -> None:
        torch.set_num_threads(2)
        with torch.inference_mode():
            results.append(runner(x))

    callers = [threading.Thread(target=call) for _ in range(3)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    assert len(results) == 3 and all(torch.equal(r, want) for r in results)


def test_float_chunk_variants_and_fastest():
    model = create_model("reactnet_digits", width=8).eval()
    x = _x(9)
    variants = float_variants(model, x, bf16=False, chunks=(1, 8, 16))
    assert set(variants) == {
        "fp32",
        "fp32_channels_last",
        "fp32_chunk1",
        "fp32_channels_last_chunk1",
        "fp32_chunk8",
        "fp32_channels_last_chunk8",
    }
    with torch.inference_mode():
        ref = variants["fp32"]()
        for f in variants.values():
            torch.testing.assert_close(f(), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    assert fastest({"fp32": 2.0, "fp32_chunk8": 1.0, "packed": 0.1, "bf16": 0.5}) == "fp32_chunk8"
    assert fp32_layout("fp32_channels_last_chunk8") == ("fp32_channels_last", 8)
    assert fp32_layout("fp32") == ("fp32", None)


def test_bench_model_batch_runs_packed_in_chunks():
    model = create_model("reactnet_digits", width=8)
    r = bench_model(model, batch=3, resolution=16, in_chans=1, warmup=0, repeats=1, fp32_chunks=(1,))
    assert r["packed_config"] == {"images_per_chunk": 1, "chunks": 3, "workers": 1, "kernel_threads": 1}
    assert {"fp32_chunk1", "fp32_channels_last_chunk1", "packed"} <= set(r["latency_ms"])
    assert r["fp32_best"] in r["latency_ms"] and r["max_abs_logit_diff"] < 1e-3
    assert set(r["per_layer_ms"]["packed"]) == set(r["per_layer_ms"]["fp32"])

"""Latency of a model in fp32, packed and (where the CPU has bf16 hardware) bf16: the library side of
``onebit bench`` and of the scripts in ``benchmarks/`` (``packed_inference.py``, ``packed_throughput.py``,
``peer_lce.py``, ``gpu_check.py``), which build on its pieces (:func:`float_variants`, :func:`packed_copy`,
:func:`time_variants`, :func:`cpu_info`).

The fp32 baseline is the fastest honest float eval of the same model: every binary conv's weight binarized once up
front (a plain conv over ``torch.sign(x)``, one op), ``torch.inference_mode``, NCHW or channels_last, and for a batch
also run in chunks of a few images (:class:`~onebit.kernels.batch.BatchRunner`, the same work sharing the packed
model gets), whichever is faster. The packed model of a batch runs through a
:class:`~onebit.kernels.batch.BatchRunner` (:func:`packed_copy` with ``images_per_chunk``). Timings are medians of
repeats after warm-up, the variants interleaved so that machine load hits all alike.
"""

from __future__ import annotations

import copy
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from onebit.binarize import ProgressiveSign, set_temperature
from onebit.kernels import pack_
from onebit.kernels._native import backend_info
from onebit.kernels.batch import DEFAULT_IMAGES_PER_CHUNK, BatchRunner
from onebit.kernels.engine import PackReport
from onebit.layers.binary import BinaryConv2d

__all__ = [
    "ISA_FLAGS",
    "SignConv2d",
    "bench_model",
    "bf16_available",
    "cpu_info",
    "fast_float_model",
    "fastest",
    "float_variants",
    "FP32_CHUNKS",
    "fp32_chunk_sizes",
    "fp32_layout",
    "harden_",
    "packed_copy",
    "time_variants",
]


class SignConv2d(nn.Module):
    """conv(sign(x), W_b) with W_b the binarized weight computed once (the float baseline of a binary conv)."""

    def __init__(self, conv: BinaryConv2d) -> None:
        super().__init__()
        with torch.no_grad():
            self.register_buffer("weight", conv.binary_weight().detach().clone())
            self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())
        self.stride, self.padding, self.groups, self.dilation = conv.stride, conv.padding, conv.groups, conv.dilation
        self.sign_input = conv.binarize_input
        self.pad_value = conv.pad_value

    def forward(self, x: Tensor) -> Tensor:
        if self.sign_input:
            x = torch.sign(x)
            if self.pad_value != 0.0 and any(self.padding):  # type: ignore[arg-type]
                ph, pw = self.padding  # type: ignore[misc]
                x = F.pad(x, (pw, pw, ph, ph), value=self.pad_value)
                return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def fast_float_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval) with every :class:`BinaryConv2d` replaced by a :class:`SignConv2d`."""
    fast = copy.deepcopy(model).eval()
    for name, m in list(fast.named_modules()):
        if isinstance(m, BinaryConv2d):
            parent_name, _, attr = name.rpartition(".")
            setattr(fast.get_submodule(parent_name) if parent_name else fast, attr, SignConv2d(m))
    return fast


def bf16_available() -> bool:
    """True when the CPU has bf16 arithmetic (AVX-512 BF16 or AMX); without it bf16 runs emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


#: CPU flags that decide which packed kernel runs and how fast (``/proc/cpuinfo`` spelling).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vpopcntdq", "avx512_bf16", "amx_bf16", "neon", "asimd")


def cpu_info() -> dict:
    """The CPU model name, family and model number (a VM may name only "AMD EPYC": family 25 model 1 is Zen 3,
    model 17 Zen 4), logical CPU count and which of :data:`ISA_FLAGS` it has (from ``/proc/cpuinfo``; ``platform``
    values where that file does not exist), for the header of a benchmark table."""
    model, flags = platform.processor() or platform.machine(), set()
    ids: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and value.strip():
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("cpu family", "model") and key not in ids:
            ids[key] = value.strip()
    return {
        "model": model,
        "family": ids.get("cpu family"),
        "model_number": ids.get("model"),
        "logical_cpus": os.cpu_count(),
        "isa": {f: f in flags for f in ISA_FLAGS if f in flags or f not in ("neon", "asimd")},
    }


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def _block_names(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules a per-layer breakdown times: items of ``feature``/``layerN`` containers, else the children."""
    out: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, (nn.ModuleList, nn.Sequential)):
            out += [(f"{name}.{i}", m) for i, m in enumerate(child)]
        else:
            out.append((name, child))
    return out


def _per_layer(model: nn.Module, x: Tensor, repeats: int) -> dict[str, float]:
    """Median wall time (ms) of each block over ``repeats`` forwards (forward hooks; blocks run sequentially).

    For a :class:`~onebit.kernels.batch.BatchRunner` the blocks are those of the wrapped model, run on the runner's
    chunks one after the other with all threads (a block's time is its sum over the chunks of a forward): with
    concurrent workers the blocks of different images overlap and have no time of their own."""
    parts: tuple[Tensor, ...] = (x,)
    if isinstance(model, BatchRunner):
        parts = x.split(model.images_per_chunk) if x.shape[0] else (x,)
        model = model.model
    acc: dict[str, float] = {}
    times: dict[str, list[float]] = {}
    handles = []
    starts: dict[str, float] = {}
    for name, m in _block_names(model):

        def pre(_m, _i, name=name):
            starts[name] = time.perf_counter()

        def post(_m, _i, _o, name=name):
            acc[name] = acc.get(name, 0.0) + time.perf_counter() - starts[name]

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        with torch.inference_mode():
            for _ in range(repeats):
                acc.clear()
                for p in parts:
                    model(p)
                for k, v in acc.items():
                    times.setdefault(k, []).append(v)
    finally:
        for h in handles:
            h.remove()
    return {k: _median_ms(v) for k, v in times.items()}


def harden_(model: nn.Module) -> bool:
    """Set progressive (BNext) weight binarizers below their threshold, in place: the deployed state of a trained
    model (a still-soft binarizer would keep those layers in float). Returns whether the model had any."""
    if any(isinstance(m, ProgressiveSign) for m in model.modules()):
        set_temperature(model, 0.0)
        return True
    return False


#: chunk sizes of the chunked fp32 variants (those below the batch size): see :func:`float_variants`.
FP32_CHUNKS = (1, 8, 16)


def fp32_chunk_sizes(batch: int, chunks: tuple[int, ...] = FP32_CHUNKS) -> tuple[int, ...]:
    """The chunk sizes among ``chunks`` that split a batch of ``batch`` images (smaller than it)."""
    return tuple(sorted({c for c in chunks if 1 <= c < batch}))


def float_variants(
    model: nn.Module, x: Tensor, *, bf16: bool | None = None, chunks: tuple[int, ...] = ()
) -> dict[str, Callable[[], Tensor]]:
    """The float forwards of ``model`` (eval) on ``x``: ``fp32`` (NCHW), ``fp32_channels_last`` and, when
    ``bf16`` (default: :func:`bf16_available`), ``bf16`` (channels_last), each over :func:`fast_float_model`;
    for each ``c`` in ``chunks`` below the batch size also ``fp32_chunk{c}`` and ``fp32_channels_last_chunk{c}``:
    the same models run through a :class:`~onebit.kernels.batch.BatchRunner` of ``c`` images per chunk (its
    rule: concurrent workers with one thread each when there are several threads)."""
    fp32 = fast_float_model(model)
    fp32_cl = copy.deepcopy(fp32).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    variants: dict[str, Callable[[], Tensor]] = {"fp32": lambda: fp32(x), "fp32_channels_last": lambda: fp32_cl(x_cl)}
    for c in fp32_chunk_sizes(x.shape[0], chunks):
        run, run_cl = BatchRunner(fp32, c), BatchRunner(fp32_cl, c)
        variants[f"fp32_chunk{c}"] = lambda run=run: run(x)  # type: ignore[misc]
        variants[f"fp32_channels_last_chunk{c}"] = lambda run=run_cl: run(x_cl)  # type: ignore[misc]
    if bf16_available() if bf16 is None else bf16:
        bf = copy.deepcopy(fp32).to(torch.bfloat16).to(memory_format=torch.channels_last)
        xb = x_cl.to(torch.bfloat16)
        variants["bf16"] = lambda: bf(xb)
    return variants


def packed_copy(
    model: nn.Module, backend: str | None = None, *, images_per_chunk: int | None = None
) -> tuple[nn.Module, PackReport]:
    """An eval copy of ``model`` with its binary convs packed (:func:`onebit.kernels.pack_`), and the pack report.
    With ``images_per_chunk`` the copy is wrapped in a :class:`~onebit.kernels.batch.BatchRunner` of that chunk
    size (batch throughput; the packed model is its ``.model``)."""
    packed = copy.deepcopy(model).eval()
    report = pack_(packed, backend=backend)  # type: ignore[arg-type]
    return (packed if images_per_chunk is None else BatchRunner(packed, images_per_chunk)), report


def time_variants(
    variants: dict[str, Callable[[], object]],
    *,
    warmup: int = 3,
    repeats: int = 10,
    sync: Callable[[], None] | None = None,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process-CPU seconds of each variant: ``warmup`` untimed calls each, then ``repeats`` rounds that
    call every variant once, in an order rotated by one each round (slow drifts of a shared machine and cache
    effects of the predecessor hit all alike). ``sync`` (e.g. ``torch.cuda.synchronize``) runs before and after
    each timed call. Call it under ``torch.inference_mode`` for inference."""
    names = list(variants)
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for f in variants.values():
        for _ in range(warmup):
            f()
    for rep in range(repeats):
        shift = rep % len(names) if names else 0
        for k in names[shift:] + names[:shift]:
            if sync is not None:
                sync()
            c0, t0 = time.process_time(), time.perf_counter()
            variants[k]()
            if sync is not None:
                sync()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return wall, cpu


def fastest(latency_ms: dict[str, float], names: tuple[str, ...] | None = None) -> str:
    """The name among ``names`` (those present; default: every ``fp32`` variant, ``fp32`` and ``fp32_*``, chunked
    ones included) with the lowest latency: the "fastest fp32" of the tables."""
    keys = [k for k in latency_ms if k == "fp32" or k.startswith("fp32_")] if names is None else names
    return min((k for k in keys if k in latency_ms), key=lambda k: latency_ms[k])


def fp32_layout(variant: str) -> tuple[str, int | None]:
    """``(layout, images per chunk or None)`` of an fp32 variant name of :func:`float_variants`, e.g.
    ``"fp32_channels_last_chunk8"`` -> ``("fp32_channels_last", 8)``."""
    base, _, chunk = variant.partition("_chunk")
    return base, (int(chunk) if chunk else None)


def _packed_config(packed: nn.Module, batch: int, threads: int) -> dict:
    """How the packed model of a benchmark ran a batch (:meth:`BatchRunner.describe`; one call without a runner)."""
    if isinstance(packed, BatchRunner):
        return packed.describe(batch, threads)
    return {"images_per_chunk": None, "chunks": 1, "workers": 1, "kernel_threads": threads}


def bench_model(
    model: nn.Module,
    *,
    threads: int = 1,
    batch: int = 1,
    resolution: int = 224,
    in_chans: int = 3,
    warmup: int = 3,
    repeats: int = 10,
    per_layer: bool = True,
    backend: str | None = None,
    hard_sign: bool = True,
    fp32: bool = True,
    images_per_chunk: int | None = DEFAULT_IMAGES_PER_CHUNK,
    fp32_chunks: tuple[int, ...] = FP32_CHUNKS,
) -> dict:
    """Time fp32 (fastest of NCHW/channels_last), packed and bf16 forwards of ``model``.

    Args:
        model: any model with binary layers (left unchanged; copies are benchmarked).
        threads: ``torch.set_num_threads`` for the run (the packed kernels follow it); restored afterwards.
        batch, resolution, in_chans: input shape.
        warmup, repeats: untimed and timed forwards per variant (interleaved).
        per_layer: add a per-block breakdown for fp32 and packed.
        backend: packed backend (see :func:`onebit.kernels.pack_`).
        hard_sign: set progressive (BNext) weight binarizers below their threshold first, the deployed state of
            a trained model (a still-soft binarizer would keep those layers in float).
        fp32: time the float variants too; ``False`` times the packed model only (no ratios, no logit check).
        images_per_chunk: the packed model runs through a :class:`~onebit.kernels.batch.BatchRunner` of this chunk
            size (a batch of at most this many images is one call of the packed model); ``None``: the whole batch
            in one call.
        fp32_chunks: chunk sizes of the chunked fp32 variants (those below ``batch``; see :func:`float_variants`).

    Returns:
        A JSON-ready dict: ``latency_ms`` per variant (wall clock), ``cpu_time_ms`` (process CPU time),
        ``images_per_s`` (batch / median wall clock), ``speedup`` (fp32 / packed, fp32 / bf16, wall clock; empty
        without fp32), ``fp32_best`` (the fastest fp32 variant, ``None`` without fp32), ``packed_config`` (chunk
        size, chunks, workers, kernel threads the packed model ran with), ``per_layer_ms``, ``pack_report``,
        ``backend``, the settings and the machine.
    """
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = copy.deepcopy(model).eval()
        hardened = hard_sign and harden_(model)
        x = torch.randn(batch, in_chans, resolution, resolution, generator=torch.Generator().manual_seed(0))
        packed, report = packed_copy(model, backend, images_per_chunk=images_per_chunk)
        floats = float_variants(model, x, chunks=fp32_chunks) if fp32 else {}
        variants: dict[str, Callable[[], Tensor]] = {**floats, "packed": lambda: packed(x)}
        with torch.inference_mode():
            samples, cpu = time_variants(variants, warmup=warmup, repeats=repeats)  # type: ignore[arg-type]
            diff = float((packed(x).float() - floats["fp32"]().float()).abs().max()) if fp32 else None
        lat = {k: _median_ms(v) for k, v in samples.items()}
        best_fp32 = fastest(lat) if fp32 else None
        result: dict = {
            "threads": threads,
            "batch": batch,
            "resolution": resolution,
            "repeats": repeats,
            "warmup": warmup,
            "latency_ms": lat,
            "images_per_s": {k: batch * 1e3 / v for k, v in lat.items()},
            # process CPU time per forward: with 1 thread, the latency without the time other jobs took the core
            "cpu_time_ms": {k: _median_ms(v) for k, v in cpu.items()},
            # fastest repeat: on a shared machine the closest to the uncontended latency
            "latency_min_ms": {k: min(v) * 1e3 for k, v in samples.items()},
            "cpu_time_min_ms": {k: min(v) * 1e3 for k, v in cpu.items()},
            "fp32_best": best_fp32,
            "packed_config": _packed_config(packed, batch, threads),
            "hard_sign_applied": hardened,
            "speedup": {} if best_fp32 is None else {"packed_vs_fp32": lat[best_fp32] / lat["packed"]},
            "max_abs_logit_diff": diff,
            "backend": backend_info() if report.backend.get("backend") == "native" else report.backend,
            "pack_report": report.to_dict(),
            "samples_ms": {k: [s * 1e3 for s in v] for k, v in samples.items()},
        }
        if best_fp32 is not None and "bf16" in lat:
            result["speedup"]["bf16_vs_fp32"] = lat[best_fp32] / lat["bf16"]
        if per_layer:
            reps = max(3, repeats // 2)
            result["per_layer_ms"] = {"packed": _per_layer(packed, x, reps)}
            if best_fp32 is not None:
                layout, chunk = fp32_layout(best_fp32)
                fmodel: nn.Module = fast_float_model(model)
                fx = x
                if layout == "fp32_channels_last":
                    fmodel = fmodel.to(memory_format=torch.channels_last)
                    fx = x.contiguous(memory_format=torch.channels_last)
                if chunk is not None:
                    fmodel = BatchRunner(fmodel, chunk)
                result["per_layer_ms"] = {"fp32": _per_layer(fmodel, fx, reps), **result["per_layer_ms"]}
        return result
    finally:
        torch.set_num_threads(old_threads)

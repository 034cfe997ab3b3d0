"""Latency of a model in fp32, packed and (where the CPU has bf16 hardware) bf16: the library side of
``onebit bench`` and ``benchmarks/packed_inference.py``.

The fp32 baseline is the fastest honest float eval of the same model: every binary conv's weight binarized once up
front (a plain conv over ``torch.sign(x)``, one op), ``torch.inference_mode``, NCHW or channels_last, whichever is
faster. Timings are medians of repeats after warm-up, the variants interleaved so that machine load hits all alike.
"""

from __future__ import annotations

import copy
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
from onebit.layers.binary import BinaryConv2d

__all__ = ["SignConv2d", "bench_model", "bf16_available", "fast_float_model"]


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
    """Median wall time (ms) of each block over ``repeats`` forwards (forward hooks; blocks run sequentially)."""
    times: dict[str, list[float]] = {}
    handles = []
    starts: dict[str, float] = {}
    for name, m in _block_names(model):

        def pre(_m, _i, name=name):
            starts[name] = time.perf_counter()

        def post(_m, _i, _o, name=name):
            times.setdefault(name, []).append(time.perf_counter() - starts[name])

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        with torch.inference_mode():
            for _ in range(repeats):
                model(x)
    finally:
        for h in handles:
            h.remove()
    return {k: _median_ms(v) for k, v in times.items()}


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

    Returns:
        A JSON-ready dict: ``latency_ms`` per variant (wall clock), ``cpu_time_ms`` (process CPU time),
        ``speedup`` (fp32 / packed, fp32 / bf16, wall clock), ``per_layer_ms``,
        ``pack_report``, ``backend``, the settings and the machine.
    """
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = copy.deepcopy(model).eval()
        hardened = hard_sign and any(isinstance(m, ProgressiveSign) for m in model.modules())
        if hardened:
            set_temperature(model, 0.0)
        x = torch.randn(batch, in_chans, resolution, resolution, generator=torch.Generator().manual_seed(0))
        fp32 = fast_float_model(model)
        fp32_cl = copy.deepcopy(fp32).to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        packed = copy.deepcopy(model)
        report = pack_(packed, backend=backend)
        variants: dict[str, Callable[[], Tensor]] = {
            "fp32": lambda: fp32(x),
            "fp32_channels_last": lambda: fp32_cl(x_cl),
            "packed": lambda: packed(x),
        }
        if bf16_available():
            bf = copy.deepcopy(fp32).to(torch.bfloat16).to(memory_format=torch.channels_last)
            xb = x_cl.to(torch.bfloat16)
            variants["bf16"] = lambda: bf(xb)
        samples: dict[str, list[float]] = {k: [] for k in variants}
        cpu: dict[str, list[float]] = {k: [] for k in variants}
        with torch.inference_mode():
            for f in variants.values():
                for _ in range(warmup):
                    f()
            for _ in range(repeats):
                for k, f in variants.items():
                    c0, t0 = time.process_time(), time.perf_counter()
                    f()
                    samples[k].append(time.perf_counter() - t0)
                    cpu[k].append(time.process_time() - c0)
            ref, out = fp32(x), packed(x)
        lat = {k: _median_ms(v) for k, v in samples.items()}
        best_fp32 = "fp32" if lat["fp32"] <= lat["fp32_channels_last"] else "fp32_channels_last"
        result: dict = {
            "threads": threads,
            "batch": batch,
            "resolution": resolution,
            "repeats": repeats,
            "warmup": warmup,
            "latency_ms": lat,
            # process CPU time per forward: with 1 thread, the latency without the time other jobs took the core
            "cpu_time_ms": {k: _median_ms(v) for k, v in cpu.items()},
            # fastest repeat: on a shared machine the closest to the uncontended latency
            "latency_min_ms": {k: min(v) * 1e3 for k, v in samples.items()},
            "cpu_time_min_ms": {k: min(v) * 1e3 for k, v in cpu.items()},
            "fp32_best": best_fp32,
            "hard_sign_applied": hardened,
            "speedup": {"packed_vs_fp32": lat[best_fp32] / lat["packed"]},
            "max_abs_logit_diff": float((out.float() - ref.float()).abs().max()),
            "backend": backend_info() if report.backend.get("backend") == "native" else report.backend,
            "pack_report": report.to_dict(),
            "samples_ms": {k: [s * 1e3 for s in v] for k, v in samples.items()},
        }
        if "bf16" in lat:
            result["speedup"]["bf16_vs_fp32"] = lat[best_fp32] / lat["bf16"]
        if per_layer:
            fmodel = fp32 if best_fp32 == "fp32" else fp32_cl
            fx = x if best_fp32 == "fp32" else x_cl
            result["per_layer_ms"] = {
                "fp32": _per_layer(fmodel, fx, max(3, repeats // 2)),
                "packed": _per_layer(packed, x, max(3, repeats // 2)),
            }
        return result
    finally:
        torch.set_num_threads(old_threads)

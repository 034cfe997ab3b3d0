"""Packed binary conv throughput vs the XOR+popcount+add ceiling of this machine (1 thread by default).

The ceiling is a tight in-register loop in C (``ob_ceiling`` in ``onebit/kernels/csrc/ceiling.c``) with the
selected ISA's inner instruction mix, no memory traffic; a conv's binary MAC/s (output pixels x C_out x C_in x k²
per second, fused epilogue included: BN affine, PReLU, float output and the next layer's packed bits) is reported
as a percentage of it, the ceiling measured again right before each conv. Process CPU time (1 thread), so that
other jobs on a shared machine count less (they still share caches and, on SMT siblings, the core).

    python benchmarks/binary_conv.py          # writes benchmarks/results/binary_conv.json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import time
from pathlib import Path

import torch

from onebit.kernels import _native, backend_info
from onebit.kernels.ops import ConvEpilogue, binary_conv, pack_activations, pack_weight

SHAPES = [  # (C_in = C_out, H = W, k, stride)
    (256, 28, 3, 1),
    (256, 14, 3, 1),
    (512, 14, 3, 1),
    (512, 7, 3, 1),
    (1024, 7, 3, 1),
    (512, 14, 3, 2),
    (128, 56, 3, 1),
    (64, 112, 3, 1),
    (32, 112, 3, 1),
    (512, 14, 1, 1),
    (1024, 7, 1, 1),
]


def _clock(wall: bool):
    return time.perf_counter if wall else time.process_time


def ceiling(iters: int = 20_000_000, repeats: int = 5, wall: bool = False) -> float:
    """Median binary MAC/s of the in-register XOR+popcount+add loop of the selected ISA."""
    lib = _native.load()
    bits = ctypes.c_double()
    clock, rates = _clock(wall), []
    for r in range(repeats):
        t0 = clock()
        lib.ob_ceiling(iters, 12345 + r, ctypes.byref(bits))  # type: ignore[union-attr]
        rates.append(bits.value / (clock() - t0))
    return statistics.median(rates)


def conv_rate(c: int, hw: int, k: int, stride: int, repeats: int, wall: bool = False) -> tuple[float, float, float]:
    """(median seconds, binary MAC/s at the median, at the fastest repeat) of one fused packed conv (float output +
    packed bits of the next layer). On a loaded machine the fastest repeat is the better estimate of the kernel."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(1, c, hw, hw, generator=g), torch.randn(c, c, k, k, generator=g)
    pw, xp = pack_weight(w, stride, k // 2), pack_activations(x, pad=k // 2)
    ep = ConvEpilogue(scale=torch.rand(c, generator=g), bias=torch.randn(c, generator=g), slope=torch.rand(c))
    oh, ow = pw.out_size(hw, hw)
    macs = oh * ow * c * c * k * k
    n = max(3, int(2e8 / macs))  # about 0.2 G binary MACs per timing sample
    clock, times = _clock(wall), []
    for _ in range(2):
        binary_conv(xp, pw, (hw, hw), ep, bits_pad=1)
    for _ in range(repeats):
        t0 = clock()
        for _ in range(n):
            binary_conv(xp, pw, (hw, hw), ep, bits_pad=1)
        times.append((clock() - t0) / n)
    t = statistics.median(times)
    return t, macs / t, macs / min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--wall", action="store_true", help="wall clock instead of process CPU time")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "binary_conv.json"))
    args = ap.parse_args()
    if _native.load() is None:
        raise SystemExit(f"no compiled kernel: {backend_info()['reason']}")
    torch.set_num_threads(args.threads)
    wall = args.wall or args.threads > 1
    load = os.getloadavg()
    ceil = ceiling(wall=wall)
    print(f"ISA {backend_info()['isa']}: XOR+popcount+add ceiling {ceil / 1e9:.1f} G binary MAC/s ({args.threads} thr)")
    rows, ceilings = [], [ceil]
    for c, hw, k, s in SHAPES:
        # the ceiling again right before each conv: on a shared machine the load drifts, the ratio stays fair
        local = ceiling(iters=5_000_000, repeats=3, wall=wall)
        ceilings.append(local)
        t, rate, best = conv_rate(c, hw, k, s, args.repeats, wall)
        pct, pct_best = 100 * rate / local, 100 * best / local
        rows.append(
            {"c": c, "hw": hw, "k": k, "stride": s, "ms": t * 1e3, "gmacs": rate / 1e9, "ceiling_gmacs": local / 1e9,
             "pct": pct, "gmacs_best": best / 1e9, "pct_best": pct_best}
        )  # fmt: skip
        shape = f"{k}x{k} C={c:4d} {hw:3d}x{hw:<3d} s{s}"
        print(f"  {shape}: {t * 1e3:7.3f} ms  {rate / 1e9:6.1f} G/s  {pct:5.1f} % (best {pct_best:5.1f} %)")
    out = {
        "backend": backend_info(),
        "threads": args.threads,
        "clock": "wall" if wall else "process_cpu",
        "ceiling_gmacs": statistics.median(ceilings) / 1e9,
        "load_before": list(load),
        "load_after": list(os.getloadavg()),
        "convs": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

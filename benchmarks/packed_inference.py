"""End-to-end latency of the packed XOR-popcount engine vs the fastest fp32 eval of the same model (and bf16 where
the CPU has it): ``reactnet_a`` and ``bnext_tiny`` at 224x224, batch 1, on 1 and 2 threads.

fp32 baseline: weights binarized once up front, ``torch.sign`` as one op, ``torch.inference_mode``, the faster of
NCHW and channels_last (:func:`onebit.kernels.benchmark.bench_model`). Median of interleaved repeats after warm-up.
Both the wall clock and the process CPU clock are recorded: on a shared machine the wall clock includes time other
jobs held the core; with 1 thread the CPU clock is the forward's own compute. The load average is recorded too.

    python benchmarks/packed_inference.py                  # writes benchmarks/results/packed_inference.json
    python benchmarks/packed_inference.py --models reactnet_a --threads 1 --repeats 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from onebit.kernels import backend_info
from onebit.kernels.benchmark import bench_model
from onebit.models import create_model


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["reactnet_a", "bnext_tiny"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "packed_inference.json"))
    args = ap.parse_args()

    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = create_model(name).eval()
        for threads in args.threads:
            load_before = _load()
            r = bench_model(
                model,
                threads=threads,
                batch=args.batch,
                resolution=args.resolution,
                warmup=args.warmup,
                repeats=args.repeats,
            )
            r.update(model=name, load_before=load_before, load_after=_load())
            rows.append(r)
            best = r["fp32_best"]
            print(
                f"{name:12s} {threads} thr | wall fp32 {r['latency_ms'][best]:7.1f} ms packed "
                f"{r['latency_ms']['packed']:6.1f} ms = {r['speedup']['packed_vs_fp32']:.2f}x | cpu fp32 "
                f"{r['cpu_time_ms'][best]:7.1f} ms packed {r['cpu_time_ms']['packed']:6.1f} ms = "
                f"{r['cpu_time_ms'][best] / r['cpu_time_ms']['packed']:.2f}x | best cpu "
                f"{r['cpu_time_min_ms'][best] / r['cpu_time_min_ms']['packed']:.2f}x | load {load_before}",
                flush=True,
            )
    out = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "torch": torch.__version__,
        "backend": backend_info(),
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Batch throughput (images/s) of the packed XOR-popcount engine vs the fastest fp32 eval of the same model:
``reactnet_a`` and ``bnext_tiny`` at 224x224, batch 1, 16 and 64, on 1 and 2 threads.

Packed: the packed model through :class:`onebit.kernels.BatchRunner` (``--images-per-chunk``, default 1: the
batch as chunks of that many images, run concurrently on the threads, one kernel thread each; the configuration
that ran is in each row's ``packed_config``); ``packed_whole`` (``--packed-whole``) adds the packed model on the
whole batch in one call, for comparison. fp32 baseline as ``onebit bench`` (:mod:`onebit.kernels.benchmark`):
weights binarized once up front, ``torch.sign`` as one op, ``torch.inference_mode``, NCHW and channels_last, each
on the whole batch and through a ``BatchRunner`` of ``--fp32-chunks`` images (those below the batch; the same work
sharing as packed): the fastest of these *at each batch size and thread count* is ``fastest fp32``
(``fp32_best_variant``; ``fp32_best`` is its layout, ``fp32_best_chunk`` its chunk size or null for the whole
batch). BNext's progressive weight binarizers are set to their deployed hard-sign state first. Per
(model, threads, batch): warm-up forwards, then repeats that run every variant once in a rotating order; the table
gives medians (wall clock and, as a load-independent check with 1 thread, the process CPU clock). images/s =
batch / median latency. The load average before and after each row is recorded: on a shared machine, rows measured
under load are not comparable.

    python benchmarks/packed_throughput.py                          # writes benchmarks/results/packed_throughput.json
    python benchmarks/packed_throughput.py --models reactnet_a --threads 1 --batches 1 64 --repeats 7
    python benchmarks/packed_throughput.py --models reactnet_digits --resolution 16 --batches 1 2 --repeats 1 \\
        --warmup 0 --out /tmp/smoke.json                            # smoke run (seconds)

The real measurement takes about half an hour on a 2-core Zen 3 at the default settings (batch 64 in fp32 is
~10 s a forward for either model on one thread, and there are six fp32 variants at batch 64).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from onebit.kernels import BatchRunner, backend_info
from onebit.kernels.benchmark import (
    FP32_CHUNKS,
    cpu_info,
    fastest,
    float_variants,
    fp32_layout,
    harden_,
    packed_copy,
    time_variants,
)
from onebit.models import create_model
from onebit.models.io import input_channels


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def bench_row(
    model,
    packed: BatchRunner,
    *,
    batch: int,
    resolution: int,
    threads: int,
    warmup: int,
    repeats: int,
    bf16: bool,
    fp32_chunks: tuple[int, ...] = FP32_CHUNKS,
    packed_whole: bool = False,
):
    """One (model, threads, batch) row: latencies, CPU times and images/s of every variant."""
    torch.set_num_threads(threads)
    x = torch.randn(batch, input_channels(model), resolution, resolution, generator=torch.Generator().manual_seed(0))
    variants: dict[str, Callable[[], Tensor]] = {
        **float_variants(model, x, bf16=bf16, chunks=fp32_chunks),
        "packed": lambda: packed(x),
    }
    if packed_whole:
        variants["packed_whole"] = lambda: packed.model(x)
    load_before = _load()
    with torch.inference_mode():
        wall, cpu = time_variants(variants, warmup=warmup, repeats=repeats)  # type: ignore[arg-type]
    lat = {k: _ms(v) for k, v in wall.items()}
    best = fastest(lat)
    layout, chunk = fp32_layout(best)
    return {
        "threads": threads,
        "batch": batch,
        "resolution": resolution,
        "warmup": warmup,
        "repeats": repeats,
        "latency_ms": lat,
        "cpu_time_ms": {k: _ms(v) for k, v in cpu.items()},
        "latency_min_ms": {k: min(v) * 1e3 for k, v in wall.items()},
        "images_per_s": {k: batch * 1e3 / v for k, v in lat.items()},
        "fp32_best": layout,
        "fp32_best_chunk": chunk,
        "fp32_best_variant": best,
        "packed_config": packed.describe(batch, threads),
        "speedup": {"packed_vs_fp32": lat[best] / lat["packed"]},
        "cpu_speedup": {"packed_vs_fp32": _ms(cpu[best]) / _ms(cpu["packed"])},
        "samples_ms": {k: [s * 1e3 for s in v] for k, v in wall.items()},
        "load_before": load_before,
        "load_after": _load(),
    }


def table(rows: list[dict]) -> str:
    head = (
        f"{'model':<14} {'thr':>3} {'batch':>5} | {'fastest fp32':>24} {'img/s':>8} | {'packed ms':>10} "
        f"{'img/s':>8} {'chunk x wk':>10} | {'speed-up':>8} {'(cpu)':>6} | load"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        best = r["fp32_best_variant"]
        tag = ("cl" if r["fp32_best"] == "fp32_channels_last" else "nchw") + (
            f"/{r['fp32_best_chunk']}" if r["fp32_best_chunk"] else ""
        )
        pc = r["packed_config"]
        cfg = f"{pc['images_per_chunk']}x{pc['workers']}"
        lines.append(
            f"{r['model']:<14} {r['threads']:>3} {r['batch']:>5} | {r['latency_ms'][best]:>12.1f} ms {tag:>8} "
            f"{r['images_per_s'][best]:>8.1f} | {r['latency_ms']['packed']:>10.2f} "
            f"{r['images_per_s']['packed']:>8.1f} {cfg:>10} | "
            f"{r['speedup']['packed_vs_fp32']:>7.2f}x {r['cpu_speedup']['packed_vs_fp32']:>5.2f}x | {r['load_before']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["reactnet_a", "bnext_tiny"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--warmup", type=int, default=1, help="untimed forwards per variant and row (default 1)")
    ap.add_argument("--repeats", type=int, default=5, help="timed forwards per variant and row (default 5)")
    ap.add_argument("--bf16", action="store_true", help="add a bf16 channels_last variant (slow without bf16 hardware)")
    ap.add_argument("--backend", default=None, help="packed backend (default auto: the native kernel)")
    ap.add_argument(
        "--images-per-chunk", type=int, default=1, help="images per chunk of the packed BatchRunner (default 1)"
    )
    ap.add_argument(
        "--fp32-chunks",
        nargs="*",
        type=int,
        default=list(FP32_CHUNKS),
        help="chunk sizes of the chunked fp32 variants, those below the batch (default 1 8 16; none: whole batch)",
    )
    ap.add_argument("--packed-whole", action="store_true", help="also time the packed model on the whole batch")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "packed_throughput.json"))
    args = ap.parse_args(argv)
    if min(args.batches) < 1 or min(args.threads) < 1 or args.repeats < 1 or args.warmup < 0:
        ap.error("--batches, --threads, --repeats must be >= 1 and --warmup >= 0")
    if args.images_per_chunk < 1 or min(args.fp32_chunks, default=1) < 1:
        ap.error("--images-per-chunk and --fp32-chunks must be >= 1")

    old_threads = torch.get_num_threads()
    rows = []
    pack_reports = {}
    try:
        for name in args.models:
            torch.manual_seed(0)
            model = create_model(name).eval()
            hardened = harden_(model)
            packed, report = packed_copy(model, args.backend, images_per_chunk=args.images_per_chunk)
            pack_reports[name] = {**report.to_dict(), "hard_sign_applied": hardened}
            if report.float_layers:
                print(f"warning: {name}: {len(report.float_layers)} binary layer(s) stay in float", flush=True)
            for threads in args.threads:
                for batch in args.batches:
                    r = bench_row(
                        model,
                        packed,
                        batch=batch,
                        resolution=args.resolution,
                        threads=threads,
                        warmup=args.warmup,
                        repeats=args.repeats,
                        bf16=args.bf16,
                        fp32_chunks=tuple(args.fp32_chunks),
                        packed_whole=args.packed_whole,
                    )
                    r["model"] = name
                    rows.append(r)
                    print(table([r]).splitlines()[-1], flush=True)
    finally:
        torch.set_num_threads(old_threads)
    print()
    print(table(rows))
    out = {
        "benchmark": "packed_throughput",
        "machine": {"platform": platform.platform(), "cpu": cpu_info()},
        "torch": torch.__version__,
        "backend": backend_info(),
        "settings": vars(args),
        "pack_reports": pack_reports,
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()

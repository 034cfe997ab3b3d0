"""``onebit bench MODEL|RUN_DIR``: latency of the fp32 eval model, the packed engine and (if available) bf16.

Warm-up, interleaved repeats, medians; prints the ratios and a per-block breakdown and writes everything as JSON
(``--out``; default ``bench.json`` in a run/model directory, else ``bench-<model>.json`` in the working directory).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from onebit.commands.common import UsageError, load_model_arg
from onebit.kernels.benchmark import bench_model
from onebit.models.io import input_channels
from onebit.report import atomic_write_text

__all__ = ["NAME", "add_parser", "run"]

NAME = "bench"


def run(args: argparse.Namespace, console: Console) -> int:
    if args.threads < 1 or args.batch < 1 or args.resolution < 8 or args.repeats < 1:
        raise UsageError("--threads, --batch, --repeats must be >= 1 and --resolution >= 8")
    model, info = load_model_arg(args.model)
    res = bench_model(
        model,
        threads=args.threads,
        batch=args.batch,
        resolution=args.resolution,
        in_chans=input_channels(model),
        warmup=args.warmup,
        repeats=args.repeats,
        per_layer=not args.no_per_layer,
        backend=args.backend,
    )
    res["model"] = str(args.model)
    b = res["backend"]
    kernel = f"native {b['isa']} (OpenMP {'on' if b['openmp'] else 'off'})" if b["backend"] == "native" else "torch"
    console.print(f"packed kernel: {kernel}" + (f" — {b['reason']}" if b.get("reason") else ""))
    if res["hard_sign_applied"]:
        console.print("progressive weight binarizers set below their threshold (hard sign), as a trained model ends")
    t = Table(title=f"{args.model}: batch {args.batch}, {args.resolution}x{args.resolution}, {args.threads} thread(s)")
    t.add_column("variant")
    t.add_column("median ms", justify="right")
    t.add_column("vs fastest fp32", justify="right")
    best = res["latency_ms"][res["fp32_best"]]
    for k, v in res["latency_ms"].items():
        t.add_row(k, f"{v:.2f}", f"{best / v:.2f}x")
    console.print(t)
    console.print(f"packed / fp32 speed ratio: [bold]{res['speedup']['packed_vs_fp32']:.2f}x[/]")
    if res["pack_report"]["float_layers"]:
        console.print(f"[yellow]binary layers left in float:[/] {len(res['pack_report']['float_layers'])}")
    if "per_layer_ms" in res:
        pl = Table(title="per block (median ms)")
        pl.add_column("block")
        pl.add_column("fp32", justify="right")
        pl.add_column("packed", justify="right")
        pl.add_column("ratio", justify="right")
        f, p = res["per_layer_ms"]["fp32"], res["per_layer_ms"]["packed"]
        for k in f:
            pk = p.get(k)
            pl.add_row(k, f"{f[k]:.3f}", "-" if pk is None else f"{pk:.3f}", "-" if not pk else f"{f[k] / pk:.1f}x")
        console.print(pl)
    if args.out:
        out = Path(args.out)
    elif Path(args.model).is_dir():
        out = Path(args.model) / "bench.json"
    else:
        out = Path(f"bench-{Path(str(args.model)).name}.json")
    if args.no_samples:
        res.pop("samples_ms", None)
    atomic_write_text(out, json.dumps(res, indent=2) + "\n")
    console.print(f"Wrote {out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``bench`` to the ``onebit`` command line."""
    b = subparsers.add_parser(NAME, help="latency of fp32 eval vs the packed XOR-popcount engine (and bf16), with JSON")
    b.add_argument("model", help="registered model name, model directory or run directory")
    b.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads (default 1)")
    b.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    b.add_argument("--resolution", type=int, default=224, help="input side length (default 224)")
    b.add_argument("--warmup", type=int, default=3, help="untimed forwards per variant (default 3)")
    b.add_argument("--repeats", type=int, default=10, help="timed forwards per variant, interleaved (default 10)")
    b.add_argument("--backend", choices=["auto", "native", "torch"], default=None, help="packed backend")
    b.add_argument("--no-per-layer", action="store_true", help="skip the per-block breakdown")
    b.add_argument("--no-samples", action="store_true", help="leave the raw timing samples out of the JSON")
    b.add_argument("--out", help="JSON path (default bench.json in a run dir, else bench-<model>.json)")
    return b

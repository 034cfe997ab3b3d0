"""``onebit bench MODEL|RUN_DIR|PACKED.safetensors``: latency of the fp32 eval model, the packed engine and (if
available) bf16.

Warm-up, interleaved repeats, medians; prints the ratios and a per-block breakdown and writes everything as JSON
(``--out``; default ``bench.json`` in a run/model directory, else ``bench-<model>.json`` in the working directory).

A packed artefact (``onebit export ... --format packed``) is the deployable file: it is loaded with
:func:`onebit.export.load_packed`, and the packed engine runs on the 1-bit weights it holds. Every artefact names
the registered model it was exported from (metadata ``onebit.model``, :func:`onebit.export.packed_metadata`);
``load_packed`` rebuilds that model's fp32 eval form with the same weights, which is the float baseline of the
ratio (``--packed-only`` skips it). The input size defaults to the one the artefact records (``onebit export``
writes ``meta.input_size``), else 224.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from torch import nn

from onebit.commands.common import UsageError, load_model_arg
from onebit.export import load_packed, packed_metadata
from onebit.kernels.benchmark import bench_model
from onebit.models.io import input_channels
from onebit.report import atomic_write_text

__all__ = ["NAME", "add_parser", "run"]

NAME = "bench"


def _is_artefact(ref: str) -> bool:
    path = Path(ref)
    return path.suffix == ".safetensors" or path.is_file()


def _load(ref: str) -> tuple[nn.Module, dict[str, Any]]:
    """The model to time and what its source says: ``input_size`` (C, H, W) when known; for a packed artefact also
    ``artefact`` (path, the registered model it names, its user metadata)."""
    if not _is_artefact(ref):
        return load_model_arg(ref)
    model = load_packed(ref)  # ExportError (a user mistake: exit 2) for a missing, foreign or corrupt file
    meta = packed_metadata(ref)
    user = meta.get("meta") if isinstance(meta.get("meta"), dict) else {}
    info: dict[str, Any] = {"artefact": {"path": str(ref), "model": meta["model"], "meta": user}}
    size = user.get("input_size")
    if isinstance(size, list) and len(size) == 3 and all(isinstance(v, int) and v > 0 for v in size):
        info["input_size"] = size
    return model, info


def run(args: argparse.Namespace, console: Console) -> int:
    if args.threads < 1 or args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        raise UsageError("--threads, --batch, --repeats must be >= 1 and --warmup >= 0")
    if args.resolution is not None and args.resolution < 8:
        raise UsageError("--resolution must be >= 8")
    model, info = _load(args.model)
    size = info.get("input_size")
    resolution = args.resolution or (int(size[-1]) if size else 224)
    in_chans = int(size[0]) if size else input_channels(model)
    artefact = info.get("artefact")
    res = bench_model(
        model,
        threads=args.threads,
        batch=args.batch,
        resolution=resolution,
        in_chans=in_chans,
        warmup=args.warmup,
        repeats=args.repeats,
        per_layer=not args.no_per_layer,
        backend=args.backend,
        fp32=not args.packed_only,
    )
    res["model"] = str(args.model)
    if artefact is not None:
        res["artefact"] = artefact
        spec = artefact["model"]
        kw = spec.get("kwargs") or {}
        src = artefact["meta"].get("source")
        console.print(
            f"packed artefact {args.model}: model {spec.get('name')}{' ' + json.dumps(kw) if kw else ''}"
            + (f", exported from {src}" if src else "")
            + "; packed engine on its 1-bit weights"
            + ("" if args.packed_only else ", fp32 = the eval model load_packed rebuilds with the same weights")
        )
    b = res["backend"]
    kernel = (
        f"native {b['isa']} (OpenMP {'on' if b['openmp'] else 'off'})"
        if b["backend"] == "native"
        else str(b["backend"])
    )
    console.print(f"packed kernel: {kernel}" + (f" — {b['reason']}" if b.get("reason") else ""))
    if res["hard_sign_applied"]:
        console.print("progressive weight binarizers set below their threshold (hard sign), as a trained model ends")
    t = Table(title=f"{args.model}: batch {args.batch}, {resolution}x{resolution}, {args.threads} thread(s)")
    t.add_column("variant")
    t.add_column("median ms", justify="right")
    t.add_column("images/s", justify="right")
    best = res["latency_ms"][res["fp32_best"]] if res["fp32_best"] else None
    if best is not None:
        t.add_column("vs fastest fp32", justify="right")
    for k, v in res["latency_ms"].items():
        t.add_row(k, f"{v:.2f}", f"{res['images_per_s'][k]:.1f}", *([] if best is None else [f"{best / v:.2f}x"]))
    console.print(t)
    if best is not None:
        console.print(f"packed / fp32 speed ratio: [bold]{res['speedup']['packed_vs_fp32']:.2f}x[/]")
    if res["max_abs_logit_diff"] is not None:
        console.print(f"max |packed - fp32| logit difference: {res['max_abs_logit_diff']:.3g}")
    if res["pack_report"]["float_layers"]:
        console.print(f"[yellow]binary layers left in float:[/] {len(res['pack_report']['float_layers'])}")
    if "per_layer_ms" in res:
        pl = Table(title="per block (median ms)")
        pl.add_column("block")
        p = res["per_layer_ms"]["packed"]
        f = res["per_layer_ms"].get("fp32")
        if f is None:
            pl.add_column("packed", justify="right")
            for k, v in p.items():
                pl.add_row(k, f"{v:.3f}")
        else:
            pl.add_column("fp32", justify="right")
            pl.add_column("packed", justify="right")
            pl.add_column("ratio", justify="right")
            for k in f:
                pk = p.get(k)
                pk_s, ratio = ("-", "-") if pk is None else (f"{pk:.3f}", f"{f[k] / pk:.1f}x" if pk else "-")
                pl.add_row(k, f"{f[k]:.3f}", pk_s, ratio)
        console.print(pl)
    if args.out:
        out = Path(args.out)
    elif Path(args.model).is_dir():
        out = Path(args.model) / "bench.json"
    elif artefact is not None:
        out = Path(f"bench-{Path(args.model).stem}.json")
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
    b.add_argument(
        "model", help="registered model name, model directory, run directory or packed .safetensors (onebit export)"
    )
    b.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads (default 1)")
    b.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    b.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="input side length (default: the size the source records, else 224)",
    )
    b.add_argument("--warmup", type=int, default=3, help="untimed forwards per variant (default 3)")
    b.add_argument("--repeats", type=int, default=10, help="timed forwards per variant, interleaved (default 10)")
    b.add_argument("--backend", choices=["auto", "native", "torch", "int8"], default=None, help="packed backend")
    b.add_argument("--no-per-layer", action="store_true", help="skip the per-block breakdown")
    b.add_argument("--packed-only", action="store_true", help="time the packed model only (no fp32/bf16, no ratio)")
    b.add_argument("--no-samples", action="store_true", help="leave the raw timing samples out of the JSON")
    b.add_argument("--out", help="JSON path (default bench.json in a run dir, else bench-<model>.json)")
    return b

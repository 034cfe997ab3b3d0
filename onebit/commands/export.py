"""``onebit export MODEL|RUN_DIR --format packed|onnx --out FILE``: the packed 1-bit artefact or an ONNX graph.

``packed`` writes the safetensors artefact of :func:`onebit.export.export_packed` and prints its size against the
summary's #Param (MB); ``onnx`` writes the inference graph of :func:`onebit.export.export_onnx` and, when onnxruntime
is installed, checks its logits against the eval model on a random input.
"""

from __future__ import annotations

import argparse

import torch
from rich.console import Console
from rich.table import Table

from onebit.commands.common import load_model_arg
from onebit.export import compare_onnx, export_onnx, export_packed
from onebit.models.io import input_channels

__all__ = ["NAME", "add_parser", "run"]

NAME = "export"


def _input_size(model, info: dict, resolution: int | None) -> tuple[int, int, int]:
    if resolution:
        return (input_channels(model), resolution, resolution)
    size = info.get("input_size")
    return tuple(size) if size else (input_channels(model), 224, 224)  # type: ignore[return-value]


def _packed(args: argparse.Namespace, model, info: dict, console: Console) -> int:
    meta = {"source": str(args.model), "input_size": list(_input_size(model, info, args.resolution))}
    report = export_packed(model, args.out, meta=meta)
    table = Table(title=f"Packed artefact of {args.model}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("file", report["path"]),
        ("bytes", f"{report['bytes']:,}"),
        ("size (MiB)", f"{report['mib']:.3f}"),
        ("#Param (MB, 1-bit binary + fp32)", f"{report['param_mb']:.3f}"),
        ("size / #Param", f"{report['ratio']:.4f} ({100 * (report['ratio'] - 1):+.2f} %)"),
        ("binary layers (1 bit)", str(report["binary_layers"])),
    ]
    if report["quantized_layers"]:
        rows += [
            ("quantised layers (codes)", str(report["quantized_layers"])),
            ("#Param post-quant (MB)", f"{report['quantized_mb']:.3f}"),
            ("size / #Param post-quant", f"{report['ratio_quantized']:.4f}"),
        ]
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)
    return 0


def _onnx(args: argparse.Namespace, model, info: dict, console: Console) -> int:
    size = _input_size(model, info, args.resolution)
    # a missing onnx/onnxscript is an ExportError naming the extra (a user mistake: exit 2)
    report = export_onnx(model, args.out, (1, *size), opset=args.opset, dynamo=args.dynamo)
    console.print(f"Wrote {report['path']} ({report['bytes']:,} bytes, opset {report['opset']}, {report['exporter']})")
    if "ops" in report:
        console.print("ops: " + ", ".join(f"{k} {v}" for k, v in report["ops"].items()))
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        console.print('onnxruntime is not installed: no check against the eval model (pip install "onebit[onnx]")')
        return 0
    x = torch.randn(2, *size, generator=torch.Generator().manual_seed(0))
    diff = compare_onnx(model, args.out, x)
    ok = diff["rel"] <= 1e-5
    console.print(
        f"onnxruntime vs eval model: max |diff| {diff['max_abs_diff']:.3g} at logit scale {diff['logit_scale']:.3g} "
        f"(relative {diff['rel']:.3g}, {'ok' if ok else 'ABOVE'} 1e-5)"
    )
    return 0 if ok else 1


def run(args: argparse.Namespace, console: Console) -> int:
    model, info = load_model_arg(args.model)
    model.eval()
    return (_packed if args.format == "packed" else _onnx)(args, model, info, console)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``export`` to the ``onebit`` command line."""
    p = subparsers.add_parser(
        NAME, help="write the packed 1-bit artefact (safetensors) or the ONNX inference graph of a model"
    )
    p.add_argument("model", help="registered model name, model directory or run directory")
    p.add_argument("--format", choices=("packed", "onnx"), default="packed", help="artefact kind (default packed)")
    p.add_argument("--out", required=True, help="file to write (.safetensors or .onnx)")
    p.add_argument(
        "--resolution", type=int, help="input side length (default: the run's image size, else 224); ONNX tracing"
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--dynamo", action="store_true", help="use the torch.export-based ONNX exporter (needs onnxscript)")
    return p

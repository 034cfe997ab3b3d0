"""``onebit quantize RUN_DIR|MODEL --bits 8/8-4/8-4/8-8/8``: post-training quantisation with accuracy before/after.

Parses the options, calls :func:`onebit.train.ptq.quantize_model` (load, evaluate, quantise, calibrate, fine-tune,
evaluate, write the model directory and ``quantize.json``) and prints its numbers as a table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from onebit.commands.common import UsageError
from onebit.quantize import DEFAULT_BITS
from onebit.train.ptq import QuantizeResult, quantize_model

__all__ = ["NAME", "USER_ERRORS", "add_parser", "run"]

NAME = "quantize"
# a malformed --bits, an unknown model or data set name, and the quantiser's own checks of its inputs
USER_ERRORS = (ValueError, TypeError, KeyError)


def _table(result: QuantizeResult, args: argparse.Namespace) -> Table:
    rows = [("before (binary 1 bit, rest fp32)", result.before, result.size_mib["float"])]
    label = f"quantized {result.bits}"
    label += f", calibrated ({args.calibrate} batches)" if result.calibration else ", dynamic"
    rows.append((label, result.after, result.size_mib["quantized"]))
    if result.after_finetune is not None:
        label = f"+ fine-tuned {args.finetune_epochs} epoch(s), lr {args.lr:g}"
        rows.append((label, result.after_finetune, result.size_mib["quantized"]))
    table = Table(title=f"{args.model}: post-training quantisation (I-S-E-O W/A {result.bits}) on {result.data}")
    for col in ("model", "top-1 %", "top-5 %", "val loss", "#Param (MiB)"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, m, mib in rows:
        table.add_row(
            name, f"{100 * m['val_top1']:.2f}", f"{100 * m['val_top5']:.2f}", f"{m['val_loss']:.4f}", f"{mib:.4f}"
        )
    return table


def run(args: argparse.Namespace, console: Console) -> int:
    if args.calibrate < 0 or args.finetune_epochs < 0:
        raise UsageError(
            f"--calibrate and --finetune-epochs must be >= 0, got {args.calibrate}, {args.finetune_epochs}"
        )
    if args.out is None and not Path(args.model).is_dir():
        raise UsageError(f"{args.model!r} is a model name, not a directory: give --out")
    result = quantize_model(
        args.model,
        bits=args.bits,
        out_dir=args.out,
        calibrate_batches=args.calibrate,
        finetune_epochs=args.finetune_epochs,
        finetune_lr=args.lr,
        finetune_batches=args.finetune_batches,
        weight_scale=args.weight_scale,
        data=args.data,
        data_root=args.data_root,
        image_size=args.image_size,
        limit_val=args.limit_val,
        device=args.device,
    )
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(_table(result, args))
    out = result.out
    console.print(f"Wrote {out / 'model.safetensors'}, {out / 'model.json'} and {out / 'quantize.json'}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``quantize`` to the ``onebit`` command line."""
    p = subparsers.add_parser(
        NAME,
        help="post-training quantisation of stem, SE branch and classifier (BNext Table 7), accuracy before/after",
    )
    p.add_argument("model", help="run directory, model directory or registered model name")
    p.add_argument(
        "--bits",
        default=DEFAULT_BITS,
        help=f"I-S-E-O weight/activation bits: input conv, SE squeeze, SE expand, classifier (default {DEFAULT_BITS};"
        " 32 = float)",
    )
    p.add_argument(
        "--calibrate",
        type=int,
        default=0,
        metavar="N",
        help="static activation ranges from N training batches (default: dynamic per-sample ranges)",
    )
    p.add_argument("--finetune-epochs", type=int, default=0, metavar="E", help="fine-tune the quantised layers")
    p.add_argument("--finetune-batches", type=int, metavar="N", help="at most N batches per fine-tuning epoch")
    p.add_argument("--lr", type=float, default=1e-7, help="fine-tuning learning rate (AdamW, no decay; default 1e-7)")
    p.add_argument(
        "--weight-scale",
        type=float,
        default=2.0,
        help="weight scale = this x channel abs-mean (2 official code, 1 paper eq. 6)",
    )
    p.add_argument("--data", help="data set name (default: the run's data, else digits)")
    p.add_argument("--data-root", help="folder of an on-disk data set")
    p.add_argument("--image-size", type=int, help="image side length (default: the run's, else 16 for digits)")
    p.add_argument("--limit-val", type=int, default=0, help="evaluate on the first N validation samples only")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--out", help="output directory (default <MODEL>/quantized/<bits>)")
    return p

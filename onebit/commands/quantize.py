"""``onebit quantize RUN_DIR|MODEL --bits 8/8-4/8-4/8-8/8``: post-training quantisation with accuracy before/after.

Loads the model (:func:`onebit.models.io.load_model`), evaluates top-1/top-5 on the validation data (the run's data
for a run directory, else ``--data``, default the bundled digits), quantises it (:func:`onebit.quantize.quantize_`),
optionally calibrates static activation ranges and fine-tunes the quantised layers, evaluates again, prints a table
and writes the quantised model directory (``model.json`` + ``model.safetensors``, loadable by ``load_model``) and
``quantize.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["add_parser", "quantize_model"]


def _data_config(args: argparse.Namespace, model, info: dict[str, Any]):
    from onebit.config import DataConfig, load_json
    from onebit.models.io import input_channels

    run_dir = info.get("run_dir")
    if run_dir is not None and args.data is None:
        run_cfg = load_json(Path(run_dir) / "config.json")
        data, seed = run_cfg.data, run_cfg.seed
    else:
        size = (info.get("input_size") or [None, None, None])[1]
        name = args.data or "digits"
        chans = input_channels(model)
        data = DataConfig(
            name=name,
            root=args.data_root,
            image_size=size or (16 if name == "digits" else 224),
            channels=chans if name == "digits" and chans != 1 else 0,
        )
        seed = 0
    if args.image_size:
        data.image_size = args.image_size
    if args.limit_val:
        data.limit_val = args.limit_val
    if args.data_root:
        data.root = args.data_root
    return data, seed


def quantize_model(
    ref: str,
    bits: str,
    *,
    out: str | Path | None = None,
    calibrate_batches: int = 0,
    finetune_epochs: int = 0,
    finetune_lr: float = 1e-7,
    finetune_batches: int | None = None,
    weight_scale: float = 2.0,
    data_args: argparse.Namespace | None = None,
    device: str = "cpu",
    console: Console | None = None,
) -> dict[str, Any]:
    """What ``onebit quantize`` does; returns the report written to ``quantize.json``.

    Args:
        ref: run directory, model directory or registered model name.
        bits: I-S-E-O string.
        out: output directory (default ``<ref>/quantized/<bits>`` for a directory; required for a name).
        calibrate_batches: > 0: static activation ranges calibrated on this many training batches (else dynamic).
        finetune_epochs: epochs of :func:`onebit.quantize.finetune` on the training data (0: none).
        finetune_lr: its learning rate (BNext: 1e-7).
        finetune_batches: limit of batches per fine-tuning epoch.
        weight_scale: weight scale factor (2.0 official code, 1.0 paper eq. 6).
        data_args: ``data``, ``data_root``, ``image_size``, ``limit_val`` overrides (as the command's options).
        device: ``cpu``, ``cuda``, or ``auto``.
        console: where the table goes.
    """
    import torch

    from onebit.data import build_data
    from onebit.models.io import load_model, save_model_dir
    from onebit.analysis.complexity import quantized_size_mib
    from onebit.quantize import QuantConfig, calibrate, finetune, quantize_
    from onebit.report import atomic_write_text
    from onebit.train.loop import evaluate

    console = console or Console(width=120)
    if calibrate_batches < 0 or finetune_epochs < 0:
        raise ValueError(f"--calibrate and --finetune-epochs must be >= 0, got {calibrate_batches}, {finetune_epochs}")
    cfg = QuantConfig.from_bits(
        bits, weight_scale=weight_scale, activations="calibrated" if calibrate_batches > 0 else "dynamic"
    )
    path = Path(ref)
    if out is None:
        if not path.is_dir():
            raise ValueError(f"{ref!r} is a model name, not a directory: give --out")
        out = path / "quantized" / cfg.bits.replace("/", "_")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    model, info = load_model(ref)
    model.to(dev)
    data_args = data_args or argparse.Namespace(data=None, data_root=None, image_size=None, limit_val=0)
    data_cfg, seed = _data_config(data_args, model, info)
    data = build_data(data_cfg, seed)
    rows: list[tuple[str, dict[str, float], float]] = []
    before = evaluate(model, data.val, dev)
    rows.append(("before (binary 1 bit, rest fp32)", before, quantized_size_mib(model)))
    t0 = time.time()
    report = quantize_(model, cfg)
    if not any(v["role"] in ("squeeze", "expand") for v in report["layers"].values()):
        console.print("[yellow]note:[/] the model has no SE branch; the S and E bit widths are unused")
    ranges = calibrate(model, data.train, calibrate_batches, device=dev) if calibrate_batches > 0 else {}
    after = evaluate(model, data.val, dev)
    label = f"quantized {cfg.bits}" + (f", calibrated ({calibrate_batches} batches)" if ranges else ", dynamic")
    rows.append((label, after, quantized_size_mib(model)))
    tuned = None
    ft: dict[str, Any] | None = None
    if finetune_epochs > 0:
        ft = finetune(model, data.train, finetune_epochs, lr=finetune_lr, max_batches=finetune_batches, device=dev)
        tuned = evaluate(model, data.val, dev)
        rows.append((f"+ fine-tuned {finetune_epochs} epoch(s), lr {finetune_lr:g}", tuned, quantized_size_mib(model)))
    table = Table(title=f"{ref}: post-training quantisation (I-S-E-O W/A {cfg.bits}) on {data.description}")
    for col in ("model", "top-1 %", "top-5 %", "val loss", "#Param (MiB)"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, m, mib in rows:
        table.add_row(
            name, f"{100 * m['val_top1']:.2f}", f"{100 * m['val_top5']:.2f}", f"{m['val_loss']:.4f}", f"{mib:.4f}"
        )
    console.print(table)
    result = {
        "source": str(ref),
        "bits": cfg.bits,
        "config": cfg.to_dict(),
        "layers": report["layers"],
        "data": data.description,
        "before": before,
        "after": after,
        "after_finetune": tuned,
        "calibration": {k: list(v) for k, v in ranges.items()},
        "finetune": ft,
        "size_mib": {"float": rows[0][2], "quantized": rows[1][2]},
        "seconds": time.time() - t0,
    }
    out = save_model_dir(model.cpu(), out, extra={"quantize": {"bits": cfg.bits, "source": str(ref)}})
    atomic_write_text(out / "quantize.json", json.dumps(result, indent=2) + "\n")
    console.print(f"Wrote {out / 'model.safetensors'}, {out / 'model.json'} and {out / 'quantize.json'}")
    result["out"] = str(out)
    return result


def _cmd_quantize(args: argparse.Namespace, console: Console) -> int:
    from onebit.checkpoint import CheckpointError
    from onebit.config import ConfigError
    from onebit.models.io import ModelLoadError

    try:
        quantize_model(
            args.model,
            args.bits,
            out=args.out,
            calibrate_batches=args.calibrate,
            finetune_epochs=args.finetune_epochs,
            finetune_lr=args.lr,
            finetune_batches=args.finetune_batches,
            weight_scale=args.weight_scale,
            data_args=args,
            device=args.device,
            console=console,
        )
    except (ValueError, TypeError, ModelLoadError, ConfigError, CheckpointError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    except KeyError as e:
        console.print(f"[red]error:[/] {e.args[0]}")
        return 2
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``quantize`` to the ``onebit`` command line."""
    from onebit.quantize import DEFAULT_BITS

    p = subparsers.add_parser(
        "quantize",
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
    p.set_defaults(fn=_cmd_quantize)

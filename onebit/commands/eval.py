"""``onebit eval MODEL|RUN_DIR|PACKED_FILE --data DIR``: top-1 / top-5 and per-class accuracy on a labelled image set.

The model is a registered name, a model directory, a run directory (``--checkpoint``, default ``best``, else
``last``) or a packed ``.safetensors`` artefact; the data an ImageNet-layout folder or CIFAR python batches, read
with the model family's official evaluation transform (:mod:`onebit.data.preprocess`). The work is done by
:mod:`onebit.evaluate`; this module parses, shows progress and prints.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from onebit.commands.common import UsageError
from onebit.data.classes import imagenet_classes
from onebit.data.preprocess import PRESETS, Preprocess
from onebit.evaluate import (
    EvalError,
    LoadedModel,
    check_compatible,
    evaluate,
    load_eval_model,
    open_eval_data,
    resolve_preprocess,
)
from onebit.report import atomic_write_text
from onebit.train.distributed import device_for

__all__ = [
    "NAME",
    "USER_ERRORS",
    "add_model_options",
    "add_parser",
    "add_preprocess_options",
    "check_counts",
    "load",
    "preprocess_overrides",
    "run",
]

NAME = "eval"
USER_ERRORS = (EvalError,)


def _families_help() -> str:
    return "; ".join(f"{name}: {pre.describe()}" for name, pre in PRESETS.items())


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--checkpoint`` and ``--device`` (shared with ``onebit predict``)."""
    p.add_argument(
        "--checkpoint",
        default="best",
        help="run directories: checkpoint tag to load, e.g. best, last, stage2_step2 (default best; last when the run "
        "has no best checkpoint)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ... (default auto)")


def add_preprocess_options(p: argparse.ArgumentParser) -> None:
    """The preprocessing options (shared with ``onebit predict``)."""
    g = p.add_argument_group(
        "preprocessing",
        "default: the official evaluation of the model's family, known from the model's registry name (BNext models: "
        "bnext; ReActNet-A, AdamBNN, ReActNet ResNet-18, Bi-Real and other binary ResNets: reactnet); cifar for a "
        "run trained on CIFAR (and a model directory or packed file recording a 32 x 32 input and 10 or 100 "
        "classes) and always for CIFAR batches, which are never resized (image files are resized and cropped to 32). "
        f"Families: {_families_help()}. The options below override single fields.",
    )
    g.add_argument("--preset", choices=tuple(PRESETS), help="preprocessing family to use instead of the model's")
    g.add_argument("--resize", type=int, metavar="PX", help="resize the shorter side to PX pixels")
    g.add_argument("--crop", type=int, metavar="PX", help="centre crop PX x PX")
    g.add_argument("--interpolation", choices=("bilinear", "bicubic"), help="resize filter")
    g.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"), help="normalisation mean (of [0, 1] pixels)")
    g.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"), help="normalisation standard deviation")


def preprocess_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in ("resize", "crop", "interpolation", "mean", "std")}


def load(args: argparse.Namespace) -> LoadedModel:
    """The model of ``args.model`` (with ``args.checkpoint``)."""
    return load_eval_model(args.model, args.checkpoint)


def check_counts(args: argparse.Namespace) -> None:
    """Usage errors for a non-positive ``--batch-size`` or a negative ``--workers`` / ``--limit``."""
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    for name in ("workers", "limit"):
        if getattr(args, name, 0) < 0:
            raise UsageError(f"--{name} must be 0 or positive, got {getattr(args, name)}")


def run(args: argparse.Namespace, console: Console) -> int:
    check_counts(args)
    loaded = load(args)
    overrides = preprocess_overrides(args)
    data = open_eval_data(
        args.data,
        lambda kind: resolve_preprocess(loaded, kind, args.preset, **overrides),
        batch_size=args.batch_size,
        workers=args.workers,
        limit=args.limit,
        skip_unreadable=args.skip_unreadable,
        num_classes=loaded.num_classes,
    )
    check_compatible(loaded, data)
    device = device_for(args.device)
    show = not args.json and console.is_terminal
    with Progress(
        TextColumn("evaluating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not show,
        transient=True,
    ) as progress:
        task = progress.add_task("eval", total=data.num_samples)
        result = evaluate(
            loaded.model, data, len(data.classes), device=device, on_batch=lambda n: progress.advance(task, n)
        )
    names = list(imagenet_classes()) if len(data.classes) == 1000 and data.kind == "imagenet" else None
    report = {
        "model": loaded.describe(),
        "data": {"path": str(data.path), "kind": data.kind, "classes": len(data.classes), "limit": args.limit},
        "preprocess": data.preprocess.to_dict(),
        "device": str(device),
        **result.to_dict(data.classes, names),
    }
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report), flush=True)
        return 0
    _print(console, loaded, report, data.preprocess, args.per_class)
    return 0


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def _print(console: Console, loaded: LoadedModel, report: dict[str, Any], pre: Preprocess, per_class: bool) -> None:
    table = Table(title=f"onebit eval {loaded.ref}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    model = f"{loaded.name} ({loaded.kind}, {loaded.num_classes} classes)"
    rows = [("model", model)]
    if loaded.checkpoint:
        rows.append(("checkpoint", loaded.checkpoint + (f" ({loaded.note})" if loaded.note else "")))
    data = report["data"]
    rows += [
        ("data", f"{data['path']} ({data['kind']}, {data['classes']} classes)"),
        ("preprocessing", f"{pre.family}: {pre.describe()}"),
        ("images", f"{report['images']:,}"),
        ("top-1", f"{_pct(report['top1'])} ({report['top1_correct']:,})"),
    ]
    if report["top5"] is not None:
        rows.append(("top-5", f"{_pct(report['top5'])} ({report['top5_correct']:,})"))
    speed = f", {report['images_per_s']:.1f} images/s" if report["images_per_s"] else ""
    rows.append(("time", f"{report['time_s']:.2f} s{speed} on {report['device']}"))
    if report["skipped"]:
        rows.append(("skipped (unreadable)", str(len(report["skipped"]))))
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)
    if per_class:
        pc = Table(title="Per-class accuracy")
        for col in ("index", "class", "name", "images", "top-1", "top-5"):
            pc.add_column(col, justify="right" if col in ("index", "images", "top-1", "top-5") else "left")
        for r in report["per_class"]:
            pc.add_row(
                str(r["index"]),
                r.get("class", ""),
                r.get("name", ""),
                str(r["images"]),
                _pct(r.get("top1")),
                _pct(r.get("top5")),
            )
        console.print(pc)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``eval`` to the ``onebit`` command line."""
    p = subparsers.add_parser(
        NAME,
        help="top-1 / top-5 / per-class accuracy of a model, run or packed file on an image folder or CIFAR",
        description="Evaluate a model on a labelled image set: top-1, top-5 (with 5 classes or more), per-class "
        "accuracy, the number of images and the time.",
    )
    p.add_argument(
        "model",
        help="registered model name, model directory, run directory or packed .safetensors file (onebit export)",
    )
    p.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="ImageNet layout: DIR/val/<class>/* when DIR has a val folder, else DIR/<class>/* (class folders in "
        "sorted order = class indices); or CIFAR python batches: cifar-10-batches-py / cifar-100-python or its "
        "parent (the test split)",
    )
    add_model_options(p)
    p.add_argument("--batch-size", type=int, default=100, help="images per batch (default 100)")
    p.add_argument(
        "--workers",
        type=int,
        default=min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1),
        help="image decoding worker processes (default: 4, or the usable CPUs when fewer; 0 = inline)",
    )
    p.add_argument("--limit", type=int, default=0, metavar="N", help="evaluate N evenly spaced images (default 0: all)")
    p.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="leave unreadable image files out (counted in the result) instead of stopping with an error",
    )
    p.add_argument("--per-class", action="store_true", help="also print the per-class accuracy table")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables (no progress bar)")
    p.add_argument("--out", metavar="FILE", help="also write the JSON result to FILE (atomically)")
    add_preprocess_options(p)
    return p

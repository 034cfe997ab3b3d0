"""``onebit predict MODEL IMAGE...``: the top-5 classes of each image with their probabilities.

Class names: ImageNet's for a 1000-class model, the CIFAR names for a run trained on CIFAR, else class indices. The
images go through the model family's evaluation transform, as in ``onebit eval`` (:mod:`onebit.data.preprocess`).
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from onebit.commands.common import UsageError
from onebit.commands.eval import add_model_options, add_preprocess_options, load, preprocess_overrides
from onebit.evaluate import EvalError, class_names_for, predict_images, resolve_preprocess
from onebit.train.distributed import device_for

__all__ = ["NAME", "USER_ERRORS", "add_parser", "run"]

NAME = "predict"
USER_ERRORS = (EvalError,)


def run(args: argparse.Namespace, console: Console) -> int:
    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    loaded = load(args)
    pre = resolve_preprocess(loaded, None, args.preset, **preprocess_overrides(args))
    names = class_names_for(loaded)
    device = device_for(args.device)
    preds = predict_images(
        loaded.model, args.images, pre, k=args.top, device=device, names=names, batch_size=args.batch_size
    )
    if args.json:
        report = {
            "model": loaded.describe(),
            "preprocess": pre.to_dict(),
            "device": str(device),
            "predictions": [p.to_dict() for p in preds],
        }
        print(json.dumps(report), flush=True)
        return 0
    title = f"{loaded.name} ({loaded.kind}, {loaded.num_classes} classes); {pre.family}: {pre.describe()}"
    console.print(title)
    for p in preds:
        table = Table(title=p.image, title_justify="left")
        table.add_column("rank", justify="right")
        table.add_column("class", justify="right")
        if p.names is not None:
            table.add_column("name")
        table.add_column("probability", justify="right")
        for rank, (idx, prob) in enumerate(zip(p.indices, p.probs), start=1):
            row = [str(rank), str(idx), *([p.names[rank - 1]] if p.names is not None else []), f"{100 * prob:.2f} %"]
            table.add_row(*row)
        console.print(table)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``predict`` to the ``onebit`` command line."""
    p = subparsers.add_parser(
        NAME,
        help="top-5 classes (ImageNet names for 1000-class models) and probabilities of image files",
        description="Classify image files: per image the top classes, their names (ImageNet's for a 1000-class "
        "model, the CIFAR names for a run trained on CIFAR, else indices only) and softmax probabilities.",
    )
    p.add_argument(
        "model",
        help="registered model name, model directory, run directory or packed .safetensors file (onebit export)",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    p.add_argument("--top", type=int, default=5, metavar="K", help="classes per image (default 5)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    add_model_options(p)
    add_preprocess_options(p)
    return p

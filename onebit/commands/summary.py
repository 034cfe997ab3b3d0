"""``onebit summary MODEL``: parameters (#Param MB), BOPs, FLOPs and OPs of a model, in the papers' units, at the input
size the model was trained at (a run directory's image size, that of the run a quantised model directory came from,
16x16 for the digits models, else 224x224; ``onebit.analysis.runs.recorded_input_size``)."""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from onebit.analysis.complexity import complexity, format_table
from onebit.analysis.runs import recorded_input_size
from onebit.models.io import input_channels, load_model

__all__ = ["NAME", "USER_ERRORS", "add_parser", "run"]

NAME = "summary"
USER_ERRORS = (OSError, ValueError)  # an unreadable or malformed model file


def run(args: argparse.Namespace, console: Console) -> int:
    model, info = load_model(args.model)
    if args.resolution:
        size = (input_channels(model), args.resolution, args.resolution)
    else:
        size = recorded_input_size(args.model, model, info)
    report = complexity(model, size)
    if args.json:
        print(json.dumps({"model": str(args.model), "input_size": list(size), **report.to_dict(args.per_layer)}))
    else:
        console.print(format_table(report, per_layer=args.per_layer, title=f"{args.model} at {size}"))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``summary`` to the ``onebit`` command line."""
    s = subparsers.add_parser(NAME, help="parameters (#Param MB), BOPs, FLOPs and OPs of a model, in the papers' units")
    s.add_argument("model", help="registered model name, model directory (import-official) or run directory")
    s.add_argument("--resolution", type=int, help="input side length (default: the recorded one, see above)")
    s.add_argument("--per-layer", action="store_true", help="one row per conv/linear layer")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return s

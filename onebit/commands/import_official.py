"""``onebit import-official LAYOUT CHECKPOINT --out DIR``: a checkpoint released with the papers as a model
directory (``model.safetensors`` + ``model.json``)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from onebit.analysis.complexity import complexity, format_table
from onebit.commands.common import UsageError
from onebit.models.io import save_model_dir
from onebit.models.official import LAYOUTS, load_official

__all__ = ["NAME", "USER_ERRORS", "add_parser", "run"]

NAME = "import-official"
# an unknown layout (KeyError), an unreadable file (OSError), a malformed checkpoint or option (ValueError, TypeError)
USER_ERRORS = (KeyError, OSError, ValueError, TypeError)


def _options(items: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--option expects KEY=VALUE, got {item!r}")
        options[key] = int(value) if value.lstrip("-").isdigit() else value
    return options


def run(args: argparse.Namespace, console: Console) -> int:
    model = load_official(args.layout, args.checkpoint, strict=not args.lenient, **_options(args.option))
    out = save_model_dir(model, args.out, extra={"layout": args.layout, "source": str(args.checkpoint)})
    console.print(format_table(complexity(model, (3, 224, 224)), title=f"{args.layout} (imported)"))
    console.print(f"Wrote {out / 'model.safetensors'} and {out / 'model.json'}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``import-official`` to the ``onebit`` command line."""
    i = subparsers.add_parser(NAME, help="import a checkpoint released with the papers into a model directory")
    i.add_argument(
        "layout",
        help=f"official layout, a name in onebit.models.LAYOUTS: {', '.join(LAYOUTS.list())}",
    )
    i.add_argument("checkpoint", help=".pth/.pth.tar/.pt (read with weights_only=True) or .safetensors")
    i.add_argument("--out", required=True, help="directory for model.safetensors + model.json")
    i.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="layout option, e.g. se_bits=4 for bnext_tiny_quant / bnext18_quant (repeatable)",
    )
    i.add_argument("--lenient", action="store_true", help="warn about extra keys instead of failing")
    return i

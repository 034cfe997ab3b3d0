"""``onebit analyze RUN_DIR``: the AdamBNN §3 figures (saturation, CAM, update CAM, latent peaks, FF/C2I)."""

from __future__ import annotations

import argparse

from rich.console import Console

from onebit.analysis.analyze import analyze_run
from onebit.commands.common import UsageError

__all__ = ["NAME", "add_parser", "run"]

NAME = "analyze"


def run(args: argparse.Namespace, console: Console) -> int:
    if args.samples < 1:
        raise UsageError("--samples must be at least 1")
    analyze_run(args.run_dir, out_dir=args.out, samples=args.samples, console=console, log_y=args.log_y)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``analyze`` to the ``onebit`` command line."""
    p = subparsers.add_parser(
        NAME,
        help="figures of a run's optimisation dynamics (AdamBNN Figs. 3-5, 7; FF/C2I) and a per-stage table",
    )
    p.add_argument("run_dir", help="a run directory written by `onebit train`")
    p.add_argument("--out", help="output directory (default RUN_DIR/analysis)")
    p.add_argument("--samples", type=int, default=256, help="validation samples for the activation histograms")
    p.add_argument("--log-y", action="store_true", help="log count axis for the latent-weight distribution")
    return p

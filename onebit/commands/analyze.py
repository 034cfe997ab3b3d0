"""``onebit analyze RUN_DIR``: the AdamBNN §3 figures (saturation, CAM, update CAM, latent peaks, FF/C2I)."""

from __future__ import annotations

import argparse

from rich.console import Console

__all__ = ["add_parser"]


def _cmd_analyze(args: argparse.Namespace, console: Console) -> int:
    from onebit.analysis.analyze import analyze_run
    from onebit.checkpoint import CheckpointError
    from onebit.config import ConfigError

    if args.samples < 1:
        console.print("[red]error:[/] --samples must be at least 1")
        return 2
    try:
        analyze_run(args.run_dir, out_dir=args.out, samples=args.samples, console=console, log_y=args.log_y)
    except (FileNotFoundError, ConfigError, CheckpointError) as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``analyze`` to the ``onebit`` command line."""
    p = subparsers.add_parser(
        "analyze",
        help="figures of a run's optimisation dynamics (AdamBNN Figs. 3-5, 7; FF/C2I) and a per-stage table",
    )
    p.add_argument("run_dir", help="a run directory written by `onebit train`")
    p.add_argument("--out", help="output directory (default RUN_DIR/analysis)")
    p.add_argument("--samples", type=int, default=256, help="validation samples for the activation histograms")
    p.add_argument("--log-y", action="store_true", help="log count axis for the latent-weight distribution")
    p.set_defaults(fn=_cmd_analyze)

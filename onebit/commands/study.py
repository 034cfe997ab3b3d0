"""``onebit study NAME``: the AdamBNN findings reproduced on the bundled digits (see ``onebit.studies``)."""

from __future__ import annotations

import argparse

from rich.console import Console

from onebit.studies import STUDIES, run_study

__all__ = ["NAME", "USER_ERRORS", "add_parser", "run"]

NAME = "study"
USER_ERRORS = (KeyError,)  # an unknown study name


def run(args: argparse.Namespace, console: Console) -> int:
    if args.name == "list":
        for s in STUDIES.values():
            console.print(f"[bold]{s.name}[/]: {s.title}")
        return 0
    run_study(
        args.name,
        seeds=args.seeds,
        root=args.runs,
        docs=args.docs,
        console=console,
        epochs=args.epochs,
        overrides=args.override,
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``study`` to the ``onebit`` command line."""
    p = subparsers.add_parser(NAME, help="run a small-scale reproduction study (`onebit study list`)")
    p.add_argument("name", help="study name, or `list`")
    p.add_argument("--seeds", type=int, default=3, help="seeds per variant (default 3)")
    p.add_argument("--epochs", type=int, help="epochs per stage (default: the study's)")
    p.add_argument("--runs", default="runs/studies", help="where the runs go (finished runs are reused)")
    p.add_argument(
        "--override",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override applied to every run of the study, teachers included (repeatable)",
    )
    p.add_argument("--docs", default="docs/studies", help="where the markdown report and figures go")
    return p

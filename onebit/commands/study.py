"""``onebit study NAME|all|list|index``: the papers' claims checked on the bundled digits (see ``onebit.studies``)."""

from __future__ import annotations

import argparse

from rich.console import Console

from onebit.studies import STUDIES, run_all, run_study, write_index

__all__ = ["NAME", "USER_ERRORS", "add_parser", "run"]

NAME = "study"
USER_ERRORS = (KeyError,)  # an unknown study name


def run(args: argparse.Namespace, console: Console) -> int:
    if args.name == "list":
        for s in STUDIES.values():
            console.print(f"[bold]{s.name}[/]: {s.title} ({len(s.variants(s.epochs))} variants × {s.seeds} seeds)")
        return 0
    if args.name == "index":
        console.print(f"Index: [bold]{write_index(args.docs)}[/]")
        return 0
    if args.name == "all":
        if args.epochs:
            raise KeyError("--epochs applies to one study; `onebit study all` runs each study at its own budget")
        path = run_all(
            root=args.runs, docs=args.docs, console=console, smoke=args.smoke, seeds=args.seeds, overrides=args.override
        )
        console.print(f"Index: [bold]{path}[/]")
        return 0
    run_study(
        args.name,
        seeds=args.seeds,
        root=args.runs,
        docs=args.docs,
        console=console,
        epochs=args.epochs,
        overrides=args.override,
        smoke=args.smoke,
    )
    write_index(args.docs)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``study`` to the ``onebit`` command line."""
    p = subparsers.add_parser(
        NAME,
        help="check the papers' claims on the digits (`onebit study list`; `all` regenerates every report)",
    )
    p.add_argument("name", help="study name, `all` (every study, then the index), `index` (rewrite it) or `list`")
    p.add_argument("--seeds", type=int, help="seeds per variant (default: the study's, 3 or 5)")
    p.add_argument("--epochs", type=int, help="epochs per stage (default: the study's)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="the smoke budget: one seed, a few epochs on 32 images; checks the pipeline, its verdicts mean nothing",
    )
    p.add_argument("--runs", default="runs/studies", help="where the runs go (finished runs are reused)")
    p.add_argument(
        "--override",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override applied to every run of the study, teachers included (repeatable)",
    )
    p.add_argument("--docs", default="docs/studies", help="where the markdown reports, figures and index go")
    return p

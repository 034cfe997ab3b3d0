"""``onebit runs summarize DIR...``: validation top-1 / top-5 of several runs (seeds) as mean ± std, BNext Table 10
style. The numbers come from :func:`onebit.analysis.runs.summarize_runs`; this module prints them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from onebit.analysis.runs import RunsReport, format_markdown, mean_std_text, summarize_runs
from onebit.checkpoint import RunDirError
from onebit.report import atomic_write_text

__all__ = ["NAME", "add_parser", "print_report", "run", "warn", "write_report"]

NAME = "runs"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def _runs_table(report: RunsReport, title: str) -> Table:
    """One row per run, one top-1 and one top-5 column per stage (the layout of BNext Table 10)."""
    stages = [(row["index"], row["stage"]) for row in report.rows if row["index"] is not None]
    t = Table(title=title)
    t.add_column("run")
    t.add_column("seed", justify="right")
    for _, name in stages:
        t.add_column(f"{name} top-1 %", justify="right")
        t.add_column(f"{name} top-5 %", justify="right")
    for r in report.runs:
        results = {(j, s.get("name")): s for j, s in enumerate(r.stage_results())}
        cells = []
        for key in stages:
            s = results.get(key, {})
            cells += [_pct(s.get("val_top1")), _pct(s.get("val_top5"))]
        t.add_row(str(r.path), str(r.seed), *cells)
    return t


def _aggregate_table(report: RunsReport) -> Table:
    t = Table(title=f"mean ± std over {len(report.runs)} run(s) (sample std, n − 1)")
    for col in ("stage", "n", "val top-1 %", "min", "max", "val top-5 %", "min", "max"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for row in report.rows:
        t1, t5 = row["val_top1"], row["val_top5"]
        t.add_row(
            str(row["stage"]),
            str(row["n"]),
            mean_std_text(t1),
            _pct(t1["min"]),
            _pct(t1["max"]),
            mean_std_text(t5),
            _pct(t5["min"]),
            _pct(t5["max"]),
        )
    return t


def warn(report: RunsReport) -> None:
    """The report's warnings on stderr (stdout stays the table or the JSON)."""
    err = Console(stderr=True, width=120)
    for r in report.excluded:
        err.print(f"[yellow]warning:[/] left out {r.path}: {r.problem}")
    if report.differences:
        keys = ", ".join(report.differences)
        err.print(f"[yellow]warning:[/] the runs' configs differ in more than the seed: {keys}")


def print_report(report: RunsReport, console: Console, title: str = "Runs") -> None:
    """The per-run table and the aggregate table (the runs left out and differing configs: :func:`warn`)."""
    if report.runs:
        console.print(_runs_table(report, title))
        console.print(_aggregate_table(report))


def write_report(report: RunsReport, path: str | Path, title: str = "Runs") -> Path:
    """Write the report to ``path``: markdown when it ends in ``.md``, else JSON."""
    path = Path(path)
    text = format_markdown(report, title) if path.suffix == ".md" else json.dumps(report.to_dict(), indent=2) + "\n"
    return atomic_write_text(path, text)


def run(args: argparse.Namespace, console: Console) -> int:
    report = summarize_runs(args.dirs, strict=args.strict)
    if not report.runs:
        left = "; ".join(f"{r.path}: {r.problem}" for r in report.excluded)
        raise RunDirError(f"no complete run to summarize ({left})")
    warn(report)
    if args.out:
        write_report(report, args.out)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2), flush=True)
    else:
        print_report(report, console)
        if args.out:
            console.print(f"Wrote {args.out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``runs`` (with its action ``summarize``) to the ``onebit`` command line."""
    p = subparsers.add_parser(NAME, help="several runs of a recipe (seeds): mean ± std of their results")
    actions = p.add_subparsers(dest="runs_action", metavar="ACTION", required=True)
    s = actions.add_parser(
        "summarize",
        help="val top-1/top-5 per stage over runs: mean ± std (sample, n − 1), n, min, max (BNext Table 10)",
    )
    s.add_argument("dirs", nargs="+", metavar="DIR", help="run directories, or folders holding them (e.g. OUT/seed*)")
    s.add_argument("--json", action="store_true", help="print JSON instead of tables")
    s.add_argument(
        "--out", metavar="FILE", help="also write the report to FILE (markdown if FILE ends in .md, else JSON)"
    )
    s.add_argument("--strict", action="store_true", help="fail when the runs' configs differ in anything but the seed")
    return p

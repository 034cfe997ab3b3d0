"""``onebit train [RECIPE] [KEY=VALUE ...] [--smoke] [--seeds N]``: run a recipe (default: the AdamBNN two-step
recipe on the digits); with ``--seeds N``, N runs of it (seeds ``seed`` .. ``seed + N - 1``) into ``OUT/seed<k>/``,
then their mean ± std (:mod:`onebit.analysis.runs`)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from rich.console import Console

from onebit.analysis.runs import plan_seed_runs, seed_configs, summarize_runs
from onebit.commands.common import UsageError
from onebit.commands.runs import print_report, warn, write_report
from onebit.config import RunConfig, apply_overrides
from onebit.recipes import DEFAULT_RECIPE, get_recipe
from onebit.train import TrainingDiverged
from onebit.train import run as run_recipe
from onebit.train.distributed import launched_world_size

__all__ = ["NAME", "TORCHRUN", "USER_ERRORS", "add_parser", "run", "run_seeds"]

NAME = "train"
TORCHRUN = True  # under torchrun every rank reaches the same errors and decisions: rank 0 reports them
USER_ERRORS = (KeyError,)  # an unknown recipe name


def run(args: argparse.Namespace, console: Console) -> int:
    if os.environ.get("RANK", "0") != "0":
        console = Console(quiet=True)
    recipe, overrides = args.recipe, list(args.overrides)
    if recipe is not None and "=" in recipe:  # `onebit train key=value` without a recipe name
        overrides.insert(0, recipe)
        recipe = None
    if args.seeds is not None and args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    if args.resume:
        if recipe or overrides or args.smoke or args.seeds is not None:
            raise UsageError(
                "--resume continues a run with its own config.json; give no recipe/overrides/--smoke/--seeds "
                "(to continue a --seeds job, run the same --seeds command again)"
            )
        run_recipe(None, resume=args.resume, console=console)
        return 0
    cfg = apply_overrides(get_recipe(recipe or DEFAULT_RECIPE, smoke=args.smoke), overrides)
    if args.seeds is None:
        run_recipe(cfg, out_dir=args.out, console=console)
        return 0
    if launched_world_size() > 1:  # torchrun's store cannot host a second process group in the same job
        raise UsageError(
            "--seeds trains the seeds in one process, not under torchrun; start one torchrun job per seed "
            "(... -m onebit train RECIPE seed=K --out OUT/seedK) and then run `onebit runs summarize OUT`"
        )
    out = Path(args.out) if args.out else Path("runs") / f"{cfg.recipe}-seeds-{time.strftime('%Y%m%d-%H%M%S')}"
    return run_seeds(cfg, args.seeds, out, console)


def run_seeds(cfg: RunConfig, n: int, out: Path, console: Console) -> int:
    """Train ``cfg`` with seeds ``cfg.seed`` .. ``cfg.seed + n - 1`` one after another into ``out/seed<k>/``, then
    write ``out/aggregate.json`` and ``out/aggregate.md`` and print the aggregate. Run again, the same command skips
    the completed (or diverged) seeds and resumes the unfinished one. Returns 1 if a seed diverged (now or in an
    earlier invocation), else 0."""
    plans = plan_seed_runs(seed_configs(cfg, n), out)
    diverged = []
    for plan in plans:
        console.rule(f"seed {plan.seed} of {cfg.seed}..{cfg.seed + n - 1}: {plan.path}")
        if plan.action == "skip":
            console.print(f"{plan.path}: {plan.why}; not trained again")
            if plan.why == "already diverged":
                diverged.append(plan.seed)
            continue
        try:
            if plan.action == "resume":
                run_recipe(None, resume=plan.path, console=console)
            else:
                run_recipe(plan.config, out_dir=plan.path, console=console)
        except TrainingDiverged as e:  # the other seeds still run; this one is left out of the aggregate
            console.print(f"[red]seed {plan.seed}: {e}[/]")
            diverged.append(plan.seed)
    report = summarize_runs([p.path for p in plans])
    title = f"{cfg.recipe}: {n} seed(s) in {out}"
    write_report(report, out / "aggregate.json", title)
    write_report(report, out / "aggregate.md", title)
    warn(report)
    print_report(report, console, title)
    console.print(f"Wrote {out / 'aggregate.json'} and {out / 'aggregate.md'}")
    if diverged:
        console.print(f"[red]diverged: seed(s) {', '.join(map(str, diverged))}[/]")
    return 1 if diverged else 0


class _IntermixedParser(argparse.ArgumentParser):
    """The ``train`` parser: the options may stand between the recipe and its overrides
    (``onebit train RECIPE --smoke key=value``). A plain parser hands its positionals out greedily at the first run of
    them, so the overrides after ``--smoke`` would be left over as unrecognised; this one parses the options first and
    the positionals after (``parse_known_intermixed_args``), which is what ``onebit``'s parser calls on a subcommand.
    """

    _inner = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._inner:  # parse_known_intermixed_args calls back here (its two passes, before Python 3.13)
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``train`` to the ``onebit`` command line."""
    t = subparsers.add_parser(
        NAME,
        help="train a recipe (default: the AdamBNN two-step recipe on the bundled digits); "
        "several processes: torchrun --nproc_per_node N -m onebit train ...",
    )
    t.__class__ = _IntermixedParser  # the subparsers action builds every subcommand with onebit's parser class
    t.add_argument("recipe", nargs="?", help="recipe name (see `onebit recipes`); default adambnn_digits")
    t.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. stages.1.epochs=3 data.batch_size=32")
    t.add_argument("--smoke", action="store_true", help="the recipe's tiny variant (seconds on a CPU)")
    t.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="train N runs, seeds seed..seed+N-1 (seed= overrides the first, default the recipe's), into OUT/seed<k>/, "
        "then print their mean ± std (as `onebit runs summarize OUT`); the same command again continues them "
        "(one process: not under torchrun)",
    )
    t.add_argument("--out", help="run directory (default runs/<recipe>-<time>; with --seeds the folder of the runs)")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    return t

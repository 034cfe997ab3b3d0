"""``onebit train [RECIPE] [KEY=VALUE ...]``: run a recipe (default: the AdamBNN two-step recipe on the digits)."""

from __future__ import annotations

import argparse
import os

from rich.console import Console

from onebit.commands.common import UsageError
from onebit.config import apply_overrides
from onebit.recipes import DEFAULT_RECIPE, get_recipe
from onebit.train import run as run_recipe

__all__ = ["NAME", "TORCHRUN", "USER_ERRORS", "add_parser", "run"]

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
    if args.resume:
        if recipe or overrides or args.smoke:
            raise UsageError("--resume continues a run with its own config.json; give no recipe/overrides/--smoke")
        cfg = None
    else:
        cfg = apply_overrides(get_recipe(recipe or DEFAULT_RECIPE, smoke=args.smoke), overrides)
    run_recipe(cfg, out_dir=args.out, resume=args.resume, console=console)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``train`` to the ``onebit`` command line."""
    t = subparsers.add_parser(
        NAME,
        help="train a recipe (default: the AdamBNN two-step recipe on the bundled digits); "
        "several processes: torchrun --nproc_per_node N -m onebit train ...",
    )
    t.add_argument("recipe", nargs="?", help="recipe name (see `onebit recipes`); default adambnn_digits")
    t.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. stages.1.epochs=3 data.batch_size=32")
    t.add_argument("--smoke", action="store_true", help="the recipe's tiny variant (seconds on a CPU)")
    t.add_argument("--out", help="run directory (default runs/<recipe>-<time>)")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    return t

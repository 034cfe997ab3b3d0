"""``onebit recipes``: the recipes with their headers (command, cost, expected result)."""

from __future__ import annotations

import argparse

from rich.console import Console

from onebit.recipes import list_recipes, recipe_header

__all__ = ["NAME", "add_parser", "run"]

NAME = "recipes"


def run(args: argparse.Namespace, console: Console) -> int:
    for name in list_recipes():
        console.rule(name)
        console.print(recipe_header(name))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``recipes`` to the ``onebit`` command line."""
    return subparsers.add_parser(NAME, help="list the recipes with their headers")

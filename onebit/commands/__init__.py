"""The ``onebit`` subcommands, one module each, listed in :data:`COMMANDS` (the order of ``onebit --help``).

A command module defines ``NAME``, ``add_parser(subparsers) -> ArgumentParser`` (adds the subcommand with its
options) and ``run(args, console) -> int`` (parses nothing more, calls library functions, prints; raises on error),
and optionally ``USER_ERRORS`` and ``TORCHRUN`` (see :class:`onebit.commands.common.Command`). ``onebit.cli.main``
builds the parser from :data:`COMMANDS`, dispatches and owns the one error path.
"""

from __future__ import annotations

from onebit.commands import (
    analyze,
    bench,
    eval,
    export,
    import_official,
    landscape,
    predict,
    quantize,
    recipes,
    rehearse,
    runs,
    study,
    summary,
    teachers,
    toy_landscape,
    train,
)
from onebit.commands.common import Command

__all__ = ["COMMANDS"]

COMMANDS: tuple[Command, ...] = (
    train,
    summary,
    import_official,
    recipes,
    rehearse,
    analyze,
    bench,
    export,
    eval,
    predict,
    landscape,
    quantize,
    runs,
    study,
    teachers,
    toy_landscape,
)

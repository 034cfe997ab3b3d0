"""``onebit`` command line: builds the parser from :data:`onebit.commands.COMMANDS`, dispatches, and owns the one
error path (see :mod:`onebit.commands.common`)."""

from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console

from onebit import __version__
from onebit.commands import COMMANDS
from onebit.commands.common import USER_ERRORS, error_message
from onebit.train import RunInterrupted, TrainingDiverged

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``onebit`` parser: ``--version`` and one subcommand per module of ``COMMANDS`` (its ``_command``)."""
    p = argparse.ArgumentParser(prog="onebit", description="Train, analyse, compress and run binary neural networks.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command")
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(_command=command)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``onebit ARGV`` and return its exit code.

    0 success; 2 a user mistake (a usage error, or a library error of ``USER_ERRORS`` or of the command's own
    ``USER_ERRORS``): one ``error: <message>`` line on stderr; 130 interrupted (Ctrl-C): its message on stderr; 1
    training diverged: its message on stderr. Any other exception propagates with its traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    # logs and pipes get a fixed wide console so tables are not wrapped at rich's 80-column fallback
    console = Console() if sys.stdout.isatty() else Console(width=120)
    if args.version:
        console.print(f"onebit {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    command = args._command
    # under torchrun every rank reaches the same errors (they are shared): rank 0 reports them
    quiet = getattr(command, "TORCHRUN", False) and os.environ.get("RANK", "0") != "0"

    def report(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    try:
        return command.run(args, console)
    except USER_ERRORS + getattr(command, "USER_ERRORS", ()) as e:
        report(f"error: {error_message(e)}")
        return 2
    except (KeyboardInterrupt, RunInterrupted) as e:
        report(str(e) or "interrupted")
        return 130
    except TrainingDiverged as e:
        report(str(e))
        return 1


if __name__ == "__main__":
    sys.exit(main())

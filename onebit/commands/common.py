"""What the subcommands share: the user-mistake exception and the library errors that count as user mistakes.

``onebit.cli.main`` owns the only error path. A command raises; ``main`` turns

* a user mistake (:data:`USER_ERRORS`, plus the command module's own ``USER_ERRORS`` tuple) into one
  ``error: <message>`` line on stderr and exit code 2,
* Ctrl-C (:class:`KeyboardInterrupt`, :class:`onebit.train.RunInterrupted`) into its message on stderr and 130,
* :class:`onebit.train.TrainingDiverged` into its message on stderr and 1,

and lets anything else propagate with its traceback.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from torch import nn

from onebit.analysis.landscape import LandscapeError
from onebit.checkpoint import CheckpointError
from onebit.config import ConfigError
from onebit.data import DataSetError
from onebit.export import ExportError
from onebit.models.io import ModelLoadError, load_model
from onebit.models.official import OfficialCheckpointError
from onebit.train import RunDirError

__all__ = ["USER_ERRORS", "Command", "UsageError", "error_message", "load_model_arg"]


class UsageError(Exception):
    """A mistake in the command line (a bad option value, a missing option): exit code 2, no traceback."""


#: Library errors that report a user's mistake (bad config, unknown or unreadable model, run directory, checkpoint,
#: data set, file): exit code 2 with their message, whatever the command.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UsageError,
    ConfigError,
    RunDirError,
    ModelLoadError,
    CheckpointError,
    OfficialCheckpointError,
    ExportError,
    LandscapeError,
    DataSetError,
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


class Command(Protocol):
    """A subcommand module (listed in ``onebit.commands.COMMANDS``).

    ``USER_ERRORS`` (optional, a module constant): further exception types that, raised by this command, are user
    mistakes, e.g. the ``KeyError`` of an unknown recipe name or the ``ValueError`` of a malformed ``--bits``.
    ``TORCHRUN`` (optional): the command runs under torchrun, where every rank reaches the same errors; only rank 0
    (``RANK`` unset or ``0``) reports them.
    """

    NAME: str

    def add_parser(self, subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser: ...

    def run(self, args: argparse.Namespace, console: Console) -> int: ...


def error_message(e: BaseException) -> str:
    """The text of an error for one ``error:`` line (a ``KeyError``'s message without the quotes of its repr)."""
    if isinstance(e, KeyError) and len(e.args) == 1:
        return str(e.args[0])
    return str(e) or type(e).__name__


def load_model_arg(ref: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`onebit.models.io.load_model` of a command-line argument: an unreadable or malformed model file
    (``OSError``, ``ValueError``) is the user's mistake, reported as a :class:`UsageError`."""
    try:
        return load_model(ref)
    except (OSError, ValueError) as e:
        if isinstance(e, USER_ERRORS):
            raise
        raise UsageError(str(e)) from e

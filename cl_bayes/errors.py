"""Errors that mean "the input was wrong": reported as one clear message, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad configuration or missing input; the message says what was wrong and how to fix it."""


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work."""


class DataNotFoundError(UserError, FileNotFoundError):
    """The data set is not on disk and could not be downloaded."""


class TrainingDiverged(UserError, FloatingPointError):
    """The training loss became NaN or infinite, or exploded by orders of magnitude."""


def exit_on_user_error(main: Callable[[], object]) -> None:
    """Run a script's ``main()``; a :class:`UserError` ends it with its one line on stderr.

    Exit status 2, as for a bad command-line argument. Any other exception keeps its
    traceback: it is a bug, not bad input.
    """
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)

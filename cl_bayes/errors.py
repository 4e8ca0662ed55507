"""Errors that mean "the input was wrong": reported as one clear message, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad configuration or missing input; the message says what was wrong and how to fix it."""


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work."""


class DataNotFoundError(UserError, FileNotFoundError):
    """The data set is not on disk and could not be downloaded."""


class TrainingDiverged(UserError, FloatingPointError):
    """The training loss became NaN or infinite, or exploded by orders of magnitude."""

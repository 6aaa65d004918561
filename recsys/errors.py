"""Errors that reach the user as one clear message (the CLI prints them without a traceback)."""

from __future__ import annotations


class RecsysError(Exception):
    """Base class: something the user can fix, said in words that name what and where."""


class ConfigError(RecsysError):
    """A setting or the configuration file is invalid."""


class MigrationError(RecsysError):
    """The database schema cannot be brought up to date safely."""


class InputFileError(RecsysError):
    """An input file cannot be read at all; nothing of it was loaded."""


class GenerateError(RecsysError):
    """Synthetic data cannot be generated or written as asked, or a ground truth file is unusable."""

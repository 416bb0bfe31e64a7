"""The errors a user can act on. The CLI prints these as one line and exits 2; anything else is a bug
and keeps its traceback.

Each subclasses the builtin a caller would have caught before (ValueError, FileExistsError, ...),
so ``except ValueError`` around library calls keeps working.
"""
from __future__ import annotations


class KbitError(Exception):
    """Base of every error whose message tells the user what to change."""


class ConfigError(KbitError, ValueError):
    """A config value out of range, an unknown key or name, or a combination that cannot run."""


class KGFormatError(KbitError, ValueError):
    """Bad input data; the message names the file, the line and what was expected."""


class UnknownNameError(KbitError, KeyError):
    """An entity or relation name that the KG does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class RunFolderError(KbitError, FileExistsError):
    """A run folder that cannot be used as asked: it holds another run, foreign files, or is locked."""


class RunFileError(KbitError, ValueError):
    """A file in a run folder that is missing, truncated, of another format or of another run."""


class UnsafeFileError(RunFileError):
    """A file in a format whose reading can run code (a pickle): refused unread; ``kbit-dgl migrate``
    converts a folder its owner trusts."""


class MissingRunFileError(KbitError, FileNotFoundError):
    """A run folder, or a file a run folder must hold, that is not there."""


class NonFiniteError(KbitError, ArithmeticError):
    """NaN or infinite weights or scores: such a model must never produce a metric."""


class TrainingDivergedError(NonFiniteError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is kept."""

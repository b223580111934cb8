"""Errors that the runtime raises before torch is imported (the CLI takes its locks first).

>>> issubclass(CheckpointError, ValueError)
True
"""

from __future__ import annotations

import pickle

__all__ = ["CheckpointError", "UnsafeCheckpointError"]


class CheckpointError(ValueError):
    """A file that is not a usable streamnn checkpoint; the message (one line) names the file,
    what is wrong and what to do."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A checkpoint holding pickled Python objects (code): refused, nothing of it was run."""

"""Atomic, versioned checkpoints that never unpickle arbitrary objects.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, written with
`torch.save` to a temporary file in the target folder, fsynced, renamed over the target and the
folder fsynced; it is read back with `torch.load(weights_only=True)`, which refuses to build any
object other than those plain types.

>>> import tempfile, os, torch
>>> path = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
>>> save_checkpoint({"w": torch.ones(2), "offset": 7}, path)
>>> load_checkpoint(path)["offset"]
7
"""

from __future__ import annotations

import os
import tempfile

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "FORMAT"]

FORMAT = "streamnn-checkpoint/1"


def save_checkpoint(state: dict, path) -> None:
    """Write `state` to `path` atomically: a crash leaves either the old or the new file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    payload = {"format": FORMAT, **state}
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint` (plain types only; no code runs)."""
    state = torch.load(os.fspath(path), map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a streamnn checkpoint (expected format {FORMAT!r})")
    return state

"""Atomic, versioned, checksummed checkpoints that never unpickle arbitrary objects.

A checkpoint file is one header line, ``streamnn-checkpoint/2 <sha256> <length>``, followed by
`length` bytes written by `torch.save`: a plain dict of tensors, numbers, strings, lists and
dicts. It is written to a temporary file in the target folder (``.tmp-*``), fsynced, renamed
over the target and the folder fsynced; the file it replaces is kept as ``<name>.prev.pt``.
Reading checks the header, the length and the checksum, unpickles with
``torch.load(weights_only=True)`` (plain types only: no code runs) and refuses a state whose
weights, optimizer state or scaler statistics are not finite.

Every refusal is a `CheckpointError` (a ValueError) whose message is one line: the file, what
is wrong and what to do. Files of the first format (``streamnn-checkpoint/1``: a bare
`torch.save` zip, no checksum) are still read, without a checksum to verify.

>>> import tempfile, os, torch
>>> path = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
>>> save_checkpoint({"w": torch.ones(2), "offset": 7}, path)
>>> load_checkpoint(path)["offset"]
7
>>> with open(path, "r+b") as f:          # one flipped byte in the body
...     _ = f.seek(-5, 2); _ = f.write(b"?")
>>> try:
...     load_checkpoint(path)
... except CheckpointError as e:
...     print("checksum" in str(e), "\\n" in str(e))
True False
>>> is_temp_file(".tmp-k2j4.pt"), is_temp_file("sensors-1a2b3c4d.pt"), previous_path("a/x.pt")
(True, False, 'a/x.prev.pt')
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
import pickle
import re
import tempfile
import time

import numpy as np
import torch

from .errors import CheckpointError, UnsafeCheckpointError

__all__ = ["save_checkpoint", "load_checkpoint", "loads_checkpoint", "CheckpointError",
           "UnsafeCheckpointError", "FORMAT", "LEGACY_FORMAT", "TEMP_PREFIX", "is_temp_file",
           "is_previous", "is_checkpoint_file", "previous_path", "remove_temp_files"]

FORMAT = "streamnn-checkpoint/2"
LEGACY_FORMAT = "streamnn-checkpoint/1"   # torch.save zip without a header (read, never written)
MAGIC = FORMAT.encode()
TEMP_PREFIX = ".tmp-"                     # files being written; a kill mid-write leaves them
PREV_SUFFIX = ".prev.pt"
_ZIP = b"PK\x03\x04"
# sub-trees of a learner state whose numbers must all be finite (a NaN there ruins the model)
_FINITE_KEYS = ("module", "optimizer", "scaler")


def is_temp_file(name) -> bool:
    """True for a file `save_checkpoint` is writing (or left behind when killed mid-write)."""
    return os.path.basename(os.fspath(name)).startswith(TEMP_PREFIX)


def is_previous(name) -> bool:
    """True for the previous checkpoint kept beside a checkpoint (``<name>.prev.pt``)."""
    return os.fspath(name).endswith(PREV_SUFFIX)


def is_checkpoint_file(name) -> bool:
    """True for a current checkpoint file: ``*.pt``, neither a temp file nor a previous one."""
    name = os.fspath(name)
    return name.endswith(".pt") and not is_temp_file(name) and not is_previous(name)


def previous_path(path) -> str:
    """Where `save_checkpoint(state, path)` keeps the file it replaces."""
    path = os.fspath(path)
    return (path[:-3] if path.endswith(".pt") else path) + PREV_SUFFIX


# -- writing ---------------------------------------------------------------------------------

def save_checkpoint(state: dict, path, keep_previous: bool = True) -> None:
    """Write `state` to `path` atomically: a crash leaves either the old or the new file.

    Steps: 1 numpy scalars become Python numbers (a learner fed numpy values keeps some; pickled,
    the loader would refuse them) and a non-finite learner state is refused; 2 serialize and checksum; 3 write a locked temp
    file and fsync it; 4 keep the current file as ``<name>.prev.pt`` (a hard link: `path`
    exists at every moment); 5 rename the temp file over `path`; 6 fsync the folder.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    payload = _plain({"format": FORMAT, **{k: v for k, v in state.items() if k != "format"}})
    bad = _nonfinite(payload)                                          # 1
    if bad:
        raise CheckpointError(f"{path}: not written, the state to save has non-finite values in {bad}; "
                              "the model is damaged (the previous checkpoint stays as it is)")
    buf = io.BytesIO()                                                 # 2
    torch.save(payload, buf)
    body = buf.getbuffer()
    header = f"{FORMAT} {hashlib.sha256(body).hexdigest()} {len(body)}\n".encode()
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:                                 # 3
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)   # `remove_temp_files` skips a file being written
            f.write(header)
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and os.path.exists(path):                     # 4
            _keep_previous(path, folder)
        os.replace(tmp, path)                                          # 5
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)                                                 # 6


def _keep_previous(path: str, folder: str) -> None:
    link = os.path.join(folder, f"{TEMP_PREFIX}{os.getpid()}-{time.monotonic_ns()}.prev")
    try:
        os.link(path, link)
    except OSError as e:   # a file system without hard links: copy instead
        if e.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        with open(path, "rb") as src, open(link, "wb") as dst:
            dst.write(src.read())
            dst.flush()
            os.fsync(dst.fileno())
    os.replace(link, previous_path(path))


def _fsync_dir(folder: str) -> None:
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def remove_temp_files(folder, shared: bool = False) -> list:
    """Delete the temp files a kill mid-write left in `folder`; returns their paths.

    With `shared` (other processes may be writing checkpoints there), a temp file is removed
    only when no writer holds its lock and it is older than 5 seconds.
    """
    folder = os.fspath(folder)
    try:
        names = [n for n in os.listdir(folder) if is_temp_file(n)]
    except FileNotFoundError:
        return []
    removed = []
    for name in names:
        p = os.path.join(folder, name)
        try:
            if shared and not _abandoned(p):
                continue
            os.unlink(p)
            removed.append(p)
        except FileNotFoundError:   # renamed by its writer meanwhile
            pass
    return removed


def _abandoned(p: str) -> bool:
    if time.time() - os.stat(p).st_mtime < 5:
        return False
    with open(p, "rb") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
    return True


# -- reading ---------------------------------------------------------------------------------

def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint` (plain types only; no code runs).

    Raises `CheckpointError` (one line) for a file that is missing, unreadable, foreign,
    damaged, or whose learner state is not finite.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e}); check the path") from None
    return loads_checkpoint(data, path, map_location)


def loads_checkpoint(data: bytes, path: str = "<bytes>", map_location="cpu") -> dict:
    """`load_checkpoint` for the bytes of a file (`path` only names it in messages)."""
    if data.startswith(MAGIC):
        state = _torch_load(_verified_body(data, path), path, map_location)
        fmt = FORMAT
    elif data.startswith(_ZIP):
        state = _torch_load(data, path, map_location)
        fmt = LEGACY_FORMAT
    elif data.startswith(b"streamnn-checkpoint/"):
        fmt = data[:40].split(b" ")[0].decode("ascii", "replace")
        raise CheckpointError(f"{path}: written in format {fmt!r}, this streamnn reads {FORMAT!r} and "
                              f"{LEGACY_FORMAT!r}; upgrade streamnn to read it")
    else:
        raise CheckpointError(f"{path}: not a streamnn checkpoint ({_what_it_is(data)}); expected a file "
                              "written by learner.save() or the streamnn runtime")
    if not isinstance(state, dict) or state.get("format") != fmt:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: a torch file but not a streamnn checkpoint (format {got!r}, "
                              f"expected {fmt!r}); expected a file written by learner.save() or the "
                              "streamnn runtime")
    bad = _nonfinite(state)
    if bad:
        raise CheckpointError(f"{path}: damaged, non-finite values in {bad}; {_remedy(path)}")
    return state


def _verified_body(data: bytes, path: str) -> memoryview:
    end = data.find(b"\n", 0, 200)
    parts = data[:end].decode("ascii", "replace").split(" ") if end > 0 else []
    if len(parts) != 3 or parts[0] != FORMAT or not parts[2].isdigit():
        raise CheckpointError(f"{path}: damaged header ({data[:60]!r}); {_remedy(path)}")
    body = memoryview(data)[end + 1:]
    if len(body) != int(parts[2]):
        raise CheckpointError(f"{path}: truncated or damaged ({len(body)} bytes after the header, "
                              f"{parts[2]} written); {_remedy(path)}")
    if hashlib.sha256(body).hexdigest() != parts[1]:
        raise CheckpointError(f"{path}: damaged (checksum mismatch); {_remedy(path)}")
    return body


def _torch_load(data, path: str, map_location):
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:   # weights_only refused an object: never run it
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        culprit = f" ({found.group(1)})" if found else ""
        raise UnsafeCheckpointError(f"{path}: refused, it holds pickled Python objects{culprit}, which a "
                                    "streamnn checkpoint never does (nothing of it was run); "
                                    + _remedy(path)) from None
    except Exception as e:  # noqa: BLE001 - torch raises many kinds on a damaged file
        first = _first_line(f"{type(e).__name__}: {e}")
        raise CheckpointError(f"{path}: damaged or truncated torch file ({first}); {_remedy(path)}") from None


def _first_line(text: str, containing: str = "") -> str:
    for line in text.splitlines():
        line = line.strip()
        if line and containing in line and "weights_only" not in line:
            return line[:160]
    return ""


def _remedy(path: str) -> str:
    prev = previous_path(path)
    if os.path.exists(prev) and os.path.abspath(prev) != os.path.abspath(path):
        return (f"the previous checkpoint is kept: restore it with `mv {prev} {path}`, or start over "
                "with `streamnn run CONFIG --fresh`")
    return "restore it from a backup, or start over with `streamnn run CONFIG --fresh` (runtime checkpoints)"


def _what_it_is(data: bytes) -> str:
    if not data:
        return "the file is empty"
    if data[:1] == b"\x80":
        return "it is a bare Python pickle; it was not unpickled"
    head = data[:200]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"it starts with binary bytes {data[:8]!r}"
    first = text.splitlines()[0] if text.strip() else ""
    return f"it is text, starting with {first[:40]!r}"


def _plain(v):
    """`v` with every numpy scalar in its dicts, lists and tuples replaced by the Python number
    of the same value (float64, int64 and bool_ convert exactly); the rest as it is."""
    if isinstance(v, dict):
        return {k: _plain(i) for k, i in v.items()}
    if type(v) in (list, tuple):
        out = [_plain(i) for i in v]
        return out if type(v) is list else tuple(out)
    if isinstance(v, np.generic):
        return v.item()
    return v


def _nonfinite(state, where: str = "") -> str:
    """The first place in `state` (a checkpoint or learner state) where a weight, an optimizer
    statistic or a scaler statistic is not finite, or ''."""
    if isinstance(state, dict):
        for k, v in state.items():
            if k == "params":   # constructor parameters, not learned state
                continue
            here = f"{where}.{k}" if where else str(k)
            if isinstance(k, str) and any(s in k for s in _FINITE_KEYS):
                bad = _first_nonfinite(v, here)
            else:
                bad = _nonfinite(v, here)
            if bad:
                return bad
    elif isinstance(state, list):
        for i, v in enumerate(state):
            bad = _nonfinite(v, f"{where}[{i}]")
            if bad:
                return bad
    return ""


def _first_nonfinite(v, where: str) -> str:
    if torch.is_tensor(v):
        if v.is_floating_point() or v.is_complex():   # x * 0 is 0 unless x is inf or NaN; a sum
            return "" if v.numel() == 0 or bool((v * 0).sum() == 0) else where   # is 20x isfinite.all
        return ""
    if isinstance(v, dict):   # plain numbers are settings (a clip of inf is fine); statistics are tensors
        for k, i in v.items():
            bad = _first_nonfinite(i, f"{where}.{k}")
            if bad:
                return bad
    elif isinstance(v, (list, tuple)):
        for n, i in enumerate(v):
            bad = _first_nonfinite(i, f"{where}[{n}]")
            if bad:
                return bad
    return ""

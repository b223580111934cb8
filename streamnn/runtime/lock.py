"""One owner per run folder and per checkpoint folder: `fcntl.flock` on ``<folder>/.streamnn.lock``
(and on each JSONL output file outside the run folder, the file itself).

A second `streamnn run` of the same config finds the lock taken and stops at once, before it
opens an output file or reads a checkpoint, with a message naming the holder's pid. The lock
dies with its process (a `kill -9` frees it); the file itself stays.

Members of one Kafka consumer group may share a checkpoint folder (each partition has its own
checkpoint file and the loop fences stale writers), so they take it *shared*; anything that
needs the folder alone (a file or river source, ``state_per = "global"``, ``--fresh``, which
deletes the checkpoints) takes it *exclusive*. The run folder (outputs, metrics) is always
exclusive.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> first = FolderLock(d, "run folder")
>>> try:
...     FolderLock(d, "run folder")
... except FolderInUseError as e:
...     print(f"pid {os.getpid()}" in str(e))
True
>>> first.release(); FolderLock(d, "run folder").release()   # free again
"""

from __future__ import annotations

import json
import logging
import os
import time

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None

from ..errors import CheckpointError

__all__ = ["FolderLock", "OutputLock", "FolderInUseError", "LOCK_NAME", "holders", "lock_folders"]

LOCK_NAME = ".streamnn.lock"
log = logging.getLogger("streamnn.runtime")


class FolderInUseError(CheckpointError):
    """Another process holds the folder (the message names its pid and what to do)."""


class FolderLock:
    """Hold ``<folder>/.streamnn.lock`` (created with the folder) until `release()` or exit.

    Parameters
    ----------
    folder
        The folder to own.
    what
        Its role in messages ("run folder", "checkpoint folder").
    shared
        Take the lock shared (several consumer-group members) instead of exclusive.
    """

    def __init__(self, folder, what: str = "folder", shared: bool = False):
        self.folder, self.what, self.shared = os.fspath(folder), what, shared
        os.makedirs(self.folder, exist_ok=True)
        self._lock(os.path.join(self.folder, LOCK_NAME), write_pid=not shared)

    def _lock(self, path: str, write_pid: bool) -> None:
        self.path = path
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:  # pragma: no cover
            return
        try:
            fcntl.flock(self._fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            pids = holders(self.path) or ["unknown"]
            os.close(self._fd)
            self._fd = None
            raise FolderInUseError(self._refusal(pids)) from None
        except OSError as e:   # a file system without locks: say so, and go on unlocked
            log.warning("cannot lock %s (%s): nothing stops a second process from using %s",
                        self.path, e, self.folder)
            return
        if write_pid:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, json.dumps({"pid": os.getpid(), "since": time.time()}).encode() + b"\n", 0)

    def _refusal(self, pids) -> str:
        who = ", ".join(f"pid {p}" for p in pids)
        if self.what == "output file":
            return (f"the output file {self.folder} is being written by another streamnn process ({who}); "
                    "stop that process first (`kill PID`), or give this run its own output path")
        if self.shared:
            why = "another streamnn process owns it alone"
        else:
            why = "another streamnn process uses it"
        return (f"the {self.what} {self.folder} is in use ({why}: {who}); stop that process first "
                "(`kill PID`), or give this run its own folder ([run] dir / [checkpoint] dir)")

    def release(self) -> None:
        """Give the folder up (closing the lock file; the file stays)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def __del__(self):
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class OutputLock(FolderLock):
    """Hold an output file itself (exclusive `flock` on it; created empty if missing): one writer
    per file, for outputs outside the run folder."""

    def __init__(self, path):
        self.folder, self.what, self.shared = os.fspath(path), "output file", False
        os.makedirs(os.path.dirname(os.path.abspath(self.folder)), exist_ok=True)
        self._lock(self.folder, write_pid=False)


def holders(path) -> list:
    """The pids holding a flock on `path`: from /proc/locks (Linux), else the pid the last
    exclusive holder wrote into the file."""
    try:
        ino = os.stat(path).st_ino
        pids = []
        with open("/proc/locks") as f:
            for line in f:
                parts = line.split()
                if "->" in parts:   # a process waiting for the lock, not holding it
                    continue
                if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == str(ino):
                    pids.append(int(parts[4]))
        if pids:
            return sorted(set(pids))
    except (OSError, ValueError):
        pass
    try:
        with open(path) as f:
            return [int(json.loads(f.readline())["pid"])]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def lock_folders(cfg, fresh: bool = False, replay_file: str | None = None) -> list:
    """Own the folders a run writes to (`FolderLock`), before any of them is touched.

    The run folder is locked exclusively, and so is each JSONL output file outside it; the
    checkpoint folder too, except that members of one Kafka consumer group with per-partition
    state may share it (without `fresh`, which deletes the checkpoints). Raises
    `FolderInUseError` naming the holder's pid. Call it early (before slow imports) and pass
    the result to `Pipeline(locks=...)`.
    """
    ck = cfg.checkpoint
    kafka = replay_file is None and cfg.source.get("type") == "kafka"
    shared_ck = kafka and cfg.run["state_per"] == "stream" and ck["resume"] and not fresh
    run_dir, ck_dir = _real(cfg.run["dir"]), _real(ck["dir"])
    outputs = sorted({_real(s["path"]) for s in [*cfg.sinks, cfg.dead_letters]
                      if s.get("type") == "jsonl" and s.get("path")})
    locks = []
    try:
        locks.append(FolderLock(run_dir, "run folder"))
        if ck_dir != run_dir:
            locks.append(FolderLock(ck_dir, "checkpoint folder", shared=shared_ck))
        for path in outputs:
            if os.path.dirname(path) != run_dir:
                locks.append(OutputLock(path))
    except BaseException:
        for lock in locks:
            lock.release()
        raise
    return locks


def _real(folder: str) -> str:
    return os.path.realpath(os.path.abspath(folder))

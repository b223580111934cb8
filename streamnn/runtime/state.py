"""Checkpoint store and the runtime's own small pieces of per-stream state.

A checkpoint is one file per state unit (a stream, or "global"), written atomically with
`streamnn.checkpoint.save_checkpoint`; besides the learner's `state_dict()` it holds the next
offset of each stream it covers, the delayed-label cache, lag windows, the anomaly threshold and
the run counters, all plain types.

>>> cache = DelayedLabels(size=2)
>>> cache.put("a", {"x": 1.0}); cache.put("b", {"x": 2.0}); cache.put("c", {"x": 3.0})
>>> cache.pop("a"), cache.pop("b"), cache.expired
(None, {'x': 2.0}, 1)
>>> safe_name("sensors:3"), safe_name("data/s.jsonl")[:12]
('sensors_3-e95614c8', 'data_s.jsonl')
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import math
import os
import re
from collections import OrderedDict

import numpy as np

from ..base import _plain_params
from ..keystore import MAX_KEYS, remember
from ..checkpoint import (CheckpointError, is_checkpoint_file, load_checkpoint, loads_checkpoint,
                          remove_temp_files, save_checkpoint)
from .schema import lag_names, lag_offsets

__all__ = ["CheckpointStore", "DelayedLabels", "Lags", "ScoreThreshold", "check_compatible",
           "make_threshold", "safe_name"]


def safe_name(stream: str) -> str:
    """A file name for a stream id: readable, and unique through a short hash."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", stream).strip("_.")[-60:] or "stream"
    return f"{readable}-{hashlib.sha1(stream.encode()).hexdigest()[:8]}"


def _stamp(path: str):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return _stamp_of(st)


def _stamp_of(st):
    return st.st_mtime_ns, st.st_size, st.st_ino


class CheckpointStore:
    """Checkpoints of state units in one folder: ``<folder>/<safe unit id>.pt`` (the file each
    save replaces is kept as ``<safe unit id>.prev.pt``).

    Parameters
    ----------
    folder
        The checkpoint folder.
    shared
        Other processes (members of one consumer group) checkpoint into the folder too: the
        fence check and the write of a unit happen under a folder-wide mutex, and only
        abandoned temp files are removed.
    """

    def __init__(self, folder, shared: bool = False):
        self.folder = os.fspath(folder)
        self.shared = shared
        self._stamps: dict = {}   # file -> stat stamp of it when this store last read or wrote it

    def path(self, unit: str) -> str:
        return os.path.join(self.folder, safe_name(unit) + ".pt")

    def load(self, unit: str) -> dict | None:
        """The unit's checkpoint, or None; raises `CheckpointError` for a damaged one."""
        path = self.path(unit)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            return None
        with f:
            stamp = _stamp_of(os.fstat(f.fileno()))
            data = f.read()
        ck = loads_checkpoint(data, path)
        self._stamps[path] = stamp
        return ck

    def stamp(self, unit: str):
        """The stat stamp of the unit's file now (None: no file)."""
        return _stamp(self.path(unit))

    def save(self, unit: str, state: dict) -> str:
        path = self.path(unit)
        save_checkpoint({"unit": unit, **state}, path)
        self._stamps[path] = _stamp(path)
        return path

    def save_unless_ahead(self, unit: str, state: dict):
        """Save `state` of `unit` unless the stored checkpoint is as far along (see `ahead`):
        then return `ahead`'s tuple and write nothing; else None. Check and write are one step
        for every process sharing the folder."""
        with self._mutex():
            stale = self.ahead(unit, state["offsets"])
            if stale is None:
                self.save(unit, state)
            return stale

    def ahead(self, unit: str, offsets: dict):
        """The first ``(stream, stored, ours)`` where the stored checkpoint of `unit`, written by
        another process since this store last read or wrote it, is at least as far along as
        `offsets`, else None: another consumer owns the unit now (this one was evicted from the
        group, or the folder has two writers), and saving would overwrite its state with ours.

        Reads the file only when someone else wrote it since this store's last read or save.
        """
        path = self.path(unit)
        stamp = _stamp(path)
        if stamp is None or stamp == self._stamps.get(path):
            return None
        ck = load_checkpoint(path)
        for stream, stored in ck.get("offsets", {}).items():
            ours = offsets.get(stream)
            if ours is not None and stored >= ours:
                return stream, stored, ours
        return None

    def ignore_existing(self) -> dict:
        """Treat the files present now as read (a run that does not resume overwrites them
        without being fenced by them); returns ``{file: stamp}``."""
        out = {p: _stamp(p) for p in self.paths()}
        self._stamps.update(out)
        return out

    def paths(self) -> list:
        """The current checkpoint files (not the previous ones, nor temp files)."""
        return sorted(p for p in glob.glob(os.path.join(self.folder, "*.pt")) if is_checkpoint_file(p))

    def remove_temp_files(self) -> list:
        """Delete temp files a kill mid-write left behind (only abandoned ones when shared)."""
        return remove_temp_files(self.folder, shared=self.shared)

    def clear(self) -> None:
        """Delete every checkpoint, previous checkpoint and temp file (not the folder's other files)."""
        for p in glob.glob(os.path.join(self.folder, "*.pt")):
            os.unlink(p)
        remove_temp_files(self.folder)
        self._stamps.clear()

    @contextlib.contextmanager
    def _mutex(self):
        if not self.shared:
            yield
            return
        os.makedirs(self.folder, exist_ok=True)
        fd = os.open(os.path.join(self.folder, ".streamnn.save.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


class DelayedLabels:
    """Bounded cache of the features of events that are waiting for their label (FIFO eviction)."""

    def __init__(self, size: int = 10_000):
        self.size = size
        self.items: OrderedDict = OrderedDict()
        self.expired = 0       # evicted (or replaced by an event of the same id) before their label came

    def put(self, event_id, x: dict) -> None:
        items = self.items
        if event_id in items:   # an id sent twice: the waiting event is replaced, never learned
            self.expired += 1
        items[event_id] = x
        items.move_to_end(event_id)
        while len(items) > self.size:
            items.popitem(last=False)
            self.expired += 1

    def pop(self, event_id):
        return self.items.pop(event_id, None)

    def state_dict(self) -> dict:
        return {"items": [[k, v] for k, v in self.items.items()], "expired": self.expired}

    def load_state_dict(self, s: dict) -> None:
        self.items = OrderedDict((k, v) for k, v in s["items"])
        self.expired = s["expired"]


class Lags:
    """Adds past values of some fields as features ``<field>_lag<k>``: the last `n` values (lags 1 .. n),
    or, given a list of offsets (e.g. [1, 2, 48]), those values back.

    Windows are kept per key when the schema names a key (several sensors in one stream), for at
    most `max_keys` keys: past that the least recently seen key's window is forgotten (it fills
    again if the key comes back; `n_forgotten` counts them).

    >>> lags = Lags(["v"], 2)
    >>> lags.names, lags.apply_block(np.array([[1.0], [2.0], [3.0]])).tolist()
    (['v_lag1', 'v_lag2'], [[nan, nan], [1.0, nan], [2.0, 1.0]])
    >>> Lags(["v"], [1, 3]).apply_block(np.array([[1.0], [2.0], [3.0], [4.0]])).tolist()
    [[nan, nan], [1.0, nan], [2.0, nan], [3.0, 1.0]]
    """

    def __init__(self, fields, n, max_keys: int | None = MAX_KEYS):
        self.fields = list(fields)
        self.offsets = np.array(lag_offsets(n))
        self.n = int(self.offsets.max())           # values kept per key: the furthest lag
        self.max_keys = max_keys
        self.windows: dict = {}   # key -> list of the last n value rows, newest first (least recently seen first)
        self.n_forgotten = 0
        self._names = lag_names(self.fields, n)

    @property
    def names(self) -> list:
        """The lag columns in order: every field's lag 1, then lag 2, ..."""
        return list(self._names)

    def apply_block(self, values: np.ndarray, keys=None) -> np.ndarray:
        """The lag columns of a batch: `values` (m, len(fields)) in stream order (NaN = missing),
        `keys` one per row (or None) -> (m, n * len(fields)), NaN while a window fills; then the
        batch's values join the windows (one window per key)."""
        m, nf = values.shape
        n, offsets = self.n, self.offsets
        out = np.full((m, len(offsets) * nf), np.nan)
        if m == 0:
            return out
        k0 = None if keys is None else keys[0]
        if keys is None or ((k0 is None or type(k0) is str) and keys.count(k0) == m):   # one key
            groups = {"" if k0 is None else k0: np.arange(m)}
        else:
            groups = {}
            for i, k in enumerate(keys):
                groups.setdefault("" if k is None else str(k), []).append(i)
        done = []                                  # (last row, key, window): remembered in that order
        for k, idx in groups.items():
            idx = np.asarray(idx)
            window = self.windows.get(k, [])
            hist = np.full((n, nf), np.nan)   # oldest first, NaN-padded to n rows
            if window:
                hist[n - len(window):] = np.array(window[::-1], dtype=float).reshape(len(window), nf)
            seq = np.concatenate([hist, values[idx]])          # (n + mk, nf)
            rows = np.arange(len(idx))[:, None] + n - offsets[None, :]   # lag k of row j
            out[idx] = seq[rows].reshape(len(idx), len(offsets) * nf)
            keep = min(n, len(window) + len(idx))
            done.append((int(idx[-1]), k, [list(r) for r in seq[len(seq) - keep:][::-1].tolist()]))
        for _, k, window in sorted(done, key=lambda d: d[0]):   # least recently seen first, whatever the batches
            self.n_forgotten += remember(self.windows, k, window, self.max_keys)
        return out

    def state_dict(self) -> dict:
        return {"windows": {k: [list(r) for r in w] for k, w in self.windows.items()},
                "n_forgotten": self.n_forgotten}

    def load_state_dict(self, s: dict) -> None:
        self.windows = {k: [list(r) for r in w] for k, w in s["windows"].items()}
        self.n_forgotten = s.get("n_forgotten", 0)


class ScoreThreshold:
    """Flags anomaly scores at or above a threshold: a fixed one, or mean + sigma * std of past scores.

    Running statistics are exponentially weighted (they follow drift), of log scores by default
    (reconstruction errors are heavy-tailed); no score is flagged before `warmup` scores.

    >>> thr = ScoreThreshold(sigma=3.0, warmup=10)
    >>> flags = [thr.check(1.0 + 0.01 * (i % 3))[0] for i in range(50)]
    >>> any(flags), thr.check(50.0)[0]
    (False, True)
    """

    def __init__(self, fixed: float | None = None, sigma: float = 4.0, warmup: int = 256,
                 alpha: float = 0.01, log: bool = True):
        self.fixed, self.sigma, self.warmup, self.alpha, self.log = fixed, sigma, warmup, alpha, log
        self.n, self.mean, self.var = 0, 0.0, 0.0

    def check(self, score: float):
        """(is the score anomalous, the threshold it was compared with); then learn from it."""
        flags, thresholds = self.check_many([score])
        return flags[0], thresholds[0]

    def check_many(self, scores: list) -> tuple:
        """`check` of each score in turn: (flags, thresholds), the same floats as a loop."""
        fixed, log, alpha, warm, sigma = self.fixed, self.log, self.alpha, self.warmup, self.sigma
        n, mean, var = self.n, self.mean, self.var
        isfinite, ln, exp, sqrt, inf = math.isfinite, math.log, math.exp, math.sqrt, math.inf
        flags, thresholds = [], []
        for score in scores:
            if fixed is not None:
                thr = fixed
            elif n < warm:
                thr = inf
            else:
                t = mean + sigma * sqrt(var)
                thr = exp(t) if log else t
            flags.append(score >= thr)
            thresholds.append(thr)
            if isfinite(score):
                s = ln(max(score, 1e-12)) if log else score
                n += 1
                a = max(alpha, 1.0 / n)
                d = s - mean
                mean += a * d
                var = (1 - a) * (var + a * d * d)
        self.n, self.mean, self.var = n, mean, var
        return flags, thresholds

    def state_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "var": self.var}

    def load_state_dict(self, s: dict) -> None:
        self.n, self.mean, self.var = s["n"], s["mean"], s["var"]


def make_threshold(learner, cfg: dict) -> ScoreThreshold:
    """`threshold`: a number (fixed), "sigma" (running statistics of past scores), or "auto" (the
    detector's own `threshold_` if it has one, else "sigma")."""
    cfg = dict(cfg)
    thr = cfg.pop("threshold", "auto")
    if thr == "auto":
        thr = getattr(learner, "threshold_", "sigma")
    return ScoreThreshold(fixed=None if thr == "sigma" else float(thr), **cfg)


def check_compatible(ck: dict, learner, path: str) -> None:
    """Raise if a checkpoint was written by another learner class or other parameters."""
    want = f"{type(learner).__module__}.{type(learner).__qualname__}"
    if ck.get("learner") != want:
        raise CheckpointError(f"checkpoint {path} holds a {ck.get('learner')}, the config builds a {want}; "
                         "point [checkpoint] dir elsewhere, or delete the checkpoint to start over")
    mine = _plain_params(learner)
    before = getattr(learner, "PARAMS_BEFORE", {})   # a parameter added later: the value it had before
    theirs = {k: ck["params"].get(k, before.get(k)) for k in set(mine) | set(ck["params"])}
    free = getattr(learner, "RESUME_FREE", ())      # bounds on resources, not on what was learned
    diff = sorted(k for k in theirs if mine.get(k) != theirs[k] and k not in free)
    if diff:
        detail = ", ".join(f"{k}: checkpoint {theirs[k]!r} vs config {mine.get(k)!r}" for k in diff)
        raise CheckpointError(f"checkpoint {path} was written with other learner parameters ({detail}); "
                         "restore them in the config, or delete the checkpoint to start over")

"""Per-key windows of raw events for `AutoencoderDetector`: an event's window and its (cached)
assessment, the batch API that runs over windows (`learn_many`, `score_many`, `predict_many`) and
the windows' checkpoint state.

A key (a sensor's id, or None for the whole stream) keeps the raw values of its last `window - 1`
events as a (C, window - 1) array; an event's window is that history plus the event, oldest first.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import torch

from .alarm_density import RecordDensity
from .alarm_signals import SeriesContext
from .features import series_key

__all__ = ["WindowsMixin", "_arg"]


def _arg(values: np.ndarray):
    """An event's values (C,) as its evidence takes them: a float on a one value stream (the
    series context), the row on records of several features (the record density)."""
    return float(values[0]) if len(values) == 1 else values

_PLAIN_KEYS = (str, int, float, bool, type(None))


class WindowsMixin:
    """Windows, batch API and window state of `AutoencoderDetector` (see the module docstring)."""

    def _event(self, x: dict, grow: bool, windows=None):
        """x -> (key, the (C, W) raw window ending with x); the key's history is not changed."""
        k = None
        if self.key is not None:
            k = series_key(x.get(self.key))   # NaN: the missing key, not a new series per event
            x = {n: v for n, v in x.items() if n != self.key}
        r = self._values(x, grow)                                                 # (C,)
        W = self.window_
        if W is None:   # "auto", before the first learned event: what it would resolve to
            W = int(np.clip(16 // max(len(r), 1), 1, 16))
            if grow and len(r):
                self.window_ = W
        if W == 1:
            return k, r[:, None]
        h = (self.windows_ if windows is None else windows).get(k)
        C = len(r)
        if h is None:
            h = np.full((C, W - 1), np.nan)
        elif len(h) < C:
            h = np.concatenate([h, np.full((C - len(h), W - 1), np.nan)])
        win = np.empty((C, W))                                                    # (C, W)
        win[:, :-1] = h if len(h) == C else h[:C]
        win[:, -1] = r
        return k, win

    def _values(self, x: dict, grow: bool) -> np.ndarray:
        """x -> its (C,) raw row: an event of finite numbers with exactly the known features
        takes a short path; anything else (new, missing, NaN, other types) the registry's."""
        names = self.features_.names
        if len(x) == len(names):
            try:
                vals = list(map(x.__getitem__, names))
            except KeyError:
                vals = None
            if vals is not None:
                for v in vals:
                    if type(v) is not float or v - v != 0.0:   # not a finite float
                        break
                else:
                    return np.array(vals)
        return self.features_.row(x, grow=grow)

    def _cached(self, x: dict, items=None):
        memo = self._memo
        if memo is not None and memo[0] == (self._version, self._n_events) and memo[1] == (items or tuple(x.items())):
            return memo[2]
        return None

    def _evidence(self, C: int):
        """The evidence beside the error for events of `C` features: the series context of a one
        value stream (`SeriesContext`), the record density of several (`RecordDensity`); None
        with a key (many series in one stream) or when switched off."""
        if self.key is not None:
            return None
        return self.series_ if C == 1 else self.density_

    def _frame_extra(self, V: np.ndarray, keep: bool = True):
        """The evidence's raw signals (N, k) of a frame's values `V` (N, C), each row added after it
        is scored (`keep=False`: the evidence is left as it was), or None."""
        ev = self._evidence(V.shape[1])
        return None if ev is None else ev.scores(V[:, 0] if V.shape[1] == 1 else V, keep)

    def _extra(self, win) -> tuple:
        """The evidence's raw signals of an event with window `win` (C, W), or ()."""
        ev = self._evidence(win.shape[0])
        return () if ev is None else ev.signals(_arg(win[:, -1]))

    def _assess(self, x: dict):
        """(key, (C, W) window, raw error, calibrated score, novel, extra evidence) of `x`; pure apart from a
        one-entry cache, so that score_one then learn_one of the same event run the network once."""
        items = tuple(x.items())
        hit = self._cached(x, items)
        if hit is not None:
            return hit
        k, win = self._event(x, grow=False)
        raw = self._raw_errors(win.ravel()) if win.size else math.nan
        xs = x if self.key is None else {n: v for n, v in x.items() if n != self.key}
        novel = self.range_ is not None and self.range_.novel(xs)
        out = (k, win, raw, self._calibrate(raw), novel, self._extra(win))
        index = self.features_.index
        if len(xs) == len(index) and xs.keys() <= index.keys():   # learn_one would not grow anything
            self._memo = ((self._version, self._n_events), items, out)
        return out

    def _score_rows(self, X: pd.DataFrame) -> pd.Series:
        """`score_many` row by row (any frame: growth, NaN, keys, any network)."""
        windows, rows = dict(self.windows_), []
        for x in X.to_dict(orient="records"):
            k, win = self._event(x, grow=False, windows=windows)
            windows[k] = win[:, 1:]
            rows.append(win.ravel())
        raw = self._raw_errors(np.stack(rows))
        if self.likelihood_ is not None:   # the alarm rules run over the rows, on copies
            lk, rng, key = self.likelihood_.fork(), copy.deepcopy(self.range_), self.key
            C = rows[0].size // self.window_
            series = copy.deepcopy(self._evidence(C))
            out = np.empty(len(raw))
            for i, (r, x) in enumerate(zip(raw.tolist(), X.to_dict(orient="records"))):
                xs = x if key is None else {n: v for n, v in x.items() if n != key}
                if lk.n == 0 and not math.isnan(r):
                    self._configure_alarms(len(xs), lk)
                last = rows[i].reshape(C, self.window_)[:, -1]
                extra = () if series is None else series.signals(_arg(last))
                out[i] = lk.update(r, rng is not None and rng.novel(xs), extra)[0]
                if rng is not None:
                    rng.update(xs)
                if extra:
                    series.update(_arg(last))
        else:
            out = self.calibrator_.transform_many(raw) if self.calibration is not None else raw
        return pd.Series(out, index=X.index, dtype=float)

    def predict_many(self, X: pd.DataFrame) -> pd.Series:
        return self.score_many(X) >= self.threshold_

    # -- state -------------------------------------------------------------------------------

    def _extra_state(self) -> dict:
        keys = list(self.windows_)
        bad = [k for k in keys if not isinstance(k, _PLAIN_KEYS)]
        if bad:
            raise TypeError(f"key value {bad[0]!r} is a {type(bad[0]).__name__}; use str or int keys to checkpoint")
        return {"calibrator": self.calibrator_.state_dict(), "keys": keys, "window": self.window_,
                "windows": [torch.from_numpy(self.windows_[k].copy()) for k in keys],
                "alarm_rate": float(self.alarm_rate_), "n_guarded": self.n_guarded_,
                "likelihood": self.likelihood_.state_dict() if self.likelihood_ is not None else None,
                "range": self.range_.state_dict() if self.range_ is not None else None,
                "series": self.series_.state_dict() if self.series_ is not None else None,
                "density": self.density_.state_dict() if self.density_ is not None else None}

    def _load_extra_state(self, s: dict):
        self.calibrator_.load_state_dict(s["calibrator"])
        self.window_ = s["window"]
        self.windows_ = {k: w.numpy().copy() for k, w in zip(s["keys"], s["windows"])}
        self.alarm_rate_, self.n_guarded_ = s["alarm_rate"], s["n_guarded"]
        if self.likelihood_ is not None and s.get("likelihood") is not None:
            self.likelihood_.load_state_dict(s["likelihood"])
        if self.range_ is not None and s.get("range") is not None:
            self.range_.load_state_dict(s["range"])
        if self.series_ is not None:   # a state saved without the series evidence goes on without it
            self.series_ = SeriesContext() if s.get("series") is not None else None
            if self.series_ is not None:
                self.series_.load_state_dict(s["series"])
        if self.density_ is not None:  # the same for the record density (states before session 10)
            self.density_ = RecordDensity() if s.get("density") is not None else None
            if self.density_ is not None:
                self.density_.load_state_dict(s["density"])

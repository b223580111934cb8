"""The frame path of `learn_many`: a frame's rows through the same schedule as `learn_one`.

Mixed into `TorchLearner`. Between two optimizer steps, a run of rows that needs no growth of the
network is written to the buffer at once (`_learn_block`); a row that builds or grows the network
or adds a class goes through `_learn_row`. The model state therefore never depends on how a stream
was cut into frames (which makes crash recovery exact).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["FrameSchedule", "check_weight", "checked_weights"]


def check_weight(w) -> None:
    """Raise unless the sample weight `w` is a finite number >= 0: NaN or inf would make every
    weight of the network NaN for good, a negative weight turns learning into its opposite."""
    if w != 1.0 and not (isinstance(w, (int, float, np.number)) and not isinstance(w, bool)
                         and 0.0 <= w < math.inf):
        raise ValueError(f"sample weight {w!r}: a weight must be a finite number >= 0 (0 learns nothing)")


def check_lengths(X, y, w=None) -> None:
    """learn_many's frame `X`, targets `y` and weights `w` must have one entry per row: a shorter
    `y` was cut short silently (the rows beyond it not learned)."""
    n = len(X)
    for name, v in (("y", y), ("w", w)):
        if v is not None and len(v) != n:
            raise ValueError(f"learn_many: X has {n} rows and {name} has {len(v)}; give one {'target' if name == 'y' else 'weight'} per row")


def checked_weights(w) -> np.ndarray:
    """The sample weights of a frame as floats, each checked as `check_weight` does."""
    try:
        W = np.asarray(w, dtype=np.float64)
    except (TypeError, ValueError):
        W = None
    if W is None or not (np.isfinite(W).all() and (W >= 0).all()):
        bad = next(v for v in (list(w) if W is None else W.tolist()) if not (isinstance(v, float) and 0 <= v < math.inf))
        check_weight(bad)
    return W


class FrameSchedule:
    """`_learn_frame` and `_learn_block`; needs the learner's `_learn_row`, `_step`, `buffer_`,
    `features_` and counters."""

    # A learner whose `_learn_row` does per-row work beyond the buffer (none today) sets this, and
    # every frame is then learned row by row.
    _ROWWISE = False

    def _learn_frame(self, X, Y, w=None, encode=None, fresh=None):
        """The learn_many body: rows go through the same schedule as learn_one, in order.

        `Y` holds the rows' buffer targets, NaN where a row is skipped; a row in `fresh` (row ->
        label) takes `encode(label)` as its target at its turn (a class seen for the first time).
        Between two steps, a run of rows that needs no growth is appended to the buffer at once
        (`_learn_block`); a row that builds or grows the network or adds a class goes through
        `_learn_row`. A list `Y` (None = skip) is encoded row by row with `encode`, if given.
        """
        w = None if w is None else checked_weights(w)   # before anything is learned
        M, widths = self.features_.frame_rows(X)
        fresh = fresh or {}
        listed = not isinstance(Y, np.ndarray)
        if listed or self._ROWWISE:   # row by row
            for i, t in enumerate(Y):
                if i in fresh:
                    t = encode(fresh[i])
                elif listed:
                    if t is None:
                        continue
                    if encode is not None:
                        t = encode(t)
                elif math.isnan(t):
                    continue
                self._learn_row(M[i, : widths[i]], t, 1.0 if w is None else float(w[i]))
            return
        skip = np.isnan(Y)
        rows = (~skip).nonzero()[0] if skip.any() else np.arange(len(Y))   # the rows learned, in order
        if len(rows) == 0:
            return
        cuts = [len(rows)]   # a run of rows ends where the width grows and before a row adding a class
        if widths[rows[0]] != widths[rows[-1]] or fresh:
            wr = widths[rows]
            grows = (wr[1:] != wr[:-1]).nonzero()[0] + 1
            cuts = np.union1d(grows, np.searchsorted(rows, sorted(fresh))).tolist() + cuts
        k, c = 0, 0
        while k < len(rows):
            r = int(rows[k])
            if self.module_ is None or widths[r] != self.n_in_ or r in fresh:
                t = encode(fresh[r]) if r in fresh else Y[r]
                self._learn_row(M[r, : widths[r]], t, 1.0 if w is None else float(w[r]))
                k += 1
                continue
            while cuts[c] <= k:
                c += 1
            n = 1 if self.n_seen_ < self._warm_limit() else max(1, self.update_every - self._pending)
            end = min(k + n, cuts[c])          # the rows up to the next step at most
            self._learn_block(M, rows[k:end], Y, w)
            k = end

    def _learn_block(self, M, rows, Y, w):
        """Learn rows `rows` of `M` (of the network's width) that end at or before the next step:
        `_learn_row` for each, with one buffer write."""
        a, b = int(rows[0]), int(rows[-1]) + 1
        sel = slice(a, b) if b - a == len(rows) else rows
        self.buffer_.extend(M[sel, : self.n_in_], Y[sel], None if w is None else w[sel])
        self.n_seen_ += len(rows)
        self._pending += len(rows)
        if self._pending >= (self.update_every if self.n_seen_ > self._warm_limit() else 1):
            self._step()

"""The network's raw errors for `AutoencoderDetector`, per event and per frame, and the
frame-level `learn_many` / `score_many`.

**Per event** (`_raw_errors` of one row) the error comes from a float64 copy of the network with
the latent's two linear layers folded into one (`_lean_plan`, rebuilt after each step).

**Per frame** (a DataFrame of events of the known features, all finite floats, no `key`):

- the windows of all rows are cut from the key's history and the frame at once (one array);
- `score_many` runs the network once over the frame, the alarm rules over the rows on cheap
  copies (the network and the alarm state are not changed);
- `learn_many` runs the network once per stretch of rows between two optimizer steps (the
  network is fixed within it), the alarm rules row by row, and writes the learned rows of a
  stretch to the buffer at once; the stretch ends where a loop of `learn_one` would step.
  The result is that of a loop of `learn_one`, up to the rounding of a matrix product against a
  matrix-vector product (about 1e-15 relative in the raw errors; tests/test_anomaly_frames.py).

Any other frame (new or missing features, NaN, non-float columns, a `key`, another network
kind, `alarms=None` in `learn_many`) takes the row-by-row path.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from .autoencoders import error_row, errors_numpy, frozen_plan, numpy_errors_plan

__all__ = ["FramesMixin"]


class FramesMixin:
    """Raw errors and the frame-level batch API of `AutoencoderDetector` (module docstring)."""

    # -- rows and raw errors -----------------------------------------------------------------

    def _lean_plan(self):
        """The per-event path's network: a float64 copy, folded, rebuilt after each step (None
        where it does not apply: not dense, variational, not on the CPU, inputs not scaled)."""
        return self._lean_entry()[1]

    def _lean_entry(self):
        """(version, `_lean_plan`, the scored columns), computed once per network version: the
        scaler's width changes only in a step's batch, which bumps the version too."""
        lean = self._lean
        if lean is None or lean[0] != self._version:
            plan = None
            if self.scale_inputs is not None and len(self.scaler_) == self.n_in_:
                if self._plan is None and self._device.type == "cpu":
                    self._plan = numpy_errors_plan(self.module_) or False
                plan = (self._plan and frozen_plan(self._plan)) or None
            lean = self._lean = (self._version, plan, self._score_cols())
        return lean

    def _score_cols(self):
        W = self.window_
        return np.arange(W - 1, self.n_in_, W) if self.score_on == "last" and W > 1 else None

    def _raw_errors(self, rows: np.ndarray) -> np.ndarray:
        """Raw rows (B, C*W) -> raw scores (B,), in eval mode, without side effects; one row
        (C*W,) -> a float (the per-event path: float64 copies of the network, folded, rebuilt
        after each step)."""
        if rows.ndim == 1 and len(rows) == self.n_in_:
            _, lean, cols = self._lean_entry()
            if lean:
                steps, scaler = lean[0], self.scaler_
                err = error_row(steps, scaler.transform(rows, fill=False), cols)
                if err != err:   # a NaN in the row (a missing value, a window's first events): scaled to 0
                    err = error_row(steps, scaler.transform(rows), cols)
                return err
        Z = self._scale(rows)
        kl_weight = self.beta if (self.variational and self.vae_score == "elbo") else 0.0
        if self._plan is None and self._device.type == "cpu":
            self._plan = numpy_errors_plan(self.module_) or False
        W = self.window_
        cols = np.arange(W - 1, Z.shape[-1], W) if self.score_on == "last" and W > 1 else None
        if self._plan:
            if Z.ndim == 1 and not self.variational:
                return errors_numpy(self._plan, Z, kl_weight, cols)
            err = errors_numpy(self._plan, Z.reshape(-1, Z.shape[-1]), kl_weight, cols).astype(np.float64)
            return float(err[0]) if rows.ndim == 1 else err
        if rows.ndim == 1:
            return float(self._raw_errors(rows[None])[0])
        module = self.module_
        module.eval()
        with torch.inference_mode():
            Zt = torch.as_tensor(Z, device=self._device)
            recon, mu, logvar = module(Zt)
            d = recon - Zt
            err = (d[:, cols] if cols is not None else d).pow(2).mean(1)
            if logvar is not None and kl_weight:
                err = err + kl_weight * 0.5 * (mu ** 2 + logvar.exp() - 1.0 - logvar).sum(1) / Zt.shape[1]
        return err.double().cpu().numpy()

    def _calibrate(self, raw: float) -> float:
        if self.likelihood_ is not None:
            return math.nan        # not used: score_one asks the likelihood
        return self.calibrator_.transform(raw) if self.calibration is not None else raw

    # -- frames ------------------------------------------------------------------------------

    def _frame(self, X: pd.DataFrame):
        """(V (N, C) values, R (N, C*W) raw windows) of a frame that may take the frame path, else None."""
        names = self.features_.names
        if (self.key is not None or self.module_ is None or self.window_ is None or len(X) == 0
                or len(X.columns) != len(names) or not all(n in self.features_.index for n in X.columns)
                or not all(dt.kind == "f" for dt in X.dtypes) or self.n_in_ != len(names) * self.window_):
            return None
        V = X[names].to_numpy(np.float64)
        if not np.isfinite(V).all():
            return None
        W, C = self.window_, len(names)
        if W == 1:
            return V, V
        h = self.windows_.get(None)
        if h is None:
            h = np.full((C, W - 1), np.nan)
        elif len(h) < C:
            h = np.concatenate([h, np.full((C - len(h), W - 1), np.nan)])
        full = np.concatenate([h[:C].T, V])                                        # (W-1+N, C)
        R = np.lib.stride_tricks.sliding_window_view(full, W, axis=0)              # (N, C, W)
        return V, R.reshape(len(V), C * W)

    def _frame_errors(self, R: np.ndarray, lean) -> np.ndarray:
        return errors_numpy(lean, self.scaler_.transform(R), 0.0, self._score_cols())

    def learn_many(self, X: pd.DataFrame) -> None:
        """Learn the rows of `X` in order, as a loop of `learn_one` would (module docstring)."""
        fr = self._frame(X) if self.likelihood_ is not None else None
        lean = fr is not None and self._lean_plan()
        if not lean:
            for x in X.to_dict(orient="records"):
                self.learn_one(x)
            return
        V, R = fr
        names, lk, rng, N = self.features_.names, self.likelihood_, self.range_, len(R)
        novel = rng.novel_many(names, V) if rng is not None else np.zeros(N, bool)
        if lk.n == 0:
            self._configure_alarms(V.shape[1], lk)
        extra = self._frame_extra(V)   # the evidence does not depend on the network: judged for the whole frame
        eu = None if extra is None else lk.extra_u(extra)
        zeros, i = np.zeros(N), 0
        while i < N:   # one stretch: the rows up to the next optimizer step at most
            n = 1 if self.n_seen_ < self._warm_limit() else max(1, self.update_every - self._pending)
            j = min(N, i + n)
            raw = self._frame_errors(R[i:j], self._lean_plan())
            _, since = lk.update_many(raw, novel[i:j], extra_u=None if eu is None else eu[i:j])
            learn = since >= self._protect
            self.n_guarded_ += int(len(since) - learn.sum())
            self._n_events += j - i
            if learn.any():
                self._learn_block(R, i + np.flatnonzero(learn), zeros, None)
            i = j
        if rng is not None:
            rng.update_many(names, V)
        if self.window_ > 1:
            self.windows_[None] = R[-1].reshape(V.shape[1], self.window_)[:, 1:].copy()

    def score_many(self, X: pd.DataFrame) -> pd.Series:
        """Scores of the rows of `X`, a contiguous piece of the stream: each row's window holds
        the rows before it in `X`; the network and calibration are not updated between rows, the
        alarm rules are (on copies: suppression and the likelihood's history move on as in
        `learn_one`, so a batch raises one alarm per incident too)."""
        if self.module_ is None or len(X) == 0:
            return pd.Series(np.zeros(len(X)), index=X.index, dtype=float)
        fr = self._frame(X)
        lean = fr is not None and self._lean_plan()
        if not lean:
            return self._score_rows(X)
        V, R = fr
        raw = self._frame_errors(R, lean)
        if self.likelihood_ is None:
            out = self.calibrator_.transform_many(raw) if self.calibration is not None else raw
            return pd.Series(out, index=X.index, dtype=float)
        lk, rng = self.likelihood_.fork(), self.range_
        novel = rng.novel_many(self.features_.names, V) if rng is not None else np.zeros(len(V), bool)
        if lk.n == 0:
            self._configure_alarms(V.shape[1], lk)
        out, _ = lk.update_many(raw, novel, self._frame_extra(V, keep=False))
        return pd.Series(out, index=X.index, dtype=float)

"""Streaming normalization: running scalers for inputs and targets, and a `StreamingNorm` layer.

`RunningStats` keeps per-column statistics of a growing set of columns from *past* data only:
Welford/Chan mean and variance (`mode="welford"`) or an exponentially weighted version that
follows drift (`mode="ewm"`). Missing values (NaN) are skipped by the statistics and imputed with
the running mean (0 after scaling).

The statistics are robust to a single extreme value (`clip`): each column's first `warmup`
values are kept, and its statistics are those of these values winsorised at median +- clip *
max(1.4826 * MAD, 1); after them, a value enters the running statistics winsorised at mean +-
clip * max(std, 1), and `transform` clips the same way. So one value of 1e308 moves a mean by at
most clip standard deviations' worth, never makes a variance inf or NaN, and leaves the column
useful; Gaussian data is never clipped (10 standard deviations). The floor of 1 (raw units) lets a
column that was constant so far start to vary; a gradual change of scale is followed with the
clipped values (the window widens as the variance grows), and with `shift_after` a lasting jump
(that many values in a row beyond the window on one side) restarts the column's statistics.

>>> s = RunningStats(1)
>>> for v in range(100):
...     s.update(np.array([[float(v % 10)]]))
>>> s.update(np.array([[1e308]]))
>>> bool(np.isfinite(s.var).all()) and 2.8 < float(s.std[0]) < 4.5 and 4.4 < float(s.mean[0]) < 5.6
True

>>> import numpy as np
>>> s = RunningStats()
>>> s.update(np.array([[1.0, 10.0], [3.0, np.nan]]))
>>> s.transform(np.array([[2.0, np.nan]])).tolist()    # (2 - 2) / 1 and NaN -> running mean
[[0.0, 0.0]]

`StreamingNorm` is an `nn.Module` that normalizes activations with running estimates of their
mean and variance instead of the current batch's, so it behaves the same at batch size 1 (where
`BatchNorm1d` raises or collapses) as at batch size 256, and the same in training as in inference.
It follows Liao et al. 2016 ("Streaming Normalization", which proposes running statistics for
online learning and recurrent nets) in using statistics accumulated over the stream; unlike
Online Normalization (Chiley et al. 2019) it does not correct the backward pass with running
gradient statistics: the statistics are treated as constants in backprop, which keeps the layer a
few tensor ops and exact at any batch size.

>>> import torch
>>> norm = StreamingNorm(3)
>>> _ = norm.train()(torch.ones(1, 3))     # batch size 1 works
>>> norm.num_batches.item()
1
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = ["RunningStats", "StreamingNorm"]

try:   # the clip ufunc itself: np.clip's Python wrapper costs more than the clipping
    from numpy._core.umath import clip as _clip
except ImportError:  # pragma: no cover - older numpy
    _clip = np.clip

_FEW = 8   # up to this many columns, `RunningStats.update` merges in Python floats
_BIG = 1e300   # statistics are kept within +-_BIG (finite, with room for a square's sum)
_TINY = 1e-30  # a deviation at or below this is a constant column (its scaled values stay float32)


class RunningStats:
    """Per-column running mean/variance over a growing number of columns (numpy, float64).

    Parameters
    ----------
    mode
        "welford" for exact running statistics, "ewm" for exponentially weighted ones.
    alpha
        Weight of a new sample in "ewm" mode (after a Welford warm-up of 1/alpha samples).
    eps
        A column whose standard deviation is at most `eps * min(|mean|, 1)` (float noise around
        its mean: a constant column) scales by 1, i.e. is only centered. Relative to the mean, so
        that a column on a scale of 1e-9 is scaled like any other (an absolute floor of 1e-8
        made it a constant, and the network never saw it vary).
    clip
        Winsorise at this many (robust) standard deviations, at least `clip` raw units (see the
        module docstring); None: plain statistics, no clipping.
    warmup
        Values of each column whose statistics are computed robustly (median and MAD) before the
        running update takes over.
    shift_after
        A column whose last `shift_after` values all fell beyond the window on one side has
        shifted for good (outliers do not come in such runs): its statistics restart, with a new
        warm-up. None: never (a shifted column's values are then all clipped to one edge, and the
        model loses the column until the statistics, mixing both levels, catch up).
    """

    def __init__(self, n_features: int = 0, mode: str = "welford", alpha: float = 0.001,
                 eps: float = 1e-8, clip: float | None = 10.0, warmup: int = 16,
                 shift_after: int | None = None):
        if mode not in ("welford", "ewm"):
            raise ValueError(f"mode={mode!r}: use 'welford' or 'ewm'")
        if clip is not None and not clip > 0:
            raise ValueError(f"clip={clip!r}: use a positive number of standard deviations, or None")
        self.mode, self.alpha, self.eps = mode, alpha, eps
        self.clip, self.warmup = clip, int(warmup) if clip is not None else 0
        self.shift_after = shift_after if clip is not None else None
        self.run = np.zeros(n_features)   # values in a row beyond the window: + above, - below
        self._running = False             # self.run.any()
        self.n = np.zeros(n_features)
        self.mean = np.zeros(n_features)
        self.var = np.zeros(n_features)
        self.buf = np.zeros((self.warmup, n_features))   # each column's first n values (the rest 0)
        self._refresh()

    def __len__(self) -> int:
        return len(self.n)

    def grow(self, n_features: int):
        extra = n_features - len(self.n)
        if extra > 0:
            pad = np.zeros(extra)
            self.n, self.mean, self.var, self.run = (np.concatenate([a, pad]) for a in
                                                     (self.n, self.mean, self.var, self.run))
            self.buf = np.concatenate([self.buf, np.zeros((self.warmup, extra))], axis=1)
            self._refresh()

    def _refresh(self):
        std = np.sqrt(self.var)
        if (std > max(self.eps, _TINY)).all():   # every column varies (its floor is at most that)
            self.inv_std = 1.0 / std
            self.std = self.out_std = 1.0 / self.inv_std
        else:   # the constant floor eps * min(|mean|, 1), at least _TINY
            floor = np.maximum(self.eps * np.minimum(np.abs(self.mean), 1.0), _TINY)
            varying = std > floor
            self.inv_std = np.where(varying, 1.0 / np.maximum(std, floor), 1.0)
            self.std = 1.0 / self.inv_std
            self.out_std = np.where(varying | (self.n == 0), self.std, 0.0)   # see `inverse`
        self._window()

    def _window(self):
        """The winsorising window mean +- clip * max(std, 1), and whether a column is cold."""
        self._cold = bool(self.warmup) and len(self.n) > 0 and bool((self.n < self.warmup).any())
        if self.clip is not None:
            h = self.clip * np.maximum(self.std, 1.0)
            self._lo, self._hi = self.mean - h, self.mean + h
            self._zlim = h * self.inv_std
            self._nzlim = -self._zlim

    def update(self, X: np.ndarray):
        """Merge a batch `X` (B, F) into the statistics; NaNs are skipped column by column."""
        F = len(self.n)
        if X.shape[1] > F:
            self.grow(X.shape[1])
        elif X.shape[1] < F:
            X = np.concatenate([X, np.full((len(X), F - X.shape[1]), np.nan)], axis=1)
        if len(X) == 0:
            return
        if self.clip is not None:
            if self._cold:
                return self._update_cold(X)
            Xc = _clip(X, self._lo, self._hi)
            if self.shift_after:   # a value clipped (or NaN): count the runs beyond the window
                if (Xc != X).any():
                    if self._shifted(X):
                        return self._update_cold(X)
                elif self._running:
                    self.run[:] = 0.0
                    self._running = False
            X = Xc
        self._update(X)

    def _shifted(self, X: np.ndarray) -> bool:
        """Count each column's run of values beyond the window (one side); restart the columns
        whose run reached `shift_after` (cold again: `update` takes them through the warm-up)."""
        up, down = (X > self._hi).all(0), (X < self._lo).all(0)
        self._running = bool(up.any() or down.any())
        if not self._running:
            self.run[:] = 0.0
            return False
        B = float(len(X))
        self.run = np.where(up, np.maximum(self.run, 0.0) + B, np.where(down, np.minimum(self.run, 0.0) - B, 0.0))
        restart = np.abs(self.run) >= self.shift_after
        if not restart.any():
            return False
        self.n[restart] = self.run[restart] = 0.0
        self._running = bool(self.run.any())
        self._refresh()
        return True

    def _update_cold(self, X: np.ndarray):
        """`update` while some columns are in their warm-up: those columns keep their first
        values and take robust statistics of them; the others update as usual."""
        cold = self.n < self.warmup
        if not cold.all():
            Xh = _clip(X, self._lo, self._hi)
            Xh[:, cold] = np.nan
            self._update(Xh)
        present = cold & ~np.isnan(X).all(axis=0)
        W, buf = self.warmup, self.buf
        for j in present.nonzero()[0].tolist():
            col = X[:, j]
            vals = col[~np.isnan(col)]
            k = int(self.n[j])
            take = min(W - k, len(vals))
            buf[k:k + take, j] = vals[:take]
            m, v = _robust(buf[:k + take, j], self.clip)
            self.n[j], self.mean[j], self.var[j] = k + take, m, v
            rest = vals[take:]
            if len(rest):   # the column is warm now: the rest of the batch updates as usual
                h = self.clip * max(math.sqrt(v), 1.0)
                r = np.clip(rest, m - h, m + h)
                nb, mb = float(len(r)), float(r.mean())
                n1 = self.n[j] + nb
                w = nb / n1
                if self.mode == "ewm":
                    w = max(w, 1.0 - (1.0 - self.alpha) ** nb)
                d = mb - m
                self.mean[j] = m + w * d
                self.var[j] = (1.0 - w) * (v + w * d * d) + w * float(r.var())
                self.n[j] = n1
        self._refresh()

    def _update(self, X: np.ndarray):
        """The running update of `update` (values already winsorised)."""
        nb = float(len(X))
        sums = np.add.reduce(X, 0)
        few = len(self.n) <= _FEW and X.shape[1] == len(self.n)
        finite = all(map(math.isfinite, sums.tolist())) if few else np.isfinite(sums).all()
        if finite or not np.isnan(X).any():   # fast path: no missing values (finite sums rule them out)
            mean_b = sums / nb
            d = X - mean_b
            d *= d
            var_b = np.add.reduce(d, 0) / nb
            if few:
                self._merge_few(mean_b.tolist(), var_b.tolist(), nb)
                return
            delta = mean_b - self.mean
            n_new = self.n + nb
            w = nb / n_new
            if self.mode == "ewm":
                w = np.maximum(w, 1.0 - (1.0 - self.alpha) ** nb)
            self.mean = self.mean + w * delta
            self.var = (1.0 - w) * (self.var + w * delta**2) + w * var_b
            self.n = n_new
            self._refresh()
            return
        mask = ~np.isnan(X)
        nb = mask.sum(0).astype(np.float64)
        seen = nb > 0
        if not seen.any():
            return
        nb_safe = np.where(seen, nb, 1.0)
        Xz = np.where(mask, X, 0.0)
        mean_b = Xz.sum(0) / nb_safe
        var_b = (np.where(mask, X - mean_b, 0.0) ** 2).sum(0) / nb_safe
        delta = np.where(seen, mean_b - self.mean, 0.0)   # a column not seen keeps its statistics
        n_new = self.n + nb
        if self.mode == "welford":
            w = np.where(seen, nb / np.maximum(n_new, 1.0), 0.0)
        else:  # exact until 1/alpha samples, then exponentially weighted
            w_exact = nb / np.maximum(n_new, 1.0)
            w_ewm = 1.0 - (1.0 - self.alpha) ** nb
            w = np.where(seen, np.maximum(w_exact, w_ewm), 0.0)
        self.mean = self.mean + w * delta
        self.var = (1.0 - w) * (self.var + w * delta**2) + w * var_b
        self.n = n_new
        self._refresh()

    def _merge_few(self, mean_b: list, var_b: list, nb: float):
        """The fast path's merge and `_refresh` for a few columns, in Python floats: the same
        IEEE operations in the same order as the array expressions, without their overhead."""
        c = 1.0 - (1.0 - self.alpha) ** nb if self.mode == "ewm" else -1.0
        eps, clip = self.eps, self.clip
        top = max(eps, _TINY)
        ns, means, vs, invs, outs, los, his, zs = [], [], [], [], [], [], [], []
        for mb, vb, m0, v0, n0 in zip(mean_b, var_b, self.mean.tolist(), self.var.tolist(), self.n.tolist()):
            delta = mb - m0
            n1 = n0 + nb
            w = nb / n1
            if c > w:
                w = c
            v1 = (1.0 - w) * (v0 + w * (delta * delta)) + w * vb
            std = math.sqrt(v1) if v1 >= 0.0 else math.nan
            m1 = m0 + w * delta
            if std > top or std > max(eps * min(abs(m1), 1.0), _TINY):   # `_refresh`'s floor
                inv = 1.0 / std
                out = 1.0 / inv
            else:   # a constant so far (n1 >= 1 here)
                inv, out = 1.0, 0.0
            ns.append(n1)
            means.append(m1)
            vs.append(v1)
            invs.append(inv)
            outs.append(out)
            if clip is not None:   # the window of `_window`, in the same operations
                h = clip * max(1.0 / inv, 1.0)
                los.append(m1 - h)
                his.append(m1 + h)
                zs.append(h * inv)
        self.n, self.mean, self.var = np.array(ns), np.array(means), np.array(vs)
        self.inv_std = np.array(invs)
        self.std = 1.0 / self.inv_std
        self.out_std = np.array(outs)
        if clip is not None:
            self._lo, self._hi, self._zlim = np.array(los), np.array(his), np.array(zs)
            self._nzlim = -self._zlim

    def transform(self, X: np.ndarray, fill: bool = True) -> np.ndarray:
        """Scale `X` (..., F) with the current statistics, clipped to the winsorising window;
        NaN -> 0 (the running mean). `fill=False` leaves NaN as they are (for a caller that finds
        them in its own result, cheaper than looking for them here: the per-event scoring path)."""
        mean = self.mean
        F = mean.shape[0]
        Z = (X[..., :F] if X.shape[-1] != F else X) - mean
        Z *= self.inv_std
        if self.clip is not None:
            _clip(Z, self._nzlim, self._zlim, out=Z)
        if fill and not math.isfinite(np.add.reduce(Z, axis=None)):   # a finite sum: no NaN to replace
            Z[np.isnan(Z)] = 0.0
        return Z

    def inverse(self, Z: np.ndarray) -> np.ndarray:
        """Scaled values (..., F) -> original units. A column that has been constant so far
        comes back as that constant: its scaled values are all 0, so a network's output there is
        only its untrained offset, which `std` (1 for a constant) would pass on in raw units. A
        column with no value yet has no constant: its values pass as `Z * 1 + 0`."""
        return Z * self.out_std + self.mean

    def state_dict(self) -> dict:
        return {"mode": self.mode, "alpha": self.alpha, "eps": self.eps, "clip": self.clip,
                "warmup": self.warmup, "shift_after": self.shift_after, "run": torch.from_numpy(self.run.copy()),
                "n": torch.from_numpy(self.n.copy()),
                "mean": torch.from_numpy(self.mean.copy()), "var": torch.from_numpy(self.var.copy()),
                "buf": torch.from_numpy(self.buf.copy())}

    def load_state_dict(self, state: dict):
        self.mode, self.alpha, self.eps = state["mode"], state["alpha"], state["eps"]
        self.n, self.mean, self.var = (state[k].numpy().astype(np.float64).copy() for k in ("n", "mean", "var"))
        self.shift_after = state.get("shift_after", self.shift_after)
        self.run = state["run"].numpy().astype(np.float64).copy() if "run" in state else np.zeros(len(self.n))
        self._running = bool(self.run.any())
        if "buf" in state:
            self.clip, self.warmup = state["clip"], state["warmup"]
            self.buf = state["buf"].numpy().astype(np.float64).copy()
        else:   # a state from before robust statistics: its columns count as warmed up
            self.buf = np.zeros((self.warmup, len(self.n)))
            self.n = np.where(self.n > 0, np.maximum(self.n, self.warmup), self.n)
        self._refresh()


def _robust(v: np.ndarray, clip: float) -> tuple:
    """(mean, variance) of the values `v` winsorised at median +- clip * max(1.4826 MAD, 1),
    kept finite (the warm-up statistics of `RunningStats`)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if len(v) >= 3:
            med = float(np.median(v))
            h = clip * max(1.4826 * float(np.median(np.abs(v - med))), 1.0)
            v = np.clip(v, med - h, med + h)
        m, var = float(v.mean()), float(v.var())
    m = min(max(m, -_BIG), _BIG) if m == m else 0.0
    var = min(var, _BIG) if var == var else _BIG
    return m, var


class StreamingNorm(nn.Module):
    """Normalize the last dimension with running statistics; exact at any batch size.

    In training mode each forward normalizes with the statistics of *earlier* batches, then
    merges the current batch into them (momentum `momentum`, or a cumulative average while fewer
    than 1/momentum batches have been seen). An affine transform follows, as in BatchNorm.
    """

    def __init__(self, num_features: int, momentum: float = 0.01, eps: float = 1e-5,
                 affine: bool = True):
        super().__init__()
        self.num_features, self.momentum, self.eps = num_features, momentum, eps
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches", torch.zeros((), dtype=torch.long))
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., F) -> (..., F)
        mean, var = self.running_mean, self.running_var
        if self.training:   # tensor ops only: no host sync, so it stays cheap on a GPU
            with torch.no_grad():
                flat = x.detach().reshape(-1, self.num_features)
                bm, bv = flat.mean(0), flat.var(0, unbiased=False)
                first = self.num_batches == 0          # nothing in the past: use this batch
                mean = torch.where(first, bm, self.running_mean)
                var = torch.where(first, bv, self.running_var)
                m = torch.clamp(1.0 / (self.num_batches + 1).to(bm.dtype), min=self.momentum)
                new_mean = (1 - m) * mean + m * bm
                new_var = (1 - m) * var + m * (bv + (bm - mean) ** 2 * (1 - m))
                self.running_mean.copy_(new_mean)
                self.running_var.copy_(new_var)
                self.num_batches += 1
        y = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight + self.bias
        return y

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}"

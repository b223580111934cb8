"""NAB scoring (Lavin & Ahmad 2015, the Numenta Anomaly Benchmark), written from its published rules.

A detector gives every point of every file a score; a point is a *detection* when its score
reaches a threshold. Per file:

1. **Probation.** The first `min(floor(0.15 n), 0.15 * 5000)` points are not scored.
2. **Windows.** Each labelled window (from `combined_windows.json`: 10 % of the file split among
   its anomalies, centred on them) counts once. Its earliest detection scores
   `A_TP * sigma(y) / sigma(-1)` with `sigma(y) = 2 / (1 + e^{5y}) - 1` and
   `y = -(right - i + 1) / width` the point's position (-1 at the window's left end, ~0 at its
   right end); later detections in the window add nothing. A window without detection costs
   `-A_FN`.
3. **False positives.** A detection outside every window scores `A_FP * sigma(y)` with `y` its
   distance past the end of the previous window in units of that window's width - 1 (a detection
   just after a window costs almost nothing; `sigma(y) = -1` for `y > 3`), or `-A_FP` when no
   window came before it.

The corpus score of a profile (A_TP, A_FP, A_FN) is the sum over files at ONE threshold, the one
that maximises it over the whole corpus; it is normalised as `100 (S - S_null) / (S_perfect -
S_null)` with `S_null = -A_FN * windows` (no detection) and `S_perfect = A_TP * windows`.

>>> import numpy as np
>>> files = [{"scores": np.r_[np.zeros(50), 1.0, np.zeros(49)], "windows": [(45, 54)]}]
>>> round(score_corpus(files)["standard"]["score"], 1)      # detected in the window's middle
93.0
>>> score_corpus([{"scores": np.zeros(100), "windows": [(45, 54)]}])["standard"]["score"]
0.0
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

__all__ = ["PROFILES", "scaled_sigmoid", "probation_length", "window_bounds", "load_corpus",
           "point_weights", "sweep", "score_corpus"]

PROFILES = {"standard": (1.0, 0.11, 1.0), "reward_low_fp": (1.0, 0.22, 1.0),
            "reward_low_fn": (1.0, 0.11, 2.0)}   # (A_TP, A_FP, A_FN)
PROBATION = 0.15


def scaled_sigmoid(y):
    """NAB's weight of a detection at relative position `y`: 2 / (1 + e^{5y}) - 1, -1 beyond y > 3."""
    y = np.asarray(y, dtype=np.float64)
    return np.where(y > 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * np.minimum(y, 3.0))) - 1.0)


def probation_length(n: int, percent: float = PROBATION) -> int:
    """Points at the start of a file that are not scored: min(floor(percent * n), percent * 5000).

    >>> probation_length(4032), probation_length(22695)
    (604, 750)
    """
    return int(min(math.floor(percent * n), percent * 5000))


def window_bounds(timestamps, windows) -> list[tuple[int, int]]:
    """NAB windows [[start, end], ...] (timestamps) -> inclusive row ranges [(lo, hi), ...]."""
    ts = np.asarray(timestamps, dtype="datetime64[ns]")
    out = []
    for start, end in windows:
        lo = int(np.searchsorted(ts, np.datetime64(start.replace(" ", "T"), "ns"), "left"))
        hi = int(np.searchsorted(ts, np.datetime64(end.replace(" ", "T"), "ns"), "right")) - 1
        if hi >= lo:
            out.append((lo, hi))
    return out


def load_corpus(root, files=None) -> list[dict]:
    """Read NAB's data/*/*.csv and labels/combined_windows.json under `root`.

    Returns one dict per file (sorted by name): name, timestamps (datetime64), values (float64),
    windows (inclusive row ranges). `files` restricts it to those names ("realTraffic/x.csv").
    """
    import pandas as pd

    root = Path(root)
    windows = json.loads((root / "labels" / "combined_windows.json").read_text())
    names = sorted(windows) if files is None else list(files)
    corpus = []
    for name in names:
        if name not in windows:
            raise KeyError(f"{name!r} has no entry in {root}/labels/combined_windows.json; use a NAB file name")
        df = pd.read_csv(root / "data" / name)
        ts = pd.to_datetime(df["timestamp"]).values
        corpus.append({"name": name, "timestamps": ts, "values": df["value"].to_numpy(np.float64),
                       "windows": window_bounds(ts, windows[name])})
    return corpus


def point_weights(n: int, windows, profile=PROFILES["standard"]):
    """Per-point detection weights and window ids (-1: outside every window, -2: probation)."""
    a_tp, a_fp, _ = profile
    w, wid = np.empty(n), np.full(n, -1, dtype=np.int64)
    max_tp = float(scaled_sigmoid(-1.0))
    prev_right = prev_width = None
    start = 0
    for j, (lo, hi) in enumerate(sorted(windows)):
        _fill_fp(w, start, lo, prev_right, prev_width, a_fp)
        width = hi - lo + 1
        idx = np.arange(lo, hi + 1)
        w[lo:hi + 1] = a_tp * scaled_sigmoid(-(hi - idx + 1) / width) / max_tp
        wid[lo:hi + 1] = j
        prev_right, prev_width, start = hi, width, hi + 1
    _fill_fp(w, start, n, prev_right, prev_width, a_fp)
    wid[:probation_length(n)] = -2
    return w, wid


def _fill_fp(w, a: int, b: int, prev_right, prev_width, a_fp: float):
    if b <= a:
        return
    if prev_right is None:
        w[a:b] = -a_fp
    else:
        y = np.abs(prev_right - np.arange(a, b)) / max(prev_width - 1.0, 1.0)
        w[a:b] = a_fp * scaled_sigmoid(y)


def _deltas(scores, windows, profile):
    """(scores, change of the file's score when that point becomes a detection), in an order
    where each window's deltas telescope from -A_FN to the weight of its best detection."""
    scores = np.asarray(scores, dtype=np.float64)
    w, wid = point_weights(len(scores), windows, profile)
    out_s, out_d = [scores[wid == -1]], [w[wid == -1]]
    for j in range(len(windows)):
        m = np.flatnonzero(wid == j)
        if not len(m):
            continue
        order = m[np.argsort(-scores[m], kind="stable")]
        best = np.maximum.accumulate(w[order])
        out_s.append(scores[order])
        out_d.append(np.diff(best, prepend=-profile[2]))
    return np.concatenate(out_s), np.concatenate(out_d)


def sweep(files, profile=PROFILES["standard"]):
    """The corpus threshold that maximises the summed raw score: (threshold, raw score).

    `files`: dicts with "scores" (one per point) and "windows" (inclusive row ranges). A point is a
    detection when its score >= threshold; threshold inf means no detection at all.
    """
    parts = [_deltas(f["scores"], f["windows"], profile) for f in files]
    s = np.concatenate([p[0] for p in parts])
    d = np.concatenate([p[1] for p in parts])
    n_windows = sum(len(f["windows"]) for f in files)
    base = -profile[2] * n_windows
    keep = np.isfinite(s)
    s, d = s[keep], d[keep]
    order = np.argsort(-s, kind="stable")
    s, cs = s[order], base + np.cumsum(d[order])
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if len(s) else np.array([], dtype=int)
    if not len(ends) or cs[ends].max() <= base:
        return math.inf, base
    k = ends[int(np.argmax(cs[ends]))]
    return float(s[k]), float(cs[k])


def _counts(files, threshold):
    tp = fp = 0
    for f in files:
        sc = np.asarray(f["scores"], dtype=np.float64)
        _, wid = point_weights(len(sc), f["windows"])
        det = sc >= threshold
        fp += int((det & (wid == -1)).sum())
        tp += len(set(wid[det & (wid >= 0)].tolist()))
    return tp, fp


def score_corpus(files, profiles=None) -> dict:
    """NAB's normalised score per profile, each at its own corpus-wide best threshold.

    Returns {profile: {"score", "threshold", "raw", "windows_detected", "false_positives",
    "windows"}}.
    """
    profiles = PROFILES if profiles is None else profiles
    n_windows = sum(len(f["windows"]) for f in files)
    out = {}
    for name, prof in profiles.items():
        thr, raw = sweep(files, prof)
        null, perfect = -prof[2] * n_windows, prof[0] * n_windows
        tp, fp = _counts(files, thr) if math.isfinite(thr) else (0, 0)
        out[name] = {"score": 100.0 * (raw - null) / (perfect - null) if n_windows else math.nan,
                     "threshold": thr, "raw": raw, "windows_detected": tp, "false_positives": fp,
                     "windows": n_windows}
    return out

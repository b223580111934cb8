"""`learn_many` appends runs of rows at once yet stays bit for bit a loop of `learn_one`.

The runtime's crash recovery replays a stream in batches that need not match the ones seen before
the crash, so the model must never depend on batch boundaries: every tensor of `state_dict()` and
every prediction must be identical, whatever the chunking. The pieces that make `learn_many` cheap
(`RingBuffer.extend`, the vectorized reservoir, the few-column statistics, the kernel's shortcuts)
are checked against their plain row-by-row or array-expression versions here too.
"""

import math

import numpy as np
import pandas as pd
import pytest
import torch

import streamnn
from streamnn.buffering import Reservoir, RingBuffer
from streamnn.fastpath import _mm, adam_update
from streamnn.features import FeatureRegistry
from streamnn.normalization import RunningStats

N = 700


def _stream(kind: str, seed: int = 0):
    """Rows (dicts without their missing values), the same rows as a frame, targets, weights."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=N), "b": rng.normal(size=N) * 10 + 3})
    X["c"] = np.where(np.arange(N) >= 290, rng.normal(size=N), np.nan)   # growth at row 290
    X["d"] = np.where(np.arange(N) >= 501, rng.normal(size=N), np.nan)   # and at row 501
    X.loc[rng.random(N) < 0.08, "a"] = np.nan                             # missing values
    if kind == "reg":
        y = pd.Series(X["a"].fillna(0) * 2 - X["b"] + rng.normal(size=N))
        y[rng.random(N) < 0.04] = np.nan                                  # skipped targets
    else:
        labels = np.where(X["b"] > 3, "hi", "lo").astype(object)
        labels[(np.arange(N) >= 333) & (X["a"].fillna(0).to_numpy() > 1.0)] = "odd"   # a new class
        labels[rng.random(N) < 0.03] = None                               # skipped labels
        y = pd.Series(labels, dtype=object)
    w = pd.Series(rng.uniform(0.2, 3.0, N))
    rows = [{k: v for k, v in r.items() if not math.isnan(v)} for r in X.to_dict("records")]
    return rows, X, y, w


def _chunks(sizes, seed=0):
    if sizes == "random":
        rng = np.random.default_rng(seed)
        sizes = rng.integers(1, 150, N).tolist()
    elif isinstance(sizes, int):
        sizes = [sizes]
    out, i, k = [], 0, 0
    while i < N:
        n = sizes[k % len(sizes)]
        out.append((i, min(i + n, N)))
        i, k = i + n, k + 1
    return out


def _assert_same(a, b, path="state"):
    """Bit-identical: tensors by their bytes, NaN equal to NaN, everything else by ==."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    elif torch.is_tensor(a):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert a.numpy().tobytes() == b.numpy().tobytes(), path
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), path
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    else:
        assert a == b, path


def _pair(kind, chunks, weighted=True, **kw):
    make = streamnn.MLPRegressor if kind == "reg" else streamnn.MLPClassifier
    kw = {"hidden": (8,), "seed": 1, "batch_size": 16, **kw}
    one, many = make(**kw), make(**kw)
    rows, X, y, w = _stream(kind)
    for i, x in enumerate(rows):
        one.learn_one(x, y.iloc[i] if kind == "reg" else y.iloc[i], w.iloc[i] if weighted else 1.0)
    for a, b in _chunks(chunks):
        many.learn_many(X.iloc[a:b], y.iloc[a:b], w.iloc[a:b] if weighted else None)
    return one, many, X


@pytest.mark.parametrize("kind", ["reg", "clf"])
@pytest.mark.parametrize("chunks", [1, 7, 64, 256, 1000, "random", [3, 100, 1, 61, 17]])
def test_learn_many_equals_learn_one_loop_bit_for_bit(kind, chunks):
    one, many, X = _pair(kind, chunks, update_every=16, warmup=100)
    assert one.n_updates_ == many.n_updates_ > 0
    _assert_same(one.state_dict(), many.state_dict())
    if kind == "reg":
        assert one.n_skipped_ == many.n_skipped_ > 0
        pd.testing.assert_series_equal(one.predict_many(X), many.predict_many(X))
    else:
        assert one.classes_ == many.classes_ and one.classes_[2] == "odd"   # added mid-stream
        pd.testing.assert_frame_equal(one.predict_proba_many(X), many.predict_proba_many(X))
        pd.testing.assert_series_equal(one.predict_many(X), many.predict_many(X))


@pytest.mark.parametrize("kind", ["reg", "clf"])
@pytest.mark.parametrize("update_every, warmup", [(1, 0), (16, 37), (64, 0), (64, 130)])
def test_schedule_does_not_depend_on_chunks(kind, update_every, warmup):
    one, many, _ = _pair(kind, "random", weighted=False, update_every=update_every, warmup=warmup)
    _assert_same(one.state_dict(), many.state_dict())


@pytest.mark.parametrize("kw", [dict(replay=0.0, scale_inputs=None),
                                dict(scale_inputs="ewm", optimizer="sgd"),
                                dict(optimizer="adamw", weight_decay=0.01, lr_control=None)])
def test_other_configurations_stay_identical(kw):
    one, many, _ = _pair("reg", [5, 90], update_every=8, warmup=20, **kw)
    _assert_same(one.state_dict(), many.state_dict())


def test_learn_many_before_any_feature_and_after_a_reload():
    rows, X, y, _ = _stream("reg")
    kw = dict(hidden=(4,), seed=0, update_every=4, warmup=5)
    one, many = streamnn.MLPRegressor(**kw), streamnn.MLPRegressor(**kw)
    empty = pd.DataFrame(index=range(3))
    for m in (one, many):   # no feature yet: no network, only the targets' prior
        m.learn_many(empty, pd.Series([1.0, 2.0, 3.0]))
        assert m.module_ is None and m.n_seen_ == 0 and m.predict_one({}) == 2.0
    for x, t in zip(rows[:200], y.iloc[:200]):
        one.learn_one(x, t)
    many.learn_many(X.iloc[:120], y.iloc[:120])
    many = streamnn.MLPRegressor(**kw).load_state_dict(many.state_dict())
    many.learn_many(X.iloc[120:200], y.iloc[120:200])
    _assert_same(one.state_dict(), many.state_dict())


def test_integer_and_boolean_frames_and_targets():
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"i": rng.integers(-5, 5, 300), "f": rng.normal(size=300).astype(np.float32),
                      "b": rng.random(300) < 0.5})
    y = pd.Series(rng.integers(0, 100, 300))
    one, many = (streamnn.MLPRegressor(hidden=(4,), seed=0, update_every=8, warmup=10) for _ in range(2))
    for x, t in zip(X.to_dict("records"), y.tolist()):
        one.learn_one(x, t)
    many.learn_many(X, y)
    _assert_same(one.state_dict(), many.state_dict())
    for cols in (["f", "i"], ["b"], ["f", "b", "i"]):   # one conversion, or column by column
        reg = FeatureRegistry()
        reg.add("z")
        M = reg.frame(X[cols])
        ref = np.column_stack([np.full(300, np.nan)] + [X[k].to_numpy(np.float64) for k in reg.names[1:]])
        assert M.tobytes() == ref.tobytes() and M.flags.c_contiguous
        assert reg.frame(X[cols[::-1]].assign(new=1.0), grow=False).tobytes() == ref.tobytes()


# -- the pieces --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_ring_buffer_extend_equals_repeated_append(seed):
    rng = np.random.default_rng(seed)
    cap = int(rng.integers(1, 12))
    vector = seed % 2 == 1
    a, b, F = RingBuffer(cap), RingBuffer(cap), 2
    for _ in range(12):
        n = int(rng.integers(0, 3 * cap + 2))   # wraps around, and more rows than the capacity
        F += int(rng.random() < 0.3)          # wider rows
        X = rng.normal(size=(n, F - int(rng.random() < 0.2)))   # and narrower ones
        y = rng.normal(size=(n, 3)) if vector else rng.integers(0, 4, n)
        w = None if rng.random() < 0.5 else rng.choice([1.0, 0.5], n)
        for i in range(n):
            a.append(X[i], y[i], 1.0 if w is None else float(w[i]))
        b.extend(X, y, w)
        _assert_same(a.state_dict(), b.state_dict())
        assert a.unit == b.unit
        if a.size:
            for m in range(cap + 1):
                for u, v in zip(a.last(m), b.last(m, copy=False)):
                    assert u.tobytes() == v.tobytes()


def _offer_reference(res, X, y, w):
    """Reservoir.offer row by row (the algorithm it implements)."""
    if res.X is None:
        res._alloc(X[0], y[0])
    free = min(res.capacity - res.size, len(X))
    slots = list(range(res.size, res.size + free))
    res.size += free
    rest = len(X) - free
    if rest > 0:
        j = res.rng.integers(0, res.total + free + np.arange(1, rest + 1))
        slots += [int(v) if v < res.capacity else -1 for v in j]
    res.total += len(X)
    for i, slot in enumerate(slots):
        if slot >= 0:
            res.X[slot], res.y[slot], res.w[slot] = X[i], y[i], w[i]


@pytest.mark.parametrize("cap", [1, 3, 16])
def test_reservoir_offer_equals_the_row_by_row_algorithm(cap):
    rng = np.random.default_rng(cap)
    a, b = Reservoir(cap, seed=5), Reservoir(cap, seed=5)
    for _ in range(40):
        n = int(rng.integers(0, 3 * cap + 3))
        X, y, w = rng.normal(size=(n, 3)), rng.normal(size=n), rng.random(n)
        if n:
            _offer_reference(a, X, y, w)
        b.offer(X, y, w)
        _assert_same(a.state_dict(), b.state_dict())


def _update_reference(s, X):
    """RunningStats.update's array expressions for a batch without missing values."""
    nb = float(len(X))
    mean_b = np.add.reduce(X, 0) / nb
    d = X - mean_b
    var_b = np.add.reduce(d * d, 0) / nb
    delta = mean_b - s.mean
    n_new = s.n + nb
    w = nb / n_new
    if s.mode == "ewm":
        w = np.maximum(w, 1.0 - (1.0 - s.alpha) ** nb)
    s.mean = s.mean + w * delta
    s.var = (1.0 - w) * (s.var + w * delta**2) + w * var_b
    s.n = n_new
    s._refresh()


@pytest.mark.parametrize("mode, alpha", [("welford", 0.001), ("ewm", 0.2)])
@pytest.mark.parametrize("F", [1, 4, 8, 9])
def test_running_stats_few_columns_equal_the_array_expressions(mode, alpha, F):
    rng = np.random.default_rng(F)
    # plain statistics (clip=None): the reference below is the unclipped Welford/EWM merge
    a, b = RunningStats(F, mode=mode, alpha=alpha, clip=None), RunningStats(F, mode=mode, alpha=alpha, clip=None)
    for i in range(30):
        X = rng.normal(size=(int(rng.integers(1, 70)), F)) * rng.choice([1e-5, 1.0, 1e4]) + 7.0
        if i % 7 == 3:
            X[:] = 2.0                        # constant columns
        _update_reference(a, X)
        b.update(X)
        for k in ("n", "mean", "var", "inv_std", "std", "out_std"):
            assert getattr(a, k).tobytes() == getattr(b, k).tobytes(), k
        Z = rng.normal(size=(5, F))
        Z[0, 0] = np.nan
        assert a.transform(Z).tobytes() == b.transform(Z).tobytes()


def test_shortcuts_give_the_same_arrays_as_the_plain_expressions():
    rng = np.random.default_rng(0)
    for _ in range(200):
        g = rng.normal(size=(int(rng.integers(2, 200)), 1)).astype(np.float32)
        W = rng.normal(size=(1, 32)).astype(np.float32)
        g[rng.random(g.shape) < 0.3] = -0.0
        assert _mm(g, W).tobytes() == (g @ W).tobytes()
        for dtype in (np.float32, np.float64):   # two classes: max and sum of two columns
            o = rng.normal(size=(len(g), 2)).astype(dtype)
            o[rng.random(o.shape) < 0.2] = -0.0
            o[rng.random(o.shape) < 0.2] = 0.0
            o[rng.random(o.shape) < 0.05] = np.nan
            m = o.max(axis=1, keepdims=True)
            assert np.maximum(o[:, :1], o[:, 1:]).tobytes() == m.tobytes()
            e = np.exp(o - m)
            assert (e[:, :1] + e[:, 1:]).tobytes() == e.sum(axis=1, keepdims=True).tobytes()
    group = {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.001}
    n = 97
    p1, m1, v1 = (rng.normal(size=n).astype(np.float32) for _ in range(3))
    v1 = np.abs(v1)
    p2, m2, v2 = p1.copy(), m1.copy(), v1.copy()
    s1, s2 = [np.zeros((), np.float32)], [np.zeros(3, np.float32)]
    for _ in range(20):
        g = rng.normal(size=n).astype(np.float32)
        adam_update(p1, g, m1, v1, s1, group, decoupled=False)
        adam_update(p2, g, m2, v2, s2, group, decoupled=False, work=np.empty((2, n), np.float32))
    for u, v in ((p1, p2), (m1, m2), (v1, v2)):
        assert u.tobytes() == v.tobytes()
    assert float(s1[0]) == 20.0 and s2[0].tolist() == [20.0] * 3

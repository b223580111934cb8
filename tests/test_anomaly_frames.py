"""The frame path of AutoencoderDetector: learn_many / score_many per frame against the row path."""

import copy
import math

import numpy as np
import pandas as pd
import pytest

from streamnn.anomaly import AutoencoderDetector
from streamnn.alarm_signals import RangeNovelty, SeriesContext
from streamnn.alarms import Likelihood


def _plain(state):
    """A saved state with its tensors as lists (comparable with ==)."""
    if isinstance(state, dict):
        return {k: _plain(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return [_plain(v) for v in state]
    return state.tolist() if hasattr(state, "tolist") else state


def _series(n=2600, seed=0):
    """A noisy daily-like wave with a spike, a level shift and a new range: alarms, protection."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    v = np.sin(t / 12.0) + 0.1 * rng.standard_normal(n)
    v[900] += 4.0
    v[1500:1700] += 1.5
    v[2200:] *= 3.0
    return pd.DataFrame({"value": v})


def _sensors(n=2400, seed=1):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(n)
    X = pd.DataFrame({"a": a, "b": 2 * a + 0.1 * rng.standard_normal(n), "c": rng.standard_normal(n)})
    X.loc[1200:1210, "b"] = -8.0
    return X


def _row_path_used(x):
    raise AssertionError("learn_many took the row path")


def _state(m):
    s = m.state_dict()
    w = np.concatenate([p.detach().numpy().ravel() for p in m.module_.parameters()])
    return s, w


def _assert_same(a, b):
    assert (a.n_seen_, a.n_updates_, a.n_guarded_, a._n_events) == (b.n_seen_, b.n_updates_, b.n_guarded_, b._n_events)
    (sa, wa), (sb, wb) = _state(a), _state(b)
    np.testing.assert_allclose(wa, wb, rtol=1e-6, atol=1e-9)        # float32 weights, same rows learned
    for k in a.windows_:
        np.testing.assert_array_equal(a.windows_[k], b.windows_[k])
    la, lb = a.likelihood_, b.likelihood_
    assert (la.n, la.hold, la.since) == (lb.n, lb.hold, lb.since)
    for ta, tb in zip(la.tails, lb.tails):
        np.testing.assert_allclose(list(ta.means), list(tb.means), rtol=1e-9, atol=1e-12)
    assert a.range_.state_dict() == b.range_.state_dict()
    if a.series_ is not None:
        sa, sb = a.series_.state_dict(), b.series_.state_dict()
        assert sa.pop("seen").tolist() == sb.pop("seen").tolist()
        for part in ("season", "level"):               # the seasonal distance's and the level
            ea, eb = sa.pop(part), sb.pop(part)         # shift's values, period and sums
            assert (ea is None) == (eb is None)
            if ea is not None:
                assert ea.pop("values").tolist() == eb.pop("values").tolist() and ea == eb
        assert sa == sb


SERIES = {"alarm_params": {"context": True}}     # change size and context novelty join the error
PLAIN = {"alarm_params": {"context": False}}     # the error alone (the default adds the change size,
                                                 # the seasonal distance and the level shift)


@pytest.mark.parametrize("frame", [1, 37, 1024])
@pytest.mark.parametrize("make, kw", [(_series, {}), (_series, SERIES), (_series, PLAIN), (_sensors, {})])
def test_learn_many_per_frame_is_a_loop_of_learn_one(make, kw, frame):
    X = make()
    a, b = AutoencoderDetector(seed=3, **kw), AutoencoderDetector(seed=3, **kw)
    for x in X.iloc[:40].to_dict(orient="records"):    # build both the same way
        a.learn_one(x)
        b.learn_one(x)
    ref = []
    for x in X.iloc[40:].to_dict(orient="records"):
        ref.append(a.score_one(x))
        a.learn_one(x)
    b.learn_one = _row_path_used                       # the frames must take the frame path
    for s in range(40, len(X), frame):
        b.learn_many(X.iloc[s:s + frame])
    del b.learn_one
    assert b.n_guarded_ > 0 and b.likelihood_.since < len(X)       # alarms and protection happened
    _assert_same(a, b)
    probe = X.iloc[-1].to_dict()
    assert b.score_one(probe) == pytest.approx(a.score_one(probe), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("make, kw", [(_series, {}), (_series, SERIES), (_sensors, {})])
def test_score_many_per_frame_matches_the_row_path_and_is_pure(make, kw):
    X = make()
    m = AutoencoderDetector(seed=4, **kw)
    m.learn_many(X.iloc[:1500])
    frame = X.iloc[1500:2500]
    before = copy.deepcopy(m.state_dict())
    m._score_rows = _row_path_used
    fast = m.score_many(frame).to_numpy()
    del m._score_rows
    rows = m._score_rows(frame).to_numpy()           # the row-by-row reference (float32 batch errors)
    np.testing.assert_allclose(fast, rows, rtol=1e-5, atol=1e-6)
    assert ((fast >= 0.5) == (rows >= 0.5)).all() and (fast >= 0.5).any()
    after = m.state_dict()
    assert _plain(after["extra"]["likelihood"]) == _plain(before["extra"]["likelihood"])
    if m.series_ is not None:
        assert after["extra"]["series"]["seen"].tolist() == before["extra"]["series"]["seen"].tolist()
    # the first row's score is score_one's (same float64 network)
    assert fast[0] == pytest.approx(m.score_one(frame.iloc[0].to_dict()), rel=1e-12)


def test_frames_that_cannot_take_the_frame_path_are_learned_row_by_row_exactly():
    X = _series().iloc[:800]
    a, b = AutoencoderDetector(seed=5, **SERIES), AutoencoderDetector(seed=5, **SERIES)
    X2 = X.copy()
    X2.loc[500, "value"] = math.nan                  # a NaN row
    X2["extra"] = np.where(np.arange(len(X2)) >= 700, 1.0, np.nan)   # a new feature
    for x in X2.to_dict(orient="records"):
        a.learn_one(x)
    b.learn_many(X2.iloc[:300])                      # the frame path (known floats)
    b.learn_many(X2.iloc[300:])                      # NaN and growth: row by row
    assert a.n_seen_ == b.n_seen_ and a.features_.names == b.features_.names
    np.testing.assert_allclose(_state(a)[1], _state(b)[1], rtol=1e-6, atol=1e-9)


def test_range_novelty_and_series_context_frame_helpers_match_their_loops():
    rng = np.random.default_rng(0)
    V = np.cumsum(rng.standard_normal((300, 2)), axis=0)
    r1, r2 = RangeNovelty(), RangeNovelty()
    names = ["p", "q"]
    r1.update_many(names, V[:50])
    loop = []
    for row in V[:50]:
        r2.update(dict(zip(names, row.tolist())))
    for row in V[50:]:
        x = dict(zip(names, row.tolist()))
        loop.append(r2.novel(x))
        r2.update(x)
    assert r1.novel_many(names, V[50:]).tolist() == loop and any(loop)
    r1.update_many(names, V[50:])
    assert r1.state_dict() == r2.state_dict()
    for context in (True, False):
        _series_context_helpers_match(V[:, 0].tolist(), context)
    lk = Likelihood(learning=10, long=50)
    for v in V[:100, 0].tolist():
        lk.update(abs(v))
    twin = lk.fork()
    twin.update(100.0)
    assert lk.n == 100 and twin.n == 101 and len(lk.tails[0].recent) == lk.short


def _series_context_helpers_match(vals, context):
    s1, s2 = SeriesContext(context=context), SeriesContext(context=context)
    s1.scores(vals[:100])
    for v in vals[:100]:
        s2.update(v)
    before = s1.state_dict()
    peek = s1.scores(vals[100:], keep=False)
    after = s1.state_dict()
    assert before.pop("seen").tolist() == after.pop("seen").tolist() and before == after
    ref = []
    for v in vals[100:]:
        ref.append(s2.signals(v))
        s2.update(v)
    np.testing.assert_allclose(peek, np.array(ref), rtol=1e-12)
    assert peek.shape == (len(vals) - 100, 2 if context else 1)
    if context:
        assert peek[:, 1].any()


@pytest.mark.parametrize("extra", [0, 2])
def test_likelihood_update_many_is_a_loop_of_update(extra):
    rng = np.random.default_rng(1)
    raw = np.abs(rng.standard_normal(3000))
    raw[1400:1420] += 5.0
    raw[2500] += 9.0
    ex = np.abs(rng.standard_normal((3000, extra))) if extra else None
    novel = np.zeros(3000, bool)
    novel[2000] = novel[2050] = True
    a, b = Likelihood(long=400, learning=100), Likelihood(long=400, learning=100)
    ref, since = [], []
    for i in range(3000):
        ref.append(a.update(raw[i], bool(novel[i]), tuple(ex[i]) if extra else ())[0])
        since.append(a.since)
    out, out_since = [], []
    for s in range(0, 3000, 37):    # stretches shorter than `long`, and one longer
        o, t = b.update_many(raw[s:s + 37], novel[s:s + 37], None if ex is None else ex[s:s + 37])
        out += o.tolist()
        out_since += t.tolist()
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-12)
    assert out_since == since and sum(v >= 0.5 for v in ref) >= 2
    c = Likelihood(long=400, learning=100)
    o, _ = c.update_many(raw, novel, ex)       # one call longer than `long`
    np.testing.assert_allclose(o, ref, rtol=1e-9, atol=1e-12)
    for ta, tc in zip(a.tails, c.tails):
        np.testing.assert_allclose(list(ta.means), list(tc.means), rtol=1e-12)
        assert ta.s1 == pytest.approx(tc.s1, rel=1e-9) and ta.s2 == pytest.approx(tc.s2, rel=1e-9)

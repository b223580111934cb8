"""Record density evidence: causal kNN distances, frames equal to a loop, resumable, and what it
adds to `AutoencoderDetector` on records of several features."""

import pickle

import numpy as np
import pandas as pd
import pytest

from streamnn import AutoencoderDetector
from streamnn.alarm_density import RecordDensity, kth_smallest


def _rows(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    V = rng.normal(size=(n, 4)) * [1.0, 10.0, 100.0, 0.1] + [0.0, 5.0, -3.0, 1e3]   # features of any scale
    V[100, 2] = np.nan                                                             # skipped rows
    V[n // 2, 0] = np.inf
    V[n * 3 // 5, 1] = 1e200                                                       # its square overflows
    return V


def _loop(d, V):
    out = []
    for v in V:
        out.append(d.signals(v)[0])
        d.update(v)
    return np.array(out)


def _reference(V, k, memory):
    """The k-th nearest distance written out: each finite row against the last `memory` finite
    rows before it, features weighed by 1 / the variance of all finite rows before it."""
    out, past = np.full(len(V), np.nan), []
    for i, v in enumerate(V):
        with np.errstate(over="ignore", invalid="ignore"):
            if not np.isfinite(v * v).all():
                continue
        if len(past) >= k:
            P, W = np.array(past[-memory:]), np.array(past)
            w = 1.0 / np.maximum(W.var(axis=0), 1e-18 * (1.0 + W.mean(axis=0) ** 2))
            d = np.sort(((P - v) ** 2 * w).sum(axis=1))[k - 1]
            out[i] = 0.5 * np.log(max(d, 1e-4))
        past.append(v)
    return out


@pytest.mark.parametrize("k, memory", [(20, 1000), (5, 50)])
def test_a_loop_equals_the_formula_written_out(k, memory):
    V = _rows(600)
    got, ref = _loop(RecordDensity(k, memory), V), _reference(V, k, memory)
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got[~np.isnan(got)], ref[~np.isnan(ref)], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("k, memory, frame", [(20, 1000, 256), (5, 50, 64), (5, 50, 300), (3, 10, 1)])
def test_frames_equal_a_loop_and_scoring_is_pure(k, memory, frame):
    V = _rows()
    loop = _loop(RecordDensity(k, memory), V)
    d, got = RecordDensity(k, memory), []
    for a in range(0, len(V), frame):
        before = pickle.dumps(d)
        peek = d.scores(V[a:a + frame], keep=False)
        assert pickle.dumps(d) == before                  # keep=False leaves the state as it was
        got.append(d.scores(V[a:a + frame]))
        np.testing.assert_array_equal(np.isnan(peek), np.isnan(got[-1]))
    got = np.concatenate(got)[:, 0]
    assert np.array_equal(np.isnan(got), np.isnan(loop))
    np.testing.assert_allclose(got[~np.isnan(got)], loop[~np.isnan(loop)], rtol=1e-12, atol=1e-12)
    assert np.isnan(got[[100, 750, 900]]).all() and np.isfinite(got[-100:]).all()


@pytest.mark.parametrize("width", [1, 40, 256, 257, 384, 1000, 1152, 2100])
@pytest.mark.parametrize("k", [1, 20, 128, 129])
def test_kth_smallest_equals_numpys_partition(width, k):
    """The blocked selection is exact: the same value as np.partition, with ties, infinities and
    widths that are or are not whole blocks."""
    if k > width:
        pytest.skip("k beyond the row")
    rng = np.random.default_rng(width * 1000 + k)
    for D in (rng.random((7, width)), np.round(rng.random((7, width)), 1),
              np.where(rng.random((7, width)) < 0.7, np.inf, rng.random((7, width)))):
        want = np.partition(D, k - 1, axis=1)[:, k - 1]
        got = kth_smallest(D.copy(), k)
        assert np.array_equal(got, want)


def test_a_sparse_region_scores_higher_and_the_state_resumes_exactly():
    rng = np.random.default_rng(1)
    V = rng.normal(size=(800, 2))
    d = RecordDensity()
    _loop(d, V[:500])
    inside, far = d.signals(np.array([0.1, 0.0]))[0], d.signals(np.array([3.5, -3.5]))[0]
    assert far > inside + 1.0
    twin = RecordDensity()
    twin.load_state_dict(pickle.loads(pickle.dumps(d.state_dict())))
    np.testing.assert_array_equal(_loop(twin, V[500:]), _loop(d, V[500:]))


def test_a_new_number_of_features_starts_again():
    d = RecordDensity(k=3, memory=20)
    _loop(d, np.random.default_rng(2).normal(size=(30, 3)))
    assert np.isnan(d.signals(np.zeros(2))[0])            # nothing stored of this width yet
    d.update(np.zeros(2))
    assert d.C == 2 and d.size == 1


def _rare_region_stream(n=2500, seed=0):
    """Two features on a ring (normal), 3 % of events scattered over its empty centre (anomalies): a network
    that reconstructs the plane sees nothing odd; the neighbourhood of a centre event is empty."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 2 * np.pi, n)
    V = np.c_[np.cos(t), np.sin(t)] * 3.0 + rng.normal(scale=0.3, size=(n, 2))
    odd = rng.random(n) < 0.03
    odd[:50] = False
    V[odd] = rng.uniform(-1.5, 1.5, size=(odd.sum(), 2))
    return pd.DataFrame(V, columns=["a", "b"]), odd


def _auc(labels, scores):
    from sklearn.metrics import roc_auc_score
    return roc_auc_score(labels, scores)


def test_the_detector_finds_a_rare_region_of_records_with_the_density_evidence():
    X, odd = _rare_region_stream()
    aucs = {}
    for name, params in (("default", {}), ("off", {"alarm_params": {"density": None}})):
        det, scores = AutoencoderDetector(seed=0, **params), []
        for x in X.to_dict(orient="records"):
            scores.append(det.score_one(x))
            det.learn_one(x)
        aucs[name] = _auc(odd, scores)
        assert (det.density_ is None) == (name == "off")
    assert aucs["default"] > 0.85 and aucs["default"] > aucs["off"] + 0.3, aucs   # measured 0.91 vs 0.34


def test_detector_frames_equal_a_loop_with_the_density_and_old_states_go_on_without_it():
    X, _ = _rare_region_stream(1200, seed=3)
    a, b = AutoencoderDetector(seed=1), AutoencoderDetector(seed=1)
    for x in X.iloc[:1000].to_dict(orient="records"):
        a.learn_one(x)
    for i in range(0, 1000, 256):
        b.learn_many(X.iloc[i:min(i + 256, 1000)])
    assert a.density_.n == b.density_.n == 1000
    np.testing.assert_allclose(a.density_.buf, b.density_.buf)
    rest = X.iloc[1000:]
    np.testing.assert_allclose(a.score_many(rest).to_numpy(), b.score_many(rest).to_numpy(), atol=1e-6)
    # a state saved before the density evidence existed: the detector goes on without it
    state = a._extra_state()
    state.pop("density")
    c = AutoencoderDetector(seed=1)
    c.learn_one(X.iloc[0].to_dict())
    c._load_extra_state(state)
    assert c.density_ is None

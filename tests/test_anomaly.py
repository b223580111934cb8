"""AutoencoderDetector and ScoreCalibrator: river's checks (offline), calibration, guard, variants, state."""

import csv
import math
import pickle
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from river import anomaly, checks, datasets

import streamnn
from streamnn.anomaly import AutoencoderDetector
from streamnn.autoencoders import AutoEncoder, errors_numpy, numpy_errors_plan
from streamnn.calibration import ScoreCalibrator

DATA = Path(streamnn.__file__).parent / "data"


class SyntheticSensors:
    """Stands in for river's CreditCard (a download) in river's checks: 5 correlated sensors,
    about 2 % of events with a broken correlation or a spike (label True)."""

    def __init__(self, seed=11):
        self.seed = seed

    def __iter__(self):
        rng = random.Random(self.seed)
        while True:
            a, b = rng.gauss(0, 1), rng.gauss(0, 1)
            x = {"v0": a, "v1": 2 * a + rng.gauss(0, 0.1), "v2": b, "v3": a - b + rng.gauss(0, 0.1),
                 "v4": rng.gauss(5, 1)}
            anomalous = rng.random() < 0.02
            if anomalous:
                x["v1"] += rng.choice([-1, 1]) * rng.uniform(6, 10)
            yield x, anomalous

    def take(self, n):
        import itertools
        return itertools.islice(iter(self), n)


def stream(n, seed=0, **kw):
    return [x for x, _ in SyntheticSensors(seed).take(n)]


# --- river's check suite, offline -------------------------------------------------------------

CHECKED = {
    "dense": AutoencoderDetector(window=1, hidden=(8,), latent=2, seed=1),
    "default": AutoencoderDetector(seed=1),
    "conv": AutoencoderDetector(window=8, encoder="conv", seed=1),
    "vae-mask": AutoencoderDetector(window=4, variational=True, denoise="mask", seed=1),
    "lstm": AutoencoderDetector(window=4, encoder="lstm", hidden=(8,), seed=1),
}


@pytest.fixture
def offline_datasets(monkeypatch):
    monkeypatch.setattr(datasets, "CreditCard", SyntheticSensors)


def _check_ids():
    mp = pytest.MonkeyPatch()
    mp.setattr(datasets, "CreditCard", SyntheticSensors)
    try:
        for name, model in CHECKED.items():
            marks = [] if name in ("dense", "default") else [pytest.mark.slow]
            for i, check in enumerate(checks.yield_checks(model)):
                yield pytest.param(name, i, id=f"{name}-{i}-{check.__name__}", marks=marks)
    finally:
        mp.undo()


@pytest.mark.parametrize("name, index", list(_check_ids()))
def test_river_check(name, index, offline_datasets):
    model = CHECKED[name]
    check = list(checks.yield_checks(model))[index]
    check(model.clone())


# --- calibration ------------------------------------------------------------------------------

def test_calibrated_false_alarm_rate_holds_while_the_network_learns():
    events = stream(6000, seed=3)
    labels = [y for _, y in SyntheticSensors(3).take(6000)]
    model = AutoencoderDetector(window=1, alarms=None, seed=0, lr=0.005, update_every=16)  # learns fast
    cal, raw = [], []
    for x in events:
        cal.append(model.score_one(x))
        raw.append(model.raw_score_one(x))
        model.learn_one(x)
    cal, raw, normal = np.array(cal), np.array(raw), ~np.array(labels)
    early, late = slice(200, 1000), slice(1000, 6000)   # learning (after the grace) / trained
    rate = lambda s, t, part: float((s[part][normal[part]] >= t).mean())  # noqa: E731
    assert np.median(raw[late]) < 0.6 * np.median(raw[200:400])  # the raw scale moved...
    assert rate(cal, 0.99, early) < 0.03                          # ...no flood of alarms early,
    assert 0.001 < rate(cal, 0.99, late) < 0.03                   # about the nominal 1 % later
    assert 0.001 < rate(cal, 0.99, slice(3000, 6000)) < 0.03
    # a raw-error threshold set for 1 % early on no longer means 1 % later
    t_raw = np.quantile(raw[early][normal[early]], 0.99)
    assert rate(raw, t_raw, late) < 0.3 * rate(raw, t_raw, early)
    # and the planted anomalies are ranked far above the normal events
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(~normal[250:], cal[250:]) > 0.95


@pytest.mark.parametrize("method", ["tail", "rank", "zscore"])
def test_calibrator_is_monotone_vectorized_and_round_trips(method):
    rng = np.random.default_rng(0)
    cal = ScoreCalibrator(method, window=300, min_samples=30)
    assert cal.transform(5.0) == 0.0                       # grace period
    for s in rng.lognormal(0, 1, 700):
        cal.update(s)
    grid = np.linspace(0.01, 40, 500)
    one = np.array([cal.transform(g) for g in grid])
    assert np.all(np.diff(one) >= -1e-12)
    np.testing.assert_allclose(cal.transform_many(grid), one)
    twin = ScoreCalibrator(method, window=300, min_samples=30)
    twin.load_state_dict(pickle.loads(pickle.dumps(cal.state_dict())))
    for s in rng.lognormal(0, 1, 50):
        cal.update(s)
        twin.update(s)
    assert [cal.transform(g) for g in grid[::25]] == [twin.transform(g) for g in grid[::25]]


def test_tail_calibration_flags_about_the_nominal_rate_and_winsorizes_alarms():
    rng = np.random.default_rng(1)
    cal = ScoreCalibrator("tail", window=2000)
    for s in rng.gamma(2.0, 1.0, 2000):
        cal.update(s)
    fresh = rng.gamma(2.0, 1.0, 20000)
    assert 0.005 < float((cal.transform_many(fresh) >= 0.99).mean()) < 0.02
    top = cal.sorted[-1]
    cal.update(1e6, alarm=True)          # an alarm counts as high, but cannot stretch the tail
    assert cal.sorted[-1] == top


# --- detector behaviour ----------------------------------------------------------------------

def _sine(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.sin(np.arange(n) * 2 * np.pi / 50) + rng.normal(0, 0.05, n)


@pytest.mark.parametrize("params", [
    dict(), dict(encoder="conv"), dict(variational=True), dict(variational=True, vae_score="recon"),
    dict(denoise="gaussian"), dict(denoise="mask", noise=0.2),
])
def test_windowed_variants_flag_a_spike_in_a_single_sensor_stream(params):
    v = _sine(2500)
    model = AutoencoderDetector(window=16, alarms=None, seed=0, **params)
    for x in v[:2400]:
        model.learn_one({"value": x})
    normal = model.score_one({"value": v[2400]})
    spike = model.score_one({"value": v[2400] + 3.0})
    assert spike > 0.99 > normal
    assert model.predict_one({"value": v[2400] + 3.0})


@pytest.mark.slow
def test_default_raises_one_early_alarm_per_incident_on_a_single_sensor():
    v = _sine(3000, seed=4)
    model = AutoencoderDetector(seed=0)                 # defaults: likelihood alarms
    alarms = []
    for i, x in enumerate(v):
        x = x + (4.0 if 2400 <= i < 2440 else 0.0)      # a 40-event incident
        alarms.append(model.predict_one({"value": x}))
        model.learn_one({"value": x})
    hits = [i for i, a in enumerate(alarms) if a]
    assert sum(a for a in alarms[:2400]) <= 2           # rare on the normal part
    assert any(2400 <= i < 2410 for i in hits)          # early
    assert sum(2400 <= i < 2500 for i in hits) == 1     # one alarm for the incident
    assert all(0.0 <= model.score_one({"value": x}) <= 1.0 for x in v[:50])


def test_lstm_encoder_flags_a_spike():
    v = _sine(1500)
    model = AutoencoderDetector(window=8, encoder="lstm", alarms=None, seed=0, update_every=4)
    for x in v[:1400]:
        model.learn_one({"value": x})
    assert model.score_one({"value": v[1400] + 3.0}) > 0.99 > model.score_one({"value": v[1400]})


def test_keys_keep_separate_windows():
    model = AutoencoderDetector(window=3, key="sensor", seed=0)
    for i in range(10):
        model.learn_one({"sensor": "a", "value": float(i)})
        model.learn_one({"sensor": "b", "value": 100.0 + i})
    assert sorted(model.windows_) == ["a", "b"]
    assert model.windows_["a"].tolist() == [[8.0, 9.0]]
    assert model.windows_["b"].tolist() == [[108.0, 109.0]]
    assert model.features_.names == ["value"]          # the key is not an input


def test_contamination_guard_skips_alarms_but_adapts_to_a_lasting_shift():
    model = AutoencoderDetector(window=1, guard=True, alarms=None, seed=0, lr=0.005, update_every=16)  # short stream
    for x in stream(1500):
        model.learn_one(x)
    seen, guarded = model.n_seen_, model.n_guarded_
    assert 0 < guarded < 60                             # about the planted 2 %
    model.learn_one({"v0": 0.0, "v1": 9.0, "v2": 0.0, "v3": 0.0, "v4": 5.0})
    assert model.n_guarded_ == guarded + 1 and model.n_seen_ == seen
    shifted = [{**x, "v4": x["v4"] + 40.0} for x in stream(1500, seed=9)]
    for x in shifted:
        model.learn_one(x)
    assert model.n_seen_ > seen + 1000                  # the drift escape let it learn again
    assert model.score_one(shifted[-1]) < 0.99


def _flags(wrapper, n=2000):
    flags = []
    for x, y in SyntheticSensors(5).take(n):
        flags.append((wrapper.classify(wrapper.score_one(x)), y))
        wrapper.learn_one(x)
    late = flags[n // 2:]
    hits = sum(f for f, y in late if y) / sum(y for _, y in late)
    false = sum(f for f, y in late if not y) / sum(not y for _, y in late)
    return hits, false


def test_works_with_river_filters():
    # QuantileFilter learning every event, the detector's own guard keeping alarms out of training
    # (2 % of the events are anomalies: flag the top 3 % of scores)
    # a 2,000-event stream: the network must learn fast (the defaults learn slowly, for contaminated streams)
    hits, false = _flags(anomaly.QuantileFilter(AutoencoderDetector(window=1, guard=True, alarms=None, seed=0, lr=0.005,
                                                                    update_every=16), q=0.97,
                                                protect_anomaly_detector=False))
    assert hits > 0.8 and false < 0.05
    # ThresholdFilter on the calibrated score, in a pipeline (river's ThresholdFilter only learns
    # with protect_anomaly_detector=True, which hides alarms from learn_one: see docs/anomaly.md)
    from river import compose, preprocessing
    model = compose.Pipeline(preprocessing.StandardScaler(),
                             anomaly.ThresholdFilter(AutoencoderDetector(window=1, alarms=None, seed=0, lr=0.005,
                                                                         update_every=16), threshold=0.99))
    for x, y in SyntheticSensors(6).take(1500):
        if not y:
            model.learn_one(x)
    normal, broken = {"v0": 1.0, "v1": 2.0, "v2": 0.0, "v3": 1.0, "v4": 5.0}, {"v0": 1.0, "v1": -6.0, "v2": 0.0,
                                                                             "v3": 1.0, "v4": 5.0}
    flt = model["ThresholdFilter"]
    assert flt.classify(model.score_one(broken)) and not flt.classify(model.score_one(normal))


def test_learn_many_equals_learn_one_and_score_many_matches_score_one():
    events = stream(700)
    a, b = AutoencoderDetector(window=4, seed=2), AutoencoderDetector(window=4, seed=2)
    for x in events[:600]:
        a.learn_one(x)
    b.learn_many(pd.DataFrame(events[:600]))
    frame = pd.DataFrame(events[600:])
    assert a.score_many(frame).tolist() == b.score_many(frame).tolist()
    first = a.score_many(frame.iloc[:1])
    assert first.iloc[0] == pytest.approx(a.score_one(events[600]), rel=1e-6)   # float32 batch vs float64 row
    before = pickle.dumps(a)
    a.score_many(frame)
    a.predict_many(frame)
    assert pickle.dumps(a) == before                   # scoring is pure
    flat = AutoencoderDetector(window=1, alarms=None, seed=2)
    flat.learn_many(pd.DataFrame(events[:600]))
    np.testing.assert_allclose(flat.score_many(frame).to_numpy(), [flat.score_one(x) for x in events[600:]],
                               atol=1e-9)
    # with the alarm rules, a batch's scores are the sequential likelihood over the batch's errors
    lk = AutoencoderDetector(window=1, seed=2)
    lk.learn_many(pd.DataFrame(events[:600]))
    raw = [lk.raw_score_one(x) for x in events[600:]]
    twin = pickle.loads(pickle.dumps(lk.likelihood_))
    rng = pickle.loads(pickle.dumps(lk.range_))
    dens = pickle.loads(pickle.dumps(lk.density_))   # records: the density evidence joins the error
    expect = []
    for r, x in zip(raw, events[600:]):
        v = np.array([x[n] for n in lk.features_.names])
        expect.append(twin.update(r, rng.novel(x), dens.signals(v))[0])
        rng.update(x)
        dens.update(v)
    np.testing.assert_allclose(lk.score_many(frame).to_numpy(), expect, atol=1e-6)


@pytest.mark.parametrize("params", [dict(window=1), dict(window=6, encoder="conv"),
                                    dict(window=4, variational=True, denoise="mask", replay=0.5),
                                    dict(window=4, guard=True, key="k")])
def test_state_round_trip_resumes_exactly(params, tmp_path):
    events = [{**x, "k": i % 2} for i, x in enumerate(stream(900, seed=4))]
    full = AutoencoderDetector(seed=3, **params)
    for x in events:
        full.learn_one(x)
    part = AutoencoderDetector(seed=3, **params)
    for x in events[:500]:
        part.learn_one(x)
    part.save(tmp_path / "ad.pt")
    resumed = streamnn.load(tmp_path / "ad.pt")
    assert [resumed.score_one(x) for x in events[500:520]] == [part.score_one(x) for x in events[500:520]]
    for x in events[500:]:
        resumed.learn_one(x)
    probe = events[-50:]
    assert [resumed.score_one(x) for x in probe] == [full.score_one(x) for x in probe]


def test_feature_growth_and_missing_values():
    model = AutoencoderDetector(window=4, seed=0)
    for i in range(300):
        model.learn_one({"a": math.sin(i / 5)})
    lin = model.module_.encoder[0]
    old = lin.weight.detach().clone()
    for i in range(300):
        model.learn_one({"a": math.sin(i / 5), "b": float("nan") if i % 7 == 0 else math.cos(i / 5)})
    assert model.n_in_ == 8 and model.module_.encoder[0].weight.shape[1] == 8
    assert all(torch.isfinite(p).all() for p in model.module_.parameters())
    assert model.module_.encoder[0].weight.shape[0] == old.shape[0]
    assert math.isfinite(model.score_one({"a": 0.5}))


@pytest.mark.parametrize("params", [dict(encoder="dense"), dict(encoder="conv"),
                                    dict(encoder="dense", variational=True)])
def test_numpy_scoring_matches_torch(params):
    net = AutoEncoder(3, 8, hidden=(6, 5), latent=2, seed=0, **params).eval()
    Z = np.random.default_rng(0).normal(size=(7, 24)).astype(np.float32)
    with torch.no_grad():
        recon, mu, logvar = net(torch.from_numpy(Z))
        expect = ((recon - torch.from_numpy(Z)) ** 2).mean(1)
        if logvar is not None:
            expect = expect + 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1) / 24
    np.testing.assert_allclose(errors_numpy(numpy_errors_plan(net), Z, 1.0), expect.numpy(), rtol=1e-4, atol=1e-6)


def test_numpy_scoring_of_one_row_matches_torch():
    """The per-event path (one row, matrix-vector products) against torch."""
    net = AutoEncoder(1, 16, hidden=(8,), latent=4, seed=0).eval()
    Z = np.random.default_rng(1).normal(size=(5, 16)).astype(np.float32)
    with torch.no_grad():
        expect = ((net(torch.from_numpy(Z))[0] - torch.from_numpy(Z)) ** 2).mean(1).numpy()
    plan = numpy_errors_plan(net)
    got = [errors_numpy(plan, z, 0.0) for z in Z]
    assert all(isinstance(g, float) for g in got)
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-7)


def _stream(n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"value": float(math.sin(i / 7) + 0.1 * rng.normal())} for i in range(n)]


@pytest.mark.parametrize("kw", [dict(), dict(optimizer="adamw", weight_decay=0.01),
                                dict(optimizer="sgd", lr=0.05), dict(grad_clip=0.5, activation="relu"),
                                dict(window=1, hidden=(8, 6), latent=3, replay=0.0, update_every=1, batch_size=4)])
def test_numpy_training_step_matches_torch(kw):
    """AEKernel (the default numpy step) against the torch step: same weights, optimizer state and
    scores after 400 events."""
    events = _stream(400)
    fast, slow = AutoencoderDetector(seed=3, **kw), AutoencoderDetector(seed=3, **kw)
    slow._step = lambda: (setattr(slow, "_ae_kernel", False), AutoencoderDetector._step(slow))[1]
    a, b = [], []
    for x in events:
        a.append(fast.score_one(x))
        fast.learn_one(x)
        b.append(slow.score_one(x))
        slow.learn_one(x)
    assert fast._ae_kernel and slow._ae_kernel is False
    assert fast.n_updates_ == slow.n_updates_ > 0
    for p, q in zip(fast.module_.parameters(), slow.module_.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-3, atol=1e-4)
    for va, vb in zip(fast.optimizer_.state_dict()["state"].values(), slow.optimizer_.state_dict()["state"].values()):
        for name in va:
            np.testing.assert_allclose(torch.as_tensor(va[name]).numpy(), torch.as_tensor(vb[name]).numpy(),
                                       rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="encoder"):
        AutoencoderDetector(encoder="gru")
    with pytest.raises(ValueError, match="denoise"):
        AutoencoderDetector(denoise="dropout")
    with pytest.raises(ValueError, match="threshold="):
        AutoencoderDetector(alarms=None, calibration=None).threshold_
    assert AutoencoderDetector(alarms=None, calibration="zscore").threshold_ == 3.0
    assert AutoencoderDetector().threshold_ == 0.5
    with pytest.raises(ValueError, match="alarms"):
        AutoencoderDetector(alarms="max")
    model = AutoencoderDetector(window=2, key="k")
    model.learn_one({"k": ("tuple",), "v": 1.0})
    with pytest.raises(TypeError, match="str or int keys"):
        model.state_dict()


def test_embedded_demo_slice():
    path = DATA / "machine_temperature.csv"
    assert path.stat().st_size <= 300_000
    assert "MIT" in (DATA / "NAB_LICENSE.txt").read_text() or "Permission is hereby granted" in (
        DATA / "NAB_LICENSE.txt").read_text()
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["timestamp", "value", "label"]
    labels = {r["label"] for r in rows}
    assert labels == {"0", "1"} and len(rows) > 8000


def test_a_checkpoint_saved_without_the_series_evidence_goes_on_without_it(tmp_path):
    """A detector saved without the series evidence (its state holds no `series`) resumes as it
    was saved, with the likelihood over the error alone, even when loaded with it switched on;
    one saved with it resumes with it, bit-exactly."""
    xs = [{"value": v} for v in _sine(900)]
    for context, has_series in ((False, False), (True, True)):
        d = AutoencoderDetector(alarm_params={"context": context}, seed=2)
        for x in xs[:600]:
            d.learn_one(x)
        path = tmp_path / f"d{context}.pt"
        d.save(path)
        r = streamnn.load(path, alarm_params={"context": True})   # switched on at load
        assert (r.series_ is not None) == has_series
        for x in xs[600:]:
            assert r.score_one(x) == d.score_one(x)
            r.learn_one(x)
            d.learn_one(x)

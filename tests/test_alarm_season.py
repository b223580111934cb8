"""The seasonal distance (streamnn.alarm_season) and its place in the detector's default alarms."""

import math

import numpy as np
import pytest

from streamnn import AnomalyLikelihood, AutoencoderDetector
from streamnn.alarm_season import Seasonal, find_period
from streamnn.alarm_signals import SeriesContext, series_for


def _wave(n, period, seed=0, sd=0.1, square=False):
    rng = np.random.default_rng(seed)
    ph = 2 * np.pi * np.arange(n) / period
    base = np.sign(np.sin(ph)) if square else np.sin(ph)
    return base + rng.normal(0, sd, n)


@pytest.mark.parametrize("period", [12, 48, 288, 1000])
@pytest.mark.parametrize("square", [False, True])
def test_find_period_of_a_noisy_wave(period, square):
    """The period or a multiple of it (their autocorrelations are about equal; comparing with
    whole periods back is what counts), within 1 %."""
    p = find_period(_wave(4096, period, square=square))
    k = max(1, round(p / period))
    assert p and abs(p - k * period) <= max(1, k * period // 100)


@pytest.mark.parametrize("h", [np.zeros(500), np.random.default_rng(1).normal(size=4096),
                               np.cumsum(np.random.default_rng(2).normal(size=4096)), np.arange(50.0)])
def test_no_period_in_noise_a_walk_a_constant_or_too_little(h):
    assert find_period(h) == 0


def _per_event(s, values):
    out = np.empty(len(values))
    for i, v in enumerate(values):
        out[i] = s.signal(v)
        s.update(v)
    return out


def _same(a, b):
    return np.array_equal(np.isnan(a), np.isnan(b)) and np.array_equal(a[~np.isnan(a)], b[~np.isnan(b)])


@pytest.mark.parametrize("seed", [0, 1])
def test_frames_equal_a_loop_of_events(seed):
    rng = np.random.default_rng(seed)
    v = _wave(9000, 96, seed)
    v[rng.choice(9000, 40, replace=False)] = np.nan           # missing values are skipped
    v[5000:5100] = 3.0
    ref = _per_event(Seasonal(), v.tolist())
    s, out, i = Seasonal(), np.empty(len(v)), 0
    while i < len(v):
        m = int(rng.integers(1, 1500))
        out[i:i + m] = s.scores(v[i:i + m])
        i += m
    assert _same(ref, out)
    ev = Seasonal()
    _per_event(ev, v.tolist())
    assert (s.n, s.period, s.amax) == (ev.n, ev.period, ev.amax)
    assert s.n == int(np.isfinite(v).sum()) and abs(s.period - 96) <= 1
    # keep=False scores without moving the state on
    probe = v[:700]
    before = s.state_dict()
    first = s.scores(probe, keep=False)
    assert _same(first, s.scores(probe, keep=False)) and s.n == before["n"]


def test_signal_is_small_on_the_pattern_and_large_off_it():
    s = Seasonal()
    v = _wave(3000, 50, sd=0.01, square=True)
    _per_event(s, v.tolist())
    assert s.period == 50
    assert s.signal(float(np.sign(np.sin(2 * np.pi * 3000 / 50)))) < math.log(0.05)
    assert s.signal(5.0) > math.log(3.0)
    assert math.isnan(Seasonal().signal(1.0))                # no period known yet
    assert math.isnan(s.signal(math.nan))


def test_state_round_trip_resumes_exactly():
    v = _wave(7000, 96).tolist()
    a = Seasonal()
    _per_event(a, v[:4100])
    b = Seasonal()
    b.load_state_dict(a.state_dict())
    assert _same(_per_event(a, v[4100:]), _per_event(b, v[4100:]))


def test_series_for_names_the_settings():
    assert series_for(False) is None
    assert series_for("change").width == 1
    assert series_for("season").width == 2 and series_for("season").season is not None
    assert series_for(True).width == 2 and series_for(True).season is None
    with pytest.raises(ValueError, match="'season'"):
        series_for("seasonal")
    with pytest.raises(ValueError, match="alarm_params\\['context'\\]"):
        AutoencoderDetector(alarm_params={"context": "weekly"}).learn_one({"value": 1.0})
    with pytest.raises(ValueError, match="context="):
        AnomalyLikelihood(context="yes")
    s = SeriesContext(context=False, season=True)
    assert len(s.signals(math.nan)) == 2


def _missed_peaks(n=4000, period=48, at=3000, seed=0):
    """A square wave whose peaks stop for two periods at `at`: each value stays within the range
    seen and changes no more than usual, only the same phase of the previous days tells."""
    v = _wave(n, period, seed, sd=0.05, square=True)
    v[at:at + 2 * period] = -1.0 + np.random.default_rng(seed + 1).normal(0, 0.05, 2 * period)
    return v


def _first_alarm(model, v, start=0):
    for i, x in enumerate(v.tolist()):
        s = model.score_one({"value": x})
        model.learn_one({"value": x})
        if i >= start and s >= 0.5:
            return i
    return None


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_default_detector_alarms_on_a_missed_daily_peak(seed):
    v = _missed_peaks(seed=seed)
    hit = _first_alarm(AutoencoderDetector(seed=seed), v, start=2000)
    assert hit is not None and 3000 <= hit < 3000 + 2 * 48
    miss = _first_alarm(AutoencoderDetector(seed=seed, alarm_params={"context": False}), v, start=2000)
    assert miss is None or miss >= 3000 + 2 * 48             # the error alone does not see it in time


def test_detector_checkpoint_keeps_the_seasonal_state(tmp_path):
    v = _wave(2500, 48)
    a = AutoencoderDetector(seed=0)
    for x in v[:2000].tolist():
        a.learn_one({"value": x})
    path = tmp_path / "d.pt"
    a.save(path)
    b = AutoencoderDetector.load(path)
    assert b.series_.season.period == a.series_.season.period == 48
    for x in v[2000:].tolist():
        assert a.score_one({"value": x}) == b.score_one({"value": x})
        a.learn_one({"value": x})
        b.learn_one({"value": x})


def test_fisher_leaves_out_signals_with_no_evidence():
    """A NaN tail (no history, a series with no period) is left out of the fusion, not counted as
    a p-value of 1 that dilutes the others; the vectorized form agrees row by row."""
    from streamnn.alarms import fisher, fisher_many
    assert fisher([3.0, math.nan, 2.0]) == fisher([3.0, 2.0])
    assert fisher([4.0, math.nan]) == 4.0
    assert fisher([3.0, 0.0, 2.0]) < fisher([3.0, 2.0])           # a real "nothing unusual" does count
    rng = np.random.default_rng(0)
    U = rng.exponential(2.0, size=(3, 200))
    U[1, rng.random(200) < 0.3] = np.nan
    U[2, rng.random(200) < 0.3] = np.nan
    got = fisher_many(list(U))
    want = np.array([fisher(list(U[:, j])) for j in range(200)])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

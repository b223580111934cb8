"""Level-shift evidence: the windows' formula, frames equal to a loop, exact resume, old states,
and what it adds to `AutoencoderDetector` on a slow drift."""

import pickle
import warnings

import numpy as np
import pytest

from streamnn import AutoencoderDetector
from streamnn.alarm_level import LevelShift
from streamnn.alarm_signals import SeriesContext, series_for


def _walk(n=4000, offset=0.0, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    v = np.cumsum(rng.normal(size=n)) * scale + offset
    v[n // 2:n // 2 + 50] += 1e4 * scale      # a jump far outside the level's spread
    v[777] = np.nan                           # skipped
    return v


def _loop(ls, v):
    out = []
    for x in v:
        out.append(ls.signal(x))
        ls.update(x)
    return np.array(out)


def _formula(v, short=30, long=600, min_long=100):
    f = v[np.isfinite(v)]
    out = np.full(len(f), np.nan)
    for i in range(short + min_long - 1, len(f)):
        recent, level = f[i - short + 1:i + 1], f[max(0, i - short + 1 - long):i - short + 1]
        floor = max(1e-6 * np.abs(f[:i]).max(), 1e-300)
        out[i] = abs(recent.mean() - level.mean()) / max(level.std(), floor)
    full = np.full(len(v), np.nan)
    full[np.isfinite(v)] = out
    return full


@pytest.mark.parametrize("offset, scale", [(0.0, 1.0), (1e6, 1.0), (-5.0, 1e-6), (1e8, 100.0)])
def test_a_loop_equals_the_formula_written_out(offset, scale):
    v = _walk(offset=offset, scale=scale)
    got, want = _loop(LevelShift(), v), _formula(v)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    m = ~np.isnan(want)
    np.testing.assert_allclose(got[m], want[m], rtol=1e-6, atol=1e-9)


def _plain(state):
    return {k: v.tolist() if hasattr(v, "tolist") else v for k, v in state.items()}


@pytest.mark.parametrize("frame", [1, 37, 1024])
def test_frames_equal_a_loop_and_scoring_is_pure(frame):
    v = _walk()
    loop = _loop(LevelShift(), v)
    ls, got = LevelShift(), []
    for a in range(0, len(v), frame):
        before = _plain(ls.state_dict())
        peek = ls.scores(v[a:a + frame], keep=False)
        assert _plain(ls.state_dict()) == before
        got.append(ls.scores(v[a:a + frame]))
        np.testing.assert_array_equal(peek, got[-1])
    np.testing.assert_array_equal(np.concatenate(got), loop)


def test_the_state_resumes_exactly():
    v = _walk(offset=1e6)
    a = LevelShift()
    _loop(a, v[:1900])                       # not at a multiple of `long`: the sums travel as they are
    b = LevelShift()
    b.load_state_dict(pickle.loads(pickle.dumps(a.state_dict())))
    np.testing.assert_array_equal(_loop(b, v[1900:]), _loop(a, v[1900:]))


@pytest.mark.parametrize("case", ["huge", "tiny", "zeros then a step", "at the float limit"])
def test_any_scale_and_the_float_limit(case):
    """A series of any scale gets the same signal (no absolute floor); values whose squares
    overflow give signals that are not finite (left out by the alarm rules), never an error or a
    warning."""
    v = np.random.default_rng(3).normal(size=2000)
    ref = LevelShift().scores(v)
    if case == "huge":
        v = v * 1e200
    elif case == "tiny":
        v = v * 1e-100
    elif case == "zeros then a step":
        v = np.zeros(2000)
        v[1500:] = 1e-9
    else:
        v[::3], v[1::3] = 1.7e308, -1.7e308
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = LevelShift().scores(v)
    if case == "tiny":
        np.testing.assert_allclose(got, ref, rtol=1e-6)
    if case == "zeros then a step":
        assert np.nanmax(got[:1500]) == 0.0 and got[1500] > 1e6


def test_bad_parameters_and_values_that_are_not_finite():
    with pytest.raises(ValueError, match="min_long"):
        LevelShift(short=30, long=50, min_long=100)
    ls = LevelShift()
    _loop(ls, np.arange(200.0))
    n = ls.n
    assert np.isnan(ls.signal(float("nan"))) and np.isnan(ls.signal(float("inf")))
    ls.update(float("nan"))
    assert ls.n == n


def test_series_states_written_before_the_level_shift_go_on_without_it():
    new = series_for("level")
    assert new.width == 3 and new.level is not None and new.season is not None
    for x in np.sin(np.arange(500) / 7.0):
        new.update(float(x))
    old = new.state_dict()
    old.pop("level")                          # as a checkpoint of the previous release holds it
    ctx = SeriesContext()
    ctx.load_state_dict(old)
    assert ctx.level is None and ctx.width == 2 and len(ctx.signals(0.3)) == 2


def _drift(seed):
    """Noise that settles 1.5 standard deviations higher over 400 events: each step is a small
    fraction of the noise, and the network learns the new level as it comes."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=4000)
    v[3000:3400] += np.linspace(0.0, 1.5, 400)
    v[3400:] += 1.5
    return v


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_default_alarms_early_in_a_slow_drift(seed):
    """The level shift finds the drift while it builds up; the change size, the seasonal distance
    and the network's error only once the new level is far from the old one."""
    v = _drift(seed)
    alarms = {}
    for ctx in ("level", "season"):
        det = AutoencoderDetector(seed=seed, alarm_params={"context": ctx})
        flags = []
        for x in v.tolist():
            flags.append(det.score_one({"value": x}) >= 0.5)
            det.learn_one({"value": x})
        alarms[ctx] = np.flatnonzero(flags)
    first = {k: a[a >= 3000][0] for k, a in alarms.items()}
    assert first["level"] < 3200 and first["level"] <= first["season"] - 50
    before = {k: int(((a >= 300) & (a < 3000)).sum()) for k, a in alarms.items()}
    assert before["level"] <= before["season"] + 1          # at most one more false alarm

"""The per-event path of AutoencoderDetector (score_one then learn_one, NAB's loop) against the
formulas it had before it was made cheaper (issue 13, session 7), written out plainly here: the
scaled window with NaN set to 0 before the network, `W @ h` products, `(d @ d) / n`; the tails'
floors as `max(...)`. Scores must be bit-identical, event by event, on a few hundred events that
cover the window's first (NaN) events, a missing value, an int value, a spike and a new range."""

import math

import numpy as np
import pytest

from streamnn.alarms import fisher
from streamnn.anomaly import AutoencoderDetector


def _stream(n=700, seed=3):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    v = (np.sin(t / 9.0) + 0.1 * rng.standard_normal(n)).tolist()
    v[400] += 5.0                       # a spike
    v[520:560] = [x + 2.0 for x in v[520:560]]
    v[600:] = [3.0 * x for x in v[600:]]   # a new range
    xs = [{"value": x} for x in v]
    xs[450] = {"value": math.nan}       # a missing value: the registry's row, NaN in the window
    xs[451] = {"value": 1}              # an int: the registry's row too
    return xs


def _ref_error(model, x):
    """The raw error of `x` as the per-event path computed it before: transform (NaN -> 0), then
    the folded float64 network with `@`, the mean square over the scored columns."""
    lean = model._lean_plan()
    if not lean:                                      # before the first step: the batch path's
        return None
    _, win = model._event(x, grow=False)
    z = model.scaler_.transform(win.ravel())
    h = z
    steps = lean[0]
    for W, b, f in steps:
        h = W @ h
        h += b
        if f is not None:
            h = f(h)
    d = h - z
    cols = model._score_cols()
    if cols is not None:
        d = d[cols]
    return float((d @ d) / len(d))


def _ref_u(tail, raw, min_std):
    k = len(tail.means)
    if k < 2 or not math.isfinite(raw):
        return math.nan                    # no evidence: left out of Fisher's fusion
    mu = tail.s1 / k
    var = tail.s2 / k - mu * mu
    sd = max(math.sqrt(var) if var > 0.0 else 0.0, min_std * abs(mu), 1e-12)
    n = len(tail.recent)
    m = (tail.s_recent - tail.recent[0] + raw) / n if n == tail.short else (tail.s_recent + raw) / (n + 1)
    z = (m - mu) / sd
    if z < 30.0:
        return -math.log10(max(0.5 * math.erfc(z / math.sqrt(2.0)), 1e-300))
    return (0.5 * z * z + math.log(z * math.sqrt(2.0 * math.pi))) / math.log(10.0)


def _ref_score(lk, raw, novel, extra):
    if len(lk.tails[0].means) < 2 or not math.isfinite(raw):
        return 0.0
    capped = lk.hold > 0 or lk.n < lk.learning     # suppression, or the provisional learning period
    if novel:
        return lk.quiet if capped else 1.0
    us = [_ref_u(lk.tails[0], raw, lk.min_std)]
    us += [_ref_u(lk.tails[i], e, lk.min_std) if i < len(lk.tails) else math.nan for i, e in enumerate(extra, 1)]
    u = fisher(us) if extra else us[0]
    s = u / 10.0 if u <= 5.0 else 1.0 - 2.5 / u
    return lk.quiet if capped and s > lk.quiet else s


@pytest.mark.parametrize("params", [{}, {"alarm_params": {"context": True}}, {"alarm_params": {"context": False}},
                                    {"score_on": "last", "alarm_params": {"learning": 100}}])
def test_score_one_then_learn_one_equals_the_plain_formulas(params):
    model = AutoencoderDetector(seed=0, **params)
    checked = alarms = 0
    for i, x in enumerate(_stream()):
        raw = _ref_error(model, x) if model.module_ is not None else None
        if raw is not None:
            assert model.raw_score_one(x) == raw or (math.isnan(raw) and math.isnan(model.raw_score_one(x))), i
            v = x["value"]
            extra = model.series_.signals(float(v)) if model.series_ is not None else ()
            novel = model.range_.novel(x)
            ref = _ref_score(model.likelihood_, raw, novel, extra)
            score = model.score_one(x)
            assert score == ref, (i, score, ref)
            checked += 1
            alarms += score >= 0.5
        model.learn_one(x)
    assert checked >= 600 and alarms >= 1          # the spike or the new range raised an alarm


def test_nan_in_the_window_is_scaled_to_zero_as_before():
    """The window's first events hold NaN (no history yet): the error equals that of the row with
    those entries at 0 after scaling (the running mean), never NaN."""
    model = AutoencoderDetector(seed=0)
    for v in range(40):
        model.learn_one({"value": float(v % 5)})
    fresh = AutoencoderDetector(seed=0)
    fresh.load_state_dict(model.state_dict())
    fresh.windows_ = {}                               # no history: 15 NaN before the event
    raw = fresh.raw_score_one({"value": 2.0})
    ref = _ref_error(fresh, {"value": 2.0})
    assert ref is not None and math.isfinite(raw) and raw == ref

"""Alarm rules: likelihood scores are rare on normal data, one alarm per incident, causal, resumable."""

import math
import random

import numpy as np

import pytest
from river import anomaly, base, checks, datasets, preprocessing

from streamnn.alarms import AnomalyLikelihood, Likelihood

from test_anomaly import SyntheticSensors


def _noise(n, seed=0, scale=1.0):
    rng = random.Random(seed)
    return [abs(rng.gauss(0, scale)) for _ in range(n)]


def test_rare_alarms_on_normal_noise_and_one_alarm_per_burst():
    lk = Likelihood()
    scores = [lk.update(r)[0] for r in _noise(5000)]
    assert all(s <= lk.quiet for s in scores[:300])           # learning period: no alarm
    assert max(scores[:300]) > 0.0                            # but a provisional score
    assert sum(s >= 0.5 for s in scores) <= 2                 # ~no false alarm on 4,700 normal events
    burst = [lk.update(r + 6.0) for r in _noise(lk.suppress, seed=1)]
    alarms = [i for i, (_, a) in enumerate(burst) if a]
    assert alarms and alarms[0] < 10                          # early
    assert len(alarms) == 1                                   # suppressed afterwards
    assert all(s <= lk.quiet for s, _ in burst[alarms[0] + 1:])


def test_learning_period_ranks_events_without_an_alarm():
    # records (short=1): an outlier during the learning period outranks the normal events
    # around it (a score, not 0.0) but stays at most `quiet`; the same outlier after the
    # learning period is an alarm
    lk = Likelihood(short=1, suppress=0)
    early = [lk.update(r)[0] for r in _noise(100)]
    odd, alarm = lk.update(20.0)
    assert not alarm and max(early[20:]) < odd == lk.quiet
    for r in _noise(300, seed=2):
        lk.update(r)
    late, alarm = lk.update(20.0)
    assert alarm and late > lk.alarm


def test_score_is_pure_and_equals_the_update():
    lk = Likelihood(learning=50, long=200)
    for r in _noise(400):
        peek = lk.score(r)
        assert lk.score(r) == peek and lk.update(r)[0] == peek


def test_state_round_trip_resumes_exactly():
    a = Likelihood(learning=50, long=300)
    for r in _noise(500):
        a.update(r)
    b = Likelihood(learning=50, long=300)
    b.load_state_dict(a.state_dict())
    rest = _noise(400, seed=3) + [9.0] * 20
    ra, rb = [a.update(r) for r in rest], [b.update(r) for r in rest]
    assert [s for s, _ in ra] == pytest.approx([s for s, _ in rb], abs=1e-9)
    assert [f for _, f in ra] == [f for _, f in rb] and any(f for _, f in ra)


def test_state_is_tensors_and_old_list_states_still_load():
    """The history is saved as float64 tensors (a list of 10,000 floats made every runtime
    checkpoint of the detector cost ~70 ms to pickle); a state saved as lists still resumes."""
    import torch

    a = Likelihood(learning=50, long=300)
    for r in _noise(500):
        a.update(r)
    s = a.state_dict()
    assert torch.is_tensor(s["means"]) and s["means"].dtype == torch.float64 and len(s["means"]) == 300
    assert torch.is_tensor(s["recent"])
    old = {**s, "recent": s["recent"].tolist(), "means": s["means"].tolist()}
    b, c = Likelihood(learning=50, long=300), Likelihood(learning=50, long=300)
    b.load_state_dict(s)
    c.load_state_dict(old)
    rest = _noise(300, seed=4) + [9.0] * 10
    ra, rb, rc = ([m.update(r) for r in rest] for m in (a, b, c))
    assert ra == rb == rc


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="quiet"):
        Likelihood(quiet=0.6, alarm=0.5)
    with pytest.raises(ValueError, match="short"):
        Likelihood(short=10, long=5)


def test_wrapper_protects_the_detector_and_flags_a_spike():
    rng = random.Random(0)
    model = AnomalyLikelihood(preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=0))
    flags = []
    for i in range(3000):
        v = math.sin(i / 20) + rng.gauss(0, 0.05) + (5.0 if 2500 <= i < 2505 else 0.0)
        x = {"value": v}
        flags.append(model.predict_one(x))
        model.learn_one(x)
    first = [i for i, f in enumerate(flags) if f]
    assert first and 2500 <= first[0] < 2512 and len(first) <= 3
    assert model.likelihood_.n == 3000


def _check_ids():
    mp = pytest.MonkeyPatch()
    mp.setattr(datasets, "CreditCard", SyntheticSensors)
    try:
        model = AnomalyLikelihood(**next(AnomalyLikelihood._unit_test_params()))
        return [pytest.param(i, id=f"{i}-{c.__name__}") for i, c in enumerate(checks.yield_checks(model))]
    finally:
        mp.undo()


@pytest.mark.parametrize("index", _check_ids())
def test_river_checks(index, monkeypatch):
    monkeypatch.setattr(datasets, "CreditCard", SyntheticSensors)
    model = AnomalyLikelihood(**next(AnomalyLikelihood._unit_test_params()))
    check = list(checks.yield_checks(model))[index]
    check(model.clone())


def test_clone_keeps_params():
    m = AnomalyLikelihood(anomaly.HalfSpaceTrees(seed=3), suppress=50)
    c = m.clone()
    assert c.suppress == 50 and isinstance(c.detector, anomaly.HalfSpaceTrees)
    assert isinstance(c, base.AnomalyDetector)


def test_wrapper_series_evidence_one_value_stream_only():
    """context=True: on a one-value stream the change size and context novelty join the wrapped
    detector's raw score (a cycle broken by jumps inside its range scores higher there than without);
    with two features it has no effect; a wrong value is refused at construction."""
    def stream(n_features):
        for i in range(3000):
            v = math.sin(2 * math.pi * i / 50)
            if 2500 <= i < 2520:                                         # jumps inside the range
                v = 0.9 if i % 2 else -0.9
            yield {f"v{j}": v for j in range(n_features)}

    def scores(context, n_features):
        m = AnomalyLikelihood(anomaly.HalfSpaceTrees(seed=1), context=context)
        out = []
        for x in stream(n_features):
            out.append(m.score_one(x))
            m.learn_one(x)
        return np.array(out), m

    off, _ = scores(False, 1)
    on, m = scores(True, 1)
    assert m.series_ is not None and m.series_.length > 0          # the evidence was fed
    assert on[2500:2600].max() > off[2500:2600].max()
    assert not np.array_equal(on, off)
    off2, _ = scores(False, 2)
    on2, _ = scores(True, 2)
    np.testing.assert_array_equal(on2, off2)
    with pytest.raises(ValueError, match="context"):
        AnomalyLikelihood(context="yes")
    assert AnomalyLikelihood(context="change").clone().context == "change"

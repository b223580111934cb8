"""river's own estimator checks (river.checks.yield_checks) over every streamnn learner."""

import pytest
from river import checks

import streamnn
from streamnn.classification import _TestNet

LEARNERS = [
    streamnn.MLPClassifier(hidden=(8,), seed=1),
    streamnn.MLPClassifier(hidden=(8,), seed=1, dropout=0.1, norm="stream", replay=0.0),
    streamnn.TorchClassifier(_TestNet, {"width": 8}, seed=1),
    streamnn.MLPRegressor(hidden=(8,), seed=1),
    streamnn.TorchRegressor(_TestNet, {"width": 8}, seed=1, update_every=1),
]


def _params():
    for model in LEARNERS:
        for check in checks.yield_checks(model):
            yield pytest.param(model, check, id=f"{type(model).__name__}-{check.__name__}")


@pytest.mark.parametrize("model, check", list(_params()))
def test_river_check(model, check):
    model = model.clone()
    check(model)

"""The default learners on streams nobody tuned them on: scales, tiny columns, empty rows, ...

Each test here was written against a fault found by running the defaults prequentially on river's
generators next to river's own learners (see the helper report of session 6, `qa-streams`)."""

import itertools

import numpy as np
import torch
from river import metrics
from river.datasets import synth

import streamnn
from streamnn.normalization import RunningStats


def prequential_accuracy(model, stream, n):
    acc = metrics.Accuracy()
    for x, y in itertools.islice(stream, n):
        acc.update(y, model.predict_one(x))
        model.learn_one(x, y)
    return acc.get()


def scaled_hyperplane(scale, seed=0):
    for x, y in synth.Hyperplane(seed=seed, n_features=10):
        yield {k: v * scale for k, v in x.items()}, y


def test_a_column_on_a_scale_of_1e_minus_9_is_scaled_not_taken_for_a_constant():
    rng = np.random.default_rng(0)
    s = RunningStats(3)
    for _ in range(50):
        X = np.column_stack([rng.normal(size=32) * 1e-9, np.full(32, 0.1), np.zeros(32)])
        s.update(X)
    Z = s.transform(rng.normal(size=(2000, 3)) * np.array([1e-9, 0.0, 0.0]) + np.array([0.0, 0.1, 0.0]))
    assert 0.8 < Z[:, 0].std() < 1.2          # the tiny column comes out at unit scale
    assert np.abs(Z[:, 1:]).max() < 1e-6      # the constants (0.1 carries float noise) stay constants
    assert s.inv_std[1] == 1.0 and s.inv_std[2] == 1.0


def test_tiny_features_learn_as_well_as_unit_ones():
    n = 3000
    unit = prequential_accuracy(streamnn.MLPClassifier(seed=0), scaled_hyperplane(1.0), n)
    tiny = prequential_accuracy(streamnn.MLPClassifier(seed=0), scaled_hyperplane(1e-9), n)
    assert unit > 0.8
    assert tiny > unit - 0.02, (tiny, unit)   # was 0.49 (chance): every column taken for a constant


def test_an_outlier_in_a_tiny_column_does_not_poison_the_model():
    model = streamnn.MLPClassifier(seed=0)
    stream = scaled_hyperplane(1e-9)
    for i, (x, y) in enumerate(itertools.islice(stream, 1500)):
        if i == 1000:
            x = {**x, 0: 1e30}
        model.learn_one(x, y)
    assert all(torch.isfinite(p).all() for p in model.module_.parameters())
    assert prequential_accuracy(model, stream, 1000) > 0.75


def test_a_constant_column_comes_back_as_its_constant():
    s = RunningStats(2)
    s.update(np.array([[3e-6, 1.0]]))
    s.update(np.array([[3e-6, 2.0]]))
    # column 0 is constant so far: whatever the network outputs there, the value is the constant
    assert s.inverse(np.array([[0.7, 0.0]]))[0, 0] == 3e-6
    assert s.inverse(np.array([[0.0, 2.0]]))[0, 1] == 1.5 + 2.0 * s.std[1]


def friedman(scale, n, seed=0):
    return [(x, y * scale) for x, y in itertools.islice(synth.Friedman(seed=seed), n)]


def test_a_regressor_on_tiny_targets_beats_the_running_mean():
    data = friedman(1e-6, 1500)
    model, mean = streamnn.MLPRegressor(seed=0), metrics.MAE()
    mae, running = metrics.MAE(), 0.0
    for i, (x, y) in enumerate(data):
        mae.update(y, model.predict_one(x))
        mean.update(y, running)
        model.learn_one(x, y)
        running += (y - running) / (i + 1)
    # was 0.0876 on the second event alone (the untrained output times a "std" of 1 raw unit):
    # an MAE of 4.5x the running mean's over 5,000 events
    assert mae.get() < 0.6 * mean.get(), (mae.get(), mean.get())


def test_multi_target_regressors_return_a_constant_target_as_it_is():
    model = streamnn.MultiTargetRegressor(seed=0)
    model.learn_one({"a": 1.0, "b": 2.0}, {"t": 5e-7, "u": 3.0})
    pred = model.predict_one({"a": 0.5, "b": -1.0})
    assert pred == {"t": 5e-7, "u": 3.0}


def test_a_regressor_without_features_predicts_the_running_mean_of_its_targets():
    import pandas as pd

    ys = [112.0, 118.0, 132.0, 129.0]
    one, many = streamnn.MLPRegressor(seed=0), streamnn.MLPRegressor(seed=0)
    assert one.predict_one({}) == 0.0                 # nothing seen yet
    for y in ys:
        one.learn_one({}, y)
    many.learn_many(pd.DataFrame(index=range(4)), pd.Series(ys))
    assert one.module_ is None and abs(one.predict_one({}) - np.mean(ys)) < 1e-9   # was 0.0 forever
    assert many.predict_many(pd.DataFrame(index=range(2))).tolist() == [one.predict_one({})] * 2
    one.learn_one({"x": 1.0}, 130.0)                  # a feature arrives: the network is built
    assert one.module_ is not None and abs(one.predict_one({"x": 1.0}) - 130.0) < 30.0
    seq = streamnn.LSTMRegressor(seed=0)
    for y in ys:
        seq.learn_one({}, y)
    assert abs(seq.predict_one({}) - np.mean(ys)) < 1e-9


def test_a_lasting_level_shift_restarts_the_column_and_outliers_do_not():
    rng = np.random.default_rng(0)
    s = RunningStats(2, shift_after=16)
    for _ in range(200):
        s.update(rng.normal(size=(16, 2)))
    for k in range(15):                         # outliers, even 15 in a row, are winsorised
        s.update(np.array([[50.0, -50.0]]))
        assert s.n.min() > 16, k
    s.update(rng.normal(size=(1, 2)))
    for _ in range(16):                         # the 16th value in a row beyond the window: a shift
        s.update(np.array([[1000.0, 0.0]]) + rng.normal(size=(1, 2)))
    assert s.n[0] <= 1 and s.n[1] > 3000
    for _ in range(40):
        s.update(np.array([[1000.0, 0.0]]) + rng.normal(size=(1, 2)))
    assert abs(s.mean[0] - 1000.0) < 1.0 and 0.5 < s.std[0] < 2.0
    t = RunningStats(shift_after=16)
    t.load_state_dict(s.state_dict())
    assert t.run.tolist() == s.run.tolist() and t.shift_after == 16
    old = {k: v for k, v in s.state_dict().items() if k not in ("run", "shift_after")}
    u = RunningStats(shift_after=16)
    u.load_state_dict(old)                      # a state from before: the learner's setting holds
    assert u.shift_after == 16 and u.run.tolist() == [0.0, 0.0]


def windowed_mae(model, stream, cut, n):
    before, after = metrics.MAE(), metrics.MAE()
    for i, (x, y) in enumerate(itertools.islice(stream, n)):
        p = model.predict_one(x)
        if cut - 1000 <= i < cut:
            before.update(y, p)
        elif i >= cut + 500:
            after.update(y, p)
        model.learn_one(x, y)
    return before.get(), after.get()


def test_a_regressor_recovers_from_a_lasting_shift_of_its_features():
    def stream():
        for i, (x, y) in enumerate(synth.Friedman(seed=0)):
            yield ({k: v + 1000.0 for k, v in x.items()} if i >= 2000 else x), y
    before, after = windowed_mae(streamnn.MLPRegressor(seed=0), stream(), 2000, 3500)
    assert after < 1.6 * before, (before, after)   # was 4.1 against 1.1: the running mean's error


def test_a_regressor_recovers_from_a_lasting_shift_of_its_target():
    def stream():
        for i, (x, y) in enumerate(synth.Friedman(seed=0)):
            yield x, y + (1000.0 if i >= 2000 else 0.0)
    before, after = windowed_mae(streamnn.MLPRegressor(seed=0), stream(), 2000, 3500)
    assert after < 2.0 * before, (before, after)   # was 6 to 7 against 1.1 for 7,000 events


def test_a_classifier_recovers_from_a_lasting_shift_of_its_features():
    def stream():
        for i, (x, y) in enumerate(synth.Hyperplane(seed=0, n_features=10)):
            yield ({k: v + 1000.0 for k, v in x.items()} if i >= 1500 else x), y
    model, after = streamnn.MLPClassifier(seed=0), metrics.Accuracy()
    for i, (x, y) in enumerate(itertools.islice(stream(), 3500)):
        if i >= 2500:
            after.update(y, model.predict_one(x))
        model.learn_one(x, y)
    assert after.get() > 0.8, after.get()   # was 0.48 to 0.52 (chance) for 5,000 events


def test_extreme_values_in_a_cold_or_restarted_column_warn_nothing_and_do_not_stick():
    import warnings

    model, acc = streamnn.MLPClassifier(seed=0), metrics.Accuracy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # was "overflow encountered in square" (statistics of a
        for i, (x, y) in enumerate(itertools.islice(scaled_hyperplane(1.0), 3000)):   # cold column)
            if i >= 1000:
                x = {**x, "late": 1e300 if i < 1040 else 0.5}   # a new feature, 40 extreme values
            if 1500 <= i < 1540:
                x = {**x, 0: 1e300}                             # a burst in a warm column
            if i >= 2500:
                acc.update(y, model.predict_one(x))
            model.learn_one(x, y)
    assert all(torch.isfinite(p).all() for p in model.module_.parameters())
    for name in (0, "late"):                    # the bursts did not stay in the statistics
        assert abs(model.scaler_.mean[model.features_.index[name]] - 0.5) < 0.1
    assert acc.get() > 0.85, acc.get()

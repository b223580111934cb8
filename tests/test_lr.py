"""Learning-rate control for streams: `StreamLR`, plain plateau control and its floored variant."""

import numpy as np
import pandas as pd
import torch

import streamnn
from streamnn.base import _from_plain, _to_plain
from streamnn.lr import PlateauLR, StreamLR


def _attached(ctl, lr=0.01):
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=lr)
    ctl.attach(opt)
    return opt


def test_lr_does_not_starve_on_a_long_stationary_stream():
    """200k events of a noisy, flat loss: the old plateau control hits its 1e-5 floor within a
    few thousand events; StreamLR lowers the rate to its floor (a tenth) and no further."""
    rng = np.random.default_rng(0)
    losses = 0.3 + 0.1 * rng.standard_normal(200_000 // 16)
    stream, plateau = StreamLR(), PlateauLR()
    opt_s, opt_p = _attached(stream), _attached(plateau)
    for loss in losses:
        stream.step(float(loss), 16)
        plateau.step(float(loss), 16)
    assert opt_p.param_groups[0]["lr"] < 1e-4               # what issue 15 saw
    assert min(lr for _, lr in stream.history) >= 0.01 * 0.1 - 1e-12
    assert stream.n_rewarms == 0                             # no false drift alarm on noise


def test_lr_recovers_after_the_loss_rises():
    ctl = StreamLR(patience=200, window=50, rewarm=False)
    opt = _attached(ctl)
    for _ in range(500):
        ctl.step(0.4, 16)
    low = opt.param_groups[0]["lr"]
    assert low < 0.01
    for _ in range(10):
        ctl.step(0.6, 16)                                    # +50%: a rise, not noise
    assert opt.param_groups[0]["lr"] > low and ctl.n_recoveries >= 1


def test_drift_rewarm_restores_the_initial_rate_and_reports_it():
    ctl = StreamLR(patience=100, window=50)
    opt = _attached(ctl)
    for _ in range(300):
        assert ctl.step(0.2, 16) is False
    assert opt.param_groups[0]["lr"] < 0.01
    fired = [ctl.step(1.0, 16) for _ in range(200)]
    assert any(fired) and ctl.n_rewarms >= 1
    assert opt.param_groups[0]["lr"] == 0.01 or ctl.n_reductions > 0


def test_default_stays_plateau_and_stream_control_is_available():
    model = streamnn.MLPClassifier(seed=0, lr_control="stream")
    model.learn_one({"a": 1.0}, True)
    assert isinstance(model.lr_control_, StreamLR)
    reg = streamnn.MLPRegressor(seed=0, lr_control="stream")
    reg.learn_one({"a": 1.0}, 1.0)
    assert isinstance(reg.lr_control_, StreamLR)
    legacy = streamnn.MLPClassifier(seed=0)
    legacy.learn_one({"a": 1.0}, True)
    assert type(legacy.lr_control_) is PlateauLR
    try:
        streamnn.MLPClassifier(lr_control="cosine")
    except ValueError as e:
        assert "stream" in str(e) and "plateau" in str(e)
    else:
        raise AssertionError("an unknown lr_control must be refused")


def test_controller_parameters_survive_a_plain_checkpoint():
    for ctl in (StreamLR(patience=123, min_lr_ratio=0.2, recover=None), PlateauLR(patience=7, min_lr=1e-4)):
        back = _from_plain(_to_plain(ctl))
        assert type(back) is type(ctl) and back.params() == ctl.params()


def test_state_dict_round_trip_keeps_the_controller():
    ctl = StreamLR(patience=50, window=20)
    _attached(ctl)
    for i in range(100):
        ctl.step(0.5 + 0.01 * (i % 3), 16)
    other = StreamLR(patience=50, window=20)
    _attached(other)
    other.load_state_dict(ctl.state_dict())
    assert other.state_dict() == ctl.state_dict()


def test_learn_many_stays_identical_to_learn_one_under_stream_control():
    """With a sensitive detector (so re-warms happen inside a short stream), learn_many in chunks
    must give the same model, bit for bit, as the learn_one loop (exact crash recovery)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 3))
    y = (X[:, 0] > 0)
    y[1500:] = ~y[1500:]                                     # the concept flips
    ctl = StreamLR(drift_delta=0.05, drift_threshold=5.0)
    kw = dict(seed=0, warmup=200, lr_control=ctl)
    one = streamnn.MLPClassifier(**kw)
    for row, t in zip(X, y):
        one.learn_one({"a": row[0], "b": row[1], "c": row[2]}, bool(t))
    assert one.lr_control_.n_rewarms >= 1
    many = streamnn.MLPClassifier(**kw)
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    for start in range(0, 3000, 97):
        many.learn_many(frame.iloc[start:start + 97], pd.Series(y[start:start + 97]))
    for a, b in zip(one.module_.parameters(), many.module_.parameters()):
        assert torch.equal(a, b)
    assert one.lr_control_.state_dict() == many.lr_control_.state_dict()


def test_defaults_of_the_mlp_learners():
    """MLPClassifier: plateau control with a floor at lr/10; MLPRegressor: StreamLR and tanh
    (benchmarks/results/core_lr.md, drift.md); the others keep plain plateau control."""
    import inspect
    sig = lambda cls: inspect.signature(cls).parameters
    assert sig(streamnn.MLPClassifier)["lr_control"].default == "plateau_floor"
    assert sig(streamnn.MLPRegressor)["lr_control"].default == "stream"
    assert sig(streamnn.MLPRegressor)["activation"].default == "tanh"
    clf = sig(streamnn.MLPClassifier)   # three members as one network, at ~1.3x per event (issue 15)
    assert (clf["members"].default, clf["batch_size"].default, clf["replay"].default) == (3, 128, 0.5)
    assert clf["lr_spread"].default == 1.0   # every member at lr (core_lr.md round 5: 3.0 measured, not adopted)
    assert (sig(streamnn.TorchClassifier)["batch_size"].default, sig(streamnn.TorchClassifier)["replay"].default,
            sig(streamnn.MLPRegressor)["batch_size"].default) == (64, 1.0, 64)
    assert sig(streamnn.MLPRegressor)["members"].default == 1
    for cls in (streamnn.TorchClassifier, streamnn.TorchRegressor, streamnn.AutoencoderDetector):
        assert sig(cls)["lr_control"].default == "plateau"
    model = streamnn.MLPClassifier(seed=0)
    model.learn_one({"a": 1.0}, True)
    assert type(model.lr_control_) is PlateauLR and model.lr_control_.min_lr_ratio == 0.1


def test_plateau_floor_stops_at_a_tenth_of_the_initial_rate():
    """A flat loss: plain PlateauLR falls to min_lr (1e-5); min_lr_ratio=0.1 stops at lr0/10."""
    plain, floored = PlateauLR(), PlateauLR(min_lr_ratio=0.1)
    opt_p, opt_f = _attached(plain), _attached(floored)
    for _ in range(5000):
        plain.step(0.3), floored.step(0.3)
    assert opt_p.param_groups[0]["lr"] == 1e-5
    assert abs(opt_f.param_groups[0]["lr"] - 0.001) < 1e-12 and floored.n_reductions == 4
    back = _from_plain(_to_plain(floored))
    assert back.params() == floored.params() and back.min_lr_ratio == 0.1


def test_after_a_drift_rewarm_the_mlp_steps_every_event_and_forgets_its_replay():
    rng = np.random.default_rng(0)
    model = streamnn.MLPClassifier(seed=0, warmup=0, update_every=16)
    for row in rng.normal(size=(400, 2)):
        model.learn_one({"a": row[0], "b": row[1]}, bool(row[0] > 0))
    assert model.reservoir_.size > 0
    before = model.n_updates_
    model._after_drift()                       # what a Page-Hinkley alarm of the lr control calls
    assert model.reservoir_.size == 0 and model._warm_until == 400 + model.DRIFT_WARMUP
    for row in rng.normal(size=(50, 2)):
        model.learn_one({"a": row[0], "b": row[1]}, bool(row[0] < 0))
    assert model.n_updates_ - before == 50     # one step per event, not one per 16
    clone = streamnn.MLPClassifier(seed=0, warmup=0, update_every=16).load_state_dict(model.state_dict())
    assert clone._warm_until == model._warm_until
    other = streamnn.TorchClassifier(streamnn.classification._TestNet, seed=0)
    other.learn_one({"a": 1.0}, True)
    other._after_drift()                       # off for the other learners (DRIFT_WARMUP = 0)
    assert other._warm_until == 0


def test_checkpoint_params_of_a_stream_control_round_trip_and_show_in_inspection():
    from streamnn.runtime.inspection import plain
    model = streamnn.MLPClassifier(seed=0, lr_control=StreamLR(patience=77))
    back = _from_plain(_to_plain(model.lr_control))
    assert isinstance(back, StreamLR) and back.patience == 77
    assert plain(_to_plain(model.lr_control)) == {"StreamLR": _to_plain(model.lr_control)["__streamlr__"]}

"""Multi-output learners: river's checks, masking, per-target scaling, head growth, mixed heads,
custom and windowed trunks, the numpy step (torch as the oracle), state round trips."""

import math
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from river import base, checks, datasets
from torch import nn

import streamnn
from streamnn import multioutput as mo
from streamnn.backends.losses import MultiHead
from streamnn.multioutput import MultiHeadLearner, MultiLabelClassifier, MultiTargetRegressor

YEAST = list(datasets.Yeast().take(500))


# -- river's check suite (Music needs a download: the multi-label checks use Yeast, bundled) ----

def _offline_datasets(original):
    def patched(model, scale=1):
        if isinstance(model, base.MultiLabelClassifier):
            yield iter(YEAST[: 50 * scale])
            return
        yield from original(model, scale)
    return patched


LEARNERS = [MultiTargetRegressor(hidden=(8,), seed=1), MultiLabelClassifier(hidden=(8,), seed=1),
            MultiHeadLearner(hidden=(8,), seed=1)]


def _checks():
    original = checks._yield_datasets
    checks._yield_datasets = _offline_datasets(original)   # the checks bind their data when generated
    try:
        return [pytest.param(model, check, id=f"{type(model).__name__}-{check.__name__}")
                for model in LEARNERS for check in checks.yield_checks(model)]
    finally:
        checks._yield_datasets = original


@pytest.mark.parametrize("model, check", _checks())
def test_river_check(model, check):
    check(model.clone())


def test_checks_run_on_data():
    names = {c.__name__ for c in checks.yield_checks(MultiLabelClassifier())}
    assert {"check_learn_one", "check_emerging_features", "check_bounded_memory_growth"} <= names


# -- helpers --------------------------------------------------------------------------------

def linear_stream(n=600, seed=0, scales=(1000.0, 0.01)):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    for i in range(n):
        x = {f"f{j}": float(X[i, j]) for j in range(3)}
        y = {"big": scales[0] * (X[i, 0] + 0.5 * X[i, 1]) + 5 * scales[0],
             "small": scales[1] * (X[i, 2] - X[i, 0])}
        yield x, y


def mixed_stream(n=400, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        a, b = rng.normal(size=2)
        y = {"temp": 20.0 + 5.0 * a, "alarm": bool(b > 0), "state": "hi" if a > 0.5 else ("lo" if a < -0.5 else "mid")}
        if i % 4 == 0:
            y.pop("temp")
        if i % 7 == 0:
            y["alarm"] = None
        yield {"a": float(a), "b": float(b)}, y


def mae(model, stream, targets):
    err, n = 0.0, 0
    for x, y in stream:
        p = model.predict_one(x)
        if p:
            err += sum(abs(p[t] - y[t]) for t in targets)
            n += len(targets)
        model.learn_one(x, y)
    return err / n


# -- regression -----------------------------------------------------------------------------

def test_each_target_has_its_own_scale():
    model = MultiTargetRegressor(seed=0)
    train = list(linear_stream(1500))
    mae(model, train, ["big", "small"])
    test = list(linear_stream(200, seed=1))
    for name, scale in [("big", 1000.0), ("small", 0.01)]:
        err = np.mean([abs(model.predict_one(x)[name] - y[name]) for x, y in test])
        assert err < 0.25 * scale, (name, err)
    assert model.target_scaler_.std[0] > 1e4 * model.target_scaler_.std[1]


def test_missing_target_contributes_no_loss_and_no_gradient():
    model = MultiTargetRegressor(optimizer="sgd", lr=0.01, seed=0, update_every=1, batch_size=4, replay=0.0)
    stream = list(linear_stream(60))
    for x, y in stream[:20]:
        model.learn_one(x, y)
    head, snap = model._head(), {}
    for i, (x, y) in enumerate(stream[20:]):   # "small" absent, NaN or None
        missing = [math.nan, None, math.inf][i % 3]
        model.learn_one(x, {"big": y["big"], "small": missing} if i % 2 else {"big": y["big"]})
        if i == 3:   # the batch (the last 4 events) no longer holds a "small" target
            snap = {k: v.detach().clone() for k, v in
                    [("w1", head.weight[1]), ("b1", head.bias[1]), ("w0", head.weight[0])]}
    assert torch.equal(head.weight[1], snap["w1"]) and torch.equal(head.bias[1], snap["b1"])
    assert not torch.equal(head.weight[0], snap["w0"])


def test_events_without_any_target_are_counted_and_skipped():
    model = MultiTargetRegressor()
    model.learn_one({"a": 1.0}, {})
    model.learn_one({"a": 1.0}, {"t": math.nan})
    assert model.n_skipped_ == 2 and model.n_seen_ == 0 and model.predict_one({"a": 1.0}) == {}


def test_new_target_grows_a_head_without_disturbing_the_others():
    model = MultiTargetRegressor(seed=0, warmup=0, loss="mse", lr=0.01)   # a fast learner: 200 events to learn "small"
    stream = list(linear_stream(300))
    for x, y in stream[:100]:
        model.learn_one(x, {"big": y["big"]})
    assert model.n_seen_ % model.update_every != model.update_every - 1   # the next event takes no step
    probe = stream[200][0]
    before = model.predict_one(probe)
    w_before = model._head().weight.detach().clone()
    state = model.optimizer_.state[model._head().weight]["exp_avg"].clone()
    model.learn_one(*stream[100])                                # brings "small"
    after = model.predict_one(probe)
    assert set(after) == {"big", "small"} and after["big"] == before["big"]
    head = model._head()
    assert head.weight.shape[0] == 2 and torch.equal(head.weight[:1].detach(), w_before)
    assert torch.all(head.weight[1] == 0) and head.bias[1].item() == 0.0
    assert torch.equal(model.optimizer_.state[head.weight]["exp_avg"][:1], state)
    mae(model, stream[101:], ["big"])
    assert abs(model.predict_one(probe)["small"] - stream[200][1]["small"]) < 0.01


def test_bad_target_value_names_the_fix():
    with pytest.raises(TypeError, match="classification"):
        MultiTargetRegressor().learn_one({"a": 1.0}, {"t": "high"})
    with pytest.raises(TypeError, match="True/False"):
        MultiLabelClassifier().learn_one({"a": 1.0}, {"t": "yes"})


@pytest.mark.parametrize("kwargs, match", [
    (dict(trunk="lstm"), "trunk="), (dict(window=0), "window="), (dict(loss="hinge"), "loss="),
    (dict(heads={"t": "ordinal"}), "heads"),
])
def test_bad_parameters_name_the_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiHeadLearner(**kwargs)


# -- multi-label ----------------------------------------------------------------------------

def test_multilabel_learns_yeast_better_than_the_prior():
    from river import metrics
    model, metric = MultiLabelClassifier(seed=0), metrics.multioutput.MicroAverage(metrics.F1())
    for x, y in YEAST:
        p = model.predict_one(x)
        if p:
            metric.update(y, p)
        model.learn_one(x, y)
    assert metric.get() > 0.5
    proba = model.predict_proba_one(YEAST[0][0])
    assert set(proba) == set(YEAST[0][1]) and all(abs(sum(p.values()) - 1) < 1e-9 for p in proba.values())


def test_multilabel_batch_api_matches_single():
    model = MultiLabelClassifier(seed=0)
    model.learn_many(pd.DataFrame([x for x, _ in YEAST[:100]]), pd.DataFrame([y for _, y in YEAST[:100]]))
    X = pd.DataFrame([x for x, _ in YEAST[100:110]])
    P = model.predict_proba_many(X)
    for i, (x, _) in enumerate(YEAST[100:110]):
        for label, p in model.predict_proba_one(x).items():
            assert abs(P.iloc[i][label] - p[True]) < 1e-6
    assert model.predict_many(X).dtypes.eq(bool).all()


# -- mixed heads ----------------------------------------------------------------------------

def test_mixed_heads_learn_each_kind_with_missing_values():
    model = MultiHeadLearner(heads={"temp": "regression", "state": "classification"}, seed=0)
    stream = list(mixed_stream(1500))
    hits = {"state": 0, "alarm": 0}
    for x, y in stream[:1200]:
        model.learn_one(x, y)
    for x, y in stream[1200:]:
        p = model.predict_one(x)
        hits["state"] += p["state"] == y["state"]
        hits["alarm"] += y["alarm"] is not None and p["alarm"] == y["alarm"]
    assert model.kinds_ == ["regression", "classification", "binary"]   # alarm inferred from bool
    assert hits["state"] / 300 > 0.85 and hits["alarm"] / 250 > 0.8
    assert abs(model.predict_one({"a": 1.0, "b": 0.0})["temp"] - 25.0) < 1.5
    proba = model.predict_proba_one({"a": 1.0, "b": 0.0})
    assert set(proba) == {"state", "alarm"} and sorted(proba["state"]) == ["hi", "lo", "mid"]


def test_loss_weight_zero_leaves_that_head_untouched():
    model = MultiHeadLearner(loss_weights={"alarm": 0.0}, seed=0)
    stream = list(mixed_stream(200))
    model.learn_one(*stream[0])
    model.learn_one(*stream[1])
    col, other = model.cols_[model._slot["alarm"]][0], model.cols_[model._slot["temp"]][0]
    row, row_other = model._head().weight[col].detach().clone(), model._head().weight[other].detach().clone()
    for x, y in stream[2:]:
        model.learn_one(x, y)
    assert torch.equal(model._head().weight[col], row) and model.n_updates_ > 5
    assert not torch.equal(model._head().weight[other], row_other)


def test_new_class_appends_a_column_and_keeps_old_outputs():
    model = MultiHeadLearner(heads={"s": "classification"}, seed=0, warmup=0)
    for i in range(64):
        model.learn_one({"a": float(i % 2)}, {"s": "x" if i % 2 else "y"})
    out = model._outputs({"a": 1.0})[0].copy()
    model.learn_one({"a": 0.5}, {"s": "z"})
    assert model.cols_[0] == [0, 1, 2] and model.classes_[0] == ["y", "x", "z"]
    assert np.array_equal(model._outputs({"a": 1.0})[0][:2], out)
    assert model._head().bias[2].item() == pytest.approx(min(model._head().bias[:2].tolist()))


# -- trunks ---------------------------------------------------------------------------------

class GRUTrunk(nn.Module):
    def __init__(self, n_features, width):
        super().__init__()
        self.gru = nn.GRU(n_features, width, batch_first=True)

    def forward(self, x):          # (B, T, F) -> (B, width)
        return self.gru(x)[0][:, -1]


class LinearTrunk(nn.Module):
    def __init__(self, n_features, width):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_features, width), nn.Tanh())

    def forward(self, x):
        return self.body(x)


def lagged_stream(n, seed=0):
    """y_t depends on x_{t-2}: a model that sees only the current event cannot predict it."""
    xs = np.random.default_rng(seed).normal(size=n)
    for t in range(n):
        yield {"x": float(xs[t])}, {"lag2": float(xs[t - 2]) if t >= 2 else 0.0, "now": float(xs[t])}


@pytest.mark.slow
def test_windowed_gru_trunk_sees_the_past():
    stream = list(lagged_stream(1400))
    gru = MultiTargetRegressor(trunk=GRUTrunk, hidden=(16,), window=4, seed=0, update_every=4, warmup=0)
    mlp = MultiTargetRegressor(seed=0, update_every=4, warmup=0)
    mae(gru, stream[:1200], ["lag2"])
    mae(mlp, stream[:1200], ["lag2"])
    assert mae(gru, stream[1200:], ["lag2"]) < 0.5 * mae(mlp, stream[1200:], ["lag2"])
    assert mae(gru, stream[1200:], ["now"]) < 0.3


def test_window_prediction_is_pure_and_mlp_trunk_can_use_windows():
    model = MultiTargetRegressor(window=3, seed=0)
    stream = list(lagged_stream(300))
    mae(model, stream, ["lag2"])
    hist = model.history_.copy()
    p = model.predict_one({"x": 0.3})
    assert np.array_equal(model.history_, hist, equal_nan=True) and model.predict_one({"x": 0.3}) == p
    assert model.n_in_ == 3 and model._kernel   # flattened window, numpy step
    assert mae(model, list(lagged_stream(300, seed=1)), ["lag2"]) < 0.3


def test_custom_trunk_grows_its_first_linear_not_the_head():
    model = MultiTargetRegressor(trunk=LinearTrunk, hidden=(8,), seed=0)
    for i in range(40):
        model.learn_one({"a": float(i % 3)}, {"t": float(i % 3)})
    model.learn_one({"a": 1.0, "b": 2.0}, {"t": 1.0})
    assert model.module_.trunk.body[0].in_features == 2 and model.module_.head.in_features == 8


# -- the numpy step (torch is the oracle) ---------------------------------------------------

@pytest.mark.parametrize("loss", ["mse", "l1", "huber", "smooth_l1"])
def test_numpy_loss_and_gradient_match_torch(loss):
    model = MultiHeadLearner(loss=loss, loss_weights={"alarm": 2.0, "state": 0.5}, seed=0)
    for x, y in mixed_stream(100):
        model.learn_one(x, y)
    _, Y, _ = model.buffer_.last(32)
    T = model._prepare_targets(Y)
    out = torch.randn(len(T), model.n_out_, requires_grad=True)
    per = model._loss_per_sample(out, torch.as_tensor(T))
    per.sum().backward()
    per_np, grad_np = MultiHead(model._get_loss_plan())(out.detach().numpy(), T)
    np.testing.assert_allclose(per_np, per.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_np, out.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_numpy_step_trains_like_the_torch_step():
    stream = list(linear_stream(400))
    fast, slow = MultiTargetRegressor(seed=2, loss="huber"), MultiTargetRegressor(seed=2, loss="huber")
    slow._make_kernel = lambda: None
    for x, y in stream:
        fast.learn_one(x, y, w=1.5 if x["f0"] > 0 else 1.0)
        slow.learn_one(x, y, w=1.5 if x["f0"] > 0 else 1.0)
    assert isinstance(fast._kernel.loss, MultiHead) and slow._kernel is False
    assert fast.backend_.startswith("numpy: ") and slow.backend_.startswith("torch")
    for a, b in zip(fast.module_.parameters(), slow.module_.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-3, atol=2e-4)


# -- state ----------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: MultiHeadLearner(heads={"state": "classification"}, seed=0),
    lambda: MultiHeadLearner(trunk=GRUTrunk, hidden=(8,), window=3, seed=0, warmup=50),
    lambda: MultiTargetRegressor(seed=0, replay=0.5),
])
def test_state_round_trip_gives_identical_predictions_and_training(make, tmp_path):
    stream = list(mixed_stream(300))
    if isinstance(make(), MultiTargetRegressor):
        stream = [(x, {"temp": y.get("temp", math.nan), "b": x["b"] * 3}) for x, y in stream]
    model = make()
    for x, y in stream[:150]:
        model.learn_one(x, y)
    model.save(tmp_path / "m.pt")
    kw = {"trunk": GRUTrunk} if model.trunk is GRUTrunk else {}
    copies = [streamnn.load(tmp_path / "m.pt", **kw), make().load_state_dict(model.state_dict()),
              pickle.loads(pickle.dumps(model))]
    for x, y in stream[150:]:
        p = model.predict_one(x)
        for c in copies:
            assert c.predict_one(x) == p
            c.learn_one(x, y)
        model.learn_one(x, y)
    assert all(c.n_updates_ == model.n_updates_ for c in copies)


def test_learn_many_equals_learn_one():
    stream = list(mixed_stream(200))
    one, many = MultiHeadLearner(seed=0), MultiHeadLearner(seed=0)
    for x, y in stream:
        one.learn_one(x, y)
    for i in range(0, 200, 50):
        chunk = stream[i: i + 50]
        many.learn_many(pd.DataFrame([x for x, _ in chunk]), pd.DataFrame([y for _, y in chunk]))
    X = pd.DataFrame([x for x, _ in stream[:20]])
    pd.testing.assert_frame_equal(one.predict_many(X), many.predict_many(X))
    assert one.predict_many(X).iloc[3].to_dict() == one.predict_one(stream[3][0])


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([None, math.nan, math.inf, 1.0, -2.0, 1e6]),
                          st.sampled_from([None, True, False])), min_size=1, max_size=60))
def test_any_pattern_of_missing_targets_keeps_weights_finite(pattern):
    model = MultiHeadLearner(seed=0, update_every=2, batch_size=4)
    for i, (r, b) in enumerate(pattern):
        model.learn_one({"a": float(i % 5)}, {"r": r, "b": b})
    if model.module_ is not None:
        assert all(torch.isfinite(p).all() for p in model.module_.parameters())
    assert all(math.isfinite(v) or isinstance(v, bool) for v in model.predict_one({"a": 1.0}).values())


# -- issue 15: the online F1 threshold and the defaults ---------------------------------------

def _prequential_f1(model, stream):
    from river import metrics
    metric = metrics.multioutput.MicroAverage(metrics.F1())
    for x, y in stream:
        p = model.predict_one(x)
        if p:
            metric.update(y, p)
        model.learn_one(x, y)
    return metric.get()


def test_f1_threshold_follows_the_past_predictions_only():
    model, mirror = MultiLabelClassifier(seed=0), mo.F1Threshold()
    for x, y in YEAST[:300]:
        if model.module_ is not None:   # the prediction the model made before learning the event
            proba = model.predict_proba_one(x)
            pred = model.predict_one(x)
            assert pred == {k: p[True] > model.threshold_ for k, p in proba.items()}
            mirror.update(np.array([proba[k][True] for k in model.targets_]),
                          np.array([float(y[k]) for k in model.targets_]))
        model.learn_one(x, y)
        assert model.threshold_ == mirror.value
    assert 0.0 < model.threshold_ < 0.5   # Yeast's labels are rare: more positives pay off


def test_f1_threshold_beats_a_fixed_half_on_yeast():
    auto = _prequential_f1(MultiLabelClassifier(seed=0), YEAST)
    half = _prequential_f1(MultiLabelClassifier(seed=0, threshold=0.5), YEAST)
    assert auto > half + 0.01


def test_f1_threshold_unit():
    th = mo.F1Threshold(bins=10, window=1e9)
    th.update(np.array([0.9, 0.1]), np.array([0.0, 0.0]))
    assert th.value == 0.5                     # no positive seen yet
    for _ in range(50):                        # positives at 0.35, negatives at 0.15 and 0.05
        th.update(np.array([0.35, 0.15, 0.05, 0.99]), np.array([1.0, 0.0, 0.0, math.nan]))
    assert 0.15 < th.value <= 0.35             # separates them; the NaN label was skipped
    assert th.neg.sum() == pytest.approx(102) and th.pos.sum() == pytest.approx(50)
    fresh = mo.F1Threshold(bins=10, window=1e9)
    fresh.load_state_dict(th.state_dict())
    assert fresh.value == th.value and (fresh.pos == th.pos).all()
    fast = mo.F1Threshold(bins=10, window=5.0)  # a short memory forgets the old scores
    for _ in range(50):
        fast.update(np.array([0.95, 0.15]), np.array([1.0, 0.0]))
    for _ in range(50):
        fast.update(np.array([0.25, 0.15]), np.array([1.0, 0.0]))
    assert 0.15 < fast.value <= 0.25
    with pytest.raises(ValueError, match="bins"):
        mo.F1Threshold(bins=1)


@pytest.mark.parametrize("threshold", ["half", 1.5, None])
def test_bad_threshold_names_the_fix(threshold):
    with pytest.raises(ValueError, match="threshold=.*'auto'"):
        MultiLabelClassifier(threshold=threshold)


def test_fixed_threshold_is_used_as_given():
    model = MultiLabelClassifier(seed=0, threshold=0.9)
    for x, y in YEAST[:100]:
        model.learn_one(x, y)
    assert model.threshold_ == 0.9 and model.f1_threshold_.pos.sum() == 0   # no statistics kept
    p = model.predict_proba_one(YEAST[0][0])
    assert model.predict_one(YEAST[0][0]) == {k: v[True] > 0.9 for k, v in p.items()}


def test_multilabel_state_and_batch_keep_the_threshold(tmp_path):
    one, many = MultiLabelClassifier(seed=0), MultiLabelClassifier(seed=0)
    for x, y in YEAST[:200]:
        one.learn_one(x, y)
    many.learn_many(pd.DataFrame([x for x, _ in YEAST[:200]]), pd.DataFrame([y for _, y in YEAST[:200]]))
    assert many.threshold_ == one.threshold_ != 0.5
    one.save(tmp_path / "ml.pt")
    back = streamnn.load(tmp_path / "ml.pt")
    assert back.threshold_ == one.threshold_
    for x, y in YEAST[200:260]:
        assert back.predict_one(x) == one.predict_one(x)
        back.learn_one(x, y)
        one.learn_one(x, y)
    assert back.threshold_ == one.threshold_


def test_defaults_are_set_here_not_borrowed():
    """The multi-output defaults were measured on Yeast and SolarFlare (benchmarks/multioutput.py);
    they must not move when the single-output MLP defaults do."""
    reg, ml = MultiTargetRegressor(), MultiLabelClassifier()
    assert (reg.loss, reg.lr, reg.lr_control) == ("huber", 0.001, None)
    assert (ml.threshold, ml.lr, ml.lr_control) == ("auto", 0.0005, None)


@pytest.mark.slow
def test_multitarget_default_beats_isoup_on_solarflare():
    import numbers
    from river import compose, metrics, preprocessing, tree

    def run(model):
        enc = (compose.SelectType(str) | preprocessing.OneHotEncoder()) + compose.SelectType(numbers.Number)
        pipe, metric = enc | model, metrics.multioutput.MicroAverage(metrics.MAE())
        for x, y in datasets.SolarFlare():
            p = pipe.predict_one(x)
            if p:
                metric.update(y, p)
            pipe.learn_one(x, y)
        return metric.get()

    assert run(MultiTargetRegressor(seed=0)) < 0.95 * run(tree.ISOUPTreeRegressor())

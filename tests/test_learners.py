"""Contracts of the core learners: seeds, growth, bad input, state round trips, buffering."""

import math
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from river import datasets

import streamnn
from streamnn.features import FeatureTypeError

PHISHING = list(datasets.Phishing())
TRUMP = list(datasets.TrumpApproval())


def run(model, stream):
    preds = []
    for x, y in stream:
        preds.append(model.predict_proba_one(x) if hasattr(model, "predict_proba_one") else model.predict_one(x))
        model.learn_one(x, y)
    return preds


def test_equal_seeds_give_identical_weights_and_results():
    a, b = streamnn.MLPClassifier(seed=3, dropout=0.2), streamnn.MLPClassifier(seed=3, dropout=0.2)
    assert run(a, PHISHING[:300]) == run(b, PHISHING[:300])
    for pa, pb in zip(a.module_.parameters(), b.module_.parameters()):
        assert torch.equal(pa, pb)
    c = streamnn.MLPClassifier(seed=4, dropout=0.2)
    run(c, PHISHING[:300])
    assert not torch.equal(next(a.module_.parameters()), next(c.module_.parameters()))


def test_seed_does_not_touch_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    run(streamnn.MLPClassifier(seed=1), PHISHING[:100])
    assert torch.equal(torch.rand(3), expected)


def test_new_feature_gets_new_column_and_keeps_old_weights_and_optimizer_state():
    model = streamnn.MLPClassifier(seed=0, update_every=1, batch_size=4)
    for i in range(40):
        model.learn_one({"b": float(i % 3), "a": float(i % 2)}, i % 2 == 0)
    lin = model.module_.net[0]
    w_before = lin.weight.detach().clone()
    state_before = model.optimizer_.state[lin.weight]["exp_avg"].clone()
    x = {"a": 1.0, "b": 2.0}
    p_before = model.predict_proba_one(x)
    # a new feature that sorts first must not move the existing columns
    assert model.predict_proba_one({**x, "0_new": 5.0}) == p_before   # unknown at prediction: ignored
    model.features_.row({**x, "0_new": 5.0})  # registry growth alone
    assert model.features_.names == ["a", "b", "0_new"]
    model._grow_inputs(len(model.features_))
    lin = model.module_.net[0]
    assert lin.weight.shape[1] == 3
    assert torch.equal(lin.weight[:, :2].detach(), w_before)
    assert torch.all(lin.weight[:, 2] == 0)
    assert torch.equal(model.optimizer_.state[lin.weight]["exp_avg"][:, :2], state_before)
    assert model.predict_proba_one(x) == p_before


def test_non_numeric_feature_error_names_feature_and_fix():
    model = streamnn.MLPClassifier()
    with pytest.raises(FeatureTypeError, match=r"feature 'city' is a str.*OneHotEncoder"):
        model.learn_one({"city": "Paris", "t": 1.0}, True)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, None])
def test_non_finite_features_are_missing_and_never_reach_weights(bad):
    model = streamnn.MLPRegressor(seed=0, update_every=1, batch_size=2)
    for i in range(30):
        model.learn_one({"a": float(i), "b": bad if i % 3 == 0 else 1.0}, float(i))
    for p in model.module_.parameters():
        assert torch.isfinite(p).all()
    assert math.isfinite(model.predict_one({"a": 3.0, "b": bad}))


def test_non_finite_target_is_skipped_and_counted():
    model = streamnn.MLPRegressor(seed=0, update_every=1, batch_size=2)
    model.learn_one({"a": 1.0}, 1.0)
    model.learn_one({"a": 1.0}, math.nan)
    model.learn_one({"a": 1.0}, math.inf)
    assert model.n_skipped_ == 2 and model.n_seen_ == 1


def test_non_finite_loss_skips_the_step():
    def nan_loss(out, target):
        return out.sum() * math.nan

    model = streamnn.MLPRegressor(seed=0, update_every=1, batch_size=2, loss=nan_loss)
    for i in range(5):
        model.learn_one({"a": float(i)}, float(i))
    assert model.n_nonfinite_ == 5 and model.n_updates_ == 0
    for p in model.module_.parameters():
        assert torch.isfinite(p).all()


def test_new_class_mid_stream_grows_output_and_proba_is_valid_before_learning():
    model = streamnn.MLPClassifier(seed=0, update_every=1, batch_size=8)
    assert model.predict_proba_one({"a": 1.0}) == {}
    assert model.predict_one({"a": 1.0}) is None
    for i in range(60):
        model.learn_one({"a": float(i % 2)}, "even" if i % 2 == 0 else "odd")
    old = model.predict_proba_one({"a": 0.0})
    model.learn_one({"a": 5.0}, "new")
    proba = model.predict_proba_one({"a": 0.0})
    assert set(proba) == {"even", "odd", "new"} and math.isclose(sum(proba.values()), 1.0)
    assert max(proba, key=proba.get) == max(old, key=old.get)
    declared = streamnn.MLPClassifier(classes=("x", "y"))
    assert declared.predict_proba_one({"a": 1.0}) == {"x": 0.5, "y": 0.5}


@pytest.mark.parametrize("make", [
    lambda: streamnn.MLPClassifier(seed=1, replay=0.5, dropout=0.1, norm="stream"),
    lambda: streamnn.MLPRegressor(seed=1, norm="layer"),
])
def test_state_dict_round_trip_gives_identical_predictions_and_training(make, tmp_path):
    stream = PHISHING if isinstance(make(), streamnn.MLPClassifier) else TRUMP
    model = make()
    run(model, stream[:333])   # mid-batch: buffered samples pending
    copy_ = make().load_state_dict(model.state_dict())
    model.save(tmp_path / "m.pt")
    loaded = streamnn.load(tmp_path / "m.pt")
    rest = stream[333:700]
    assert run(model, rest) == run(copy_, rest) == run(loaded, rest)


def test_checkpoint_refuses_pickled_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "streamnn-checkpoint/1", "x": Evil()}, path)
    with pytest.raises(pickle.UnpicklingError):
        streamnn.load_checkpoint(path)


def test_load_needs_custom_module_passed_again(tmp_path):
    from streamnn.classification import _TestNet
    model = streamnn.TorchClassifier(_TestNet, {"width": 4}, seed=0)
    run(model, PHISHING[:50])
    model.save(tmp_path / "c.pt")
    with pytest.raises(ValueError, match="pass module=..."):
        streamnn.load(tmp_path / "c.pt")
    loaded = streamnn.load(tmp_path / "c.pt", module=_TestNet)
    x = PHISHING[60][0]
    assert loaded.predict_proba_one(x) == model.predict_proba_one(x)


def test_clone_is_fresh_with_same_params():
    model = streamnn.MLPClassifier(hidden=(4, 4), lr=0.01, seed=9)
    run(model, PHISHING[:50])
    fresh = model.clone()
    assert fresh.module_ is None and fresh.n_seen_ == 0 and fresh._get_params() == model._get_params()


@pytest.mark.parametrize("update_every, batch_size", [(1, 1), (7, 16), (16, 8)])
def test_learn_many_equals_learn_one_loop(update_every, batch_size):
    kw = dict(seed=5, update_every=update_every, batch_size=batch_size, warmup=50)
    one, many = streamnn.MLPClassifier(**kw), streamnn.MLPClassifier(**kw)
    for x, y in PHISHING[:200]:
        one.learn_one(x, y)
    for start in range(0, 200, 37):   # batch boundaries unrelated to the step schedule
        chunk = PHISHING[start:min(start + 37, 200)]
        many.learn_many(pd.DataFrame([x for x, _ in chunk]), pd.Series([y for _, y in chunk]))
    X = pd.DataFrame([x for x, _ in PHISHING[200:260]])
    pd.testing.assert_frame_equal(one.predict_proba_many(X), many.predict_proba_many(X))


def test_buffering_steps_every_update_every_and_flush_takes_the_partial_batch():
    model = streamnn.MLPClassifier(update_every=10, batch_size=10, warmup=0, seed=0)
    for x, y in PHISHING[:25]:
        model.learn_one(x, y)
    assert model.n_updates_ == 2 and model._pending == 5
    model.flush()
    assert model.n_updates_ == 3 and model._pending == 0


def test_plateau_lowers_lr_and_history_is_readable():
    ctl = streamnn.PlateauLR(patience=5, factor=0.5, smoothing=1.0, rewarm=False)
    model = streamnn.MLPRegressor(seed=0, update_every=1, batch_size=8, lr=0.01, lr_control=ctl)
    for i in range(300):
        model.learn_one({"a": 0.0}, float(np.random.default_rng(i).normal()))  # noise: no progress possible
    assert model.lr_ < 0.01
    steps, lrs = zip(*model.lr_history_)
    assert lrs[0] == 0.01 and list(lrs) == sorted(lrs, reverse=True)


def test_streaming_norm_works_at_batch_size_one_where_batchnorm_fails():
    with pytest.raises(ValueError):
        torch.nn.BatchNorm1d(4).train()(torch.ones(1, 4))
    norm = streamnn.StreamingNorm(4)
    out = norm.train()(torch.ones(1, 4))
    assert out.shape == (1, 4) and torch.isfinite(out).all()
    model = streamnn.MLPClassifier(norm="stream", update_every=1, batch_size=1, seed=0)
    run(model, PHISHING[:100])
    assert model.n_updates_ == 100


def test_streaming_norm_uses_past_statistics_in_training_and_inference_alike():
    torch.manual_seed(0)
    norm = streamnn.StreamingNorm(3, momentum=0.1, affine=False)
    for _ in range(200):
        norm.train()(torch.randn(8, 3) * 2 + 5)
    x = torch.randn(1, 3) * 2 + 5
    assert torch.allclose(norm.eval()(x), (x - 5) / 2, atol=0.5)


def test_streaming_scaler_is_a_river_transformer():
    from river import compose, linear_model
    model = compose.Pipeline(streamnn.preprocessing.StreamingScaler(), linear_model.LogisticRegression())
    for x, y in PHISHING[:100]:
        model.predict_one(x)
        model.learn_one(x, y)
    scaler = streamnn.preprocessing.StreamingScaler()
    X = pd.DataFrame([x for x, _ in PHISHING[:50]])
    scaler.learn_many(X)
    many = scaler.transform_many(X.iloc[:3])
    one = [scaler.transform_one(x) for x, _ in PHISHING[:3]]
    np.testing.assert_allclose(many.to_numpy(), pd.DataFrame(one)[list(X.columns)].to_numpy())


@settings(max_examples=25, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from("abcdef"),
                                st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.none()),
                                max_size=6), min_size=1, max_size=40),
       st.lists(st.sampled_from(["u", "v", "w"]), min_size=40, max_size=40))
def test_any_feature_growth_and_missing_values_keep_the_model_finite(xs, ys):
    model = streamnn.MLPClassifier(seed=0, update_every=2, batch_size=4, hidden=(4,))
    for x, y in zip(xs, ys):
        proba = model.predict_proba_one(x)
        assert all(0.0 <= p <= 1.0 for p in proba.values())
        model.learn_one(x, y)
    if model.module_ is not None:
        for p in model.module_.parameters():
            assert torch.isfinite(p).all()


def test_learn_many_registers_features_where_learn_one_would():
    rows = [({"b": 1.0}, True), ({"a": 2.0, "b": 0.5}, False), ({"c": 1.0, "a": 0.0}, True)] * 20
    one = streamnn.MLPClassifier(seed=3, update_every=1, batch_size=4)
    many = streamnn.MLPClassifier(seed=3, update_every=1, batch_size=4)
    for x, y in rows:
        one.learn_one(x, y)
    many.learn_many(pd.DataFrame([x for x, _ in rows]), pd.Series([y for _, y in rows]))
    assert one.features_.names == many.features_.names == ["b", "a", "c"]
    for pa, pb in zip(one.module_.parameters(), many.module_.parameters()):
        np.testing.assert_allclose(pa.detach().numpy(), pb.detach().numpy(), rtol=1e-5, atol=1e-6)

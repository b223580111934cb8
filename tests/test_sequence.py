"""Contracts of the sequence learners: numpy cell vs torch, state bookkeeping, keys, batching, resume."""

import random

import numpy as np
import pandas as pd
import pytest
import torch
from river import checks

import streamnn
from streamnn.features import FeatureTypeError
from streamnn.recurrent import SeqNet, np_run, np_step, numpy_plan
from streamnn.sequence import LSTMClassifier, LSTMRegressor


def latch_stream(n, gap=(30, 60), seed=0, n_noise=2):
    """A cue (+1/-1) every `gap` events; the label is the sign of the last cue."""
    rng = random.Random(seed)
    mode, nxt, out = False, rng.randint(*gap), []
    for t in range(n):
        cue = 0.0
        if t == nxt:
            mode = rng.random() < 0.5
            cue, nxt = (1.0 if mode else -1.0), t + rng.randint(*gap)
        out.append(({"cue": cue, **{f"n{i}": rng.gauss(0, 1) for i in range(n_noise)}}, mode))
    return out


def keyed_stream(n, n_keys, seed=0):
    rng = random.Random(seed)
    return [({"id": f"k{rng.randrange(n_keys)}", "a": rng.gauss(0, 1), "b": rng.gauss(0, 1)}, rng.gauss(0, 1))
            for _ in range(n)]


def prequential(model, stream):
    out = []
    for x, y in stream:
        out.append(model.predict_one(x))
        model.learn_one(x, y)
    return out


# -- the numpy cell against torch (the oracle) ------------------------------------------------

@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 2])
def test_numpy_step_and_window_match_torch(cell, layers):
    torch.manual_seed(0)
    net = SeqNet(5, 3, cell=cell, hidden_size=6, num_layers=layers).eval()
    Z = np.random.default_rng(0).normal(size=(4, 7, 5)).astype(np.float32)
    S = np.random.default_rng(1).normal(size=(4, net.state_size)).astype(np.float32)
    with torch.no_grad():
        ref, ref_s = net(torch.from_numpy(Z), torch.from_numpy(S))
    plan = numpy_plan(net)
    out, s = np_step(plan, Z[:, 0], S)
    with torch.no_grad():
        ref1, ref1_s = net(torch.from_numpy(Z[:, :1]), torch.from_numpy(S))
    np.testing.assert_allclose(out, ref1[:, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(s, ref1_s.numpy(), atol=1e-5)
    out, s = np_run(plan, Z, S)
    np.testing.assert_allclose(out, ref[:, -1].numpy(), atol=1e-5)
    np.testing.assert_allclose(s, ref_s.numpy(), atol=1e-5)


@pytest.mark.parametrize("stateful", [True, False])
def test_torch_inference_path_matches_the_numpy_one(stateful):
    """The path used on a GPU (torch in eval mode), run here on the CPU."""
    model = LSTMRegressor(key="id", seed=0, hidden_size=8, num_layers=2, stateful=stateful, window=4,
                          update_every=8)
    stream = keyed_stream(120, 3)
    prequential(model, stream)
    X = pd.DataFrame([x for x, _ in stream[:20]])
    fast = model.predict_many(X)
    model._on_cpu = False
    np.testing.assert_allclose(model.predict_many(X), fast, rtol=1e-5, atol=1e-5)


def test_input_growth_keeps_outputs():
    net = SeqNet(2, 1, hidden_size=4).eval()
    x = torch.randn(3, 5, 2)
    with torch.no_grad():
        before = net(x)[0]
        net.grow_input(4)
        after = net(torch.cat([x, torch.randn(3, 5, 2)], dim=2))[0]
    assert net.rnn.weight_ih_l0.shape == (16, 4)
    torch.testing.assert_close(before, after)


# -- stateful bookkeeping ---------------------------------------------------------------------

def test_prediction_depends_on_the_past_and_is_pure():
    model = LSTMClassifier(seed=0, hidden_size=8, lr=0.03, update_every=8)
    prequential(model, latch_stream(600, gap=(10, 20)))
    state = model.keys_.h.copy()
    p1 = model.predict_proba_one({"cue": 0.0, "n0": 0.0, "n1": 0.0})
    assert model.predict_proba_one({"cue": 0.0, "n0": 0.0, "n1": 0.0}) == p1
    assert np.array_equal(model.keys_.h, state)
    model.learn_one({"cue": -1.0, "n0": 0.0, "n1": 0.0}, False)     # a cue changes what comes next
    p2 = model.predict_proba_one({"cue": 0.0, "n0": 0.0, "n1": 0.0})
    assert p2 != p1


def test_predict_then_learn_reuses_the_step_and_gives_the_same_state():
    stream = latch_stream(300)
    a, b = LSTMRegressor(seed=3, hidden_size=8), LSTMRegressor(seed=3, hidden_size=8)
    for x, y in stream:
        a.predict_one(x)
        a.learn_one(x, float(y))
        b.learn_one(x, float(y))
    np.testing.assert_allclose(a.keys_.h, b.keys_.h, atol=1e-6)
    mutated = dict(stream[0][0], cue=5.0)     # a different x after the prediction: no reuse
    a.predict_one(stream[0][0])
    a.learn_one(mutated, 1.0)
    b.learn_one(mutated, 1.0)
    np.testing.assert_allclose(a.keys_.h, b.keys_.h, atol=1e-6)


@pytest.mark.parametrize("cell, bptt", [("lstm", 5), ("gru", 4), ("rnn", 1)])
def test_segment_rerun_from_its_start_state_reproduces_the_current_state(cell, bptt):
    """With weights and scaling frozen, re-running the stored segment from h0 gives h: the
    truncation (keep the last half, restart from the state stored there) is exact."""
    model = LSTMRegressor(cell=cell, hidden_size=4, bptt=bptt, update_every=3, lr=0.0, scale_inputs=None,
                          key="id", seed=0, lr_control=None)
    for x, y in keyed_stream(200, 3):
        model.learn_one(x, y)
    st = model.keys_
    for key, s in st.slots.items():
        L = st.length[s]
        assert 1 <= L <= bptt
        Z = torch.as_tensor(model._scale(st.X[s, :L][None]))
        with torch.no_grad():
            _, h = model.module_.eval()(Z, torch.as_tensor(st.h0[s][None]))
        np.testing.assert_allclose(h[0].numpy(), st.h[s], atol=1e-5)


def test_keys_have_separate_states_and_other_keys_do_not_move_them():
    model = LSTMRegressor(key="id", seed=0, hidden_size=4, update_every=10**6, bptt=10**4)
    for x, y in keyed_stream(100, 5):
        model.learn_one(x, y)
    assert model.n_keys_ == 5 and "id" not in model.features_.names
    h_a = model.keys_.h[model.keys_.get("k0")].copy()
    for _ in range(20):
        model.learn_one({"id": "k1", "a": 1.0, "b": 2.0}, 0.0)
    assert np.array_equal(model.keys_.h[model.keys_.get("k0")], h_a)
    x = {"a": 0.5, "b": 0.5}
    assert model.predict_one({"id": "k0", **x}) != model.predict_one({"id": "k1", **x})
    assert model.predict_one({"id": "never-seen", **x}) == model.predict_one({"id": "other-new", **x})


def test_max_keys_forgets_the_least_recently_learned_key():
    model = LSTMRegressor(key="id", max_keys=3, seed=0, hidden_size=4)
    for x, y in keyed_stream(300, 10):
        model.learn_one(x, y)
    assert model.n_keys_ == 3 and model.keys_.cap <= 4
    assert model.keys_.n_evicted_keys > 0
    model.forget(next(iter(model.keys_.slots)))
    assert model.n_keys_ == 2


@pytest.mark.parametrize("stateful", [True, False])
def test_learn_many_with_interleaved_keys_matches_learn_one(stateful):
    stream = keyed_stream(330, 7, seed=2)
    kw = dict(key="id", seed=4, hidden_size=8, update_every=5, bptt=6, stateful=stateful, window=4)
    one, many = LSTMRegressor(**kw), LSTMRegressor(**kw)
    for x, y in stream:
        one.learn_one(x, y)
    for i in range(0, len(stream), 47):
        chunk = stream[i:i + 47]
        many.learn_many(pd.DataFrame([x for x, _ in chunk]), pd.Series([y for _, y in chunk]))
    assert one.n_updates_ == many.n_updates_
    X = pd.DataFrame([x for x, _ in stream[:40]])
    np.testing.assert_allclose(one.predict_many(X), many.predict_many(X), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(many.predict_many(X), [many.predict_one(x) for x in X.to_dict("records")],
                               rtol=1e-5, atol=1e-6)


def test_unlabeled_events_advance_the_state_without_a_loss():
    model = LSTMClassifier(seed=0, update_every=4)
    model.learn_one({"a": 1.0}, True)
    h = model.keys_.h.copy()
    model.learn_one({"a": 2.0}, None)
    assert not np.array_equal(model.keys_.h, h) and model.classes_ == [True]


# -- memory: the point of a stateful model ---------------------------------------------------

@pytest.mark.slow
def test_stateful_remembers_beyond_the_window():
    stream = latch_stream(5000, gap=(30, 60))
    acc = {}
    for stateful in (True, False):
        model = LSTMClassifier(stateful=stateful, window=8, seed=1)
        hits = [p == y for p, (_, y) in zip(prequential(model, stream), stream)]
        acc[stateful] = np.mean(hits[-1000:])
    assert acc[True] > 0.9 and acc[False] < 0.75, acc


# -- robustness ----------------------------------------------------------------------------------

def test_new_feature_mid_stream_and_nan_never_reach_weights():
    model = LSTMRegressor(seed=0, hidden_size=4, update_every=2)
    for i in range(30):
        model.learn_one({"a": float(i), "b": np.nan if i % 3 else 1.0}, float(i))
    before = model.predict_one({"a": 1.0, "b": 1.0})
    model.learn_one({"a": 1.0, "b": 1.0, "0new": float("inf")}, 1.0)
    assert model.module_.rnn.weight_ih_l0.shape[1] == 3
    for p in model.module_.parameters():
        assert torch.isfinite(p).all()
    assert np.isfinite(before)


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="cell='transformer'"):
        LSTMClassifier(cell="transformer")
    with pytest.raises(FeatureTypeError, match="OneHotEncoder"):
        LSTMClassifier(key="id").learn_one({"id": "s1", "city": "Paris"}, True)


def test_same_seed_same_results_with_dropout():
    stream = latch_stream(200)
    kw = dict(seed=5, dropout=0.2, num_layers=2, hidden_size=8, update_every=4)
    assert prequential(LSTMClassifier(**kw), stream) == prequential(LSTMClassifier(**kw), stream)


# -- state round trip ---------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: LSTMRegressor(key="id", seed=1, hidden_size=8, bptt=8, update_every=5, dropout=0.1),
    lambda: LSTMRegressor(key="id", seed=1, hidden_size=8, stateful=False, window=4, cell="gru",
                          many_to_many=True),
])
def test_state_dict_round_trip_resumes_the_exact_stream(make, tmp_path):
    stream = keyed_stream(500, 6, seed=7)
    model = make()
    prequential(model, stream[:243])               # mid-segment, mid-batch
    copy_ = make().load_state_dict(model.state_dict())
    model.save(tmp_path / "seq.pt")
    loaded = streamnn.load(tmp_path / "seq.pt")
    rest = stream[243:]
    assert prequential(model, rest) == prequential(copy_, rest) == prequential(loaded, rest)


def test_classifier_round_trip_keeps_classes(tmp_path):
    stream = latch_stream(150)
    model = LSTMClassifier(seed=2, hidden_size=4)
    prequential(model, stream)
    model.save(tmp_path / "c.pt")
    loaded = streamnn.load(tmp_path / "c.pt")
    x = stream[0][0]
    assert loaded.predict_proba_one(x) == model.predict_proba_one(x)


# -- river's own checks ---------------------------------------------------------------------------

def _checks():
    for cls in (LSTMClassifier, LSTMRegressor):
        for params in cls._unit_test_params():
            model = cls(**params, seed=1)
            tag = "stateful" if model.stateful else "windowed"
            for check in checks.yield_checks(model):
                marks = [pytest.mark.slow] if "memory" in check.__name__ else []
                yield pytest.param(model, check, id=f"{cls.__name__}-{tag}-{check.__name__}", marks=marks)


@pytest.mark.parametrize("model, check", list(_checks()))
def test_river_check(model, check):
    check(model.clone())


def test_the_default_key_bound_forgets_the_least_recently_learned_key():
    """Bounded memory by default (a key new on every record must not grow the store without end):
    the default is MAX_KEYS, and past the bound the oldest key goes."""
    from streamnn.seqlearner import MAX_KEYS
    assert LSTMRegressor().max_keys == MAX_KEYS == 100_000
    m = LSTMRegressor(key="k", hidden_size=4, seed=0)
    m.keys_.max_keys = 50                    # the same rule at a size a test can reach
    for i in range(120):
        m.learn_one({"k": i, "a": float(i % 7)}, float(i % 3))
    assert len(m.keys_) == 50 and m.keys_.n_evicted_keys == 70
    assert m.keys_.get(119) is not None and m.keys_.get(0) is None


def test_a_runtime_checkpoint_from_before_the_key_bound_resumes_under_it():
    """Checkpoints written while max_keys defaulted to None (unbounded) were refused against the
    new default, and a TOML config cannot say None: max_keys bounds memory, not what was learned,
    so a checkpoint may differ in it; other parameters still may not."""
    from streamnn.checkpoint import CheckpointError
    from streamnn.runtime.state import check_compatible
    from streamnn.serialization import _plain_params
    params = {**_plain_params(LSTMRegressor(seed=0)), "max_keys": None}
    ck = {"learner": "streamnn.sequence.LSTMRegressor", "params": params}
    check_compatible(ck, LSTMRegressor(seed=0), "ck")
    with pytest.raises(CheckpointError, match=r"hidden_size: checkpoint 32 vs config 8"):
        check_compatible(ck, LSTMRegressor(seed=0, hidden_size=8), "ck")

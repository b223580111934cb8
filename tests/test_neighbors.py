"""The classifier's nearest-neighbour expert (streamnn/neighbors.py): a k-nearest vote over the last
rows the network saw, mixed with the network by exponentiated gradient (`MLPClassifier(neighbors=k)`,
10 by default)."""
import math

import numpy as np
import pandas as pd
import pytest

import streamnn
from streamnn.checkpoint import CheckpointError
from streamnn.classification import MLPClassifier
from streamnn.neighbors import MAX_INPUTS, NeighbourExpert
from test_linear_classifier import _prequential


def _rings(n, seed=0):
    """Two classes on two rings (a boundary no line draws): class 1 on the inner one."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        c = int(rng.integers(0, 2))
        r, a = (1.0 if c else 2.0) + rng.normal(0, 0.15), rng.uniform(0, 2 * np.pi)
        out.append(({"a": float(r * np.cos(a)), "b": float(r * np.sin(a))}, c))
    return out


def _vote_written_out(R, T, z, k, n_classes):
    """The rule: rows closer than the k-th distance vote 1, the rows at it share the rest."""
    d = sorted(((float(((r - z) ** 2).sum()), int(t)) for r, t in zip(R, T)))
    kth = d[k - 1][0]
    v = np.zeros(n_classes)
    less = [t for dist, t in d if dist < kth]
    at = [t for dist, t in d if dist == kth]
    for t in less:
        v[t] += 1
    for t in at:
        v[t] += (k - len(less)) / len(at)
    return v / k


def test_the_vote_is_the_rule_written_out_with_ties_shared():
    rng = np.random.default_rng(1)
    ex = NeighbourExpert(k=5, memory=50)
    R = rng.integers(-2, 3, size=(80, 3)).astype(np.float32)   # a grid: many equal distances
    T = rng.integers(0, 3, size=80)
    ex.learn(R, T)
    held_R, held_T = R[-50:], T[-50:]
    for z in rng.integers(-2, 3, size=(40, 3)).astype(np.float32):
        assert np.allclose(ex.vote(z, 3), _vote_written_out(held_R, held_T, z, 5, 3), atol=1e-12)
    order = rng.permutation(50)                                    # the order of the memory does not matter
    other = NeighbourExpert(k=5, memory=50)
    other.learn(held_R[order], held_T[order])
    Z = rng.normal(size=(30, 3)).astype(np.float32)
    assert np.array_equal(ex.proba(Z, 3), other.proba(Z, 3))


def test_a_row_gets_the_same_vote_alone_or_in_a_frame():
    """`proba` (rows in blocks) equals `vote` row by row, bit for bit: ties on a grid, scales from
    1e-3 to 1e3, rows narrower or wider than the memory."""
    rng = np.random.default_rng(2)
    for _ in range(60):
        F, C, k = int(rng.integers(1, 40)), int(rng.integers(1, 6)), int(rng.integers(1, 15))
        ex = NeighbourExpert(k=k, memory=int(rng.choice([rng.integers(k, 300), 384, 1000])))   # 384: whole blocks of the selection
        grid = bool(rng.integers(0, 2))
        rows = int(rng.choice([rng.integers(1, 400), ex.memory, 1200]))
        R = rng.integers(-2, 3, size=(rows, F)) if grid else rng.normal(size=(rows, F)) * 10.0 ** rng.integers(-3, 4)
        ex.learn(R, rng.integers(0, C, size=len(R)))
        width = int(rng.integers(1, 45))
        Z = (rng.integers(-2, 3, size=(int(rng.integers(2, 70)), width)) if grid else
             rng.normal(size=(int(rng.integers(2, 70)), width))).astype(np.float32)
        frame = ex.proba(Z, C)
        assert all(np.array_equal(frame[i], ex.vote(Z[i], C)) for i in range(len(Z)))
        assert np.allclose(frame.sum(axis=1), 1.0)


def _board(n, seed=0):
    """A 4 x 4 checkerboard on two features: a network learns it slowly, a vote at once."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a, b = rng.uniform(0, 4, 2)
        out.append(({"a": float(a), "b": float(b)}, int((int(a) + int(b)) % 2)))
    return out


def test_a_checkerboard_is_learned_much_faster_with_the_vote():
    stream = _board(3000)
    on = _prequential(MLPClassifier(seed=0), stream)
    off = _prequential(MLPClassifier(seed=0, neighbors=0), stream)   # measured: 0.82 / 0.93 against 0.62 / 0.78
    assert on[:1000].mean() > off[:1000].mean() + 0.1, (on[:1000].mean(), off[:1000].mean())
    assert on[2000:].mean() > max(0.9, off[2000:].mean() + 0.05), (on[2000:].mean(), off[2000:].mean())


def test_the_weights_follow_the_better_expert_and_keep_a_floor():
    rng = np.random.default_rng(3)
    Z = rng.normal(size=(600, 2))
    T = (Z[:, 0] > 0).astype(np.int64)
    good, bad = NeighbourExpert(), NeighbourExpert()
    for i in range(600):
        z, t = Z[i:i + 1], T[i:i + 1]
        for ex, p_net in ((good, [0.5]), (bad, [0.99])):          # a useless network, a perfect one
            p_vote = [float(ex.proba(z, 2)[0, t[0]])] if ex.n else None
            ex.learn(z, t, p_net if ex.n else None, p_vote)
    assert good.w[1] > 0.9 and math.isclose(good.w.sum(), 1.0)
    assert 0.02 <= bad.w[1] < 0.03 and math.isclose(bad.w.sum(), 1.0)   # at (or just above) the floor


def test_learn_many_equals_a_learn_one_loop_bit_for_bit():
    stream = _rings(900, seed=4)
    X = pd.DataFrame([x for x, _ in stream])
    y = pd.Series([t for _, t in stream])
    a, b = MLPClassifier(seed=3, warmup=200), MLPClassifier(seed=3, warmup=200)
    for x, t in stream:
        a.learn_one(x, t)
    for i in range(0, len(stream), 37):
        b.learn_many(X.iloc[i:i + 37], y.iloc[i:i + 37])
    ea, eb = a.neighbors_, b.neighbors_
    assert np.array_equal(ea.R, eb.R) and np.array_equal(ea.T, eb.T) and np.array_equal(ea.w, eb.w)
    assert ea.w[1] != 0.5                                       # the weights moved
    pa = a.predict_proba_many(X.iloc[:50]).to_numpy()
    assert np.array_equal(pa, b.predict_proba_many(X.iloc[:50]).to_numpy())
    loop = np.array([[a.predict_proba_one(x)[c] for c in a.classes_] for x, _ in stream[:50]])
    assert np.allclose(pa, loop, rtol=1e-6, atol=1e-9)   # the network's frame forward rounds differently


def test_predicting_or_not_leaves_the_learner_the_same():
    """The step reads back the probabilities the predictions computed; without predictions it
    computes them: the same expert either way."""
    stream = _rings(700, seed=5)
    a, b, c = (MLPClassifier(seed=1, warmup=100) for _ in range(3))
    for x, t in stream:
        a.predict_proba_one(x)
        a.learn_one(x, t)
        b.learn_one(x, t)
    X, y = pd.DataFrame([x for x, _ in stream]), pd.Series([t for _, t in stream])
    for i in range(0, len(stream), 64):                        # frames predicted, then learned (the runtime)
        c.predict_proba_many(X.iloc[i:i + 64])
        c.learn_many(X.iloc[i:i + 64], y.iloc[i:i + 64])
    for m in (a, c):
        assert np.array_equal(m.neighbors_.w, b.neighbors_.w) and np.array_equal(m.neighbors_.R, b.neighbors_.R)


@pytest.mark.parametrize("name, on, off", [("neighbors", 10, 0), ("linear", True, False)])
def test_a_state_from_before_an_expert_parameter_resumes_as_it_was_trained(name, on, off):
    """The experts' parameters (`neighbors`, `linear`) came after checkpoints were written: a state
    without one resumes as it was trained (`PARAMS_BEFORE`), one with it names the parameter."""
    old = MLPClassifier(seed=0, **{name: off})
    stream = _rings(300, seed=7)
    for x, t in stream[:200]:
        old.learn_one(x, t)
    state = old.state_dict()
    del state["extra"][name]                                     # written before the parameter existed
    back = MLPClassifier(seed=0, **{name: on}).load_state_dict(state)
    assert getattr(back, name) == off and getattr(back, name + "_") is None
    for x, t in stream[200:]:
        assert back.predict_proba_one(x) == old.predict_proba_one(x)
        back.learn_one(x, t), old.learn_one(x, t)
    extra = {"classes": [], "members": 3, "lr_spread": 1.0, "linear": False, "neighbors": 10, name: on}
    with pytest.raises(ValueError, match=rf"MLPClassifier\({name}={on}"):
        MLPClassifier(seed=0, **{name: off}).load_state_dict(
            MLPClassifier(seed=0, **{name: on}).state_dict() | {"built": True, "extra": extra})


@pytest.mark.parametrize("name, on, off", [("neighbors", 10, 0), ("linear", True, False)])
def test_a_runtime_checkpoint_from_before_an_expert_parameter_names_it(name, on, off):
    from streamnn.runtime.state import check_compatible
    from streamnn.serialization import _plain_params
    params = _plain_params(MLPClassifier(seed=0, **{name: on}))
    del params[name]                                             # written before the parameter existed
    ck = {"learner": "streamnn.classification.MLPClassifier", "params": params}
    check_compatible(ck, MLPClassifier(seed=0, **{name: off}), "ck")
    with pytest.raises(CheckpointError, match=rf"{name}: checkpoint {off} vs config {on}"):
        check_compatible(ck, MLPClassifier(seed=0, **{name: on}), "ck")


def test_a_damaged_state_is_refused():
    ex = NeighbourExpert()
    ex.learn(np.ones((5, 2)), np.array([0, 1, 0, 1, 1]))
    s = ex.state_dict()
    assert NeighbourExpert.from_state(s).n == 5
    with pytest.raises(ValueError, match="do not match"):
        NeighbourExpert.from_state({**s, "T": s["T"][:3]})
    with pytest.raises(ValueError, match="shares of 1"):
        NeighbourExpert.from_state({**s, "w": s["w"] * 3})


def test_non_finite_and_extreme_rows_give_finite_votes():
    """(Through the learner: test_linear_classifier.py's extreme-input test, with both experts.)"""
    ex = NeighbourExpert(k=2, memory=4)
    ex.learn(np.array([[3e38, -3e38], [1.0, 1.0]]), np.array([0, 1]))
    v = ex.proba(np.array([[np.inf, np.nan]]), 2)                 # held within BOUND: finite distances
    assert np.isfinite(v).all() and v.sum() == pytest.approx(1.0)


def test_new_classes_and_features_grow_the_vote():
    rng = np.random.default_rng(9)
    model = MLPClassifier(seed=0)
    hits = []
    for i in range(1500):
        c = int(rng.integers(0, 3 if i >= 500 else 2))
        x = {f"x{j}": float(v) for j, v in enumerate(rng.normal(size=3) + 3.0 * np.eye(3)[c])}
        if i < 300:
            del x["x2"]                                          # a feature that appears later
        if i >= 1200:
            hits.append(model.predict_one(x) == f"c{c}")
        model.learn_one(x, f"c{c}")
    assert model.neighbors_.R.shape[0] == 3 and set(model.neighbors_.T[: model.neighbors_.n]) == {0, 1, 2}
    assert np.mean(hits) > 0.9
    p = model.predict_proba_one({"x0": 0.0, "x1": 0.0, "x2": 3.0})
    assert set(p) == {"c0", "c1", "c2"} and max(p, key=p.get) == "c2"


def test_wide_inputs_leave_the_network_alone():
    rng = np.random.default_rng(10)
    model = MLPClassifier(seed=0)
    for i in range(50):
        width = 4 if i < 25 else MAX_INPUTS + 1
        model.learn_one({f"f{j}": float(v) for j, v in enumerate(rng.normal(size=width))}, i % 2)
    assert model.neighbors_ is None
    state = model.state_dict()
    assert "neighbor_expert" not in state["extra"]
    back = MLPClassifier(seed=0).load_state_dict(state)
    assert back.neighbors_ is None


def test_a_drift_rewarm_empties_the_memory_and_weight_zero_rows_are_not_held():
    model = MLPClassifier(seed=0)
    for x, t in _rings(300, seed=11):
        model.learn_one(x, t)
    assert model.neighbors_.n == 300
    model._after_drift()
    assert model.neighbors_.n == 0
    ex = NeighbourExpert()
    ex.learn(np.array([[0.0], [1.0], [2.0]]), np.array([0, 1, 0]), W=np.array([1.0, 0.0, 2.0]))
    assert ex.n == 2 and ex.T[:2].tolist() == [0, 0]


def test_neighbors_is_a_checked_parameter_and_0_means_no_expert():
    for bad in (-1, 2.5, True, "10", 1001):
        with pytest.raises(ValueError, match="neighbors="):
            MLPClassifier(neighbors=bad)
    with pytest.raises(ValueError, match="k="):
        NeighbourExpert(k=0)
    model = MLPClassifier(neighbors=0)
    assert model._get_params()["neighbors"] == 0 and model.clone().neighbors == 0
    model.learn_one({"a": 1.0}, "x")
    assert model.neighbors_ is None
    assert MLPClassifier().neighbors == 10

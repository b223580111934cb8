"""`members=K`: K networks trained as one batched network (issue 15's accuracy-first recipe)."""

import numpy as np
import pytest
import torch

import streamnn
from streamnn.modules import members_of


def _stream(n=300, seed=0):
    """Three classes; the third appears only after 100 events (the output layer grows)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        c = int(rng.integers(0, 3 if i >= 100 else 2))
        x = rng.normal(size=3) + 2.0 * np.eye(3)[c]
        out.append(({f"x{j}": float(v) for j, v in enumerate(x)}, f"c{c}"))
    return out


def _train(model, stream, use_kernel=True):
    if not use_kernel:
        model._make_kernel = lambda: None
    for x, y in stream:
        model.learn_one(x, y)
    return model


def test_a_new_class_grows_every_member_and_the_kernel_matches_torch():
    stream = _stream()
    fast = _train(streamnn.MLPClassifier(seed=1, members=3, hidden=(8,), update_every=4), stream)
    slow = _train(streamnn.MLPClassifier(seed=1, members=3, hidden=(8,), update_every=4), stream, False)
    assert fast._kernel and slow._kernel is False
    assert members_of(fast.module_) == 3 and fast.module_.net[-2].out_features == 3 * 3
    for a, b in zip(fast.module_.parameters(), slow.module_.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-3, atol=1e-4)
    proba = fast.predict_proba_one(stream[-1][0])
    assert sorted(proba) == ["c0", "c1", "c2"] and abs(sum(proba.values()) - 1.0) < 1e-9
    acc = np.mean([fast.predict_one(x) == y for x, y in _stream(200, seed=5)])
    assert acc > 0.8


def test_the_prediction_is_the_mean_of_the_members_outputs():
    model = _train(streamnn.MLPClassifier(seed=0, members=3, hidden=(8,)), _stream(150))
    Z = model._scale(model.features_.frame(
        __import__("pandas").DataFrame([x for x, _ in _stream(20, seed=3)]), grow=False))
    net = model.module_
    with torch.no_grad():
        per_member = net.train()(torch.as_tensor(Z))   # (B, O, K)
        net.eval()
    np.testing.assert_allclose(model._forward(Z), per_member.mean(dim=2).numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(per_member[..., 0].numpy(), per_member[..., 1].numpy())   # distinct members


@pytest.mark.parametrize("make", [streamnn.MLPClassifier, streamnn.MLPRegressor])
def test_members_are_a_constructor_parameter_that_clone_and_checkpoints_keep(make, tmp_path):
    model = make(seed=0, members=2, hidden=(4,))
    data = [({"a": float(i % 7), "b": float(i % 3)}, (i % 2 == 0) if make is streamnn.MLPClassifier else
             float(i % 7)) for i in range(60)]
    _train(model, data)
    assert model.clone().members == 2
    model.save(tmp_path / "m.ckpt")
    back = make.load(tmp_path / "m.ckpt")
    x = {"a": 3.0, "b": 1.0}
    assert back.members == 2 and back.predict_one(x) == model.predict_one(x)


def test_a_checkpoint_from_before_members_loads_as_one_network():
    """State written when MLPClassifier was one network (no "members" in it) still loads into the
    learner built with members=3, as one network, with the same predictions."""
    one = _train(streamnn.MLPClassifier(seed=0, members=1), _stream(120))
    state = one.state_dict()
    del state["extra"]["members"]
    back = streamnn.MLPClassifier(seed=0, members=3).load_state_dict(state)
    assert back.members == 1 and members_of(back.module_) == 1
    for x, _ in _stream(20, seed=4):
        assert back.predict_proba_one(x) == one.predict_proba_one(x)
    with pytest.raises(RuntimeError):   # a state that says 3 members does not fit one network
        streamnn.MLPClassifier(seed=0, members=1).load_state_dict(
            _train(streamnn.MLPClassifier(seed=0, members=3), _stream(60)).state_dict())


def _reference_ce(out, T, K):
    """The numpy cross-entropy as it was before `softmax_ce` (one network: (B, O); K members:
    (B, O * K) output-major), written with numpy's own reductions: the bit-exact reference."""
    B = len(out)
    z = out.reshape(B, -1, K) if K > 1 else out
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(axis=1, keepdims=True)
    rows, idx = np.arange(B), T.astype(np.int64)
    per = (np.log(s[:, 0]) + m[:, 0] - z[rows, idx]).astype(np.float64)
    g = e / s
    g[rows, idx] -= 1.0
    if K > 1:
        per, g = per.mean(axis=1), (g / np.float32(K)).reshape(B, -1)
    return per, g


@pytest.mark.parametrize("K", [1, 3, 4])
@pytest.mark.parametrize("O", [2, 3, 7, 9, 12])
def test_the_numpy_cross_entropy_equals_the_reference_bit_for_bit(O, K):
    """`softmax_ce` skips numpy's reductions over the classes (two classes; a few classes of K
    members, class by class): the same IEEE operations in the same order, so the same bits."""
    from streamnn.backends.losses import loss_op
    rng = np.random.default_rng(O * 10 + K)
    out = (rng.normal(size=(257, O * K)) * rng.choice([0.01, 1.0, 30.0], size=(257, O * K))).astype(np.float32)
    out[0] = 1e4                                  # ties and a large logit
    T = rng.integers(0, O, 257).astype(np.float64)
    per, g = loss_op("ce", K)(out.copy(), T)
    ref_per, ref_g = _reference_ce(out.copy(), T, K)
    assert per.dtype == ref_per.dtype and g.dtype == ref_g.dtype == np.float32
    assert np.array_equal(per, ref_per) and np.array_equal(g, ref_g)


def test_the_members_mean_of_a_prediction_equals_numpys_mean():
    from streamnn.backends.ops import MemberMean
    rng = np.random.default_rng(0)
    for shape in [(6,), (5, 6), (3, 21)]:
        h = rng.normal(size=shape).astype(np.float32)
        got = MemberMean(3).forward(h)
        ref = h.reshape(h.shape[:-1] + (-1, 3)).mean(axis=-1)
        assert got.dtype == np.float32 and np.array_equal(got, ref)


def test_lr_spread_trains_member_0_faster_and_the_others_at_lr():
    """`lr_spread=3`: member 0's parameters move three times as far in a step as with
    `lr_spread=1` from the same start; the other members' exactly as far (numpy and torch)."""
    stream = _stream(1)
    for use_kernel in (True, False):
        moved = {}
        for spread in (1.0, 3.0):
            kw = dict(seed=0, hidden=(4,), lr_spread=spread, scale_inputs=None)
            m = _train(streamnn.MLPClassifier(**kw), stream, use_kernel)
            assert m.n_updates_ == 1 and bool(m._kernel) == use_kernel
            fresh = streamnn.MLPClassifier(**kw)
            fresh._build(m.n_in_)
            moved[spread] = (m.module_.net[0].weight - fresh.module_.net[0].weight).detach().numpy()
        k0 = slice(0, 4)                                   # member 0's hidden units (member-major)
        np.testing.assert_allclose(moved[3.0][k0], 3.0 * moved[1.0][k0], rtol=1e-4, atol=1e-7)
        np.testing.assert_array_equal(moved[3.0][4:], moved[1.0][4:])
        assert np.abs(moved[1.0][k0]).max() > 0


def test_lr_spread_is_checked_saved_and_an_older_checkpoint_resumes_as_before(tmp_path):
    with pytest.raises(ValueError, match="lr_spread"):
        streamnn.MLPClassifier(lr_spread=0)
    old = _train(streamnn.MLPClassifier(seed=0, lr_spread=1.0), _stream(120))   # as before lr_spread
    state = old.state_dict()
    del state["extra"]["lr_spread"]
    back = streamnn.MLPClassifier(seed=0, lr_spread=3.0).load_state_dict(state)
    assert back.lr_spread == 1.0
    more = _stream(200, seed=7)
    _train(old, more), _train(back, more)
    for x, _ in _stream(20, seed=4):
        assert back.predict_proba_one(x) == old.predict_proba_one(x)
    model = _train(streamnn.MLPClassifier(seed=0, lr_spread=2.0), _stream(60))
    model.save(tmp_path / "m.ckpt")
    again = streamnn.MLPClassifier.load(tmp_path / "m.ckpt")
    assert again.lr_spread == 2.0 and again.clone().lr_spread == 2.0
    with pytest.raises(ValueError, match=r"lr_spread=2.0"):   # resumed only with the spread it had
        streamnn.MLPClassifier(seed=0, lr_spread=3.0).load_state_dict(model.state_dict())
    _train(model, more), _train(again, more)
    for a, b in zip(model.module_.parameters(), again.module_.parameters()):
        assert torch.equal(a, b)


def test_a_runtime_checkpoint_from_before_lr_spread_names_it_and_resumes_with_it_set_to_1():
    from streamnn.checkpoint import CheckpointError
    from streamnn.runtime.state import check_compatible
    from streamnn.serialization import _plain_params
    old = streamnn.MLPClassifier(seed=0, lr_spread=1.0)
    params = _plain_params(old)
    del params["lr_spread"]                                     # written before the parameter existed
    ck = {"learner": "streamnn.classification.MLPClassifier", "params": params}
    check_compatible(ck, streamnn.MLPClassifier(seed=0, lr_spread=1.0), "ck")   # resumes
    check_compatible(ck, streamnn.MLPClassifier(seed=0), "ck")                 # 1.0 is the default
    with pytest.raises(CheckpointError, match=r"lr_spread: checkpoint 1.0 vs config 3.0"):
        check_compatible(ck, streamnn.MLPClassifier(seed=0, lr_spread=3.0), "ck")
    del params["members"]                                       # older still: one network
    with pytest.raises(CheckpointError, match=r"members: checkpoint 1 vs config 3"):
        check_compatible(ck, streamnn.MLPClassifier(seed=0), "ck")
    check_compatible(ck, streamnn.MLPClassifier(seed=0, members=1), "ck")

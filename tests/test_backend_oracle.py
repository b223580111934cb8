"""The oracle test (issue 14): the numpy backend's step equals torch's own step.

Kernel level: ops x activations (with their parameters) x optimizers x losses x networks (MLP,
ensemble MLP, nn.Sequential, dense autoencoder), with and without sample weights and gradient
clipping: per-sample losses, weights, optimizer state and predictions after each of three steps.
Learner level: the classifier, regressor, multi-head learners and the autoencoder detector trained
on a stream by the numpy backend and by torch end equal; what the numpy backend does not claim
(VAE, conv, LSTM autoencoders, recurrent training, GELU, ...) reports the torch backend and why.
"""

import copy
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from river import datasets
from torch import nn

import streamnn
from streamnn.autoencoders import AutoEncoder
from streamnn.backends import NumpyBackend, activation, select
from streamnn.modules import MLP
from streamnn.recurrent import SeqNet, np_run, numpy_plan

ACTS = {
    "relu": nn.ReLU, "leaky0.2": functools.partial(nn.LeakyReLU, 0.2), "leaky": nn.LeakyReLU,
    "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "identity": nn.Identity,
    "elu0.5": functools.partial(nn.ELU, 0.5), "elu": nn.ELU,
}
OPTS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "sgd-momentum-wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adam-wd": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01),
    "adam-decoupled": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.05, decoupled_weight_decay=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.05),
}


def _torch_per(net, loss, X, T):
    """The per-sample loss of torch's forward in training mode: the oracle."""
    out = net(X)
    if loss == "recon":
        return ((out[0] - X) ** 2).mean(1)
    if out.dim() == 3:                                       # an ensemble: (B, O, K)
        K = out.shape[2]
        if loss == "ce":
            return F.cross_entropy(out, T[:, None].expand(-1, K), reduction="none").mean(1)
        return ((out[:, 0] - T[:, None]) ** 2).mean(1)
    if loss == "ce":
        return F.cross_entropy(out, T, reduction="none")
    return (out[:, 0] - T) ** 2


def _net(kind, act, n_in, n_out):
    torch.manual_seed(0)
    if kind == "mlp":
        return MLP(n_in, n_out, hidden=(6, 5), activation=act)
    if kind == "members":
        return MLP(n_in, n_out, hidden=(4,), activation=act, members=3)
    if kind == "member_lr":   # members with a learning rate each (MLPClassifier's lr_spread)
        return MLP(n_in, n_out, hidden=(4,), activation=act, members=3, member_lr=(1.0, 3.0, 0.5))
    if kind == "sequential":
        return nn.Sequential(nn.Linear(n_in, 7), act(), nn.Linear(7, n_out))
    return AutoEncoder(n_in, 1, hidden=(6,), latent=3, activation=act)


def _check_step(kind, act, opt, loss, weighted=False, clip=None, steps=3):
    n_in, n_out = 5, (3 if loss == "ce" else 1)
    a = _net(kind, ACTS[act], n_in, n_out)
    b = copy.deepcopy(a)
    oa, ob = OPTS[opt](a.parameters()), OPTS[opt](b.parameters())
    backend, why = NumpyBackend.build(a, oa, loss, clip)
    assert backend is not None, why
    rng = np.random.default_rng(1)
    for _ in range(steps):
        X = rng.normal(size=(9, n_in)).astype(np.float32)
        T = rng.integers(0, n_out, 9) if loss == "ce" else rng.normal(size=9).astype(np.float32)
        W = rng.uniform(0.5, 2.0, 9) if weighted else None
        per = backend.step(X, None if loss == "recon" else T, W)
        b.train()
        per_t = _torch_per(b, loss, torch.from_numpy(X), torch.as_tensor(T))
        Wt = torch.ones(9) if W is None else torch.as_tensor(W, dtype=torch.float32)
        ob.zero_grad()
        ((per_t * Wt).sum() / Wt.sum()).backward()
        if clip:
            nn.utils.clip_grad_norm_(b.parameters(), clip)
        scales = b.lr_scales() if isinstance(b, MLP) else None   # members' learning rates
        before = [p.detach().clone() for p in b.parameters()]
        ob.step()
        with torch.no_grad():
            for p, p0 in zip(b.parameters(), before):
                if scales:   # each element's change scaled by its member's multiplier
                    p.copy_(p0 + torch.as_tensor(scales[id(p)]) * (p - p0))
        np.testing.assert_allclose(per, per_t.detach().numpy(), rtol=1e-5, atol=1e-6)
        for pa, pb in zip(a.parameters(), b.parameters()):
            np.testing.assert_allclose(pa.detach().numpy(), pb.detach().numpy(), rtol=1e-4, atol=1e-6)
        for pa, pb in zip(a.parameters(), b.parameters()):
            sa, sb = oa.state[pa], ob.state[pb]
            assert set(sa) == set(sb)
            for name in sb:
                np.testing.assert_allclose(torch.as_tensor(sa[name]).numpy(), torch.as_tensor(sb[name]).numpy(),
                                           rtol=1e-4, atol=1e-7, err_msg=name)
    b.eval()
    with torch.no_grad():
        ref = b(torch.from_numpy(X))
    ref = ref[0] if loss == "recon" else ref
    if loss != "recon":   # prediction runs the backend's own op list
        np.testing.assert_allclose(backend.forward(X), ref.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("kind", ["mlp", "members", "member_lr", "sequential", "autoencoder"])
def test_activations_and_networks(kind, act):
    loss = "recon" if kind == "autoencoder" else "mse"
    _check_step(kind, act, "adam", loss)


@pytest.mark.parametrize("opt", list(OPTS))
@pytest.mark.parametrize("loss", ["ce", "mse", "recon"])
def test_optimizers_and_losses(opt, loss):
    _check_step("autoencoder" if loss == "recon" else "mlp", "tanh", opt, loss)


@pytest.mark.parametrize("opt", list(OPTS))
def test_members_learning_rates_with_every_optimizer(opt):
    _check_step("member_lr", "relu", opt, "ce")


@pytest.mark.parametrize("loss", ["ce", "mse", "recon"])
@pytest.mark.parametrize("kind", ["mlp", "members", "member_lr"])
def test_sample_weights_and_gradient_clipping(kind, loss):
    if loss == "recon":
        kind = "autoencoder"
    _check_step(kind, "leaky0.2", "adamw", loss, weighted=True, clip=0.05)


def test_leaky_relu_slope_is_read_from_the_instance():
    assert activation(nn.LeakyReLU(0.2)).slope == pytest.approx(0.2)
    assert activation(nn.LeakyReLU()).slope == pytest.approx(0.01)
    assert activation(nn.ELU(0.5)).alpha == 0.5
    for m in (nn.GELU(), nn.SELU(), nn.Mish(), nn.Softplus(), nn.ELU(inplace=True)):
        assert activation(m) is None, m


@pytest.mark.parametrize("net, why", [
    (lambda: MLP(3, 2, activation="gelu"), "GELU"),
    (lambda: MLP(3, 2, norm="layer"), "LayerNorm"),
    (lambda: AutoEncoder(3, 4, encoder="conv"), "not a chain"),
    (lambda: AutoEncoder(3, 4, encoder="lstm"), "not a chain"),
    (lambda: nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 1)), "without bias"),
])
def test_unsupported_networks_fall_back_to_torch_with_a_reason(net, why):
    module = net()
    opt = torch.optim.Adam(module.parameters())
    backend = select(module, opt, "mse", torch.device("cpu"))
    assert backend.name == "torch" and why in backend.describe(), backend.describe()
    assert select(MLP(3, 2), torch.optim.RMSprop(MLP(3, 2).parameters()), "mse",
                  torch.device("cpu")).name == "torch"


# --- learners: a stream trained by the numpy backend equals the same stream trained by torch ---

PHISHING = list(datasets.Phishing())[:160]
TRUMP = list(datasets.TrumpApproval())[:160]


def _assert_same_module(fast, slow, rtol=1e-3, atol=2e-4):
    assert fast.n_updates_ == slow.n_updates_ > 0
    for a, b in zip(fast.module_.parameters(), slow.module_.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("make, stream", [
    (lambda: streamnn.MLPClassifier(seed=1, hidden=(8,), activation=ACTS["leaky0.2"]), PHISHING),
    (lambda: streamnn.MLPClassifier(seed=1, hidden=(8, 4), activation=ACTS["elu0.5"], optimizer="sgd",
                                    lr=0.05), PHISHING),
    (lambda: streamnn.MLPRegressor(seed=1, activation=ACTS["leaky0.2"], update_every=1, batch_size=8,
                                   replay=0.0, lr=0.05), TRUMP),
    (lambda: streamnn.MLPRegressor(seed=1, activation="tanh", grad_clip=0.1), TRUMP),
])
def test_learners_numpy_equals_torch(make, stream):
    fast, slow = make(), make()
    slow._make_kernel = lambda: None
    for x, y in stream:
        fast.learn_one(x, y)
        slow.learn_one(x, y)
    assert fast.backend_.startswith("numpy: ") and slow.backend_.startswith("torch")
    _assert_same_module(fast, slow)
    x = stream[-1][0]
    if isinstance(fast, streamnn.MLPRegressor):
        assert fast.predict_one(x) == pytest.approx(slow.predict_one(x), rel=1e-3, abs=1e-3)
    else:
        pf, ps = fast.predict_proba_one(x), slow.predict_proba_one(x)
        assert all(abs(pf[k] - ps[k]) < 1e-3 for k in ps)


def test_multi_head_numpy_equals_torch():
    def make():
        return streamnn.MultiHeadLearner(heads={"v": "regression", "b": "binary", "c": "classification"},
                                         loss="huber", seed=1, hidden=(8,), update_every=4, batch_size=8)
    fast, slow = make(), make()
    slow._make_kernel = lambda: None
    for i, (x, y) in enumerate(TRUMP):
        t = {"v": y, "b": y > 40, "c": "abc"[i % 3]}
        fast.learn_one(x, t)
        slow.learn_one(x, t)
    assert "multi-head" in fast.backend_ and slow.backend_.startswith("torch")
    _assert_same_module(fast, slow)


def _detector_pair(**kw):
    from streamnn.anomaly import AutoencoderDetector
    fast, slow = AutoencoderDetector(seed=1, **kw), AutoencoderDetector(seed=1, **kw)
    slow._step = lambda: (setattr(slow, "_ae_kernel", False), AutoencoderDetector._step(slow))[1]
    for x, _ in TRUMP:
        fast.learn_one(x)
        slow.learn_one(x)
    return fast, slow


def test_autoencoder_numpy_equals_torch():
    fast, slow = _detector_pair(window=1, activation="leaky_relu", update_every=4, alarms=None)
    assert fast.backend_.startswith("numpy: AutoEncoder") and slow.backend_.startswith("torch")
    _assert_same_module(fast, slow)


@pytest.mark.parametrize("kw", [dict(variational=True), dict(encoder="conv", window=4),
                                dict(encoder="lstm", window=4)])
def test_autoencoders_without_a_numpy_step_train_with_torch(kw):
    from streamnn.anomaly import AutoencoderDetector
    model = AutoencoderDetector(seed=1, update_every=8, **kw)
    for x, _ in TRUMP[:60]:
        model.learn_one(x)
    assert model.n_updates_ > 0 and model.backend_.startswith("torch"), model.backend_


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_recurrent_numpy_forward_equals_torch(cell):
    """Recurrent cells have a numpy path for prediction only (training runs on torch)."""
    torch.manual_seed(0)
    net = SeqNet(3, 2, cell=cell, hidden_size=5, num_layers=2).eval()
    Z = np.random.default_rng(0).normal(size=(4, 6, 3)).astype(np.float32)
    S = np.random.default_rng(1).normal(size=(4, net.state_size)).astype(np.float32)
    out, s = np_run(numpy_plan(net), Z, S)
    with torch.no_grad():
        ref, ref_s = net(torch.from_numpy(Z), torch.from_numpy(S))
    np.testing.assert_allclose(out, ref[:, -1].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s, ref_s.numpy(), rtol=1e-5, atol=1e-5)


def test_sequence_learner_reports_the_torch_backend():
    model = streamnn.LSTMRegressor(seed=0, update_every=4)
    for x, y in TRUMP[:30]:
        model.learn_one(x, y)
    assert model.backend_.startswith("torch: recurrent"), model.backend_


@pytest.mark.parametrize("members", [1, 3])
def test_growth_invalidates_and_rebuilds_the_numpy_backend(members):
    """A new feature and a new class replace parameter objects; `_invalidate` drops the backend
    and the next step builds it again over the grown network (still equal to torch); for one
    network and for `MLPClassifier`'s default of three members (every member's output grows)."""
    rng = np.random.default_rng(0)
    stream = []
    for i in range(300):
        x = {"a": float(rng.normal()), "b": float(rng.normal())}
        if i >= 100:
            x["c"] = float(rng.normal())
        stream.append((x, "abc"[i % 3] if i >= 150 else "ab"[i % 2]))
    fast, slow = (streamnn.MLPClassifier(seed=0, hidden=(6,), members=members) for _ in range(2))
    slow._make_kernel = lambda: None
    kernels = []   # the objects themselves: an id() of a dropped kernel can be reused by the next
    for x, y in stream:
        fast.learn_one(x, y)
        slow.learn_one(x, y)
        if fast._kernel is not None and not any(k is fast._kernel for k in kernels):
            kernels.append(fast._kernel)
    k = members
    assert len(kernels) >= 3 and fast.backend_.startswith(f"numpy: MLP of Linear(3->{6 * k})+ReLU, Linear({6 * k}->{3 * k})")
    _assert_same_module(fast, slow)

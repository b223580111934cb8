"""CPU/GPU parity: the same learner, seed and stream on "cpu" and on "cuda" give the same results.

On the CPU the plain MLPs and the dense autoencoder train with the numpy kernels (streamnn.fastpath,
streamnn.autoencoders) and predict with numpy copies of the network (also the recurrent cell);
on CUDA everything runs in torch (cuBLAS, cuDNN). Both are float32, so the two runs agree to
rounding only, and the differences grow as training feeds them back; the tolerances below are
for a few hundred events. Each test prints the largest difference it saw (`pytest -s`).

Skipped where no CUDA device is present (CI); run on a GPU machine with

    python -m pytest -q -s tests/test_gpu_parity.py -p no:cacheprovider -o addopts=""
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import streamnn
from streamnn.sequence import LSTMClassifier, LSTMRegressor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="CPU/GPU parity needs a CUDA device (torch.cuda.is_available() is False)")

DEVICES = ("cpu", "cuda")
FEATURES = ("a", "b", "c", "d")


@pytest.fixture
def fp32():
    """Full float32 on the GPU (no TF32 in cuBLAS or cuDNN) for the duration of a test."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def rows(n, seed=0, n_keys=None):
    """A reproducible stream: dict rows, a nonlinear regression target, and a class label."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURES)))
    w = rng.normal(size=len(FEATURES))
    y = X @ w + 0.5 * np.sin(3.0 * X[:, 0]) + 0.1 * rng.normal(size=n)
    xs = [dict(zip(FEATURES, map(float, r))) for r in X]
    if n_keys is not None:   # interleaved keys, each with its own autocorrelated stream
        for i, x in enumerate(xs):
            x["key"] = f"k{i % n_keys}"
    return xs, y, y > np.median(y)


def worst(a, b, scale):
    """The largest |a - b| in units of `scale` (a typical magnitude of the compared values)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert a.shape == b.shape and np.isfinite(a).all() and np.isfinite(b).all()
    return float(np.max(np.abs(a - b)) / scale)


def report(name, **diffs):
    print(f"\n[gpu parity] {name}: " + ", ".join(f"{k}={v:.2e}" for k, v in diffs.items()))


# --- MLPs ---------------------------------------------------------------------------------------

def prequential(model, xs, targets):
    out = []
    for x, t in zip(xs, targets):
        out.append(model.predict_one(x))
        model.learn_one(x, t)
    return out


def test_mlp_regressor_parity(fp32):
    xs, y, _ = rows(400)
    preds = {}
    for dev in DEVICES:
        model = streamnn.MLPRegressor(device=dev, seed=0)
        preds[dev] = prequential(model, xs, y)
        # then a batch, through predict_many / learn_many
        X = pd.DataFrame(xs[:256])
        preds[dev] += list(model.predict_many(X))
        model.learn_many(X, pd.Series(y[:256]))
        preds[dev] += list(model.predict_many(X))
    d = worst(preds["cpu"], preds["cuda"], np.std(y))
    report("MLPRegressor", max_diff_over_std_y=d)
    assert d < 1e-4


def test_mlp_classifier_parity(fp32):
    xs, _, labels = rows(400, seed=1)
    probas, decisions = {}, {}
    for dev in DEVICES:
        model = streamnn.MLPClassifier(device=dev, seed=0)
        p, c = [], []
        for x, t in zip(xs, labels):
            proba = model.predict_proba_one(x)
            p.append(proba.get(True, 0.0))
            c.append(model.predict_one(x))
            model.learn_one(x, bool(t))
        P = model.predict_proba_many(pd.DataFrame(xs))
        p += list(P[True])
        c += list(model.predict_many(pd.DataFrame(xs)))
        probas[dev], decisions[dev] = np.array(p), np.array(c, dtype=object)
    d = worst(probas["cpu"], probas["cuda"], 1.0)
    sure = np.abs(probas["cpu"] - 0.5) > 1e-3      # decisions may differ only on a near-tie
    report("MLPClassifier", max_proba_diff=d, n_decisions_differ=float((decisions["cpu"] != decisions["cuda"]).sum()))
    assert d < 1e-4
    assert (decisions["cpu"][sure] == decisions["cuda"][sure]).all()


# --- stateful LSTMs over several keys ------------------------------------------------------------

def sequence_run(model, xs, targets, n_one):
    """predict_one/learn_one for the first `n_one` events, then predict_many/learn_many in frames
    of 12 (the keys' state steps batched in waves)."""
    out = prequential(model, xs[:n_one], targets[:n_one])
    for i in range(n_one, len(xs), 12):
        X, t = pd.DataFrame(xs[i:i + 12]), pd.Series(list(targets[i:i + 12]))
        if isinstance(model, LSTMClassifier):
            out += list(model.predict_proba_many(X)[True])
        else:
            out += list(model.predict_many(X))
        model.learn_many(X, t)
    return out


def lstm_targets(xs, n_keys):
    """Per key: the target is the key's input two events back (needs the recurrent state)."""
    t = np.zeros(len(xs))
    for i in range(len(xs)):
        j = i - 2 * n_keys
        t[i] = xs[j]["a"] + 0.5 * xs[j]["b"] if j >= 0 else 0.0
    return t


@pytest.mark.parametrize("tf32", [False, True], ids=["fp32", "torch-defaults"])
def test_stateful_lstm_regressor_parity(tf32):
    """Stateful LSTM over 4 interleaved keys. "torch-defaults" keeps torch's own setting for cuDNN
    (TF32 allowed on Ampere and later), which is what a user gets: a looser tolerance."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    if not tf32:
        torch.backends.cudnn.allow_tf32 = False
    try:
        n_keys = 4
        xs, _, _ = rows(320, seed=2, n_keys=n_keys)
        t = lstm_targets(xs, n_keys)
        preds = {}
        for dev in DEVICES:
            model = LSTMRegressor(device=dev, seed=0, key="key", hidden_size=16, update_every=8, bptt=16)
            preds[dev] = sequence_run(model, xs, t, 200)
            assert model.n_keys_ == n_keys
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    d = worst(preds["cpu"], preds["cuda"], np.std(t))
    report(f"LSTMRegressor stateful 4 keys ({'tf32 allowed' if tf32 else 'fp32'})", max_diff_over_std_y=d)
    assert d < (1e-2 if tf32 else 1e-4)


def test_stateful_lstm_classifier_parity(fp32):
    n_keys = 3
    xs, _, _ = rows(300, seed=3, n_keys=n_keys)
    labels = lstm_targets(xs, n_keys) > 0
    probas = {}
    for dev in DEVICES:
        model = LSTMClassifier(device=dev, seed=0, key="key", hidden_size=16, update_every=8, bptt=16)
        p = []
        for x, c in zip(xs[:180], labels[:180]):
            p.append(model.predict_proba_one(x).get(True, 0.0))
            model.learn_one(x, bool(c))
        p += sequence_run(model, xs[180:], [bool(c) for c in labels[180:]], 0)
        probas[dev] = np.array(p)
    d = worst(probas["cpu"], probas["cuda"], 1.0)
    sure = np.abs(probas["cpu"] - 0.5) > 1e-3
    report("LSTMClassifier stateful 3 keys", max_proba_diff=d)
    assert d < 1e-4
    assert ((probas["cpu"] > 0.5) == (probas["cuda"] > 0.5))[sure].all()


# --- autoencoder ---------------------------------------------------------------------------------

def test_autoencoder_parity(fp32):
    xs, _, _ = rows(400, seed=4)
    raw, scores = {}, {}
    for dev in DEVICES:
        model = streamnn.AutoencoderDetector(device=dev, seed=0)
        r, s = [], []
        for x in xs:
            r.append(model.raw_score_one(x))
            s.append(model.score_one(x))
            model.learn_one(x)
        s += list(model.score_many(pd.DataFrame(xs[:64])))   # calibrated, as a batch
        raw[dev], scores[dev] = np.array(r), np.array(s)
    rel = np.abs(raw["cpu"] - raw["cuda"]) / np.maximum(np.abs(raw["cpu"]), 1e-3)
    report("AutoencoderDetector", max_rel_raw_diff=float(rel.max()),
           max_score_diff=worst(scores["cpu"], scores["cuda"], 1.0))
    assert rel.max() < 1e-4
    assert worst(scores["cpu"], scores["cuda"], 1.0) < 1e-3


# --- checkpoints move between devices ------------------------------------------------------------

def test_state_moves_from_cuda_to_cpu(fp32):
    """A learner trained on the GPU, restored on a CPU (a checkpoint read on another machine),
    goes on as the GPU one does."""
    xs, y, _ = rows(300, seed=5)
    gpu = streamnn.MLPRegressor(device="cuda", seed=0)
    prequential(gpu, xs[:200], y[:200])
    cpu = streamnn.MLPRegressor(device="cpu", seed=0).load_state_dict(gpu.state_dict())
    a, b = prequential(gpu, xs[200:], y[200:]), prequential(cpu, xs[200:], y[200:])
    d = worst(a, b, np.std(y))
    report("MLPRegressor cuda -> cpu state", max_diff_over_std_y=d)
    assert d < 1e-4


# --- device="auto" -------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: streamnn.MLPClassifier(device="auto", seed=0),
    lambda: streamnn.MLPRegressor(device="auto", seed=0),
    lambda: LSTMRegressor(device="auto", seed=0, key="key"),
    lambda: streamnn.AutoencoderDetector(device="auto", seed=0),
], ids=["MLPClassifier", "MLPRegressor", "LSTMRegressor", "AutoencoderDetector"])
def test_auto_device_picks_cuda(make):
    model = make()
    xs, y, labels = rows(40, n_keys=2)
    for x, t, c in zip(xs, y, labels):
        if isinstance(model, streamnn.AutoencoderDetector):
            model.learn_one({k: v for k, v in x.items() if k != "key"})
        elif isinstance(model, streamnn.MLPClassifier):
            model.learn_one({k: v for k, v in x.items() if k != "key"}, bool(c))
        elif isinstance(model, LSTMRegressor):
            model.learn_one(x, t)
        else:
            model.learn_one({k: v for k, v in x.items() if k != "key"}, t)
    assert next(model.module_.parameters()).device.type == "cuda"
    x = {k: v for k, v in xs[0].items() if k != "key" or isinstance(model, LSTMRegressor)}
    out = model.score_one(x) if isinstance(model, streamnn.AutoencoderDetector) else model.predict_one(x)
    assert out is not None and (not isinstance(out, float) or np.isfinite(out))

"""GPU proof script (issue 8): events/s on CPU and on CUDA in the same run, plus peak GPU memory.

    python benchmarks/gpu.py                 # writes benchmarks/results/gpu.json and gpu.md
    python benchmarks/gpu.py --seconds 10    # time budget per measurement (default 8)

Measures, each on "cpu" and (when available) "cuda":
- MLP per event (predict_one then learn_one) and batch mode (predict_many then learn_many, 256/batch
  and 4,096/batch);
- a windowed LSTM and a stateful LSTM over 1,024 interleaved keys (if streamnn.sequence exists);
- the autoencoder detector (if streamnn.anomaly exists).
Every measurement runs for a fixed time budget and reports events/s, so the whole script stays
under about 5 minutes. It is meant to run once on a lent H100 (see benchmarks/results/gpu.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import streamnn

RESULTS = Path(__file__).resolve().parent / "results"


def synthetic(n, n_features=16, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features)).astype(np.float64)
    w = rng.normal(size=n_features)
    y = (X @ w + 0.3 * rng.normal(size=n)) > 0
    cols = [f"f{i}" for i in range(n_features)]
    return pd.DataFrame(X, columns=cols), pd.Series(y)


def timed(fn, budget):
    """Run fn(i) until `budget` seconds pass; return events/s (fn returns events done)."""
    fn(0)  # warm-up (lazy build, kernels, allocator)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    done, i, start = 0, 1, time.perf_counter()
    while time.perf_counter() - start < budget:
        done += fn(i)
        i += 1
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def bench_mlp(device, budget):
    X, y = synthetic(200_000)
    rows = X.to_dict("records")
    out = {}
    model = streamnn.MLPClassifier(device=device, seed=0, hidden=(64, 64), warmup=0)

    def per_event(i):
        base = (i * 500) % (len(rows) - 500)
        for j in range(base, base + 500):
            model.predict_one(rows[j])
            model.learn_one(rows[j], bool(y.iat[j]))
        return 500

    out["mlp_per_event"] = timed(per_event, budget)
    for size in (256, 4096):
        m = streamnn.MLPClassifier(device=device, seed=0, hidden=(64, 64), update_every=size, batch_size=size, warmup=0,
                                   replay=0.0)
        frames = [(X.iloc[k:k + size], y.iloc[k:k + size]) for k in range(0, len(X) - size, size)]

        def batch(i, m=m, frames=frames):
            Xb, yb = frames[i % len(frames)]
            m.predict_many(Xb)
            m.learn_many(Xb, yb)
            return len(Xb)

        out[f"mlp_batch_{size}"] = timed(batch, budget)
    return out


def bench_sequence(device, budget):
    try:
        from streamnn.sequence import LSTMRegressor
    except ImportError:
        return {}
    rng = np.random.default_rng(0)
    out = {}
    n_keys = 1024
    vals = rng.normal(size=(4096, 4))
    for name, kw in {"lstm_windowed": dict(stateful=False, window=16),
                     "lstm_stateful_1024_keys": dict(stateful=True, key="sensor")}.items():
        model = LSTMRegressor(device=device, seed=0, hidden_size=32, **kw)
        frames = []
        for k in range(64):
            keys = np.arange(n_keys)
            f = pd.DataFrame(vals[(k * 64 + keys) % 4096], columns=["a", "b", "c", "d"])
            f["sensor"] = keys.astype(float)
            frames.append((f, pd.Series(rng.normal(size=n_keys))))

        def step(i, model=model, frames=frames):
            Xb, yb = frames[i % len(frames)]
            model.predict_many(Xb)
            model.learn_many(Xb, yb)
            return len(Xb)

        try:
            out[name] = timed(step, budget)
        except Exception as exc:  # report, do not hide
            out[name] = f"error: {type(exc).__name__}: {exc}"
    return out


def bench_autoencoder(device, budget):
    try:
        from streamnn.anomaly import AutoencoderDetector
    except ImportError:
        return {}
    X, _ = synthetic(100_000)
    model = AutoencoderDetector(device=device, seed=0)
    frames = [X.iloc[k:k + 1024] for k in range(0, len(X) - 1024, 1024)]

    def step(i):
        Xb = frames[i % len(frames)]
        model.score_many(Xb)
        model.learn_many(Xb)
        return len(Xb)

    try:
        return {"autoencoder_batch_1024": timed(step, budget)}
    except Exception as exc:
        return {"autoencoder_batch_1024": f"error: {type(exc).__name__}: {exc}"}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args(argv)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = {"machine": platform.node(), "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "runs": {}}
    for dev in devices:
        streamnn.set_threads(1)
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        r = {}
        for bench in (bench_mlp, bench_sequence, bench_autoencoder):
            r.update(bench(dev, args.seconds))
        if dev == "cuda":
            r["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
        results["runs"][dev] = r
        print(dev, json.dumps(r, indent=1), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gpu.json").write_text(json.dumps(results, indent=1))
    names = sorted({k for r in results["runs"].values() for k in r})
    lines = [f"# GPU run: {results['gpu'] or 'no CUDA device'} (torch {results['torch']})", "",
             "| measurement | cpu events/s | cuda events/s | cuda / cpu |", "|---|---|---|---|"]
    for n in names:
        c, g = results["runs"].get("cpu", {}).get(n), results["runs"].get("cuda", {}).get(n)
        ratio = f"{g / c:.1f}" if isinstance(c, float) and isinstance(g, float) and c else ""
        f = lambda v: f"{v:,.0f}" if isinstance(v, float) else (v or "")
        lines.append(f"| {n} | {f(c)} | {f(g)} | {ratio} |")
    (RESULTS / "gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

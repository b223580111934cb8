"""GPU proof script (issue 8): events/s on CPU and on CUDA in the same run, plus peak GPU memory.

    python benchmarks/gpu.py                 # writes benchmarks/results/gpu.json and gpu.md
    python benchmarks/gpu.py --seconds 10    # time budget per measurement (default 8)
    python benchmarks/gpu.py --out DIR       # write gpu.json and gpu.md to DIR instead
    python benchmarks/gpu.py --devices cpu   # only these devices (default: cpu, and cuda if present)

Measures, each on "cpu" and (when available) "cuda":
- MLP per event (predict_one then learn_one) and batch mode (predict_many then learn_many, 256/batch
  and 4,096/batch);
- a windowed LSTM and a stateful LSTM over 1,024 interleaved keys (if streamnn.sequence exists),
  the stateful one twice: with the default update_every=32 (one optimizer step per 32 events) and
  with update_every=1024 (one step per round over all 1,024 keys, the batch a GPU wants);
- the autoencoder detector (if streamnn.anomaly exists).
Every measurement runs for a fixed time budget and reports events/s, so the whole script stays
under about 5 minutes. (A stateful step re-runs the trained keys' BPTT segments, which grow over
the first 64 frames, so a faster learner reaches longer segments within the budget and pays more
per event: compare two versions with benchmarks/sequence_frames.py, a fixed workload.) It is meant to run once on a lent H100 (see benchmarks/results/gpu.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
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


def timed(fn, budget, warmup=2):
    """Run fn(i) until `budget` seconds pass; return events/s (fn returns events done).

    The first `warmup` calls are not timed (lazy build, cuDNN/cuBLAS handles, allocator)."""
    for i in range(warmup):
        fn(i)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    done, i, start = 0, warmup, time.perf_counter()
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
                     "lstm_stateful_1024_keys": dict(stateful=True, key="sensor"),
                     "lstm_stateful_1024_keys_update_every_1024": dict(stateful=True, key="sensor",
                                                                       update_every=1024)}.items():
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


BARS = [  # (measurement, events/s on an H100, also at least this many times the CPU figure)
    ("lstm_stateful_1024_keys", 1_000_000, 10.0),
    ("lstm_stateful_1024_keys_update_every_1024", 1_000_000, 10.0),
    ("mlp_batch_4096", 5_000_000, None),
]


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown(results):
    fmt = lambda v: f"{v:,.0f}" if isinstance(v, float) else (v or "")  # noqa: E731
    runs = results["runs"]
    cpu, cuda = runs.get("cpu", {}), runs.get("cuda", {})
    names = [n for n in dict.fromkeys(k for r in runs.values() for k in r) if n != "peak_gpu_memory_mib"]
    lines = [f"# GPU run (issue 8): {results['gpu'] or 'no CUDA device'}", "",
             f"Command: `{results['command']}`, {results['seconds']:g} s timed per measurement after "
             f"{results['warmup_calls']} untimed calls. Device: {results['gpu'] or 'none'}; host CPU: "
             f"{results['cpu']} ({results['cpu_count']} logical cores), one torch and one BLAS thread; "
             f"torch {results['torch']} (CUDA {results['cuda'] or 'none'}), Python {results['python']}. "
             f"CPU and CUDA figures come from this same run on this same machine.", "",
             "| measurement | cpu events/s | cuda events/s | cuda / cpu |", "|---|---|---|---|"]
    for n in names:
        c, g = cpu.get(n), cuda.get(n)
        ratio = f"{g / c:.1f}" if isinstance(c, float) and isinstance(g, float) and c else ""
        lines.append(f"| {n} | {fmt(c)} | {fmt(g)} | {ratio} |")
    if "peak_gpu_memory_mib" in cuda:
        lines += ["", f"Peak GPU memory allocated by torch over all CUDA measurements: "
                      f"{cuda['peak_gpu_memory_mib']:,.1f} MiB."]
    if cuda:
        lines += ["", "Bars of issue 8 (stated for an H100; this run's device is named above):", ""]
        for n, rate, times in BARS:
            g, c = cuda.get(n), cpu.get(n)
            if not isinstance(g, float):
                continue
            ok = g >= rate and (times is None or (isinstance(c, float) and g >= times * c))
            want = f">= {rate:,} events/s" + (f" and >= {times:g}x CPU" if times else "")
            got = f"{g:,.0f} events/s" + (f", {g / c:.1f}x CPU" if times and isinstance(c, float) and c else "")
            lines.append(f"- {n}: {want}; measured {got}: {'met' if ok else 'missed'}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per measurement")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for gpu.json and gpu.md")
    ap.add_argument("--devices", default=None, help="comma-separated, e.g. cpu,cuda (default: cpu and cuda if present)")
    args = ap.parse_args(argv)
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = {"machine": platform.node(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
               "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
               "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               "command": " ".join(["python", "benchmarks/gpu.py"] + [shlex.quote(a) for a in
                                                                      (sys.argv[1:] if argv is None else argv)]),
               "seconds": args.seconds, "warmup_calls": 2, "runs": {}}
    t0 = time.perf_counter()
    for dev in devices:
        streamnn.set_threads(1)
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        r = {}
        for bench in (bench_mlp, bench_sequence, bench_autoencoder):
            r.update(bench(dev, args.seconds))
            print(dev, bench.__name__, f"{time.perf_counter() - t0:.0f} s", flush=True)
        if dev == "cuda":
            r["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
        results["runs"][dev] = r
        print(dev, json.dumps(r, indent=1), flush=True)
    results["took_s"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(results, indent=1) + "\n")
    md = markdown(results)
    (args.out / "gpu.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()

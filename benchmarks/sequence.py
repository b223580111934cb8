"""Sequence learners against river's SNARIMAX, a last-value baseline and deep-river, in one process.

1. Forecasting: river's AirlinePassengers (144 months) and WaterFlow (1,268 hours), horizon 12,
   river's `evaluate.evaluate` (MAE averaged over the 12 steps). Only the series itself is used
   (x = None) by every model. SNARIMAX: the best of a small grid of orders and learning rates, so
   its figure is optimistic; deep-river: LSTMForecaster, the better of two learning rates.
2. Memory: a synthetic sensor whose label is the sign of a cue seen 50-200 events back (noise
   channels in between): stateful LSTMClassifier vs the windowed one (window 16 and 64).
3. Throughput on the same sensor stream, predict_one then learn_one: the stateful classifier vs
   deep-river's RollingClassifier (its LSTMClassifier, window 10); then 1,000 interleaved keys
   (each its own sensor) vs one key, per event and with predict_many/learn_many.

Usage (from the repository root)::

    python benchmarks/sequence.py            # full
    python benchmarks/sequence.py --quick    # shorter streams

Results go to benchmarks/results/sequence.md.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _peers import import_deep_river  # noqa: E402
from forecast import LastValue, SeriesOnly  # noqa: E402  (the one copy of the naive peers)
from river import datasets, evaluate, linear_model, metrics, optim, preprocessing, time_series  # noqa: E402

import streamnn  # noqa: E402
from streamnn.forecasting import LSTMForecaster  # noqa: E402
from streamnn.sequence import LSTMClassifier  # noqa: E402

warnings.filterwarnings("ignore")




def forecast_mae(dataset, model, horizon=12) -> float:
    m = evaluate.evaluate(SeriesOnly(dataset), model, metrics.MAE(), horizon=horizon)
    return sum(m.get()) / horizon


def snarimax_grid(dataset, season):
    y0 = next(iter(dataset))[1]
    best = None
    for p, d, q, sp, sd, sq in [(12, 1, 12, 0, 1, 0), (1, 1, 1, 1, 1, 1), (season, 1, 0, 0, 0, 0),
                                (2, 1, 2, 0, 0, 0), (1, 0, 0, 1, 0, 0)]:
        for lr in (0.01, 0.001):
            reg = preprocessing.StandardScaler() | linear_model.LinearRegression(
                intercept_init=y0, optimizer=optim.SGD(lr), intercept_lr=0.3)
            model = time_series.SNARIMAX(p=p, d=d, q=q, m=season, sp=sp, sd=sd, sq=sq, regressor=reg)
            mae = forecast_mae(dataset, model)
            if best is None or mae < best[0]:
                best = (mae, f"SNARIMAX(p={p}, d={d}, q={q}, m={season}, sp={sp}, sd={sd}, sq={sq}), SGD({lr})")
    return best


def forecasting(dr, seeds):
    rows = []
    for name, season in [("AirlinePassengers", 12), ("WaterFlow", 24)]:
        ds = getattr(datasets, name)()
        res = {"last value": (forecast_mae(ds, LastValue()), "")}
        res["river SNARIMAX (best of grid)"] = snarimax_grid(ds, season)
        if dr is not None:
            from deep_river.forecasting import LSTMForecaster as DRForecaster
            res["deep-river LSTMForecaster (window 12)"] = min(
                (forecast_mae(ds, DRForecaster(window_size=12, lr=lr, seed=0)), f"Adam({lr})") for lr in (1e-2, 1e-3))
        for label, kw in [("streamnn LSTMForecaster (defaults: lags=(1,), hidden 32, Adam 0.01)", {}),
                          ("streamnn LSTMForecaster lags=(1, season)", {"lags": (1, season)}),
                          ("streamnn LSTMForecaster hidden 8, Adam 0.001", {"hidden_size": 8, "lr": 0.001}),
                          ("streamnn LSTMForecaster windowed (16), lags=(1, season)",
                           {"lags": (1, season), "stateful": False})]:
            maes = [forecast_mae(ds, LSTMForecaster(seed=s, **kw)) for s in seeds]
            res[label] = (statistics.mean(maes), f"seeds {list(seeds)}: " + ", ".join(f"{v:.2f}" for v in maes))
        rows.append((name, res))
        print(name, {k: round(v[0], 2) for k, v in res.items()}, flush=True)
    return rows


# -- synthetic sensor -----------------------------------------------------------------------------

def sensor(n, seed=0, gap=(50, 200), n_noise=3):
    """Label = sign of the last cue; cues come every 50-200 events; noise channels in between."""
    rng = random.Random(seed)
    mode, nxt, out = rng.random() < 0.5, rng.randint(*gap), []
    for t in range(n):
        cue = 0.0
        if t == nxt:
            mode = rng.random() < 0.5
            cue, nxt = (1.0 if mode else -1.0), t + rng.randint(*gap)
        out.append(({"cue": cue, **{f"n{i}": rng.gauss(0, 1) for i in range(n_noise)}}, mode))
    return out


def prequential(model, data):
    hits = []
    t0 = time.perf_counter()
    for x, y in data:
        hits.append(model.predict_one(x) == y)
        model.learn_one(x, y)
    return np.array(hits), len(data) / (time.perf_counter() - t0)


def memory(n, seeds):
    rows = []
    for label, kw in [("stateful LSTM (bptt 64)", {}), ("windowed LSTM, window 16", {"stateful": False}),
                      ("windowed LSTM, window 64", {"stateful": False, "window": 64})]:
        accs, tails, rates = [], [], []
        for s in seeds:
            hits, rate = prequential(LSTMClassifier(seed=s, **kw), sensor(n, seed=s))
            accs.append(hits.mean())
            tails.append(hits[-n // 4:].mean())
            rates.append(rate)
        rows.append((label, statistics.mean(accs), statistics.mean(tails), statistics.median(rates)))
        print("memory", rows[-1], flush=True)
    return rows


def keyed_streams(n, n_keys, seed=0):
    """`n` events of `n_keys` independent sensors, interleaved at random."""
    rng = random.Random(seed)
    per = [iter(sensor(n // n_keys + 50, seed=seed * 10_000 + k)) for k in range(n_keys)]
    out = []
    for _ in range(n):
        k = rng.randrange(n_keys)
        x, y = next(per[k])
        out.append(({"sensor_id": k, **x}, y))
    return out


def best_of(reps, fn):
    return max(fn() for _ in range(reps))


def throughput(dr, n, reps):
    """Events/s, the best of `reps` runs each (the machine is shared: the best run is the least
    disturbed one)."""
    data = sensor(n, seed=7)
    rows = {}
    if dr is not None:
        from deep_river.classification.zoo import LSTMClassifier as DRLSTM
        k = max(1500, n // 5)
        rows["deep-river RollingClassifier (LSTMClassifier, hidden 16, window 10)"] = best_of(
            reps, lambda: prequential(DRLSTM(n_features=4, hidden_size=16, window_size=10, seed=0), data[:k])[1])
    rows["streamnn LSTMClassifier stateful (hidden 32), one key"] = best_of(
        reps, lambda: prequential(LSTMClassifier(seed=0), data)[1])
    rows["streamnn LSTMClassifier windowed 16 (hidden 32), one key"] = best_of(
        reps, lambda: prequential(LSTMClassifier(seed=0, stateful=False), data[: n // 2])[1])
    keyed = keyed_streams(n, 1000)
    rows["streamnn LSTMClassifier stateful, 1,000 interleaved keys"] = best_of(
        reps, lambda: prequential(LSTMClassifier(seed=0, key="sensor_id"), keyed)[1])
    for label, stream in [("one key", [({"sensor_id": 0, **x}, y) for x, y in data]),
                          ("1,000 interleaved keys", keyed)]:
        frames = [(pd.DataFrame([x for x, _ in stream[i:i + 1000]]), pd.Series([y for _, y in stream[i:i + 1000]]))
                  for i in range(0, len(stream), 1000)]
        rows[f"streamnn stateful, predict_many + learn_many (1,000 rows), {label}"] = best_of(
            reps, lambda: batched(frames))
    for k, v in rows.items():
        print(f"{v:10.0f} ev/s  {k}", flush=True)
    return rows


def batched(frames):
    model = LSTMClassifier(seed=0, key="sensor_id")
    t0 = time.perf_counter()
    for X, y in frames:
        model.predict_many(X)
        model.learn_many(X, y)
    return sum(len(X) for X, _ in frames) / (time.perf_counter() - t0)


def write(path, args, fc, mem, thr, elapsed):
    L = ["# Sequence learners (issue 5)", "",
         f"Command: `python benchmarks/sequence.py{' --quick' if args.quick else ''}`. Machine: {platform.machine()}, "
         f"2 cores shared with other jobs, one torch thread, torch {torch.__version__}. All competitors run in this same "
         f"process; ratios are taken within this run (absolute rates move with the machine's load). Took {elapsed:.0f} s.",
         "", "## Forecasting, horizon 12 (MAE averaged over the 12 steps; the series only, x = None)", "",
         "| model | " + " | ".join(name for name, _ in fc) + " |", "|---|" + "---|" * len(fc)]
    for label in fc[0][1]:
        L.append(f"| {label} | " + " | ".join(f"{res[label][0]:.2f}" for _, res in fc) + " |")
    L += ["", "SNARIMAX is the best of 10 settings chosen on the evaluated series itself (optimistic); "
          "season = 12 (AirlinePassengers), 24 (WaterFlow). Settings and per-seed values:", ""]
    L += [f"- {name}, {k}: {v[1]}" for name, res in fc for k, v in res.items() if v[1]]
    L += [""]
    L += [f"## Memory: label = sign of a cue 50-200 events back ({args.memory_n:,} events, seeds {args.seeds})", "",
          "| learner | accuracy | accuracy, last quarter | events/s |", "|---|---|---|---|"]
    L += [f"| {a} | {b:.3f} | {c:.3f} | {d:,.0f} |" for a, b, c, d in mem]
    gain = mem[0][2] - max(r[2] for r in mem[1:])
    L += ["", f"Stateful minus the best windowed learner, last quarter: **{gain:+.3f}** accuracy.", ""]
    L += [f"## Throughput: the sensor stream ({args.throughput_n:,} events), predict then learn", "",
          f"Best of {args.reps} runs each; deep-river on the first {max(1500, args.throughput_n // 5):,} events.", "",
          "| learner | events/s | × deep-river |", "|---|---|---|"]
    base = next((v for k, v in thr.items() if k.startswith("deep-river")), None)
    for k, v in thr.items():
        L.append(f"| {k} | {v:,.0f} | {v / base:.1f} |" if base else f"| {k} | {v:,.0f} | |")
    one = thr["streamnn LSTMClassifier stateful (hidden 32), one key"]
    many = thr["streamnn LSTMClassifier stateful, 1,000 interleaved keys"]
    L += ["", f"1,000 interleaved keys vs one key, per event: {many / one:.2f}× the single-key rate (bar: ≥ 0.5×)."]
    if base:
        L.append(f"Stateful LSTM vs deep-river RollingClassifier: {one / base:.1f}× (bar: ≥ 10×).")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(L) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    streamnn.set_threads(1)
    args.seeds = [0] if args.quick else [0, 1]
    args.memory_n = 20_000
    args.throughput_n = 6_000 if args.quick else 20_000
    args.reps = 1 if args.quick else 2
    dr = import_deep_river()
    t0 = time.perf_counter()
    fc = forecasting(dr, args.seeds)
    mem = memory(args.memory_n, args.seeds)
    thr = throughput(dr, args.throughput_n, args.reps)
    write(ROOT / "benchmarks" / "results" / "sequence.md", args, fc, mem, thr, time.perf_counter() - t0)


if __name__ == "__main__":
    main()

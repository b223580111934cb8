"""River's ForecastingTrack protocol: streamnn's forecasters against naive, seasonal naive,
HoltWinters and SNARIMAX, all in this one process.

Protocol (river.evaluate.ForecastingTrack): `river.evaluate.iter_evaluate` on the raw dataset
(x carries the timestamp), horizon 12 on AirlinePassengers and 24 on WaterFlow, metric MAE
at each step of the horizon averaged over the horizon (`agg_func=statistics.mean`). SNARIMAX
cannot take the timestamp field, so it gets x = None (the series alone), which is also all the
streamnn forecasters use.

Peers: last value; seasonal naive (period 12 / 24); river's HoltWinters(alpha=.3, beta=.1,
gamma=.6, multiplicative, seasonality 12 / 24); river's SNARIMAX(p=m, d=1, q=m, m=m, sd=1), the
example of river's own docstring. streamnn: `MLPForecaster()` with defaults, seeds 0-9 (the
seeds its defaults were chosen on) and 10-19 (not looked at while choosing), worst and mean;
`LSTMForecaster()` with defaults, seeds 0-2.

Usage (from the repository root)::

    python benchmarks/forecast.py            # full
    python benchmarks/forecast.py --quick    # seeds 0-2 only

Results go to benchmarks/results/forecast.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from river import datasets, evaluate, metrics, time_series  # noqa: E402

import streamnn  # noqa: E402
from streamnn.evaluation.naive import LastValue, SeasonalNaive  # noqa: E402,F401  (benchmarks/sequence.py, forecast_other.py import them from here)
from streamnn.forecasting import LSTMForecaster, MLPForecaster  # noqa: E402

warnings.filterwarnings("ignore")

TRACK = [("AirlinePassengers", 12, 12), ("WaterFlow", 24, 24)]     # name, horizon, season


class SeriesOnly:
    def __init__(self, dataset):
        self.dataset = dataset

    def __iter__(self):
        for _, y in self.dataset:
            yield None, y


def track_mae(data, model, horizon) -> float:
    """river's ForecastingTrack figure: MAE per step of the horizon, averaged over the horizon."""
    return evaluate.evaluate(data, model, metrics.MAE(), horizon=horizon, agg_func=statistics.mean).get()


def run(seeds_a, seeds_b, lstm_seeds):
    rows = []
    for name, horizon, m in TRACK:
        raw = list(getattr(datasets, name)())
        res = {"last value": (track_mae(raw, LastValue(), horizon), ""),
               f"seasonal naive (period {m})": (track_mae(raw, SeasonalNaive(m), horizon), "")}
        hw = time_series.HoltWinters(alpha=0.3, beta=0.1, gamma=0.6, seasonality=m, multiplicative=True)
        res[f"river HoltWinters(.3, .1, .6, seasonality {m}, multiplicative)"] = (track_mae(raw, hw, horizon), "")
        snx = time_series.SNARIMAX(p=m, d=1, q=m, m=m, sd=1)
        v = track_mae(SeriesOnly(raw), snx, horizon)
        res[f"river SNARIMAX(p={m}, d=1, q={m}, m={m}, sd=1)"] = (v, "diverges" if v > 1e6 else "")
        for label, seeds in [("streamnn MLPForecaster() seeds 0-9", seeds_a),
                             ("streamnn MLPForecaster() seeds 10-19", seeds_b)]:
            if not seeds:
                continue
            t0 = time.perf_counter()
            maes = [track_mae(raw, MLPForecaster(seed=s), horizon) for s in seeds]
            sec = (time.perf_counter() - t0) / len(seeds)
            res[label] = (max(maes), f"worst {max(maes):.2f}, mean {statistics.mean(maes):.2f}, {sec:.1f} s a run; "
                          + ", ".join(f"{v:.2f}" for v in maes))
        maes = [track_mae(raw, LSTMForecaster(seed=s), horizon) for s in lstm_seeds]
        res[f"streamnn LSTMForecaster() seeds {lstm_seeds[0]}-{lstm_seeds[-1]}"] = (
            max(maes), f"worst {max(maes):.2f}, mean {statistics.mean(maes):.2f}; " + ", ".join(f"{v:.2f}" for v in maes))
        rows.append((name, horizon, res))
        print(name, {k: round(v[0], 2) for k, v in res.items()}, flush=True)
    return rows


def fmt(v):
    return "diverges" if v > 1e6 else f"{v:.2f}"


def write(path, args, rows, elapsed):
    L = ["# Forecasting: river's ForecastingTrack protocol (issue 15)", "",
         f"Command: `python benchmarks/forecast.py{' --quick' if args.quick else ''}`. Machine: {platform.machine()}, "
         f"2 cores shared with other jobs, one torch thread, torch {torch.__version__}. All models run in this same "
         f"process. Took {elapsed:.0f} s.", "",
         "Protocol: `river.evaluate.iter_evaluate` on the raw dataset (as `river.evaluate.ForecastingTrack` runs it), "
         "MAE at each step of the horizon, averaged over the horizon. Horizon 12 on AirlinePassengers, 24 on "
         "WaterFlow. For the streamnn rows the figure is the WORST over the seeds; the mean is in the notes.", "",
         "| model | " + " | ".join(f"{n} (h={h})" for n, h, _ in rows) + " |", "|---|" + "---|" * len(rows)]
    labels = list(rows[0][2])
    for i, label in enumerate(labels):
        cells = [fmt(list(res.values())[i][0]) for _, _, res in rows]
        shown = label.replace("(period 12)", "(period 12 / 24)").replace("seasonality 12", "seasonality 12 / 24")
        shown = shown.replace("p=12, d=1, q=12, m=12", "p=m, d=1, q=m, m=12 / 24")
        L.append(f"| {shown} | " + " | ".join(cells) + " |")
    L += ["", "Notes (per-seed values):", ""]
    L += [f"- {name}, {k}: {v[1]}" for name, _, res in rows for k, v in res.items() if v[1]]
    L += ["", "river's `iter_evaluate` learns y[t-1] and then scores `forecast(h)` against y[t+1..t+h]: "
          "every model forecasts one step further ahead than it is asked to (the same for all rows). "
          "SNARIMAX gets x = None (it cannot read the timestamp); the other models get the raw x and "
          "ignore its timestamp.", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(L) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    streamnn.set_threads(1)
    seeds_a = list(range(3)) if args.quick else list(range(10))
    seeds_b = [] if args.quick else list(range(10, 20))
    lstm = [0] if args.quick else [0, 1, 2]
    t0 = time.perf_counter()
    rows = run(seeds_a, seeds_b, lstm)
    write(ROOT / "benchmarks" / "results" / "forecast.md", args, rows, time.perf_counter() - t0)


if __name__ == "__main__":
    main()

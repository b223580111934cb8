"""Forecasts on series no issue names, river's ForecastingTrack figure (MAE per step of the horizon,
averaged over it): `MLPForecaster()` (worst of seeds 0-2) against last value and seasonal naive.

    python benchmarks/forecast_other.py [--window W ...] [--nab]

`--window W`: also MLPForecaster(window=W) on nyc_taxi; `--nab`: also more NAB series (first
2,000 values, horizon 24, seed 0), with the window `MLPForecaster()` ended with.

Series: the cumulative daily return of AAPL in river's SP500Stocks (a random walk, h=5), the
first 3,000 values of NAB's machine temperature (5-minute, h=12) and of NAB's nyc_taxi
(half-hourly, a daily period of 48, h=24).
"""
import argparse
import datetime as dt
import glob
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from forecast import LastValue, SeasonalNaive, track_mae  # noqa: E402
from river import datasets  # noqa: E402

from streamnn import MLPForecaster  # noqa: E402

streamnn_seeds = [0, 1, 2]
NAB = os.environ.get('NAB_DIR', str(Path(__file__).resolve().parents[2] / 'shared' / 'datasets' / 'nab'))


def series_from(values, step_minutes=60):
    t0 = dt.datetime(2020, 1, 1)
    return [({"t": t0 + dt.timedelta(minutes=step_minutes * i)}, float(v)) for i, v in enumerate(values)]


ap = argparse.ArgumentParser()
ap.add_argument("--window", type=int, nargs="*", default=[])
ap.add_argument("--nab", action="store_true")
args = ap.parse_args()
sets = {}
aapl = np.cumsum([x['AAPL'] for x, y in datasets.SP500Stocks()])
sets['SP500 AAPL cumulative'] = (series_from(aapl, 1440), 5, 5)
nab = pd.read_csv(NAB + '/data/realKnownCause/machine_temperature_system_failure.csv')['value'].to_numpy()[:3000]
sets['NAB machine temperature (3,000)'] = (series_from(nab, 5), 12, 288)
nyc = pd.read_csv(NAB + '/data/realKnownCause/nyc_taxi.csv')['value'].to_numpy()[:3000]
sets['NAB nyc_taxi (3,000)'] = (series_from(nyc, 30), 24, 48)
for name, (data, h, m) in sets.items():
    res = {'last': track_mae(data, LastValue(), h), f'snaive {m}': track_mae(data, SeasonalNaive(m), h)}
    res['MLPForecaster worst of 3'] = max(track_mae(data, MLPForecaster(seed=s), h) for s in streamnn_seeds)
    print(name, 'h', h, {k: round(v, 4) for k, v in res.items()}, flush=True)
for w in args.window:
    data, h, m = sets['NAB nyc_taxi (3,000)']
    print('nyc_taxi MLPForecaster(window=%d) worst of 2' % w, round(max(track_mae(data, MLPForecaster(seed=s, window=w), h) for s in (0, 1)), 1), flush=True)
NAB_SERIES = ("art_daily_no_noise", "art_daily_jumpsup", "exchange-2_cpc", "ambient_temperature", "cpu_utilization_asg",
              "ec2_request_latency_system_failure", "rogue_agent_key_hold", "TravelTime_387", "occupancy_6005",
              "speed_6005", "Twitter_volume_AAPL", "nyc_taxi")
for f in sorted(glob.glob(NAB + "/data/*/*.csv")) if args.nab else []:
    if not any(k in f for k in NAB_SERIES):
        continue
    data = series_from(pd.read_csv(f)["value"].to_numpy(float)[:2000], 5)
    model = MLPForecaster(seed=0)
    mae = track_mae(data, model, 24)
    print(os.path.basename(f), "last %.4g" % track_mae(data, LastValue(), 24), "MLPForecaster() %.4g" % mae,
          "window", model.window_, flush=True)

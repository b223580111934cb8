"""One value streams that are not NAB, scored by NAB's rules: does a default chosen on NAB carry over?

Each series (5,000 points) is a seasonal signal (period 24, 96 or 288 points; sine or square
wave) with noise and a slow random walk, and two labelled anomalies in its second half, of one of
these kinds:

- spike: one point 2.5 amplitudes away; level: a shift of one amplitude for the rest of the series;
- variance: the noise x 4 for 100 points; frequency: the period halved for 300 points;
- stuck: the sensor repeats one value for 200 points; dropout: the value reads 0 for 50 points;
- pattern: one period's peak does not happen (the value stays at its trough level).

NAB's windows (10 % of the series split among its anomalies, centred on each start), probation
and the three profiles, one corpus-wide threshold per profile (`streamnn.evaluation.nab`). Every
detector is fed `{"value": v}` one event at a time (score_one, then learn_one), one fresh detector
per series, defaults unless named.

    python benchmarks/anomaly_synthetic.py [--seeds 0,1,2] [--per-kind 4]

Writes benchmarks/results/anomaly_synthetic.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamnn.evaluation.nab import score_corpus  # noqa: E402

KINDS = ("spike", "level", "variance", "frequency", "stuck", "dropout", "pattern")
DETECTORS = {
    "AutoencoderDetector()": lambda s: _ae(s),
    "AutoencoderDetector(context='season')": lambda s: _ae(s, {"context": "season"}),
    "AutoencoderDetector(context=False)": lambda s: _ae(s, {"context": False}),
    "AutoencoderDetector(context=True)": lambda s: _ae(s, {"context": True}),
    "AnomalyLikelihood(MinMaxScaler|HST)": lambda s: _hst(s, "level"),
    "AnomalyLikelihood(MinMaxScaler|HST) [context=False]": lambda s: _hst(s, False),
}


def _ae(seed, alarm_params=None):
    import streamnn
    return streamnn.AutoencoderDetector(seed=seed, alarm_params=alarm_params)


def _hst(seed, context):
    from river import anomaly, preprocessing

    from streamnn import AnomalyLikelihood
    return AnomalyLikelihood(preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=seed), context=context)


def make_series(rng, kind: str, n: int = 5000):
    """(values, starts of the two anomalies)."""
    period = int(rng.choice([24, 96, 288]))
    t = np.arange(n, dtype=float)
    amp, sd = rng.uniform(1, 5), rng.uniform(0.05, 0.3)
    square = rng.random() < 0.5
    phase = 2 * np.pi * t / period

    def wave(ph):
        return amp * (np.sign(np.sin(ph)) if square else np.sin(ph))

    drift = np.cumsum(rng.normal(0, sd * 0.02, n))
    noise = rng.normal(0, sd, n)
    first = int(rng.integers(n // 2, n // 2 + 800))
    starts = [first, int(rng.integers(first + 1000, n - 400))]   # windows never overlap
    ph = phase.copy()
    for s in starts:
        if kind == "frequency":
            ph[s:s + 300] = phase[s] + 2 * (phase[s:s + 300] - phase[s])
            ph[s + 300:] = phase[s + 300:] + (ph[s + 299] - phase[s + 299])
    v = wave(ph) + drift + noise
    for s in starts:
        if kind == "spike":
            v[s] += 2.5 * amp * rng.choice([-1, 1])
        elif kind == "level":
            v[s:] += amp * rng.choice([-1, 1])
        elif kind == "variance":
            v[s:s + 100] += rng.normal(0, 4 * sd + 0.2 * amp, 100)
        elif kind == "stuck":
            v[s:s + 200] = v[s]
        elif kind == "dropout":
            v[s:s + 50] = 0.0
        elif kind == "pattern":   # the next peak does not come: the trough level for one period
            v[s:s + period] = -amp + drift[s:s + period] + noise[s:s + period]
    return v, starts


def corpus(seed: int, per_kind: int):
    rng = np.random.default_rng(seed)
    out = []
    for kind in KINDS:
        for j in range(per_kind):
            v, starts = make_series(rng, kind)
            n, half = len(v), int(0.1 * len(v) / len(starts)) // 2
            out.append({"name": f"{kind}-{j}", "kind": kind, "values": v,
                        "windows": [(max(0, s - half), min(n - 1, s + half)) for s in starts]})
    return out


def run_one(job):
    name, seed, values = job
    model = DETECTORS[name](seed)
    scores = np.empty(len(values))
    c = time.process_time()
    for i, v in enumerate(values.tolist()):
        x = {"value": v}
        scores[i] = model.score_one(x)
        model.learn_one(x)
    return scores, time.process_time() - c


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--per-kind", type=int, default=4)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--detectors", default=",".join(DETECTORS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "anomaly_synthetic.md"))
    args = ap.parse_args()
    seeds, names = [int(s) for s in args.seeds.split(",")], args.detectors.split(",")
    t0 = time.time()
    rows = []
    for seed in seeds:
        series = corpus(seed, args.per_kind)
        jobs = [(n, seed, s["values"]) for n in names for s in series]
        with Pool(args.processes) as pool:
            out = pool.map(run_one, jobs, chunksize=1)
        for k, name in enumerate(names):
            part = out[k * len(series):(k + 1) * len(series)]
            files = [{"scores": np.clip(sc, 0, 1), "windows": s["windows"]} for (sc, _), s in zip(part, series)]
            res = score_corpus(files)
            thr = res["standard"]["threshold"]
            found = {}
            for f, s in zip(files, series):
                hit = sum(bool((f["scores"][lo:hi + 1] >= thr).any()) for lo, hi in s["windows"])
                found[s["kind"]] = found.get(s["kind"], 0) + hit
            n_ev = sum(len(s["values"]) for s in series)
            rows.append((seed, name, res, found, n_ev / sum(p[1] for p in part)))
            print(seed, name, {p: round(r["score"], 1) for p, r in res.items()}, found, flush=True)
    write(args, rows, time.time() - t0)


def write(args, rows, wall):
    names = list(dict.fromkeys(r[1] for r in rows))
    lines = ["# One value streams that are not NAB (NAB's scoring rules)", "",
             f"Command: `python benchmarks/anomaly_synthetic.py --seeds {args.seeds} --per-kind {args.per_kind}`; "
             f"{len(KINDS) * args.per_kind} series of 5,000 points per seed ({args.per_kind} per kind, two anomalies "
             f"each: {', '.join(KINDS)}; see the script's docstring), one fresh detector per series, "
             f"`{{\"value\": v}}` per event, the detector's seed = the corpus seed. Wall {wall:.0f} s, "
             "2 processes on a shared CPU.", "",
             "| detector | seed | standard | reward low FP | reward low FN | windows found (std) | FPs (std) | "
             + " | ".join(KINDS) + " | events/s (CPU) |",
             "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(KINDS) + "---:|"]
    for name in names:
        for seed, n, res, found, eps in rows:
            if n != name:
                continue
            s = res["standard"]
            lines.append(f"| {name.replace('|', ' + ')} | {seed} | {s['score']:.1f} | {res['reward_low_fp']['score']:.1f} | "
                         f"{res['reward_low_fn']['score']:.1f} | {s['windows_detected']}/{s['windows']} | "
                         f"{s['false_positives']} | " + " | ".join(str(found.get(k, 0)) for k in KINDS)
                         + f" | {eps:,.0f} |")
    lines += ["", f"Per kind: windows found at the standard profile's threshold, of {2 * args.per_kind}.", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

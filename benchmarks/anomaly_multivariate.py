"""Multivariate anomaly streams: ROC AUC of `AutoencoderDetector()` (defaults) vs river's HalfSpaceTrees.

Same defaults as on NAB. Streams (labelled, offline): the synthetic 8-sensor plant of
benchmarks/anomaly.py (20,000 events) and river's bundled `datasets.Shuttle` (49,097 events,
9 sensors, ~7 % anomalies). Every detector sees each event once (score_one, then learn_one);
ROC AUC over all events (scores during a detector's warm-up count as they are). Seeds: the
worst of `--seeds` is reported per detector and stream.

    python benchmarks/anomaly_multivariate.py [--seeds 3] [--limit 0]

Writes benchmarks/results/anomaly_multivariate.md.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

DETECTORS = ("AutoencoderDetector()", "MinMaxScaler + HST", "AnomalyLikelihood(MinMaxScaler + HST)")


def stream(name, limit):
    if name == "synthetic 8 sensors":
        from anomaly import synth_stream
        X, y, _ = synth_stream()
        events = [{f"s{j}": float(v) for j, v in enumerate(row)} for row in X]
        labels = y.tolist()
    else:
        from river import datasets
        events, labels = [], []
        for x, y in datasets.Shuttle():
            events.append(x)
            labels.append(int(y))
    if limit:
        events, labels = events[:limit], labels[:limit]
    return events, np.array(labels)


def make(name, seed):
    import torch
    from river import anomaly, preprocessing

    from streamnn import AnomalyLikelihood, AutoencoderDetector
    torch.set_num_threads(1)
    if name == "AutoencoderDetector()":
        return AutoencoderDetector(seed=seed)
    hst = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=seed)
    return AnomalyLikelihood(hst) if name.startswith("AnomalyLikelihood") else hst


def job(args):
    from sklearn.metrics import roc_auc_score
    stream_name, det, seed, limit = args
    events, labels = stream(stream_name, limit)
    model = make(det, seed)
    scores = np.empty(len(events))
    t = time.perf_counter()
    for i, x in enumerate(events):
        scores[i] = model.score_one(x)
        model.learn_one(x)
    dt = time.perf_counter() - t
    return stream_name, det, seed, float(roc_auc_score(labels, scores)), len(events) / dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0, help="first N events of each stream (0: all)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "anomaly_multivariate.md"))
    args = ap.parse_args()
    streams = ("synthetic 8 sensors", "Shuttle")
    jobs = [(s, d, seed, args.limit) for s in streams for d in DETECTORS for seed in range(args.seeds)]
    t = time.time()
    with Pool(2) as pool:
        res = pool.map(job, jobs, chunksize=1)
    lines = ["## Multivariate anomaly streams: ROC AUC (worst of %d seeds)" % args.seeds, "",
             "Defaults, one event at a time (score_one then learn_one). Command: "
             f"`python benchmarks/anomaly_multivariate.py --seeds {args.seeds}"
             f"{' --limit %d' % args.limit if args.limit else ''}`; wall {time.time() - t:.0f} s on a shared "
             "2-core CPU (events/s: compare rows with each other only).", "",
             "| stream | detector | ROC AUC (worst) | ROC AUC (all seeds) | events/s |", "|---|---|---:|---:|---:|"]
    for s in streams:
        for d in DETECTORS:
            rows = [r for r in res if r[0] == s and r[1] == d]
            aucs = [r[3] for r in rows]
            lines.append(f"| {s} | {d} | {min(aucs):.3f} | {', '.join(f'{a:.3f}' for a in aucs)} | "
                         f"{np.mean([r[4] for r in rows]):,.0f} |")
    lines.append("")
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

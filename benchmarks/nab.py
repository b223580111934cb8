"""NAB, scored by NAB's own rules: streamnn's AutoencoderDetector vs river's HalfSpaceTrees.

Every detector is created fresh for each of the 58 files with its defaults and fed
`{"value": v}` one event at a time (`score_one`, then `learn_one`); the scores of all files go to
`streamnn.evaluation.nab.score_corpus` (one threshold per profile over the whole corpus).
Peers in the same run:

- `AutoencoderDetector()` (streamnn's defaults: the score is already the anomaly likelihood),
- `MinMaxScaler() | HalfSpaceTrees()` (river's usual pipeline; its scores as they are),
- `AnomalyLikelihood(MinMaxScaler() | HalfSpaceTrees())` (the same, behind streamnn's alarm rules).

Usage (from the repository root)::

    python benchmarks/nab.py                 # the whole corpus, 2 processes
    python benchmarks/nab.py --files 6       # the first 6 files, for a quick look

Writes benchmarks/results/nab.md. events/s is per detector, one thread, summed over files.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from multiprocessing import Pool
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamnn.evaluation.nab import PROFILES, load_corpus, score_corpus  # noqa: E402

NAB_DIR = Path(os.environ.get("NAB_DIR", ROOT.parent / "shared" / "datasets" / "nab"))
DETECTORS = ("AutoencoderDetector()", "MinMaxScaler|HST", "AnomalyLikelihood(MinMaxScaler|HST)")
ANCHORS = [("ARTime", 74.9, 65.1, 80.4), ("Numenta HTM", 70.5, 62.6, 75.2), ("CAD OSE", 69.9, 67.0, 73.2),
           ("KNN-CAD", 58.0, 43.4, 64.8), ("Random Cut Forest", 51.7, 38.4, 59.7),
           ("Twitter ADVec", 47.1, 33.6, 53.5), ("random", 11.0, None, None)]


def make(name: str):
    import torch
    from river import anomaly, preprocessing

    import streamnn
    from streamnn.alarms import AnomalyLikelihood
    torch.set_num_threads(1)
    if name == "AutoencoderDetector()":
        return streamnn.AutoencoderDetector()
    hst = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=42)
    return AnomalyLikelihood(hst) if name.startswith("AnomalyLikelihood") else hst


def run_file(job):
    name, values = job
    model = make(name)
    scores = np.empty(len(values))
    t = time.perf_counter()
    for i, v in enumerate(values.tolist()):
        x = {"value": v}
        scores[i] = model.score_one(x)
        model.learn_one(x)
    return scores, time.perf_counter() - t


def run_all(corpus, names, processes=2):
    jobs = [(n, c["values"]) for n in names for c in corpus]
    with Pool(processes) as pool:
        out = pool.map(run_file, jobs, chunksize=1)
    res = {}
    for k, n in enumerate(names):
        part = out[k * len(corpus):(k + 1) * len(corpus)]
        files = [{"scores": np.clip(s, 0.0, 1.0), "windows": c["windows"]} for (s, _), c in zip(part, corpus)]
        n_ev = sum(len(c["values"]) for c in corpus)
        res[n] = {"nab": score_corpus(files), "events_s": n_ev / sum(dt for _, dt in part), "scores": files}
    return res


def write(path, res, corpus, args, wall):
    n_ev = sum(len(c["values"]) for c in corpus)
    lines = ["## NAB (Numenta Anomaly Benchmark), NAB's scoring rules", "",
             f"{len(corpus)} files, {n_ev:,} events, {sum(len(c['windows']) for c in corpus)} labelled windows; "
             "one fresh detector per file, defaults, `{\"value\": v}` per event (score_one then learn_one); "
             "one threshold per profile over the whole corpus (`streamnn.evaluation.nab`). "
             f"Command: `python benchmarks/nab.py{' --files %d' % args.files if args.files else ''}`; "
             f"{platform.processor() or platform.machine()}, 2 processes, one thread each, on a shared CPU; "
             f"wall {wall:.0f} s.", "",
             "| detector | standard | reward low FP | reward low FN | windows found (std) | FPs (std) | events/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for n, r in res.items():
        s = r["nab"]
        lines.append(f"| {n.replace('|', ' + ')} | {s['standard']['score']:.1f} | {s['reward_low_fp']['score']:.1f} | "
                     f"{s['reward_low_fn']['score']:.1f} | {s['standard']['windows_detected']}/"
                     f"{s['standard']['windows']} | {s['standard']['false_positives']} | {r['events_s']:,.0f} |")
    for a in ANCHORS:
        lines.append(f"| {a[0]} (NAB scoreboard) | {a[1]} | {a[2] if a[2] is not None else '-'} | "
                     f"{a[3] if a[3] is not None else '-'} | | | |")
    lines += ["", "Bars: standard >= 70.5, reward low FP >= 62.6, reward low FN >= 75.2 (Numenta HTM); "
              ">= 10,000 events/s on one thread. events/s were measured with other jobs on the same two "
              "cores: compare the rows with each other, not with other tables.", ""]
    Path(path).write_text("\n".join(lines))
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=0, help="only the first N files (0: all 58)")
    ap.add_argument("--detectors", default=",".join(DETECTORS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "nab.md"))
    args = ap.parse_args()
    corpus = load_corpus(NAB_DIR)
    if args.files:
        corpus = corpus[:args.files]
    t = time.time()
    res = run_all(corpus, args.detectors.split(","))
    write(args.out, res, corpus, args, time.time() - t)


if __name__ == "__main__":
    main()

"""NAB, scored by NAB's own rules: streamnn's AutoencoderDetector vs river's HalfSpaceTrees.

Every detector is created fresh for each of the 58 files with its defaults and fed
`{"value": v}` one event at a time (`score_one`, then `learn_one`); the scores of all files go to
`streamnn.evaluation.nab.score_corpus` (one threshold per profile over the whole corpus).
Peers in the same run:

- `AutoencoderDetector()` (streamnn's defaults: the score is already the anomaly likelihood, with
  the change size and the seasonal distance of the value as evidence beside the network's error),
- `AutoencoderDetector(alarm_params={"context": False})` (the network's error alone),
- `AutoencoderDetector(alarm_params={"context": True})` (the change size and context novelty of
  the series join the error's likelihood, `streamnn.alarm_signals.SeriesContext`),
- `MinMaxScaler() | HalfSpaceTrees()` (river's usual pipeline; its scores as they are),
- `AnomalyLikelihood(MinMaxScaler() | HalfSpaceTrees())` (the same, behind streamnn's alarm rules,
  with their default evidence), and the same with `context=False` (the raw score alone).

Usage (from the repository root)::

    python benchmarks/nab.py                 # the whole corpus, 2 processes
    python benchmarks/nab.py --files 6       # the first 6 files, for a quick look
    python benchmarks/nab.py --baseline ../main/streamnn   # add an older streamnn's default, same run

Writes benchmarks/results/nab.md. events/s is per detector, one thread, summed over files: by CPU
time of the worker process (what one thread does on this machine, less sensitive to other jobs on
the shared cores) and by wall time.
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
SEASON = "AutoencoderDetector(alarm_params={'context': 'season'})"   # the default of sessions 7-10
SERIES = "AutoencoderDetector(alarm_params={'context': True})"
PLAIN = "AutoencoderDetector(alarm_params={'context': False})"
HST_SERIES = "AnomalyLikelihood(MinMaxScaler|HST) [context=True]"
HST_PLAIN = "AnomalyLikelihood(MinMaxScaler|HST) [context=False]"
DETECTORS = ("AutoencoderDetector()", SEASON, PLAIN, SERIES, "MinMaxScaler|HST", "AnomalyLikelihood(MinMaxScaler|HST)",
             HST_PLAIN)
ANCHORS = [("ARTime", 74.9, 65.1, 80.4), ("Numenta HTM", 70.5, 62.6, 75.2), ("CAD OSE", 69.9, 67.0, 73.2),
           ("KNN-CAD", 58.0, 43.4, 64.8), ("Random Cut Forest", 51.7, 38.4, 59.7),
           ("Twitter ADVec", 47.1, 33.6, 53.5), ("random", 11.0, None, None)]


BASELINE = "AutoencoderDetector() [baseline]"


def make(name: str, baseline=None, seed=None):
    import torch
    from river import anomaly, preprocessing

    import streamnn
    from streamnn.alarms import AnomalyLikelihood
    torch.set_num_threads(1)
    if name == "AutoencoderDetector()":
        return streamnn.AutoencoderDetector(seed=seed)
    if name == SEASON:   # the change size and the seasonal distance, without the level shift
        return streamnn.AutoencoderDetector(seed=seed, alarm_params={"context": "season"})
    if name == SERIES:   # the series evidence (change size, context novelty) joins the error
        return streamnn.AutoencoderDetector(seed=seed, alarm_params={"context": True})
    if name == PLAIN:    # the network's error alone (with range novelty)
        return streamnn.AutoencoderDetector(seed=seed, alarm_params={"context": False})
    if name == BASELINE:   # an older copy of the package, imported as streamnn_baseline
        sys.path.insert(0, baseline)
        import streamnn_baseline
        return streamnn_baseline.AutoencoderDetector()
    hst = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=42)
    if name.startswith("AnomalyLikelihood"):
        ctx = {HST_SERIES: {"context": True}, HST_PLAIN: {"context": False}}.get(name, {})   # else the default
        return AnomalyLikelihood(hst, **ctx)
    return hst


def run_file(job):
    name, values, baseline, seed = job
    model = make(name, baseline, seed)
    scores = np.empty(len(values))
    t, c = time.perf_counter(), time.process_time()
    for i, v in enumerate(values.tolist()):
        x = {"value": v}
        scores[i] = model.score_one(x)
        model.learn_one(x)
    return scores, time.perf_counter() - t, time.process_time() - c


def _warm_up():
    """Pay torch's one-time initialisation (first module, optimizer, step) before any timing."""
    model = make("AutoencoderDetector()")
    for i in range(300):
        model.learn_one({"value": float(i % 7)})


def run_all(corpus, names, processes=2, baseline=None, seed=None):
    jobs = [(n, c["values"], baseline, seed) for n in names for c in corpus]
    with Pool(processes, initializer=_warm_up) as pool:
        out = pool.map(run_file, jobs, chunksize=1)
    res = {}
    for k, n in enumerate(names):
        part = out[k * len(corpus):(k + 1) * len(corpus)]
        files = [{"scores": np.clip(s, 0.0, 1.0), "windows": c["windows"]} for (s, _, _), c in zip(part, corpus)]
        n_ev = sum(len(c["values"]) for c in corpus)
        res[n] = {"nab": score_corpus(files), "events_s": n_ev / sum(p[1] for p in part),
                  "cpu_events_s": n_ev / sum(p[2] for p in part), "scores": files}
    return res


def write(path, res, corpus, args, wall):
    n_ev = sum(len(c["values"]) for c in corpus)
    lines = ["## NAB (Numenta Anomaly Benchmark), NAB's scoring rules", "",
             f"{len(corpus)} files, {n_ev:,} events, {sum(len(c['windows']) for c in corpus)} labelled windows; "
             "one fresh detector per file, defaults, `{\"value\": v}` per event (score_one then learn_one); "
             "one threshold per profile over the whole corpus (`streamnn.evaluation.nab`). "
             f"Command: `python benchmarks/nab.py{' --files %d' % args.files if args.files else ''}"
             f"{' --seed %d' % args.seed if args.seed is not None else ''}"
             f"{' --processes %d' % args.processes if args.processes != 2 else ''}"
             f"{' --baseline ' + args.baseline if args.baseline else ''}`; "
             f"{platform.processor() or platform.machine()}, {args.processes} process(es), one thread each, "
             "on a shared CPU; "
             f"wall {wall:.0f} s.", "",
             "| detector | standard | reward low FP | reward low FN | windows found (std) | FPs (std) | "
             "events/s (CPU) | events/s (wall) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n, r in res.items():
        s = r["nab"]
        lines.append(f"| {n.replace('|', ' + ')} | {s['standard']['score']:.1f} | {s['reward_low_fp']['score']:.1f} | "
                     f"{s['reward_low_fn']['score']:.1f} | {s['standard']['windows_detected']}/"
                     f"{s['standard']['windows']} | {s['standard']['false_positives']} | {r['cpu_events_s']:,.0f} | "
                     f"{r['events_s']:,.0f} |")
    for a in ANCHORS:
        lines.append(f"| {a[0]} (NAB scoreboard) | {a[1]} | {a[2] if a[2] is not None else '-'} | "
                     f"{a[3] if a[3] is not None else '-'} | | | | |")
    if BASELINE in res and "AutoencoderDetector()" in res:
        new, old = res["AutoencoderDetector()"], res[BASELINE]
        lines += ["", f"Speed of `AutoencoderDetector()` against the baseline ({args.baseline}) in this run: "
                  f"{new['cpu_events_s'] / old['cpu_events_s']:.2f}x by CPU time, "
                  f"{new['events_s'] / old['events_s']:.2f}x by wall time."]
    lines += ["", "Bars: standard >= 70.5, reward low FP >= 62.6, reward low FN >= 75.2 (Numenta HTM); "
              ">= 10,000 events/s on one thread. events/s were measured with other jobs on the same two "
              "cores (CPU: the worker's process time; wall: elapsed): compare the rows with each other, "
              "not with other tables.", ""]
    keep = ""   # a hand-written section after the table (measurements of other settings) survives
    if Path(path).exists() and "\n## Sensitivity" in Path(path).read_text():
        keep = Path(path).read_text().split("\n## Sensitivity", 1)[1]
        keep = "\n## Sensitivity" + keep
    Path(path).write_text("\n".join(lines) + keep)
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=0, help="only the first N files (0: all 58)")
    ap.add_argument("--detectors", default=",".join(DETECTORS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "nab.md"))
    ap.add_argument("--processes", type=int, default=2, help="worker processes (one thread each)")
    ap.add_argument("--seed", type=int, default=None,
                    help="the seed of streamnn's detectors (default: None, a fresh draw per file)")
    ap.add_argument("--baseline", default=None,
                    help="an older streamnn package directory: its AutoencoderDetector() runs as a peer")
    args = ap.parse_args()
    corpus = load_corpus(NAB_DIR)
    if args.files:
        corpus = corpus[:args.files]
    names, baseline = args.detectors.split(","), None
    if args.baseline:   # copy it under another name, so both versions load in one process
        import shutil
        import tempfile
        baseline = tempfile.mkdtemp(prefix="streamnn_baseline_")
        shutil.copytree(args.baseline, Path(baseline) / "streamnn_baseline")
        names.insert(1, BASELINE)
    t = time.time()
    res = run_all(corpus, names, processes=args.processes, baseline=baseline, seed=args.seed)
    write(args.out, res, corpus, args, time.time() - t)


if __name__ == "__main__":
    main()

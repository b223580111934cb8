"""Drift benchmark: how fast a default streamnn classifier recovers after a drift, next to river.

    python benchmarks/drift.py                 # 10 seeds, writes benchmarks/results/drift.md
    python benchmarks/drift.py --seeds 3 --n-before 5000 --out /tmp/drift.md   # a smoke run

Streams are river's synthetic generators. An abrupt drift chains two concepts (the first
`n_before` events of one generator, then `n_after` of another); a gradual drift is river's
`synth.ConceptDriftStream` centred on `n_before` with a transition `width`. Every stream is
materialized (generated into a list) before any learner runs: generation is slow and is not timed.

Prequential (predict_one then learn_one). For each stream and seed: accuracy over the whole stream
and over the `window` events after the drift (for a gradual drift, the window starts at the centre
of the transition). Peers in the same run: river's LogisticRegression after a StandardScaler, and
HoeffdingAdaptiveTreeClassifier. The table gives the mean and the worst (minimum) over seeds, and
how many seeds the default learner matched or beat each peer on after the drift.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from river import compose, linear_model, preprocessing, tree
from river.datasets import synth

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import streamnn  # noqa: E402

streamnn.set_threads(1)
OUT = Path(__file__).resolve().parent / "results" / "drift.md"


def _abrupt(make_a, make_b):
    def build(seed, n_before, n_after, width):
        return list(itertools.chain(make_a(seed).take(n_before), make_b(seed).take(n_after)))
    return build


def _gradual(make_a, make_b):
    def build(seed, n_before, n_after, width):
        s = synth.ConceptDriftStream(stream=make_a(seed), drift_stream=make_b(seed), position=n_before,
                                     width=width, seed=seed)
        return list(s.take(n_before + n_after))
    return build


STREAMS = {
    "SEA 0 -> 3 (abrupt)": _abrupt(lambda s: synth.SEA(variant=0, seed=s),
                                   lambda s: synth.SEA(variant=3, seed=s + 1000)),
    "Agrawal 1 -> 4 (abrupt)": _abrupt(lambda s: synth.Agrawal(classification_function=1, seed=s),
                                       lambda s: synth.Agrawal(classification_function=4, seed=s + 1000)),
    "Sine 0 -> 1, labels reversed (abrupt)": _abrupt(lambda s: synth.Sine(classification_function=0, seed=s),
                                                     lambda s: synth.Sine(classification_function=1, seed=s + 1000)),
    "RandomRBF, new centroids (abrupt)": _abrupt(
        lambda s: synth.RandomRBF(seed_model=s, seed_sample=s, n_features=10, n_centroids=20),
        lambda s: synth.RandomRBF(seed_model=s + 1000, seed_sample=s + 1000, n_features=10, n_centroids=20)),
    "Hyperplane, new plane (abrupt)": _abrupt(
        lambda s: synth.Hyperplane(seed=s, n_features=10, noise_percentage=0.05),
        lambda s: synth.Hyperplane(seed=s + 1000, n_features=10, noise_percentage=0.05)),
    "SEA 0 -> 3 (gradual)": _gradual(lambda s: synth.SEA(variant=0, seed=s),
                                     lambda s: synth.SEA(variant=3, seed=s + 1000)),
    "Agrawal 1 -> 4 (gradual)": _gradual(lambda s: synth.Agrawal(classification_function=1, seed=s),
                                         lambda s: synth.Agrawal(classification_function=4, seed=s + 1000)),
    "Sine 0 -> 1 (gradual)": _gradual(lambda s: synth.Sine(classification_function=0, seed=s),
                                      lambda s: synth.Sine(classification_function=1, seed=s + 1000)),
}

LEARNERS = {
    "streamnn MLPClassifier()": lambda s: streamnn.MLPClassifier(seed=s),
    "river LogisticRegression (+StandardScaler)": lambda s: compose.Pipeline(
        preprocessing.StandardScaler(), linear_model.LogisticRegression()),
    "river HoeffdingAdaptiveTree": lambda s: tree.HoeffdingAdaptiveTreeClassifier(seed=s),
}


def run(model, stream, start, window):
    """(overall accuracy, accuracy in [start, start + window), seconds)."""
    hits = post = 0
    t = time.perf_counter()
    for i, (x, y) in enumerate(stream):
        ok = model.predict_one(x) == y
        hits += ok
        if start <= i < start + window:
            post += ok
        model.learn_one(x, y)
    return hits / len(stream), post / min(window, len(stream) - start), time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--n-before", type=int, default=10_000)
    ap.add_argument("--window", type=int, default=5_000)
    ap.add_argument("--width", type=int, default=2_000, help="transition width of a gradual drift")
    ap.add_argument("--streams", default="", help="comma-separated substrings of stream names (all if empty)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    seeds = list(range(args.seeds))
    names = [n for n in STREAMS if not args.streams or any(k in n for k in args.streams.split(","))]
    started = time.time()
    lines = ["# Drift: recovery after abrupt and gradual drift (issue 15)", "",
             f"Command: `python benchmarks/drift.py --seeds {args.seeds} --n-before {args.n_before} "
             f"--window {args.window} --width {args.width}`. Machine: {platform.machine()}, {os.cpu_count()} cores, "
             f"one torch thread, torch {torch.__version__}, river {__import__('river').__version__}. "
             f"Seeds {seeds[0]}-{seeds[-1]}; each stream has {args.n_before:,} events of the first concept, "
             f"then {args.window:,} more; all learners run in this same process on the same materialized "
             "streams. Accuracy is prequential; \"after\" is the accuracy over the "
             f"{args.window:,} events after the drift (its centre, for a gradual one). "
             "\"wins\" counts the seeds where streamnn's default matched or beat that peer after the drift.", "",
             "| stream | learner | after drift: mean | worst | overall: mean | worst | wins vs peer | s/seed |",
             "|---|---|---|---|---|---|---|---|"]
    verdict = []
    for name in names:
        streams = [STREAMS[name](s, args.n_before, args.window, args.width) for s in seeds]
        res = {}
        for lname, make in LEARNERS.items():
            res[lname] = [run(make(s), st, args.n_before, args.window) for s, st in zip(seeds, streams)]
        ours = [r[1] for r in res["streamnn MLPClassifier()"]]
        for lname, rs in res.items():
            post, overall, secs = [r[1] for r in rs], [r[0] for r in rs], [r[2] for r in rs]
            wins = "" if lname.startswith("streamnn") else f"{sum(a >= b for a, b in zip(ours, post))}/{len(seeds)}"
            lines.append(f"| {name} | {lname} | {statistics.mean(post):.4f} | {min(post):.4f} | "
                         f"{statistics.mean(overall):.4f} | {min(overall):.4f} | {wins} | {statistics.mean(secs):.1f} |")
        best_peer = max(statistics.mean(r[1] for r in rs) for k, rs in res.items() if not k.startswith("streamnn"))
        verdict.append((name, statistics.mean(ours), best_peer))
        print("\n".join(lines[-len(res):]), flush=True)
    lines += ["", "Bar (issue 15): after each abrupt drift the default's mean accuracy over the window is at least "
              "both peers'; after a gradual drift, no worse.", "", "| stream | streamnn after | best peer after | met |",
              "|---|---|---|---|"]
    for name, ours, peer in verdict:
        lines.append(f"| {name} | {ours:.4f} | {peer:.4f} | {'yes' if ours >= peer else 'NO'} |")
    lines += ["", f"Total time: {time.time() - started:.0f} s."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-len(verdict) - 6:]))


if __name__ == "__main__":
    main()

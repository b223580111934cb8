"""Core benchmark: streamnn's learners against deep-river and river, in one run, one torch thread.

    python benchmarks/run.py            # full run (a few minutes), writes benchmarks/results/core.md
    python benchmarks/run.py --quick    # smaller streams and fewer seeds, for a smoke check
    python benchmarks/run.py --baseline /tmp/base   # also time the defaults of another checkout
                                                    # (e.g. `git worktree add /tmp/base <commit>`)

Prequential (test-then-train) everywhere: each event is predicted, then learned.
deep-river must be installed with `pip install --no-deps deep-river` (it pins old torch/river).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from river import compose, datasets, evaluate, forest, linear_model, metrics, preprocessing, tree
from river.datasets import synth
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import import_deep_river  # noqa: E402

import streamnn  # noqa: E402

streamnn.set_threads(1)
OUT = Path(__file__).resolve().parent / "results" / "core.md"

# The per-event comparison uses the same network as deep-river (F-32-2) and takes one optimizer
# step every 16 events on 32 recent + 32 replayed events; the speed-first settings leave out the
# nearest-neighbour vote (README: `neighbors=0`; it costs a distance to 1,000 rows per prediction).
FAST = dict(update_every=16, batch_size=32, replay=1.0, lr=0.05, warmup=0, neighbors=0)
BATCH = dict(update_every=256, batch_size=256, replay=0.0, lr=0.01, warmup=0, neighbors=0)


class DRNet(nn.Module):
    """deep-river's module: the same F-32-O MLP as streamnn's default."""

    def __init__(self, n_features, n_outputs=2):
        super().__init__()
        self.l1, self.act, self.l2 = nn.Linear(n_features, 32), nn.ReLU(), nn.Linear(32, n_outputs)

    def forward(self, x):
        return self.l2(self.act(self.l1(x)))


def deep_river_classifier(n_features, n_classes, seed):
    from deep_river.classification import Classifier
    clf = Classifier(module=DRNet(n_features, n_classes), loss_fn="cross_entropy", optimizer_fn="adam",
                     lr=1e-3, is_class_incremental=True, seed=seed)
    return compose.Pipeline(preprocessing.StandardScaler(), clf)


def deep_river_regressor(n_features, seed):
    from deep_river.regression import Regressor
    reg = Regressor(module=DRNet(n_features, 1), loss_fn="mse", optimizer_fn="adam", lr=1e-3, seed=seed)
    return compose.Pipeline(preprocessing.StandardScaler(), preprocessing.TargetStandardScaler(reg))


def prequential(model, stream, metric):
    """(metric value, events/s) of predict_one then learn_one over `stream` (a list)."""
    start = time.perf_counter()
    for x, y in stream:
        metric.update(y, model.predict_one(x))
        model.learn_one(x, y)
    return metric.get(), len(stream) / (time.perf_counter() - start)


def prequential_batches(model, stream, metric, size=256):
    """The same with predict_many then learn_many on batches of `size`."""
    frames = []
    for i in range(0, len(stream), size):
        chunk = stream[i:i + size]
        frames.append((pd.DataFrame([x for x, _ in chunk]), pd.Series([y for _, y in chunk])))
    start = time.perf_counter()
    for X, y in frames:
        for yt, yp in zip(y, model.predict_many(X)):
            metric.update(yt, yp)
        model.learn_many(X, y)
    return metric.get(), len(stream) / (time.perf_counter() - start)


def fmt(v, digits=3):
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def mean_sd(vals):
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


# ---------------------------------------------------------------------------------------------

def section_per_event(seeds, dr, lines):
    stream = list(datasets.Phishing())
    n_f = len(stream[0][0])
    rows = {}
    contenders = {
        "streamnn MLPClassifier (update_every=16, replay)": lambda s: streamnn.MLPClassifier(seed=s, **FAST),
        "streamnn MLPClassifier (defaults)": lambda s: streamnn.MLPClassifier(seed=s),
        "river LogisticRegression (+StandardScaler)": lambda s: compose.Pipeline(
            preprocessing.StandardScaler(), linear_model.LogisticRegression()),
    }
    if dr:
        contenders["deep-river Classifier (Adam 1e-3, +StandardScaler)"] = lambda s: deep_river_classifier(n_f, 2, s)
    for name, make in contenders.items():
        prequential(make(99), stream[:300], metrics.Accuracy())   # warm caches and lazy imports, untimed
        res = [prequential(make(s), stream, metrics.Accuracy()) for s in seeds]
        rows[name] = (mean_sd([r[0] for r in res]), statistics.median([r[1] for r in res]))
    base = rows.get("deep-river Classifier (Adam 1e-3, +StandardScaler)")
    lines += ["## Per-event mode: Phishing, predict_one then learn_one, 9-32-2 MLP", "",
              f"Seeds {list(seeds)}; accuracy mean ± sd, events/s median.", "",
              "| learner | accuracy | events/s | × deep-river |", "|---|---|---|---|"]
    for name, ((acc, sd), eps) in rows.items():
        ratio = f"{eps / base[1]:.1f}" if base else "n/a"
        lines.append(f"| {name} | {acc:.4f} ± {sd:.4f} | {eps:,.0f} | {ratio} |")
    lines.append("")
    return rows


def make_drift_stream(n, seed=7):
    """Two Agrawal concepts chained with itertools: a clean, abrupt drift at n/2."""
    a = synth.Agrawal(classification_function=1, seed=seed)
    b = synth.Agrawal(classification_function=4, seed=seed + 1)
    half = n // 2
    return list(itertools.chain(a.take(half), b.take(n - half)))


def section_batch(seeds, dr, lines, n):
    stream = make_drift_stream(n)
    rows = {}
    prequential_batches(streamnn.MLPClassifier(seed=99, **BATCH), stream[:2048], metrics.Accuracy())  # warm-up
    for s in seeds[:2]:
        acc, eps = prequential_batches(streamnn.MLPClassifier(seed=s, **BATCH), stream, metrics.Accuracy())
        rows.setdefault("streamnn MLPClassifier batch mode (update_every=batch_size=256)", []).append((acc, eps))
        acc, eps = prequential_batches(streamnn.MLPClassifier(seed=s, **FAST), stream, metrics.Accuracy())
        rows.setdefault("streamnn MLPClassifier batch mode (update_every=16)", []).append((acc, eps))
    per_event = prequential(streamnn.MLPClassifier(seed=seeds[0], **FAST), stream, metrics.Accuracy())
    rows["streamnn MLPClassifier per event (update_every=16)"] = [per_event]
    if dr:
        sub = stream[: min(len(stream), 5000)]
        rows["deep-river Classifier per event (first 5k events)"] = [
            prequential(deep_river_classifier(len(stream[0][0]), 2, seeds[0]), sub, metrics.Accuracy())]
    base = rows.get("deep-river Classifier per event (first 5k events)")
    lines += [f"## Batch mode: {n:,} Agrawal events (drift at {n // 2:,}), predict_many then learn_many on batches of 256",
              "", "| learner | accuracy | samples/s | × deep-river per sample |", "|---|---|---|---|"]
    for name, res in rows.items():
        acc = statistics.mean(r[0] for r in res)
        eps = statistics.median(r[1] for r in res)
        ratio = f"{eps / base[0][1]:.0f}" if base else "n/a"
        lines.append(f"| {name} | {acc:.4f} | {eps:,.0f} | {ratio} |")
    lines.append("")
    return rows


def section_accuracy(seeds, dr, lines, quick):
    sets = [("Phishing", datasets.Phishing, "clf", 2), ("Bananas", datasets.Bananas, "clf", 2),
            ("ImageSegments", datasets.ImageSegments, "clf", 7), ("TrumpApproval", datasets.TrumpApproval, "reg", 1)]
    lines += ["## Default settings, prequential, river's datasets", "",
              "streamnn with no arguments but `seed`; mean over seeds. Accuracy (higher is better) or MAE (lower).", "",
              "| dataset | metric | streamnn (defaults) | deep-river (Adam 1e-3) | river linear | HoeffdingTree | ARF |",
              "|---|---|---|---|---|---|---|"]
    table = {}
    for name, ds, kind, n_out in sets:
        stream = list(ds())
        n_f = len(stream[0][0])
        if kind == "clf":
            metric = metrics.Accuracy
            contenders = {
                "streamnn": lambda s: streamnn.MLPClassifier(seed=s),
                "deep-river": (lambda s: deep_river_classifier(n_f, n_out, s)) if dr else None,
                "linear": lambda s: compose.Pipeline(preprocessing.StandardScaler(),
                                                     linear_model.LogisticRegression() if n_out == 2 else
                                                     linear_model.SoftmaxRegression()),
                "ht": lambda s: tree.HoeffdingTreeClassifier(),
                "arf": lambda s: forest.ARFClassifier(seed=s),
            }
        else:
            metric = metrics.MAE
            contenders = {
                "streamnn": lambda s: streamnn.MLPRegressor(seed=s),
                "deep-river": (lambda s: deep_river_regressor(n_f, s)) if dr else None,
                "linear": lambda s: compose.Pipeline(preprocessing.StandardScaler(), linear_model.LinearRegression()),
                "ht": lambda s: compose.Pipeline(preprocessing.StandardScaler(),
                                                 tree.HoeffdingAdaptiveTreeRegressor(seed=s)),
                "arf": lambda s: compose.Pipeline(preprocessing.StandardScaler(), forest.ARFRegressor(seed=s)),
            }
        cells = {}
        for key, make in contenders.items():
            if make is None:
                cells[key] = "n/a"
                continue
            use = seeds if key in ("streamnn", "deep-river") else seeds[:1] if quick else seeds
            vals = [prequential(make(s), stream, metric())[0] for s in use]
            cells[key] = statistics.mean(vals)
        table[name] = cells
        lines.append(f"| {name} | {'accuracy' if kind == 'clf' else 'MAE'} | " +
                     " | ".join(fmt(cells[k], 4) for k in ("streamnn", "deep-river", "linear", "ht", "arf")) + " |")
    lines.append("")
    return table


def section_drift(seeds, lines, n):
    stream = make_drift_stream(n)
    half = n // 2
    variants = {
        "default lr control (+ drift re-warm)": lambda s: streamnn.MLPClassifier(seed=s),
        "plateau (ReduceLROnPlateau-style) + re-warm": lambda s: streamnn.MLPClassifier(seed=s, lr_control="plateau"),
        "plateau, no re-warm": lambda s: streamnn.MLPClassifier(seed=s, lr_control=streamnn.PlateauLR(rewarm=False)),
        "constant lr": lambda s: streamnn.MLPClassifier(seed=s, lr_control=None),
    }
    lines += [f"## Drift: {n:,} Agrawal events, concept 1 -> 4 at {half:,}", "",
              "Accuracy over the whole stream, over the 5,000 events after the drift, and the learning rate "
              "just before the drift; mean over seeds.", "",
              "| lr control | accuracy | after drift (5k) | lr before drift | re-warms |", "|---|---|---|---|---|"]
    out = {}
    for name, make in variants.items():
        accs, post, lrs, rew = [], [], [], []
        for s in seeds:
            model, acc_all, acc_post = make(s), metrics.Accuracy(), metrics.Accuracy()
            for i, (x, y) in enumerate(stream):
                yp = model.predict_one(x)
                acc_all.update(y, yp)
                if half <= i < half + 5000:
                    acc_post.update(y, yp)
                if i == half - 1:
                    lrs.append(model.lr_)
                model.learn_one(x, y)
            accs.append(acc_all.get())
            post.append(acc_post.get())
            rew.append(model.lr_control_.n_rewarms if model.lr_control_ else 0)
        out[name] = (statistics.mean(accs), statistics.mean(post))
        lines.append(f"| {name} | {statistics.mean(accs):.4f} | {statistics.mean(post):.4f} | "
                     f"{statistics.mean(lrs):.2g} | {statistics.mean(rew):.1f} |")
    lines.append("")
    return out


TIMING = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import streamnn
from river import datasets
streamnn.set_threads(1)
out = {}
for name, make, ds in (("MLPClassifier()", streamnn.MLPClassifier, datasets.Phishing),
                       ("MLPRegressor()", streamnn.MLPRegressor, datasets.TrumpApproval)):
    stream = list(ds())
    times = []
    for seed in (0, 1, 2):
        model = make(seed=seed)
        t = time.perf_counter()
        for x, y in stream:
            model.predict_one(x)
            model.learn_one(x, y)
        times.append((time.perf_counter() - t) / len(stream) * 1e6)
    out[name] = sorted(times)[1]
print(json.dumps({"path": streamnn.__file__, "us": out}))
"""


def _time_defaults(path):
    """Median microseconds per event (predict_one + learn_one) of MLPClassifier() on Phishing and
    MLPRegressor() on TrumpApproval, with the streamnn found at `path`, in a fresh process."""
    res = subprocess.run([sys.executable, "-c", TIMING, str(path)], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def section_speed_vs_baseline(baseline, lines):
    """Time per event of the defaults: this checkout against `baseline`, alternating
    baseline, this, baseline, this (each in a fresh process), medians of each."""
    here = Path(__file__).resolve().parents[1]
    runs = {"baseline": [], "this": []}
    for _ in range(2):
        runs["baseline"].append(_time_defaults(baseline))
        runs["this"].append(_time_defaults(here))
    lines += [f"## Speed of the defaults against the previous code ({baseline})", "",
              "Microseconds per event (predict_one + learn_one), median of 3 seeds, two alternating rounds, "
              "each in a fresh process (ratios are what counts: the machine is shared).", "",
              "| learner | previous defaults, µs/event | these defaults, µs/event | ratio |", "|---|---|---|---|"]
    out = {}
    for name in runs["this"][0]["us"]:
        old = statistics.mean(r["us"][name] for r in runs["baseline"])
        new = statistics.mean(r["us"][name] for r in runs["this"])
        out[name] = new / old
        lines.append(f"| {name} | {old:.0f} | {new:.0f} | {new / old:.2f} |")
    lines.append("")
    return out


def section_seeds(lines, tuned, fresh, only=""):
    """The defaults over many seeds with river's evaluate.progressive_val_score: worst and mean."""
    sets = [("Phishing", datasets.Phishing, "clf", "accuracy"), ("Bananas", datasets.Bananas, "clf", "accuracy"),
            ("ImageSegments", datasets.ImageSegments, "clf", "accuracy"),
            ("TrumpApproval", datasets.TrumpApproval, "reg", "MAE")]
    lines += ["## The defaults over seeds (`MLPClassifier(seed=s)` / `MLPRegressor(seed=s)`, nothing else set)", "",
              "river's `evaluate.progressive_val_score`. Seeds "
              f"{tuned[0]}-{tuned[-1]} were used while choosing the defaults; seeds {fresh[0]}-{fresh[-1]} were not.", "",
              "| dataset | metric | seeds | worst | mean |", "|---|---|---|---|---|"]
    out = {}
    for name, ds, kind, mname in sets:
        if only and name not in only.split(","):
            continue
        for label, seeds in ((f"{tuned[0]}-{tuned[-1]}", tuned), (f"{fresh[0]}-{fresh[-1]}", fresh)):
            vals = []
            for s in seeds:
                model = streamnn.MLPClassifier(seed=s) if kind == "clf" else streamnn.MLPRegressor(seed=s)
                metric = metrics.Accuracy() if kind == "clf" else metrics.MAE()
                vals.append(evaluate.progressive_val_score(ds(), model, metric).get())
            worst = min(vals) if kind == "clf" else max(vals)
            out[(name, label)] = (worst, statistics.mean(vals))
            lines.append(f"| {name} | {mname} | {label} | {worst:.4f} | {statistics.mean(vals):.4f} |")
    lines.append("")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--datasets", default="", help="seeds section: comma-separated dataset names (all if empty)")
    ap.add_argument("--baseline", default=None, help="a checkout whose defaults' speed to compare with")
    ap.add_argument("--only", default="", help="comma-separated sections: speed,per_event,batch,accuracy,drift,seeds")
    args = ap.parse_args(argv)
    only = set(filter(None, args.only.split(",")))

    def want(name):
        return not only or name in only

    seeds = [0, 1] if args.quick else [0, 1, 2]
    n_drift = 20_000 if args.quick else 100_000
    dr = import_deep_river()
    started = time.time()
    lines = ["# Core learners (issue 2)", "",
             f"Command: `python benchmarks/run.py{' '.join([''] + (argv if argv is not None else sys.argv[1:]))}`. Machine: {platform.machine()}, "
             f"{os.cpu_count()} cores, one torch thread, torch {torch.__version__}, "
             f"river {__import__('river').__version__}, deep-river {getattr(dr, '__version__', 'missing')}. "
             "All competitors run in this same process; ratios are taken within this run.", ""]
    if args.baseline and want("speed"):
        section_speed_vs_baseline(args.baseline, lines)
    if want("per_event"):
        section_per_event(seeds, dr, lines)
    if want("batch"):
        section_batch(seeds, dr, lines, n_drift)
    if want("accuracy"):
        section_accuracy(seeds, dr, lines, args.quick)
    if want("drift"):
        section_drift(seeds[:2], lines, n_drift)
    if want("seeds"):
        section_seeds(lines, list(range(2 if args.quick else 10)), list(range(10, 12 if args.quick else 20)), args.datasets)
    lines.append(f"Total time: {time.time() - started:.0f} s.")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Old vs new default lr control (issue 15): river datasets over seeds, a long stationary stream,
time per event. Usage: python benchmarks/core_lr.py OLD_CHECKOUT NEW_CHECKOUT [datasets|long] [LR_CONTROL_FOR_NEW] [SEEDS a-b]
(e.g. `python benchmarks/core_lr.py /tmp/wt_base . datasets stream`: the old checkout's defaults
against this one's defaults with lr_control="stream"; seeds 0-9 for datasets, 0-2 for long)

Each checkout runs in its own subprocess (PYTHONPATH=checkout), one after the other."""
import json
import os
import statistics
import subprocess
import sys
import time

WORKER = r'''
import json, os, sys, time, itertools
import streamnn
_kw = {"lr_control": os.environ["SNN_LR_CONTROL"]} if os.environ.get("SNN_LR_CONTROL") else {}
from river import datasets, evaluate, metrics
from river.datasets import synth
task, seeds = sys.argv[1], [int(s) for s in sys.argv[2].split(",")]
out = {}
if task == "datasets":
    sets = [("Phishing", datasets.Phishing, "clf"), ("Bananas", datasets.Bananas, "clf"),
            ("ImageSegments", datasets.ImageSegments, "clf"), ("TrumpApproval", datasets.TrumpApproval, "reg")]
    for name, ds, kind in sets:
        vals, t, n = [], 0.0, 0
        for s in seeds:
            model = streamnn.MLPClassifier(seed=s, **_kw) if kind == "clf" else streamnn.MLPRegressor(seed=s, **_kw)
            metric = metrics.Accuracy() if kind == "clf" else metrics.MAE()
            t0 = time.perf_counter()
            vals.append(evaluate.progressive_val_score(ds(), model, metric).get())
            t += time.perf_counter() - t0
            n += model.n_seen_
        out[name] = dict(vals=vals, us_per_event=1e6 * t / n)
else:
    N = 20_000
    for name, kind in (("Agrawal(1) 20k", "clf"), ("Friedman 20k", "reg")):
        vals, lows, t, n, last = [], [], 0.0, 0, []
        for s in seeds:
            if kind == "clf":
                gen, model, metric = synth.Agrawal(classification_function=1, seed=s), streamnn.MLPClassifier(seed=s, **_kw), metrics.Accuracy()
            else:
                gen, model, metric = synth.Friedman(seed=s), streamnn.MLPRegressor(seed=s, **_kw), metrics.MAE()
            second = metric.clone()
            t0 = time.perf_counter()
            for i, (x, y) in enumerate(gen.take(N)):
                p = model.predict_one(x)
                if p is not None:
                    metric.update(y, p)
                    if i >= N // 2:
                        second.update(y, p)
                model.learn_one(x, y)
            t += time.perf_counter() - t0
            n += N
            vals.append([metric.get(), second.get()])
            lows.append(min(lr for _, lr in model.lr_history_) if model.lr_history_ else model.lr_)
            last.append(model.lr_)
        out[name] = dict(vals=vals, min_lr=lows, final_lr=last, us_per_event=1e6 * t / n,
                         history=model.lr_history_[:40])
print(json.dumps(out))
'''


def run(checkout, task, seeds, lr_control=""):
    env = dict(os.environ, PYTHONPATH=checkout, OMP_NUM_THREADS="1", SNN_LR_CONTROL=lr_control)
    r = subprocess.run([sys.executable, "-c", WORKER, task, ",".join(map(str, seeds))], env=env,
                       capture_output=True, text=True, check=True, cwd=checkout)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    old, new = sys.argv[1], sys.argv[2]
    task = sys.argv[3] if len(sys.argv) > 3 else "datasets"
    seeds = list(range(10)) if task == "datasets" else [0, 1, 2]
    lrc = sys.argv[4] if len(sys.argv) > 4 else ""
    if len(sys.argv) > 5:   # e.g. 10-19: seeds not used for choosing the defaults
        a, b = map(int, sys.argv[5].split("-"))
        seeds = list(range(a, b + 1))
    res = {"old": run(old, task, seeds), "new": run(new, task, seeds, lrc)}
    print(json.dumps(res))


if __name__ == "__main__":
    main()

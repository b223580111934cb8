"""MLPRegressor() time per event, checkouts interleaved event by event in one process (session 9).

    python benchmarks/reg_speed.py BASE_CHECKOUT OTHER_CHECKOUT [MORE ...] [--network-alone]

Each checkout's `streamnn` is linked into a temporary folder as `streamnn.c0`, `streamnn.c1`, ...
(names under `streamnn.` keep the learners' own checks of their module names true), and every
event is predicted and learned by each checkout's model in turn (rotating order), timed with the
thread's CPU time: a shared, loaded machine slows all of them alike, so the ratios hold where
separate runs of a few seconds each drift apart. TrumpApproval x3 and Friedman 5k, seeds 0-2, after
a warm-up of 300 events per checkout. `--network-alone`: also the second checkout with
`linear=False`.
"""
import os, statistics, sys, tempfile, time
import importlib

args = [a for a in sys.argv[1:] if not a.startswith("--")]
alone = "--network-alone" in sys.argv
tmp = tempfile.mkdtemp()
os.mkdir(os.path.join(tmp, "streamnn"))
open(os.path.join(tmp, "streamnn", "__init__.py"), "w").close()
for i, co in enumerate(args):
    os.symlink(os.path.join(os.path.abspath(co), "streamnn"), os.path.join(tmp, "streamnn", f"c{i}"))
sys.path.insert(0, tmp)
mods = [importlib.import_module(f"streamnn.c{i}") for i in range(len(args))]
for m in mods:
    m.set_threads(1)
from river import datasets  # noqa: E402
from river.datasets import synth  # noqa: E402

labels = [f"{i}: {co}" for i, co in enumerate(args)] + ([f"{1}: {args[1]} linear=False"] if alone else [])
for m in mods:
    w = m.MLPRegressor(seed=9)
    for x, y in list(datasets.TrumpApproval())[:300]:
        w.predict_one(x); w.learn_one(x, y)
for name, make in (("TrumpApproval x3", lambda s: list(datasets.TrumpApproval()) * 3),
                   ("Friedman 5k", lambda s: list(synth.Friedman(seed=s).take(5000)))):
    per = {k: [] for k in labels}
    for s in (0, 1, 2):
        stream = make(s)
        models = [m.MLPRegressor(seed=s) for m in mods] + ([mods[1].MLPRegressor(seed=s, linear=False)] if alone else [])
        tot = [0] * len(models)
        for i, (x, y) in enumerate(stream):
            for j in range(len(models)):
                k = (i + j) % len(models)
                m = models[k]
                t0 = time.thread_time_ns()
                m.predict_one(x)
                m.learn_one(x, y)
                tot[k] += time.thread_time_ns() - t0
        for k, lab in enumerate(labels):
            per[lab].append(tot[k] / len(stream) / 1e3)
    base = per[labels[0]]
    print(f"{name}: CPU us/event, seeds 0-2")
    for lab in labels:
        r = [a / b for a, b in zip(per[lab], base)]
        print(f"  {lab}: {[round(v) for v in per[lab]]}, ratio to the first {[round(v, 2) for v in r]}, mean {statistics.mean(r):.2f}")

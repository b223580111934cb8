"""Regressor defaults (issue 15, session 8): old vs new checkout on regression streams, seeds 0-2.
Usage: python benchmarks/reg_streams.py OLD_CHECKOUT NEW_CHECKOUT"""
# old (main) vs new on several regression streams, seeds 0-2, prequential MAE; each checkout in a subprocess
import json, os, subprocess, sys
WORKER = r'''
import json, sys, time, itertools, streamnn
from river import datasets, metrics
from river.datasets import synth
seeds=[int(s) for s in sys.argv[1].split(",")]
def gens(s):
    yield "Friedman 20k", synth.Friedman(seed=s).take(20000)
    yield "FriedmanDrift gra 20k", synth.FriedmanDrift(drift_type="gra", position=(5000, 12000), seed=s).take(20000)
    yield "FriedmanDrift lea 20k", synth.FriedmanDrift(drift_type="lea", position=(5000, 10000, 15000), seed=s).take(20000)
    oh = lambda x: {(f"{k}={v}" if isinstance(v, str) else k): (1.0 if isinstance(v, str) else v) for k, v in x.items()}
    yield "Mv 10k (strings one-hot)", ((oh(x), y) for x, y in synth.Mv(seed=s).take(10000))
    yield "Planes2D 10k", synth.Planes2D(seed=s).take(10000)
    yield "ChickWeights", iter(datasets.ChickWeights())
    yield "Friedman 10k, y*1000+1e5", ((x, 1000 * y + 1e5) for x, y in synth.Friedman(seed=s).take(10000))
out = {}
for s in seeds:
    for name, it in gens(s):
        m, mae, n = streamnn.MLPRegressor(seed=s), metrics.MAE(), 0
        t0 = time.process_time()
        for x, y in it:
            mae.update(y, m.predict_one(x)); m.learn_one(x, y); n += 1
        d = out.setdefault(name, {"vals": [], "t": 0.0, "n": 0})
        d["vals"].append(mae.get()); d["t"] += time.process_time() - t0; d["n"] += n
print(json.dumps(out))
'''
def run(co, seeds):
    env = dict(os.environ, PYTHONPATH=co, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", WORKER, ",".join(map(str, seeds))], env=env, capture_output=True, text=True, check=True, cwd=co)
    return json.loads(r.stdout.strip().splitlines()[-1])
old, new = run(sys.argv[1], [0, 1, 2]), run(sys.argv[2], [0, 1, 2])
print("| stream | old MAE (seeds 0-2) | new MAE | old mean | new mean | CPU us/event old / new |")
print("|---|---|---|---:|---:|---|")
for k in old:
    o, n = old[k], new[k]
    f = lambda v: ", ".join("%.4g" % x for x in v)
    print(f"| {k} | {f(o['vals'])} | {f(n['vals'])} | {sum(o['vals'])/3:.4g} | {sum(n['vals'])/3:.4g} | {1e6*o['t']/o['n']:.0f} / {1e6*n['t']/n['n']:.0f} |")

"""TrumpApproval only, core_lr.py's protocol. Usage: python benchmarks/reg_trump.py OLD NEW 0-9 [ROUNDS]"""
# core_lr.py's protocol, TrumpApproval only: old checkout vs new, each in its own subprocess
import json, os, subprocess, sys
WORKER = r'''
import json, sys, time, streamnn
from river import datasets, evaluate, metrics
seeds=[int(s) for s in sys.argv[1].split(",")]
vals, t, n = [], 0.0, 0
for s in seeds:
    model = streamnn.MLPRegressor(seed=s)
    t0 = time.perf_counter()
    vals.append(evaluate.progressive_val_score(datasets.TrumpApproval(), model, metrics.MAE()).get())
    t += time.perf_counter() - t0; n += model.n_seen_
print(json.dumps(dict(vals=vals, us_per_event=1e6*t/n)))
'''
def run(co, seeds):
    env = dict(os.environ, PYTHONPATH=co, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", WORKER, ",".join(map(str, seeds))], env=env, capture_output=True, text=True, check=True, cwd=co)
    return json.loads(r.stdout.strip().splitlines()[-1])
a, b = map(int, sys.argv[3].split("-"))
seeds = list(range(a, b + 1))
out = {}
for k in range(int(sys.argv[4]) if len(sys.argv) > 4 else 1):
    for lab, co in (("old", sys.argv[1]), ("new", sys.argv[2])):
        out.setdefault(lab, []).append(run(co, seeds))
for lab, rs in out.items():
    v = rs[0]["vals"]
    print(lab, "worst %.4f mean %.4f" % (max(v), sum(v)/len(v)), "us/event", [round(r["us_per_event"]) for r in rs])

"""python benchmarks/drift_kwargs.py CHECKOUT OUT.json SEEDS PEERS(0/1) [KWARGS_JSON]: benchmarks/drift.py's streams and run(),
streamnn MLPClassifier(seed=s, **kwargs) from CHECKOUT (and river's peers if PEERS)."""
import sys, json, time
checkout, out, nseeds, peers = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
kw = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
sys.path.insert(0, checkout); sys.path.insert(0, checkout + "/benchmarks")
import streamnn, drift
assert streamnn.__file__.startswith(checkout), streamnn.__file__
streamnn.set_threads(1)
res = {}
for name in drift.STREAMS:
    streams = [drift.STREAMS[name](s, 5000, 5000, 2000) for s in range(nseeds)]
    learners = {"streamnn": lambda s: streamnn.MLPClassifier(seed=s, **kw)}
    if peers:
        learners = {k: v for k, v in drift.LEARNERS.items() if not k.startswith("streamnn")}
    for lname, make in learners.items():
        t = time.time()
        res.setdefault(name, {})[lname] = [drift.run(make(s), st, 5000, 5000)[:2] for s, st in enumerate(streams)]
        print(name, lname, [round(r[1], 4) for r in res[name][lname]], round(time.time() - t), flush=True)
        json.dump(res, open(out, "w"))

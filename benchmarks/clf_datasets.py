"""python benchmarks/clf_datasets.py CHECKOUT LINEAR(0/1) SEEDS(a-b) DATASETS: prequential accuracy of MLPClassifier(seed=s[, linear=True]) from CHECKOUT on river datasets (worst, mean)."""
import sys, json, statistics as st
sys.path.insert(0, sys.argv[1])
import streamnn
from river import datasets, evaluate, metrics
streamnn.set_threads(1)
lin = sys.argv[2] == "1"; a, b = map(int, sys.argv[3].split("-")); sets = sys.argv[4].split(",")
for name in sets:
    vals = [evaluate.progressive_val_score(getattr(datasets, name)(), streamnn.MLPClassifier(seed=s, **({"linear": True} if lin else {})), metrics.Accuracy()).get() for s in range(a, b + 1)]
    print(json.dumps({"set": name, "linear": lin, "seeds": sys.argv[3], "worst": round(min(vals), 4), "mean": round(st.mean(vals), 4), "vals": [round(v, 4) for v in vals]}), flush=True)

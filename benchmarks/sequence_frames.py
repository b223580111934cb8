"""Frame-level learn_many of the sequence learners (issue 14): this checkout against another one
(the code before the change), in alternating child processes, one thread, on the same machine.

    python benchmarks/sequence_frames.py --old /path/to/old/checkout            # writes results
    python benchmarks/sequence_frames.py --old /path/to/old/checkout --quick
    python benchmarks/sequence_frames.py --child                                # one run, JSON

Workloads (the frames of benchmarks/gpu.py: 4 features, targets N(0, 1), hidden 32, defaults
otherwise), each a FIXED amount of work from a fresh model, predict_many then learn_many per frame:
- stateful LSTMRegressor, 1,024 interleaved keys (each frame holds every key once), frames of
  1,024 events (the bar of issue 14); the same at update_every=1024;
- stateful LSTMRegressor, one key (key=None), frames of 1,024;
- windowed LSTMRegressor (window 16), one key, frames of 1,024;
- MLPClassifier (hidden 64, 64), 16 features, frames of 256 (not touched by this change; a control).

A fixed workload, not a time budget: a stateful step re-runs each trained key's BPTT segment, so
the cost per event grows with the segments (up to `bptt` = 64); a faster learner given a time
budget would reach longer segments and be charged more per event. Results:
benchmarks/results/sequence_frames.md.
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parents[1]
N_KEYS = 1024


def lstm_frames(n_frames, seed=0):
    rng = np.random.default_rng(seed)
    vals = rng.normal(size=(4096, 4))
    out = []
    for k in range(n_frames):
        keys = np.arange(N_KEYS)
        f = pd.DataFrame(vals[(k * 64 + keys) % 4096], columns=["a", "b", "c", "d"])
        f["sensor"] = keys.astype(float)
        out.append((f, pd.Series(rng.normal(size=N_KEYS))))
    return out


def run(model, frames, drop=None):
    """(events per wall-clock second, events per second of this process's CPU time)."""
    frames = [(X.drop(columns=[drop]) if drop else X, y) for X, y in frames]
    t0, c0 = time.perf_counter(), time.process_time()
    for X, y in frames:
        model.predict_many(X)
        model.learn_many(X, y)
    n = sum(len(X) for X, _ in frames)
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def step_share(model, frames):
    """The fraction of predict_many + learn_many time spent inside the learner's `_step` (the
    torch forward, backward and optimizer step over the trained keys' BPTT segments), by cProfile."""
    import cProfile
    import pstats
    prof = cProfile.Profile()
    prof.enable()
    run(model, frames)
    prof.disable()
    stats = pstats.Stats(prof).stats
    total = sum(v[3] for k, v in stats.items() if k[2] in ("learn_many", "predict_many"))
    step = sum(v[3] for k, v in stats.items() if k[2] == "_step" and "seq" in k[0])
    return [step / total, step / total]


def child(n_frames):
    import streamnn
    from streamnn.sequence import LSTMRegressor
    streamnn.set_threads(1)
    frames = lstm_frames(n_frames)
    warm = [(X.iloc[:64], y.iloc[:64]) for X, y in frames[:2]]   # one-time torch set-up, not timed
    run(LSTMRegressor(seed=0, hidden_size=32, key="sensor", update_every=8), warm)
    res = {"streamnn": str(Path(streamnn.__file__).parent.parent)}
    res["stateful, 1,024 interleaved keys"] = run(LSTMRegressor(seed=0, hidden_size=32, key="sensor"), frames)
    res["share of the keyed run in the optimizer step"] = step_share(LSTMRegressor(seed=0, hidden_size=32,
                                                                                   key="sensor"), frames)
    res["stateful, 1,024 interleaved keys, update_every=1024"] = run(
        LSTMRegressor(seed=0, hidden_size=32, key="sensor", update_every=1024), frames)
    res["stateful, one key"] = run(LSTMRegressor(seed=0, hidden_size=32), frames[: max(2, n_frames // 4)], "sensor")
    res["windowed (16), one key"] = run(LSTMRegressor(seed=0, hidden_size=32, stateful=False),
                                        frames[: max(2, n_frames // 4)], "sensor")
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(256 * 200, 16)), columns=[f"f{i}" for i in range(16)])
    y = pd.Series(X.to_numpy() @ rng.normal(size=16) > 0)
    mlp = [(X.iloc[k:k + 256], y.iloc[k:k + 256]) for k in range(0, len(X), 256)]
    res["MLPClassifier batch 256 (control)"] = run(
        streamnn.MLPClassifier(seed=0, hidden=(64, 64), update_every=256, batch_size=256, warmup=0, replay=0.0), mlp)
    return res


def spawn(path, n_frames):
    env = dict(os.environ, PYTHONPATH=str(path), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, __file__, "--child", "--frames", str(n_frames)], env=env,
                         capture_output=True, text=True, check=True, cwd="/")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write(path, args, runs, elapsed):
    names = [k for k in runs[0]["new"] if k != "streamnn"]
    L = ["# Frame-level learn_many of the sequence learners (issue 14)", "",
         f"Command: `python benchmarks/sequence_frames.py --old {args.old}{' --quick' if args.quick else ''}`. "
         f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs, one torch and one BLAS thread. "
         f"The old code ({runs[0]['old']['streamnn']}) and this checkout run in alternating child processes, "
         f"{len(runs)} rounds; {args.frames} frames of 1,024 events from a fresh model for the keyed workloads "
         f"(a quarter for the one-key ones). Events per second of wall-clock time and of the process's CPU "
         f"time (steadier on a shared machine), per round; the ratio is new / old within a round, worst and "
         f"median over rounds. Took {elapsed:.0f} s.", "",
         "| workload | old events/s, wall (rounds) | new events/s, wall (rounds) | new / old wall, worst | median "
         "| new / old CPU time, worst | median |", "|---|---|---|---|---|---|---|"]
    shares = [n for n in names if n.startswith("share")]
    names = [n for n in names if n not in shares]
    for n in names:
        old = [r["old"][n] for r in runs]
        new = [r["new"][n] for r in runs]
        wall = [b[0] / a[0] for a, b in zip(old, new)]
        cpu = [b[1] / a[1] for a, b in zip(old, new)]
        L.append(f"| {n} | {', '.join(f'{v[0]:,.0f}' for v in old)} | {', '.join(f'{v[0]:,.0f}' for v in new)} | "
                 f"{min(wall):.2f} | {statistics.median(wall):.2f} | {min(cpu):.2f} | {statistics.median(cpu):.2f} |")
    for n in shares:
        old = [r["old"][n][0] for r in runs]
        new = [r["new"][n][0] for r in runs]
        L += ["", f"Share of the stateful, 1,024-key run (predict_many + learn_many, cProfile) spent in the "
                  f"optimizer step (`_step`: torch forward and backward over the trained keys' BPTT segments, "
                  f"clipping, Adam): old {min(old):.0%}-{max(old):.0%}, new {min(new):.0%}-{max(new):.0%}. "
                  "The frame path removes the per-row Python around the steps; the steps themselves (32 per "
                  "frame of 1,024 events at update_every=32, each re-running 32 keys' segments) are the "
                  "ceiling on the CPU."]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(L) + "\n")
    print("\n".join(L))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--old", type=Path, help="checkout of the code to compare against")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args()
    args.frames = args.frames or (4 if args.quick else 16)
    if args.child:
        print(json.dumps(child(args.frames)))
        return
    rounds = args.rounds or (1 if args.quick else 3)
    t0, runs = time.perf_counter(), []
    for i in range(rounds):
        first, second = (("old", args.old), ("new", ROOT)) if i % 2 == 0 else (("new", ROOT), ("old", args.old))
        r = {first[0]: spawn(first[1], args.frames)}
        r[second[0]] = spawn(second[1], args.frames)
        runs.append(r)
        print(i, json.dumps(r), flush=True)
    write(ROOT / "benchmarks" / "results" / "sequence_frames.md", args, runs, time.perf_counter() - t0)


if __name__ == "__main__":
    main()

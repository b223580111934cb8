"""The runtime's own overhead: `streamnn replay` against the learner alone, on the same batches.

For each bundled pipeline, in one process and one run:

* runtime: `streamnn replay FILE --config pipelines/<name>.toml` (in process: `cli.main`), which
  reads the file, decodes and validates every line, predicts, emits JSON lines, learns, measures
  the post-update loss, keeps metrics and checkpoints (no report);
* direct: the learner's `predict_many` (or `predict_proba_many` / `score_many`) and `learn_many`
  on the very same batches, prepared beforehand as DataFrames (not timed).

Both start from a fresh learner; the two alternate `--repeats` times and the median of each is
reported. Overhead = 1 - runtime events/s / direct events/s (the bar, issue 16: under 15 %).

    python benchmarks/runtime.py [--repeats 3] [--copies 4] [--out benchmarks/results/runtime.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import streamnn  # noqa: E402
from streamnn.runtime import cli  # noqa: E402
from streamnn.runtime.config import load_config, resolve_learner  # noqa: E402
from streamnn.runtime.pipeline import make_decoder  # noqa: E402
from streamnn.runtime.sources import FileSource  # noqa: E402
from streamnn.runtime.state import Lags  # noqa: E402
from streamnn.runtime.process import features  # noqa: E402
from streamnn.runtime.tasks import task_for  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def phishing_jsonl(path: str, copies: int) -> str:
    from river import datasets

    with open(path, "w") as f:
        i = 0
        for _ in range(copies):
            for x, y in datasets.Phishing():
                f.write(json.dumps({"id": i, **x, "y": y}) + "\n")
                i += 1
    return path


def repeated_csv(src: str, path: str, copies: int) -> str:
    with open(src) as f:
        header, *rows = f.read().splitlines()
    with open(path, "w") as f:
        f.write(header + "\n" + ("\n".join(rows) + "\n") * copies)
    return path


def batches(cfg, data: str):
    """The batches the runtime's loop hands to the learner, built the same way, as the learner's
    own arguments: (X, y) with y a Series (a DataFrame for several targets; None for detectors)."""
    import pandas as pd

    cls = resolve_learner(cfg.learner["class"])
    task = task_for(cls(**cfg.learner["params"]))
    src = FileSource(data)
    dec = make_decoder(cfg, src, task.target_kind)
    sch = cfg.schema
    lags = Lags(sch["lag_fields"] or sch["features"], sch["lags"]) if sch["lags"] else None
    out = []
    while not src.exhausted:
        batch, _ = dec.decode_batch(src.poll(cfg.run["batch_size"]))
        if not len(batch):
            continue
        X, ys = features(batch, lags, dec), batch.ys
        y = None if task.kind == "anomaly" else (pd.DataFrame(ys) if task.kind == "multi_target" else pd.Series(ys))
        out.append((X, y))
    return task, out


def direct(cfg, task, prepared):
    """(wall, CPU) seconds of the learner's own calls on the prepared batches (fresh learner):
    predict_proba_many / predict_many / score_many, then learn_many."""
    learner = resolve_learner(cfg.learner["class"])(**cfg.learner["params"])
    predict = {"classification": "predict_proba_many", "anomaly": "score_many"}.get(task.kind, "predict_many")
    predict = getattr(learner, predict)
    t0, c0 = time.perf_counter(), time.process_time()
    for X, y in prepared:
        predict(X)
        if y is None:
            learner.learn_many(X)
        else:
            learner.learn_many(X, y)
    return time.perf_counter() - t0, time.process_time() - c0


def runtime(config_path: str, data: str, out: str):
    """(wall, CPU) seconds of a whole `streamnn replay` (in process)."""
    t0, c0 = time.perf_counter(), time.process_time()
    rc = cli.main(["replay", data, "--config", config_path, "--out", out, "--no-report", "--quiet"])
    assert rc == 0
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--copies", type=int, default=4, help="how many times each stream is repeated")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "runtime.md"))
    args = ap.parse_args(argv)
    streamnn.set_threads(1)
    tmp = tempfile.mkdtemp(prefix="streamnn-bench-")
    data_dir = os.path.join(ROOT, "streamnn", "data")
    cases = [
        ("phishing_classification", phishing_jsonl(os.path.join(tmp, "phishing.jsonl"), args.copies * 8)),
        ("sensor_anomaly", repeated_csv(os.path.join(data_dir, "machine_temperature.csv"),
                                        os.path.join(tmp, "machine_temperature.csv"), args.copies)),
        ("sensor_forecast", repeated_csv(os.path.join(data_dir, "demo_sensors.csv"),
                                         os.path.join(tmp, "demo_sensors.csv"), args.copies)),
    ]
    rows = []
    for name, data in cases:
        cfg_path = os.path.join(ROOT, "pipelines", f"{name}.toml")
        cfg = load_config(cfg_path)
        try:
            task, prepared = batches(cfg, data)
        except Exception as e:  # noqa: BLE001 - a pipeline whose learner is missing is reported
            print(f"{name}: skipped ({e})", file=sys.stderr)
            continue
        n = sum(len(b[0]) for b in prepared)
        direct(cfg, task, prepared[:2])                         # warm-up (torch's lazy imports)
        rt, dt = [], []
        for _ in range(args.repeats):
            dt.append(direct(cfg, task, prepared))
            rt.append(runtime(cfg_path, data, os.path.join(tmp, name)))
        r, d = statistics.median(t[0] for t in rt), statistics.median(t[0] for t in dt)
        rc, dc = statistics.median(t[1] for t in rt), statistics.median(t[1] for t in dt)
        rows.append({"pipeline": name, "learner": cfg.learner["class"], "events": n,
                     "batch": cfg.run["batch_size"], "direct_eps": n / d, "runtime_eps": n / r,
                     "overhead": 1 - d / r, "cpu_overhead": 1 - dc / rc,
                     "runtime_us_per_event": 1e6 * (rc - dc) / n})
        print(json.dumps(rows[-1]), file=sys.stderr)
    write(args, rows)


def write(args, rows):
    cmd = "python benchmarks/runtime.py" + (f" --repeats {args.repeats}" if args.repeats != 3 else "") + \
          (f" --copies {args.copies}" if args.copies != 4 else "")
    lines = [
        "## Runtime overhead: `streamnn replay` vs. the learner alone", "",
        f"Command: `{cmd}`. Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores shared with other work, one torch thread, Python {platform.python_version()}, "
        f"torch {torch.__version__}. Medians of {args.repeats} alternating runs; each run starts "
        "from a fresh learner. Other processes loaded the machine: compare the ratio in a row, "
        f"not absolute numbers across rows or runs (load average at the end: "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores).", "",
        "*direct*: `predict_many`/`predict_proba_many`/`score_many` + `learn_many` on the same "
        "batches, prepared as DataFrames beforehand (untimed). *runtime*: the whole `streamnn "
        "replay` (read, decode and validate each line, predict, write JSON lines, learn, "
        "post-update loss, metrics, checkpoints). Overhead = 1 - direct time / runtime time, on "
        "wall-clock time and on this process's CPU time (less disturbed by the other processes); "
        "the last column is the runtime's own CPU cost per event.", "",
        "| pipeline | learner | events | batch | direct events/s | runtime events/s | overhead (wall) "
        "| overhead (CPU) | runtime µs/event (CPU) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['pipeline']} | {r['learner']} | {r['events']:,} | {r['batch']} | "
                     f"{r['direct_eps']:,.0f} | {r['runtime_eps']:,.0f} | {100 * r['overhead']:.1f} % | "
                     f"{100 * r['cpu_overhead']:.1f} % | {r['runtime_us_per_event']:.1f} |")
    lines += ["", "Bar (issue 16): the runtime costs under 15 % of the learner's own throughput."]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Frame-level speed of `AutoencoderDetector`: `score_many` then `learn_many` over frames of events.

Each stream is cut into frames of `--frame` events (1,024 by default); per frame the detector
scores the frame (`score_many`), then learns it (`learn_many`), one detector per stream with its
defaults. The old code (`--baseline`, an older streamnn package directory, loaded under another
name) runs the same frames in the same process, interleaved stream by stream, so the ratio is
measured under the same load. events/s are by CPU time of this process (one thread).

The new code runs twice: with its defaults, and with `alarm_params={"context": False}` (the error
alone, the evidence the old default computed: since session 7 the default adds the change size and
the seasonal distance on a one value stream, more work per event than before). The second ratio
compares the same work.

Streams: NAB's `realKnownCause/machine_temperature_system_failure.csv` (22,695 events, one value:
the detector's series path) and the synthetic 8-sensor stream of benchmarks/anomaly.py (20,000
events).

Usage (from the repository root)::

    python benchmarks/anomaly_frames.py --baseline /work/main/streamnn

Writes benchmarks/results/anomaly_frames.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
torch.set_num_threads(1)

NAB_DIR = Path(os.environ.get("NAB_DIR", ROOT.parent / "shared" / "datasets" / "nab"))


def streams():
    from anomaly import synth_stream
    df = pd.read_csv(NAB_DIR / "data" / "realKnownCause" / "machine_temperature_system_failure.csv")
    nab = pd.DataFrame({"value": df["value"].to_numpy(np.float64)})
    S, _, _ = synth_stream()
    synth = pd.DataFrame(S, columns=[f"s{j}" for j in range(S.shape[1])]).astype(np.float64)
    return {"NAB machine_temperature (1 value)": nab, "synthetic 8 sensors": synth}


def run(cls, X: pd.DataFrame, frame: int):
    """(events/s by CPU time, wall time, scores) of score_many then learn_many per frame."""
    model = cls(seed=0)
    out = []
    c, t = time.process_time(), time.perf_counter()
    for a in range(0, len(X), frame):
        F = X.iloc[a:a + frame]
        out.append(model.score_many(F).to_numpy())
        model.learn_many(F)
    c, t = time.process_time() - c, time.perf_counter() - t
    return len(X) / c, len(X) / t, np.concatenate(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frame", type=int, default=1024)
    ap.add_argument("--baseline", default=None, help="an older streamnn package directory")
    ap.add_argument("--repeats", type=int, default=2, help="runs per stream and code (the best is kept)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "anomaly_frames.md"))
    args = ap.parse_args()
    import streamnn
    import functools
    codes = {"new": streamnn.AutoencoderDetector,
             "same": functools.partial(streamnn.AutoencoderDetector, alarm_params={"context": False})}
    if args.baseline:
        tmp = tempfile.mkdtemp(prefix="streamnn_baseline_")
        shutil.copytree(args.baseline, Path(tmp) / "streamnn_baseline")
        sys.path.insert(0, tmp)
        import streamnn_baseline
        codes["old"] = streamnn_baseline.AutoencoderDetector
    for cls in codes.values():   # torch's one-time start-up costs, before any timing
        run(cls, pd.DataFrame({"value": np.sin(np.arange(600) / 9.0)}), 256)
    rows = []
    for name, X in streams().items():
        res = {k: [] for k in codes}
        for _ in range(args.repeats):
            for k, cls in codes.items():
                res[k].append(run(cls, X, args.frame))
        best = {k: max(r, key=lambda v: v[0]) for k, r in res.items()}
        ratio = best["new"][0] / best["old"][0] if "old" in best else float("nan")
        same = best["same"][0] / best["old"][0] if "old" in best else float("nan")
        rows.append((name, len(X), best, ratio, same))
        print(name, {k: round(v[0]) for k, v in best.items()}, f"ratio {ratio:.2f} same {same:.2f}", flush=True)
    lines = ["## AutoencoderDetector: score_many + learn_many over frames", "",
             f"Frames of {args.frame} events; per frame `score_many(frame)` then `learn_many(frame)`; defaults, "
             f"seed 0; events/s by CPU time of one process, one thread (best of {args.repeats}, old and new "
             f"interleaved in the same process). Command: `python benchmarks/anomaly_frames.py"
             f"{' --baseline ' + args.baseline if args.baseline else ''}`; {platform.machine()}, shared CPU.", "",
             "| stream | events | new, defaults (events/s) | new, `context=False` | old (events/s) | "
             "new / old | new `context=False` / old |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, n, best, ratio, same in rows:
        old = f"{best['old'][0]:,.0f}" if "old" in best else "-"
        lines.append(f"| {name} | {n:,} | {best['new'][0]:,.0f} | {best['same'][0]:,.0f} | {old} | {ratio:.2f}x | "
                     f"{same:.2f}x |")
    lines += ["", "Bar (issue 14, for the detector): new / old >= 3x. The old code loops over rows in both calls.", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""`streamnn report RUN_DIR`: PNG plots of a run, from its ``metrics.jsonl`` and predictions.

Written to ``RUN_DIR/report/``:

- ``prequential.png``: the test-then-train loss over time (and the loss of the same batches after
  their update, and the accuracy for classifiers; the training loss for detectors);
- ``lr.png``: the learning rate over time;
- ``throughput.png``: events per second over time;
- ``scores.png`` (detectors): the anomaly scores with the threshold, flagged events and labels,
  when the run dir holds the predictions (else ``index.md`` says where the outputs went);
- ``index.md``: the run's totals and links to the plots.

The x axis is the event time when the schema has a timestamp (else the event count); titles name
the metric and its window (each point is the mean over one metrics window of events); legends
sit beside the plot, never over the data.

Plots use matplotlib's Agg canvas directly (no display, no global pyplot state).
"""

from __future__ import annotations

import json
import math
import os

__all__ = ["write_report", "read_jsonl"]

MAX_POINTS = 50_000


def read_jsonl(path) -> list:
    """Rows of a JSON-lines file; a torn last line (a crash mid-write) is ignored."""
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def _figure(title: str, xlabel: str = "events", ylabel: str = ""):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    fig.streamnn_time_axis = xlabel == "event time"
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _save(fig, path: str) -> str:
    if getattr(fig, "streamnn_time_axis", False):
        fig.autofmt_xdate()   # slanted dates that do not overlap
    fig.tight_layout()
    fig.savefig(path)
    return path


def _series(rows: list, key: str):
    pts = [(r["_x"], r[key]) for r in rows if r.get(key) is not None and _finite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def _times(values: list):
    """Event times as datetimes (ISO strings, or epoch seconds / milliseconds), or None when
    they are missing or unreadable."""
    if not values or any(v is None for v in values):
        return None
    import pandas as pd

    try:
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            unit = "ms" if max(values) > 1e11 else "s"
            t = pd.to_datetime(values, unit=unit)
        else:
            t = pd.to_datetime(values, format="mixed")
        t = t.as_unit("ns")   # years 1677-2262: beyond, the plots cannot draw them (a hostile time)
        return None if t.isna().any() else list(t.to_pydatetime())
    except (ValueError, TypeError, OverflowError):
        return None


def _x_axis(rows: list) -> str:
    """Set each row's "_x" (event time, else event count); returns the axis label."""
    t = _times([r.get("event_time") for r in rows])
    for r, x in zip(rows, t or [r["events"] for r in rows]):
        r["_x"] = x
    return "event time" if t else "events"


def _step(rows: list) -> int:
    """The metrics window (events between rows; the median, a resumed run may shift one)."""
    steps = sorted(b["events"] - a["events"] for a, b in zip(rows, rows[1:]))
    return steps[len(steps) // 2] if steps else rows[-1]["events"]


def _window(rows: list) -> str:
    return f"mean over windows of ~{_step(rows):,} events"


def _legend(ax, **kw):
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0, **kw)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _plot_prequential(rows, task, out, xlabel):
    if task == "anomaly":   # a detector has no prequential loss: its last training loss per window
        title = f"Training loss of the detector (last step of each metrics window of ~{_step(rows):,} events)"
    else:
        name = {"classification": "log loss", "multi_label": "binary log loss (mean over the labels)"}.get(task, "squared error")
        title = f"Prequential (test-then-train) {name}, {_window(rows)}"
    fig, ax = _figure(title, xlabel=xlabel, ylabel="loss")
    drawn = False
    for key, label in (("loss", "prequential loss"), ("post_update_loss", "loss after the update"),
                       ("train_loss", "training loss (new samples, before the step)")):
        x, y = _series(rows, key)
        if x and (key != "train_loss" or task == "anomaly" or not drawn):
            ax.plot(x, y, label=label)
            drawn = True
    share = "exact_match" if task == "multi_label" else "accuracy"   # every label right
    x, y = _series(rows, share)
    if x:
        ax2 = ax.twinx()
        ax2.plot(x, y, color="tab:green", label=share.replace("_", " "))
        ax2.set_ylabel(share.replace("_", " "))
        ax2.legend(loc="lower left", bbox_to_anchor=(1.08, 0.0), fontsize=8, borderaxespad=0)
    if drawn:
        ax.legend(loc="upper left", bbox_to_anchor=(1.08 if x else 1.01, 1.0), fontsize=8, borderaxespad=0)
    else:
        ax.text(0.5, 0.5, "no loss recorded", ha="center", transform=ax.transAxes)
    return _save(fig, os.path.join(out, "prequential.png"))


def _plot_simple(rows, key, title, ylabel, path, xlabel, log=False):
    fig, ax = _figure(title, xlabel=xlabel, ylabel=ylabel)
    x, y = _series(rows, key)
    if x:
        ax.plot(x, y, drawstyle="steps-post" if key == "lr" else "default")
        if log and min(y) > 0:
            ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, f"no {ylabel} recorded", ha="center", transform=ax.transAxes)
    return _save(fig, path)


def _plot_scores(preds, out):
    scored = [p for p in preds if _finite(p.get("score"))]
    t = _times([p.get("timestamp") for p in scored])
    X = t or list(range(len(scored)))
    fig, ax = _figure("Anomaly scores (each event)", xlabel="event time" if t else "event", ylabel="score")
    step = max(1, len(scored) // MAX_POINTS)
    idx = list(range(0, len(scored), step))
    ax.plot([X[i] for i in idx], [scored[i]["score"] for i in idx], lw=0.6, label="score")
    thr = [(X[i], p["threshold"]) for i, p in enumerate(scored) if _finite(p.get("threshold"))]
    if thr:
        ax.plot([a for a, _ in thr[::step]], [b for _, b in thr[::step]], color="tab:orange",
                lw=1.0, label="threshold")
    flagged = [i for i, p in enumerate(scored) if p.get("anomaly")]
    if flagged:
        ax.scatter([X[i] for i in flagged], [scored[i]["score"] for i in flagged], s=12, color="tab:red",
                   zorder=3, label=f"flagged ({len(flagged)})")
    labelled = [i for i, p in enumerate(scored) if p.get("label") not in (None, 0, 0.0, False)]
    if labelled:
        for a, b in _runs(labelled):
            ax.axvspan(X[a], X[min(b + 1, len(X) - 1)], color="tab:purple", alpha=0.15, lw=0)
        ax.axvspan(X[0], X[0], color="tab:purple", alpha=0.15, label="labelled anomaly")
    if scored and min(p["score"] for p in scored) > 0:
        ax.set_yscale("log")
    _legend(ax)
    return _save(fig, os.path.join(out, "scores.png"))


def _runs(indices):
    start = prev = indices[0]
    for i in indices[1:]:
        if i != prev + 1:
            yield start, prev
            start = i
        prev = i
    yield start, prev


def _dedupe(preds: list) -> list:
    """Drop outputs repeated after a crash (same position), keeping the last one."""
    seen = {}
    for p in preds:
        seen[json.dumps(p.get("position"), sort_keys=True)] = p
    return list(seen.values())


def write_report(run_dir, predictions: str | None = None) -> list:
    """Write the plots of `run_dir` into ``run_dir/report``; returns the files written."""
    run_dir = os.fspath(run_dir)
    rows = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    if not rows:
        raise FileNotFoundError(f"{run_dir} holds no metrics.jsonl; run a pipeline with "
                                "run.dir pointing there first (streamnn run CONFIG)")
    summary = {}
    if os.path.exists(os.path.join(run_dir, "metrics.json")):
        with open(os.path.join(run_dir, "metrics.json")) as f:
            summary = json.load(f)
    task = summary.get("task")
    out = os.path.join(run_dir, "report")
    os.makedirs(out, exist_ok=True)
    xlabel = _x_axis(rows)
    files = [_plot_prequential(rows, task, out, xlabel),
             _plot_simple(rows, "lr", "Learning rate (at the end of each metrics window)", "learning rate",
                          os.path.join(out, "lr.png"), xlabel, log=True),
             _plot_simple(rows, "events_per_s", f"Throughput (events/s, {_window(rows)})", "events / s",
                          os.path.join(out, "throughput.png"), xlabel)]
    notes = []
    if task == "anomaly":
        path = predictions or os.path.join(run_dir, "predictions.jsonl")
        preds = _dedupe(read_jsonl(path))
        if preds:
            files.append(_plot_scores(preds, out))
        else:
            notes.append(f"No anomaly-score plot: {path} holds no outputs (the run's outputs went to another "
                         "sink, e.g. a Kafka topic); `streamnn report RUN_DIR --predictions FILE` plots a "
                         "file of them.")
    files.append(_index(summary, files, out, notes))
    return files


def _index(summary: dict, files: list, out: str, notes: list = ()) -> str:
    lines = ["# Run report", ""]
    for k in ("task", "events_in", "events_out", "learned", "dead_letters", "anomalies",
              "prequential_loss", "accuracy", "exact_match", "events_per_s", "checkpoints"):
        if summary.get(k) is not None:
            v = summary[k]
            lines.append(f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}")
    for cls, n in sorted((summary.get("dead_letters_by_class") or {}).items()):
        lines.append(f"  - dead letters `{cls}`: {int(n)}")
    lines.append("")
    lines += [f"{n}\n" for n in notes]
    lines += [f"![{os.path.basename(f)}]({os.path.basename(f)})" for f in files]
    path = os.path.join(out, "index.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path

"""Run metrics: Prometheus gauges and counters, a time series for reports, and the progress line.

`RunMetrics` keeps its own Prometheus registry (several runs in one process never clash); with a
`port` it serves it over HTTP (``/metrics``) for a long-running service. Every `every` events it
appends a row to ``<run dir>/metrics.jsonl`` (what `streamnn report` plots), and at the end it
writes ``metrics.json`` with the totals.

>>> m = RunMetrics()
>>> m.dead_letter("not JSON")
>>> m.prom["dead_letters"].labels("not JSON")._value.get()
1.0
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["RunMetrics", "progress_line", "log_line", "write_log", "JsonLogHandler"]

_LATENCY = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def _prometheus(registry) -> dict:
    p = "streamnn_"
    return {
        "events_in": Counter(p + "events_in", "Records read from the source", registry=registry),
        "events_out": Counter(p + "events_out", "Predictions and scores emitted", registry=registry),
        "learned": Counter(p + "events_learned", "Events learned", registry=registry),
        "dead_letters": Counter(p + "dead_letters", "Records sent to the dead letters", ["reason"],
                                registry=registry),
        "anomalies": Counter(p + "anomalies", "Events flagged as anomalies", registry=registry),
        "loss": Gauge(p + "prequential_loss", "Mean test-then-train loss of the last batch",
                      registry=registry),
        "post_loss": Gauge(p + "post_update_loss", "Loss of the last batch after learning it "
                           "(well below the prequential loss: overfitting)", registry=registry),
        "lr": Gauge(p + "learning_rate", "Current learning rate", registry=registry),
        "predict_s": Histogram(p + "predict_seconds", "Predict/score time per batch", buckets=_LATENCY,
                               registry=registry),
        "learn_s": Histogram(p + "learn_seconds", "Learn time per batch", buckets=_LATENCY,
                             registry=registry),
        "checkpoint_age": Gauge(p + "checkpoint_age_seconds", "Seconds since the last checkpoint",
                                registry=registry),
        "lag": Gauge(p + "lag", "Records behind the end of the source (Kafka)", registry=registry),
    }


class RunMetrics:
    """Collects what the loop reports; see the module docstring.

    Parameters
    ----------
    run_dir
        Where ``metrics.jsonl`` and ``metrics.json`` go (None: nowhere).
    port
        Serve Prometheus metrics on this port (None: no server; 0: any free port, see `port_`).
    every
        Events between two rows of the time series.
    progress
        A callable receiving a snapshot dict at most every `progress_every_s` seconds.
    """

    def __init__(self, run_dir=None, port: int | None = None, every: int = 1000, progress=None,
                 progress_every_s: float = 0.5, append: bool = False):
        self.registry = CollectorRegistry()
        self.prom = _prometheus(self.registry)
        self.run_dir, self.every, self.progress = run_dir, every, progress
        self.progress_every_s = progress_every_s
        self.port_ = None
        self._server = None
        if port is not None:
            self._server, _ = start_http_server(port, registry=self.registry)
            self.port_ = self._server.server_port
        self._series = None
        if run_dir is not None:
            os.makedirs(run_dir, exist_ok=True)
            self._series = open(os.path.join(run_dir, "metrics.jsonl"), "a" if append else "w")
        self._last_ckpt = time.monotonic()
        self.prom["checkpoint_age"].set_function(lambda: time.monotonic() - self._last_ckpt)
        self._t0 = time.monotonic()
        self._row_t, self._row_events = self._t0, 0
        self._acc = dict(post=0.0, post_n=0, learn_s=0.0, predict_s=0.0)
        self._prev, self._unit, self._events = {}, None, 0
        self._last_progress = 0.0
        self._lag_t, self.lag = 0.0, None
        self._done0 = None
        self.last = {}

    def batch(self, runner, unit, n_in: int, n_out: int, n_learned: int, n_anomalies: int,
              losses: list, post: float, predict_s: float, learn_s: float) -> None:
        """Called by the loop after each batch of a unit."""
        p, a = self.prom, self._acc
        p["events_in"].inc(n_in)
        p["events_out"].inc(n_out)
        p["learned"].inc(n_learned)
        if n_anomalies:
            p["anomalies"].inc(n_anomalies)
        self._events += n_in
        p["predict_s"].observe(predict_s)
        p["learn_s"].observe(learn_s)
        a["predict_s"] += predict_s
        a["learn_s"] += learn_s
        if losses:
            p["loss"].set(sum(losses) / len(losses))
        if not math.isnan(post):
            p["post_loss"].set(post)
            a["post"] += post
            a["post_n"] += 1
        lr = getattr(unit.learner, "lr_", None)
        if lr is not None:
            p["lr"].set(lr)
        self._unit = unit
        if self._events - self._row_events >= self.every:
            self._row(runner, runner.totals(), lr)
        if self.progress is not None:
            now = time.monotonic()
            if now - self._last_progress >= self.progress_every_s:
                self._last_progress = now
                self.progress(self.snapshot(runner))

    def _row(self, runner, totals: dict, lr) -> None:
        now, a, prev = time.monotonic(), self._acc, self._prev
        n = totals["events_in"] - prev.get("events_in", 0)
        n_loss = totals["loss_n"] - prev.get("loss_n", 0)
        row = {"events": totals["events_in"], "elapsed_s": round(now - self._t0, 4),
               "events_per_s": n / max(now - self._row_t, 1e-9),
               "loss": (totals["loss_sum"] - prev.get("loss_sum", 0)) / n_loss if n_loss else None,
               "post_update_loss": a["post"] / a["post_n"] if a["post_n"] else None,
               "train_loss": _num(getattr(self._unit.learner, "last_loss_", None)) if self._unit else None,
               "event_time": getattr(self._unit, "last_time", None),
               "lr": lr, "anomalies": totals["anomalies"], "dead_letters": totals["dead_letters"],
               "learn_s": a["learn_s"], "predict_s": a["predict_s"]}
        if self._unit is not None and self._unit.task.kind in _CORRECT and n_loss:
            row[_CORRECT[self._unit.task.kind]] = (totals["correct"] - prev.get("correct", 0)) / n_loss
        self.last = row
        if self._series is not None:
            self._series.write(json.dumps(row) + "\n")
            self._series.flush()
        self._row_t, self._row_events, self._prev = now, totals["events_in"], dict(totals)
        self._events = totals["events_in"]
        self._acc = dict(post=0.0, post_n=0, learn_s=0.0, predict_s=0.0)

    def start(self, runner) -> None:
        """Start the clocks and the time series from the totals a resumed run already holds."""
        totals = runner.totals()
        self._t0 = self._row_t = time.monotonic()
        self._prev, self._row_events = dict(totals), totals["events_in"]
        self._events = totals["events_in"]
        self._done0 = _progress(runner.source)   # a resumed file starts part-way

    def dead_letter(self, reason_class: str) -> None:
        self.prom["dead_letters"].labels(reason_class).inc()

    def checkpointed(self) -> None:
        self._last_ckpt = time.monotonic()

    def snapshot(self, runner, totals: dict | None = None) -> dict:
        """What the progress line and the structured log show."""
        totals = totals or runner.totals()
        now = time.monotonic()
        elapsed = now - self._t0
        src = runner.source
        if hasattr(src, "lag") and now - self._lag_t > 5.0:
            self._lag_t = now
            try:
                self.lag = sum(src.lag().values())
                self.prom["lag"].set(self.lag)
            except Exception:   # noqa: BLE001 - a lag query must never stop the loop
                self.lag = None
        unit, pos = self._unit, None
        if unit is not None and unit.positions:
            pos = unit.positions[max(unit.positions)]
        loss = self.prom["loss"]._value.get()
        done, eta = self._eta(src, elapsed)
        return {"events": totals["events_in"], "done": done, "eta_s": eta,
                "events_per_s": runner.n_read / max(elapsed, 1e-9),   # as in the summary
                "elapsed_s": elapsed, "position": pos, "lag": self.lag,
                "loss": None if not totals["loss_n"] else loss,
                "lr": getattr(unit.learner, "lr_", None) if unit is not None else None,
                "anomalies": totals["anomalies"], "dead_letters": totals["dead_letters"],
                "checkpoints": runner.n_checkpoints}

    def _eta(self, src, elapsed: float) -> tuple:
        """(fraction of a finite source done, seconds left at the rate so far), or Nones."""
        done = _progress(src)
        if done is None:
            return None, None
        moved = done - (self._done0 or 0.0)
        return done, (elapsed * (1.0 - done) / moved if moved > 0 else None)

    def finish(self, runner) -> dict:
        """Write the last row and ``metrics.json``; returns the summary."""
        totals = runner.totals()
        if totals["events_in"] > self._row_events or not self.last:
            lr = getattr(self._unit.learner, "lr_", None) if self._unit is not None else None
            self._row(runner, totals, lr)
        summary = summarize(runner, totals, time.monotonic() - self._t0)
        summary["dead_letters_by_class"] = {
            s.labels["reason"]: s.value for m in self.registry.collect()
            if m.name == "streamnn_dead_letters" for s in m.samples if s.name.endswith("_total")}
        if self.run_dir is not None:
            with open(os.path.join(self.run_dir, "metrics.json"), "w") as f:
                json.dump(summary, f, indent=2)
        if self._series is not None:
            self._series.close()
            self._series = None
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        return summary


def _progress(src):
    try:
        return src.progress() if hasattr(src, "progress") else None
    except Exception:   # noqa: BLE001 - progress is a nicety; never stop the loop for it
        return None


def _num(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# the share of events predicted right, by task: a classifier's accuracy; a multi-label
# classifier's exact match (every label right)
_CORRECT = {"classification": "accuracy", "multi_label": "exact_match"}


def summarize(runner, totals: dict, elapsed: float) -> dict:
    """Totals of a run as a plain dict (the content of ``metrics.json``)."""
    out = {k: v for k, v in totals.items() if k not in ("loss_sum", "loss_n", "correct")}
    out["prequential_loss"] = totals["loss_sum"] / totals["loss_n"] if totals["loss_n"] else None
    kinds = {u.task.kind for u in runner.units.values()}
    for kind in kinds & set(_CORRECT):
        if totals["loss_n"]:
            out[_CORRECT[kind]] = totals["correct"] / totals["loss_n"]
    out["task"] = kinds.pop() if len(kinds) == 1 else sorted(kinds)
    out["elapsed_s"] = elapsed
    out["events_per_s"] = runner.n_read / elapsed if elapsed > 0 else None
    out["checkpoints"] = runner.n_checkpoints
    out["units"] = {name: {"offsets": u.offsets, "position": list(u.positions.values())[-1] if u.positions else None}
                    for name, u in runner.units.items()}
    return out


def progress_line(s: dict) -> str:
    """One line for an interactive terminal."""
    parts = [f"{s['events']:>10,} events", f"{s['events_per_s']:>8,.0f}/s"]
    if s.get("done") is not None:
        eta = s.get("eta_s")
        parts.append(f"{100 * s['done']:3.0f}%" + ("" if eta is None else f" ETA {_duration(eta)}"))
    if s.get("lag") is not None:
        parts.append(f"lag {s['lag']:,}")
    elif s.get("position"):
        pos = s["position"]
        parts.append("@ " + " ".join(f"{k}={v}" for k, v in pos.items() if k != "file"))
    if s.get("loss") is not None:
        parts.append(f"loss {s['loss']:.4g}")
    if s.get("lr") is not None:
        parts.append(f"lr {s['lr']:.3g}")
    parts.append(f"anomalies {s['anomalies']:,}")
    parts.append(f"dead letters {s['dead_letters']:,}")
    return " | ".join(parts)


def _duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def log_line(event: str, **fields) -> str:
    """A structured (JSON) log line."""
    return json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, default=str)


def write_log(event: str, stream=None, **fields) -> None:
    (stream or sys.stderr).write(log_line(event, **fields) + "\n")


_FIXES = {"unreachable": "start a broker with `bash scripts/kafka.sh start`, or set bootstrap in "
                         "[source] (or $STREAMNN_KAFKA_BOOTSTRAP) to a running one",
          "ECONNREFUSED": "start a broker with `bash scripts/kafka.sh start`, or fix the bootstrap setting"}


class JsonLogHandler(logging.Handler):
    """Python log records (warnings and up) as the run's JSON log lines.

    A message repeated within `quiet_s` seconds (a client retrying every second) is written once;
    the next copy after that carries ``"repeated": <copies left out>``. Known troubles get a
    ``"fix"`` field.

    >>> import io
    >>> out = io.StringIO()
    >>> log = logging.getLogger("streamnn.doctest"); log.propagate = False
    >>> log.addHandler(JsonLogHandler(out))
    >>> for _ in range(3):
    ...     log.warning("Kafka at %s unreachable; retrying", "127.0.0.1:1")
    >>> [json.loads(line)["message"] for line in out.getvalue().splitlines()]
    ['Kafka at 127.0.0.1:1 unreachable; retrying']
    >>> "scripts/kafka.sh start" in json.loads(out.getvalue())["fix"]
    True
    """

    def __init__(self, stream=None, level=logging.WARNING, quiet_s: float = 30.0):
        super().__init__(level)
        self.stream, self.quiet_s = stream, quiet_s
        self._seen: dict = {}   # (logger, message) -> [time written, copies left out since]

    def emit(self, record):
        try:
            msg = record.getMessage()
            now, key = time.monotonic(), (record.name, msg)
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.quiet_s:
                seen[1] += 1
                return
            if len(self._seen) > 1000:
                self._seen.clear()
            fields = {"level": record.levelname.lower(), "logger": record.name, "message": msg}
            if seen is not None and seen[1]:
                fields["repeated"] = seen[1]
            self._seen[key] = [now, 0]
            fix = next((f for k, f in _FIXES.items() if k in msg), None)
            if fix:
                fields["fix"] = fix
            if record.exc_info and record.exc_info[1] is not None:
                fields["error"] = repr(record.exc_info[1])
            write_log("log", self.stream, **fields)
        except Exception:   # noqa: BLE001 - logging must never stop the run
            self.handleError(record)

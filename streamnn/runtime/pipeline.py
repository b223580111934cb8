"""Assemble a runnable pipeline from a validated `Config` (the only place the stages meet).

>>> import tempfile
>>> from streamnn.runtime.config import parse
>>> cfg = parse({"name": "demo", "source": {"type": "river", "dataset": "Phishing", "limit": 300},
...              "learner": {"class": "MLPClassifier", "params": {"seed": 1}},
...              "run": {"dir": tempfile.mkdtemp(), "batch_size": 16}, "report": {"on_exit": False}})
>>> summary = Pipeline(cfg).run()
>>> summary["events_in"], summary["learned"], summary["accuracy"] > 0.6
(300, 300, True)
"""

from __future__ import annotations

import logging
import os

from .config import Config, ConfigError, resolve_learner, resolve_path
from .lock import lock_folders
from .loop import Runner
from .metrics import RunMetrics
from .schema import Decoder
from .sinks import DeadLetterSink, JsonlSink, MemoryDeadLetterSink, MemorySink, StdoutSink
from .sources import FileSource, RiverDatasetSource
from .state import CheckpointStore
from .tasks import task_for

__all__ = ["Pipeline", "make_source", "make_decoder", "lock_folders"]

log = logging.getLogger("streamnn.runtime")


def make_source(cfg: Config, replay_file: str | None = None):
    """The source a config names (or a replay of `replay_file` with the config's schema)."""
    if replay_file is not None:
        return FileSource(replay_file, max_line=cfg.schema["max_bytes"])
    src = dict(cfg.source)
    kind = src.pop("type")
    if kind == "file":
        path = src.pop("path")
        if not os.path.isfile(resolve_path(path)):
            raise ConfigError(f"[source] path: {path!r} does not exist; fix the path (relative to the "
                              "current directory; \"streamnn:data/<file>\" for the bundled data)")
        return FileSource(resolve_path(path), name=path, max_line=cfg.schema["max_bytes"], **src)
    if kind == "river":
        return RiverDatasetSource(**src)
    from .kafka import kafka_source   # lazy: the file runtime works without a broker

    try:
        return kafka_source(**src)
    except TypeError as e:
        raise ConfigError(f"[source] kafka: {e}") from None


def make_decoder(cfg: Config, source, target_kind: str) -> Decoder:
    s = cfg.schema
    fmt = "csv" if getattr(source, "format", None) == "csv" else "json"
    return Decoder(features=s["features"], target=s["target"], key=s["key"], event_id=s["event_id"],
                   timestamp=s["timestamp"], required=s["required"], max_bytes=s["max_bytes"],
                   target_kind=target_kind, format=fmt, columns=getattr(source, "columns", None),
                   max_abs=s["max_abs"], max_depth=s["max_depth"], max_features=s["max_features"],
                   max_classes=s["max_classes"])


def _make_sink(spec: dict, append: bool):
    spec = dict(spec)
    kind = spec.pop("type")
    if kind == "jsonl":
        return JsonlSink(spec["path"], append=append)
    if kind == "stdout":
        return StdoutSink()
    if kind == "memory":
        return MemorySink()
    from .kafka import KafkaSink

    return KafkaSink(**spec)


def _make_dead_letters(spec: dict, append: bool):
    spec = dict(spec)
    kind = spec.pop("type")
    if kind == "jsonl":
        return DeadLetterSink(spec["path"], append=append)
    if kind == "memory":
        return MemoryDeadLetterSink()
    from .kafka import KafkaDeadLetterSink

    return KafkaDeadLetterSink(**spec)


class Pipeline:
    """A config turned into source, decoder, learner factory, sinks, checkpoints and metrics.

    Parameters
    ----------
    cfg
        A validated config.
    replay_file
        Read this file instead of the config's source.
    fresh
        Ignore and delete existing checkpoints (and start the outputs empty).
    progress
        A callable receiving progress snapshots (see `RunMetrics`).
    locks
        Folder locks already taken with `lock_folders` (else the pipeline takes them itself,
        first thing; `close()` releases them).
    """

    def __init__(self, cfg: Config, replay_file: str | None = None, fresh: bool = False,
                 progress=None, max_events: int | None = None, rate: float | None = None,
                 port: int | None = None, locks=None):
        self.cfg = cfg
        run, ck = cfg.run, cfg.checkpoint
        self.run_dir = run["dir"]
        self.source = make_source(cfg, replay_file)      # first: a wrong path creates nothing
        self.sinks, self.dead_letters, self.metrics = [], None, None
        try:   # 1. own the folders before any output is opened or any checkpoint read
            self.locks = list(locks) if locks is not None else lock_folders(cfg, fresh, replay_file)
        except BaseException:
            self.source.close()
            raise
        try:
            self._build(cfg, run, ck, replay_file, fresh, progress, max_events, rate, port)
        except BaseException:
            self.close()
            raise

    def _build(self, cfg, run, ck, replay_file, fresh, progress, max_events, rate, port) -> None:
        cls = resolve_learner(cfg.learner["class"])
        params = cfg.learner["params"]
        self.make_learner = lambda: cls(**params)
        task = task_for(self.make_learner())
        shared = any(lock.shared for lock in self.locks)
        self.store = CheckpointStore(ck["dir"], shared=shared)
        removed = self.store.remove_temp_files()          # 2. what a kill mid-write left behind
        if removed:
            log.warning("removed %d temp file(s) a kill during a checkpoint write left: %s",
                        len(removed), ", ".join(map(os.path.basename, removed)))
        resume = ck["resume"] and not fresh
        if not resume:
            self.store.clear()   # only its checkpoint files: the folder may hold other things
        append = resume and bool(self.store.paths())
        self.decoder = make_decoder(cfg, self.source, task.target_kind)
        self.sinks = [_make_sink(s, append) for s in cfg.sinks]   # 3. outputs: the lock holder's
        self.dead_letters = _make_dead_letters(cfg.dead_letters, append)
        m = cfg.metrics
        self.metrics = RunMetrics(self.run_dir, port=port if port is not None else m["port"],
                                  every=m["every"], progress=progress, append=append)
        sch = cfg.schema
        lags = None
        if sch["lags"]:
            lags = (sch["lag_fields"] or sch["features"], sch["lags"])
        self.runner = Runner(
            self.source, self.decoder, self.make_learner, self.sinks, self.dead_letters, self.store,
            batch_size=run["batch_size"], poll_timeout_s=run["poll_timeout_s"],
            checkpoint_every=ck["every_events"], checkpoint_seconds=ck["every_seconds"],
            state_per=run["state_per"], resume=resume, delayed_labels=run["delayed_labels"],
            lags=lags, threshold=cfg.anomaly if task.kind == "anomaly" else None, metrics=self.metrics,
            max_events=max_events if max_events is not None else run["max_events"],
            rate=rate if rate is not None else run["rate"], post_update_every=run["post_update_every"])
        self.resumed = append

    def stop(self) -> None:
        self.runner.stop()

    def run(self, report: bool | None = None) -> dict:
        """Run to the end (or until stopped), close every stage; returns the run summary."""
        try:
            summary = self.runner.run()
        finally:
            self.close()
        if report if report is not None else self.cfg.report["on_exit"]:
            from .metrics import write_log
            from .report import write_report

            write_log("report", path=os.path.join(self.run_dir, "report"), message="writing the report")
            summary["report"] = write_report(self.run_dir)
        return summary

    def close(self) -> None:
        """Close every stage, then release the folder locks."""
        try:
            for s in self.sinks:
                s.close()
            if self.dead_letters is not None:
                self.dead_letters.close()
            self.source.close()
        finally:
            for lock in self.locks:
                lock.release()

"""The `streamnn` command line.

    streamnn run CONFIG                    run a pipeline (resumes from its checkpoints)
    streamnn replay FILE --config CONFIG   replay a JSONL/CSV file through a pipeline, from scratch
    streamnn inspect CHECKPOINT            what a checkpoint holds, at which position
    streamnn report RUN_DIR                PNG plots of a run
    streamnn check CONFIG                  validate a config without running it
    streamnn record TOPIC FILE             save a Kafka topic to a JSONL replay file
    streamnn produce FILE TOPIC            write a JSONL/CSV file to a Kafka topic

Exit status: 0 done (also after SIGTERM/SIGINT, which finish the batch and checkpoint), 1 a
runtime error (a checkpoint `inspect` refused, no Kafka broker for `produce`/`record`, a `--strict`
run stopped by a warning), 2 an invalid config or command line. `run`, `replay` and `check` first
validate everything that can be known before the first event (`streamnn.runtime.validate`).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import signal
import sys

__all__ = ["main"]


def _overrides(args) -> dict:
    run = {}
    if getattr(args, "run_dir", None):
        run["dir"] = args.run_dir
    return {"run": run} if run else {}


def _progress(stream, interactive: bool):
    from .metrics import progress_line, write_log

    if interactive:
        def show(snap):
            stream.write("\r" + progress_line(snap)[:200].ljust(100))
            stream.flush()
        return show, 0.5

    def log(snap):
        write_log("progress", stream, **snap)
    return log, 10.0


def _early_locks(args, overrides, fresh=False, replay_file=None):
    """Take the run's folder locks before the slow part (torch, validation) when its folder
    exists, so that a second instance is refused at once, naming the holder's pid."""
    from .config import load_config
    from .lock import lock_folders

    cfg = load_config(args.config, overrides, learner=False)
    if not os.path.isdir(cfg.run["dir"]):
        return None   # a new folder: validation first, so a bad config creates nothing
    return lock_folders(cfg, fresh, replay_file)


def _execute(cfg, args, replay_file=None, fresh=False, locks=None) -> int:
    from ..threads import set_threads
    from .metrics import progress_line, write_log
    from .pipeline import Pipeline

    set_threads(cfg.threads)   # torch and BLAS: small networks run fastest on one thread
    try:   # torch imports its compiler lazily at the first optimizer (seconds): before the clock
        import torch._dynamo  # noqa: F401
    except ImportError:  # pragma: no cover
        pass
    err = sys.stderr
    _json_logs(err)
    interactive = err.isatty() and not args.quiet
    show, every = _progress(err, interactive)
    pipeline = Pipeline(cfg, replay_file=replay_file, fresh=fresh, progress=None if args.quiet else show,
                        max_events=args.max_events, rate=getattr(args, "rate", None),
                        port=getattr(args, "port", None), locks=locks)
    pipeline.metrics.progress_every_s = every
    watch = _watch(cfg, pipeline, args, err)
    write_log("start", err, pipeline=cfg.name, run_dir=pipeline.run_dir, resumed=pipeline.resumed,
              source=replay_file or cfg.source.get("path") or cfg.source.get("dataset") or cfg.source["type"],
              learner=cfg.learner["class"], metrics_port=pipeline.metrics.port_)

    def stop(signum, frame):
        write_log("stopping", err, signal=signal.Signals(signum).name)
        pipeline.stop()
        signal.signal(signum, signal.SIG_DFL)   # a second signal ends the process at once

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        summary = pipeline.run(report=False if args.no_report else None)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if interactive:
        err.write("\r" + progress_line(pipeline.metrics.snapshot(pipeline.runner)) + "\n")
    summary["warnings"] = watch.finish(summary)
    _add_to_metrics_json(pipeline.run_dir, warnings=summary["warnings"])
    write_log("done", err, **{k: summary.get(k) for k in (
        "events_in", "events_out", "learned", "dead_letters", "anomalies", "prequential_loss",
        "accuracy", "exact_match", "events_per_s", "checkpoints") if k in summary}, warnings=len(summary["warnings"]))
    print(json.dumps({"run_dir": pipeline.run_dir, "predictions": [s["path"] for s in cfg.sinks if s.get("path")],
                      "checkpoints": cfg.checkpoint["dir"], "report": summary.get("report"),
                      "events_in": summary["events_in"], "dead_letters": summary["dead_letters"],
                      "warnings": [w["message"] for w in summary["warnings"]]}, indent=1))
    if watch.failed:   # strict: the first warning is an error
        first = summary["warnings"][0]
        write_log("failed", err, reason=f"strict run stopped: {first['message']}", fix=first["fix"])
        return 1
    return 0


def _watch(cfg, pipeline, args, err):
    """No silent failure: warnings for missing features and dead letters (see `alerts`)."""
    from .alerts import Watch
    from .metrics import write_log

    run = cfg.run
    watch = Watch(cfg.schema["features"], check_events=run["feature_check_events"], keys=_series_keys(cfg),
                  targets=_learned_target(cfg), fields=_named_fields(cfg),
                  dead_letter_limit=run["dead_letter_limit"], strict=run["strict"] or getattr(args, "strict", False),
                  log=lambda **f: write_log("warning", err, **f), registry=pipeline.metrics.registry,
                  stop=pipeline.stop, columns=getattr(pipeline.source, "columns", None))
    pipeline.source.poll = watch.wrap_poll(pipeline.source.poll, pipeline.runner.totals)
    return watch


def _add_to_metrics_json(run_dir: str, **fields) -> None:
    path = os.path.join(run_dir, "metrics.json")
    try:
        with open(path) as f:
            data = json.load(f)
        data.update(fields)
        with open(path, "w") as f:
            json.dump(data, f, indent=2, default=str)
    except (OSError, ValueError):
        pass   # no metrics.json (the run wrote none): the summary and the log still say it


def _validated(cfg, args, replay_file=None):
    """Everything that can be known before the first event (config, flags, machine), at once."""
    from .config import ConfigError, check_range
    from .validate import port_problem, validate

    flags = [("--max-events", getattr(args, "max_events", None), 0, True, None, "0 or more records"),
             ("--rate", getattr(args, "rate", None), 0, False, None, "records per second, more than 0"),
             ("--port", getattr(args, "port", None), 0, True, 65535, "a TCP port 1-65535, or 0 for any free port")]
    problems = [p for p in (check_range(*f) for f in flags) if p]
    if not problems and getattr(args, "port", None):
        problems += [p.replace("[metrics] port", "--port") for p in port_problem(args.port)]
        cfg = _without_port(cfg)
    problems += validate(cfg, replay_file)
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))


def _without_port(cfg):
    import copy

    cfg = copy.copy(cfg)
    cfg.metrics = {**cfg.metrics, "port": None}   # the --port flag replaces it
    return cfg


def cmd_run(args) -> int:
    from .config import load_config

    locks = _early_locks(args, _overrides(args), fresh=args.fresh)
    cfg = load_config(args.config, _overrides(args))
    _validated(cfg, args)
    return _execute(cfg, args, fresh=args.fresh, locks=locks)


def cmd_replay(args) -> int:
    from .config import load_config

    if not os.path.isfile(args.file):
        raise SystemExit(f"streamnn replay: {args.file!r} does not exist")
    name = os.path.splitext(os.path.basename(args.config))[0]
    out = args.out or os.path.join("runs", f"{name}-replay")
    cfg = load_config(args.config, {"run": {"dir": out}})
    for s in cfg.sinks:   # outputs of a replay go to its own folder
        if s["type"] == "jsonl":
            s["path"] = os.path.join(out, os.path.basename(s["path"]))
    if cfg.dead_letters["type"] == "jsonl":
        cfg.dead_letters["path"] = os.path.join(out, "dead_letters.jsonl")
    cfg.checkpoint["dir"] = os.path.join(out, "checkpoints")
    _validated(cfg, args, replay_file=args.file)
    return _execute(cfg, args, replay_file=args.file, fresh=True)


def cmd_check(args) -> int:
    from .config import load_config

    cfg = load_config(args.config, _overrides(args))
    _validated(cfg, args)
    warnings = _peek(cfg)
    for w in warnings:
        print(f"streamnn check: warning: {w['message']}; {w['fix']}", file=sys.stderr)
    if warnings and (args.strict or cfg.run["strict"]):
        return 1
    print(f"{args.config}: ok ({cfg.learner['class']} on a {cfg.source['type']} source, run dir {cfg.run_dir})")
    return 0


def _series_keys(cfg) -> list:
    """The fields that name a series: the learner's `key`, and `[schema] key` when lags are kept
    per key (for the `alerts` check of a key that is new on every record)."""
    keys = [cfg.learner["params"].get("key")]
    if cfg.schema.get("lags") or cfg.schema.get("lag_fields"):
        keys.append(cfg.schema.get("key"))
    return [k for k in keys if isinstance(k, str)]


def _named_fields(cfg) -> list:
    """The schema's timestamp, key and lag fields, with their role (for the `alerts` check of a field that never
    comes; a missing event id already sends every record to the dead letters, and a learner's key
    is one of these fields or a feature, which `parse` sees to)."""
    fields = [(role, cfg.schema.get(role)) for role in ("timestamp", "key") if isinstance(cfg.schema.get(role), str)]
    if cfg.schema.get("lags"):
        fields += [("lag", f) for f in cfg.schema.get("lag_fields") or () if isinstance(f, str)]
    return fields


def _learned_target(cfg):
    """`[schema] target` when the learner learns it (not for an anomaly detector, whose target is
    ground truth for reports, often absent), for the `alerts` check of a target that never comes."""
    from river import base

    from .config import resolve_learner
    try:
        if issubclass(resolve_learner(cfg.learner["class"]), base.AnomalyDetector):
            return None
    except Exception:   # noqa: BLE001 - an unknown class is the config check's business
        return None
    return cfg.schema.get("target")


def _peek(cfg) -> list:
    """The `alerts` feature check on the first records of a file or river source (not Kafka:
    reading would move nothing, but a broker may not be there yet)."""
    from .alerts import Watch
    from .pipeline import make_source

    from .pipeline import make_decoder
    from .process import not_numbers_hint
    from .records import NO_TARGET

    if cfg.source["type"] not in ("file", "river"):
        return []
    source = make_source(cfg)
    try:
        n = cfg.run["feature_check_events"]
        watch = Watch(cfg.schema["features"], check_events=n, columns=getattr(source, "columns", None),
                      keys=_series_keys(cfg), targets=_learned_target(cfg), fields=_named_fields(cfg))
        decoder = make_decoder(cfg, source, _target_kind(cfg))
        delayed = (cfg.run["delayed_labels"] > 0 and bool(cfg.schema["event_id"]) and cfg.schema["features"] != []
                   and _learned_target(cfg) is not None)
        seen, dead, waiting = 0, {}, set()   # dead: the records `run` would dead-letter, by reason class

        def letter(reason):
            c, first = dead.get(reason.split(":")[0], (0, reason))
            dead[reason.split(":")[0]] = (c + 1, first)

        while seen < n and not source.exhausted:
            records = source.poll(min(n - seen, 1000), 0.0)
            if not records:
                break
            watch.observe(records)
            batch, errors = decoder.decode_batch(records)    # as `run` decodes them
            for _, reason in errors:
                letter(reason)
            for i in range(len(batch)) if delayed else ():  # label-only records: matched with an event?
                eid, label_only = batch.event_id(i), batch.featureless(i)
                if not label_only:
                    if batch.ys[i] is NO_TARGET:
                        waiting.add(eid)
                elif batch.ys[i] is not NO_TARGET and eid not in waiting:
                    letter(f"unmatched label: no event with id {eid!r} waits for its label"
                           + not_numbers_hint(decoder, batch.records[i]))
                else:
                    waiting.discard(eid)
            seen += len(records)
        out = watch.finish({})
        k = sum(c for c, _ in dead.values())
        if seen and k / seen > cfg.run["dead_letter_limit"]:
            c, first = max(dead.values(), key=lambda v: v[0])
            out.append({"kind": "dead_letters", "message": f"{k} of the first {seen} records would go to the dead "
                        f"letters (limit {cfg.run['dead_letter_limit']:.1%}); the most common reason ({c} of them): "
                        f"{first}", "fix": "fix [schema] or the producer as the reason says",
                        "dead_letters": k, "events_in": seen})
        return out
    finally:
        source.close()


def _target_kind(cfg) -> str:
    """How the learner's task reads targets ("number", "label", "flag"), as `run` decodes them."""
    from .config import resolve_learner
    from .tasks import task_for
    try:
        return task_for(resolve_learner(cfg.learner["class"], cfg.learner["params"])(**cfg.learner["params"])).target_kind
    except Exception:   # noqa: BLE001 - a learner that cannot be built is the config check's business
        return "number"


def cmd_report(args) -> int:
    from .report import write_report

    for path in write_report(args.run_dir, predictions=args.predictions):
        print(path)
    return 0


def cmd_inspect(args) -> int:
    from .inspection import inspect_command

    return inspect_command(args.checkpoint, as_json=args.json)


def cmd_record(args) -> int:
    from .kafka import default_bootstrap, record

    _json_logs(sys.stderr)
    n = record(args.topic, args.file, bootstrap=args.bootstrap or default_bootstrap(),
               max_messages=args.max_messages, idle_timeout_s=args.idle_timeout)
    print(f"recorded {n} messages from {args.topic} to {args.file}")
    return 0


def cmd_produce(args) -> int:
    from .kafka import default_bootstrap, produce

    _json_logs(sys.stderr)
    n = produce(args.file, args.topic, bootstrap=args.bootstrap or default_bootstrap(), loop=args.loop,
                rate=args.rate, key_field=args.key_field, partitions=args.partitions, limit=args.limit)
    print(f"produced {n} messages from {args.file} to {args.topic}")
    return 0


def _json_logs(stream) -> None:
    """Route warnings and errors of every logger (streamnn's, the Kafka client's) through the
    run's JSON log lines, unless the host program configured logging itself."""
    from .metrics import JsonLogHandler

    root = logging.getLogger()
    if not any(isinstance(h, JsonLogHandler) for h in root.handlers) and not root.handlers:
        root.addHandler(JsonLogHandler(stream))


def _parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = argparse.ArgumentParser(prog="streamnn", description="Online deep learning on live streams.",
                                epilog="Exit status: 0 done, 1 a runtime error, 2 an invalid config or "
                                       "command line. Docs: docs/runtime.md")
    p.add_argument("--version", action="version", version=f"streamnn {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="one of these (streamnn COMMAND --help for its arguments)")

    def running(sp):
        sp.add_argument("--max-events", type=int, help="stop after this many records")
        sp.add_argument("--no-report", action="store_true", help="do not write the report at the end")
        sp.add_argument("--quiet", action="store_true", help="no progress line or progress logs")
        sp.add_argument("--strict", action="store_true",
                        help="stop with exit status 1 at the first warning (a configured feature that "
                             "never arrives, too many dead letters); also [run] strict = true")

    config_help = "pipeline config file (TOML, or YAML with PyYAML), e.g. pipelines/sensor_anomaly.toml"
    r = sub.add_parser("run", help="run a pipeline config (resumes from its checkpoints)")
    r.add_argument("config", help=config_help)
    r.add_argument("--run-dir", help="write outputs, checkpoints and metrics here (default runs/<name>)")
    r.add_argument("--fresh", action="store_true", help="delete the checkpoints and start over")
    r.add_argument("--rate", type=float, help="read at most this many records per second")
    r.add_argument("--port", type=int, help="serve Prometheus metrics on this port (0: any free port)")
    running(r)
    r.set_defaults(fn=cmd_run)
    rp = sub.add_parser("replay", help="replay a JSONL/CSV file through a pipeline (deterministic)")
    rp.add_argument("file", help="the JSONL or CSV file to replay (read instead of the config's source)")
    rp.add_argument("--config", required=True, help=config_help + "; its source is ignored")
    rp.add_argument("--out", help="output folder (default runs/<config name>-replay)")
    running(rp)
    rp.set_defaults(fn=cmd_replay)
    c = sub.add_parser("check", help="validate a config (and that it can run here) without running it")
    c.add_argument("config", help=config_help)
    c.add_argument("--run-dir", help="check this run folder instead of the config's")
    c.add_argument("--strict", action="store_true", help="exit 1 on a warning too (a listed feature "
                   "missing from the first records of a file or river source)")
    c.set_defaults(fn=cmd_check)
    i = sub.add_parser("inspect", help="show what a checkpoint (or a folder of them) holds")
    i.add_argument("checkpoint", help="a checkpoint .pt file, a learner.save() file, or a folder of "
                                      "checkpoints (e.g. runs/<name>/checkpoints)")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.set_defaults(fn=cmd_inspect)
    rep = sub.add_parser("report", help="write PNG plots of a run into RUN_DIR/report")
    rep.add_argument("run_dir", help="the run folder (with metrics.jsonl), e.g. runs/<name>")
    rep.add_argument("--predictions", default=None, metavar="FILE",
                     help="a JSONL file of the run's outputs (default RUN_DIR/predictions.jsonl; "
                          "e.g. a Kafka output topic saved with `streamnn record`)")
    rep.set_defaults(fn=cmd_report)
    bootstrap = dict(default=None, help="Kafka bootstrap servers (default $STREAMNN_KAFKA_BOOTSTRAP "
                                        "or 127.0.0.1:19092)")
    rec = sub.add_parser("record", help="save a Kafka topic to a JSONL replay file")
    rec.add_argument("topic", help="the Kafka topic to read (every partition, from the beginning)")
    rec.add_argument("file", help="the JSONL file to write (replaced at the end)")
    rec.add_argument("--bootstrap", **bootstrap)
    rec.add_argument("--max-messages", type=int, help="stop after this many messages")
    rec.add_argument("--idle-timeout", type=float, default=5.0,
                     help="stop after this many seconds without messages (default 5)")
    rec.set_defaults(fn=cmd_record)
    pr = sub.add_parser("produce", help="write a JSONL/CSV file to a Kafka topic")
    pr.add_argument("file", help="the JSONL or CSV file to send, one message per record")
    pr.add_argument("topic", help="the Kafka topic to write to (created if missing)")
    pr.add_argument("--bootstrap", **bootstrap)
    pr.add_argument("--loop", action="store_true", help="start over at the end, forever")
    pr.add_argument("--rate", type=float, help="messages per second")
    pr.add_argument("--key-field", help="use this field as the message key")
    pr.add_argument("--partitions", type=int, default=1, help="partitions of a topic it creates")
    pr.add_argument("--limit", type=int, help="send at most this many messages")
    pr.set_defaults(fn=cmd_produce)
    return p


def _stacks_on_sigusr1() -> None:
    """`kill -USR1 PID` prints every thread's stack to stderr: a hung consumer explains itself."""
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (AttributeError, ValueError, OSError):   # no SIGUSR1 (Windows), or stderr is no file
        pass


def main(argv=None) -> int:
    from .config import ConfigError

    args = _parser().parse_args(argv)
    _stacks_on_sigusr1()
    try:
        code = args.fn(args)
        sys.stdout.flush()   # a closed pipe shows here, inside the try
        return code
    except BrokenPipeError:   # `streamnn inspect ... | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())   # no second error when Python flushes at exit
        return 0
    except ConfigError as e:
        print(f"streamnn: config error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, ConnectionError) as e:
        print(f"streamnn: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:   # a full disk, a folder made read-only mid-run: checkpoints are atomic
        print(f"streamnn: error: {e}; the last checkpoint is intact: fix this, then run again to resume",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The `streamnn` command line.

    streamnn run CONFIG                    run a pipeline (resumes from its checkpoints)
    streamnn replay FILE --config CONFIG   replay a JSONL/CSV file through a pipeline, from scratch
    streamnn inspect CHECKPOINT            what a checkpoint holds, at which position
    streamnn report RUN_DIR                PNG plots of a run
    streamnn check CONFIG                  validate a config without running it
    streamnn record TOPIC FILE             save a Kafka topic to a JSONL replay file
    streamnn produce FILE TOPIC            write a JSONL/CSV file to a Kafka topic

Exit status: 0 done (also after SIGTERM/SIGINT, which finish the batch and checkpoint), 1 a
runtime error, 2 an invalid config or command line.
"""

from __future__ import annotations

import argparse
import datetime
import json
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


def _execute(cfg, args, replay_file=None, fresh=False) -> int:
    from ..threads import set_threads
    from .metrics import progress_line, write_log
    from .pipeline import Pipeline

    set_threads(cfg.threads)   # torch and BLAS: small networks run fastest on one thread
    try:   # torch imports its compiler lazily at the first optimizer (seconds): before the clock
        import torch._dynamo  # noqa: F401
    except ImportError:  # pragma: no cover
        pass
    err = sys.stderr
    interactive = err.isatty() and not args.quiet
    show, every = _progress(err, interactive)
    pipeline = Pipeline(cfg, replay_file=replay_file, fresh=fresh, progress=None if args.quiet else show,
                        max_events=args.max_events, rate=getattr(args, "rate", None),
                        port=getattr(args, "port", None))
    pipeline.metrics.progress_every_s = every
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
    write_log("done", err, **{k: summary.get(k) for k in (
        "events_in", "events_out", "learned", "dead_letters", "anomalies", "prequential_loss",
        "accuracy", "events_per_s", "checkpoints") if k in summary})
    print(json.dumps({"run_dir": pipeline.run_dir, "predictions": [s["path"] for s in cfg.sinks if s.get("path")],
                      "checkpoints": cfg.checkpoint["dir"], "report": summary.get("report"),
                      "events_in": summary["events_in"], "dead_letters": summary["dead_letters"]}, indent=1))
    return 0


def cmd_run(args) -> int:
    from .config import load_config

    cfg = load_config(args.config, _overrides(args))
    return _execute(cfg, args, fresh=args.fresh)


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
    return _execute(cfg, args, replay_file=args.file, fresh=True)


def cmd_check(args) -> int:
    from .config import load_config

    cfg = load_config(args.config)
    print(f"{args.config}: ok ({cfg.learner['class']} on a {cfg.source['type']} source, run dir {cfg.run_dir})")
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    for path in write_report(args.run_dir):
        print(path)
    return 0


def describe_checkpoint(path: str) -> dict:
    """The facts a person wants from a checkpoint file, as a plain dict."""
    from ..checkpoint import load_checkpoint

    ck = load_checkpoint(path)
    st = ck.get("state", {})
    info = {"file": path, "bytes": os.path.getsize(path), "unit": ck.get("unit"), "task": ck.get("task"),
            "learner": ck.get("learner"), "params": ck.get("params"), "offsets": ck.get("offsets"),
            "positions": ck.get("positions"), "counters": ck.get("counters")}
    if ck.get("saved_at"):
        info["saved_at"] = datetime.datetime.fromtimestamp(ck["saved_at"], datetime.timezone.utc).isoformat()
    c = st.get("counters", {})
    info["learner_state"] = {"built": st.get("built"), "n_seen": c.get("n_seen"), "n_updates": c.get("n_updates"),
                             "features": (st.get("features") or {}).get("names"),
                             "classes": (st.get("extra") or {}).get("classes")}
    lr = st.get("optimizer", {}).get("param_groups", [{}])[0].get("lr") if st.get("optimizer") else None
    info["learner_state"]["lr"] = lr
    rt = ck.get("runtime", {})
    info["runtime"] = {"delayed_labels_waiting": len(rt.get("delayed", {}).get("items", [])),
                       "delayed_labels_expired": rt.get("delayed", {}).get("expired"),
                       "threshold": rt.get("threshold"), "lag_keys": len(rt.get("lags", {}).get("windows", {}))}
    return info


def cmd_inspect(args) -> int:
    paths = [args.checkpoint]
    if os.path.isdir(args.checkpoint):
        paths = sorted(os.path.join(args.checkpoint, f) for f in os.listdir(args.checkpoint) if f.endswith(".pt"))
        if not paths:
            raise SystemExit(f"streamnn inspect: no checkpoint (*.pt) in {args.checkpoint}")
    infos = [describe_checkpoint(p) for p in paths]
    if args.json:
        print(json.dumps(infos if len(infos) > 1 else infos[0], indent=1, default=str))
        return 0
    for info in infos:
        ls, pos = info["learner_state"], info["positions"] or {}
        print(f"{info['file']} ({info['bytes']:,} bytes, saved {info.get('saved_at', '?')})")
        print(f"  learner   {info['learner']} ({info['task']}): {ls['n_seen']} samples learned, "
              f"{ls['n_updates']} updates, lr {ls['lr']}")
        for stream, off in (info["offsets"] or {}).items():
            print(f"  stream    {stream}: next offset {off}, last position {json.dumps(pos.get(stream))}")
        print(f"  features  {ls['features']}")
        if ls.get("classes") is not None:
            print(f"  classes   {ls['classes']}")
        print(f"  counters  {json.dumps(info['counters'])}")
        print(f"  runtime   {json.dumps(info['runtime'])}")
        print(f"  params    {json.dumps(info['params'], default=str)}")
    return 0


def cmd_record(args) -> int:
    from .kafka import default_bootstrap, record

    n = record(args.topic, args.file, bootstrap=args.bootstrap or default_bootstrap(),
               max_messages=args.max_messages, idle_timeout_s=args.idle_timeout)
    print(f"recorded {n} messages from {args.topic} to {args.file}")
    return 0


def cmd_produce(args) -> int:
    from .kafka import default_bootstrap, produce

    n = produce(args.file, args.topic, bootstrap=args.bootstrap or default_bootstrap(), loop=args.loop,
                rate=args.rate, key_field=args.key_field, partitions=args.partitions, limit=args.limit)
    print(f"produced {n} messages from {args.file} to {args.topic}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamnn", description="Online deep learning on live streams.")
    sub = p.add_subparsers(dest="command", required=True)

    def running(sp):
        sp.add_argument("--max-events", type=int, help="stop after this many records")
        sp.add_argument("--no-report", action="store_true", help="do not write the report at the end")
        sp.add_argument("--quiet", action="store_true", help="no progress line or progress logs")

    r = sub.add_parser("run", help="run a pipeline config (resumes from its checkpoints)")
    r.add_argument("config")
    r.add_argument("--run-dir", help="write outputs, checkpoints and metrics here (default runs/<name>)")
    r.add_argument("--fresh", action="store_true", help="delete the checkpoints and start over")
    r.add_argument("--rate", type=float, help="read at most this many records per second")
    r.add_argument("--port", type=int, help="serve Prometheus metrics on this port")
    running(r)
    r.set_defaults(fn=cmd_run)
    rp = sub.add_parser("replay", help="replay a JSONL/CSV file through a pipeline (deterministic)")
    rp.add_argument("file")
    rp.add_argument("--config", required=True)
    rp.add_argument("--out", help="output folder (default runs/<config name>-replay)")
    running(rp)
    rp.set_defaults(fn=cmd_replay)
    c = sub.add_parser("check", help="validate a config")
    c.add_argument("config")
    c.set_defaults(fn=cmd_check)
    i = sub.add_parser("inspect", help="show what a checkpoint (or a folder of them) holds")
    i.add_argument("checkpoint")
    i.add_argument("--json", action="store_true")
    i.set_defaults(fn=cmd_inspect)
    rep = sub.add_parser("report", help="write PNG plots of a run into RUN_DIR/report")
    rep.add_argument("run_dir")
    rep.set_defaults(fn=cmd_report)
    bootstrap = dict(default=None, help="Kafka bootstrap servers (default $STREAMNN_KAFKA_BOOTSTRAP "
                                        "or 127.0.0.1:19092)")
    rec = sub.add_parser("record", help="save a Kafka topic to a JSONL replay file")
    rec.add_argument("topic")
    rec.add_argument("file")
    rec.add_argument("--bootstrap", **bootstrap)
    rec.add_argument("--max-messages", type=int)
    rec.add_argument("--idle-timeout", type=float, default=5.0, help="stop after this long without messages")
    rec.set_defaults(fn=cmd_record)
    pr = sub.add_parser("produce", help="write a JSONL/CSV file to a Kafka topic")
    pr.add_argument("file")
    pr.add_argument("topic")
    pr.add_argument("--bootstrap", **bootstrap)
    pr.add_argument("--loop", action="store_true", help="start over at the end, forever")
    pr.add_argument("--rate", type=float, help="messages per second")
    pr.add_argument("--key-field", help="use this field as the message key")
    pr.add_argument("--partitions", type=int, default=1, help="partitions of a topic it creates")
    pr.add_argument("--limit", type=int, help="send at most this many messages")
    pr.set_defaults(fn=cmd_produce)
    return p


def main(argv=None) -> int:
    from .config import ConfigError

    args = _parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"streamnn: config error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:
        print(f"streamnn: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

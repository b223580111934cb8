"""Kafka end to end: `streamnn run` (MLP on JSON sensor messages) against a bare consumer.

In one process and one run, over the same topic of N JSON sensor messages (the bundled NAB
machine-temperature readings, cycled):

1. bare consumers that only decode (``json.loads``) every message: kafka-python, and
   confluent-kafka when it is installed;
2. the streamnn runtime (the code behind `streamnn run`: source, decoder, lag features, an
   MLPRegressor forecasting the next reading, predictions to a Kafka topic, dead letters to Kafka,
   checkpoints and offset commits), once per client;
3. latency from produce to prediction at a steady rate: a `streamnn run` process consumes while
   this process produces at R messages/s; latency = the prediction message's timestamp minus the
   input message's timestamp (both CreateTime, same clock), p50 / p99 / max.

Rates run from the first record returned to the last record processed (group join, imports and
the one-off import of torch's optimizer machinery are excluded and reported separately).

Usage (broker: $STREAMNN_KAFKA_BOOTSTRAP, else 127.0.0.1:19092, started with scripts/kafka.sh
when nothing answers)::

    python benchmarks/kafka.py                  # N=50000, latency at 500/s for 20 s
    python benchmarks/kafka.py --quick          # N=20000, latency at 300/s for 8 s

Results go to benchmarks/results/kafka.md.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# this file is called kafka.py: keep its folder off sys.path so `import kafka` finds kafka-python
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import streamnn  # noqa: E402

streamnn.set_threads(1)   # one torch and one BLAS thread, as the runtime's CLI does

from streamnn.runtime.config import parse  # noqa: E402
from streamnn.runtime.kafka_common import KafkaConsumer, KafkaProducer, default_bootstrap, ensure_topic  # noqa: E402
from streamnn.runtime.pipeline import Pipeline  # noqa: E402

DATA = REPO / "streamnn" / "data" / "machine_temperature.csv"
MLP = {"hidden": [32], "seed": 0}
BATCH = 1000   # run.batch_size and the source's max_poll_records: records per loop iteration
CHECKPOINT_EVENTS, CHECKPOINT_SECONDS = 100_000, 1.0   # about one checkpoint a second at 100k/s
SCHEDULES = {  # the MLP's training schedule: its defaults, and fewer, larger-batch steps
    "default": {},
    "update_every=batch_size=256, warmup=200": {"warmup": 200, "update_every": 256, "batch_size": 256},
}


def has_confluent() -> bool:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return False
    return True


def messages(n: int) -> list:
    rows = list(csv.DictReader(open(DATA)))
    return [json.dumps({"machine": "m1", "timestamp": r["timestamp"], "value": float(r["value"]),
                        "label": int(r["label"])}).encode() for r in (rows[i % len(rows)] for i in range(n))]


def fill(bootstrap: str, topic: str, values: list) -> None:
    ensure_topic(bootstrap, topic, 1)
    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=262144)
    for v in values:
        p.send(topic, value=v, key=b"m1")
    p.flush()
    p.close()


def gc_frozen(fn):
    """Run `fn` with the objects alive now out of the garbage collector's full passes, as the
    runtime's loop does: in this process (torch, pandas imported) a full pass costs ~0.3 s, which
    a bare consumer in a process of its own would not pay either."""
    def run(*args, **kwargs):
        gc.freeze()
        try:
            return fn(*args, **kwargs)
        finally:
            gc.unfreeze()
    return run


@gc_frozen
def bare_kafka_python(bootstrap: str, topic: str, n: int) -> float:
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bare-{uuid.uuid4().hex[:8]}",
                      enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=100)
    got, t0 = 0, None
    while got < n:
        batch = c.poll(timeout_ms=1000, max_records=500)
        if batch and t0 is None:
            t0 = time.perf_counter()
        for msgs in batch.values():
            for m in msgs:
                json.loads(m.value)
                got += 1
    dt = time.perf_counter() - t0
    c.close(autocommit=False)
    return n / dt


@gc_frozen
def bare_confluent(bootstrap: str, topic: str, n: int) -> float:
    import confluent_kafka as ck

    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": f"bare-{uuid.uuid4().hex[:8]}",
                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got, t0 = 0, None
    while got < n:
        batch = c.consume(500, 1.0)
        if batch and t0 is None:
            t0 = time.perf_counter()
        for m in batch:
            if m.error() is None:
                json.loads(m.value())
                got += 1
    dt = time.perf_counter() - t0
    c.close()
    return n / dt


def config(topic: str, bootstrap: str, run_dir: str, client: str, sink: str = "kafka",
           schedule: str = "default") -> dict:
    sinks = ({"type": "kafka", "topic": "{topic}.predictions", "bootstrap": bootstrap, "client": client}
             if sink == "kafka" else {"type": "memory"})
    dead = ({"type": "kafka", "bootstrap": bootstrap, "client": client} if sink == "kafka"
            else {"type": "memory"})
    return {
        "name": f"bench-{client}",
        "source": {"type": "kafka", "topics": [topic], "bootstrap": bootstrap, "client": client,
                   "group_id": f"bench-{uuid.uuid4().hex[:8]}", "max_poll_records": max(500, BATCH)},
        "schema": {"features": [], "target": "value", "key": "machine", "timestamp": "timestamp",
                   "lags": 4, "lag_fields": ["value"]},
        "learner": {"class": "MLPRegressor", "params": {**MLP, **SCHEDULES[schedule]}},
        "run": {"dir": run_dir, "batch_size": BATCH},
        "checkpoint": {"every_events": CHECKPOINT_EVENTS, "every_seconds": CHECKPOINT_SECONDS},
        "sinks": [sinks],
        "dead_letters": dead,
        "report": {"on_exit": False},
    }


def runtime(bootstrap: str, topic: str, n: int, client: str, sink: str = "kafka", replay=None,
            schedule: str = "default") -> dict:
    """The `streamnn run` code path in this process; rate from the first record to the last.

    With `replay` (a JSONL file of the same messages) the source is that file and outputs and
    dead letters are discarded: the runtime's ceiling without Kafka.
    """
    with tempfile.TemporaryDirectory() as d:
        t_start = time.perf_counter()
        cfg = parse(config(topic, bootstrap, d, client, sink, schedule))
        pipe = Pipeline(cfg, max_events=n, replay_file=replay)
        if replay:
            pipe.runner.sinks, pipe.runner.dead_letters = [_Discard()], _Discard()
        marks = {}
        poll, process = pipe.runner.source.poll, pipe.runner.process

        def timed_poll(*a, **k):
            out = poll(*a, **k)
            if out and "first" not in marks:
                marks["first"] = time.perf_counter()
            return out

        def timed_process(records):
            process(records)
            marks["last"] = time.perf_counter()

        pipe.runner.source.poll, pipe.runner.process = timed_poll, timed_process
        summary = pipe.run(report=False)
        t_end = time.perf_counter()
    assert summary["events_in"] >= n, summary
    return {"rate": n / (marks["last"] - marks["first"]), "startup_s": marks["first"] - t_start,
            "total_s": t_end - t_start, "loss": summary.get("prequential_loss")}


class _Discard:
    """A sink and dead-letter sink that keeps nothing (a memory sink would grow the heap)."""

    def emit(self, outputs):
        pass

    def send(self, record, reason):
        pass

    def flush(self):
        pass

    def close(self):
        pass


def latency(bootstrap: str, rate: float, seconds: float, client: str, warm: int = 300) -> dict:
    """Produce at `rate`/s into a fresh topic while a `streamnn run` process consumes it.

    The first `warm` messages (sent at once; the learner is built and torch's optimizer imports
    load) are not measured: timing starts once their predictions are out.
    """
    topic = f"bench-lat-{uuid.uuid4().hex[:8]}"
    n = warm + int(rate * seconds)
    values = messages(n)
    ensure_topic(bootstrap, topic, 1)
    ensure_topic(bootstrap, f"{topic}.predictions", 1)
    with tempfile.TemporaryDirectory() as d:
        cfg = config(topic, bootstrap, d, client)
        cfg_path = Path(d) / "lat.toml"
        cfg_path.write_text(_toml(cfg))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen([sys.executable, "-m", "streamnn.runtime.cli", "run", str(cfg_path),
                                 "--quiet", "--no-report", "--max-events", str(n)], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=open(Path(d) / "run.log", "w"))
        _wait_for_member(bootstrap, cfg["source"]["group_id"], proc)
        p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
        for v in values[:warm]:
            p.send(topic, value=v, key=b"m1")
        p.flush()
        _wait_for_outputs(bootstrap, f"{topic}.predictions", warm, proc)
        t0 = time.monotonic()
        for i, v in enumerate(values[warm:]):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            p.send(topic, value=v, key=b"m1")
        p.flush()
        p.close()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    sent = {m.offset: m.timestamp for m in _read(bootstrap, topic)}
    outs = [(int(dict(m.headers)["source_offset"]), m.timestamp)
            for m in _read(bootstrap, f"{topic}.predictions")]
    lat = sorted(ts - sent[off] for off, ts in outs if off >= warm)
    admin = __import__("kafka").KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.delete_topics([topic, f"{topic}.predictions"])
    admin.close()
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))]  # noqa: E731
    return {"n": len(lat), "p50": q(0.50), "p99": q(0.99), "max": lat[-1]}


def _wait_for_outputs(bootstrap, topic, n, proc, timeout_s=120):
    from kafka import TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    tp = TopicPartition(topic, 0)
    try:
        deadline = time.monotonic() + timeout_s
        while c.end_offsets([tp])[tp] < n:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the streamnn run process did not predict the warm-up messages")
            time.sleep(0.1)
    finally:
        c.close(autocommit=False)


def _wait_for_member(bootstrap, group, proc, timeout_s=120):
    admin = __import__("kafka").KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            g = admin.describe_groups([group])[group]
            if g["group_state"] == "Stable" and g["members"]:
                return
            time.sleep(0.2)
        raise RuntimeError("the streamnn run process did not join its group")
    finally:
        admin.close()


def _read(bootstrap: str, topic: str) -> list:
    from kafka import TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    end = c.end_offsets([tp])[tp]
    out = []
    while c.position(tp) < end:
        for msgs in c.poll(timeout_ms=500, max_records=5000).values():
            out.extend(msgs)
    c.close(autocommit=False)
    return out


def _toml(cfg: dict) -> str:
    def val(v):
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()

    lines = [f"name = {val(cfg['name'])}"]
    for sec in ("source", "schema", "learner", "run", "checkpoint", "dead_letters", "report"):
        lines.append(f"[{sec}]")
        for k, v in cfg[sec].items():
            if k == "params":
                continue
            lines.append(f"{k} = {val(v)}")
        if sec == "learner":
            lines.append("[learner.params]")
            lines += [f"{k} = {val(v)}" for k, v in cfg["learner"]["params"].items()]
    for s in cfg["sinks"]:
        lines.append("[[sinks]]")
        lines += [f"{k} = {val(v)}" for k, v in s.items()]
    return "\n".join(lines) + "\n"


def ensure_broker(bootstrap: str) -> None:
    import socket

    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        subprocess.run(["bash", str(REPO / "scripts" / "kafka.sh"), "start"], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3, help="repeat each rate measurement, keep the best")
    ap.add_argument("--latency-rate", type=float, default=500)
    ap.add_argument("--latency-seconds", type=float, default=20)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "kafka.md"))
    args = ap.parse_args()
    if args.quick:
        args.n, args.rounds, args.latency_rate, args.latency_seconds = 20_000, 1, 300, 8
    bootstrap = default_bootstrap()
    ensure_broker(bootstrap)
    t_import = time.perf_counter()
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # one-off import of torch._dynamo (~4 s)
    t_import = time.perf_counter() - t_import
    topic = f"bench-sensors-{uuid.uuid4().hex[:8]}"
    fill(bootstrap, topic, messages(args.n))
    clients = ["kafka-python"] + (["confluent"] if has_confluent() else [])
    replay = Path(tempfile.mkdtemp()) / "sensors.jsonl"
    replay.write_bytes(b"\n".join(messages(args.n)) + b"\n")
    rows = []
    for _ in range(args.rounds):
        rows.append(("bare", "kafka-python", "-", bare_kafka_python(bootstrap, topic, args.n), {}))
        if has_confluent():
            rows.append(("bare", "confluent", "-", bare_confluent(bootstrap, topic, args.n), {}))
        for sched in SCHEDULES:
            r = runtime(bootstrap, topic, args.n, "kafka-python", sink="memory", replay=str(replay),
                        schedule=sched)
            rows.append(("streamnn replay (file, outputs discarded)", "-", sched, r["rate"], r))
            for client in clients:
                r = runtime(bootstrap, topic, args.n, client, schedule=sched)
                rows.append(("streamnn run", client, sched, r["rate"], r))
                print(f"runtime {client} {sched}: {r}", flush=True)
    best = {}
    for row in rows:
        key = row[:3]
        if key not in best or row[3] > best[key][3]:
            best[key] = row
    for k, v in best.items():
        print(k, round(v[3]))
    lat = {c: latency(bootstrap, args.latency_rate, args.latency_seconds, c) for c in clients}
    print(lat)
    admin = __import__("kafka").KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.delete_topics([topic, f"{topic}.predictions"])
    admin.close()
    write(args, best, lat, t_import)


def write(args, best: dict, lat: dict, t_import: float) -> None:
    bare = best[("bare", "kafka-python", "-")][3]
    cmd = "python benchmarks/kafka.py" + (" --quick" if args.quick else "")
    from kafka.record import util

    crc = "pure Python" if util._crc32c is util.crc32c_py else "C, from the `crc32c` package"
    lines = [
        f"## Kafka: `streamnn run` against a bare consumer (kafka-python CRC32C: {crc})", "",
        f"Command: `{cmd}` (N={args.n:,} JSON sensor messages, 1 partition, best of {args.rounds} "
        f"rounds). Machine: {platform.machine()} {os.cpu_count()}-core CPU shared with other jobs, "
        "one torch thread, single-node Kafka 4.3.1 from `scripts/kafka.sh` on the same machine, "
        f"kafka-python {__import__('kafka').__version__}"
        + (f", confluent-kafka {__import__('confluent_kafka').version()}" if has_confluent() else "")
        + ". Ratios are measured in the same run; absolute numbers move with the load of the machine.", "",
        "`streamnn run` here: Kafka source, JSON decoder, 4 lag features, an MLPRegressor(hidden=[32]) "
        f"forecasting the reading (predict, then learn, batches of up to {BATCH:,} records "
        "(`run.batch_size`, `max_poll_records`) through the loop's columnar path), every prediction "
        "to a Kafka topic (keyed, with source headers) and Kafka dead letters "
        "through the same client as the source, a checkpoint + offset commit every "
        f"{CHECKPOINT_EVENTS:,} events or {CHECKPOINT_SECONDS:g} s, whichever comes first (each "
        "waits for the broker's acks of every output so far, then writes and fsyncs the model). "
        "MLP schedules: `default` is the learner's defaults (a step per event for the first 5,000, "
        "then a step of 64 per 16 events, plus as many replayed); the others take fewer, larger steps "
        "from a short warm-up on. `streamnn replay` is the same pipeline reading a JSONL file of the "
        "same messages, outputs discarded: the ceiling without Kafka. Every consumer runs with the "
        "objects alive before it frozen out of the garbage collector's full passes (`gc.freeze()`, "
        "which the runtime's loop does itself): in this process, which has imported torch and pandas, "
        "one full pass costs ~0.3 s, which a bare consumer in a process of its own would not pay.", "",
        "| consumer | client | MLP schedule | events/s | vs bare kafka-python | vs bare confluent "
        "| prequential MSE |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    bare_ck = best.get(("bare", "confluent", "-"), (0, 0, 0, math.nan))[3]
    order = {"bare": 0, "streamnn replay (file, outputs discarded)": 1, "streamnn run": 2}
    for (kind, client, sched), row in sorted(best.items(),
                                             key=lambda kv: (kv[0][2], order[kv[0][0]], kv[0][1])):
        loss = row[4].get("loss")
        lines.append(f"| {kind} | {client} | {sched} | {row[3]:,.0f} | {row[3] / bare:.0%} | "
                     f"{row[3] / bare_ck:.0%} | {'' if loss is None else f'{loss:.2f}'} |")
    startups = ", ".join(f"{c}: {r[4]['startup_s']:.1f} s" for (k, c, sch), r in best.items()
                         if k == "streamnn run" and sch == "default")
    lines += ["", "Reading (computed from the table): the bar is `streamnn run` at 70 % or more of the bare "
              "kafka-python consumer's rate.", ""]
    for sched in SCHEDULES:
        ceiling = best[("streamnn replay (file, outputs discarded)", "-", sched)][3]
        for client in sorted({k[1] for k in best if k[0] == "streamnn run"}):
            r = best[("streamnn run", client, sched)][3]
            lines.append(f"* {client}, MLP schedule {sched}: {r / bare:.0%} of bare kafka-python "
                         f"({'meets' if r >= 0.7 * bare else 'misses'} the bar); {r / ceiling:.0%} of the "
                         "same pipeline without Kafka")
    lines += ["", "Startup of `streamnn run` before its first record (group join, first batch "
              f"excluded from the rates): {startups}; "
              f"plus a one-off {t_import:.1f} s import of torch's optimizer machinery on the first Adam.", "",
              f"Latency from produce to prediction at a steady {args.latency_rate:g} messages/s for "
              f"{args.latency_seconds:g} s (`streamnn run` in its own process, default MLP schedule, "
              "after 300 warm-up messages; the tail includes the pauses of the checkpoints, which flush the "
              f"outputs and write the model every {CHECKPOINT_SECONDS:g} s):", "",
              "| client | predictions | p50 ms | p99 ms | max ms |", "| --- | ---: | ---: | ---: | ---: |"]
    for c, r in lat.items():
        lines.append(f"| {c} | {r['n']:,} | {r['p50']} | {r['p99']} | {r['max']} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

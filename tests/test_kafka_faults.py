"""Faults the Kafka runtime survives, each against the real broker with real processes.

Every test runs `python -m streamnn.runtime.cli run CONFIG` consumers, interleaves poison messages
with valid ones, and checks against an uninterrupted in-process run over the same topic:
every valid input offset has an output, every poison offset a dead letter with its reason,
nothing is learned twice (the per-partition checkpoint counters and the final model equal the
uninterrupted run's).
"""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from streamnn.runtime.config import load_config
from streamnn.runtime.pipeline import Pipeline
from streamnn.runtime.state import CheckpointStore

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
POISON = [
    b'{"x1": 0.5, "x2":',                              # not JSON
    b'{"x1": "warm", "x2": 1.0, "y": 1.0}',            # wrong type
    b'{"x1": 0.1, "x2": 0.2, "y": NaN}',               # NaN target
    b"",                                               # empty
    bytes(range(256)),                                 # binary
    b'{"x1": 1.0, "pad": "' + b"x" * 1_000_100 + b'"}',  # huge (> max_bytes)
]
POISON_EVERY = 97


def _events(n: int, seed: int) -> list:
    """n values: JSON regression events, with a poison message every POISON_EVERY-th offset."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % POISON_EVERY == POISON_EVERY - 1:
            out.append(POISON[(i // POISON_EVERY) % len(POISON)])
            continue
        x1, x2 = rng.uniform(-1, 1), rng.uniform(-1, 1)
        out.append(json.dumps({"x1": x1, "x2": x2, "y": 2 * x1 - x2 + rng.gauss(0, 0.05)}).encode())
    return out


class _Feeder(threading.Thread):
    """A live stream: sends `data[p][i]` to partition p at `rate` messages/s per partition.

    An idempotent acks=all producer: a broker outage only delays messages (they are retried).
    """

    def __init__(self, bootstrap: str, topic: str, data: dict, rate: float):
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.data, self.rate = bootstrap, topic, data, rate
        self.error = None

    def run(self):
        from kafka import KafkaProducer

        try:
            p = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, max_request_size=2_000_000,
                              reconnect_backoff_max_ms=1000)
            t0 = time.monotonic()
            for i in range(max(map(len, self.data.values()))):
                time.sleep(max(0.0, t0 + i / self.rate - time.monotonic()))
                for part, values in self.data.items():
                    if i < len(values):
                        p.send(self.topic, value=values[i], key=f"machine-{part}".encode(), partition=part)
            p.flush()
            p.close()
        except Exception as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def finish(self, timeout_s: float = 120):
        self.join(timeout_s)
        assert not self.is_alive() and self.error is None, f"feeder failed: {self.error!r}"


def _config(tmp_path: Path, name: str, topic: str, bootstrap: str, ck_dir: Path, *, group: str,
            kafka_sinks: bool = True, client: str = "kafka-python") -> Path:
    fetch = ('{"max.partition.fetch.bytes" = 2000000}' if client == "confluent"
             else "{max_partition_fetch_bytes = 2000000}")
    kafka = f'type = "kafka"\nbootstrap = "{bootstrap}"\nclient = "{client}"\n'
    sinks = (f'[[sinks]]\n{kafka}topic = "{{topic}}.out"\n[dead_letters]\n{kafka}' if kafka_sinks
             else '[[sinks]]\ntype = "memory"\n[dead_letters]\ntype = "memory"\n')
    text = f"""
name = "{name}"
[source]
type = "kafka"
topics = ["{topic}"]
group_id = "{group}"
bootstrap = "{bootstrap}"
session_timeout_ms = 6000
client = "{client}"
consumer_config = {fetch}
[schema]
features = ["x1", "x2"]
target = "y"
[learner]
class = "MLPRegressor"
[learner.params]
hidden = [8]
seed = 0
warmup = 0
update_every = 4
batch_size = 16
[run]
dir = "{tmp_path / ('run-' + name)}"
batch_size = 64
[checkpoint]
dir = "{ck_dir}"
every_events = 200
every_seconds = 0.5
[report]
on_exit = false
{sinks}"""
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


_STARTED: list = []   # the running test's consumer processes, for _wait's stack dump


@pytest.fixture
def procs():
    started = _STARTED
    started.clear()

    def start(cfg: Path, log: Path) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        p = subprocess.Popen([sys.executable, "-m", "streamnn.runtime.cli", "run", str(cfg), "--quiet",
                              "--no-report"], cwd=REPO, env=env, stdout=open(log, "w"),
                             stderr=subprocess.STDOUT)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def _offsets(ck_dir: Path, stream: str) -> int:
    try:
        ck = CheckpointStore(ck_dir).load(stream)
    except Exception:  # noqa: BLE001 - a file being replaced: read it next time
        return -1
    return -1 if ck is None else ck["offsets"].get(stream, -1)


def _wait(cond, timeout_s: float, what: str, logs=()):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    for proc in _STARTED:   # the consumers' thread stacks (faulthandler on SIGUSR1) into their logs
        if proc.poll() is None:
            proc.send_signal(signal.SIGUSR1)
    time.sleep(1.0 if _STARTED else 0)
    tails = "\n".join(f"--- {p}\n{Path(p).read_text()[-10000:]}" for p in logs)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{tails}")


def _terminate(p: subprocess.Popen, log: Path) -> None:
    p.send_signal(signal.SIGTERM)
    rc = p.wait(60)
    assert rc == 0, f"consumer exited {rc}:\n{log.read_text()[-3000:]}"


def _read_topic(bootstrap: str, topic: str) -> list:
    """Every message of `topic` up to its current end."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      fetch_max_wait_ms=100)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = c.end_offsets(tps)
        out, deadline = [], time.monotonic() + 30
        while any(c.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for msgs in c.poll(timeout_ms=200, max_records=2000).values():
                out.extend(msgs)
        return out
    finally:
        c.close(autocommit=False)


def _topic_values(bootstrap: str, topic: str) -> dict:
    """partition -> the values of the topic in offset order (what really arrived)."""
    out: dict = {}
    for m in sorted(_read_topic(bootstrap, topic), key=lambda m: (m.partition, m.offset)):
        assert m.offset == len(out.setdefault(m.partition, [])), "gap in the input topic"
        out[m.partition].append(m.value if m.value is not None else b"")
    return out


def _check_outputs(bootstrap: str, topic: str, values_by_partition: dict) -> None:
    """Every valid offset has an output; every poison offset exactly its dead letter(s)."""
    outs = {(int(dict(m.headers)["source_partition"]), int(dict(m.headers)["source_offset"]))
            for m in _read_topic(bootstrap, f"{topic}.out")}
    letters = _read_topic(bootstrap, f"{topic}.dlq")
    dead = {(int(dict(m.headers)["source_partition"]), int(dict(m.headers)["source_offset"]))
            for m in letters}
    valid = {(p, o) for p, vs in values_by_partition.items() for o, v in enumerate(vs) if v not in POISON}
    poison = {(p, o) for p, vs in values_by_partition.items() for o, v in enumerate(vs) if v in POISON}
    assert valid - outs == set(), "valid records without an output"
    assert outs <= valid and dead == poison
    reasons = {dict(m.headers)["class"].decode() for m in letters}
    assert reasons == {"not JSON", "wrong type", "non-finite target", "empty", "binary", "oversized"}


def _joined(bootstrap: str, group: str, members: int, partitions_each: int) -> dict:
    owners = _owners(bootstrap, group)
    ok = len(owners) == members and all(len(ps) == partitions_each for ps in owners.values())
    return owners if ok else {}


def _reference(tmp_path, topic, bootstrap, values_by_partition) -> CheckpointStore:
    """The uninterrupted run: one in-process consumer over every partition, to the end."""
    ck = tmp_path / "ck-ref"
    cfg = load_config(_config(tmp_path, "ref", topic, bootstrap, ck, group=f"ref-{topic}", kafka_sinks=False))
    Pipeline(cfg, max_events=sum(map(len, values_by_partition.values()))).run(report=False)
    return CheckpointStore(ck)


def _assert_same(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where} keys differ"
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where} lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


def _check_models(ref: CheckpointStore, ck_dir: Path, topic: str, values_by_partition: dict) -> None:
    for p, values in values_by_partition.items():
        stream = f"{topic}:{p}"
        mine, theirs = CheckpointStore(ck_dir).load(stream), ref.load(stream)
        n_valid = sum(v not in POISON for v in values)
        assert mine["offsets"] == {stream: len(values)} == theirs["offsets"]
        assert mine["counters"]["learned"] == n_valid == theirs["counters"]["learned"]  # none twice
        _assert_same(mine["state"], theirs["state"])


def _has_confluent():
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("client", ["kafka-python", pytest.param("confluent", marks=pytest.mark.skipif(
    not _has_confluent(), reason="confluent-kafka is optional (pip install confluent-kafka)"))])
def test_sigkill_consumer_mid_stream_then_restart(tmp_path, kafka_broker, kafka_topic, procs, client):
    bs = kafka_broker.bootstrap
    topic = kafka_topic(1)
    kafka_topic(1, name=f"{topic}.out")
    kafka_topic(1, name=f"{topic}.dlq")
    ck_dir, stream, group = tmp_path / "ck", f"{topic}:0", f"g-{topic}"
    cfg = _config(tmp_path, "live", topic, bs, ck_dir, group=group, client=client)
    log1, log2 = tmp_path / "first.log", tmp_path / "second.log"
    first = procs(cfg, log1)
    _wait(lambda: _joined(bs, group, 1, 1), 60, "the consumer to join", [log1])
    feeder = _Feeder(bs, topic, {0: _events(1600, seed=1)}, rate=400)
    feeder.start()
    _wait(lambda: _offsets(ck_dir, stream) >= 300, 60, "the first checkpoints", [log1])
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert _offsets(ck_dir, stream) < 1600, "the kill should land mid-stream"
    second = procs(cfg, log2)  # waits out the dead member's session (6 s), then resumes
    feeder.finish()
    data = _topic_values(bs, topic)
    _wait(lambda: _offsets(ck_dir, stream) == len(data[0]), 90, "the restarted consumer to finish", [log2])
    _terminate(second, log2)
    _check_outputs(bs, topic, data)
    _check_models(_reference(tmp_path, topic, bs, data), ck_dir, topic, data)


def test_broker_killed_and_restarted_mid_stream(tmp_path, kafka_broker, kafka_topic, procs):
    if not kafka_broker.is_managed():
        pytest.skip("the broker was not started by scripts/kafka.sh, so this test cannot kill it")
    bs = kafka_broker.bootstrap
    topic = kafka_topic(1)
    kafka_topic(1, name=f"{topic}.out")
    kafka_topic(1, name=f"{topic}.dlq")
    ck_dir, stream, group = tmp_path / "ck", f"{topic}:0", f"g-{topic}"
    cfg = _config(tmp_path, "live", topic, bs, ck_dir, group=group)
    log = tmp_path / "consumer.log"
    consumer = procs(cfg, log)
    _wait(lambda: _joined(bs, group, 1, 1), 60, "the consumer to join", [log])
    feeder = _Feeder(bs, topic, {0: _events(1200, seed=2)}, rate=150)  # 8 s of stream
    feeder.start()
    _wait(lambda: _offsets(ck_dir, stream) >= 200, 60, "the first checkpoints", [log])
    assert _offsets(ck_dir, stream) < 1200, "the outage should be mid-stream"
    with kafka_broker.down(hard=True):  # SIGKILL the broker; restarted (same data) on exit
        time.sleep(2)
        assert consumer.poll() is None, "the consumer must wait for the broker, not exit"
    assert consumer.poll() is None
    feeder.finish()
    data = _topic_values(bs, topic)
    assert len(data[0]) == 1200
    _wait(lambda: _offsets(ck_dir, stream) == 1200, 90, "the consumer to catch up", [log])
    _terminate(consumer, log)
    _check_outputs(bs, topic, data)
    _check_models(_reference(tmp_path, topic, bs, data), ck_dir, topic, data)


def _owners(bootstrap: str, group: str) -> dict:
    """client id -> partitions it owns, once the group is stable."""
    admin = __import__("kafka").KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        g = admin.describe_groups([group])[group]
    finally:
        admin.close()
    if g["group_state"] != "Stable":
        return {}
    return {m["client_id"]: sorted(p for a in m["member_assignment"]["assigned_partitions"]
                                   for p in a["partitions"]) for m in g["members"]}


def test_scale_out_two_consumers_one_killed(tmp_path, kafka_broker, kafka_topic, procs):
    """Two members share four partitions (2 + 2), each partition with its own learner state and
    checkpoint; one member is SIGKILLed mid-stream and the other takes its partitions over from
    their last checkpoints."""
    bs = kafka_broker.bootstrap
    topic = kafka_topic(4)
    kafka_topic(1, name=f"{topic}.out")
    kafka_topic(1, name=f"{topic}.dlq")
    ck_dir, group = tmp_path / "ck", f"g-{topic}"
    members, logs = [], []
    for i in range(2):  # own run dirs (metrics), one checkpoint folder: state follows partitions
        logs.append(tmp_path / f"member{i}.log")
        members.append(procs(_config(tmp_path, f"member{i}", topic, bs, ck_dir, group=group), logs[-1]))
    by_client = {f"streamnn-{p.pid}": p for p in members}
    _wait(lambda: _joined(bs, group, 2, 2), 90, "two members owning two partitions each", logs)
    owners = _joined(bs, group, 2, 2)
    feeder = _Feeder(bs, topic, {p: _events(600, seed=10 + p) for p in range(4)}, rate=100)
    feeder.start()
    _wait(lambda: all(_offsets(ck_dir, f"{topic}:{p}") >= 100 for p in range(4)), 60,
          "a checkpoint of every partition", logs)
    victim_client, victim_parts = next(iter(owners.items()))
    victim = by_client[victim_client]
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    assert all(_offsets(ck_dir, f"{topic}:{p}") < 600 for p in victim_parts), "kill it mid-stream"
    (survivor,) = [p for p in members if p is not victim]
    feeder.finish()
    data = _topic_values(bs, topic)
    _wait(lambda: all(_offsets(ck_dir, f"{topic}:{p}") == 600 for p in range(4)), 120,
          "the survivor to finish every partition", logs)
    assert _owners(bs, group) == {f"streamnn-{survivor.pid}": [0, 1, 2, 3]}
    _terminate(survivor, logs[members.index(survivor)])
    _check_outputs(bs, topic, data)
    _check_models(_reference(tmp_path, topic, bs, data), ck_dir, topic, data)

"""KafkaSource / KafkaSink / KafkaDeadLetterSink / record / produce against a real broker.

End-to-end faults (SIGKILL, broker restart, scale-out) are in tests/test_kafka_faults.py.
"""

import json
import math
import threading
import time

import pytest

from streamnn.runtime.kafka import (KafkaDeadLetterSink, KafkaSink, kafka_source, parse_stream, produce,
                                    record, stream_id)
from streamnn.runtime.records import Record
from streamnn.runtime.schema import Decoder

pytestmark = pytest.mark.kafka


def _has_confluent():
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(params=["kafka-python", pytest.param("confluent", marks=pytest.mark.skipif(
    not _has_confluent(), reason="confluent-kafka is optional (pip install confluent-kafka)"))])
def client(request):
    return request.param


def _send(bootstrap, topic, values, keys=None, partition=None):
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for i, v in enumerate(values):
        p.send(topic, value=v, key=keys[i] if keys else None, partition=partition)
    p.flush()
    p.close()


def _read_all(bootstrap, topic, n, timeout_s=20.0):
    """Every message of `topic` (all partitions, from the start) until `n` arrived."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                      enable_auto_commit=False, group_id=None, fetch_max_wait_ms=100)
    out, deadline = [], time.monotonic() + timeout_s
    try:
        while len(out) < n and time.monotonic() < deadline:
            for msgs in c.poll(timeout_ms=200).values():
                out.extend(msgs)
    finally:
        c.close(autocommit=False)
    return out


def _committed(bootstrap, group, topic, partitions):
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return [c.committed(TopicPartition(topic, p)) for p in range(partitions)]
    finally:
        c.close(autocommit=False)


def _drain(src, n, timeout_s=20.0):
    got, deadline = [], time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        got += src.poll(500, 0.2)
    return got


def test_stream_ids_round_trip():
    assert parse_stream(stream_id("a.b:c", 3)) == ("a.b:c", 3)
    with pytest.raises(ValueError, match="topic:partition"):
        parse_stream("sensors")


def test_source_reads_every_partition_with_positions(kafka_broker, kafka_topic, client):
    topic = kafka_topic(3)
    values = [json.dumps({"i": i}).encode() for i in range(300)]
    _send(kafka_broker.bootstrap, topic, values, keys=[f"k{i % 7}".encode() for i in range(300)])
    src = kafka_source(topic, group_id=f"g-{topic}", bootstrap=kafka_broker.bootstrap, client=client)
    assert src.client_name == client
    assigned = []
    src.on_assign(assigned.append)
    try:
        got = _drain(src, 300)
        streams = {stream_id(topic, p) for p in range(3)}
        assert assigned == [streams] and src.assigned() == streams and src.exhausted is False
        assert sorted(json.loads(r.value)["i"] for r in got) == list(range(300))
        for r in got:
            assert r.stream == stream_id(r.position["topic"], r.position["partition"])
            assert r.offset == r.position["offset"] and r.key.startswith(b"k") and r.timestamp_ms > 0
        for s in streams:  # offsets 0..n-1 in order within each partition
            offs = [r.offset for r in got if r.stream == s]
            assert offs == list(range(len(offs)))
    finally:
        src.close()


def test_seek_on_assign_and_only_explicit_commits(kafka_broker, kafka_topic, client):
    topic = kafka_topic(2)
    for p in range(2):
        _send(kafka_broker.bootstrap, topic, [b'{"v": 1}'] * 20, partition=p)
    group = f"g-{topic}"
    src = kafka_source([topic], group_id=group, bootstrap=kafka_broker.bootstrap, client=client)
    src.on_assign(lambda streams: src.seek(stream_id(topic, 0), 15))  # "checkpointed" position
    try:
        got = _drain(src, 5 + 20)
        assert sorted(r.offset for r in got if r.position["partition"] == 0) == list(range(15, 20))
        assert len([r for r in got if r.position["partition"] == 1]) == 20  # no checkpoint: earliest
        src.commit({stream_id(topic, 0): 20, "not-ours:0": 3})
    finally:
        src.close()
    # only the explicit commit reached Kafka: close() committed nothing for partition 1
    assert _committed(kafka_broker.bootstrap, group, topic, 2) == [20, None]
    # a new member without a checkpoint starts at the committed offset
    again = kafka_source(topic, group_id=group, bootstrap=kafka_broker.bootstrap, client=client)
    try:
        got = _drain(again, 20, timeout_s=8)
        assert {r.position["partition"] for r in got} == {1}
    finally:
        again.close()


def test_revoke_runs_before_handover_and_can_commit(kafka_broker, kafka_topic, client):
    """A joins alone; B joins: A's on_revoke commits, then B starts exactly there."""
    topic = kafka_topic(2)
    for p in range(2):
        _send(kafka_broker.bootstrap, topic, [json.dumps({"p": p, "i": i}).encode() for i in range(50)],
              partition=p)
    group = f"g-{topic}"
    kw = dict(group_id=group, bootstrap=kafka_broker.bootstrap, session_timeout_ms=6000, client=client)
    a, b = kafka_source(topic, **kw), kafka_source(topic, **kw)
    pos_a, log, stop = {}, [], threading.Event()

    def revoke(streams):  # "checkpoint" what was read so far, then commit it
        log.append(("revoke", sorted(streams)))
        a.commit({s: pos_a[s] for s in streams if s in pos_a})

    a.on_revoke(revoke)
    a.on_assign(lambda s: log.append(("assign-a", sorted(s))))
    b.on_assign(lambda s: log.append(("assign-b", sorted(s))))
    got_b, t = [], None
    try:
        # A reads 10 of each partition, one record at a time, then keeps polling (heartbeats)
        while sum(pos_a.values()) < 20:
            for r in a.poll(1, 0.2):
                if pos_a.get(r.stream, 0) < 10:
                    pos_a[r.stream] = r.offset + 1
                else:
                    a.seek(r.stream, pos_a[r.stream])
        assert pos_a == {stream_id(topic, 0): 10, stream_id(topic, 1): 10}

        def keep_polling():
            while not stop.is_set():
                for r in a.poll(1, 0.1):
                    a.seek(r.stream, pos_a[r.stream])  # pretend to stall: never advance

        t = threading.Thread(target=keep_polling, daemon=True)
        t.start()
        deadline = time.monotonic() + 30
        while len(got_b) < 40 and time.monotonic() < deadline:
            got_b += b.poll(100, 0.2)
        owned_b = b.assigned()
    finally:
        stop.set()
        if t is not None:
            t.join(10)
        a.close()
        b.close()
    assert log[0][0] == "assign-a" and ("revoke", sorted(pos_a)) in log
    assert log.index(("revoke", sorted(pos_a))) < [e[0] for e in log].index("assign-b")
    (s_b,) = owned_b
    offs = sorted(r.offset for r in got_b if r.stream == s_b)
    assert offs and offs[0] == 10 and offs == list(range(10, 50))  # from A's commit, none skipped


def test_sink_keys_headers_and_topic_template(kafka_broker, kafka_topic, client):
    src_topic = kafka_topic(1)
    sink = KafkaSink(topic="{topic}.scores", bootstrap=kafka_broker.bootstrap, client=client)
    outs = [{"position": {"topic": src_topic, "partition": 0, "offset": i}, "key": f"m{i}",
             "score": 0.5 * i} for i in range(5)]
    sink.emit(outs)
    sink.flush()
    sink.close()
    got = _read_all(kafka_broker.bootstrap, f"{src_topic}.scores", 5)
    assert [json.loads(m.value) for m in got] == outs
    assert [m.key for m in got] == [f"m{i}".encode() for i in range(5)]
    h = dict(got[3].headers)
    assert h["source_topic"] == src_topic.encode() and h["source_partition"] == b"0"
    assert h["source_offset"] == b"3"



def test_sink_keys_of_any_json_value_never_stop_the_sink(kafka_broker, kafka_topic, client):
    """A schema key field holding an object or a list (unhashable) raised TypeError in the sink,
    a string with a lone surrogate (valid JSON: "\\ud800") UnicodeEncodeError: the consumer
    stopped at that record on every restart."""
    src_topic = kafka_topic(1)
    sink = KafkaSink(topic="{topic}.out", bootstrap=kafka_broker.bootstrap, client=client)
    keys = [{"m": 1}, [1, "a"], "\ud800x", "m", 2.5]
    outs = [{"position": {"topic": src_topic, "partition": 0, "offset": i}, "key": k} for i, k in enumerate(keys)]
    sink.emit(outs)
    sink.flush()
    sink.close()
    got = _read_all(kafka_broker.bootstrap, f"{src_topic}.out", len(keys))
    assert [m.key for m in got] == [b'{"m":1}', b'[1,"a"]', "\ud800x".encode("utf-8", "surrogatepass"), b"m", b"2.5"]
    assert [json.loads(m.value)["key"] for m in got] == keys


def test_a_huge_key_within_max_bytes_is_a_dead_letter_not_a_stopped_consumer(tmp_path, kafka_broker, kafka_topic):
    """End to end: a 900 kB key field in a record within max_bytes made a 1.8 MB output the sink
    could not send (MessageSizeTooLargeError), at that record on every restart."""
    from streamnn.runtime.config import parse
    from streamnn.runtime.pipeline import Pipeline

    topic = kafka_topic(1)
    big = json.dumps({"x": 2.0, "y": 1.0, "k": "z" * 900_000}).encode()
    _send(kafka_broker.bootstrap, topic, [b'{"x": 1.0, "y": 1.0, "k": "m1"}', big, b'{"x": 3.0, "y": 0.0, "k": "m2"}'])
    kafka = {"type": "kafka", "bootstrap": kafka_broker.bootstrap}
    raw = {"name": "big-key", "source": {**kafka, "topics": [topic], "group_id": f"g-{topic}"},
           "schema": {"features": ["x"], "target": "y", "key": "k"},
           "learner": {"class": "MLPRegressor", "params": {"hidden": [4], "seed": 0}},
           "run": {"dir": str(tmp_path / "r")}, "report": {"on_exit": False},
           "sinks": [{**kafka, "topic": "{topic}.out"}], "dead_letters": dict(kafka)}
    summary = Pipeline(parse(raw), max_events=3).run(report=False)
    assert summary["events_out"] == 2 and summary["dead_letters"] == 1
    outs = _read_all(kafka_broker.bootstrap, f"{topic}.out", 2)
    assert [m.key for m in outs] == [b"m1", b"m2"]
    (letter,) = _read_all(kafka_broker.bootstrap, f"{topic}.dlq", 1)
    assert dict(letter.headers)["class"] == b"too long"

POISON = {
    "not JSON": b'{"temperature": 71.2',
    "wrong type": b'{"temperature": "hot", "id": 1}',
    "non-finite target": b'{"temperature": 71.0, "label": NaN}',
    "oversized": b'{"temperature": 1.0, "pad": "' + b"x" * 1_000_100 + b'"}',
    "empty": b"",
    "binary": bytes(range(256)) * 4,
    "not an object": b"[1, 2, 3]",
}


def test_poison_messages_reach_the_dlq_with_reasons(kafka_broker, kafka_topic, client):
    topic = kafka_topic(1)
    good = [json.dumps({"temperature": 70.0 + i, "label": 0}).encode() for i in range(10)]
    stream = good[:5] + list(POISON.values()) + good[5:]
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, max_request_size=2_000_000)
    for v in stream:
        p.send(topic, value=v, key=b"m1")
    p.send(topic, value=None, key=b"m1")  # a tombstone: an empty record
    p.flush()
    p.close()
    dec = Decoder(features=["temperature"], target="label")
    src = kafka_source(topic, group_id=f"g-{topic}", bootstrap=kafka_broker.bootstrap, client=client)
    dlq = KafkaDeadLetterSink(bootstrap=kafka_broker.bootstrap, max_value_bytes=500_000, client=client)
    try:
        recs = _drain(src, len(stream) + 1)
        batch, errors = dec.decode_batch(recs)
        for r, reason in errors:
            dlq.send(r, reason)
    finally:
        src.close()
        dlq.close()
    assert batch.X[:, 0].tolist() == [70.0 + i for i in range(10)]
    letters = _read_all(kafka_broker.bootstrap, f"{topic}.dlq", len(POISON) + 1)
    assert len(letters) == len(POISON) + 1
    classes = [dict(m.headers)["class"].decode() for m in letters]
    assert classes == list(POISON) + ["empty"]
    for m, (cls, raw) in zip(letters, POISON.items()):
        h = dict(m.headers)
        assert h["reason"].decode().startswith(cls) and h["source_topic"] == topic.encode()
        assert int(h["source_offset"]) == 5 + list(POISON).index(cls) and m.key == b"m1"
        if cls == "oversized":
            assert m.value == raw[:500_000] and int(h["truncated_from"]) == len(raw)
        else:
            assert m.value == raw


def test_produce_and_record_round_trip(tmp_path, kafka_broker, kafka_topic):
    csv_path = tmp_path / "m.csv"
    rows = [("2013-12-02 21:15:00", 73.96), ("2013-12-02 21:20:00", 74.93), ("x", math.pi)]
    csv_path.write_text("timestamp,value\n" + "".join(f"{t},{v!r}\n" for t, v in rows))
    topic = kafka_topic(1)
    assert produce(csv_path, topic, kafka_broker.bootstrap) == 3
    jsonl = tmp_path / "rec.jsonl"
    assert record(topic, jsonl, kafka_broker.bootstrap, idle_timeout_s=1.0) == 3
    assert [json.loads(line) for line in jsonl.read_text().splitlines()] == [
        {"timestamp": t, "value": v} for t, v in rows]
    # and back: a recorded file is a live demo again (looped, keyed, paced, new topic created)
    t2 = f"{topic}-again"
    t0 = time.monotonic()
    assert produce(jsonl, t2, kafka_broker.bootstrap, loop=True, limit=7, rate=50,
                   key_field="timestamp", partitions=2) == 7
    assert time.monotonic() - t0 >= 6 / 50
    msgs = _read_all(kafka_broker.bootstrap, t2, 7)
    assert sorted(json.loads(m.value)["value"] for m in msgs) == sorted([v for _, v in rows] * 2 + [73.96])
    assert {m.key for m in msgs} == {t.encode() for t, _ in rows}
    assert record(t2, tmp_path / "two.jsonl", kafka_broker.bootstrap, max_messages=4,
                  idle_timeout_s=1.0) == 4  # stops at max_messages
    assert len((tmp_path / "two.jsonl").read_text().splitlines()) == 4
    kafka_broker.admin().delete_topics([t2])


def test_record_of_a_missing_topic_names_the_fix(tmp_path, kafka_broker):
    with pytest.raises(ValueError, match="does not exist"):
        record("streamnn-no-such-topic", tmp_path / "x.jsonl", kafka_broker.bootstrap, idle_timeout_s=0.5)


def test_dead_letter_of_a_record_from_a_file_source(kafka_broker, kafka_topic):
    """The DLQ topic can be fixed (a file source has no topic); the raw bytes are kept."""
    topic = kafka_topic(1)
    dlq = KafkaDeadLetterSink(topic=topic, bootstrap=kafka_broker.bootstrap)
    dlq.send(Record(b"\xff\xfe", {"file": "a.jsonl", "line": 3}, "a.jsonl", 3), "binary: not UTF-8")
    dlq.close()
    (m,) = _read_all(kafka_broker.bootstrap, topic, 1)
    assert m.value == b"\xff\xfe" and dict(m.headers)["class"] == b"binary"


def test_source_waits_for_a_topic_that_does_not_exist_yet(kafka_broker, kafka_topic, caplog):
    name = f"streamnn-test-late-{time.monotonic_ns()}"
    src = kafka_source(name, group_id=f"g-{name}", bootstrap=kafka_broker.bootstrap)
    try:
        assert src.poll(10, 0.1) == [] and src.assigned() == set()
        assert "do not exist" in caplog.text
        kafka_topic(1, name=name)
        _send(kafka_broker.bootstrap, name, [b'{"a": 1}'] * 3)
        assert [r.offset for r in _drain(src, 3)] == [0, 1, 2]
    finally:
        src.close()


def test_a_consumer_left_without_partitions_says_so(kafka_broker, kafka_topic, caplog, monkeypatch):
    """A subscribed consumer that owns no partition for a while (here: one of two members of a group
    with one partition) warns, naming the topic, the group and the likely causes, instead of
    looking like an idle stream; the member that owns the partition keeps no such state."""
    import streamnn.runtime.kafka_consumer as kc

    monkeypatch.setattr(kc, "UNASSIGNED_WARN_S", 2.0)
    topic = kafka_topic(1)
    _send(kafka_broker.bootstrap, topic, [b'{"a": 1}'] * 3)
    group = f"g-{topic}"
    a = kafka_source(topic, group_id=group, bootstrap=kafka_broker.bootstrap)
    b = None
    try:
        assert len(_drain(a, 3)) == 3
        b = kafka_source(topic, group_id=group, bootstrap=kafka_broker.bootstrap)
        deadline = time.monotonic() + 90
        with caplog.at_level("WARNING", logger="streamnn.runtime.kafka"):
            while time.monotonic() < deadline and "no partition of" not in caplog.text:
                for src in (a, b):   # both keep polling, as two running consumers would
                    src.poll(10, 0.2)
            stable_since, owners = time.monotonic(), None
            while time.monotonic() < deadline and time.monotonic() - stable_since < 3.0:
                for src in (a, b):   # until the group has settled (a rebalance may move the partition)
                    src.poll(10, 0.2)
                now = (frozenset(a.assigned()), frozenset(b.assigned()))
                if now != owners:
                    stable_since, owners = time.monotonic(), now
        warned = [r.getMessage() for r in caplog.records if "no partition of" in r.getMessage()]
        assert warned and repr(group) in warned[0] and topic in warned[0]
        owner, idle = (a, b) if a.assigned() else (b, a)
        assert owner.assigned() == {stream_id(topic, 0)} and idle.assigned() == set()
        assert idle._unassigned_since is not None and owner._unassigned_since is None
    finally:
        a.close()
        if b is not None:
            b.close()

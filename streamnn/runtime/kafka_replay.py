"""Between Kafka topics and replay files: ``streamnn record TOPIC FILE`` / ``streamnn produce FILE TOPIC``.

Any live stream becomes a replay test (:func:`record`), any replay file a live demo (:func:`produce`).
A replay file is JSON Lines (one JSON object per line) or CSV with a header row.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "s.csv")
>>> _ = open(path, "w").write("timestamp,value\\n2013-12-02 21:15:00,73.96\\n")
>>> [json.loads(v) for v, _ in _read_messages(path)]
[{'timestamp': '2013-12-02 21:15:00', 'value': 73.96}]
"""

from __future__ import annotations

import csv
import json
import logging
import os
import socket
import time
import warnings
from typing import Iterator, Optional

with warnings.catch_warnings():  # kafka-python 3.0 emits ~200 DeprecationWarnings on import
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import KafkaError
    from kafka.structs import TopicPartition

from .kafka_common import default_bootstrap, ensure_topic
from .sources import open_file

__all__ = ["record", "produce", "require_broker", "KafkaUnavailable"]

log = logging.getLogger("streamnn.runtime.kafka")


class KafkaUnavailable(ConnectionError):
    """No Kafka broker answers at the bootstrap address; the message says how to get one."""


def _fix(bootstrap: str) -> str:
    return (f"start one with `bash scripts/kafka.sh start`, or point --bootstrap (or "
            f"$STREAMNN_KAFKA_BOOTSTRAP) at a running broker (now {bootstrap})")


def require_broker(bootstrap: str, timeout_s: float = 3.0) -> None:
    """Raise `KafkaUnavailable` within `timeout_s` (per address) when no bootstrap address accepts
    a connection, instead of the Kafka client's retries (tens of seconds, then a traceback).

    >>> try:
    ...     require_broker("127.0.0.1:1")
    ... except KafkaUnavailable as e:
    ...     print(str(e).split(";")[0], "|", "bash scripts/kafka.sh start" in str(e))
    no Kafka broker at 127.0.0.1:1 (127.0.0.1:1: Connection refused) | True
    """
    errors = []
    for address in bootstrap.split(","):
        address = address.strip()
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=timeout_s):
                return
        except ValueError:
            errors.append(f"{address}: not host:port")
        except OSError as e:
            errors.append(f"{address}: {e.strerror or type(e).__name__}")
    raise KafkaUnavailable(f"no Kafka broker at {bootstrap} ({'; '.join(errors)}); {_fix(bootstrap)}")


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _read_messages(path) -> Iterator[tuple[bytes, Optional[dict]]]:
    """Yield ``(value bytes, parsed object or None)`` per record of a JSONL or CSV file."""
    path = os.fspath(path)
    if path.endswith((".csv", ".csv.gz")):
        opener = __import__("gzip").open if path.endswith(".gz") else open
        with opener(path, "rt", newline="") as f:
            for row in csv.DictReader(f):
                obj = {k: _number(v) for k, v in row.items() if k is not None}
                yield json.dumps(obj, separators=(",", ":")).encode(), obj
        return
    with open_file(path) as f:
        for line in f:
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None  # replayed as-is: a poison record stays a poison record
            yield line, obj if isinstance(obj, dict) else None


def produce(path, topic: str, bootstrap: Optional[str] = None, loop: bool = False,
            rate: Optional[float] = None, key_field: Optional[str] = None, partitions: int = 1,
            create: bool = True, limit: Optional[int] = None) -> int:
    """Write a JSONL/CSV file to ``topic``, one message per record; returns the count sent.

    Parameters
    ----------
    loop
        Start over at the end of the file, forever (a live demo); stop with Ctrl-C/SIGTERM.
    rate
        Messages per second (paced against a fixed schedule); None sends as fast as possible.
    key_field
        Use this field of each record as the message key (so records of one key share a
        partition); records without it get no key.
    partitions, create
        Create ``topic`` with this many partitions if it does not exist.
    limit
        Stop after this many messages.
    """

    bootstrap = bootstrap or default_bootstrap()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist; give a JSONL or CSV file to produce")
    require_broker(bootstrap)
    try:
        if create:
            ensure_topic(bootstrap, topic, partitions, timeout_s=10.0)
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10,
                                 batch_size=262144, reconnect_backoff_max_ms=1000)
    except KafkaError as e:
        raise KafkaUnavailable(f"Kafka at {bootstrap} does not answer ({type(e).__name__}: {e}); "
                               f"{_fix(bootstrap)}") from None
    sent, start = 0, time.monotonic()
    try:
        while True:
            n_file = 0
            for value, obj in _read_messages(path):
                if limit is not None and sent >= limit:
                    return sent
                if rate:
                    delay = start + sent / float(rate) - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                key = None
                if key_field and obj is not None and obj.get(key_field) is not None:
                    key = str(obj[key_field]).encode()
                producer.send(topic, value=value, key=key)
                sent += 1
                n_file += 1
            if not loop or n_file == 0:
                return sent
    finally:
        producer.flush()
        producer.close()
        log.info("produced %d messages from %s to %s", sent, path, topic)


def record(topic: str, path, bootstrap: Optional[str] = None, max_messages: Optional[int] = None,
           idle_timeout_s: float = 5.0, from_beginning: bool = True) -> int:
    """Write the messages of ``topic`` to a JSONL replay file; returns the count written.

    Reads every partition (no consumer group, nothing committed) from the beginning (or only
    new messages with ``from_beginning=False``) until ``max_messages`` or until no message
    arrived for ``idle_timeout_s``. Partitions are interleaved in arrival order; each keeps its
    own order. Values that are not JSON objects cannot be a JSONL line: they are skipped and
    counted in a warning.
    """

    bootstrap = bootstrap or default_bootstrap()
    require_broker(bootstrap)
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                 isolation_level="read_committed", fetch_max_wait_ms=100)
    except KafkaError as e:
        raise KafkaUnavailable(f"Kafka at {bootstrap} does not answer ({type(e).__name__}: {e}); "
                               f"{_fix(bootstrap)}") from None
    written = skipped = 0
    tmp = f"{os.fspath(path)}.tmp"
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise ValueError(f"topic {topic!r} does not exist on {bootstrap}; check the name "
                             "with `bash scripts/kafka.sh` tooling or create it first")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*tps)
        last = time.monotonic()
        with open(tmp, "w") as f:
            while max_messages is None or written < max_messages:
                batches = consumer.poll(timeout_ms=200, max_records=500)
                if not batches:
                    if time.monotonic() - last >= idle_timeout_s:
                        break
                    continue
                last = time.monotonic()
                for messages in batches.values():
                    for m in messages:
                        if max_messages is not None and written >= max_messages:
                            break
                        try:
                            obj = json.loads(m.value) if m.value else None
                        except ValueError:
                            obj = None
                        if not isinstance(obj, dict):
                            skipped += 1
                            continue
                        f.write(json.dumps(obj, separators=(",", ":")) + "\n")
                        written += 1
        os.replace(tmp, path)
    finally:
        consumer.close(autocommit=False)
        if os.path.exists(tmp):
            os.unlink(tmp)
    if skipped:
        log.warning("record %s: skipped %d messages that are not JSON objects", topic, skipped)
    return written

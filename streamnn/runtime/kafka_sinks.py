"""Kafka sinks: outputs (predictions, scores) and dead letters, written with acks=all.

Both return from `flush()` / `send()` only when the broker acknowledged every message, so a
checkpoint taken after them never skips an output, and a bad record counts as handled only once
its dead letter is durable. While the broker is away they wait (logging), then re-send what
expired; a message Kafka can never take (e.g. too large) raises an error naming the fix.

>>> sink = KafkaSink(topic="{topic}.scores")      # nothing connects before the first message
>>> sink._topic_for("sensors"), _headers({"topic": "sensors", "partition": 2, "offset": 7})
('sensors.scores', [('source_topic', b'sensors'), ('source_partition', b'2'), ('source_offset', b'7')])
"""

from __future__ import annotations

import logging
import time
from typing import Optional

from .kafka import KafkaProducer, KafkaTimeoutError, default_bootstrap, ensure_topic
from .schema import reason_class
from .sinks import dumps

__all__ = ["KafkaSink", "KafkaDeadLetterSink"]

log = logging.getLogger("streamnn.runtime.kafka")


def _to_bytes(v) -> Optional[bytes]:
    if v is None or isinstance(v, bytes):
        return v
    return str(v).encode()


def _keys_as_bytes(keys: list) -> list:
    """Message keys as bytes (each distinct key encoded once)."""
    if all(k is None or type(k) is bytes for k in keys):
        return keys
    done: dict = {}
    out = []
    for k in keys:
        b = k if k is None or type(k) is bytes else done.get(k)
        if b is None and k is not None:
            b = done[k] = _to_bytes(k)
        out.append(b)
    return out


def _headers(pos: dict) -> list:
    return [(f"source_{k}", str(pos[k]).encode()) for k in ("topic", "partition", "offset") if k in pos]


class _Producer:
    """A lazily opened ``KafkaProducer`` (acks=all, idempotent) that creates missing topics.

    `send` queues a message; `flush` waits until every queued message is acknowledged or has
    failed, and returns the failed ones as ``(topic, value, key, headers, error)``.
    """

    def __init__(self, bootstrap, create_topics, partitions, producer_config):
        self._bootstrap = bootstrap or default_bootstrap()
        self._create = create_topics
        self._partitions = partitions
        self._config = producer_config or {}
        self._p = None
        self._known: set = set()
        self._failed: list = []

    def send(self, topic, value, key=None, headers=None) -> None:
        self._ready(topic)
        self._send(topic, value, key, headers or [])

    def send_many(self, topic, values: list, keys: list, headers: list) -> None:
        """`send` for many messages to one topic."""
        self._ready(topic)
        self._send_many(topic, values, keys, headers)

    def _ready(self, topic) -> None:
        if self._p is None:
            self._p = self._open()
        if topic not in self._known:
            if self._create:
                ensure_topic(self._bootstrap, topic, self._partitions)
            self._known.add(topic)

    def flush(self, what: str, max_wait_s: Optional[float]) -> list:
        start = time.monotonic()
        while self._p is not None and not self._flush(5.0):
            waited = time.monotonic() - start
            if max_wait_s is not None and waited >= max_wait_s:
                raise KafkaTimeoutError(f"{what} not acknowledged after {waited:.0f} s (max_wait_s)")
            log.warning("%s not acknowledged after %.0f s; still waiting for the broker", what, waited)
        failed, self._failed = self._failed, []
        return failed

    # kafka-python specifics (ConfluentProducer overrides these four)
    def _open(self):
        cfg = dict(bootstrap_servers=self._bootstrap, acks="all", linger_ms=5, batch_size=262144,
                   reconnect_backoff_max_ms=1000, max_block_ms=30000)
        cfg.update(self._config)
        return KafkaProducer(**cfg)

    def _send(self, topic, value, key, headers) -> None:
        fut = self._p.send(topic, value=value, key=key, headers=headers)
        fut.add_errback(lambda exc: self._failed.append((topic, value, key, headers, exc)))

    def _send_many(self, topic, values, keys, headers) -> None:
        for value, key, hdrs in zip(values, keys, headers):
            self._send(topic, value, key, hdrs)

    def _flush(self, timeout_s: float) -> bool:
        try:
            self._p.flush(timeout=timeout_s)
            return True
        except KafkaTimeoutError:
            return False

    def close(self) -> None:
        if self._p is not None:
            self._p.close(timeout=30)
            self._p = None


def _producer(client, *args) -> _Producer:
    if client == "confluent":
        from .kafka_confluent import ConfluentProducer

        return ConfluentProducer(*args)
    if client != "kafka-python":
        raise ValueError(f"client={client!r}: use 'kafka-python' or 'confluent'")
    return _Producer(*args)


def _retriable(exc) -> bool:
    r = getattr(exc, "retriable", True)  # kafka-python: a class attribute; confluent: a method
    return bool(r() if callable(r) else r)


def _deliver(producer: _Producer, what: str, max_wait_s: Optional[float]) -> None:
    """Flush; re-send what expired while the broker was away until everything is acknowledged."""
    failed = producer.flush(what, max_wait_s)
    while failed:
        exc = failed[0][-1]
        if not _retriable(exc):
            raise RuntimeError(f"Kafka refused {len(failed)} {what} ({exc}); for a too-large message "
                               "raise the topic's max.message.bytes or lower max_value_bytes") from None
        log.warning("%d %s failed (%s); re-sending", len(failed), what, exc)
        for topic, value, key, headers, _ in failed:
            producer.send(topic, value, key, headers)
        failed = producer.flush(what, max_wait_s)


class KafkaSink:
    """Write outputs (predictions, scores) as JSON to a topic, keyed by the output's ``key``.

    Parameters
    ----------
    topic
        Output topic; ``{topic}`` is replaced by each output's source topic.
    bootstrap
        Default :func:`~streamnn.runtime.kafka.default_bootstrap`.
    create_topics, partitions
        Create a missing output topic with this many partitions (brokers with
        ``auto.create.topics.enable=false`` would make the producer block).
    producer_config
        Extra producer settings (kafka-python names; librdkafka names with ``client="confluent"``).
    max_wait_s
        Give up (raise) when the broker has not acknowledged for this long; None waits for ever.
    client
        "kafka-python" or "confluent" (optional dependency; several times faster).

    Headers carry ``source_topic``, ``source_partition``, ``source_offset`` from the output's
    ``position``.
    """

    def __init__(self, topic: str = "{topic}.predictions", bootstrap: Optional[str] = None,
                 create_topics: bool = True, partitions: int = 1, producer_config: Optional[dict] = None,
                 max_wait_s: Optional[float] = None, client: str = "kafka-python"):
        self.topic = topic
        self.bootstrap = bootstrap
        self.create_topics = create_topics
        self.partitions = partitions
        self.producer_config = producer_config
        self.max_wait_s = max_wait_s
        self.client = client
        self._producer = _producer(client, bootstrap, create_topics, partitions, producer_config)
        self._topics: dict = {}

    def _topic_for(self, source_topic: str) -> str:
        t = self._topics.get(source_topic)
        if t is None:
            t = self._topics[source_topic] = self.topic.format(topic=source_topic)
        return t

    def emit(self, outputs: list) -> None:
        send = self._producer.send
        if hasattr(outputs, "lines"):   # an OutputBatch: JSON texts and keys without the dicts
            self._emit_batch(outputs)
            return
        for out in outputs:
            pos = out.get("position") or {}
            send(self._topic_for(pos.get("topic", "streamnn")), dumps(out).encode(),
                 _to_bytes(out.get("key")), _headers(pos))

    def _emit_batch(self, outputs) -> None:
        """The outputs of an `OutputBatch`: the messages of each source stream as one batch."""
        recs, keys = outputs.records, outputs.output_keys()
        kb = _keys_as_bytes(keys)
        values = [t.encode() for t in outputs.lines()]
        streams = {r.stream for r in recs}
        pos = recs[0].position if len(streams) == 1 else None
        if type(pos) is dict and list(pos) == ["topic", "partition", "offset"]:   # a Kafka stream
            head = _headers(pos)[:2]
            headers = [head + [("source_offset", str(r.position["offset"]).encode())] for r in recs]
            self._producer.send_many(self._topic_for(pos["topic"]), values, kb, headers)
            return
        for v, k, r in zip(values, kb, recs):
            p = r.position or {}
            self._producer.send(self._topic_for(p.get("topic", "streamnn")), v, k, _headers(p))

    def flush(self) -> None:
        """Return once every output emitted so far is acknowledged."""
        _deliver(self._producer, "outputs", self.max_wait_s)

    def close(self) -> None:
        self.flush()
        self._producer.close()


class KafkaDeadLetterSink:
    """Send every bad record's raw bytes and the reason to a dead-letter topic.

    ``topic`` defaults to ``"{topic}.dlq"`` (``{topic}``: the record's source topic).
    :meth:`send` returns only once the broker acknowledged the write: the record counts as
    handled then, and not before. The message keeps the record's key; its headers are
    ``reason``, ``class`` (the reason's text before its first colon), ``source_topic``,
    ``source_partition`` and ``source_offset``. Values longer than ``max_value_bytes`` are cut
    (header ``truncated_from``: the original length). Other parameters as in :class:`KafkaSink`.
    """

    def __init__(self, topic: str = "{topic}.dlq", bootstrap: Optional[str] = None,
                 create_topics: bool = True, partitions: int = 1, max_value_bytes: int = 900_000,
                 producer_config: Optional[dict] = None, max_wait_s: Optional[float] = None,
                 client: str = "kafka-python"):
        self.topic = topic
        self.bootstrap = bootstrap
        self.create_topics = create_topics
        self.partitions = partitions
        self.max_value_bytes = max_value_bytes
        self.producer_config = producer_config
        self.max_wait_s = max_wait_s
        self.client = client
        self._producer = _producer(client, bootstrap, create_topics, partitions, producer_config)

    def send(self, record, reason: str) -> None:
        pos = record.position or {}
        topic = self.topic.format(topic=pos.get("topic", record.stream.rpartition(":")[0] or "streamnn"))
        value = record.value if isinstance(record.value, bytes) else _to_bytes(record.value) or b""
        headers = [("reason", str(reason).encode("utf-8", "replace")[:4096]),
                   ("class", reason_class(str(reason)).encode("utf-8", "replace")[:256])] + _headers(pos)
        if len(value) > self.max_value_bytes:
            headers.append(("truncated_from", str(len(value)).encode()))
            value = value[: self.max_value_bytes]
        self._producer.send(topic, value, _to_bytes(record.key), headers)
        _deliver(self._producer, f"dead letter for {record.stream}@{record.offset}", self.max_wait_s)

    def flush(self) -> None:
        _deliver(self._producer, "dead letters", self.max_wait_s)

    def close(self) -> None:
        self._producer.close()

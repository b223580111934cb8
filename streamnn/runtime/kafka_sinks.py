"""Kafka sinks: outputs (predictions, scores) and dead letters, written with acks=all.

Both return from `flush()` / `send()` only when the broker acknowledged every message, so a
checkpoint taken after them never skips an output, and a bad record counts as handled only once
its dead letter is durable. While the broker is away they wait (logging), then re-send what
expired; a message Kafka can never take (e.g. too large) raises an error naming the fix.

>>> sink = KafkaSink(topic="{topic}.scores")      # nothing connects before the first message
>>> sink._topic_for("sensors")
'sensors.scores'
"""

from __future__ import annotations

from typing import Optional

from .contracts import DeadLetters, Sink
from .kafka_common import check_client
from .kafka_confluent import ConfluentProducer
from .kafka_producer import Producer, deliver, keys_as_bytes, to_bytes
from .outputs import OutputBatch, lines, source_headers
from .schema import reason_class

__all__ = ["KafkaSink", "KafkaDeadLetterSink"]

def _producer(client, *args) -> Producer:
    return ConfluentProducer(*args) if check_client(client) == "confluent" else Producer(*args)


class KafkaSink(Sink):
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

    def emit(self, outputs) -> None:
        """Send an `OutputBatch` (any sequence of output dicts works too): the messages of one
        Kafka source stream go as one batch."""
        if not len(outputs):
            return
        values = [t.encode() for t in lines(outputs)]
        if isinstance(outputs, OutputBatch):
            keys, recs = outputs.output_keys(), outputs.records
            positions = [r.position for r in recs]
            one = len({r.stream for r in recs}) == 1
        else:
            keys, positions = [o.get("key") for o in outputs], [o.get("position") or {} for o in outputs]
            one = False
        kb = keys_as_bytes(keys)
        pos = positions[0]
        if one and type(pos) is dict and list(pos) == ["topic", "partition", "offset"]:   # a Kafka stream
            head = source_headers(pos)[:2]
            headers = [head + [("source_offset", str(p["offset"]).encode())] for p in positions]
            self._producer.send_many(self._topic_for(pos["topic"]), values, kb, headers)
            return
        for v, k, p in zip(values, kb, positions):
            p = p or {}
            self._producer.send(self._topic_for(p.get("topic", "streamnn")), v, k, source_headers(p))

    def flush(self) -> None:
        """Return once every output emitted so far is acknowledged."""
        deliver(self._producer, "outputs", self.max_wait_s)

    def close(self) -> None:
        self.flush()
        self._producer.close()


class KafkaDeadLetterSink(DeadLetters):
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
        value = record.value if isinstance(record.value, bytes) else to_bytes(record.value) or b""
        headers = [("reason", str(reason).encode("utf-8", "replace")[:4096]),
                   ("class", reason_class(str(reason)).encode("utf-8", "replace")[:256])] + source_headers(pos)
        if len(value) > self.max_value_bytes:
            headers.append(("truncated_from", str(len(value)).encode()))
            value = value[: self.max_value_bytes]
        self._producer.send(topic, value, to_bytes(record.key), headers)
        deliver(self._producer, f"dead letter for {record.stream}@{record.offset}", self.max_wait_s)

    def flush(self) -> None:
        deliver(self._producer, "dead letters", self.max_wait_s)

    def close(self) -> None:
        self._producer.close()

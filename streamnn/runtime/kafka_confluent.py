"""`KafkaSource` and the sinks' producer on confluent-kafka (librdkafka): the same contracts, faster.

Optional: ``pip install confluent-kafka``. Select it with ``kafka_source(..., client="confluent")``
(``KafkaSink`` / ``KafkaDeadLetterSink`` likewise), or ``client = "confluent"`` in a pipeline's
``[source]``, ``[[sinks]]`` and ``[dead_letters]``; everything else (seek on assign, commit
only after a checkpoint, no commit on close) behaves as with kafka-python. ``consumer_config``
takes librdkafka property names here (``{"fetch.wait.max.ms": 50}``).

librdkafka serves rebalance callbacks on the thread that polls, so the loop's ``on_assign`` /
``on_revoke`` callbacks run inside :meth:`poll`, and a commit from ``on_revoke`` is synchronous.

>>> ConfluentKafkaSource.client_name
'confluent'
"""

from __future__ import annotations

import logging
import os
from typing import Optional

from .kafka_common import default_bootstrap, parse_stream, stream_id
from .kafka_consumer import KafkaSource
from .kafka_producer import Producer
from .records import Record

__all__ = ["ConfluentKafkaSource", "ConfluentProducer"]

log = logging.getLogger("streamnn.runtime.kafka")


def _ck():
    try:
        import confluent_kafka
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("client='confluent' needs confluent-kafka: `pip install confluent-kafka`, "
                          "or use the default client='kafka-python'") from None
    return confluent_kafka


class ConfluentKafkaSource(KafkaSource):
    """A consumer-group member on confluent-kafka; see :class:`KafkaSource` for the parameters."""

    client_name = "confluent"

    # -- the source contract ----------------------------------------------
    def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list:
        consumer = self._open()
        n = max(1, min(int(max_records), int(self.max_poll_records)))
        # consume(n, timeout) waits for n messages: take what is there, else block for the first
        messages = consumer.consume(n, 0)
        if not messages:
            first = consumer.poll(timeout_s)
            if first is not None:
                messages = [first] + consumer.consume(n - 1, 0) if n > 1 else [first]
        self._raise_listener_error()
        out = []
        append, sids = out.append, self._sids
        for m in messages:
            if m.error() is not None:
                log.warning("Kafka consumer error: %s", m.error())
                continue
            topic, part, off = m.topic(), m.partition(), m.offset()
            sid = sids.get((topic, part))
            if sid is None:
                sid = sids[(topic, part)] = stream_id(topic, part)
            ts_type, ts = m.timestamp()
            value = m.value()
            append(Record(b"" if value is None else value, {"topic": topic, "partition": part, "offset": off},
                          sid, off, m.key(), ts if ts_type and ts >= 0 else None, m.headers()))
        return out

    def seek(self, stream: str, next_offset: int) -> None:
        ck = _ck()
        tp = ck.TopicPartition(*parse_stream(stream), int(next_offset))
        if self._assigning is not None:  # inside on_assign: the offset goes into assign()
            self._assigning[(tp.topic, tp.partition)] = tp.offset
        elif self._consumer is None:
            raise RuntimeError("KafkaSource.seek before any assignment: call it from an on_assign callback")
        else:
            self._consumer.seek(tp)

    def assigned(self) -> set:
        if self._consumer is None:
            return set()
        return {stream_id(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def commit(self, offsets: dict) -> None:
        ck = _ck()
        if self._consumer is None or not offsets:
            return
        owned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        tps = [ck.TopicPartition(t, p, int(o)) for (t, p), o in
               ((parse_stream(s), o) for s, o in offsets.items()) if (t, p) in owned]
        if not tps:
            return
        try:  # synchronous inside on_revoke (before the handover), asynchronous otherwise
            self._consumer.commit(offsets=tps, asynchronous=not self._revoking)
        except ck.KafkaException as exc:
            log.warning("offset commit %s failed (lag gauge only): %s", tps, exc)

    def close(self, timeout_s: float = 5.0) -> None:
        if self._consumer is None:
            return
        self._closing = True
        consumer, self._consumer = self._consumer, None
        consumer.close()  # enable.auto.commit=false: commits nothing

    def lag(self) -> dict:
        if self._consumer is None:
            return {}
        out = {}
        for tp in self._consumer.position(self._consumer.assignment()):
            wm = self._consumer.get_watermark_offsets(tp, cached=True)
            if wm and wm[1] >= 0 and tp.offset >= 0:
                out[stream_id(tp.topic, tp.partition)] = max(0, wm[1] - tp.offset)
        return out

    # -- internals ----------------------------------------------------------
    _assigning: Optional[dict] = None
    _revoking = False

    def _open(self):
        if self._consumer is not None:
            return self._consumer
        ck = _ck()
        cfg = {
            "bootstrap.servers": self.bootstrap or default_bootstrap(), "group.id": self.group_id,
            "client.id": self.client_id or f"streamnn-{os.getpid()}",
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "isolation.level": "read_committed", "session.timeout.ms": int(self.session_timeout_ms),
            "heartbeat.interval.ms": int(self.heartbeat_interval_ms),
            "fetch.wait.max.ms": int(self.fetch_max_wait_ms),
            "reconnect.backoff.max.ms": int(self.reconnect_backoff_max_ms),
            "partition.assignment.strategy": "range",
            "error_cb": lambda err: log.warning("Kafka client: %s", err),
        }
        cfg.update(self.consumer_config or {})
        cfg["enable.auto.commit"] = False
        consumer = ck.Consumer(cfg)
        self._sids: dict = {}   # (topic, partition) -> stream id
        topics = [self.topics] if isinstance(self.topics, str) else list(self.topics)
        consumer.subscribe(topics, on_assign=self._assigned, on_revoke=self._revoked,
                           on_lost=self._lost)
        self._consumer = consumer
        return consumer

    def _assigned(self, consumer, partitions) -> None:
        self._assigning = {}
        try:
            self._fire(self._assign_cbs, partitions)
            for tp in partitions:
                tp.offset = self._assigning.get((tp.topic, tp.partition), tp.offset)
        finally:
            self._assigning = None
        consumer.assign(partitions)

    def _lost(self, consumer, partitions) -> None:
        self._fire(self._lost_cbs, partitions)
        consumer.unassign()

    def _revoked(self, consumer, partitions) -> None:
        self._revoking = True
        try:
            self._fire(self._revoke_cbs, partitions)
        finally:
            self._revoking = False
        consumer.unassign()


class ConfluentProducer(Producer):
    """The sinks' producer on confluent-kafka (acks=all, idempotent): same contract as kafka-python's.

    Only failed deliveries are reported (``delivery.report.only.error``), so a message costs one
    ``produce`` call.
    """

    def _open(self):
        ck = _ck()
        cfg = {"bootstrap.servers": self._bootstrap, "acks": "all", "enable.idempotence": True,
               "linger.ms": 5, "reconnect.backoff.max.ms": 1000, "delivery.report.only.error": True,
               "on_delivery": self._report, "error_cb": lambda err: log.warning("Kafka producer: %s", err)}
        cfg.update(self._config)
        self._n = 0
        return ck.Producer(cfg)

    def _report(self, err, msg) -> None:
        if err is not None:
            self._failed.append((msg.topic(), msg.value(), msg.key(), msg.headers() or [], err))

    def _send(self, topic, value, key, headers) -> None:
        while True:
            try:
                self._p.produce(topic, value=value, key=key, headers=headers)
                break
            except BufferError:  # the local queue is full: serve delivery reports, then retry
                self._p.poll(0.05)
        self._n += 1
        if self._n % 1000 == 0:
            self._p.poll(0)

    def _send_many(self, topic, values, keys, headers) -> None:
        produce = self._p.produce
        for value, key, hdrs in zip(values, keys, headers):
            try:
                produce(topic, value, key, headers=hdrs)
            except BufferError:
                self._send(topic, value, key, hdrs)
        self._p.poll(0)

    def _flush(self, timeout_s: float) -> bool:
        return self._p.flush(timeout_s) == 0

    def close(self) -> None:
        if self._p is not None:
            self._p.flush(30)
            self._p = None

"""Kafka source and sinks for the streamnn runtime (kafka-python).

The checkpoint is the source of truth for positions: on assignment the runtime loop loads each
partition's checkpoint and calls :meth:`KafkaSource.seek`; offsets are committed to Kafka only
after a checkpoint (:meth:`KafkaSource.commit`, for lag monitoring) and never on close.

A stream id is ``"topic:partition"``; a record's position is ``{"topic", "partition", "offset"}``.

>>> stream_id("sensors", 2), parse_stream("my.topic:10")
('sensors:2', ('my.topic', 10))
>>> KafkaSource(["sensors"], group_id="g").exhausted   # a live source never runs dry
False
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Callable, Iterable, Optional

from .records import Record
from .sources import Source

with warnings.catch_warnings():  # kafka-python 3.0 emits ~200 DeprecationWarnings on import
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError
    from kafka.structs import OffsetAndMetadata, TopicPartition

__all__ = [
    "KafkaSource", "KafkaSink", "KafkaDeadLetterSink", "default_bootstrap", "ensure_topic",
    "stream_id", "parse_stream", "record", "produce",
]

log = logging.getLogger("streamnn.runtime.kafka")

DEFAULT_BOOTSTRAP = "127.0.0.1:19092"
StreamCallback = Callable[[set], None]


def default_bootstrap() -> str:
    """``$STREAMNN_KAFKA_BOOTSTRAP`` or ``127.0.0.1:19092`` (the broker of ``scripts/kafka.sh``)."""
    return os.environ.get("STREAMNN_KAFKA_BOOTSTRAP") or DEFAULT_BOOTSTRAP


def stream_id(topic: str, partition: int) -> str:
    return f"{topic}:{int(partition)}"


def parse_stream(stream: str) -> tuple[str, int]:
    topic, _, partition = stream.rpartition(":")
    if not topic or not partition.isdigit():
        raise ValueError(f"stream id {stream!r} is not 'topic:partition' (e.g. 'sensors:0')")
    return topic, int(partition)


def _tp(stream: str) -> TopicPartition:
    return TopicPartition(*parse_stream(stream))


def ensure_topic(bootstrap: str, topic: str, partitions: int = 1, timeout_s: float = 30.0) -> bool:
    """Create ``topic`` if it does not exist; True when this call created it.

    Brokers with ``auto.create.topics.enable=false`` (ours) make a producer block for
    ``max_block_ms`` on a missing topic, so sinks and ``produce`` create theirs up front, with
    the broker's ``default.replication.factor``.
    """
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        if topic in set(admin.list_topics()):
            return False
        try:
            admin.create_topics({topic: {"num_partitions": int(partitions), "replication_factor": -1}},
                                timeout_ms=int(timeout_s * 1000), wait_for_metadata=True)
        except TopicAlreadyExistsError:
            return False
        return True
    finally:
        admin.close()


class KafkaSource(Source):
    """Consume JSON (or any bytes) records from Kafka topics as one member of a consumer group.

    Parameters
    ----------
    topics
        Topic name or list of names to subscribe to.
    group_id
        Consumer group; the partitions of ``topics`` are shared among its members.
    bootstrap
        ``host:port[,host:port]``; default :func:`default_bootstrap`.
    max_poll_records
        Upper bound on the records one :meth:`poll` returns.
    session_timeout_ms, heartbeat_interval_ms
        How fast a crashed member's partitions move to the others (broker minimum 6000 ms).
    reconnect_backoff_max_ms
        Longest pause between reconnection attempts while the broker is down.
    consumer_config
        Extra ``KafkaConsumer`` settings (they override the defaults above, except that
        ``enable_auto_commit`` is always False).
    client
        ``"kafka-python"`` (default) or ``"confluent"``: the same contract on confluent-kafka
        (optional dependency, several times faster), see ``streamnn.runtime.kafka_confluent``.

    Notes
    -----
    kafka-python runs rebalance listeners on its IO thread while the thread that called
    :meth:`poll` waits inside ``KafkaConsumer.poll``; the callbacks registered with
    :meth:`on_assign` / :meth:`on_revoke` run there, so they never race the loop. A
    :meth:`commit` from inside such a callback is sent asynchronously (blocking there would
    deadlock); Kafka handles it before the group's JoinGroup on the same connection.
    """

    exhausted = False  # a live topic never runs dry
    client_name = "kafka-python"

    def __new__(cls, *args, client: str = "kafka-python", **kwargs):
        if client not in ("kafka-python", "confluent"):
            raise ValueError(f"client={client!r}: use 'kafka-python' or 'confluent'")
        if cls is KafkaSource and client == "confluent":
            from .kafka_confluent import ConfluentKafkaSource

            cls = ConfluentKafkaSource
        return super().__new__(cls)

    def __init__(self, topics, group_id: str = "streamnn", bootstrap: Optional[str] = None,
                 max_poll_records: int = 500, session_timeout_ms: int = 10000,
                 heartbeat_interval_ms: int = 1000, reconnect_backoff_max_ms: int = 1000,
                 fetch_max_wait_ms: int = 100, client_id: Optional[str] = None,
                 consumer_config: Optional[dict] = None, client: str = "kafka-python"):
        self.topics = topics
        self.group_id = group_id
        self.bootstrap = bootstrap
        self.max_poll_records = max_poll_records
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.reconnect_backoff_max_ms = reconnect_backoff_max_ms
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.client_id = client_id
        self.consumer_config = consumer_config
        self.client = client
        super().__init__()  # self._assign_cbs, self._revoke_cbs
        self._consumer = None
        self._listener_error: Optional[BaseException] = None
        self._pending_commits: list = []
        self._closing = False
        self._next_open = 0.0

    # -- the source contract (on_assign / on_revoke come from Source) --------
    def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list:
        """Up to ``max_records`` records (fewer after ``timeout_s`` seconds; ``[]`` while the
        broker is unreachable: the consumer keeps reconnecting in the background)."""
        consumer = self._open()
        if consumer is None:
            time.sleep(min(timeout_s, 0.5))
            return []
        n = max(1, min(int(max_records), int(self.max_poll_records)))
        batches = consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=n)
        self._raise_listener_error()
        out = []
        for tp, messages in batches.items():
            sid, topic, part = stream_id(tp.topic, tp.partition), tp.topic, tp.partition
            for m in messages:
                value, off, ts = m.value, m.offset, m.timestamp
                out.append(Record(value if value is not None else b"",
                                  {"topic": topic, "partition": part, "offset": off}, sid, off, m.key,
                                  ts if ts is not None and ts >= 0 else None,
                                  list(m.headers) if m.headers else None))
        return out

    def seek(self, stream: str, next_offset: int) -> None:
        """Fetch ``stream`` from ``next_offset`` on (the checkpointed position)."""
        if self._consumer is None:
            raise RuntimeError("KafkaSource.seek before any assignment: call it from an on_assign callback")
        self._consumer.seek(_tp(stream), int(next_offset))

    def assigned(self) -> set:
        """Stream ids this member owns now."""
        if self._consumer is None:
            return set()
        return {stream_id(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def commit(self, offsets: dict) -> None:
        """Record ``{stream: next_offset}`` as the group's committed offsets (after a checkpoint).

        Asynchronous and best effort: a failed commit only makes the lag gauge stale, since
        positions come from the checkpoint. Partitions no longer owned are skipped.
        """
        if self._consumer is None or not offsets:
            return
        owned = self._consumer.assignment()
        offs = {tp: OffsetAndMetadata(int(o), "", -1) for tp, o in
                ((_tp(s), o) for s, o in offsets.items()) if tp in owned}
        if not offs:
            return
        fut = self._consumer.commit_async(offs)
        fut.add_errback(lambda exc: log.warning("offset commit %s failed (lag gauge only): %r", offs, exc))
        self._pending_commits = [f for f in self._pending_commits if not f.is_done] + [fut]

    def close(self, timeout_s: float = 5.0) -> None:
        """Leave the group without committing anything (waits briefly for pending commits)."""
        if self._consumer is None:
            return
        deadline = time.monotonic() + timeout_s
        while any(not f.is_done for f in self._pending_commits) and time.monotonic() < deadline:
            self._consumer.poll(timeout_ms=50, max_records=1)  # drives commit callbacks only
        self._closing = True
        consumer, self._consumer = self._consumer, None
        consumer.close(autocommit=False, timeout_ms=int(timeout_s * 1000))

    # -- extras -------------------------------------------------------------
    def lag(self) -> dict:
        """``{stream: records behind the high watermark}`` from the last fetch responses."""
        if self._consumer is None:
            return {}
        out = {}
        for tp in self._consumer.assignment():
            hw = self._consumer.highwater(tp)
            if hw is not None:
                out[stream_id(tp.topic, tp.partition)] = max(0, hw - self._consumer.position(tp))
        return out

    # -- internals ----------------------------------------------------------
    def _open(self):
        if self._consumer is not None or time.monotonic() < self._next_open:
            return self._consumer
        cfg = dict(
            bootstrap_servers=self.bootstrap or default_bootstrap(), group_id=self.group_id,
            client_id=self.client_id or f"streamnn-{os.getpid()}",
            enable_auto_commit=False, auto_offset_reset="earliest", isolation_level="read_committed",
            max_poll_records=int(self.max_poll_records), session_timeout_ms=int(self.session_timeout_ms),
            heartbeat_interval_ms=int(self.heartbeat_interval_ms),
            fetch_max_wait_ms=int(self.fetch_max_wait_ms),
            reconnect_backoff_max_ms=int(self.reconnect_backoff_max_ms),
        )
        cfg.update(self.consumer_config or {})
        cfg["enable_auto_commit"] = False
        cfg.setdefault("bootstrap_timeout_ms", 5000)
        try:
            consumer = KafkaConsumer(**cfg)
        except KafkaError as exc:  # KafkaTimeoutError: unable to bootstrap
            log.warning("Kafka at %s unreachable (%s); retrying", cfg["bootstrap_servers"], exc)
            self._next_open = time.monotonic() + 1.0
            return None
        topics = [self.topics] if isinstance(self.topics, str) else list(self.topics)
        consumer.subscribe(topics, listener=_Listener(self))
        # join only once the topics' metadata is known (a fetch after subscribe): a leader that
        # assigns without it assigns nothing, or rebalances again as soon as it arrives
        missing = [t for t in topics if t not in consumer.topics()]
        if missing:
            log.warning("topic(s) %s do not exist on %s yet; create them (e.g. `streamnn produce "
                        "FILE TOPIC`); retrying", missing, cfg["bootstrap_servers"])
            consumer.close(autocommit=False)
            self._next_open = time.monotonic() + 2.0
            return None
        self._consumer = consumer
        return consumer

    def _fire(self, callbacks: Iterable[StreamCallback], partitions) -> None:
        if self._closing or not partitions:
            return  # on close the loop has already checkpointed; nothing is committed
        streams = {stream_id(tp.topic, tp.partition) for tp in partitions}
        try:
            for cb in callbacks:
                cb(streams)
        except BaseException as exc:  # re-raised on the polling thread
            log.exception("rebalance callback failed for %s", sorted(streams))
            self._listener_error = self._listener_error or exc

    def _raise_listener_error(self) -> None:
        if self._listener_error is not None:
            exc, self._listener_error = self._listener_error, None
            raise exc


class _Listener(ConsumerRebalanceListener):
    """Forwards kafka-python's rebalance events to the source's callbacks."""

    def __init__(self, source: KafkaSource):
        self.source = source

    def on_partitions_revoked(self, revoked):
        self.source._fire(self.source._revoke_cbs, revoked)

    def on_partitions_assigned(self, assigned):
        self.source._fire(self.source._assign_cbs, assigned)

    def on_partitions_lost(self, lost):
        self.source._fire(self.source._lost_cbs, lost)


# sinks and replay tools live next door; re-exported so that `streamnn.runtime.kafka` is the one name
from .kafka_replay import produce, record  # noqa: E402
from .kafka_sinks import KafkaDeadLetterSink, KafkaSink  # noqa: E402

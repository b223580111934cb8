"""`KafkaSource` on kafka-python: one member of a consumer group, the runtime's `Source` contract.

The checkpoint is the source of truth for positions: on assignment the runtime loop loads each
partition's checkpoint and calls :meth:`KafkaSource.seek`; offsets are committed to Kafka only
after a checkpoint (:meth:`KafkaSource.commit`, for lag monitoring) and never on close. A
stream id is ``"topic:partition"``; a record's position is ``{"topic", "partition", "offset"}``.
`streamnn.runtime.kafka.kafka_source` picks this class or the confluent-kafka one.

>>> KafkaSource(["sensors"], group_id="g").exhausted   # a live source never runs dry
False
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable, Iterable, Optional

from .contracts import Source
from .kafka_common import (ConsumerRebalanceListener, KafkaConsumer, KafkaError, OffsetAndMetadata,
                           TopicPartition, check_client, default_bootstrap, parse_stream, stream_id)
from .records import Record

__all__ = ["KafkaSource"]

log = logging.getLogger("streamnn.runtime.kafka")
UNASSIGNED_WARN_S = 60.0   # a subscribed consumer with no partition for this long is said so

StreamCallback = Callable[[set], None]


def _tp(stream: str) -> TopicPartition:
    return TopicPartition(*parse_stream(stream))


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
        The client this class is (`client_name`); `streamnn.runtime.kafka.kafka_source` builds
        the class of ``client="confluent"`` (the same contract on confluent-kafka, an optional
        dependency, several times faster: ``streamnn.runtime.kafka_confluent``).

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
        if check_client(client) != self.client_name:
            raise ValueError(f"{type(self).__name__} is the {self.client_name} client; build a source "
                             f"for client={client!r} with streamnn.runtime.kafka.kafka_source(...)")
        self.client = client
        super().__init__()  # self._assign_cbs, self._revoke_cbs
        self._consumer = None
        self._listener_error: Optional[BaseException] = None
        self._pending_commits: list = []
        self._closing = False
        self._next_open = 0.0
        self._next_warning = 0.0
        self._unassigned_since: Optional[float] = None
        self._next_unassigned_warning = 0.0

    # -- the source contract (on_assign / on_revoke come from Source) --------
    def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list:
        """Up to ``max_records`` records (fewer after ``timeout_s`` seconds; ``[]`` while the
        broker is unreachable: the consumer keeps reconnecting in the background)."""
        consumer = self._open()
        if consumer is None:
            time.sleep(min(timeout_s, 0.5))
            return []
        n = max(1, min(int(max_records), int(self.max_poll_records)))
        try:
            batches = consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=n)
        except KafkaError as exc:   # kafka-python 3 raises e.g. KafkaConnectionError while the
            if not getattr(exc, "retriable", False):   # coordinator's broker is away: wait for it
                raise
            self._unreachable(exc)
            time.sleep(min(timeout_s, 0.5))
            return []
        self._raise_listener_error()
        if not batches:
            self._watch_assignment(consumer)
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

    def _watch_assignment(self, consumer) -> None:
        """Say so (after `UNASSIGNED_WARN_S`, then every 5x that) while the consumer owns no partition:
        a group it cannot join (e.g. a broker whose group coordinator did not survive a crash
        answers NOT_COORDINATOR to every client until it is restarted) looks like an idle stream."""
        now = time.monotonic()
        if consumer.assignment():
            self._unassigned_since = None
            return
        if self._unassigned_since is None:
            self._unassigned_since, self._next_unassigned_warning = now, now + UNASSIGNED_WARN_S
        elif now >= self._next_unassigned_warning:
            self._next_unassigned_warning = now + 5 * UNASSIGNED_WARN_S
            log.warning("no partition of %s assigned to group %r for %.0f s: other members may own them "
                        "all, or the group cannot be joined (if the broker restarted after a crash, its "
                        "group coordinator may need a clean broker restart); still waiting",
                        self.topics if isinstance(self.topics, str) else ",".join(self.topics),
                        self.group_id, now - self._unassigned_since)

    def _unreachable(self, exc) -> None:
        """One warning per 10 s while polls fail on a broker that is away (the run keeps going)."""
        now = time.monotonic()
        if now >= self._next_warning:
            self._next_warning = now + 10.0
            log.warning("Kafka poll failed (%s: %s); the broker may be restarting; retrying",
                        type(exc).__name__, exc)

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

"""The Kafka sinks' producer (kafka-python; `ConfluentProducer` overrides its client calls):
acks=all, lazily opened, creating missing topics; `deliver` waits until the broker has
acknowledged everything and re-sends what expired while it was away.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Optional

from .kafka_common import KafkaProducer, KafkaTimeoutError, default_bootstrap, ensure_topic

__all__ = ["Producer", "deliver", "to_bytes", "keys_as_bytes"]

log = logging.getLogger("streamnn.runtime.kafka")


def to_bytes(v) -> Optional[bytes]:
    """A message key as bytes: a string's UTF-8 (a lone surrogate kept as its bytes), a list or
    object's JSON text, anything else its `str`."""
    if v is None or isinstance(v, bytes):
        return v
    if isinstance(v, (dict, list)):
        v = json.dumps(v, separators=(",", ":"), ensure_ascii=False, default=str)
    return str(v).encode("utf-8", "surrogatepass")


def keys_as_bytes(keys: list) -> list:
    """Message keys as bytes (each distinct key encoded once)."""
    if all(k is None or type(k) is bytes for k in keys):
        return keys
    done: dict = {}
    out = []
    for k in keys:
        if type(k) in (dict, list):   # a key field holding JSON structure: unhashable
            out.append(to_bytes(k))
            continue
        b = k if k is None or type(k) is bytes else done.get(k)
        if b is None and k is not None:
            b = done[k] = to_bytes(k)
        out.append(b)
    return out


class Producer:
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


def _retriable(exc) -> bool:
    r = getattr(exc, "retriable", True)  # kafka-python: a class attribute; confluent: a method
    return bool(r() if callable(r) else r)


def deliver(producer: Producer, what: str, max_wait_s: Optional[float]) -> None:
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

"""What every Kafka module of the runtime shares (kafka-python): stream ids, the default
bootstrap, topic creation, and the client's classes (imported once, quietly).

>>> stream_id("sensors", 2), parse_stream("my.topic:10")
('sensors:2', ('my.topic', 10))
"""

from __future__ import annotations

import os
import warnings

with warnings.catch_warnings():  # kafka-python 3.0 emits ~200 DeprecationWarnings on import
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError
    from kafka.structs import OffsetAndMetadata, TopicPartition

__all__ = ["ConsumerRebalanceListener", "KafkaConsumer", "KafkaProducer", "KafkaError", "KafkaTimeoutError",
           "OffsetAndMetadata", "TopicPartition", "DEFAULT_BOOTSTRAP", "default_bootstrap", "stream_id",
           "parse_stream", "ensure_topic", "CLIENTS", "check_client"]

DEFAULT_BOOTSTRAP = "127.0.0.1:19092"
CLIENTS = ("kafka-python", "confluent")


def check_client(client: str) -> str:
    if client not in CLIENTS:
        raise ValueError(f"client={client!r}: use 'kafka-python' or 'confluent'")
    return client


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

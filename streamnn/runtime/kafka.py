"""Kafka for the streamnn runtime: one import for the source, the sinks and the replay tools.

`kafka_source(..., client=...)` builds the consumer: `KafkaSource` (kafka-python, the default)
or `ConfluentKafkaSource` (confluent-kafka, optional). The sinks take the same `client` argument.
The modules underneath import in one direction only: `kafka_common` <- `kafka_consumer`,
`kafka_producer` <- `kafka_confluent` <- `kafka_sinks`; `kafka_replay` <- `kafka_common`; this
module imports them all and nothing imports it.

>>> stream_id("sensors", 2), parse_stream("my.topic:10")
('sensors:2', ('my.topic', 10))
>>> type(kafka_source(["sensors"], group_id="g")).__name__
'KafkaSource'
"""

from __future__ import annotations

from .kafka_common import check_client, default_bootstrap, ensure_topic, parse_stream, stream_id
from .kafka_confluent import ConfluentKafkaSource
from .kafka_consumer import KafkaSource
from .kafka_replay import produce, record
from .kafka_sinks import KafkaDeadLetterSink, KafkaSink

__all__ = [
    "KafkaSource", "ConfluentKafkaSource", "KafkaSink", "KafkaDeadLetterSink", "kafka_source",
    "default_bootstrap", "ensure_topic", "stream_id", "parse_stream", "record", "produce",
]

SOURCES = {"kafka-python": KafkaSource, "confluent": ConfluentKafkaSource}


def kafka_source(topics, *, client: str = "kafka-python", **kwargs) -> KafkaSource:
    """A consumer-group member on the chosen client; parameters as in `KafkaSource`."""
    return SOURCES[check_client(client)](topics, client=client, **kwargs)

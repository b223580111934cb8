"""The plain data that flows between the runtime's stages.

A `Record` is what a source reads (raw bytes plus where they came from); the decoder turns it into
an `Event` (features, target, id) or a `DecodeError` (the reason it goes to the dead letters).

>>> r = Record(b'{"a": 1}', {"file": "s.jsonl", "line": 3}, "s.jsonl", 3)
>>> r.stream, r.offset
('s.jsonl', 3)
>>> DecodeError("not JSON").reason
'not JSON'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Record", "Event", "DecodeError", "NO_TARGET"]


class _NoTarget:
    """Marker for "this event carries no target" (distinct from a target that is None)."""

    def __repr__(self):
        return "NO_TARGET"

    def __bool__(self):
        return False


NO_TARGET = _NoTarget()


@dataclass(slots=True)
class Record:
    """One raw record read from a source.

    Parameters
    ----------
    value
        The payload bytes (a JSON object, or one CSV row for CSV files).
    position
        JSON-able description of where it was read, copied into every output:
        ``{"file": ..., "line": ...}`` or ``{"topic": ..., "partition": ..., "offset": ...}``.
    stream
        Id of an independently ordered stream (a file path; for Kafka ``"topic:partition"``).
    offset
        Index of the record within its stream (the line number for files).
    key, timestamp_ms, headers
        Optional metadata (Kafka message key, broker timestamp, headers).
    """

    value: bytes
    position: dict
    stream: str
    offset: int
    key: bytes | None = None
    timestamp_ms: int | None = None
    headers: list | None = None


@dataclass(slots=True)
class Event:
    """A decoded, validated record.

    `x` holds the numeric features (possibly empty: a label-only event), `y` the target
    (`NO_TARGET` when absent; a dict for several targets), `event_id` the id used to match delayed
    labels and to detect duplicate outputs downstream.
    """

    x: dict
    y: Any
    event_id: Any
    record: Record
    key: Any = None
    timestamp: Any = None

    @property
    def has_target(self) -> bool:
        return self.y is not NO_TARGET


@dataclass(slots=True)
class DecodeError:
    """Why a record could not be decoded or validated (it goes to the dead letters)."""

    reason: str

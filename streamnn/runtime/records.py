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

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Record", "Event", "DecodeError", "Batch", "NO_TARGET", "MAX_TEXT"]

MAX_TEXT = 10_000   # characters of an id, key, timestamp or label at most: every output copies them


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


@dataclass
class Batch:
    """A decoded batch as columns (the runtime's one internal form); row i belongs to `records[i]`.

    `names` are the listed features (None for ``features = "*"``); `rows` holds each record's
    listed feature values (None = absent or null) or, with ``"*"``, its feature dict; `X` the
    listed rows as a float matrix (n, F), range-checked. `ys` holds the targets (`NO_TARGET` when
    absent; a dict with several targets), `ids` the event ids (None: ``"<stream>:<offset>"``),
    `keys` and `timestamps` the schema's key and timestamp fields (None when not in the schema).
    """

    names: tuple | None = None
    records: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    ys: list = field(default_factory=list)
    ids: list | None = None
    keys: list | None = None
    timestamps: list | None = None
    X: Any = None

    def __len__(self) -> int:
        return len(self.records)

    def featureless(self, i: int) -> bool:
        """Whether event i carries no feature at all (a label-only event)."""
        row = self.rows[i]
        return not row if self.names is None else row.count(None) == len(row)

    def event_id(self, i: int):
        if self.ids is not None:
            return self.ids[i]
        r = self.records[i]
        return f"{r.stream}:{r.offset}"

    def take(self, idx: list) -> "Batch":
        """The rows `idx` (in that order) as a batch."""
        pick = (lambda col: None if col is None else [col[i] for i in idx])
        X = None if self.X is None else self.X[np.asarray(idx, dtype=np.intp)]
        return Batch(self.names, pick(self.records), pick(self.rows), pick(self.ys), pick(self.ids),
                     pick(self.keys), pick(self.timestamps), X)

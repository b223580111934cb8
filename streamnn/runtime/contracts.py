"""The runtime's stage contracts: `Source`, `Sink` and `DeadLetters` (the learner side is
`streamnn.runtime.tasks.Task`). The loop (`streamnn.runtime.loop.Runner`) is the only place
where the stages meet; every implementation declares its contract by subclassing it:

* sources: `FileSource`, `RiverDatasetSource` (`streamnn.runtime.sources`), `KafkaSource` and
  `ConfluentKafkaSource`;
* sinks: `JsonlSink`, `StdoutSink`, `MemorySink` (`streamnn.runtime.sinks`), `KafkaSink`;
* dead letters: `DeadLetterSink`, `MemoryDeadLetterSink`, `KafkaDeadLetterSink`.

>>> from streamnn.runtime.sinks import MemorySink
>>> isinstance(MemorySink(), Sink), sorted(Sink.__abstractmethods__)
(True, ['close', 'emit', 'flush'])
"""

from __future__ import annotations

from abc import ABC, abstractmethod

__all__ = ["Source", "Sink", "DeadLetters"]


class Source(ABC):
    """Where records come from.

    1. `poll(max_records, timeout_s) -> list[Record]`: the next records, in order within each
       stream; an empty list means nothing right now, and `exhausted` turns True when a finite
       source is done.
    2. `seek(stream, next_offset)`: the next record of `stream` read is the one at `next_offset`.
    3. `assigned() -> set[str]`: the streams this source owns now; `on_assign(cb)`, `on_revoke(cb)`
       and `on_lost(cb)` register callbacks called with a set of stream ids when that changes.
    4. `commit(offsets)`: called only after a checkpoint is on disk (a no-op for files); `close()`.
    """

    exhausted = False

    def __init__(self):
        self._assign_cbs, self._revoke_cbs, self._lost_cbs = [], [], []

    @abstractmethod
    def poll(self, max_records: int, timeout_s: float = 0.0) -> list:
        """The next records (at most `max_records`), waiting up to `timeout_s` for the first."""

    @abstractmethod
    def seek(self, stream: str, next_offset: int) -> None:
        """Read `stream` from `next_offset` on."""

    @abstractmethod
    def assigned(self) -> set:
        """The streams this source owns now."""

    def on_assign(self, callback):
        self._assign_cbs.append(callback)

    def on_revoke(self, callback):
        self._revoke_cbs.append(callback)

    def on_lost(self, callback):
        """`callback(streams)` when streams are taken away without a revoke (a consumer evicted
        from its group): their state must be dropped, not checkpointed."""
        self._lost_cbs.append(callback)

    def commit(self, offsets: dict) -> None:
        """Sources with an external offset store (Kafka) record progress here; files need nothing."""

    def progress(self):
        """The fraction of a finite source read so far (0..1), or None (a live stream)."""
        return None

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Sink(ABC):
    """Where outputs go: `emit` gets one `streamnn.runtime.outputs.OutputBatch` per batch (a
    sequence of output dicts that also writes its JSON lines); `flush()` returns once everything
    emitted is durable (the loop calls it before each checkpoint); `close()`."""

    @abstractmethod
    def emit(self, outputs) -> None:
        """Write a batch of outputs."""

    @abstractmethod
    def flush(self) -> None:
        """Make every output emitted so far durable."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release the sink."""


class DeadLetters(ABC):
    """Where bad records go: `send(record, reason)` returns once the letter is written (a crash
    of the process loses none), `flush()` makes every letter durable (before each checkpoint)."""

    @abstractmethod
    def send(self, record, reason: str) -> None:
        """Write one dead letter."""

    @abstractmethod
    def flush(self) -> None:
        """Make every letter sent so far durable."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release the sink."""

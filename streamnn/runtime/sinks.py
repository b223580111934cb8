"""Sinks: where predictions, scores and dead letters go.

Output sinks follow `streamnn.runtime.contracts.Sink`: `emit(outputs)` (an `OutputBatch`; a
list of dicts works too), `flush()`, `close()`; the loop flushes them
before each checkpoint, so every event covered by a checkpoint has its output written
(at-least-once: after a crash the events since the last checkpoint are emitted again, with the
same `position` and `id`, so duplicates are easy to drop downstream).

Dead-letter sinks follow `streamnn.runtime.contracts.DeadLetters`: `send(record, reason)`,
`flush()` and `close()`. `send` returns once
the letter is written (to the OS for a file: a crash of the process loses none; acknowledged by
the broker for Kafka); `flush()` makes every letter sent so far durable (a file is fsynced),
and the loop calls it at each checkpoint before writing the checkpoint and committing offsets,
so every dead letter of a record a checkpoint covers survives a power cut too.

>>> sink = MemorySink()
>>> sink.emit([{"id": 1, "prediction": 0.5}])
>>> sink.outputs
[{'id': 1, 'prediction': 0.5}]
"""

from __future__ import annotations

import base64
import os
import sys

from .contracts import DeadLetters, Sink
from .outputs import dumps, lines
from .records import Record
from .schema import reason_class

__all__ = ["JsonlSink", "StdoutSink", "MemorySink", "DeadLetterSink", "MemoryDeadLetterSink",
           "dumps", "dead_letter"]


def open_lines(path, append: bool):
    """Open a JSON-lines file for writing; in append mode a torn last line (a crash in the middle
    of a write) is cut off first, so the lines written next stay whole."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if append and os.path.exists(path):
        with open(path, "r+b") as f:
            _cut_torn_line(f)
    return open(path, "a" if append else "w", encoding="utf-8")


def _cut_torn_line(f) -> None:
    end = pos = f.seek(0, os.SEEK_END)
    while pos > 0:
        step = min(65536, pos)
        f.seek(pos - step)
        chunk = f.read(step)
        if pos == end and chunk.endswith(b"\n"):
            return
        i = chunk.rfind(b"\n")
        if i >= 0:
            f.truncate(pos - step + i + 1)
            return
        pos -= step
    f.truncate(0)


class _LinesFile:
    """A JSON-lines file opened for appending (a torn last line cut off); `flush` fsyncs."""

    def __init__(self, path, append: bool = False):
        self.path = os.fspath(path)
        self._f = open_lines(self.path, append)

    def flush(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self.flush()
            self._f.close()


class JsonlSink(_LinesFile, Sink):
    """Append outputs as JSON lines to a file.

    Parameters
    ----------
    path
        The file; its folder is created.
    append
        Keep what the file holds (a resumed run) instead of starting it empty.
    """

    def emit(self, outputs: list) -> None:
        if outputs:
            self._f.write("\n".join(lines(outputs)) + "\n")


class StdoutSink(Sink):
    """Write outputs as JSON lines to standard output."""

    def __init__(self, stream=None):
        self.stream = stream

    def emit(self, outputs: list) -> None:
        if outputs:
            out = self.stream or sys.stdout
            out.write("\n".join(lines(outputs)) + "\n")

    def flush(self) -> None:
        (self.stream or sys.stdout).flush()

    def close(self) -> None:
        self.flush()


class MemorySink(Sink):
    """Keep outputs in a list (`outputs`), for tests and notebooks."""

    def __init__(self):
        self.outputs: list = []

    def emit(self, outputs: list) -> None:
        self.outputs.extend(outputs)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def dead_letter(record: Record, reason: str) -> dict:
    """The JSON-able dead letter of `record`: reason, class, position and the original bytes."""
    try:
        value, encoding = record.value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        value, encoding = base64.b64encode(record.value).decode("ascii"), "base64"
    return {"reason": reason, "class": reason_class(reason), "position": record.position,
            "stream": record.stream, "offset": record.offset, "value": value, "encoding": encoding}


class DeadLetterSink(_LinesFile, DeadLetters):
    """Dead letters as JSON lines in a file: `send` writes and flushes the line (a crash of the
    process loses none), `flush` fsyncs the file (the loop does it before each checkpoint)."""

    def send(self, record: Record, reason: str) -> None:
        self._f.write(dumps(dead_letter(record, reason)) + "\n")
        self._f.flush()


class MemoryDeadLetterSink(DeadLetters):
    """Dead letters in a list (`letters`: dicts as written by `DeadLetterSink`)."""

    def __init__(self):
        self.letters: list = []

    def send(self, record: Record, reason: str) -> None:
        self.letters.append(dead_letter(record, reason))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

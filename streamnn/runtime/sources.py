"""Sources: where records come from (replay of a JSONL/CSV file, a river dataset; Kafka elsewhere).

Both follow the `streamnn.runtime.contracts.Source` contract (re-exported here).

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "s.jsonl")
>>> _ = open(path, "w").write('{"a": 1}\\n{"a": 2}\\n{"a": 3}\\n')
>>> src = FileSource(path)
>>> [(r.offset, r.value) for r in src.poll(2)]
[(1, b'{"a": 1}'), (2, b'{"a": 2}')]
>>> src.seek(src.stream, 3); [r.position["line"] for r in src.poll(10)], src.exhausted
([3], True)
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import os
import time
import zlib

from .contracts import Source
from .records import Record

__all__ = ["Source", "FileSource", "RiverDatasetSource", "file_format", "open_file"]


def open_file(path: str):
    """`path` opened for reading bytes, decompressed when its name ends in ".gz"."""
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


def file_format(path: str, format: str | None = None) -> str:
    """The replay format of `path`: the given one, or guessed from the extension."""
    if format:
        if format not in ("jsonl", "csv"):
            raise ValueError(f"format={format!r}: use 'jsonl' or 'csv'")
        return format
    name = path.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise ValueError(f"cannot tell the format of {path!r} from its extension; set format = 'jsonl' or 'csv'")


class FileSource(Source):
    """Replay a JSONL file (one JSON object per line) or a CSV file with a header row.

    The stream id is the path; a record's offset is its line number (1-based; a CSV's first data
    row is line 2). Blank lines (whitespace only) are no records. `follow=True` keeps reading as the file grows (like ``tail -f``) instead of
    finishing at its end.

    Parameters
    ----------
    path
        The file to read.
    format
        "jsonl" or "csv"; guessed from the extension when None.
    follow
        Wait for more lines at the end of the file instead of finishing.
    name
        The stream id and the ``file`` of positions (default: the path).
    max_line
        Longest line held in memory, in bytes (the schema's ``max_bytes``): a longer line (a whole
        JSON array on one line, a binary file) becomes one record of its first ``max_line + 1``
        bytes, which the decoder dead-letters as oversized, with the line's true length in its
        position (``"bytes"``); the rest is skipped without being held. None: no limit.
    """

    CHUNK = 1 << 20   # bytes read at a time while skipping the rest of an oversized line

    def __init__(self, path, format: str | None = None, follow: bool = False, name: str | None = None,
                 max_line: int | None = None):
        super().__init__()
        self.max_line = max_line
        self.path = os.fspath(path)
        self.name = name
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"source file {self.path!r} does not exist; fix the path")
        self.format = file_format(self.path, format)
        self.follow = follow
        self.stream = name or os.path.normpath(self.path)
        self.columns: list[str] | None = None
        self._f = None
        self._open(0)

    def _open(self, next_offset: int):
        if self._f is not None:
            self._f.close()
        self._f = open_file(self.path)
        self._line = 0          # number of the last line read
        self._partial = b""
        self._skip = None       # [head, bytes so far] of an oversized line being skipped
        self.exhausted = False
        if self.format == "csv":
            header = self._f.readline()
            self._line = 1
            text = header.decode("utf-8-sig", errors="replace").strip()
            if not text:
                raise ValueError(f"{self.path}: a CSV source needs a header row on line 1")
            self.columns = next(csv.reader([text]))
        self._skip_lines(max(0, next_offset - self._line - 1))

    def _skip_lines(self, n: int):
        """Skip `n` lines (resuming at a checkpointed offset) in chunks: a line far longer than
        memory is passed over, never held whole."""
        readline, chunk = self._f.readline, self.CHUNK
        while n > 0:
            part = readline(chunk)
            if not part:
                break
            if len(part) < chunk or part.endswith(b"\n"):      # the end of a line (or of the file)
                n -= 1
                self._line += 1

    def assigned(self) -> set:
        return {self.stream}

    def progress(self):
        """Bytes read / file size (None while following a growing file, or for a compressed one)."""
        if self.follow or self._f is None or isinstance(self._f, gzip.GzipFile):
            return None
        try:
            size = os.fstat(self._f.fileno()).st_size
            return min(1.0, self._f.tell() / size) if size else 1.0
        except (OSError, ValueError):
            return None

    def seek(self, stream: str, next_offset: int) -> None:
        if stream != self.stream:
            raise KeyError(f"{stream!r} is not a stream of this source ({self.stream!r})")
        self._open(int(next_offset))

    def _read(self, max_records: int) -> list:
        """Up to `max_records` lines; with `max_line`, no line longer than that is held (see the
        class docstring): an oversized line comes back as (head, length without its newline)."""
        if self.max_line is None and self._skip is None:
            return list(itertools.islice(self._f, max_records))
        cap, readline, lines = self.max_line, self._f.readline, []
        append, limit = lines.append, cap + 1
        while len(lines) < max_records:
            if self._skip is not None:                     # the rest of an oversized line
                chunk = readline(self.CHUNK)
                if not chunk and self.follow:
                    break                                  # the rest is still being written
                self._skip[1] += len(chunk) - chunk.endswith(b"\n")
                if not chunk or chunk.endswith(b"\n"):
                    append(tuple(self._skip))
                    self._skip = None
                    if not chunk:
                        break
                continue
            if self._partial:                              # the start of a line read before
                line = self._partial + readline(limit - len(self._partial))
                self._partial = b""
            else:
                line = readline(limit)
            for _ in range(max_records - len(lines)):      # the plain lines, in a tight loop
                if not line:
                    return lines
                if len(line) > cap and not line.endswith(b"\n"):
                    self._skip = [line[:limit], len(line)]
                    break
                append(line)
                if len(lines) == max_records:
                    return lines
                line = readline(limit)
        return lines

    def poll(self, max_records: int = 256, timeout_s: float = 0.0) -> list:
        try:
            lines = self._read(max_records)
        except (EOFError, OSError, zlib.error) as e:
            if not isinstance(self._f, gzip.GzipFile):
                raise
            raise ValueError(f"{self.path}: the compressed data is damaged or cut short after line {self._line} "
                             f"({e}); check it with gzip -t, then repair or re-create it") from None
        if self._partial and lines:
            lines[0] = self._partial + lines[0]
            self._partial = b""
        if len(lines) < max_records:
            if self.follow:
                if lines and isinstance(lines[-1], bytes) and not lines[-1].endswith(b"\n"):
                    self._partial = lines.pop()                # a line still being written
                if not lines:
                    self._check_same_file()
                    if timeout_s:
                        time.sleep(timeout_s)
            else:
                self.exhausted = True
        out, path, stream, n = [], self.name or self.path, self.stream, self._line
        if n == 0 and lines and isinstance(lines[0], bytes) and lines[0].startswith(b"\xef\xbb\xbf"):   # a UTF-8 byte-order mark
            lines[0] = lines[0][3:]
        for raw in lines:
            n += 1
            if isinstance(raw, tuple):                         # an oversized line: its head, its length
                out.append(Record(raw[0], {"file": path, "line": n, "bytes": raw[1]}, stream, n))
                continue
            if raw.isspace():   # a blank line (a trailing newline, a gap between records): no record
                continue
            out.append(Record(raw.rstrip(b"\r\n"), {"file": path, "line": n}, stream, n))
        self._line = n
        return out

    def _check_same_file(self) -> None:
        """While following: raise if the path now names another file, or the file shrank (log
        rotation, truncation); reading on would wait forever or read the new lines from the old
        position, and line numbers would no longer match the checkpoint."""
        try:
            now = os.stat(self.path)
        except FileNotFoundError:   # moved away, the new one not created yet: wait for it
            return
        mine = os.fstat(self._f.fileno())
        other = (now.st_ino, now.st_dev) != (mine.st_ino, mine.st_dev)
        if other or (not isinstance(self._f, gzip.GzipFile) and now.st_size < self._f.tell()):
            raise ValueError(f"{self.path}: {'replaced by another file' if other else 'truncated'} while "
                             f"following it, after line {self._line} (log rotation?); its line numbers no "
                             "longer match the checkpoint: start over on the new file with --fresh")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class RiverDatasetSource(Source):
    """Stream a river dataset (`river.datasets.<name>`, e.g. "Phishing" or "synth.Agrawal").

    Each sample `(x, y)` becomes a JSON record with the features plus `y` under the name `target`;
    the offset is the sample's index (0-based). Generators are infinite: pass `limit`.

    >>> src = RiverDatasetSource("Phishing", limit=3)
    >>> len(src.poll(10)), src.exhausted
    (3, True)
    """

    def __init__(self, dataset: str, params: dict | None = None, target: str = "y",
                 limit: int | None = None):
        super().__init__()
        self.dataset = dataset
        self.params = dict(params or {})
        self.target = target
        self.limit = limit
        self.stream = f"river:{dataset}"
        self._factory = _resolve_dataset(dataset)
        self._open(0)

    def _open(self, next_offset: int):
        data = self._factory(**self.params)
        stop = self.limit
        self._it = itertools.islice(iter(data), next_offset, stop)
        self._index = next_offset
        self.exhausted = stop is not None and next_offset >= stop

    def assigned(self) -> set:
        return {self.stream}

    def seek(self, stream: str, next_offset: int) -> None:
        if stream != self.stream:
            raise KeyError(f"{stream!r} is not a stream of this source ({self.stream!r})")
        self._open(int(next_offset))

    def progress(self):
        """Samples read / `limit` (or the dataset's `n_samples`); None for an endless generator."""
        n = self.limit if self.limit is not None else getattr(self._factory, "n_samples", None)
        return min(1.0, self._index / n) if n else None

    def poll(self, max_records: int = 256, timeout_s: float = 0.0) -> list:
        out, name, target = [], self.dataset, self.target
        for x, y in itertools.islice(self._it, max_records):
            value = json.dumps({**x, target: y}, default=str).encode()
            i = self._index
            out.append(Record(value, {"dataset": name, "index": i}, self.stream, i))
            self._index += 1
        if len(out) < max_records:
            self.exhausted = True
        return out


def _resolve_dataset(name: str):
    from river import datasets

    obj = datasets
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None or part.startswith("_"):
            raise ValueError(f"river dataset {name!r} not found; use a name such as 'Phishing', "
                             "'TrumpApproval' or 'synth.Agrawal' (river.datasets.<name>)")
    if not callable(obj):
        raise ValueError(f"river dataset {name!r} is not a dataset class")
    return obj


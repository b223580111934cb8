"""The one output type: the outputs of a batch as columns, dicts built lazily, JSON lines direct.

Every output of the runtime is an `OutputBatch`: indexing or iterating gives the output dicts
(``id``, ``position``, ``key``, ``timestamp``, then the task's fields), and `lines()` writes
each output's JSON line directly, byte for byte what `dumps(output)` gives, without building the
dicts; `output_keys()` and `source_headers` give the Kafka message keys and headers. Sinks receive
nothing else.

>>> from streamnn.runtime.records import Record
>>> recs = [Record(b"{}", {"topic": "t", "partition": 0, "offset": i}, "t:0", i) for i in (7, 8)]
>>> out = OutputBatch(recs, {"prediction": [0.5, float("nan")]}, ids=None)
>>> out.lines()
['{"id":"t:0:7","position":{"topic":"t","partition":0,"offset":7},"prediction":0.5}', \
'{"id":"t:0:8","position":{"topic":"t","partition":0,"offset":8},"prediction":NaN}']
>>> out[0]
{'id': 't:0:7', 'position': {'topic': 't', 'partition': 0, 'offset': 7}, 'prediction': 0.5}
>>> source_headers(out[0]["position"])
[('source_topic', b't'), ('source_partition', b'0'), ('source_offset', b'7')]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from json.encoder import encode_basestring_ascii as _estr

import json

import numpy as np

__all__ = ["OutputBatch", "SKIP", "dumps", "encode", "encode_floats", "lines", "source_headers"]


def _default(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, (set, tuple)):
        return list(v)
    return str(v)


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_default)
_C_ENCODER = getattr(json.encoder, "c_make_encoder", None)
if _C_ENCODER is not None:   # the C encoder called directly: ~2x faster than json.dumps(...)
    _C_ENCODER = _C_ENCODER(None, _default, json.encoder.encode_basestring_ascii, None, ":", ",",
                            False, False, True)


def dumps(obj) -> str:
    """Compact, deterministic JSON (numpy scalars and bytes converted).

    >>> dumps({"a": [1, 2.5], "b": None, "c": True})
    '{"a":[1,2.5],"b":null,"c":true}'
    """
    if _C_ENCODER is not None:
        return "".join(_C_ENCODER(obj, 0))
    return _ENCODER.encode(obj)


def lines(outputs) -> list:
    """Outputs as JSON texts: an `OutputBatch` writes them without building the dicts; any other
    sequence of dicts (a user calling a sink directly) through `dumps`."""
    fast = getattr(outputs, "lines", None)
    return fast() if fast is not None else list(map(dumps, outputs))


def source_headers(pos) -> list:
    """Kafka headers naming where an output's (or dead letter's) record came from."""
    pos = pos or {}
    return [(f"source_{k}", str(pos[k]).encode()) for k in ("topic", "partition", "offset") if k in pos]


def encode(v) -> str:
    """One value as JSON, exactly as `dumps` writes it."""
    t = type(v)
    if t is str:
        return _estr(v)
    if t is float:
        return _float(v)
    if t is int:
        return int.__repr__(v)
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    return dumps(v)


def _float(v: float) -> str:
    if v != v:
        return "NaN"
    if v in (math.inf, -math.inf):
        return "Infinity" if v > 0 else "-Infinity"
    return float.__repr__(v)


def encode_floats(values) -> list:
    """A list of floats (or a float array's `tolist()`) as JSON texts."""
    out = list(map(float.__repr__, values))
    if "nan" in out or "inf" in out or "-inf" in out:
        out = [_float(v) for v in values]
    return out


class OutputBatch(Sequence):
    """The outputs of one batch, as columns; indexing or iterating gives the output dicts.

    Parameters
    ----------
    records
        The events' records (ids, positions and, without a key field, keys come from them).
    fields
        The output fields in order, name -> list of values (a value `SKIP` leaves the field out).
    ids, keys, timestamps
        As in `Columns`; `keys=None` uses the records' message keys (when not None), and
        `timestamps=None` writes no timestamp.
    key_field
        Whether the schema names a key field (then every output carries "key").
    """

    def __init__(self, records: list, fields: dict, ids=None, keys=None, timestamps=None,
                 key_field: bool = False):
        self.records, self.fields = records, fields
        self.ids, self.keys, self.timestamps, self.key_field = ids, keys, timestamps, key_field

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        r = self.records[i]
        o = {"id": self.ids[i] if self.ids is not None else f"{r.stream}:{r.offset}", "position": r.position}
        k = self._key(i)
        if k is not SKIP:
            o["key"] = k
        if self.timestamps is not None:
            o["timestamp"] = self.timestamps[i]
        for name, col in self.fields.items():
            v = col[i]
            if v is not SKIP:
                o[name] = v
        return o

    def _key(self, i):
        if self.key_field:
            return self.keys[i]
        k = self.records[i].key
        if k is None:
            return SKIP
        return k.decode("utf-8", "replace") if isinstance(k, bytes) else k

    def output_keys(self) -> list:
        """Each output's "key" (None where it has none)."""
        if self.key_field:
            return list(self.keys)
        return [k if k is None or type(k) is not bytes else k.decode("utf-8", "replace")
                for k in (r.key for r in self.records)]

    def lines(self) -> list:
        """Each output as the JSON text `dumps(self[i])` would give, built column by column."""
        recs = self.records
        if not recs:
            return []
        keys = self.output_keys()
        parts = []   # (label, values, spec): see `_column`
        if self.key_field or any(k is not None for k in keys):
            parts.append((',"key":', _cached(keys, skip=not self.key_field), "%s"))
        columns = [(',"timestamp":', self.timestamps)] if self.timestamps is not None else []
        columns += [("," + _estr(name) + ":", col) for name, col in self.fields.items()]
        for label, col in columns:
            flat = _float_dicts(col)
            if flat is not None:   # dicts of finite floats, one set of keys: a column per key
                parts += [((label + "{" if j == 0 else ",") + _estr(k) + ":", vals, "%r")
                          for j, (k, vals) in enumerate(flat)] + [("}", "", "")]
                continue
            values, spec = _column(col)
            if spec != "skip":
                parts.append((label, values, spec))
        head = self._head(recs)
        if head is not None and not any(p[2] == "%s" and None in p[1] for p in parts):   # one format for every row
            fmt, offsets = head
            fmt += "".join((label + values).replace("%", "%%") if spec == "" else label.replace("%", "%%") + spec
                           for label, values, spec in parts) + "}"
            return [fmt % row for row in zip(offsets, offsets, *(p[1] for p in parts if p[2] != ""))]
        if self.ids is None:
            ids = [encode(f"{r.stream}:{r.offset}") for r in recs]
        else:
            ids = list(map(encode, self.ids))
        out = ['{"id":' + i + ',"position":' + p for i, p in zip(ids, _positions(recs))]
        for label, values, spec in parts:
            col = (encode_floats(values) if spec == "%r" else list(map(int.__repr__, values)) if spec == "%d"
                   else [values] * len(recs) if spec == "" else values)
            out = [s if c is None else s + label + c for s, c in zip(out, col)]
        return [s + "}" for s in out]

    def _head(self, recs):
        """For one stream with default ids and positions ending in the offset: the format of
        '{"id":...,"position":{...}' with two %d for the offset, and the offsets; else None."""
        if self.ids is not None:
            return None
        r0, n = recs[0], len(recs)
        stream, offsets = r0.stream, [r.offset for r in recs]
        p = _prefix(r0.position, r0.offset)
        if not p or [r.stream for r in recs].count(stream) != n or set(map(type, offsets)) != {int}:
            return None
        text, size, last = p
        # a source writes one stream's positions with the same fields in one order
        positions = [r.position for r in recs]
        if list(map(len, positions)).count(size) != n or [q.get(last) for q in positions] != offsets:
            return None
        return ('{"id":' + _estr(stream + ":")[:-1].replace("%", "%%") + '%d","position":'
                + text.replace("%", "%%") + "%d}"), offsets


def _column(col: list) -> tuple:
    """(values, spec) of an output column for `OutputBatch.lines`: "%r" finite floats, "%d" ints,
    "" one JSON text every row shares (values is that text), "skip" a field no row carries, or
    "%s" JSON texts (None where the row leaves the field out)."""
    v0, t0 = col[0], type(col[0])
    one = set(map(type, col)) == {t0}
    if one and t0 in _SCALARS and col.count(v0) == len(col) and not (t0 is float and v0 == 0.0):
        return (None, "skip") if v0 is SKIP else (encode(v0), "")   # (a signed zero is not shared)
    if one and t0 is float and _finite_floats(col):
        return col, "%r"
    if one and t0 is int:
        return col, "%d"
    if one and t0 is bool:
        return ["true" if v else "false" for v in col], "%s"
    return [None if v is SKIP else _estr(v) if type(v) is str else encode(v) for v in col], "%s"


def _float_dicts(col: list):
    """[(key, its column of finite floats), ...] when every value of `col` is a dict with the
    same string keys in the same order, all values finite floats (multi-target predictions); else None."""
    d0 = col[0]
    if type(d0) is not dict or not d0 or set(map(type, col)) != {dict}:
        return None
    keys = list(d0)
    if set(map(type, keys)) != {str} or any(list(d) != keys for d in col):
        return None
    flat = [(k, [d[k] for d in col]) for k in keys]
    return flat if all(_finite_floats(vals) for _, vals in flat) else None


def _finite_floats(col) -> bool:
    """Whether every value is a finite float (then %r writes what JSON does)."""
    if not col or type(col[0]) is not float:
        return False
    for v in col:
        if type(v) is not float or v - v != 0.0:
            return False
    return True


class _Skip:
    def __repr__(self):
        return "SKIP"


SKIP = _Skip()   # a field this output does not carry
_SCALARS = (bool, int, float, str, type(None), _Skip)   # equal values of these write the same JSON


def _cached(values: list, skip: bool = False) -> list:
    """JSON texts of values that repeat (keys, timestamps' formats); None keys are left out
    when `skip` (outputs of records without a message key)."""
    cache: dict = {}
    out = []
    for v in values:
        if v is None and skip:
            out.append(None)
            continue
        try:
            s = cache.get(v)
        except TypeError:   # unhashable (a list or dict key)
            out.append(encode(v))
            continue
        if s is None:
            s = cache[v] = encode(v)
        out.append(s)
    return out


def _positions(records: list) -> list:
    """JSON of each record's position; Kafka and file positions (their last field is the
    record's offset) from a prefix per stream."""
    prefixes: dict = {}
    out = []
    for r in records:
        pos = r.position
        p = prefixes.get(r.stream)
        if p is None:
            p = prefixes[r.stream] = _prefix(pos, r.offset)
        if p and len(pos) == p[1] and pos.get(p[2]) == r.offset and type(r.offset) is int:
            out.append(p[0] + int.__repr__(r.offset) + "}")
        else:
            out.append(dumps(pos))
    return out


def _prefix(pos, offset):
    """(text before the offset, number of fields, the offset's field) or False."""
    if type(pos) is not dict or not pos or type(offset) is not int:
        return False
    last = next(reversed(pos))
    if pos[last] != offset:
        return False
    head = dumps({k: v for k, v in pos.items() if k != last})
    text = (head[:-1] + "," if len(head) > 2 else "{") + _estr(last) + ":"
    return text, len(pos), last

"""The loop's columnar batch path: decoded columns in, one `OutputBatch` of outputs out.

When the schema lists its features (not ``"*"``), has one target (or none), and no delayed
labels, the loop keeps a batch as columns (a feature matrix, lists of targets, keys, ids) from
the decoder to the learner's `predict_many`/`learn_many`, and hands the sinks an `OutputBatch`:
a sequence of the same output dicts the per-event path builds, which can also write every
output's JSON line directly (`lines()`), byte for byte what `dumps(output)` gives, without
building the dicts. This is what makes `streamnn run` cost a few microseconds per event.

>>> from streamnn.runtime.records import Record
>>> recs = [Record(b"{}", {"topic": "t", "partition": 0, "offset": i}, "t:0", i) for i in (7, 8)]
>>> out = OutputBatch(recs, {"prediction": [0.5, float("nan")]}, ids=None)
>>> out.lines()
['{"id":"t:0:7","position":{"topic":"t","partition":0,"offset":7},"prediction":0.5}', \
'{"id":"t:0:8","position":{"topic":"t","partition":0,"offset":8},"prediction":NaN}']
>>> out[0]
{'id': 't:0:7', 'position': {'topic': 't', 'partition': 0, 'offset': 7}, 'prediction': 0.5}
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from json.encoder import encode_basestring_ascii as _estr

import numpy as np
import pandas as pd

from .records import NO_TARGET
from .sinks import dumps
from .tasks import _index

__all__ = ["Columns", "ColumnarPath", "OutputBatch", "encode", "encode_floats"]


@dataclass
class Columns:
    """A decoded batch as columns; row i belongs to `records[i]`.

    `rows` holds each record's listed feature values (None = missing), `ys` its target
    (`NO_TARGET` when absent), `ids` the event ids (None: the default ``"<stream>:<offset>"``),
    `keys` and `timestamps` the schema's key and timestamp fields (None when not in the schema),
    `X` the rows as a float matrix (n, F), range-checked by the decoder (None: build it).
    """

    records: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    ys: list = field(default_factory=list)
    ids: list | None = None
    keys: list | None = None
    timestamps: list | None = None
    X: object = None


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
        The output fields in order, name -> list of values (a value `_SKIP` leaves the field out).
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
        if k is not _SKIP:
            o["key"] = k
        if self.timestamps is not None:
            o["timestamp"] = self.timestamps[i]
        for name, col in self.fields.items():
            v = col[i]
            if v is not _SKIP:
                o[name] = v
        return o

    def _key(self, i):
        if self.key_field:
            return self.keys[i]
        k = self.records[i].key
        if k is None:
            return _SKIP
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
        parts = []   # (label, column of JSON texts, or of finite floats / ints for %r / %d)
        if self.key_field or any(k is not None for k in keys):
            parts.append((',"key":', _cached(keys, skip=not self.key_field)))
        if self.timestamps is not None:
            parts.append((',"timestamp":', [_estr(v) if type(v) is str else encode(v) for v in self.timestamps]))
        for name, col in self.fields.items():
            label = "," + _estr(name) + ":"
            if _finite_floats(col):
                parts.append((label, col, "%r"))
            else:
                parts.append((label, [None if v is _SKIP else encode(v) for v in col]))
        head = self._head(recs)
        if head is not None and not any(None in p[1] for p in parts):   # one format for every row
            fmt, offsets = head
            fmt += "".join(p[0].replace("%", "%%") + (p[2] if len(p) > 2 else "%s") for p in parts) + "}"
            return [fmt % row for row in zip(offsets, offsets, *(p[1] for p in parts))]
        if self.ids is None:
            ids = [encode(f"{r.stream}:{r.offset}") for r in recs]
        else:
            ids = list(map(encode, self.ids))
        out = ['{"id":' + i + ',"position":' + p for i, p in zip(ids, _positions(recs))]
        for p in parts:
            label, col = p[0], p[1] if len(p) == 2 else encode_floats(p[1])
            out = [s if c is None else s + label + c for s, c in zip(out, col)]
        return [s + "}" for s in out]

    def _head(self, recs):
        """For one stream with default ids and positions ending in the offset: the format of
        '{"id":...,"position":{...}' with two %d for the offset, and the offsets; else None."""
        if self.ids is not None:
            return None
        r0 = recs[0]
        stream, offsets = r0.stream, [r.offset for r in recs]
        p = _prefix(r0.position, r0.offset)
        if not p or any(r.stream != stream for r in recs) or any(type(o) is not int for o in offsets):
            return None
        text, size, last = p
        for r in recs:   # a source writes one stream's positions with the same fields in one order
            pos = r.position
            if len(pos) != size or pos.get(last) != r.offset:
                return None
        return ('{"id":' + _estr(stream + ":")[:-1].replace("%", "%%") + '%d","position":'
                + text.replace("%", "%%") + "%d}"), offsets


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


_SKIP = _Skip()   # a field this output does not carry


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


def targets_as_float(ys: list):
    """Targets as floats for losses and lags (NO_TARGET and non-numbers: NaN)."""
    try:
        return np.array(ys, dtype=np.float64)
    except (TypeError, ValueError):
        pass
    out = []
    nan = math.nan
    for y in ys:
        t = type(y)
        if t is float or t is int:
            out.append(float(y))
        elif y is NO_TARGET or y is None:
            out.append(nan)
        else:
            try:
                out.append(float(y))
            except (TypeError, ValueError):
                out.append(nan)
    return out


class ColumnarPath:
    """The `Runner`'s batch steps 2-5 on columns (mixed into `streamnn.runtime.loop.Runner`)."""

    def _columnar(self, unit) -> bool:
        """Whether the unit's batches take the columnar path (`streamnn.runtime.columns`)."""
        ok = unit.columnar
        if ok is None:
            task, dec = unit.task, self.decoder
            ok = unit.columnar = (
                dec.columnar and task.many and task.kind in ("regression", "classification", "anomaly")
                and (task.kind != "classification" or task.proba_many)
                and not (self.delayed_labels > 0 and dec.event_id))
        return ok

    def _process_columns(self, unit, records: list) -> None:
        """Steps 2-5 for a batch kept as columns; the same outputs, losses, counters and learner
        updates as the per-event path (tests/test_columns.py holds the two side by side)."""
        c, task, dec = unit.counters, unit.task, self.decoder
        cols, errors = dec.decode_columns(records)                     # 2. decode
        for record, reason in errors:
            self._dead_letter(unit, record, reason)
        n = len(cols.records)
        if n == 0:
            if self.metrics is not None:
                self.metrics.batch(self, unit, len(records), 0, 0, 0, [], math.nan, 0.0, 0.0)
            return
        names = list(dec.features)
        F = len(names)
        X = cols.X
        if X is None:
            X = np.array(cols.rows, dtype=np.float64).reshape(n, F) if F else np.empty((n, 0))
        ys = cols.ys
        if unit.lags is not None:
            lags = unit.lags
            V = np.empty((n, len(lags.fields)))
            for j, f in enumerate(lags.fields):
                if f in names:
                    V[:, j] = X[:, names.index(f)]
                elif f == dec.target:
                    V[:, j] = targets_as_float(ys)
                else:
                    V[:, j] = np.nan
            X = np.concatenate([X, lags.apply_block(V, cols.keys)], axis=1)
            names += lags.names
        X = pd.DataFrame(X, columns=_index(tuple(names)), copy=False)
        t0 = time.perf_counter()
        fields = task.predict_columns(unit.learner, X)                 # 4. predict, emit
        t1 = time.perf_counter()
        n_anom = c["anomalies"]
        has = [i for i, y in enumerate(ys) if y is not NO_TARGET]
        losses = self._column_outputs(unit, fields, ys, has)
        rows = has if task.supervised else range(n)
        outs = OutputBatch(cols.records, fields, cols.ids, cols.keys, cols.timestamps, bool(dec.key))
        for sink in self.sinks:
            sink.emit(outs)
        c["events_out"] += n
        learn_s, post = 0.0, math.nan
        if rows:                                                       # 5. learn
            XL = X if len(rows) == n else X.iloc[rows]
            yl = ys if len(rows) == n else [ys[i] for i in rows]

            def post_loss():
                post_losses, _ = task.losses(task.predict_columns(unit.learner, XL), yl, range(len(yl)))
                return sum(post_losses) / len(post_losses) if post_losses else math.nan

            learn_s, post = self._learn(unit, XL, None, yl, post_loss)
        if self.metrics is not None:
            self.metrics.batch(self, unit, len(records), n, len(rows), c["anomalies"] - n_anom, losses,
                               post, t1 - t0, learn_s)

    def _column_outputs(self, unit, fields: dict, ys: list, rows: list) -> list:
        """The columnar `_outputs`: target / label and anomaly fields, losses and counters;
        `rows` are the rows with a target."""
        c, thr, n = unit.counters, unit.threshold, len(ys)
        if unit.task.kind == "anomaly":
            flags, thresholds = [], []
            for s in fields["score"]:
                flag, t = thr.check(s)
                flags.append(flag)
                thresholds.append(t if math.isfinite(t) else None)
                c["anomalies"] += flag
            fields["anomaly"], fields["threshold"] = flags, thresholds
            fields["label"] = ys if len(rows) == n else [_SKIP if y is NO_TARGET else y for y in ys]
            return []
        fields["y"] = ys if len(rows) == n else [_SKIP if y is NO_TARGET else y for y in ys]
        if not rows:
            return []
        losses, correct = unit.task.losses(fields, ys, rows)
        s = c["loss_sum"]
        for v in losses:
            s += v
        c["loss_sum"] = s
        c["loss_n"] += len(losses)
        c["correct"] += correct
        return losses

"""Decoding and validation: `Record` bytes -> `Event`, or a `DecodeError` naming the reason.

Every way a record can be bad has its own reason, which the dead-letter sink stores next to the
record and the metrics count by class (the text before the first colon): ``oversized``,
``empty``, ``binary``, ``not JSON``, ``not an object``, ``bad CSV row``, ``missing field``,
``wrong type``, ``non-finite target``.

>>> from streamnn.runtime.records import Record
>>> dec = Decoder(features=["a", "b"], target="y", event_id="id")
>>> ev = dec.decode(Record(b'{"id": 7, "a": 1.5, "b": true, "y": 2.0}', {}, "s", 1))
>>> ev.x, ev.y, ev.event_id
({'a': 1.5, 'b': 1.0}, 2.0, 7)
>>> dec.decode(Record(b'{"id": 8, "a": 1, "y": NaN}', {}, "s", 2)).reason
"non-finite target: 'y' is nan"
>>> dec.decode(Record(b'{"a": 1', {}, "s", 3)).reason[:8]
'not JSON'
"""

from __future__ import annotations

import csv
import io
import json
import json.scanner
import math

from .records import NO_TARGET, DecodeError, Event, Record

__all__ = ["Decoder", "reason_class"]

_SCAN = json.scanner.make_scanner(json.JSONDecoder())
_PLAIN = frozenset((float, int, bool, type(None)))   # feature values a float matrix takes as decode does


def reason_class(reason: str) -> str:
    """The class of a dead-letter reason (its text before the first colon)."""
    return reason.split(":", 1)[0]


class Decoder:
    """Turns records into events according to a schema.

    Parameters
    ----------
    features
        Field names of the features, or "*" for every numeric field except the target(s), key,
        event id and timestamp (other fields are then ignored). A listed feature that is absent or
        null is missing (the learner imputes it) unless it is also in `required`; a listed feature
        that is not a number (or a boolean) is a wrong type.
    target
        The target field, a list of fields (several targets: `y` becomes a dict), or None. An event
        without it is predicted only. For anomaly detectors it is the ground-truth label, used for
        reports only.
    key, event_id, timestamp
        Optional field names copied into the outputs. Without `event_id` the id is
        ``"<stream>:<offset>"``; with it, the field is required.
    required
        Fields that must be present and non-null.
    max_bytes
        Larger records are dead letters ("oversized").
    target_kind
        "number" (regression, detectors' labels) or "label" (classification: str, int or bool).
    format
        "json" (one object per record) or "csv" (then `columns` names the cells).
    """

    def __init__(self, features="*", target=None, key=None, event_id=None, timestamp=None,
                 required=(), max_bytes: int = 1_000_000, target_kind: str = "number",
                 format: str = "json", columns=None):
        self.features = features
        self.target = target
        self.key = key
        self.event_id = event_id
        self.timestamp = timestamp
        self.required = tuple(required or ())
        self.max_bytes = max_bytes
        self.target_kind = target_kind
        self.format = format
        self.columns = list(columns) if columns is not None else None
        if format == "csv" and not self.columns:
            raise ValueError("a CSV decoder needs the header's column names (columns=...)")
        if target_kind not in ("number", "label"):
            raise ValueError(f"target_kind={target_kind!r}: use 'number' or 'label'")
        self.targets = list(target) if isinstance(target, (list, tuple)) else None
        reserved = set(self.targets or ([target] if target else []))
        reserved |= {f for f in (key, event_id, timestamp) if f}
        self._reserved = reserved
        self._required = tuple(dict.fromkeys(self.required + ((event_id,) if event_id else ())))

    # -- parsing -----------------------------------------------------------------------------

    def _parse(self, value: bytes):
        if len(value) > self.max_bytes:
            return DecodeError(f"oversized: {len(value)} bytes > max_bytes={self.max_bytes}")
        if not value or value.isspace():
            return DecodeError("empty: the record has no content")
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as e:
            return DecodeError(f"binary: not UTF-8 text ({e.reason} at byte {e.start})")
        if self.format == "csv":
            return self._parse_csv(text)
        try:   # the C scanner directly (json.loads adds three Python calls and two regexes)
            obj, end = _SCAN(text, 0)
            if end != len(text):
                raise ValueError
        except (ValueError, StopIteration):
            try:
                obj = json.loads(text)   # the slow path: surrounding spaces, or the error message
            except ValueError as e:
                return DecodeError(f"not JSON: {e}")
        if type(obj) is not dict:
            return DecodeError(f"not an object: a JSON {type(obj).__name__}, expected an object")
        return obj

    def _parse_csv(self, text: str):
        cells = text.split(",") if '"' not in text else next(csv.reader(io.StringIO(text)))
        if len(cells) != len(self.columns):
            return DecodeError(f"bad CSV row: {len(cells)} cells, the header has {len(self.columns)}")
        return {c: _cell(v) for c, v in zip(self.columns, cells)}

    # -- validation --------------------------------------------------------------------------

    def decode(self, record: Record):
        """One record -> an `Event`, or a `DecodeError` with the reason."""
        obj = self._parse(record.value)
        if type(obj) is DecodeError:
            return obj
        for f in self._required:
            if obj.get(f) is None:
                return DecodeError(f"missing field: required field {f!r} is absent or null")
        x = self._features(obj)
        if type(x) is DecodeError:
            return x
        y = self._target(obj)
        if type(y) is DecodeError:
            return y
        if self.event_id:
            eid = obj[self.event_id]
            if type(eid) is float and eid.is_integer():   # CSV cells are floats
                eid = int(eid)
            if not isinstance(eid, (str, int)) or isinstance(eid, bool):
                return DecodeError(f"wrong type: event id {self.event_id!r} is a {type(eid).__name__}; "
                                   "use a string or an integer")
        else:
            eid = f"{record.stream}:{record.offset}"
        key = obj.get(self.key) if self.key else None
        ts = obj.get(self.timestamp) if self.timestamp else None
        return Event(x, y, eid, record, key, ts)

    def decode_many(self, records):
        """Records -> (events, [(record, reason), ...]) in order."""
        events, errors = [], []
        for r in records:
            ev = self.decode(r)
            if type(ev) is DecodeError:
                errors.append((r, ev.reason))
            else:
                events.append(ev)
        return events, errors

    @property
    def columnar(self) -> bool:
        """Whether `decode_columns` applies: listed features and at most one target."""
        return self.features != "*" and self.targets is None

    def decode_columns(self, records):
        """Records -> (`Columns`, [(record, reason), ...]): what `decode_many` gives, as columns.

        Records whose values are plain (number, boolean or null features, a finite number or a label
        target) are read here; any other record goes through `decode`, so every reason and every
        conversion is the same as there.
        """
        from .columns import Columns

        feats, target, label = list(self.features), self.target, self.target_kind == "label"
        eid_f, key_f, ts_f, required = self.event_id, self.key, self.timestamp, self._required
        maxb, scan, fmt_json = self.max_bytes, _SCAN, self.format == "json"
        cols = Columns(ids=[] if eid_f else None, keys=[] if key_f else None,
                       timestamps=[] if ts_f else None)
        recs, rows, ys, errors = cols.records, cols.rows, cols.ys, []
        ids, keys, tss = cols.ids, cols.keys, cols.timestamps
        plain_types, isfinite, no_target = _PLAIN.issuperset, math.isfinite, NO_TARGET
        for r in records:
            obj = None
            v = r.value
            if fmt_json and type(v) is bytes and 0 < len(v) <= maxb and v[0] == 123:   # "{"
                try:
                    text = v.decode()
                    obj, end = scan(text, 0)
                    if end != len(text):
                        obj = None
                except (ValueError, StopIteration):
                    obj = None
            if type(obj) is dict:
                get = obj.get
                row = list(map(get, feats)) if feats else []
                y = get(target, no_target) if target else no_target
                ty = type(y)
                if ((y is no_target or (ty is float and isfinite(y)) or ty is int
                        or (label and (ty is str or ty is bool)))
                        and (not feats or plain_types(map(type, row)))
                        and (not required or None not in list(map(get, required)))
                        and (not eid_f or type(get(eid_f)) in (str, int))):
                    if label and ty is float and y.is_integer():
                        y = int(y)
                    recs.append(r)
                    rows.append(row)
                    ys.append(y)
                    if eid_f:
                        ids.append(get(eid_f))
                    if key_f:
                        keys.append(get(key_f))
                    if ts_f:
                        tss.append(get(ts_f))
                    continue
            ev = self.decode(r)   # anything unusual: the reference path decides
            if type(ev) is DecodeError:
                errors.append((r, ev.reason))
                continue
            recs.append(r)
            rows.append([ev.x.get(k) for k in feats])
            ys.append(ev.y)
            if eid_f:
                ids.append(ev.event_id)
            if key_f:
                keys.append(ev.key)
            if ts_f:
                tss.append(ev.timestamp)
        return cols, errors

    def _features(self, obj: dict):
        x = {}
        if self.features == "*":
            reserved = self._reserved
            for k, v in obj.items():
                t = type(v)
                if (t is float or t is int) and k not in reserved:
                    x[k] = v
                elif t is bool and k not in reserved:
                    x[k] = float(v)
            return x
        for k in self.features:
            v = obj.get(k)
            t = type(v)
            if t is float or t is int:
                x[k] = v
            elif v is None:
                continue
            elif t is bool:
                x[k] = float(v)
            else:
                return DecodeError(f"wrong type: feature {k!r} is a {t.__name__} ({_short(v)}); "
                                   "send a number or drop it from schema.features")
        return x

    def _target(self, obj: dict):
        if self.targets is not None:
            ys = {t: obj.get(t) for t in self.targets}
            present = [t for t, v in ys.items() if v is not None]
            if not present:
                return NO_TARGET
            if len(present) < len(ys):
                missing = next(t for t, v in ys.items() if v is None)
                return DecodeError(f"missing field: target {missing!r} is absent; an event carries "
                                   "all its targets or none")
            for t, v in ys.items():
                v = self._check_target(t, v)
                if type(v) is DecodeError:
                    return v
                ys[t] = v
            return ys
        if not self.target:
            return NO_TARGET
        v = obj.get(self.target)
        return NO_TARGET if v is None else self._check_target(self.target, v)

    def _check_target(self, name, v):
        t = type(v)
        if t is float and not math.isfinite(v):
            return DecodeError(f"non-finite target: {name!r} is {v}")
        if self.target_kind == "number":
            if t is float or t is int:
                return v
            if t is bool:
                return float(v)
            return DecodeError(f"wrong type: target {name!r} is a {t.__name__} ({_short(v)}); "
                               "this learner needs a number")
        if t is str or t is int or t is bool:
            return v
        if t is float:
            return int(v) if v.is_integer() else v
        return DecodeError(f"wrong type: target {name!r} is a {t.__name__} ({_short(v)}); "
                           "a class label is a string, an integer or a boolean")


def _cell(v: str):
    """A CSV cell -> None (empty), a float, or the string itself."""
    if not v:
        return None
    try:
        return float(v)
    except ValueError:
        return v


def _short(v, n: int = 40) -> str:
    s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."

"""Decoding and validation: `Record` bytes -> `Event`, or a `DecodeError` naming the reason.

Every way a record can be bad has its own reason, which the dead-letter sink stores next to the
record and the metrics count by class (the text before the first colon): ``oversized``,
``empty``, ``binary``, ``too deep``, ``not JSON``, ``not an object``, ``bad CSV row``,
``missing field``, ``wrong type``, ``non-finite target``, ``out of range``, ``too many features``,
``too long`` (an id, key, timestamp or label past `MAX_TEXT` characters: each output copies it),
and ``undecodable`` (any other exception while decoding one record: decoding never raises).

The range rule: a feature or numeric target with ``|x| > max_abs`` (default 1e30, beyond which
float32 training means nothing), an infinite one, or an integer too large for a float is a dead
letter whose reason names the field; a NaN or null feature is missing (the learner imputes it).

>>> from streamnn.runtime.records import Record
>>> dec = Decoder(features=["a", "b"], target="y", event_id="id")
>>> ev = dec.decode(Record(b'{"id": 7, "a": 1.5, "b": true, "y": 2.0}', {}, "s", 1))
>>> ev.x, ev.y, ev.event_id
({'a': 1.5, 'b': 1.0}, 2.0, 7)
>>> dec.decode(Record(b'{"id": 8, "a": 1, "y": NaN}', {}, "s", 2)).reason
"non-finite target: 'y' is nan"
>>> dec.decode(Record(b'{"a": 1', {}, "s", 3)).reason[:8]
'not JSON'
>>> dec.decode(Record(b'{"id": 9, "a": 1e31, "y": 1}', {}, "s", 4)).reason
"out of range: feature 'a' is 1e+31; |x| > max_abs=1e+30 (raise [schema] max_abs, or fix the producer)"
>>> dec.decode(Record(b'{"id": 9, "a": 1, "y": 1, "z": ' + b"[" * 100 + b"]" * 100 + b'}', {}, "s", 5)).reason
'too deep: JSON nested deeper than max_depth=64'
"""

from __future__ import annotations

import csv
import io
import json
import math
import re

import numpy as np

from .decoding import SCAN as _SCAN, _cell, decode_batch
from .records import MAX_TEXT, NO_TARGET, DecodeError, Event, Record

__all__ = ["Decoder", "MAX_TEXT", "lag_names", "lag_offsets", "reason_class", "schema_problem", "too_deep"]

MAX_LAG = 100_000   # the furthest lag (values kept per key and lag field)

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')        # JSON strings (their brackets do not nest)


def lag_offsets(lags) -> list:
    """`[schema] lags` as the offsets it keeps: a number n is 1 .. n; a list (e.g. [1, 2, 48]: the last
    two values and the one a day of half hours back) is its offsets, sorted, each once.

    >>> lag_offsets(3), lag_offsets([48, 1, 2, 1])
    ([1, 2, 3], [1, 2, 48])
    """
    return sorted(set(lags)) if isinstance(lags, (list, tuple)) else list(range(1, int(lags) + 1))


def lag_names(fields, lags) -> list:
    """The lag columns of `fields` in order (every field's first offset, then the next, ...).

    >>> lag_names(["v", "w"], 2), lag_names(["v"], [1, 24])
    (['v_lag1', 'w_lag1', 'v_lag2', 'w_lag2'], ['v_lag1', 'v_lag24'])
    """
    return [f"{f}_lag{i}" for i in lag_offsets(lags) for f in fields]


def schema_problem(sch: dict) -> str | None:
    """The first problem of a config's ``[schema]`` section that its types do not show (None: none).

    >>> schema_problem({"features": ["a", "y"], "target": "y", "lags": 0, "lag_fields": None,
    ...                 "max_features": 256})
    "[schema] features: 'y' is also the target; a feature must not be the answer it predicts (drop it from features)"
    """
    feats, lags = sch["features"], sch["lags"]
    if isinstance(feats, str) and feats != "*":
        return f"[schema] features: {feats!r}; use \"*\" (all numeric fields) or a list of field names"
    targets = sch["target"] if isinstance(sch["target"], list) else [sch["target"]] if sch["target"] else []
    for key, names in (("features", feats if isinstance(feats, list) else []), ("target", targets)):
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            return f"[schema] {key}: {twice[0]!r} is listed twice; list each field once"
    leak = [t for t in targets if isinstance(feats, list) and t in feats]
    if leak:
        return (f"[schema] features: {leak[0]!r} is also the target; a feature must not be the answer it "
                "predicts (drop it from features)")
    if isinstance(lags, list):
        if not lags or not all(type(o) is int and 1 <= o <= MAX_LAG for o in lags):
            return (f"[schema] lags = {lags!r}: a list of lags holds how many values back each one is, whole "
                    f"numbers from 1 to {MAX_LAG:,}, e.g. [1, 2, 48]; or give a number n for 1 .. n")
    elif lags < 0:
        return "[schema] lags: must be 0 (off) or a positive number of past values"
    if lags and not (sch["lag_fields"] or isinstance(feats, list)):
        return "[schema] lag_fields: lags need the fields to lag; list them in lag_fields"
    fields = sch["lag_fields"] or (feats if isinstance(feats, list) else [])
    n = len(set(lags)) if isinstance(lags, list) else lags   # columns per field
    if n * max(1, len(fields)) > sch["max_features"]:
        return (f"[schema] lags: {n} lags of {len(fields)} field(s) make more columns than max_features = "
                f"{sch['max_features']}; use fewer lags (a list such as [1, 2, 48] keeps only those), or "
                "raise [schema] max_features")
    if not isinstance(lags, list) and lags > MAX_LAG:
        return f"[schema] lags: at most {MAX_LAG:,} past values"
    clash = [f for f in lag_names(fields, lags) if isinstance(feats, list) and f in feats]
    if clash:
        return (f"[schema] features: {clash[0]!r} is also the name of a lag column ([schema] lags adds "
                f"<field>_lag<k> for each lag k); rename the field or drop it from features")
    return None


def reason_class(reason: str) -> str:
    """The class of a dead-letter reason (its text before the first colon)."""
    return reason.split(":", 1)[0]


_ARRAY_HINT = ("; a JSON array (a whole file of records on one line?): records are JSON Lines, one "
               "object per line; convert with jq -c '.[]' FILE > FILE.jsonl")


class Decoder:
    """Turns records into events according to a schema.

    Parameters
    ----------
    features
        Field names of the features, or "*" for every numeric field except the target(s), key,
        event id, timestamp and `reserve`d names (other fields are then ignored). A listed feature that is absent or
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
    max_abs
        Features and numeric targets with a larger absolute value (or infinite, or an integer too
        large for a float) are dead letters ("out of range"); NaN features are missing values.
    max_depth
        JSON nested deeper is a dead letter ("too deep").
    max_features
        With ``features="*"``: a record with more numeric fields is a dead letter ("too many
        features"); the loop applies the same cap to the features a learner has seen in total.
    max_classes
        Used by the loop: a label that would make a classifier's class count pass it is a dead
        letter ("too many classes"; a label per event cannot grow the output layer without end).
    target_kind
        "number" (regression, detectors' labels), "label" (classification: str, int or bool) or
        "flag" (multi-label: each target true or false; 1 / 0 and the texts "true" / "false"
        read as those).
    format
        "json" (one object per record) or "csv" (then `columns` names the cells).
    """

    def __init__(self, features="*", target=None, key=None, event_id=None, timestamp=None,
                 required=(), max_bytes: int = 1_000_000, target_kind: str = "number",
                 format: str = "json", columns=None, max_abs: float = 1e30, max_depth: int = 64,
                 max_features: int = 256, max_classes: int = 10_000):
        self.features = features
        self.target = target
        self.key = key
        self.event_id = event_id
        self.timestamp = timestamp
        self.required = tuple(required or ())
        self.max_bytes = max_bytes
        self.max_abs, self.max_depth, self.max_features = float(max_abs), int(max_depth), int(max_features)
        self.max_classes = int(max_classes)
        if not self.max_abs > 0 or self.max_depth < 1 or self.max_features < 1:
            raise ValueError(f"max_abs={max_abs!r}, max_depth={max_depth!r}, max_features={max_features!r}: "
                             "each must be positive")
        self.target_kind = target_kind
        self.format = format
        self.columns = list(columns) if columns is not None else None
        if format == "csv" and not self.columns:
            raise ValueError("a CSV decoder needs the header's column names (columns=...)")
        if target_kind not in ("number", "label", "flag"):
            raise ValueError(f"target_kind={target_kind!r}: use 'number', 'label' or 'flag'")
        self.targets = list(target) if isinstance(target, (list, tuple)) else None
        reserved = set(self.targets or ([target] if target else []))
        reserved |= {f for f in (key, event_id, timestamp) if f}
        self._reserved = reserved
        self._required = tuple(dict.fromkeys(self.required + ((event_id,) if event_id else ())))

    # -- parsing -----------------------------------------------------------------------------

    def _parse(self, value: bytes):
        if len(value) > self.max_bytes:
            return DecodeError(f"oversized: {len(value)} bytes > max_bytes={self.max_bytes}" +
                               (_ARRAY_HINT if self.format != "csv" and value[:1] == b"[" else ""))
        if not value or value.isspace():
            return DecodeError("empty: the record has no content")
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as e:
            return DecodeError(f"binary: not UTF-8 text ({e.reason} at byte {e.start})")
        if self.format == "csv":
            return self._parse_csv(text)
        if too_deep(value, self.max_depth):
            return DecodeError(f"too deep: JSON nested deeper than max_depth={self.max_depth}")
        try:   # the C scanner directly (json.loads adds three Python calls and two regexes)
            obj, end = _SCAN(text, 0)
            if end != len(text):
                raise ValueError
        except (ValueError, StopIteration, RecursionError):
            try:
                obj = json.loads(text)   # the slow path: surrounding spaces, or the error message
            except ValueError as e:
                return DecodeError(f"not JSON: {_short(str(e), 200)}")
            except RecursionError:
                return DecodeError(f"too deep: JSON nested deeper than max_depth={self.max_depth}")
        if type(obj) is not dict:
            return DecodeError(f"not an object: a JSON {type(obj).__name__}, expected an object" +
                               (_ARRAY_HINT if type(obj) is list else ""))
        return obj

    def _parse_csv(self, text: str):
        cells = text.split(",") if '"' not in text else next(csv.reader(io.StringIO(text)))
        if len(cells) != len(self.columns):
            return DecodeError(f"bad CSV row: {len(cells)} cells, the header has {len(self.columns)}")
        return {c: _cell(v) for c, v in zip(self.columns, cells)}

    # -- validation --------------------------------------------------------------------------

    def decode(self, record: Record):
        """One record -> an `Event`, or a `DecodeError` with the reason; never raises."""
        try:
            return self._decode(record)
        except Exception as e:   # a record must never stop the consumer: any surprise is a dead letter
            return DecodeError(f"undecodable: {type(e).__name__}: {_short(str(e), 200)}")

    def _decode(self, record: Record):
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
        for what, name, v in (("event id", self.event_id, eid), ("key", self.key, key),
                              ("timestamp", self.timestamp, ts)):
            if name and _text_len(v) > MAX_TEXT:
                return _too_long(what, name, v)
        return Event(x, y, eid, record, key, ts)

    def reserve(self, names) -> None:
        """With ``features="*"``: fields of these names are never features (the runtime's lag
        columns: a field of that name would make a second column of the name), like the target."""
        self._reserved = self._reserved | set(names)

    def decode_batch(self, records):
        """Records -> (`Batch`, [(record, reason), ...]) in order: the runtime's decoder
        (`streamnn.runtime.decoding`); `decode` is its fallback for unusual records."""
        return decode_batch(self, records)

    def _range_reason(self, what: str, name, v) -> str:
        return (f"out of range: {what} {name!r} is {_short(v)}; |x| > max_abs={self.max_abs:g} "
                "(raise [schema] max_abs, or fix the producer)")

    def _features(self, obj: dict):
        x = {}
        hi = self.max_abs
        lo = -hi
        if self.features == "*":
            reserved = self._reserved
            for k, v in obj.items():
                t = type(v)
                if (t is float or t is int) and k not in reserved:
                    if not lo <= v <= hi and v == v:
                        return DecodeError(self._range_reason("feature", k, v))
                    x[k] = v
                elif t is bool and k not in reserved:
                    x[k] = float(v)
            if len(x) > self.max_features:
                return DecodeError(f"too many features: {len(x)} numeric fields > max_features="
                                   f"{self.max_features} (list the features in schema.features, or "
                                   "raise [schema] max_features)")
            return x
        for k in self.features:
            v = obj.get(k)
            t = type(v)
            if t is float or t is int:
                if not lo <= v <= hi and v == v:   # NaN is a missing value
                    return DecodeError(self._range_reason("feature", k, v))
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
                if not -self.max_abs <= v <= self.max_abs:
                    return DecodeError(self._range_reason("target", name, v))
                return v
            if t is bool:
                return float(v)
            return DecodeError(f"wrong type: target {name!r} is a {t.__name__} ({_short(v)}); "
                               "this learner needs a number")
        if self.target_kind == "flag":
            f = flag(v)
            if f is None:
                return DecodeError(f"wrong type: target {name!r} is {_short(v)}; a label of a multi-label "
                                   "learner is true or false (or 1 / 0)")
            return f
        if t is str and len(v) > MAX_TEXT:
            return _too_long("target", name, v)
        if t is str or t is int or t is bool:
            return v
        if t is float:
            return int(v) if v.is_integer() else v
        return DecodeError(f"wrong type: target {name!r} is a {t.__name__} ({_short(v)}); "
                           "a class label is a string, an integer or a boolean")


_FLAGS = {"true": True, "false": False, "1": True, "0": False}


def flag(v):
    """A multi-label target as a bool: true / false, 1 / 0 (int or float) and the texts "true",
    "false", "1", "0" (any case); anything else None."""
    t = type(v)
    if t is bool:
        return v
    if (t is int or t is float) and (v == 0 or v == 1):
        return v == 1
    if t is str:
        return _FLAGS.get(v.strip().lower())
    return None


def _text_len(v) -> int:
    """Characters of `v` in an output (a string's own; an object or list's JSON)."""
    t = type(v)
    if t is str:
        return len(v)
    return len(json.dumps(v, default=str)) if t is dict or t is list else 0


def _too_long(what: str, name, v) -> DecodeError:
    return DecodeError(f"too long: {what} {name!r} is {_text_len(v)} characters; at most MAX_TEXT={MAX_TEXT} "
                       "(every output copies it: send a short identifier)")


def too_deep(value: bytes, limit: int) -> bool:
    """Whether the JSON text `value` nests arrays/objects deeper than `limit` (brackets inside
    strings do not count); vectorised, so a 1 MB record costs milliseconds.

    >>> too_deep(b'{"a": [[1]], "s": "[[[["}', 3), too_deep(b'{"a": [[[1]]]}', 3)
    (False, True)
    """
    if value.count(b"[") + value.count(b"{") <= limit:
        return False
    if b'"' in value:
        value = _STRINGS.sub(b"", value)
    a = np.frombuffer(value, dtype=np.uint8)
    step = (a == 91).astype(np.int32) + (a == 123) - (a == 93) - (a == 125)   # [ { ] }
    return bool(step.size) and int(np.cumsum(step).max()) > limit


def _short(v, n: int = 40) -> str:
    if type(v) is int and v.bit_length() > 128:   # repr of a huge integer is long (or refused)
        return f"an integer of {len(str(v)) if v.bit_length() < 14000 else 'over 4000'} digits"
    s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."

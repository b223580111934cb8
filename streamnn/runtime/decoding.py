"""`Decoder.decode_batch`: a batch of records -> one `Batch` of columns and its dead letters.

Records whose values are plain (number, boolean or null features; finite numeric or label
targets within range; a string or integer id) are read here without building an `Event`; any
other record goes through the per-record `Decoder.decode`, so every reason and conversion is the
same as there (tests/test_fuzz.py proves the two equal on generated records). A CSV batch whose
rows are all plain is read column by column (`_csv_block`: one split, `float` over a column at
once); any other CSV batch goes row by row. The range rule is checked on the feature matrix at
once, and the dead letters keep the records' order.

>>> from streamnn.runtime.records import Record
>>> from streamnn.runtime.schema import Decoder
>>> dec = Decoder(features=["a"], target="y")
>>> recs = [Record(v, {}, "s", i) for i, v in enumerate([b'{"a": 1, "y": 2}', b'{"a": "x"}', b'{"y": 3}'])]
>>> batch, errors = dec.decode_batch(recs)
>>> batch.X.tolist(), batch.ys, [(r.offset, why[:10]) for r, why in errors]
([[1.0], [nan]], [2, 3], [(1, 'wrong type')])
"""

from __future__ import annotations

import json
import json.scanner
import math

import numpy as np

from .records import MAX_TEXT, NO_TARGET, Batch, DecodeError

__all__ = ["decode_batch"]

SCAN = json.scanner.make_scanner(json.JSONDecoder())   # the C scanner (json.loads adds 3 calls, 2 regexes)

_PLAIN = frozenset((float, int, bool, type(None)))   # feature values a float matrix takes as decode does


def decode_batch(dec, records: list):
    """Records -> (`Batch`, [(record, reason), ...]); see the module docstring."""
    star = dec.features == "*"
    b = Batch(None if star else tuple(dec.features), ids=[] if dec.event_id else None,
              keys=[] if dec.key else None, timestamps=[] if dec.timestamp else None)
    errors: list = []
    if star:
        for r in records:
            _fallback(dec, r, b, errors)
    elif dec.format == "json":
        _read_plain(dec, records, b, errors, _json_reader(dec))
    elif not _csv_block(dec, records, b):
        _read_plain(dec, records, b, errors, _csv_reader(dec))
    if not star:
        _check_matrix(dec, b, records, errors)
    return b, errors


def _fallback(dec, r, b: Batch, errors: list) -> None:
    """One record through the per-record decode, appended to the batch (or to `errors`)."""
    ev = dec.decode(r)
    if type(ev) is DecodeError:
        errors.append((r, ev.reason))
        return
    b.records.append(r)
    b.rows.append(ev.x if b.names is None else [ev.x.get(k) for k in b.names])
    b.ys.append(ev.y)
    if b.ids is not None:
        b.ids.append(ev.event_id)
    if b.keys is not None:
        b.keys.append(ev.key)
    if b.timestamps is not None:
        b.timestamps.append(ev.timestamp)


def _json_reader(dec):
    """record value -> the JSON object, or None (then the per-record decode decides)."""
    maxb, maxd, scan = min(dec.max_bytes, MAX_TEXT), dec.max_depth, SCAN   # longer: a field may be too long

    def read(v):
        if (type(v) is bytes and 0 < len(v) <= maxb and v[0] == 123   # "{"
                and v.count(b"[") + v.count(b"{") <= maxd):
            try:
                text = v.decode()
                obj, end = scan(text, 0)
                if end == len(text):
                    return obj
            except (ValueError, StopIteration, RecursionError):
                pass
        return None

    return read


def _csv_reader(dec):
    """record value -> {field: cell} of the fields the schema reads (cells as `_cell` makes
    them), or None for anything but a plain row (quotes, a wrong cell count, ...)."""
    cols, maxb = dec.columns, min(dec.max_bytes, MAX_TEXT)
    wanted = set(dec.features if dec.features != "*" else ()) | set(dec.targets or [dec.target]) | \
        {dec.event_id, dec.key, dec.timestamp} | set(dec.required)
    pick = [(c, i) for i, c in enumerate(cols) if c in wanted]
    ncols = len(cols)

    def read(v):
        if type(v) is not bytes or not 0 < len(v) <= maxb or 34 in v or v.isspace():   # 34: '"'
            return None
        try:
            cells = v.decode().split(",")
        except UnicodeDecodeError:
            return None
        if len(cells) != ncols:
            return None
        return {c: _cell(cells[i]) for c, i in pick}

    return read


# characters that can appear in a text `float()` takes (ASCII): a cell with any other ASCII
# character is a string without trying (an exception costs ~1 us, a timestamp cell on every row)
_FLOAT_CHARS = frozenset("0123456789+-._eE" "infatyINFATY" " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f")


def _cell(v: str):
    """A CSV cell -> None (empty), a float, or the string itself."""
    if not v:
        return None
    try:
        return float(v)
    except ValueError:
        return v


def _cells(cells: list) -> list:
    """`_cell` of each cell (a column at once; string cells told by their characters)."""
    try:
        return list(map(float, cells))
    except ValueError:
        pass
    plain = _FLOAT_CHARS.issuperset
    return [x if x and x.isascii() and not plain(x) else _cell(x) for x in cells]


def _csv_block(dec, records: list, b: Batch) -> bool:
    """A batch of plain CSV rows, read column by column: every record a row of numbers (and, in
    key or timestamp columns, any cell) that `_read_plain` would take as it is. Fills `b` and
    returns True; or returns False with `b` untouched, and the row path decides, record by record."""
    cols, n = dec.columns, len(records)
    if n < 4 or len(cols) < 2 or dec.event_id or dec._required:
        return False
    vals = [r.value for r in records]
    if set(map(type, vals)) != {bytes} or min(map(len, vals)) == 0 or max(map(len, vals)) > min(dec.max_bytes, MAX_TEXT):
        return False
    joined = b"\n".join(vals)
    if 34 in joined or joined.count(b"\n") != n - 1:   # a quote, or a newline inside a record
        return False
    try:
        rows = [line.split(",") for line in joined.decode().split("\n")]
    except UnicodeDecodeError:
        return False
    if set(map(len, rows)) != {len(cols)}:
        return False
    at = {c: i for i, c in enumerate(cols)}

    def column(name):   # a column's cells as `_cell` makes them; all None when not in the file
        i = at.get(name)
        return [None] * n if i is None else _cells([row[i] for row in rows])

    feats = [column(f) for f in b.names]
    for col in feats:
        if set(map(type, col)) - {float, type(None)}:
            return False
    ys = _block_targets(dec, column, n)
    if ys is None:
        return False
    b.records.extend(records)
    b.rows.extend(map(list, zip(*feats)) if feats else ([] for _ in range(n)))
    b.ys.extend(ys)
    if dec.key:
        b.keys.extend(column(dec.key))
    if dec.timestamp:
        b.timestamps.extend(column(dec.timestamp))
    return True


def _block_targets(dec, column, n: int):
    """The targets of a CSV block as `_read_plain` takes them, or None where a row needs the row path."""
    hi, no_target = dec.max_abs, NO_TARGET
    if dec.targets is not None:
        if dec.target_kind == "flag":   # labels of a multi-label learner: the row path reads them
            return None
        tcols = [column(t) for t in dec.targets]
        ys = []
        for vals in zip(*tcols):
            if vals.count(None) == len(vals):
                ys.append(no_target)
            elif not all(type(v) is float and -hi <= v <= hi for v in vals):
                return None
            else:
                ys.append(dict(zip(dec.targets, vals)))
        return ys
    if not dec.target or dec.target not in dec.columns:
        return [no_target] * n
    ys = column(dec.target)
    if dec.target_kind == "label":
        if None in ys or not all(type(y) is str or math.isfinite(y) for y in ys):
            return None
        return [int(y) if type(y) is float and y.is_integer() else y for y in ys]
    if set(map(type, ys)) != {float} or not all(-hi <= y <= hi for y in ys):
        return None
    return ys


def _read_plain(dec, records: list, b: Batch, errors: list, read) -> None:
    feats, label, flags = list(b.names), dec.target_kind == "label", dec.target_kind == "flag"
    target, targets = (None, dec.targets) if dec.targets is not None else (dec.target, None)
    eid_f, key_f, ts_f, required = dec.event_id, dec.key, dec.timestamp, dec._required
    hi = dec.max_abs
    lo = -hi
    recs, rows, ys, ids, keys, tss = b.records, b.rows, b.ys, b.ids, b.keys, b.timestamps
    plain_types, isfinite, no_target = _PLAIN.issuperset, math.isfinite, NO_TARGET
    for r in records:
        obj = read(r.value)
        if type(obj) is dict:
            get = obj.get
            row = list(map(get, feats)) if feats else []
            if targets is None:
                y = get(target, no_target) if target else no_target
                ty = type(y)
                ok = (y is no_target or (label and (ty is str or ty is bool or ty is int
                                                    or (ty is float and isfinite(y))))
                      or (not label and (ty is float or ty is int) and lo <= y <= hi))
                if ok and label and ty is float and y.is_integer():
                    y = int(y)
            else:
                y = _plain_flags(obj, targets) if flags else _plain_targets(obj, targets, lo, hi)
                ok = y is not None
            if (ok and (not feats or plain_types(map(type, row)))
                    and (not required or None not in list(map(get, required)))
                    and (not eid_f or type(get(eid_f)) in (str, int))):
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
        _fallback(dec, r, b, errors)   # anything unusual: the reference path decides


def _plain_targets(obj: dict, targets: list, lo: float, hi: float):
    """Several numeric targets: all absent -> NO_TARGET, all plain numbers in range -> their
    dict, anything else -> None (the per-record decode decides)."""
    ys = {t: obj.get(t) for t in targets}
    if all(v is None for v in ys.values()):
        return NO_TARGET
    for v in ys.values():
        tv = type(v)
        if not ((tv is float or tv is int) and lo <= v <= hi):
            return None
    return ys


def _plain_flags(obj: dict, targets: list):
    """Several labels of a multi-label learner: all absent -> NO_TARGET, all JSON booleans -> their
    dict, anything else -> None (the per-record decode decides, 1 / 0 included)."""
    ys = {t: obj.get(t) for t in targets}
    vals = list(ys.values())
    if vals.count(None) == len(vals):
        return NO_TARGET
    return ys if all(v is True or v is False for v in vals) else None


def _check_matrix(dec, b: Batch, records: list, errors: list) -> None:
    """Build `b.X` (n, F) and apply the range rule to it: rows with a value beyond `max_abs`
    (or an integer too large for a float) leave the batch for the dead letters."""
    n, F, hi = len(b.rows), len(b.names), dec.max_abs
    if not F:
        b.X = np.empty((n, 0))
        return
    try:
        X = np.array(b.rows, dtype=np.float64).reshape(n, F)
        A = np.abs(X)
        if not (A > hi).any():   # NaN compares False: missing values pass
            b.X = X
            return
        bad = (A > hi).any(axis=1)
    except OverflowError:   # an integer too large for a float: find its rows one by one
        X = None
        bad = np.array([any(_beyond(v, hi) for v in row) for row in b.rows], dtype=bool)
    for i in bad.nonzero()[0].tolist():
        row = b.rows[i]
        j = next(j for j, v in enumerate(row) if _beyond(v, hi))
        errors.append((b.records[i], dec._range_reason("feature", b.names[j], row[j])))
    order = {id(r): i for i, r in enumerate(records)}
    errors.sort(key=lambda e: order[id(e[0])])
    keep = (~bad).nonzero()[0].tolist()
    b.X = X if X is not None else np.empty((n, F))
    kept = b.take(keep)
    if X is None:
        kept.X = np.array(kept.rows, dtype=np.float64).reshape(len(keep), F)
    for name in ("records", "rows", "ys", "ids", "keys", "timestamps", "X"):
        setattr(b, name, getattr(kept, name))


def _beyond(v, hi: float) -> bool:
    """Whether a plain feature value breaks the range rule (None, NaN and booleans never do)."""
    return v is not None and v == v and not -hi <= v <= hi

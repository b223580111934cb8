"""Property-based fuzzing of the consumer with hostile records (issue 12).

Each example is a batch of clean records around hostile ones (numbers at the float limits, inf
and NaN, huge integers, deep nesting, wrong types, unicode keys and values, missing and extra
fields, non-object JSON, bad UTF-8, oversized and truncated records), fed to a live `Runner`
(with and without delayed labels, listed features and "*", a key, a timestamp and lag features)
and both learner kinds. After every batch:
the loop survived, every record was output or dead-lettered (or, for a label-only record, matched
to its waiting event), nothing non-finite is in the weights, the optimizer state or the scalers,
and clean records still predict finite values. The learner carries its state from example to
example, so damage would accumulate. A checkpoint of the final state must be accepted.

CI runs a bounded number of examples; ``STREAMNN_FUZZ_EXAMPLES=100000`` runs a long campaign.
"""

import json
import math
import os
import tempfile

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamnn
from streamnn.runtime.loop import Runner
from streamnn.runtime.records import Record
from streamnn.runtime.schema import Decoder
from streamnn.runtime.sinks import MemoryDeadLetterSink, MemorySink
from streamnn.runtime.sources import Source
from streamnn.runtime.state import CheckpointStore

torch.set_num_threads(1)

EXAMPLES = int(os.environ.get("STREAMNN_FUZZ_EXAMPLES", "30"))   # per case: 150 in all
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    derandomize="STREAMNN_FUZZ_EXAMPLES" not in os.environ,
                    suppress_health_check=list(HealthCheck))
FIELDS = ["a", "b", "noise"]
MAX_BYTES = 4096

# -- hostile values and records ----------------------------------------------------------------

LIMITS = [1e308, -1e308, 1.7976931348623157e308, -1.7976931348623157e308, 5e-324, -0.0, 1e30,
          -1e30, 1e31, 1e200, -1e200, math.nan, math.inf, -math.inf, 2**53 + 1, 2**63, -(2**64),
          10**20, 10**400, -(10**400)]
numbers = st.one_of(st.floats(), st.sampled_from(LIMITS), st.integers(-(10**600), 10**600),
                    st.integers(-1000, 1000))
scalars = st.one_of(numbers, st.booleans(), st.none(), st.text(max_size=12))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                      max_leaves=8)
keys = st.one_of(st.sampled_from(FIELDS + ["y", "id", "k", "ts", "é中🙂", "\x00", ""]), st.text(max_size=8))


@st.composite
def plausible(draw):
    """A record that looks right, with some fields hostile, missing or extra."""
    obj = {"id": draw(st.one_of(st.text(max_size=6), st.integers(-(10**30), 10**30), values)),
           "a": 0.5, "b": -0.25, "noise": 0.1, "y": draw(st.sampled_from([1.0, 0, True, "x", 2]))}
    for k in FIELDS + ["y"]:   # the schema's own fields take hostile values often
        if draw(st.integers(0, 3)) == 0:
            obj[k] = draw(values)
    for k in draw(st.lists(keys, max_size=4)):
        obj[k] = draw(values)
    for k in draw(st.lists(st.sampled_from(list(obj)), max_size=2)):
        obj.pop(k, None)
    text = json.dumps(obj, allow_nan=True, ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")   # lone surrogates: not valid UTF-8


@st.composite
def raw(draw):
    """Bytes that are not a plausible record at all."""
    kind = draw(st.sampled_from(["binary", "deep", "array", "scalar", "truncated", "oversized",
                                 "bigint", "bom", "space"]))
    if kind == "binary":
        return draw(st.binary(max_size=40))
    if kind == "deep":
        d = draw(st.one_of(st.sampled_from([63, 64, 65, 1000, 5000, 60_000]), st.integers(30, 60_000)))
        return b'{"a": 1, "y": 1, "z": ' + b"[" * d + b"]" * d + b"}"
    if kind == "array":
        return json.dumps(draw(st.lists(values, max_size=4)), allow_nan=True).encode("utf-8", "surrogatepass")
    if kind == "scalar":
        return json.dumps(draw(scalars), allow_nan=True).encode("utf-8", "surrogatepass")
    if kind == "truncated":
        full = draw(plausible())
        return full[: draw(st.integers(0, max(0, len(full) - 1)))]
    if kind == "oversized":
        return b'{"a": 1, "pad": "' + b"x" * MAX_BYTES + b'"}'
    if kind == "bigint":
        digits = b"9" * draw(st.sampled_from([309, 400, 4301, 6000]))
        return b'{"id": "q", "a": ' + digits + b', "y": ' + digits + b"}"
    if kind == "bom":
        return b"\xef\xbb\xbf" + draw(plausible())
    return b" \t\r " if draw(st.booleans()) else b""


hostile = st.lists(st.one_of(plausible(), raw()), min_size=1, max_size=8)

# -- the consumer under test -------------------------------------------------------------------


class _Nowhere(Source):
    """No streams: the harness hands batches to `Runner.process` itself."""

    def assigned(self):
        return set()

    def seek(self, stream, next_offset):
        pass

    def poll(self, max_records, timeout_s=0.0):
        return []


def _clean(rng, i, label: bool) -> bytes:
    a, b = rng.uniform(-1, 1, size=2)
    y = bool(a > b) if label else float(2 * a - b)
    return json.dumps({"id": f"c{i}", "a": a, "b": b, "noise": float(rng.normal()), "y": y}).encode()


class Harness:
    """A Runner fed batch by batch; `feed` checks the invariants after each batch."""

    def __init__(self, kind: str, path: str):
        label = kind == "classification"
        features = "*" if path == "star" else FIELDS
        dec = Decoder(features=features, target="y", event_id="id", key="k", timestamp="ts",
                      max_bytes=MAX_BYTES, target_kind="label" if label else "number", max_features=32)
        params = dict(hidden=(8,), seed=0, batch_size=16, update_every=4, warmup=0)
        make = (lambda: streamnn.MLPClassifier(**params)) if label else (lambda: streamnn.MLPRegressor(**params))
        self.dead, self.out = MemoryDeadLetterSink(), MemorySink()
        self.folder = tempfile.mkdtemp(prefix="streamnn-fuzz-")
        self.runner = Runner(_Nowhere(), dec, make, [self.out], self.dead, CheckpointStore(self.folder),
                             delayed_labels=0 if path == "plain" else 100,
                             lags=(["a", "y"], 2) if kind == "regression" and path != "star" else None)
        self.label, self.path, self.offset = label, path, 0
        self.rng = np.random.default_rng(0)
        self.feed([])   # a clean start: the learner is built

    def records(self, payloads):
        out = []
        for p in payloads:
            self.offset += 1
            out.append(Record(p, {"topic": "fuzz", "partition": 0, "offset": self.offset}, "fuzz:0", self.offset))
        return out

    def feed(self, payloads):
        clean = [_clean(self.rng, self.offset + i, self.label) for i in range(6)]
        recs = self.records(clean[:3] + list(payloads) + clean[3:])
        unit = self.runner.units.get("fuzz:0")
        before = dict(unit.counters) if unit else {}
        n_out, n_dead = len(self.out.outputs), len(self.dead.letters)
        self.runner.process(recs)                                   # 1. the loop survives
        unit = self.runner.units["fuzz:0"]
        c = unit.counters
        emitted, dead = len(self.out.outputs) - n_out, len(self.dead.letters) - n_dead
        matched = c["delayed_matched"] - before.get("delayed_matched", 0)
        assert c["events_out"] - before.get("events_out", 0) == emitted
        assert c["dead_letters"] - before.get("dead_letters", 0) == dead
        assert emitted + dead + matched == len(recs), (emitted, dead, matched, len(recs))   # 2.
        for letter in self.dead.letters[n_dead:]:
            assert letter["reason"] and letter["class"]
        self.check_state(unit.learner)                              # 3.
        probe = pd.DataFrame({"a": [0.3, -0.7], "b": [0.1, 0.9], "noise": [0.0, 1.0]})
        if self.runner.lags is not None:
            probe = pd.concat([probe, pd.DataFrame(0.0, index=probe.index, columns=unit.lags.names)], axis=1)
        if self.label:                                              # 4.
            P = unit.learner.predict_proba_many(probe)
            assert np.isfinite(P.to_numpy(dtype=float)).all()
        else:
            assert np.isfinite(unit.learner.predict_many(probe).to_numpy()).all()
        return unit

    @staticmethod
    def check_state(learner):
        scalers = [learner.scaler_] + ([learner.target_scaler_] if hasattr(learner, "target_scaler_") else [])
        for s in scalers:
            for a in (s.n, s.mean, s.var, s.std, s.inv_std, s.buf):
                assert np.isfinite(a).all()
        if learner.module_ is None:
            return
        for name, t in learner.module_.state_dict().items():
            assert torch.isfinite(t).all(), name
        for st_ in learner.optimizer_.state_dict()["state"].values():
            for v in st_.values():
                if isinstance(v, torch.Tensor):
                    assert torch.isfinite(v).all()


CASES = [("regression", "delayed"), ("regression", "plain"), ("regression", "star"),
         ("classification", "delayed"), ("classification", "plain")]


@pytest.mark.parametrize("kind,path", CASES)
def test_hostile_records_never_stop_or_damage_the_consumer(kind, path):
    h = Harness(kind, path)

    @SETTINGS
    @given(hostile)
    def batch(payloads):
        h.feed(payloads)

    batch()
    unit = h.feed([])
    assert unit.learner.n_seen_ > 0
    h.runner.checkpoint(force=True)   # the state after all that is accepted as a checkpoint
    assert CheckpointStore(h.folder).load("fuzz:0")["offsets"] == {"fuzz:0": h.offset + 1}


# -- decode_batch equals a loop of the per-record decode ------------------------------------------

ODD = [  # plain-looking records that the per-record decode converts or refuses
    b'{"a": true, "b": false, "noise": null, "y": 1, "id": 3, "k": "x", "ts": 1}',
    b'{"a": 1, "b": 2, "noise": 3, "y": true, "id": "e", "k": null}',
    b'{"a": 1, "b": 2, "noise": NaN, "y": 2.0, "id": 2.0}',
    b'{"a": 1, "b": 2, "noise": 3, "y": 1e31, "id": "big"}',
    b'{"a": 1e31, "b": 2, "y": 1}',
    b'{"y": 4, "id": "label-only"}',
    b'{"b": 1, "y": [1], "id": "x"}',
    b' {"a": 1, "b": 2, "y": 3} ',
    b'{"a": 1, "b": 2, "y": "3", "id": "s"}',
    b'{"a": 1, "b": 2, "y": 3.5, "id": false}',
]
DECODERS = {
    "listed": dict(features=FIELDS, target="y", key="k", timestamp="ts"),
    "ids": dict(features=FIELDS, target="y", event_id="id", required=["b"]),
    "label": dict(features=FIELDS, target="y", target_kind="label", event_id="id"),
    "targets": dict(features=["a"], target=["y", "b"], timestamp="ts"),
    "star": dict(features="*", target="y", key="k", max_features=4),
    "none": dict(features=[], target=None, max_depth=3),
}


CSV_COLUMNS = ["ts", "k", "a", "b", "noise", "y"]
cells = st.one_of(st.sampled_from(["", " ", "1", "-2.5", "1e31", "nan", "inf", "1_0", "x", "true", '"3"',
                                   "2024-01-01 00:00", "\u00e9", "0x1"]),
                  st.floats().map(repr), st.integers(-(10**40), 10**40).map(str))
csv_rows = st.one_of(st.lists(cells, min_size=6, max_size=6).map(lambda c: ",".join(c).encode()),
                     st.lists(cells, min_size=0, max_size=8).map(lambda c: ",".join(c).encode()),
                     st.sampled_from([b"", b"  ", b"\xff,1,2,3,4,5", b'"a,b",1,2,3,4,5', b"1,2,3,4,5,6"]))
CSV_DECODERS = {
    "csv": dict(features=FIELDS, target="y", key="k", timestamp="ts"),
    "csv_targets": dict(features=["a"], target=["y", "b"], required=["noise"]),
    "csv_label": dict(features=["a", "b"], target="y", target_kind="label", event_id="ts"),
}


@pytest.mark.parametrize("name", sorted(CSV_DECODERS))
def test_decode_batch_equals_a_loop_of_decode_on_csv(name):
    dec = Decoder(max_bytes=64, format="csv", columns=CSV_COLUMNS, **CSV_DECODERS[name])

    @SETTINGS
    @given(st.lists(csv_rows, min_size=0, max_size=12))
    def check(payloads):
        _compare(dec, [Record(p, {"file": "f", "line": i}, "f", i) for i, p in enumerate(payloads)])

    check()


clean_cells = st.one_of(st.sampled_from(["1", "-2.5", "0", "1e3", "7", "0.0", "-0.0", "1e308"]),
                        st.floats(allow_nan=False, allow_infinity=False).map(repr))
text_cells = st.sampled_from(["2013-12-02 21:15:00", "m1", "5", "", "2.5", "\u00e9t\u00e9", "x:y"])
odd_cells = st.sampled_from(["", "nan", "inf", "-Infinity", "x", "1e400", "1e31", "1_0", " 3 ", "\x1c5", "\u0663",
                             "2024-01-01 00:00", "\u00e9", "true", "0x1", "+nan"])
clean_row = st.tuples(text_cells, text_cells, clean_cells, clean_cells, clean_cells, clean_cells)
CSV_BLOCK_DECODERS = {
    **CSV_DECODERS,
    "block_label": dict(features=["a", "b"], target="y", target_kind="label", key="k", timestamp="ts"),
    "block_regression": dict(features=FIELDS, target="y", timestamp="ts", max_abs=1e30),
    "block_targets": dict(features=["a"], target=["y", "b"], key="k"),
    "block_no_target": dict(features=["a", "noise"], target=None, timestamp="ts"),
    "block_absent_target": dict(features=[], target="zz", key="k"),
}


@pytest.mark.parametrize("name", sorted(CSV_BLOCK_DECODERS))
def test_csv_blocks_equal_a_loop_of_decode(name, monkeypatch):
    """Batches of plain CSV rows are read column by column (`_csv_block`); with or without one odd
    cell they give exactly what `decode` gives record by record, and a clean batch takes the block."""
    from streamnn.runtime import decoding

    dec = Decoder(max_bytes=200, format="csv", columns=CSV_COLUMNS, **CSV_BLOCK_DECODERS[name])
    row_path = []
    real = decoding._read_plain
    monkeypatch.setattr(decoding, "_read_plain", lambda *a: row_path.append(1) or real(*a))

    @SETTINGS
    @given(st.lists(clean_row, min_size=4, max_size=24), st.none() | st.tuples(st.integers(0, 23), st.integers(0, 5), odd_cells))
    def check(rows, odd):
        rows = [list(r) for r in rows]
        if odd is not None:
            i, j, cell = odd
            rows[i % len(rows)][j] = cell
        recs = [Record(",".join(r).encode(), {"file": "f", "line": i}, "f", i) for i, r in enumerate(rows)]
        row_path.clear()
        _compare(dec, recs)
        targets = [CSV_COLUMNS.index(t) for t in (dec.targets or [dec.target]) if t in CSV_COLUMNS]
        fits = (lambda: dec.target_kind == "label" or all(abs(float(r[j])) <= dec.max_abs for r in rows for j in targets))
        if odd is None and not dec.event_id and not dec.required and fits():
            assert not row_path   # the block took it

    check()


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_decode_batch_equals_a_loop_of_decode(name):
    """`decode_batch` on generated batches (hostile and clean records mixed) gives exactly the
    events and dead letters of `decode` called on each record."""
    dec = Decoder(max_bytes=MAX_BYTES, **DECODERS[name])
    rng = np.random.default_rng(1)

    @SETTINGS
    @given(st.lists(st.one_of(plausible(), raw(), st.just(None), st.sampled_from(ODD)), min_size=0, max_size=12))
    def check(payloads):
        recs = []
        for i, p in enumerate(payloads):
            p = _clean(rng, i, name == "label") if p is None else p
            recs.append(Record(p, {"topic": "t", "partition": 0, "offset": i}, "t:0", i, b"mk"))
        _compare(dec, recs)

    check()


def _compare(dec, recs):
    """`decode_batch` gives exactly the events and dead letters of `decode` on each record."""
    batch, errors = dec.decode_batch(recs)
    want_events, want_errors = [], []
    for r in recs:
        ev = dec.decode(r)
        (want_errors.append((r.offset, ev.reason)) if hasattr(ev, "reason") else want_events.append(ev))
    assert [(r.offset, why) for r, why in errors] == want_errors
    assert [r.offset for r in batch.records] == [e.record.offset for e in want_events]
    for i, ev in enumerate(want_events):
        if batch.names is None:
            assert _same(batch.rows[i], ev.x)
        else:
            assert [k for k, v in zip(batch.names, batch.rows[i]) if v is not None] == list(ev.x)
            assert _same(batch.X[i].tolist(), [float(ev.x.get(k, math.nan)) for k in batch.names])
        assert _same(batch.ys[i], ev.y) and type(batch.ys[i]) is type(ev.y)
        assert batch.event_id(i) == ev.event_id
        assert batch.keys is None or _same(batch.keys[i], ev.key)
        assert batch.timestamps is None or _same(batch.timestamps[i], ev.timestamp)


def _same(a, b) -> bool:
    """Equal, NaN equal to NaN, and bools told from numbers."""
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return type(a) is type(b) and a == b

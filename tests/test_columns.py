"""The runtime's one batch path against a plain per-event oracle (tests/reference_runtime.py):
same outputs, dead letters, counters, checkpointed state and learner, on streams with every kind
of odd record, for listed features and "*", one target or several, with and without delayed labels."""

import json
import math
import random

import numpy as np
import pytest
import torch

import streamnn
from reference_runtime import ReferenceRunner, lag_loop
from streamnn.runtime.loop import Runner
from streamnn.runtime.outputs import SKIP, OutputBatch, encode, encode_floats
from streamnn.runtime.records import Record
from streamnn.runtime.schema import Decoder
from streamnn.runtime.sinks import JsonlSink, MemoryDeadLetterSink, MemorySink, dumps
from streamnn.runtime.sources import Source
from streamnn.runtime.state import CheckpointStore, Lags


class Listed(Source):
    """Records of one or two streams, `batch` at a time, Kafka-like positions and keys."""

    def __init__(self, values, streams=("t:0",), keys=None):
        super().__init__()
        self.records = []
        for i, v in enumerate(values):
            s = streams[i % len(streams)]
            off = i // len(streams)
            key = None if keys is None else keys[i % len(keys)]
            self.records.append(Record(v, {"topic": s[0], "partition": int(s[-1]), "offset": off}, s, off, key))
        self.i = 0

    def assigned(self):
        return {r.stream for r in self.records}

    def seek(self, stream, next_offset):
        pass

    def poll(self, max_records, timeout_s=0.0):
        out = self.records[self.i: self.i + max_records]
        self.i += len(out)
        return out

    @property
    def exhausted(self):
        return self.i >= len(self.records)


def _values(n, seed, label=False, odd=True):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.gauss(0, 1), rng.gauss(0, 1)
        y = (("yes" if a + b > 0 else "no") if label else 2 * a - b + rng.gauss(0, 0.1))
        ev = {"a": a, "b": b, "y": y, "m": f"m{i % 3}", "ts": f"2024-01-01T00:{i % 60:02d}"}
        r = rng.random() if odd else 1.0
        if r < 0.05:
            ev.pop("y")                      # predicted, not learned
        elif r < 0.08:
            ev["a"] = None                   # missing feature
        elif r < 0.10:
            ev["b"] = True                   # a boolean feature: converted by the reference path
        elif r < 0.12:
            ev["a"] = "high"                 # wrong type: dead letter
        elif r < 0.13:
            out.append(b"{not json")
            continue
        elif r < 0.14:
            out.append(b"")
            continue
        elif r < 0.15:
            ev["y"] = 3 if not label else 1.0   # an int target / a float label
        elif r < 0.16:
            out.append(b'  {"a": 1.0, "b": 2.0}  ')   # spaces around: the slow parser
            continue
        elif r < 0.17:
            ev["a"] = float("nan")
        out.append(json.dumps(ev).encode())
    return out


def _run(learner, values, columnar, tmp_path, *, keys=None, streams=("t:0",), lags=None, key="m",
         threshold=None, batch_size=37, features=("a", "b"), target="y", target_kind="number",
         event_id=None, delayed_labels=0):
    features = features if features == "*" else list(features)
    dec = Decoder(features=features, target=target, key=key, timestamp="ts", target_kind=target_kind,
                  event_id=event_id)
    sink, dead = MemorySink(), MemoryDeadLetterSink()
    jsonl = JsonlSink(tmp_path / f"out-{columnar}.jsonl")
    cls = Runner if columnar else ReferenceRunner
    r = cls(Listed(values, streams, keys), dec, learner, [sink, jsonl], dead,
            CheckpointStore(tmp_path / f"ck-{columnar}"), batch_size=batch_size, checkpoint_every=100,
            lags=lags, threshold=threshold, post_update_every=3, delayed_labels=delayed_labels)
    r.run()
    jsonl.close()
    lines = (tmp_path / f"out-{columnar}.jsonl").read_text().splitlines()
    return r, sink.outputs, dead.letters, lines


def _same(a, b):
    ra, oa, da, la = a
    rb, ob, db, lb = b
    assert len(oa) == len(ob) > 0
    assert json.dumps(oa, sort_keys=False) == json.dumps(ob, sort_keys=False)
    assert la == lb
    assert da == db
    ta, tb = ra.totals(), rb.totals()
    for k in ta:
        assert ta[k] == pytest.approx(tb[k], rel=1e-12, nan_ok=True), k
    for name, ua in ra.units.items():
        sa, sb = ua.learner.state_dict(), rb.units[name].learner.state_dict()
        _equal(sa, sb)
        if ua.lags is not None:
            assert str(ua.lags.state_dict()) == str(rb.units[name].lags.state_dict())


def _equal(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _equal(x, y)
    elif torch.is_tensor(a):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


def _both(tmp_path, make, values, **kw):
    fast = _run(make, values, True, tmp_path, **kw)
    slow = _run(make, values, False, tmp_path, **kw)
    _same(fast, slow)
    return fast


def test_regression_with_odd_records_lags_and_keys(tmp_path):
    values = _values(700, 0)
    make = lambda: streamnn.MLPRegressor(hidden=[8], seed=1, warmup=50)  # noqa: E731
    r, outs, dead, _ = _both(tmp_path, make, values, lags=(["y", "a"], 3))
    assert {d["class"] for d in dead} >= {"wrong type", "not JSON", "empty"}
    assert any("y" not in o for o in outs) and all("key" in o and "timestamp" in o for o in outs)


def test_two_streams_message_keys_and_no_key_field(tmp_path):
    values = _values(400, 1)
    make = lambda: streamnn.MLPRegressor(hidden=[8], seed=2)  # noqa: E731
    _, outs, _, _ = _both(tmp_path, make, values, streams=("t:0", "t:1"), keys=[b"k1", None, "k\u00e9"],
                          key=None, batch_size=50)
    assert {o.get("key") for o in outs} == {"k1", None, "k\u00e9"}


def test_classification_including_the_untrained_model(tmp_path):
    values = _values(500, 2, label=True)
    make = lambda: streamnn.MLPClassifier(hidden=[8], seed=3, warmup=20)  # noqa: E731
    _, outs, _, _ = _both(tmp_path, make, values, target_kind="label")
    assert outs[0]["prediction"] is None and "id" in outs[0]
    assert {o["prediction"] for o in outs[100:]} <= {"yes", "no"}


def test_anomaly_scores_and_flags(tmp_path):
    values = _values(600, 3, odd=False)
    make = lambda: streamnn.AutoencoderDetector(seed=4)  # noqa: E731
    _, outs, _, _ = _both(tmp_path, make, values, target="y", threshold={"warmup": 50, "sigma": 2.0},
                          lags=(["a"], 2))
    assert all("score" in o and "anomaly" in o for o in outs)


def test_lines_are_dumps_of_the_dicts():
    recs = [Record(b"{}", {"file": "s.jsonl", "line": i}, "s.jsonl", i, k)
            for i, k in enumerate([b"a", None, "\u00fc", 3])]
    vals = [1.5, float("nan"), float("inf"), -0.0]
    out = OutputBatch(recs, {"prediction": vals, "label": ["x", 1, True, None]}, timestamps=[1, "t", None, 2.5])
    assert out.lines() == [dumps(o) for o in out]
    assert encode_floats(vals) == [encode(v) for v in vals] == ["1.5", "NaN", "Infinity", "-0.0"]
    ids = OutputBatch(recs, {"p": [1, 2, 3, 4]}, ids=["e1", 2, None, "\u00e9"], keys=[[1], {"a": 1}, None, "k"],
                      key_field=True)
    assert ids.lines() == [dumps(o) for o in ids]
    dicts = [{"t": 1.5, "u%": -2}, {"t": 0.25, "u%": 3}, {"t": float("nan"), "u%": 1}, {"u%": 1, "t": 2.0}]
    for col in (dicts, dicts[:2] + [{"t": True, "u%": 1}], [{"t": 1.0, "u%": 2.0}] * 4):
        out = OutputBatch(recs, {"prediction": col, "y": [col[0], SKIP, col[1], col[0]]})
        assert out.lines() == [dumps(o) for o in out]
    odd = [Record(b"{}", {"x": 1}, "s", 0), Record(b"{}", {"topic": "t", "offset": 5}, "s", 6)]
    out = OutputBatch(odd, {"p": [1.0, 2.0]})
    assert out.lines() == [dumps(o) for o in out]


@pytest.mark.parametrize("col", [
    [0.5] * 4, [0.0, -0.0, 0.0, 0.0], [-0.0] * 4, [float("nan")] * 4, [float("inf")] * 4, [False] * 4,
    [True, False, False, True], [0, 0, 0, 0], [0, 1, 0, 7], [0, False, 0, 0], [1, 1.0, True, 1],
    ["a", "a", "a", "a"], ["a", "b%s", "a", "c"], [None] * 4, [SKIP] * 4, [0.5, SKIP, 0.5, 0.5],
    [1, 2, 3, float("nan")], [2 ** 70] * 4, [{"t": 1.0}] * 4, ["%d %%"] * 4,
    [{"t": 1.5, "u%\"\u00e9": -2.0}, {"t": 0.25, "u%\"\u00e9": 3.0}, {"t": -0.0, "u%\"\u00e9": 1e300}, {"t": 2.0, "u%\"\u00e9": 5e-324}],
    [{"a": 1.0}, {"a": 2.0}, {"a": 3.0}, {"b": 4.0}], [{}, {}, {}, {}], [{1: 1.0}, {1: 2.0}, {1: 3.0}, {1: 4.0}],
    [{"a": 1.0, "b": 2.0}, {"b": 2.0, "a": 1.0}, {"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0}]])
def test_lines_of_shared_and_typed_columns_are_dumps_of_the_dicts(col):
    """A column every row shares (written once into the format), ints, booleans and texts: the
    lines are still exactly `dumps` of each output (signed zeros, NaN, 0 vs False, 1 vs 1.0)."""
    recs = [Record(b"{}", {"file": "s.csv", "line": i}, "s.csv", i) for i in range(4)]
    for ts in (None, ["t"] * 4, [1.5, 2.5, 3.5, 4.5]):
        out = OutputBatch(recs, {"score": [0.1, 0.2, 0.3, 0.4], "c": col, "d": list(reversed(col))}, timestamps=ts)
        assert out.lines() == [dumps(o) for o in out]


@pytest.mark.parametrize("keys", [None, ["a"] * 6, ["a", "b", None, "a", None, "b"], [1, 1.0, True, "1", 1, 2]])
def test_lag_block_equals_a_loop_over_events(keys):
    vals = [1.0, float("nan"), 3.0, 4.0, 5.0, 6.0]
    loop, block = Lags(["v"], 3), Lags(["v"], 3)
    for _ in range(2):   # the second batch starts from the windows the first one left
        rows = [lag_loop(loop, {}, {"v": v}, None if keys is None else k) for v, k in zip(vals, keys or vals)]
        got = block.apply_block(np.array(vals)[:, None], keys)
        want = [[r.get(n, math.nan) for n in block.names] for r in rows]
        assert np.array_equal(got, np.array(want), equal_nan=True)
        assert str(loop.state_dict()) == str(block.state_dict())


def _labelled_later(n, seed):
    """Events with ids; a third get their label in a later label-only record (some never, some
    for unknown ids), some carry it at once, some features are new names (for "*")."""
    rng = random.Random(seed)
    out, waiting = [], []
    for i in range(n):
        a, b = rng.gauss(0, 1), rng.gauss(0, 1)
        ev = {"id": f"e{i}", "a": a, "b": b, "m": f"m{i % 2}", "ts": i}
        if i % 50 == 7:
            ev[f"extra{i % 4}"] = 1.0
        y = 2 * a - b
        r = rng.random()
        if r < 0.35:
            waiting.append((ev["id"], y))
        else:
            ev["y"] = y
        out.append(json.dumps(ev).encode())
        if waiting and rng.random() < 0.3:
            eid, yv = waiting.pop(0)
            out.append(json.dumps({"id": eid, "y": yv}).encode())
        if rng.random() < 0.02:
            out.append(json.dumps({"id": "nobody", "y": 1.0}).encode())
    return out


@pytest.mark.parametrize("features", [("a", "b"), "*"])
def test_delayed_labels_and_star_features(tmp_path, features):
    values = _labelled_later(600, 5)
    make = lambda: streamnn.MLPRegressor(hidden=[8], seed=1, warmup=30)  # noqa: E731
    r, outs, dead, _ = _both(tmp_path, make, values, features=features, event_id="id", delayed_labels=50,
                             lags=(["a"], 2) if features != "*" else None)
    assert r.totals()["delayed_matched"] > 50
    assert {d["class"] for d in dead} == {"unmatched label"}


def test_several_targets_with_lags(tmp_path):
    rng = random.Random(6)
    values = []
    for i in range(500):
        a = rng.gauss(0, 1)
        ev = {"a": a, "m": "s", "ts": i, "t1": a * 2, "t2": -a}
        if i % 17 == 3:
            ev.pop("t2")            # one target of two: a dead letter
        elif i % 13 == 5:
            ev.pop("t1"), ev.pop("t2")   # no target: predicted only
        elif i % 19 == 2:
            ev["t1"] = True         # a boolean target: the per-record decode converts it
        values.append(json.dumps(ev).encode())
    make = lambda: streamnn.MultiTargetRegressor(hidden=[8], seed=2)  # noqa: E731
    r, outs, dead, _ = _both(tmp_path, make, values, target=["t1", "t2"], lags=(["t1", "a"], 2))
    assert {d["class"] for d in dead} == {"missing field"}
    assert any("y" not in o for o in outs)


@pytest.mark.parametrize("keys", [None, ["a", "b", None, "a", None, "b"]])
def test_a_list_of_lags_keeps_those_columns_of_the_full_window(keys):
    """`lags = [1, 3]` gives the columns lag1 and lag3 of `lags = 3`, with the same windows."""
    vals = np.array([1.0, float("nan"), 3.0, 4.0, 5.0, 6.0])[:, None]
    full, some = Lags(["v"], 3), Lags(["v"], [3, 1])
    assert some.names == ["v_lag1", "v_lag3"]
    for _ in range(2):
        want = full.apply_block(vals, keys)[:, [0, 2]]
        assert np.array_equal(some.apply_block(vals, keys), want, equal_nan=True)
        assert str(some.state_dict()) == str(full.state_dict())


@pytest.mark.parametrize("lags, needle", [([0, 2], "[schema] lags = [0, 2]: a list of lags holds how many values back"),
                                          ([1, True], "expected int or a list of whole numbers"), ([], "a list of lags"),
                                          (-1, "must be 0 (off)"), ([1, 2, 400], "make more columns than max_features"),
                                          (10**30, "1000000000000000000000000000000 lags of 1 field(s)")])
def test_bad_lags_name_the_fix(lags, needle):
    from streamnn.runtime.config import ConfigError, parse
    raw = {"name": "t", "source": {"type": "file", "path": "x.jsonl"}, "learner": {"class": "MLPRegressor"},
           "schema": {"features": ["a"], "target": "y", "lags": lags, "max_features": 2}}
    with pytest.raises(ConfigError) as e:
        parse(raw, learner=False)
    assert needle in str(e.value)

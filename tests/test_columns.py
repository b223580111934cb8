"""The loop's columnar path against its per-event path: same outputs, dead letters, counters,
checkpointed state and learner, on streams with every kind of odd record."""

import json
import math
import random

import numpy as np
import pytest
import torch

import streamnn
from streamnn.runtime.columns import OutputBatch, encode, encode_floats
from streamnn.runtime.loop import Runner
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
         threshold=None, batch_size=37, features=("a", "b"), target="y", target_kind="number"):
    dec = Decoder(features=list(features), target=target, key=key, timestamp="ts", target_kind=target_kind)
    sink, dead = MemorySink(), MemoryDeadLetterSink()
    jsonl = JsonlSink(tmp_path / f"out-{columnar}.jsonl")
    r = Runner(Listed(values, streams, keys), dec, learner, [sink, jsonl], dead,
               CheckpointStore(tmp_path / f"ck-{columnar}"), batch_size=batch_size, checkpoint_every=100,
               lags=lags, threshold=threshold, post_update_every=3,
               columns=list(features) + ([f"{f}_lag{i}" for i in range(1, lags[1] + 1) for f in lags[0]]
                                         if lags else []))
    if not columnar:
        r._columnar = lambda unit: False
    r.run()
    jsonl.close()
    took = {u.name: u.columnar for u in r.units.values()}
    assert all(v is (True if columnar else None) for v in took.values()), took
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
    odd = [Record(b"{}", {"x": 1}, "s", 0), Record(b"{}", {"topic": "t", "offset": 5}, "s", 6)]
    out = OutputBatch(odd, {"p": [1.0, 2.0]})
    assert out.lines() == [dumps(o) for o in out]


@pytest.mark.parametrize("keys", [None, ["a"] * 6, ["a", "b", None, "a", None, "b"], [1, 1.0, True, "1", 1, 2]])
def test_lag_block_equals_a_loop_of_apply(keys):
    vals = [1.0, float("nan"), 3.0, 4.0, 5.0, 6.0]
    loop, block = Lags(["v"], 3), Lags(["v"], 3)
    for _ in range(2):   # the second batch starts from the windows the first one left
        rows = [loop.apply({}, {"v": v}, None if keys is None else k) for v, k in zip(vals, keys or vals)]
        got = block.apply_block(np.array(vals)[:, None], keys)
        want = [[r.get(n, math.nan) for n in block.names] for r in rows]
        assert np.array_equal(got, np.array(want), equal_nan=True)
        assert str(loop.state_dict()) == str(block.state_dict())

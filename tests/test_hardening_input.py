"""Hostile input (issue 12): nothing a record contains stops the consumer or silently damages the
model. Every poison pill of the issue is replayed through `streamnn run`'s pipeline (with and
without delayed labels), and the scalers are checked against extreme values directly."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

import streamnn
from streamnn.normalization import RunningStats
from streamnn.runtime.records import DecodeError, Record
from streamnn.runtime.schema import Decoder, too_deep
from streamnn.runtime.tasks import MultiTargetTask, Predicted, RegressionTask
from test_runtime_helpers import config, lines, run, write_stream

torch.set_num_threads(1)

BIG_INT = b"9" * 400
DEEP = b"[" * 50_000 + b"]" * 50_000
POISON = [  # (line, reason class): each stopped `streamnn run` with a traceback before issue 12
    (b'{"id": "p1", "a": ' + BIG_INT + b', "b": 0.1, "noise": 0, "y": 1.0}', "out of range"),
    (b'{"id": "p2", "a": 0.1, "b": 0.1, "noise": 0, "y": ' + BIG_INT + b"}", "out of range"),
    (b'{"id": "p3", "a": 0.1, "b": 0.1, "noise": 0, "y": 1.0, "z": ' + DEEP + b"}", "too deep"),
    (b'{"id": "p4", "a": 0.1, "b": 0.1, "noise": 0, "y": 1e200}', "out of range"),
    (b'{"id": "p5", "a": 0.1, "b": 0.1, "noise": 0, "y": 1e308}', "out of range"),
    (b'{"id": "p6", "a": 0.1, "b": 0.1, "noise": 0, "y": -1e308}', "out of range"),
    (b'{"id": "p7", "a": 1e308, "b": 0.1, "noise": 0, "y": 1.0}', "out of range"),
    (b'{"id": "p8", "a": 0.1, "b": -1e31, "noise": 0, "y": 1.0}', "out of range"),
    (b'{"id": "p9", "a": Infinity, "b": 0.1, "noise": 0, "y": 1.0}', "out of range"),
]
PATHS = {"delayed": {}, "plain": {"delayed_labels": 0}}


def rec(value: bytes, offset=1):
    return Record(value, {"file": "s", "line": offset}, "s", offset)


def _mixed(tmp_path, poison, n=120, every=10):
    """A clean stream with the poison lines spread through it; returns (path, clean rows)."""
    good = write_stream(tmp_path / "good.jsonl", n=n)
    path = tmp_path / "mixed.jsonl"
    with open(path, "wb") as f:
        for i, r in enumerate(good):
            f.write(json.dumps(r).encode() + b"\n")
            if i % every == every - 1 and i // every < len(poison):
                f.write(poison[i // every] + b"\n")
    return path, good


# -- the decoder -------------------------------------------------------------------------------

@pytest.mark.parametrize("line,cls", POISON)
def test_each_poison_pill_is_a_named_dead_letter_on_both_decoders(line, cls):
    dec = Decoder(features=["a", "b", "noise"], target="y", event_id="id")
    out = dec.decode(rec(line))
    assert isinstance(out, DecodeError) and out.reason.split(":")[0] == cls, out
    cols, errors = dec.decode_batch([rec(b'{"id": "g", "a": 1, "b": 2, "noise": 3, "y": 4}', 1),
                                     rec(line, 2), rec(b'{"id": "h", "a": 1, "y": 4}', 3)])
    assert [r.offset for r in cols.records] == [1, 3] and cols.X.shape == (2, 3)
    assert [(r.offset, reason) for r, reason in errors] == [(2, out.reason)]


def test_range_reason_names_the_field_and_big_integers_are_summarised():
    dec = Decoder(features=["a"], target="y")
    assert dec.decode(rec(b'{"a": ' + BIG_INT + b"}")).reason.startswith(
        "out of range: feature 'a' is an integer of 400 digits; |x| > max_abs=1e+30")
    assert "target 'y' is 1e+200" in dec.decode(rec(b'{"a": 1, "y": 1e200}')).reason
    ev = dec.decode(rec(b'{"a": NaN, "y": 1e30}'))          # NaN: missing; 1e30: the limit itself
    assert math.isnan(ev.x["a"]) and ev.y == 1e30
    loose = Decoder(features=["a"], target="y", max_abs=1e300)
    assert loose.decode(rec(b'{"a": 1e200, "y": -1e299}')).y == -1e299
    labels = Decoder(features=["a"], target="y", target_kind="label")   # a label is not a number
    assert labels.decode(rec(b'{"a": 1, "y": ' + BIG_INT + b"}")).y == int(BIG_INT)


def test_depth_limit_counts_nesting_not_brackets_in_strings():
    dec = Decoder(features=["a"], max_depth=3)
    assert dec.decode(rec(b'{"a": 1, "s": "[[[[[[[[{{{{"}')).x == {"a": 1}
    assert dec.decode(rec(b'{"a": 1, "z": [[[1]]]}')).reason.startswith("too deep")
    assert dec.decode(rec(b'{"a": 1, "z": [[1]]}')).x == {"a": 1}
    assert too_deep(b"[" * 10 + b"]" * 10, 9) and not too_deep(b"[" * 10 + b"]" * 10, 10)
    cols, errors = dec.decode_batch([rec(b'{"a": 1, "z": [[[1]]]}'), rec(b'{"a": 2, "z": [[1]]}', 2)])
    assert cols.X.tolist() == [[2.0]] and errors[0][1].startswith("too deep")


def test_any_exception_while_decoding_is_a_dead_letter(monkeypatch):
    dec = Decoder(features=["a"], target="y")
    monkeypatch.setattr(dec, "_target", lambda obj: 1 / 0)
    out = dec.decode(rec(b'{"a": 1, "y": 2}'))
    assert out.reason.startswith("undecodable: ZeroDivisionError")
    batch, errors = dec.decode_batch([rec(b'{"a": 1, "y": true}')])   # not plain: the fallback decodes it
    assert len(batch) == 0 and errors[0][1] == out.reason


def test_losses_never_raise_on_huge_values():
    p = Predicted({"prediction": [1e200]}, np.array([1e200]))
    assert RegressionTask.losses(None, p, [-1e200], [0]) == ([math.inf], 0)
    p = Predicted({"prediction": [{"t": 1e300}]})
    assert MultiTargetTask.losses(None, p, [{"t": -1e300}], [0]) == ([math.inf], 0)


# -- the loop, both paths ----------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(PATHS))
def test_poison_pills_never_stop_the_loop(tmp_path, path):
    lines_ = [line for line, _ in POISON]
    src, good = _mixed(tmp_path, lines_)
    p, summary = run(config(tmp_path / "r", {"type": "file", "path": str(src)}, run=PATHS[path]))
    outs = lines(tmp_path / "r" / "predictions.jsonl")
    dead = lines(tmp_path / "r" / "dead_letters.jsonl")
    assert len(outs) == len(good) and summary["dead_letters"] == len(dead) == len(POISON)
    assert [d["class"] for d in dead] == [cls for _, cls in POISON]
    assert all(math.isfinite(o["prediction"]) for o in outs)
    learner = p.runner.units[str(src)].learner
    for arr in (learner.scaler_.mean, learner.scaler_.var, learner.target_scaler_.var):
        assert np.isfinite(arr).all()


def test_a_byte_order_mark_does_not_cost_the_first_record(tmp_path):
    write_stream(tmp_path / "s.jsonl", n=30)
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + (tmp_path / "s.jsonl").read_bytes())
    _, summary = run(config(tmp_path / "r", {"type": "file", "path": str(bom)}))
    assert summary["dead_letters"] == 0
    assert lines(tmp_path / "r" / "predictions.jsonl")[0]["id"] == "e0"


def test_star_features_cannot_grow_the_input_layer_past_max_features(tmp_path):
    rows = write_stream(tmp_path / "good.jsonl", n=80)
    path = tmp_path / "s.jsonl"
    wide = {"id": "wide", "a": 0.1, "y": 1.0, **{f"f{i}": float(i) for i in range(500)}}
    drip = [{"id": f"d{i}", "a": 0.1, "y": 1.0, **{f"g{i}_{j}": 1.0 for j in range(3)}} for i in range(6)]
    with open(path, "w") as f:
        for r in rows[:40] + [wide] + drip + rows[40:]:
            f.write(json.dumps(r) + "\n")
    raw = config(tmp_path / "r", {"type": "file", "path": str(path)},
                 schema={"features": "*", "max_features": 10})
    p, summary = run(raw)
    dead = lines(tmp_path / "r" / "dead_letters.jsonl")
    learner = p.runner.units[str(path)].learner
    # a, b, noise, then the first drip record's 3 fields: 6 known; the next one would make 9, then 12
    assert [d["class"] for d in dead] == ["too many features"] * 5
    assert dead[0]["reason"].startswith("too many features: 501 numeric fields > max_features=10")
    assert len(learner.features_) <= 10 and learner.n_in_ <= 10
    assert summary["events_out"] == 80 + 2


# -- robust scalers ----------------------------------------------------------------------------

def _finite_state(learner):
    sc = [learner.scaler_]
    if hasattr(learner, "target_scaler_"):
        sc.append(learner.target_scaler_)
    for s in sc:
        for a in (s.mean, s.var, s.std, s.inv_std):
            assert np.isfinite(a).all(), a
    for t in learner.module_.state_dict().values():
        assert torch.isfinite(t).all()
    for st in learner.optimizer_.state_dict()["state"].values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                assert torch.isfinite(v).all()


def _regression_stream(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    y = pd.Series(2 * X["a"] - X["b"] + 0.05 * rng.normal(size=n))
    return X, y


def _test_mse(model, X, y) -> float:
    return float(((model.predict_many(X) - y) ** 2).mean())


@pytest.mark.parametrize("at", [3, 1500])
def test_one_feature_of_1e308_leaves_the_feature_useful(at):
    X, y = _regression_stream()
    Xt, yt = _regression_stream(500, seed=1)
    clean, hit = (streamnn.MLPRegressor(hidden=(16,), seed=0) for _ in range(2))
    clean.learn_many(X.iloc[:2500], y.iloc[:2500])
    X2 = X.iloc[:2500].copy()
    X2.iloc[at, 0] = 1e308
    hit.learn_many(X2, y.iloc[:2500])
    X3 = X2.iloc[at + 1:at + 2].copy()   # a missing value right after the extreme one
    X3.iloc[0, 0] = np.nan
    assert np.isfinite(hit.predict_many(X3)).all()
    _finite_state(hit)
    mse_clean, mse_hit = _test_mse(clean, Xt, yt), _test_mse(hit, Xt, yt)
    assert np.isfinite(hit.predict_many(Xt)).all()
    assert mse_hit < 2 * mse_clean + 0.01, (mse_clean, mse_hit)


def test_an_extreme_target_keeps_predictions_finite(tmp_path):
    src = tmp_path / "s.jsonl"
    rows = write_stream(src, n=400)
    rows[100]["y"] = 1e200
    rows[250]["y"] = -1e308
    with open(src, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    raw = config(tmp_path / "r", {"type": "file", "path": str(src)}, run=PATHS["plain"],
                 schema={"max_abs": 1.7e308})   # let them through: the scalers must cope
    p, summary = run(raw)
    assert summary["dead_letters"] == 0
    outs = lines(tmp_path / "r" / "predictions.jsonl")
    assert all(math.isfinite(o["prediction"]) for o in outs)
    learner = p.runner.units[str(src)].learner
    _finite_state(learner)
    late = [(o["prediction"] - o["y"]) ** 2 for o in outs[300:]]
    assert sum(late) / len(late) < 0.5


def test_running_stats_stay_finite_and_impute_sanely():
    s = RunningStats(2)
    rng = np.random.default_rng(0)
    s.update(rng.normal(size=(40, 2)))
    s.update(np.array([[1e308, -1e308]]))
    s.update(np.array([[np.nan, 0.5]]))
    assert np.isfinite(s.mean).all() and np.isfinite(s.var).all()
    assert (np.abs(s.mean) < 2).all() and (s.std < 3).all()
    Z = s.transform(np.array([[np.nan, 1e308], [0.0, 0.0]]))
    assert Z[0, 0] == 0.0 and np.isfinite(Z).all() and abs(Z[1, 0]) < 2
    first = RunningStats(1)                   # an extreme first value is outvoted in the warm-up
    for v in [1e308] + list(rng.normal(size=300)):
        first.update(np.array([[v]]))
    assert abs(first.mean[0]) < 0.3 and 0.8 < first.std[0] < 1.3


def test_running_stats_keep_plain_statistics_on_normal_data():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(2000, 3)) * [1.0, 50.0, 1e-3] + [0.0, 1e4, 5.0]
    s = RunningStats(3)
    for i in range(0, 2000, 16):
        s.update(X[i:i + 16])
    np.testing.assert_allclose(s.mean, X.mean(0), rtol=1e-9)
    np.testing.assert_allclose(s.var, X.var(0), rtol=1e-9)


def test_few_column_path_equals_the_array_path_with_clipping():
    rng = np.random.default_rng(1)
    few, wide = RunningStats(3), RunningStats(12)
    for i in range(40):
        X = rng.normal(size=(int(rng.integers(1, 40)), 12)) * rng.choice([1e-3, 1.0, 1e3])
        if i % 9 == 5:
            X[0, :] = 1e300
        few.update(X[:, :3])
        wide.update(X)
        for k in ("n", "mean", "var", "inv_std", "std", "out_std"):
            assert getattr(few, k).tobytes() == getattr(wide, k)[:3].tobytes(), k


def test_robust_state_round_trips_and_old_states_load():
    s = RunningStats(2)
    s.update(np.array([[1.0, 2.0], [3.0, np.nan]]))
    t = RunningStats()
    t.load_state_dict(s.state_dict())
    X = np.array([[5.0, 7.0]])
    s.update(X)
    t.update(X)
    assert s.mean.tobytes() == t.mean.tobytes() and s.var.tobytes() == t.var.tobytes()
    old = {k: v for k, v in s.state_dict().items() if k not in ("buf", "clip", "warmup")}
    u = RunningStats()
    u.load_state_dict(old)
    assert not u._cold and np.isfinite(u.transform(X)).all()


# -- an oversized line in a file source ---------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
def test_an_oversized_line_is_never_held_whole(tmp_path, gz):
    """A whole JSON array on one line (a common export mistake) was read whole, parsed, and
    written whole into the dead letters (an 89 MB line: 1.5 GB of memory, a 101 MB dead letter;
    a larger one kills the consumer at the same line on every restart). Now the source holds at
    most max_line + 1 bytes of it, and the dead letter says what the line is and how to fix it."""
    import gzip

    from streamnn.runtime.sources import FileSource
    rows = [{"id": f"e{i}", "a": i / 10, "b": 0.5, "noise": 0.0, "y": i / 5} for i in range(3000)]
    text = (json.dumps(rows) + "\n" + "\n".join(json.dumps(r) for r in rows[:40]) + "\n").encode()
    path = tmp_path / ("s.jsonl.gz" if gz else "s.jsonl")
    path.write_bytes(gzip.compress(text) if gz else text)
    assert len(json.dumps(rows)) > 150_000
    src = FileSource(path, max_line=50_000)
    src.CHUNK = 4096                             # skip in several chunks
    got = []
    while not src.exhausted:
        got += src.poll(7)
    assert len(got) == 41 and len(got[0].value) == 50_001
    assert got[0].position["bytes"] == len(json.dumps(rows)) and got[0].position["line"] == 1
    assert [json.loads(r.value)["id"] for r in got[1:]] == [r["id"] for r in rows[:40]]
    assert [r.offset for r in got] == list(range(1, 42))
    # end to end: one small dead letter naming the cause, the 40 good records learned
    _, summary = run(config(tmp_path / "r", {"type": "file", "path": str(path)},
                            schema={"max_bytes": 50_000}))
    dead = lines(tmp_path / "r" / "dead_letters.jsonl")
    assert summary["dead_letters"] == 1 and summary["events_out"] == 40
    assert dead[0]["class"] == "oversized" and "jq -c '.[]'" in dead[0]["reason"]
    assert (tmp_path / "r" / "dead_letters.jsonl").stat().st_size < 200_000


def test_an_oversized_line_still_being_written_is_skipped_when_it_ends(tmp_path):
    """Following a file: an oversized line whose end is not written yet is skipped as it comes,
    and becomes one record when its newline arrives."""
    from streamnn.runtime.sources import FileSource
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"a": 1}\n' + b"x" * 300)
    src = FileSource(path, follow=True, max_line=100)
    first = src.poll(10)
    assert [r.value for r in first] == [b'{"a": 1}']
    with open(path, "ab") as f:
        f.write(b"y" * 300)
    assert src.poll(10) == []
    with open(path, "ab") as f:
        f.write(b'z\n{"a": 2}\n{"a"')
    got = src.poll(10)
    assert [r.position.get("bytes") for r in got] == [601, None]
    assert got[0].value == b"x" * 101 and got[1].value == b'{"a": 2}' and got[1].offset == 3
    with open(path, "ab") as f:
        f.write(b': 3}\n')
    assert [r.value for r in src.poll(10)] == [b'{"a": 3}']


def test_a_small_json_array_line_names_the_fix():
    err = Decoder(features=["a"], target="y")._parse(b'[{"a": 1}, {"a": 2}]')
    assert isinstance(err, DecodeError) and "not an object" in str(err) and "jq -c" in str(err)


def test_resuming_past_an_oversized_line_never_holds_it_whole(tmp_path, monkeypatch):
    """Seeking to a checkpointed offset skipped lines by iterating the file, which reads each line
    whole: a restart after a huge line held it in memory again. Now lines are skipped in chunks."""
    import streamnn.runtime.sources as sources
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"[" + b"1," * 50_000 + b"1]\n" + b'{"a": 1}\n{"a": 2}\n{"a": 3}')
    longest = []

    class Spy:
        def __init__(self, f):
            self.f = f

        def readline(self, size=-1):
            line = self.f.readline(size)
            longest.append(len(line))
            return line

        def __iter__(self):
            raise AssertionError("a line read whole")

        def __getattr__(self, name):
            return getattr(self.f, name)

    real = sources.open_file
    monkeypatch.setattr(sources, "open_file", lambda p: Spy(real(p)))
    src = sources.FileSource(path, max_line=100)
    src.CHUNK = 4096
    src.seek(src.stream, 3)                                   # resume after lines 1 and 2
    got = src.poll(10)
    assert [(r.offset, r.value) for r in got] == [(3, b'{"a": 2}'), (4, b'{"a": 3}')]
    assert max(longest) <= 4096

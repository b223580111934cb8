"""Hostile input and faults found by a second hardening pass (none named by an issue): each test
failed before its fix. Learners are driven directly and through `streamnn run`'s pipeline."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

import streamnn
from test_runtime_helpers import config, lines, run, write_stream

torch.set_num_threads(1)

AE = {"class": "AutoencoderDetector", "params": {"seed": 0}}


def _append(path, rows):
    with open(path, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


# -- a network whose input grew must load again ------------------------------------------------

@pytest.mark.parametrize("params", [{}, {"encoder": "conv"}, {"encoder": "lstm"}])
def test_a_detector_whose_inputs_grew_saves_and_loads(tmp_path, params):
    """Hidden and latent widths are sized from the first event's width; a later feature grows
    the input layer only. Loading used to rebuild at the grown width (other hidden widths), so
    the file was refused: the model was lost."""
    det = streamnn.AutoencoderDetector(seed=0, **params)
    for i in range(40):
        x = {"a": (i % 7) / 7, "b": (i % 3) / 3}
        if i >= 20:
            x["c"] = (i % 5) / 5   # a new feature: the input layer grows
        det.learn_one(x)
    det.save(tmp_path / "d.pt")
    back = streamnn.AutoencoderDetector.load(tmp_path / "d.pt")
    probe = {"a": 0.3, "b": 0.6, "c": 0.2}
    assert back.raw_score_one(probe) == det.raw_score_one(probe)
    for name, t in det.module_.state_dict().items():
        assert torch.equal(t, back.module_.state_dict()[name]), name


def _late_field_stream(src, n, late):
    """A replay file of `n` records whose field "noise" first appears at record `late`."""
    rows = write_stream(src, n=n)
    with open(src, "w") as f:
        for i, r in enumerate(rows):
            if i < late:
                r.pop("noise")
            f.write(json.dumps(r) + "\n")
    return src


def test_a_detector_run_resumes_after_a_new_field_appeared(tmp_path):
    """`features = "*"` and a field that appears mid-stream: the resumed run used to stop with a
    RuntimeError (size mismatch) at its first checkpoint load, for good."""
    src = _late_field_stream(tmp_path / "s.jsonl", n=100, late=50)
    raw = config(tmp_path / "r", {"type": "file", "path": str(src)}, AE,
                 schema={"features": "*", "target": None})
    run(raw)
    _append(src, write_stream(tmp_path / "more.jsonl", n=10, seed=1))
    p, summary = run(raw)
    assert summary["dead_letters"] == 0
    assert len(lines(tmp_path / "r" / "predictions.jsonl")) == 110
    assert p.runner.units[str(src)].learner.n_seen_ == 110


def test_a_checkpoint_whose_state_does_not_fit_stops_the_run_with_one_line(tmp_path, capsys):
    """A well-formed checkpoint (valid checksum, same class and parameters) whose learner state
    does not fit (another version wrote it, or a hand edit): a one-line error naming the file
    and the fix, not a RuntimeError traceback."""
    from streamnn.checkpoint import load_checkpoint, save_checkpoint
    from streamnn.runtime.cli import main
    from test_hardening_state import _toml

    write_stream(tmp_path / "s.jsonl", n=120)
    raw = config(tmp_path / "r", {"type": "file", "path": str(tmp_path / "s.jsonl")})
    p, _ = run(raw)
    (path,) = p.store.paths()
    ck = load_checkpoint(path)
    w = ck["state"]["module"]
    first = next(k for k in w if k.endswith("weight"))
    w[first] = torch.zeros(w[first].shape[0] + 1, w[first].shape[1])   # a shape this learner never has
    save_checkpoint(ck, path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(_toml(raw))
    assert main(["run", str(cfg), "--quiet"]) == 1
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if not x.startswith('{"ts"')]
    assert line.startswith("streamnn: error: ") and path in line and "Traceback" not in err, err
    assert "does not fit" in line and "--fresh" in line
    assert main(["run", str(cfg), "--quiet", "--fresh"]) == 0


# -- a field named like a lag column -------------------------------------------------------------

def test_a_field_named_like_a_lag_column_is_not_a_feature_with_star(tmp_path):
    """`features = "*"` with lags on "a": a record carrying a field "a_lag1" made two columns of
    one name, and the learner raised (a misleading "is a str") on every restart: the consumer
    stopped for good. The lag column names are the runtime's, like the target's."""
    src = tmp_path / "s.jsonl"
    rows = write_stream(src, n=60)
    with open(src, "w") as f:
        for i, r in enumerate(rows):
            if i >= 20:
                r["a_lag1"] = 123.0
            f.write(json.dumps(r) + "\n")
    p, summary = run(config(tmp_path / "r", {"type": "file", "path": str(src)},
                            schema={"features": "*", "lags": 2, "lag_fields": ["a"]}))
    assert summary["dead_letters"] == 0 and len(lines(tmp_path / "r" / "predictions.jsonl")) == 60
    learner = p.runner.units[str(src)].learner
    assert learner.features_.names.count("a_lag1") == 1
    assert learner.n_seen_ == 60


def test_a_listed_feature_named_like_a_lag_column_is_a_config_error(tmp_path):
    from streamnn.runtime.config import ConfigError, parse

    raw = config(tmp_path / "r", {"type": "file", "path": str(tmp_path / "s.jsonl")},
                 schema={"features": ["a", "b", "a_lag2"], "lags": 2, "lag_fields": ["a"]})
    with pytest.raises(ConfigError, match=r"\[schema\] features: 'a_lag2' is also the name of a lag column"):
        parse(raw)


# -- the learners' own input handling ------------------------------------------------------------

def _fed(learner, n=30):
    for i in range(n):
        x = {"a": (i % 7) / 7, "b": (i % 3) / 3}
        learner.learn_one(x) if isinstance(learner, streamnn.AutoencoderDetector) else learner.learn_one(x, i % 3 / 3)
    return learner


@pytest.mark.parametrize("make", [lambda: streamnn.MLPRegressor(hidden=[4], seed=0),
                                  lambda: streamnn.AutoencoderDetector(seed=0)], ids=["reg", "ae"])
def test_an_integer_beyond_the_float_range_is_a_missing_value_like_inf(make):
    """`learn_one({"a": 10**400})` raised a bare OverflowError ("int too large to convert to
    float") naming no feature; inf is a missing value, and so is an integer beyond it."""
    import pandas as pd

    big, inf = _fed(make()), _fed(make())
    for model, v in ((big, 10**400), (inf, float("inf"))):
        if isinstance(model, streamnn.AutoencoderDetector):
            model.learn_one({"a": v, "b": 0.5})
            model.learn_many(pd.DataFrame({"a": np.array([v, 0.1], dtype=object), "b": [0.5, 0.2]}))
        else:
            model.learn_one({"a": v, "b": 0.5}, 0.3)
            model.learn_many(pd.DataFrame({"a": np.array([v, 0.1], dtype=object), "b": [0.5, 0.2]}),
                             pd.Series([0.3, 0.1]))
    probe = {"a": -(10**400), "b": 0.5}
    score = (lambda m, x: m.raw_score_one(x)) if isinstance(big, streamnn.AutoencoderDetector) else \
        (lambda m, x: m.predict_one(x))
    assert score(big, probe) == score(inf, {"a": float("-inf"), "b": 0.5})
    for name, t in big.module_.state_dict().items():
        assert torch.equal(t, inf.module_.state_dict()[name]), name


def test_a_frame_with_a_repeated_column_name_says_so():
    import pandas as pd

    X = pd.DataFrame([[1.0, 2.0, 3.0]] * 3, columns=["a", "a", "b"])
    for model in (streamnn.MLPRegressor(seed=0), streamnn.MLPClassifier(seed=0)):
        with pytest.raises(ValueError, match=r"columns \['a'\] appear more than once"):
            model.learn_many(X, pd.Series([1, 0, 1]))   # was: "feature 'a' is a str ('a')"
        assert model.module_ is None


# -- compressed replay files -------------------------------------------------------------------

@pytest.mark.parametrize("ext", ["jsonl", "csv"])
def test_a_gzipped_file_replays_like_the_plain_one(tmp_path, ext):
    """`check` accepted .jsonl.gz / .csv.gz (".gz too"), but the source read the compressed bytes:
    every line was a "binary" dead letter (a CSV's header was garbage) and nothing was learned."""
    import gzip

    rows = write_stream(tmp_path / "s.jsonl", n=80)
    plain = tmp_path / f"p.{ext}"
    if ext == "csv":
        plain.write_text("id,a,b,noise,y\n" + "".join(f"{r['id']},{r['a']},{r['b']},{r['noise']},{r['y']}\n"
                                                      for r in rows))
    else:
        plain.write_bytes((tmp_path / "s.jsonl").read_bytes())
    packed = tmp_path / f"z.{ext}.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    outs = {}
    for name, path in (("plain", plain), ("gz", packed)):
        _, summary = run(config(tmp_path / name, {"type": "file", "path": str(path)}))
        assert summary["dead_letters"] == 0
        outs[name] = [(o["id"], o["prediction"]) for o in lines(tmp_path / name / "predictions.jsonl")]
    assert len(outs["gz"]) == 80 and outs["gz"] == outs["plain"]
    with open(packed, "ab") as f:   # resume: the source seeks past the lines already learned
        f.write(gzip.compress(b""))
    _, summary = run(config(tmp_path / "gz", {"type": "file", "path": str(packed)}))
    assert summary["events_out"] == 80 and len(lines(tmp_path / "gz" / "predictions.jsonl")) == 80


def test_a_damaged_gzipped_file_stops_with_one_line_and_a_misnamed_one_is_a_config_error(tmp_path, capsys):
    """A truncated .gz raised EOFError (a traceback) mid-run; a plain file named .gz a
    BadGzipFile traceback at the first poll."""
    import gzip

    from streamnn.runtime.cli import main
    from test_hardening_state import _toml

    write_stream(tmp_path / "s.jsonl", n=400)
    data = gzip.compress((tmp_path / "s.jsonl").read_bytes())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) // 2])
    cfg = tmp_path / "c.toml"
    cfg.write_text(_toml(config(tmp_path / "r", {"type": "file", "path": str(cut)})))
    assert main(["run", str(cfg), "--quiet"]) == 1
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if not x.startswith('{"ts"')]
    assert line.startswith("streamnn: error: ") and str(cut) in line and "Traceback" not in err, err
    assert "damaged or cut short after line" in line and "gzip -t" in line

    plain = tmp_path / "plain.jsonl.gz"
    plain.write_bytes((tmp_path / "s.jsonl").read_bytes())
    cfg.write_text(_toml(config(tmp_path / "r2", {"type": "file", "path": str(plain)})))
    assert main(["check", str(cfg)]) == 2
    assert "not gzip-compressed, but named .gz" in capsys.readouterr().err


def test_produce_reads_a_gzipped_jsonl_file_as_its_lines(tmp_path):
    """`streamnn produce x.jsonl.gz` sent the compressed bytes, cut at newline bytes."""
    import gzip

    from streamnn.runtime.kafka_replay import _read_messages

    rows = write_stream(tmp_path / "s.jsonl", n=30)
    (tmp_path / "s.jsonl.gz").write_bytes(gzip.compress((tmp_path / "s.jsonl").read_bytes()))
    got = [obj for _, obj in _read_messages(tmp_path / "s.jsonl.gz")]
    assert got == rows


# -- following a file that is rotated -------------------------------------------------------------

@pytest.mark.parametrize("how", ["truncate", "replace"])
def test_a_followed_file_truncated_or_replaced_is_an_error_not_a_hang(tmp_path, how):
    """Truncated: the source read on from the old position (a cut line as a dead letter, the
    first new lines lost); replaced (rename + new file): it waited on the old file forever."""
    from streamnn.runtime.sources import FileSource

    path = tmp_path / "s.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n')
    src = FileSource(path, follow=True)
    assert len(src.poll(10)) == 3 and src.poll(10) == []   # at the end, waiting: the same file
    with open(path, "a") as f:
        f.write('{"a": 4}\n')
    assert [r.offset for r in src.poll(10)] == [4]
    if how == "replace":
        os.rename(path, tmp_path / "s.jsonl.1")
        assert src.poll(10) == []                  # moved away, no new file yet: wait for it
    path.write_text('{"a": 10}\n')                  # "w": truncates, or creates the new file
    with pytest.raises(ValueError, match="truncated" if how == "truncate" else "replaced by another file"):
        src.poll(10)


# -- a full disk mid-run ---------------------------------------------------------------------------

def test_a_full_disk_mid_run_stops_with_one_line_and_the_run_resumes(tmp_path, capsys, monkeypatch):
    """ENOSPC while writing a checkpoint was a traceback; now one line that says the last
    checkpoint is intact, and the next run resumes from it to the same end."""
    import errno

    import streamnn.runtime.state
    from streamnn.runtime.cli import main
    from test_hardening_state import _toml

    write_stream(tmp_path / "s.jsonl", n=300)
    cfg = tmp_path / "c.toml"
    cfg.write_text(_toml(config(tmp_path / "r", {"type": "file", "path": str(tmp_path / "s.jsonl")})))
    real, calls = streamnn.runtime.state.save_checkpoint, []

    def full_after_one(*a, **k):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(streamnn.runtime.state, "save_checkpoint", full_after_one)
    assert main(["run", str(cfg), "--quiet"]) == 1
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if not x.startswith('{"ts"')]
    assert "Traceback" not in err and line.startswith("streamnn: error: ") and "No space left" in line, err
    assert "run again to resume" in line
    monkeypatch.undo()
    assert main(["run", str(cfg), "--quiet"]) == 0
    ids = [o["id"] for o in lines(tmp_path / "r" / "predictions.jsonl")]
    assert set(ids) == {f"e{i}" for i in range(300)}   # at-least-once: each event, some twice


# -- a missing series key ----------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: streamnn.LSTMRegressor(seed=0, key="k", hidden_size=4),
                                  lambda: streamnn.AutoencoderDetector(seed=0, key="k", window=4)],
                         ids=["lstm", "ae"])
def test_a_nan_key_is_a_missing_key_not_a_new_series_per_event(make):
    """A keyed learner in the runtime sees a null or absent key field as NaN; NaN != NaN, so each
    such event opened a series of its own: state and memory grew per event, and no event had a
    history. Now NaN is the missing key, like an absent one: one series."""
    import pandas as pd

    model = make()
    learn = (lambda x: model.learn_one(x)) if isinstance(model, streamnn.AutoencoderDetector) else \
        (lambda x: model.learn_one(x, 0.5))
    for i in range(200):
        learn({"a": (i % 7) / 7, "k": float("nan") if i % 2 else None} if i % 3 else {"a": 0.1})
    X = pd.DataFrame({"a": [0.1, 0.2, 0.3], "k": [np.nan, np.nan, np.nan]})
    if isinstance(model, streamnn.AutoencoderDetector):
        model.learn_many(X)
        assert len(model.windows_) == 1
    else:
        model.learn_many(X, pd.Series([0.5, 0.5, 0.5]))
        assert len(model.keys_.slots) == 1


# -- a NaN class label -------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: streamnn.MLPClassifier(hidden=[4], seed=0),
                                  lambda: streamnn.LSTMClassifier(seed=0, hidden_size=4)], ids=["mlp", "lstm"])
def test_a_nan_label_is_a_missing_label_not_a_new_class_each_time(make):
    """NaN is how pandas shows an unlabelled row (`pd.Series(["a", None])` holds NaN); NaN != NaN,
    so every such row added a class (the output layer grew per row, and "nan" was predicted).
    Now it is the missing label, like None: nothing is learned from the row."""
    import pandas as pd

    model, twin = make(), make()
    for i in range(30):
        model.learn_one({"a": i / 30}, "ab"[i % 2])
        twin.learn_one({"a": i / 30}, "ab"[i % 2])
    for _ in range(5):
        model.learn_one({"a": 0.5}, float("nan"))
        twin.learn_one({"a": 0.5}, None)
    y = pd.Series(["a", None, "b", None])
    assert y.isna().sum() == 2
    X = pd.DataFrame({"a": [0.1, 0.2, 0.3, 0.4]})
    model.learn_many(X, y.astype(object).where(y.notna(), float("nan")))
    twin.learn_many(X, pd.Series(["a", None, "b", None], dtype=object))
    assert list(model.classes_) == ["a", "b"] == list(twin.classes_)
    assert model.predict_proba_one({"a": 0.3}) == twin.predict_proba_one({"a": 0.3})


# -- hostile event times in the report -------------------------------------------------------------

@pytest.mark.parametrize("stamp", [lambda i: "9999-12-31T23:59:59" if i % 2 else "0001-01-01",
                                   lambda i: -(10**12) + i], ids=["far", "negative-epoch"])
def test_event_times_the_plots_cannot_draw_fall_back_to_the_event_count(tmp_path, stamp):
    """The end-of-run report raised ("Matplotlib dates must be between year 0001 and 9999",
    "year -29719 is out of range"): `streamnn run` ended with an error and no report."""
    from streamnn.runtime.report import write_report

    src = tmp_path / "s.jsonl"
    rows = write_stream(src, n=120)
    with open(src, "w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({**r, "ts": stamp(i)}) + "\n")
    _, summary = run(config(tmp_path / "r", {"type": "file", "path": str(src)}, schema={"timestamp": "ts"},
                            metrics={"every": 20}))
    assert summary["events_out"] == 120
    names = {f.rsplit("/", 1)[-1] for f in write_report(tmp_path / "r")}
    assert "prequential.png" in names


# -- fields copied into every output ---------------------------------------------------------------

@pytest.mark.parametrize("field, kind", [("k", "number"), ("ts", "number"), ("id", "number"), ("y", "label")])
def test_a_huge_id_key_timestamp_or_label_is_a_dead_letter(field, kind):
    """A 900 kB key in a 1 MB record (within max_bytes) made a 1.8 MB output message (the key is
    the message key and is in the JSON too): the Kafka sink raised MessageSizeTooLargeError and
    the consumer stopped at that record on every restart. Fields copied into every output are
    short identifiers: past MAX_TEXT characters the record is a dead letter naming the field."""
    from streamnn.runtime.records import DecodeError, Record
    from streamnn.runtime.schema import MAX_TEXT, Decoder

    dec = Decoder(features=["a"], target="y", key="k", event_id="id", timestamp="ts", target_kind=kind)
    base = {"id": "e1", "a": 1.0, "k": "m1", "ts": "2024-01-01", "y": 1.0 if kind == "number" else "c"}
    ok = json.dumps({**base, field: "z" * MAX_TEXT}).encode()
    bad = json.dumps({**base, field: "z" * (MAX_TEXT + 1)}).encode()
    nested = json.dumps({**base, field: {"z": ["z" * MAX_TEXT]}}).encode()
    recs = [Record(v, {}, "s", i) for i, v in enumerate([ok, bad, nested])]
    assert not isinstance(dec.decode(recs[0]), DecodeError)
    for r in recs[1:]:
        out = dec.decode(r)
        if field in ("id", "y") and r is recs[2]:
            assert out.reason.startswith("wrong type"), out   # an object is no id or label anyway
            continue
        assert out.reason.startswith(f"too long: ") and repr(field) in out.reason, out
    batch, errors = dec.decode_batch(recs)
    assert [r.offset for r in batch.records] == [0]
    assert [why for _, why in errors] == [dec.decode(r).reason for r in recs[1:]]


# -- missing and out-of-range targets through the library ------------------------------------------

@pytest.mark.parametrize("make, y", [
    (lambda: streamnn.MLPRegressor(hidden=[4], seed=0), lambda i: float(i % 3)),
    (lambda: streamnn.LSTMRegressor(seed=0, hidden_size=4), lambda i: float(i % 3)),
    (lambda: streamnn.MultiTargetRegressor(seed=0), lambda i: {"p": float(i % 3), "q": 1.0}),
    (lambda: streamnn.MLPForecaster(seed=0), None),
    (lambda: streamnn.LSTMForecaster(seed=0), None),
], ids=["mlp", "lstm", "multi", "mlp-forecaster", "lstm-forecaster"])
def test_a_none_or_huge_integer_target_is_skipped_like_inf(make, y):
    """`learn_one(x, 10**400)` raised a bare OverflowError; MLPRegressor and the forecasters
    raised on a None target (TypeError) where LSTMRegressor and MultiTargetRegressor skip it.
    Now NaN, inf and an integer beyond the float range are all skipped, and None too (a sequence
    learner keeps its None: an unlabelled event that still moves the hidden state)."""
    import math

    clean = object()

    def learn(model, i, target=clean):
        if y is None:
            model.learn_one(math.sin(i / 5) if target is clean else target)
        else:
            t = y(i) if target is clean else ({"p": target, "q": 1.0} if isinstance(y(i), dict) else target)
            model.learn_one({"a": i / 30}, t)

    models = {}
    for bad in (math.inf, None, 10**400):
        m = make()
        for i in range(30):
            learn(m, i)
        learn(m, 30, bad)
        for i in range(31, 50):
            learn(m, i)
        models[repr(bad)[:5]] = m
    out = {k: (m.forecast(2) if y is None else m.predict_one({"a": 0.4})) for k, m in models.items()}
    assert out["10000"] == out["inf"], out
    if not isinstance(models["inf"], streamnn.LSTMRegressor):   # there None is an unlabelled step
        assert out["None"] == out["inf"], out


# -- a label per event -------------------------------------------------------------------------------

@pytest.mark.parametrize("delayed", [0, 100])
def test_labels_past_max_classes_are_dead_letters(tmp_path, delayed):
    """A producer that sends a new label with each event (an id in the label field, say) grew
    the classifier's output layer by one class per event, without end, like an unbounded input
    layer before max_features. Past `[schema] max_classes` the record is a dead letter."""
    src = tmp_path / "s.jsonl"
    rows = write_stream(src, n=60, classes=True)
    with open(src, "w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({**r, "y": ["a", "b", "c"][i % 3] if i < 30 else f"id-{i}"}) + "\n")
    learner = {"class": "MLPClassifier", "params": {"hidden": [4], "seed": 0}}
    p, summary = run(config(tmp_path / "r", {"type": "file", "path": str(src)}, learner,
                            schema={"max_classes": 5}, run={"delayed_labels": delayed, "batch_size": 16}))
    dead = lines(tmp_path / "r" / "dead_letters.jsonl")
    assert len(dead) == 28 and summary["dead_letters"] == 28
    assert {d["class"] for d in dead} == {"too many classes"} and "max_classes=5" in dead[0]["reason"]
    assert [d["offset"] for d in dead] == list(range(33, 61))
    assert list(p.runner.units[str(src)].learner.classes_) == ["a", "b", "c", "id-30", "id-31"]
    assert len(lines(tmp_path / "r" / "predictions.jsonl")) == 32


def test_an_event_id_sent_twice_counts_the_replaced_waiting_event_as_expired():
    """The second event with a waiting id replaced the first in the delayed-label cache without a
    trace: that event was never learned and not counted anywhere."""
    from streamnn.runtime.state import DelayedLabels

    cache = DelayedLabels(size=10)
    cache.put("e1", {"a": 0.1})
    cache.put("e2", {"a": 0.2})
    cache.put("e1", {"a": 0.9})
    assert cache.expired == 1 and cache.pop("e1") == {"a": 0.9} and list(cache.items) == ["e2"]


def test_a_detector_stopped_after_its_inputs_grew_resumes_exactly(tmp_path):
    """Stop (checkpoint) after a new field grew the network, resume: the final state equals an
    uninterrupted run's, bit for bit (the load rebuilds at the first width, then grows)."""
    from streamnn.runtime.config import parse
    from streamnn.runtime.pipeline import Pipeline
    from test_runtime_helpers import assert_same_state

    src = _late_field_stream(tmp_path / "s.jsonl", n=300, late=100)
    learner = {"class": "AutoencoderDetector", "params": {"seed": 0, "window": 4}}

    def raw(name):
        return config(tmp_path / name, {"type": "file", "path": str(src)}, learner,
                      schema={"features": "*", "target": None}, run={"batch_size": 32})

    p_all, _ = run(raw("all"))
    Pipeline(parse(raw("cut")), max_events=160).run(report=False)
    p_cut, _ = run(raw("cut"))
    a, b = (p.runner.units[str(src)].learner for p in (p_all, p_cut))
    assert a.n_in_ == b.n_in_ == 16 and b.n_seen_ == 300   # a, b, y, then noise: 4 x window 4
    assert_same_state(a.state_dict(), b.state_dict())


# -- sample weights --------------------------------------------------------------------------------

@pytest.mark.parametrize("w", [float("nan"), float("inf"), -1.0, None], ids=["nan", "inf", "negative", "none"])
@pytest.mark.parametrize("make, y", [(lambda: streamnn.MLPRegressor(hidden=[4], seed=0, batch_size=4, update_every=2),
                                      lambda i: float(i % 3)),
                                     (lambda: streamnn.MLPClassifier(hidden=[4], seed=0, batch_size=4, update_every=2),
                                      lambda i: bool(i % 2)),
                                     (lambda: streamnn.LSTMClassifier(seed=0, hidden_size=4),   # negative: accepted
                                      lambda i: bool(i % 2))], ids=["reg", "clf", "lstm"])
def test_a_bad_sample_weight_is_refused_before_it_poisons_the_model(make, y, w):
    """`learn_one(x, y, w=nan)` (or inf, a negative weight, None) was accepted and made every
    weight of the network NaN for good (a negative one made it diverge): predictions NaN ever
    after. Now it raises, naming the weight, before anything is learned."""
    import pandas as pd

    model, twin = make(), make()
    for i in range(20):
        model.learn_one({"a": i / 20}, y(i))
        twin.learn_one({"a": i / 20}, y(i))
    with pytest.raises(ValueError, match="sample weight"):
        model.learn_one({"a": 0.5}, y(1), w=w)
    with pytest.raises(ValueError, match="sample weight"):
        model.learn_many(pd.DataFrame({"a": [0.1, 0.2]}), pd.Series([y(1), y(2)]), w=pd.Series([1.0, w]))
    for i in range(20, 40):
        model.learn_one({"a": i / 40}, y(i))
        twin.learn_one({"a": i / 40}, y(i))
    assert model.n_seen_ == twin.n_seen_ == 40
    for name, t in model.module_.state_dict().items():
        assert torch.equal(t, twin.module_.state_dict()[name]), name


@pytest.mark.parametrize("how", ["learn_one", "learn_many"])
@pytest.mark.parametrize("bad", ["datetime", "timedelta", "str"])
def test_a_refused_feature_leaves_the_learner_as_it_was(how, bad):
    """learn_many turned datetime and timedelta columns into nanoseconds (1.7e18) where learn_one
    refused them; and a refused event or frame still registered its new feature, leaving an
    always-missing input column for good. Now both refuse the same values and register nothing."""
    import pandas as pd

    from streamnn.features import FeatureTypeError
    col = {"datetime": pd.date_range("2024-01-01", periods=6, freq="h"),
           "timedelta": pd.to_timedelta(np.arange(6), unit="s"), "str": list("abcdef")}[bad]
    X = pd.DataFrame({"a": np.arange(6.0), "t": col})
    m = streamnn.MLPRegressor(seed=0)
    m.learn_one({"a": 1.0}, 1.0)
    with pytest.raises(FeatureTypeError, match="feature 't'"):
        if how == "learn_one":
            m.learn_one(X.iloc[0].to_dict(), 1.0)
        else:
            m.learn_many(X, pd.Series(np.arange(6.0)))
    assert list(m.features_.index) == ["a"] and m.n_seen_ == 1
    m.learn_many(X[["a"]], pd.Series(np.arange(6.0)))
    assert m.n_seen_ == 7


# -- extreme values: no numpy warning, no stalled learning (session 12) -------------------------

def test_a_huge_finite_target_of_a_multi_target_regressor_is_winsorised_not_a_stalled_model():
    """A target of 1e300 was scaled without the winsorising window, overflowed float32 and made
    every step whose batch (or replay) held it non-finite: 111 of 550 steps skipped afterwards."""
    import warnings
    rng = np.random.default_rng(0)

    def gen(n):
        for _ in range(n):
            x = {"a": float(rng.normal()), "b": float(rng.normal())}
            yield x, {"u": 2 * x["a"] + 1, "v": x["b"] - x["a"]}

    model = streamnn.MultiTargetRegressor(seed=0)
    for x, y in gen(500):
        model.learn_one(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i, (x, y) in enumerate(gen(550)):
            model.learn_one(x, {"u": 1e300, "v": 0.0} if i == 10 else y)
    assert model.n_nonfinite_ == 0
    assert np.mean([abs(model.predict_one(x)["u"] - y["u"]) for x, y in gen(200)]) < 0.2


def test_values_near_the_float_range_raise_no_numpy_warning():
    """Frames holding +inf and -inf (or 1e308s) summed to NaN in a finiteness check, and a
    detector's season finder squared values near the float range: RuntimeWarnings for the user."""
    import warnings
    import pandas as pd
    from streamnn.alarm_season import find_period

    wave = np.sin(np.arange(1000) * 2 * np.pi / 24)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert find_period(wave * 1e300) == find_period(wave) == 24
        assert find_period(np.r_[wave[:500], np.inf, wave[501:]]) == 0
        model = streamnn.MLPClassifier(seed=0)
        X = pd.DataFrame({"a": [np.inf, -np.inf, 1e308, 1e308], "b": [1.0, 2.0, 3.0, 4.0]})
        model.learn_many(X, pd.Series([0, 1, 0, 1]))
        assert np.isfinite(model.predict_proba_many(X).to_numpy()).all()
        det = streamnn.AutoencoderDetector(seed=0)
        for i in range(700):
            x = {"v": float(wave[i % 1000]) * (1e300 if i % 97 == 5 else 1.0)}
            det.score_one(x)
            det.learn_one(x)


def test_a_one_value_sensor_that_gains_a_second_field_keeps_running(tmp_path):
    """One value for 400 events (series evidence: season, level shift), then a second sensor comes
    online: the frame path judged the record density with the series' extra tails and raised an
    IndexError; with `features = "*"` that stopped the consumer on every restart (a poison pill).
    Frames now pair the signals with their tails as `score` does."""
    import pandas as pd
    rng = np.random.default_rng(0)
    rows = [{"v": float(np.sin(i / 5) + rng.normal(0, 0.1))} for i in range(700)]
    for i in range(400, 700):
        rows[i]["w"] = float(rng.normal())
    frames = streamnn.AutoencoderDetector(seed=0)
    framed = []
    for i in range(0, len(rows), 50):
        X = pd.DataFrame(rows[i:i + 50])
        framed += frames.score_many(X).tolist()
        frames.learn_many(X)
    framed = np.array(framed)
    assert np.isfinite(framed).all() and ((framed >= 0) & (framed <= 1)).all()
    assert framed[450:].max() > 0 and frames.density_.n > 0   # the records' evidence took over
    src = tmp_path / "s.jsonl"
    with open(src, "w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({"id": f"e{i}", **r}) + "\n")
    raw = config(tmp_path / "r", {"type": "file", "path": str(src)}, AE,
                 schema={"features": "*", "target": None})   # (listed features: both columns from the start)
    p, summary = run(raw)
    assert summary["dead_letters"] == 0 and len(lines(tmp_path / "r" / "predictions.jsonl")) == 700


def test_a_forecaster_skips_values_beyond_the_range_rule_without_numpy_warnings():
    """MLPForecaster scaled its windows by their differences: a value of 1e300 overflowed them
    (RuntimeWarnings, an inf target cast to float32). Values beyond 1e30 are skipped as the
    runtime's range rule refuses them; up to it, no warning."""
    import warnings
    ys = [10 + np.sin(i * 2 * np.pi / 12) for i in range(500)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for bad, skipped in ((1e300, 1), (-1e308, 1), (1e30, 0)):
            model = streamnn.MLPForecaster(seed=0)
            for i, y in enumerate(ys):
                model.learn_one(bad if i == 300 else y)
            assert model.n_skipped_ == skipped
            f = model.forecast(3)
            truth = [10 + np.sin((500 + j) * 2 * np.pi / 12) for j in range(3)]
            assert np.isfinite(f).all() and max(abs(a - b) for a, b in zip(f, truth)) < 0.2, f


@pytest.mark.parametrize("features", [["a"], "*"])
def test_a_keyed_learner_with_delayed_labels_keeps_its_string_key(tmp_path, features):
    """A series learner keyed by the schema's key (string sensor ids), with event ids: an event
    whose label comes later, matched from the delayed-label cache, was learned from a frame built
    as floats, key included: "could not convert string to float: 'm1'" stopped the run."""
    src = tmp_path / "s.jsonl"
    rows = []
    for i in range(300):
        r = {"id": f"e{i}", "m": ["m1", "m2"][i % 2], "a": float(np.sin(i / 7))}
        if i % 10 != 3:
            r["y"] = "up" if r["a"] > 0 else "down"
        rows.append(r)
        if i % 10 == 3:
            rows.append({"id": f"e{i}", "y": "up" if r["a"] > 0 else "down"})   # its label, later
    with open(src, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    raw = config(tmp_path / "r", {"type": "file", "path": str(src)},
                 {"class": "LSTMClassifier", "params": {"seed": 0, "key": "m"}},
                 schema={"features": features, "target": "y", "event_id": "id", "key": "m"})
    p, summary = run(raw)
    assert summary["dead_letters"] == 0 and summary["learned"] == 300
    assert p.runner.totals()["delayed_matched"] == 30


def test_a_forecast_from_lags_alone_with_event_ids_learns_every_record(tmp_path):
    """`features = []` and lags of the targets (pipelines/sensor_forecast.toml's shape) plus an
    `event_id`: every record looked like a late label (no feature) and all 300 were dead letters
    ("unmatched label"). Without features there is no telling them apart: every record is an event."""
    src = tmp_path / "s.jsonl"
    with open(src, "w") as f:
        for i in range(300):
            f.write(json.dumps({"id": f"e{i}", "m": ["m1", "m2"][i % 2], "t": float(np.sin(i / 9)),
                                "p": float(np.cos(i / 7))}) + "\n")
    raw = config(tmp_path / "r", {"type": "file", "path": str(src)},
                 {"class": "MultiTargetRegressor", "params": {"seed": 0}},
                 schema={"features": [], "target": ["t", "p"], "event_id": "id", "key": "m",
                         "lags": 4, "lag_fields": ["t", "p"]})
    p, summary = run(raw)
    assert summary["dead_letters"] == 0 and summary["learned"] == 300 and summary["events_out"] == 300


@pytest.mark.parametrize("dtype", [object, "string"])
def test_text_that_looks_like_a_number_is_refused_in_frames_as_in_rows(dtype):
    """`learn_many` read a column of texts such as "1.5" as numbers (numpy parses them) where
    `learn_one` refuses text; a model trained that way then refused its own inputs in
    `predict_one`. Frames now refuse it as rows do, and register nothing."""
    import pandas as pd
    from streamnn.features import FeatureTypeError
    X = pd.DataFrame({"a": [1.0, 2.0], "c": pd.Series(["1.5", "2.5"], dtype=dtype)})
    for model in (streamnn.MLPClassifier(seed=0), streamnn.MLPRegressor(seed=0)):
        with pytest.raises(FeatureTypeError, match="feature 'c' is a str"):
            model.learn_one({"a": 1.0, "c": "1.5"}, 1)
        with pytest.raises(FeatureTypeError, match="feature 'c' is a str"):
            model.learn_many(X, pd.Series([1, 0]))
        assert model.features_.names == [] and model.n_seen_ == 0


def _learned(make, kind):
    X = pd.DataFrame({"a": [1.0, 2.0] * 40, "b": [0.0, 1.0] * 40})
    m = make()
    if kind == "detector":
        m.learn_many(X)
    elif kind == "multi":
        m.learn_many(X, pd.DataFrame({"t": [1.0, 0.0] * 40}))
    else:
        m.learn_many(X, pd.Series([True, False] * 40 if kind == "clf" else [1.0, 2.0] * 40))
    return m, X


FRAME_LEARNERS = [(lambda: streamnn.MLPClassifier(seed=0), "clf"), (lambda: streamnn.MLPRegressor(seed=0), "reg"),
                  (lambda: streamnn.MultiTargetRegressor(seed=0), "multi"),
                  (lambda: streamnn.MultiLabelClassifier(seed=0), "multi"),
                  (lambda: streamnn.LSTMClassifier(seed=0, hidden_size=4), "clf"),
                  (lambda: streamnn.LSTMRegressor(seed=0, hidden_size=4), "reg"),
                  (lambda: streamnn.AutoencoderDetector(seed=0), "detector")]


@pytest.mark.parametrize("make, kind", FRAME_LEARNERS)
def test_an_empty_frame_gets_empty_predictions(make, kind):
    """predict_many / predict_proba_many of an empty DataFrame raised 'cannot reshape array of
    size 0' (MLPClassifier) or 'need at least one array to stack' (multi-output learners)."""
    m, X = _learned(make, kind)
    for name in ("predict_many", "predict_proba_many", "score_many"):
        if hasattr(m, name):
            out = getattr(m, name)(X.iloc[:0])
            assert len(out) == 0 and len(getattr(m, name)(X.iloc[:3])) == 3


@pytest.mark.parametrize("make, kind", [f for f in FRAME_LEARNERS if f[1] != "detector"])
def test_learn_many_refuses_targets_or_weights_of_another_length(make, kind):
    """X of 2 rows with 1 target learned 1 row and dropped the other without a word."""
    m, X = _learned(make, kind)
    seen = m.n_seen_
    y = pd.DataFrame({"t": [1.0]}) if kind == "multi" else pd.Series([True] if kind == "clf" else [1.0])
    with pytest.raises(ValueError, match="X has 2 rows and y has 1"):
        m.learn_many(X.iloc[:2], y)
    y2 = pd.DataFrame({"t": [1.0, 0.0]}) if kind == "multi" else pd.Series([True, False] if kind == "clf" else [1.0, 2.0])
    with pytest.raises(ValueError, match="X has 2 rows and w has 3"):
        m.learn_many(X.iloc[:2], y2, pd.Series([1.0, 1.0, 1.0]))
    assert m.n_seen_ == seen

"""The stream runtime, in process: decoding, every bad-input class, the loop, delayed labels,
checkpoints and resume, determinism, multi-stream state, config validation, metrics, reports."""

import json
import math
import os
import urllib.request

import pytest
import torch

import streamnn
from streamnn.runtime.config import ConfigError, parse
from streamnn.runtime.loop import Runner
from streamnn.runtime.pipeline import Pipeline
from streamnn.runtime.records import NO_TARGET, DecodeError, Record
from streamnn.runtime.schema import Decoder
from streamnn.runtime.sinks import MemoryDeadLetterSink, MemorySink
from streamnn.runtime.sources import FileSource, Source
from streamnn.runtime.state import CheckpointStore
from test_runtime_helpers import LEARNER, assert_same_state, config, lines, run, write_stream

torch.set_num_threads(1)


def rec(value: bytes, offset=1):
    return Record(value, {"file": "s", "line": offset}, "s", offset)


# -- decoding ----------------------------------------------------------------------------------

BAD = [  # (payload, reason class)
    (b'{"id": "1", "a": 1.0, "y": 1.0, "pad": "' + b"x" * 300 + b'"}', "oversized"),
    (b"", "empty"),
    (b"   ", "empty"),
    (b'\xff\xfe{"a": 1}', "binary"),
    (b'{"id": "1", "a": 1.0, "y": 1.0', "not JSON"),
    (b"[1, 2, 3]", "not an object"),
    (b'{"a": 1.0, "y": 1.0}', "missing field"),                     # no event id
    (b'{"id": "1", "b": 1.0, "y": 1.0}', "missing field"),          # required feature a
    (b'{"id": "1", "a": "hot", "y": 1.0}', "wrong type"),           # feature
    (b'{"id": "1", "a": 1.0, "y": "high"}', "wrong type"),          # target
    (b'{"id": [1], "a": 1.0, "y": 1.0}', "wrong type"),             # event id
    (b'{"id": "1", "a": 1.0, "y": NaN}', "non-finite target"),
    (b'{"id": "1", "a": 1.0, "y": Infinity}', "non-finite target"),
    (b'{"id": "1", "a": 1.0, "y": -Infinity}', "non-finite target"),
]


@pytest.mark.parametrize("payload,cls", BAD)
def test_every_bad_input_class_is_named(payload, cls):
    dec = Decoder(features=["a", "b"], target="y", event_id="id", required=["a"], max_bytes=200)
    out = dec.decode(rec(payload))
    assert isinstance(out, DecodeError)
    assert out.reason.split(":")[0] == cls, out.reason


def test_good_records_decode_with_missing_features_allowed():
    dec = Decoder(features=["a", "b"], target="y", event_id="id")
    ev = dec.decode(rec(b'{"id": 3, "a": 1, "b": null, "extra": "ignored"}'))
    assert ev.x == {"a": 1} and ev.y is NO_TARGET and ev.event_id == 3 and not ev.has_target
    ev = dec.decode(rec(b'{"id": 3, "a": NaN, "y": 2}'))   # a NaN feature is missing, not bad
    assert math.isnan(ev.x["a"]) and ev.y == 2


def test_star_features_skip_reserved_and_non_numeric_fields():
    dec = Decoder(features="*", target="y", key="k", event_id="id", timestamp="ts")
    ev = dec.decode(rec(b'{"id": 1, "k": 5, "ts": 9, "a": 1.5, "b": true, "s": "x", "y": 0}'))
    assert ev.x == {"a": 1.5, "b": 1.0} and ev.key == 5 and ev.timestamp == 9


def test_csv_rows_multi_targets_and_labels():
    dec = Decoder(features="*", target=["t1", "t2"], format="csv", columns=["a", "t1", "t2", "name"])
    ev = dec.decode(rec(b'1.5,2,3,"x, y"'))
    assert ev.x == {"a": 1.5} and ev.y == {"t1": 2.0, "t2": 3.0}
    assert dec.decode(rec(b"1,2,,x")).reason.startswith("missing field: target 't2'")
    assert dec.decode(rec(b"1,2")).reason.startswith("bad CSV row")
    assert dec.decode(rec(b"1,nan,3,x")).reason.startswith("non-finite target")
    labels = Decoder(features="*", target="y", target_kind="label", format="csv", columns=["a", "y"])
    assert labels.decode(rec(b"1,1")).y == 1 and labels.decode(rec(b"1,spam")).y == "spam"


def test_file_source_positions_seek_and_follow(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("a,y\n1,2\n3,4\n5,6\n")
    src = FileSource(path)
    assert src.columns == ["a", "y"]
    assert [(r.offset, r.value) for r in src.poll(2)] == [(2, b"1,2"), (3, b"3,4")]
    src.seek(src.stream, 3)
    assert [r.position["line"] for r in src.poll(10)] == [3, 4] and src.exhausted
    live = FileSource(path, follow=True)
    assert len(live.poll(10)) == 3 and not live.exhausted
    with open(path, "a") as f:
        f.write("7,")
    assert live.poll(10) == []                       # a line still being written is held back
    with open(path, "a") as f:
        f.write("8\n")
    assert [r.value for r in live.poll(10)] == [b"7,8"]


# -- the loop ----------------------------------------------------------------------------------

def test_bad_input_never_stops_the_loop_and_is_never_lost(tmp_path):
    good = write_stream(tmp_path / "good.jsonl", n=40)
    path = tmp_path / "mixed.jsonl"
    payloads = [p for p, _ in BAD if b"\n" not in p and p.strip()]   # a blank line of a file is no record
    with open(path, "wb") as f:
        for i, r in enumerate(good):
            f.write(json.dumps(r).encode() + b"\n")
            if i < len(payloads):
                f.write(payloads[i] + b"\n")
    raw = config(tmp_path / "run", {"type": "file", "path": str(path)},
                 schema={"required": ["a"], "max_bytes": 200})
    p, summary = run(raw)
    outs = lines(tmp_path / "run" / "predictions.jsonl")
    dead = lines(tmp_path / "run" / "dead_letters.jsonl")
    assert len(outs) == 40 and summary["learned"] == 40
    assert len(dead) == len(payloads) == summary["dead_letters"]
    assert len(outs) + len(dead) == summary["events_in"] == 40 + len(payloads)
    classes = {cls for p, cls in BAD if p.strip()}
    assert {d["class"] for d in dead} == classes
    assert set(summary["dead_letters_by_class"]) == classes
    for d in dead:   # the position says where it was; the bytes are kept
        assert d["position"]["file"] == str(path) and d["position"]["line"] == d["offset"]
    assert any(d["encoding"] == "base64" for d in dead)


def test_outputs_carry_position_and_id_and_learn_exactly_like_learn_one(tmp_path):
    rows = write_stream(tmp_path / "s.jsonl", n=300)
    p, summary = run(config(tmp_path / "run", {"type": "file", "path": str(tmp_path / "s.jsonl")}))
    outs = lines(tmp_path / "run" / "predictions.jsonl")
    assert [o["id"] for o in outs] == [r["id"] for r in rows]
    assert [o["position"]["line"] for o in outs] == list(range(1, 301))
    ref = streamnn.MLPRegressor(**LEARNER["params"])
    for r in rows:
        ref.learn_one({k: r[k] for k in ("a", "b", "noise")}, r["y"])
    learner = p.runner.units[str(tmp_path / "s.jsonl")].learner
    assert_same_state(learner.state_dict()["module"], ref.state_dict()["module"])
    assert summary["prequential_loss"] < 1.0


def test_delayed_labels_are_learned_when_they_arrive(tmp_path):
    path = tmp_path / "delayed.jsonl"
    rows = write_stream(tmp_path / "base.jsonl", n=120)
    with open(path, "w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({k: r[k] for k in ("id", "a", "b", "noise")}) + "\n")   # features now
            if i >= 5:   # the label of the event 5 before arrives later, alone
                f.write(json.dumps({"id": rows[i - 5]["id"], "y": rows[i - 5]["y"]}) + "\n")
        f.write(json.dumps({"id": "nope", "y": 1.0}) + "\n")                       # unmatched
    p, summary = run(config(tmp_path / "run", {"type": "file", "path": str(path)}))
    outs = lines(tmp_path / "run" / "predictions.jsonl")
    assert len(outs) == 120 and all("y" not in o for o in outs)   # predicted only
    assert summary["learned"] == summary["delayed_matched"] == 115
    dead = lines(tmp_path / "run" / "dead_letters.jsonl")
    assert [d["class"] for d in dead] == ["unmatched label"]
    ref = streamnn.MLPRegressor(**LEARNER["params"])
    for r in rows[:115]:
        ref.learn_one({k: r[k] for k in ("a", "b", "noise")}, r["y"])
    learner = next(iter(p.runner.units.values())).learner
    assert_same_state(learner.state_dict()["module"], ref.state_dict()["module"])


def test_delayed_label_cache_is_bounded_and_checkpointed(tmp_path):
    path = tmp_path / "d.jsonl"
    with open(path, "w") as f:
        for i in range(30):
            f.write(json.dumps({"id": i, "a": float(i), "b": 0.0, "noise": 0.0}) + "\n")
        f.write(json.dumps({"id": 0, "y": 1.0}) + "\n")   # evicted: cache of 10
        f.write(json.dumps({"id": 29, "y": 1.0}) + "\n")
    raw = config(tmp_path / "run", {"type": "file", "path": str(path)}, run={"delayed_labels": 10})
    p, summary = run(raw)
    assert summary["delayed_matched"] == 1 and summary["dead_letters"] == 1
    ck = p.store.load(str(path))
    assert len(ck["runtime"]["delayed"]["items"]) == 9 and ck["runtime"]["delayed"]["expired"] == 20


def test_replay_is_deterministic_byte_for_byte(tmp_path):
    write_stream(tmp_path / "s.jsonl", n=250)
    with open(tmp_path / "s.jsonl", "a") as f:
        f.write("not json\n")
    outs = []
    for name in ("a", "b"):
        run(config(tmp_path / name, {"type": "file", "path": str(tmp_path / "s.jsonl")}))
        outs.append([(tmp_path / name / f).read_bytes() for f in ("predictions.jsonl", "dead_letters.jsonl")])
    assert outs[0] == outs[1] and len(outs[0][0]) > 1000


def test_resume_from_checkpoint_equals_an_uninterrupted_run(tmp_path):
    write_stream(tmp_path / "s.jsonl", n=500)
    src = {"type": "file", "path": str(tmp_path / "s.jsonl")}
    full, _ = run(config(tmp_path / "full", src))
    # three pieces, stopped at odd points (mid-checkpoint interval, not on a batch edge)
    for stop in (137, 311, None):
        part, _ = run(config(tmp_path / "parts", src), max_events=stop and stop - (0 if stop == 137 else 137))
    assert part.resumed
    a = next(iter(full.runner.units.values())).learner.state_dict()
    b = next(iter(part.runner.units.values())).learner.state_dict()
    assert_same_state(a, b)
    assert b["counters"]["n_seen"] == 500
    # outputs: every event once (a clean stop re-emits nothing); predictions match the
    # uninterrupted run wherever the batches do (they are made before the batch is learned)
    full_out, part_out = lines(tmp_path / "full" / "predictions.jsonl"), lines(tmp_path / "parts" / "predictions.jsonl")
    assert [o["id"] for o in part_out] == [o["id"] for o in full_out] == [f"e{i}" for i in range(500)]
    assert part_out[:100] == full_out[:100]


def test_torn_last_output_line_is_cut_on_resume(tmp_path):
    write_stream(tmp_path / "s.jsonl", n=100)
    src = {"type": "file", "path": str(tmp_path / "s.jsonl")}
    run(config(tmp_path / "r", src), max_events=50)
    with open(tmp_path / "r" / "predictions.jsonl", "a") as f:
        f.write('{"id": "e50", "posi')                       # a crash in the middle of a write
    run(config(tmp_path / "r", src))
    outs = lines(tmp_path / "r" / "predictions.jsonl")       # every line parses
    assert [o["id"] for o in outs] == [f"e{i}" for i in range(100)]


def test_checkpoint_refuses_a_learner_with_other_parameters(tmp_path):
    write_stream(tmp_path / "s.jsonl", n=60)
    src = {"type": "file", "path": str(tmp_path / "s.jsonl")}
    run(config(tmp_path / "r", src), max_events=30)
    other = {"class": "MLPRegressor", "params": {**LEARNER["params"], "hidden": [16]}}
    with pytest.raises(ValueError, match="hidden: checkpoint"):
        run(config(tmp_path / "r", src, learner=other))


class TwoStreams(Source):
    """A fake partitioned source: two streams of records, with a rebalance hook."""

    def __init__(self, rows):
        super().__init__()
        self.data = {s: [json.dumps(r).encode() for r in rows[i::2]] for i, s in enumerate(("t:0", "t:1"))}
        self.next = {s: 0 for s in self.data}
        self.owned = set(self.data)
        self.commits = []

    def assigned(self):
        return set(self.owned)

    def seek(self, stream, next_offset):
        self.next[stream] = next_offset

    def poll(self, max_records, timeout_s=0.0):
        out = []
        for s in sorted(self.owned):
            for off in range(self.next[s], min(self.next[s] + max_records // 2, len(self.data[s]))):
                out.append(Record(self.data[s][off], {"topic": "t", "partition": int(s[-1]), "offset": off}, s, off))
            self.next[s] += len([r for r in out if r.stream == s])
        return out

    @property
    def exhausted(self):
        return all(self.next[s] >= len(self.data[s]) for s in self.owned)

    def commit(self, offsets):
        self.commits.append(dict(offsets))

    def revoke(self, streams):
        for cb in self._revoke_cbs:
            cb(set(streams))
        self.owned -= set(streams)

    def assign(self, streams):
        self.owned |= set(streams)
        for cb in self._assign_cbs:
            cb(set(streams))


def _runner(source, folder, **kw):
    dec = Decoder(features=["a", "b", "noise"], target="y", event_id="id")
    return Runner(source, dec, lambda: streamnn.MLPRegressor(**LEARNER["params"]), [MemorySink()],
                  MemoryDeadLetterSink(), CheckpointStore(folder), batch_size=40, checkpoint_every=60, **kw)


def test_state_follows_streams_through_a_rebalance(tmp_path):
    rows = write_stream(tmp_path / "s.jsonl", n=400)
    src = TwoStreams(rows)
    r = _runner(src, tmp_path / "ck", max_events=100)
    r.run()
    assert sorted(os.listdir(tmp_path / "ck")) == sorted(CheckpointStore(tmp_path).path(s).rsplit("/", 1)[1]
                                                         for s in ("t:0", "t:1"))
    assert src.commits and src.commits[-1] == {"t:0": 50, "t:1": 50}
    # another consumer takes over t:1 mid-stream: revoke checkpoints it, assign resumes it
    src = TwoStreams(rows)             # a new consumer process
    r2 = _runner(src, tmp_path / "ck")
    r2.start()
    assert src.next == {"t:0": 50, "t:1": 50}
    r2.process(src.poll(40))
    src.revoke({"t:1"})
    assert "t:1" not in r2.units and CheckpointStore(tmp_path / "ck").load("t:1")["offsets"] == {"t:1": 70}
    src.assign({"t:1"})
    assert src.next["t:1"] == 70
    r2.run()
    ref = streamnn.MLPRegressor(**LEARNER["params"])
    for row in rows[1::2]:
        ref.learn_one({k: row[k] for k in ("a", "b", "noise")}, row["y"])
    assert_same_state(r2.units["t:1"].learner.state_dict()["module"], ref.state_dict()["module"])
    assert r2.units["t:0"].learner.n_seen_ == r2.units["t:1"].learner.n_seen_ == 200


def test_redelivered_records_are_not_learned_twice(tmp_path):
    rows = write_stream(tmp_path / "s.jsonl", n=100)
    src = TwoStreams(rows)
    r = _runner(src, tmp_path / "ck", state_per="global")
    r.run()
    src.next = {"t:0": 10, "t:1": 0}   # an at-least-once source sends some again
    r.process(src.poll(1000))
    assert r.units["global"].learner.n_seen_ == 100 and r.totals()["skipped"] == 90


# -- config ------------------------------------------------------------------------------------

@pytest.mark.parametrize("patch,message", [
    ({"sourc": {}}, "unknown key 'sourc'; did you mean 'source'?"),
    ({"run": {"batch_size": "10"}}, "[run] batch_size: got '10' (str); expected int"),
    ({"run": {"state_per": "partition"}}, "[run] state_per: 'partition' is not valid"),
    ({"learner": {"class": "Nope"}}, "[learner] class: 'Nope' is not a streamnn learner; use one of"),
    ({"learner": {"class": "MLPRegressor", "params": {"lr": -1, "optimizer": "adamm"}}}, "optimizer='adamm'"),
    ({"schema": {"features": ["a"], "target": None}}, "[schema] target is missing"),
    ({"source": {"type": "ftp"}}, "[source] type: 'ftp' is not valid; use one of"),
    ({"checkpoint": {"every_events": 0}}, "[checkpoint] every_events: must be at least 1"),
    ({"anomaly": {"threshold": "high"}}, "[anomaly] threshold: 'high'"),
])
def test_invalid_configs_name_the_field_and_the_fix(tmp_path, patch, message):
    raw = config(tmp_path, {"type": "file", "path": "x.jsonl"})
    for k, v in patch.items():
        raw[k] = {**raw.get(k, {}), **v} if k in ("run", "checkpoint", "schema", "anomaly") else v
    with pytest.raises(ConfigError) as e:
        parse(raw)
    assert message in str(e.value)


def test_bundled_pipelines_are_valid():
    from streamnn.runtime.config import load_config

    folder = os.path.join(os.path.dirname(__file__), "..", "pipelines")
    names = sorted(f for f in os.listdir(folder) if f.endswith(".toml"))
    assert {"sensor_anomaly.toml", "sensor_forecast.toml", "phishing_classification.toml"} <= set(names)
    for name in names:
        cfg = load_config(os.path.join(folder, name))
        assert cfg.name == name[:-5]


# -- tasks, metrics, reports ------------------------------------------------------------------

def test_classification_multi_target_and_anomaly_pipelines(tmp_path):
    write_stream(tmp_path / "c.jsonl", n=200, classes=True)
    src = {"type": "file", "path": str(tmp_path / "c.jsonl")}
    _, s = run(config(tmp_path / "c", src, learner={"class": "MLPClassifier", "params": {"seed": 0}}))
    assert s["task"] == "classification" and s["accuracy"] > 0.6
    out = lines(tmp_path / "c" / "predictions.jsonl")[-1]
    assert isinstance(out["prediction"], bool) and 0.5 <= out["proba"] <= 1.0
    if hasattr(streamnn, "MultiTargetRegressor") or _has("multioutput", "MultiTargetRegressor"):
        _, s = run(config(tmp_path / "m", src, learner={"class": "MultiTargetRegressor", "params": {"seed": 0}},
                          schema={"features": ["noise"], "target": ["a", "b"], "lags": 2, "lag_fields": ["a"]}))
        out = lines(tmp_path / "m" / "predictions.jsonl")[-1]
        assert s["task"] == "multi_target" and set(out["prediction"]) == {"a", "b"}
    if _has("anomaly", "AutoencoderDetector"):
        _, s = run(config(tmp_path / "a", src, learner={"class": "AutoencoderDetector",
                                                         "params": {"window": 1, "seed": 0}}))
        out = lines(tmp_path / "a" / "predictions.jsonl")[-1]
        assert s["task"] == "anomaly" and {"score", "anomaly", "threshold", "label"} <= set(out)


def _has(module, name):
    import importlib

    try:
        return hasattr(importlib.import_module(f"streamnn.{module}"), name)
    except ImportError:
        return False


def test_prometheus_endpoint_serves_the_run_metrics(tmp_path):
    write_stream(tmp_path / "s.jsonl", n=200)
    with open(tmp_path / "s.jsonl", "a") as f:
        f.write("{broken\n")
    p, _ = run(config(tmp_path / "r", {"type": "file", "path": str(tmp_path / "s.jsonl")}), port=0)
    # the server is shut at the end of the run; scrape the registry it served instead
    from prometheus_client import generate_latest

    text = generate_latest(p.metrics.registry).decode()
    for name in ("streamnn_events_in_total 201.0", "streamnn_events_out_total 200.0",
                 'streamnn_dead_letters_total{reason="not JSON"} 1.0', "streamnn_prequential_loss",
                 "streamnn_post_update_loss", "streamnn_learning_rate", "streamnn_learn_seconds_bucket",
                 "streamnn_predict_seconds_count", "streamnn_checkpoint_age_seconds"):
        assert name in text, name


def test_prometheus_http_server_while_running(tmp_path):
    from streamnn.runtime.metrics import RunMetrics

    m = RunMetrics(port=0)
    m.dead_letter("empty")
    body = urllib.request.urlopen(f"http://127.0.0.1:{m.port_}/metrics", timeout=5).read().decode()
    assert 'streamnn_dead_letters_total{reason="empty"} 1.0' in body
    m._server.shutdown()


def test_report_renders_pngs(tmp_path):
    from streamnn.runtime.report import write_report

    write_stream(tmp_path / "s.jsonl", n=300, classes=True)
    src = {"type": "file", "path": str(tmp_path / "s.jsonl")}
    run(config(tmp_path / "r", src, learner={"class": "MLPClassifier", "params": {"seed": 0}}))
    files = write_report(tmp_path / "r")
    names = {os.path.basename(f) for f in files}
    assert {"prequential.png", "lr.png", "throughput.png", "index.md"} <= names
    for f in files:
        if f.endswith(".png"):
            data = open(f, "rb").read()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    if _has("anomaly", "AutoencoderDetector"):
        run(config(tmp_path / "a", src, learner={"class": "AutoencoderDetector", "params": {"window": 4, "seed": 0}},
                   report={"on_exit": True}))
        assert os.path.getsize(tmp_path / "a" / "report" / "scores.png") > 5000


def test_an_error_mid_batch_leaves_the_last_good_checkpoint(tmp_path):
    write_stream(tmp_path / "s.jsonl", n=300)
    src = {"type": "file", "path": str(tmp_path / "s.jsonl")}
    p = Pipeline(parse(config(tmp_path / "r", src)))
    learn = p.runner.make_learner

    def flaky():
        learner = learn()
        original = learner.learn_many

        def learn_many(X, y):
            if learner.n_seen_ >= 150:
                raise RuntimeError("disk on fire")
            original(X, y)
        learner.learn_many = learn_many
        return learner
    p.runner.make_learner = flaky
    with pytest.raises(RuntimeError):
        p.run()
    assert p.store.load(str(tmp_path / "s.jsonl"))["offsets"] == {str(tmp_path / "s.jsonl"): 101}
    _, summary = run(config(tmp_path / "r", src))     # a restart learns each event once
    assert summary["learned"] == 300


def test_events_without_features_or_targets(tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text('{"y": 1.0}\n{"a": 1.0}\n{}\n' * 20)
    raw = config(tmp_path / "r", {"type": "file", "path": str(path)}, schema={"event_id": None})
    _, summary = run(raw)
    assert summary["events_out"] == 60 and summary["dead_letters"] == 0


def test_blank_lines_of_a_file_are_no_records(tmp_path):
    """A blank line (a gap between records, a trailing newline) was a dead letter ("empty")."""
    (tmp_path / "s.jsonl").write_text('{"id": "e0", "a": 1, "b": 2, "noise": 0, "y": 1}\n\n  \n'
                                      '{"id": "e1", "a": 2, "b": 1, "noise": 0, "y": 3}\n\r\n\n')
    (tmp_path / "s.csv").write_text("id,a,b,noise,y\ne0,1,2,0,1\n\ne1,2,1,0,3\n \n")
    for name in ("s.jsonl", "s.csv"):
        _, s = run(config(tmp_path / name.replace(".", "_"), {"type": "file", "path": str(tmp_path / name)}))
        assert s["events_in"] == 2 and s["dead_letters"] == 0, s
        out = lines(tmp_path / name.replace(".", "_") / "predictions.jsonl")
        assert [o["position"]["line"] for o in out] == ([1, 4] if name.endswith("jsonl") else [2, 4])

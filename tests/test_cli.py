"""The `streamnn` command line, as a subprocess (and in process where that is enough)."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from streamnn.runtime.cli import main
from test_runtime_helpers import write_stream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def streamnn_cli(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "streamnn.runtime.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _has_detector() -> bool:
    try:
        from streamnn.anomaly import AutoencoderDetector  # noqa: F401
    except ImportError:
        return False
    return True


CONFIG = """
name = "cli"
[source]
type = "file"
path = "unused.jsonl"
[schema]
features = ["a", "b", "noise"]
target = "y"
event_id = "id"
[learner]
class = "MLPClassifier"
[learner.params]
hidden = [8]
seed = 0
[run]
batch_size = 64
[checkpoint]
every_events = 100
[metrics]
every = 50
"""


@pytest.fixture
def setup(tmp_path):
    write_stream(tmp_path / "s.jsonl", n=400, classes=True)
    with open(tmp_path / "s.jsonl", "a") as f:
        f.write('{"id": "bad", "a": "x"}\n')
    cfg = tmp_path / "cli.toml"
    cfg.write_text(CONFIG)
    return tmp_path, cfg


def test_invalid_config_exits_2_naming_the_field(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(CONFIG.replace("batch_size = 64", "batch_sise = 64"))
    res = streamnn_cli("check", str(cfg))
    assert res.returncode == 2
    assert "[run] unknown key 'batch_sise'; did you mean 'batch_size'?" in res.stderr


@pytest.mark.slow
def test_replay_is_byte_identical_and_writes_a_report(setup):
    tmp, cfg = setup
    outs = []
    for name in ("one", "two"):
        res = streamnn_cli("replay", str(tmp / "s.jsonl"), "--config", str(cfg), "--out", str(tmp / name))
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["events_in"] == 401
        outs.append([(tmp / name / f).read_bytes() for f in ("predictions.jsonl", "dead_letters.jsonl")])
    assert outs[0] == outs[1] and outs[0][1].count(b"\n") == 1
    assert {"prequential.png", "lr.png", "throughput.png"} <= set(os.listdir(tmp / "one" / "report"))


@pytest.mark.slow
def test_inspect_report_and_check_in_process(setup, capsys):
    tmp, cfg = setup
    assert main(["replay", str(tmp / "s.jsonl"), "--config", str(cfg), "--out", str(tmp / "r"),
                 "--no-report", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(tmp / "r" / "checkpoints"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["offsets"] == {str(tmp / "s.jsonl"): 402}
    assert info["learner_state"]["n_seen"] == 400
    assert sorted(info["learner_state"]["classes"]) == [False, True]
    assert info["counters"]["dead_letters"] == 1
    assert main(["report", str(tmp / "r")]) == 0
    assert os.path.exists(tmp / "r" / "report" / "prequential.png")
    assert main(["inspect", str(tmp / "r" / "checkpoints")]) == 0
    text = capsys.readouterr().out
    assert f"{tmp / 's.jsonl'}: next offset 402" in text and "MLPClassifier" in text
    assert main(["inspect", str(tmp / "r")]) == 0          # the run folder: its checkpoints/
    again = capsys.readouterr().out
    assert "next offset 402" in again and text.endswith(again)
    assert main(["check", str(cfg)]) == 2   # its source file (unused by replay) does not exist
    assert "[source] path = 'unused.jsonl': no such file" in capsys.readouterr().err
    cfg.write_text(CONFIG.replace("unused.jsonl", str(tmp / "s.jsonl")))
    assert main(["check", str(cfg)]) == 0
    assert main(["report", str(tmp / "nothing")]) == 1


@pytest.mark.slow
@pytest.mark.skipif(not _has_detector(), reason="streamnn.anomaly.AutoencoderDetector is not there yet")
def test_main_job_runs_the_bundled_pipeline_in_under_a_minute(tmp_path):
    t0 = time.monotonic()
    res = streamnn_cli("run", "pipelines/sensor_anomaly.toml", "--run-dir", str(tmp_path / "demo"), "--fresh")
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    assert elapsed < 60, f"the main job took {elapsed:.1f} s"
    d = tmp_path / "demo"
    assert sum(1 for _ in open(d / "predictions.jsonl")) == 8581
    assert os.listdir(d / "checkpoints") and os.path.exists(d / "metrics.json")
    assert {"prequential.png", "lr.png", "throughput.png", "scores.png"} <= set(os.listdir(d / "report"))
    logs = [json.loads(line) for line in res.stderr.splitlines()]   # not a terminal: JSON logs
    assert logs[0]["event"] == "start" and logs[-1]["event"] == "done"


# -- no silent failure at the command line (issue 16) ------------------------------------------

def test_version_and_help_for_every_argument(capsys):
    import argparse

    from streamnn import __version__
    from streamnn.runtime.cli import _parser

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"streamnn {__version__}"
    p = _parser()
    subs = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {a.dest}" for name, sp in subs.choices.items() for a in sp._actions
               if not isinstance(a, argparse._HelpAction) and not a.help]
    assert missing == []
    assert subs.help and all(a.help for a in subs._choices_actions)


def _saved_learner(path):
    import streamnn

    model = streamnn.MLPClassifier(hidden=(32,), seed=0)
    for i in range(40):
        model.learn_one({"x": float(i)}, "ab"[i % 2])
    model.save(path)


def test_inspect_a_learner_file_prints_plain_values(tmp_path, capsys):
    path = str(tmp_path / "model.pt")
    _saved_learner(path)
    assert main(["inspect", path]) == 0
    text = capsys.readouterr().out
    assert "__tuple__" not in text and "saved ?" not in text and "None samples" not in text
    assert "hidden=[32]" in text and "learner file" in text and "40 samples learned" in text
    assert main(["inspect", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"]["hidden"] == [32] and info["saved_at"].startswith("20")


def test_inspect_ignores_stray_temp_files_and_refuses_foreign_files(tmp_path, capsys):
    folder = tmp_path / "ck"
    folder.mkdir()
    _saved_learner(str(folder / "a.pt"))
    (folder / ".tmp-k2j4.pt").write_bytes(b"PK\x03\x04 half a checkpoint")   # a kill mid-write
    assert main(["inspect", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["file"].endswith("a.pt")
    for name, data in (("some.csv", b"a,b\n1,2\n"), ("empty.pt", b""), ("junk.pt", os.urandom(300))):
        (tmp_path / name).write_bytes(data)
        assert main(["inspect", str(tmp_path / name)]) == 1
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and name in lines[0] and captured.out == "", captured
        assert "weights_only" not in lines[0] and "Traceback" not in lines[0]


@pytest.mark.parametrize("command", ["produce", "record"])
def test_kafka_tools_without_a_broker_fail_fast_naming_the_fix(tmp_path, capsys, command):
    data = tmp_path / "s.jsonl"
    data.write_text('{"a": 1}\n')
    args = [str(data), "t"] if command == "produce" else ["t", str(tmp_path / "out.jsonl")]
    t0 = time.monotonic()
    assert main([command, *args, "--bootstrap", "127.0.0.1:1"]) == 1
    assert time.monotonic() - t0 < 5
    err = capsys.readouterr().err
    assert "no Kafka broker at 127.0.0.1:1" in err and "bash scripts/kafka.sh start" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_inspect_into_a_closed_pipe_exits_quietly(tmp_path):
    path = str(tmp_path / "model.pt")
    _saved_learner(path)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "streamnn", "inspect", path, "--json"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()   # like `| head` that has exited: the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0
    assert err == ""


@pytest.mark.slow
def test_run_without_a_broker_logs_json_retries(tmp_path):
    import signal

    cfg = tmp_path / "k.toml"
    cfg.write_text(f"""
name = "k"
[source]
type = "kafka"
topics = ["t"]
bootstrap = "127.0.0.1:1"
[schema]
features = ["a"]
target = "y"
[learner]
class = "MLPRegressor"
[run]
dir = "{tmp_path / 'run'}"
[report]
on_exit = false
""")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "streamnn", "run", str(cfg), "--quiet"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:   # until the runtime's own retry warning
        lines.append(line)
        if "unreachable" in line:
            break
    proc.send_signal(signal.SIGTERM)
    out, rest = proc.communicate(timeout=120)
    lines += rest.splitlines()
    logs = [json.loads(line) for line in lines if line.strip()]   # every line is JSON
    retry = [r for r in logs if r["event"] == "log" and "unreachable" in r["message"]]
    assert retry and retry[0]["level"] == "warning" and "scripts/kafka.sh start" in retry[0]["fix"]
    messages = [r["message"] for r in logs if r["event"] == "log"]
    assert len(messages) == len(set(messages)), "a repeated client error is logged once"
    assert proc.returncode == 0


def _warnings(err: str) -> list:
    return [r for r in map(json.loads, err.strip().splitlines()) if r["event"] == "warning"]


@pytest.mark.parametrize("strict", [False, True])
def test_a_misspelled_feature_is_a_loud_warning(tmp_path, capsys, strict):
    write_stream(tmp_path / "s.jsonl", n=300, classes=True)
    cfg = tmp_path / "cli.toml"
    cfg.write_text(CONFIG.replace('["a", "b", "noise"]', '["a", "bb", "noise"]')
                   .replace("unused.jsonl", str(tmp_path / "s.jsonl"))
                   .replace("[run]", f'[run]\ndir = "{tmp_path / "run"}"\nfeature_check_events = 100'))
    code = main(["run", str(cfg), "--quiet", "--no-report"] + (["--strict"] if strict else []))
    out, err = capsys.readouterr()
    warned = _warnings(err)
    assert [(w["kind"], w["feature"], w["closest"]) for w in warned] == [("missing_feature", "bb", "b")]
    assert warned[0]["missing"] == 100 and "did you mean 'b'?" in warned[0]["fix"]
    metrics = json.load(open(tmp_path / "run" / "metrics.json"))
    assert metrics["warnings"][0]["feature"] == "bb"
    assert main(["check", str(cfg)] + (["--strict"] if strict else [])) == (1 if strict else 0)
    assert "warning: feature 'bb' is missing in 100 of the first 100 records" in capsys.readouterr().err
    if strict:
        failed = [r for r in map(json.loads, err.strip().splitlines()) if r["event"] == "failed"]
        assert code == 1 and failed[0]["reason"].startswith("strict run stopped: feature 'bb' is missing")
        assert metrics["events_in"] < 300    # stopped early
    else:
        assert code == 0 and json.loads(out)["warnings"] and metrics["events_in"] == 300


@pytest.mark.parametrize("strict", [False, True])
def test_a_run_of_dead_letters_says_so(tmp_path, capsys, strict):
    with open(tmp_path / "s.jsonl", "w") as f:
        for i in range(200):
            f.write(json.dumps({"id": i, "a": "text", "b": 1.0, "noise": 0.0, "y": True}) + "\n")
    cfg = tmp_path / "cli.toml"
    cfg.write_text(CONFIG.replace("unused.jsonl", str(tmp_path / "s.jsonl"))
                   .replace("[run]", f'[run]\ndir = "{tmp_path / "run"}"'))
    code = main(["run", str(cfg), "--quiet", "--no-report"] + (["--strict"] if strict else []))
    out, err = capsys.readouterr()
    warned = _warnings(err)
    assert [w["kind"] for w in warned] == ["dead_letters"] and warned[0]["dead_letters"] == 200
    assert code == (1 if strict else 0)
    assert json.load(open(tmp_path / "run" / "metrics.json"))["warnings"][0]["kind"] == "dead_letters"


@pytest.mark.parametrize("key, warned_key", [("uid", "uid"), ("sensor", None)])
def test_a_key_that_is_new_on_every_record_is_a_loud_warning(tmp_path, capsys, key, warned_key):
    """A sequence learner keyed by a per-event field learns each 'series' of one event: a warning
    naming the key (and not for a key that repeats)."""
    rng = np.random.default_rng(0)
    with open(tmp_path / "s.jsonl", "w") as f:
        for i in range(300):
            f.write(json.dumps({"id": i, "uid": 1000 + i, "sensor": i % 4, "a": float(rng.normal()),
                                "y": float(rng.normal())}) + "\n")
    cfg = tmp_path / "cli.toml"
    cfg.write_text(CONFIG.replace('["a", "b", "noise"]', f'["{key}", "a"]')
                   .replace('class = "MLPClassifier"', 'class = "LSTMRegressor"')
                   .replace("hidden = [8]", f'hidden_size = 4\nkey = "{key}"')
                   .replace("unused.jsonl", str(tmp_path / "s.jsonl"))
                   .replace("[run]", f'[run]\ndir = "{tmp_path / "run"}"\nfeature_check_events = 100'))
    code = main(["run", str(cfg), "--quiet", "--no-report"])
    out, err = capsys.readouterr()
    warned = [(w["kind"], w["key"], w["new_values"]) for w in _warnings(err)]
    assert code == 0
    assert warned == ([("unique_key", warned_key, 100)] if warned_key else [])
    assert main(["check", str(cfg), "--strict"]) == (1 if warned_key else 0)
    if warned_key:
        assert f"warning: key {warned_key!r} took a new value on 100 of the first 100" in capsys.readouterr().err


@pytest.mark.parametrize("target, warned", [("yy", True), ("y", False)])
def test_a_misspelled_target_is_a_loud_warning(tmp_path, capsys, target, warned):
    """`target = "yy"` for a field `y`: every record was predicted and none learned, silently."""
    write_stream(tmp_path / "s.jsonl", n=300, classes=True)
    cfg = tmp_path / "cli.toml"
    cfg.write_text(CONFIG.replace('target = "y"', f'target = "{target}"')
                   .replace("unused.jsonl", str(tmp_path / "s.jsonl"))
                   .replace("[run]", f'[run]\ndir = "{tmp_path / "run"}"\nfeature_check_events = 100'))
    code = main(["run", str(cfg), "--quiet", "--no-report"])
    out, err = capsys.readouterr()
    got = [(w["kind"], w["target"], w["closest"]) for w in _warnings(err)]
    assert code == 0 and got == ([("missing_target", "yy", "y")] if warned else [])
    assert json.loads(out)["events_in"] == 300
    assert main(["check", str(cfg), "--strict"]) == (1 if warned else 0)


def test_a_detector_without_labels_is_not_warned_about_its_target(tmp_path, capsys):
    """A detector's target is ground truth for reports (often absent in production): no warning."""
    write_stream(tmp_path / "s.jsonl", n=300)
    cfg = tmp_path / "cli.toml"
    cfg.write_text(CONFIG.replace('target = "y"', 'target = "label"').replace('class = "MLPClassifier"',
                                                                            'class = "AutoencoderDetector"')
                   .replace("hidden = [8]\n", "")
                   .replace("unused.jsonl", str(tmp_path / "s.jsonl"))
                   .replace("[run]", f'[run]\ndir = "{tmp_path / "run"}"\nfeature_check_events = 100'))
    assert main(["run", str(cfg), "--quiet", "--no-report"]) == 0
    assert _warnings(capsys.readouterr().err) == []


def test_inspect_a_saved_forecaster_shows_what_it_learned(tmp_path, capsys):
    """A series forecaster keeps its counters at the top of its state: inspect printed "None
    samples learned, None updates, lr None" and "features None" for one that had learned 30 values."""
    import streamnn
    for cls in (streamnn.MLPForecaster, streamnn.LSTMForecaster):
        model = cls(seed=0)
        for i in range(30):
            model.learn_one(float(i % 7))
        path = str(tmp_path / f"{cls.__name__}.pt")
        model.save(path)
        assert main(["inspect", path]) == 0
        text = capsys.readouterr().out
        assert "30 samples learned" in text and "None" not in text, text


@pytest.mark.parametrize("role, field, warned", [("timestamp", "tss", True), ("timestamp", "ts", False),
                                                 ("key", "sensr", True), ("key", "sensor", False),
                                                 ("lag", "nois", True), ("lag", "noise", False)])
def test_a_timestamp_or_key_field_that_never_comes_is_a_loud_warning(tmp_path, capsys, role, field, warned):
    """`timestamp = "tss"` (or a key, or a lag field) for a field the records do not have: outputs
    without event times, one series for all, lags always missing, silently."""
    with open(tmp_path / "s.jsonl", "w") as f:
        for i in range(300):
            f.write(json.dumps({"id": i, "ts": 1_700_000_000 + i, "sensor": i % 4, "a": i % 7 / 7, "b": 0.5,
                                "noise": 0.0, "y": i % 2 == 0}) + "\n")
    cfg = tmp_path / "cli.toml"
    line = f'lags = 2\nlag_fields = ["{field}"]' if role == "lag" else f'{role} = "{field}"'
    cfg.write_text(CONFIG.replace('event_id = "id"', f'event_id = "id"\n{line}')
                   .replace("unused.jsonl", str(tmp_path / "s.jsonl"))
                   .replace("[run]", f'[run]\ndir = "{tmp_path / "run"}"\nfeature_check_events = 100'))
    code = main(["run", str(cfg), "--quiet", "--no-report"])
    out, err = capsys.readouterr()
    got = [(w["kind"], w["role"], w["field"], w["closest"]) for w in _warnings(err)]
    right = {"timestamp": "ts", "key": "sensor", "lag": "noise"}[role]
    assert code == 0 and got == ([("missing_field", role, field, right)] if warned else [])
    assert json.loads(out)["events_in"] == 300
    assert main(["check", str(cfg), "--strict"]) == (1 if warned else 0)


def test_check_reads_the_first_records_as_run_would_and_names_the_dead_letters(tmp_path, capsys):
    """`check` said ok for a config whose every record `run` would dead-letter: all-text fields
    with `features = "*"` (each record then reads as a label that waits for its event), or a
    feature sent as text."""
    with open(tmp_path / "s.jsonl", "w") as f:
        for i in range(300):
            f.write(json.dumps({"id": i, "color": ["red", "green"][i % 2], "size": "M", "y": i % 2 == 0}) + "\n")
    cfg = tmp_path / "cli.toml"
    cfg.write_text(CONFIG.replace('["a", "b", "noise"]', '"*"').replace("unused.jsonl", str(tmp_path / "s.jsonl"))
                   .replace("[run]", f'[run]\ndir = "{tmp_path / "run"}"\nfeature_check_events = 100'))
    assert main(["check", str(cfg), "--strict"]) == 1
    err = capsys.readouterr().err
    assert "100 of the first 100 records would go to the dead letters" in err
    assert "unmatched label: no event with id 0" in err and "('color', 'size') are not numbers" in err
    assert main(["run", str(cfg), "--quiet", "--no-report"]) == 0
    capsys.readouterr()
    dead = [json.loads(line) for line in open(tmp_path / "run" / "dead_letters.jsonl")]
    assert len(dead) == 300 and "are not numbers, so it has no features" in dead[0]["reason"]
    with open(tmp_path / "s.jsonl", "w") as f:   # a listed feature sent as text in a third of the records
        for i in range(300):
            f.write(json.dumps({"id": i, "a": "hot" if i % 3 == 0 else 0.5, "b": 1.0, "noise": 0.0, "y": True}) + "\n")
    cfg.write_text(cfg.read_text().replace('"*"', '["a", "b", "noise"]'))
    assert main(["check", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert "34 of the first 100 records would go to the dead letters" in err and "wrong type: feature 'a'" in err

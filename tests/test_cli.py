"""The `streamnn` command line, as a subprocess (and in process where that is enough)."""

import json
import os
import subprocess
import sys
import time

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

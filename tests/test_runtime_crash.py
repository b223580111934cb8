"""Crash safety with real processes: SIGKILL mid-stream, then a restart, ends in exactly the
state of an uninterrupted run; SIGTERM finishes the batch, checkpoints and exits 0."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from streamnn.checkpoint import load_checkpoint
from streamnn.runtime.state import CheckpointStore
from test_runtime_helpers import LEARNER, assert_same_state, config, lines, run, write_stream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 1500

pytestmark = pytest.mark.slow


def _toml(value) -> str:
    return json.dumps(value)   # JSON strings, numbers, booleans and arrays are valid TOML


def write_config(path, data, run_dir):
    p = LEARNER["params"]
    text = f"""
name = "crash"
[source]
type = "file"
path = {_toml(str(data))}
[schema]
features = ["a", "b", "noise"]
target = "y"
event_id = "id"
[learner]
class = "MLPRegressor"
[learner.params]
{chr(10).join(f"{k} = {_toml(v)}" for k, v in p.items())}
[run]
dir = {_toml(str(run_dir))}
batch_size = 50
[checkpoint]
every_events = 200
[report]
on_exit = false
"""
    path.write_text(text)
    return path


def cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "streamnn.runtime.cli", *args, "--quiet"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


def wait_for(cond, timeout=120):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.02)


def n_lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crash")
    write_stream(tmp / "s.jsonl", n=N)
    ref, _ = run(config(tmp / "ref", {"type": "file", "path": str(tmp / "s.jsonl")},
                        checkpoint={"every_events": 200}))
    return tmp, ref


def final_state(run_dir, data):
    return CheckpointStore(run_dir / "checkpoints").load(str(data))


def test_sigkill_mid_stream_then_restart_equals_an_uninterrupted_run(stream):
    tmp, ref = stream
    data, run_dir = tmp / "s.jsonl", tmp / "killed"
    cfg = write_config(tmp / "killed.toml", data, run_dir)
    ck_path = CheckpointStore(run_dir / "checkpoints").path(str(data))
    proc = cli("run", str(cfg), "--rate", "600")
    wait_for(lambda: os.path.exists(ck_path) and n_lines(run_dir / "predictions.jsonl") >= 700
             or proc.poll() is not None)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    at_kill = load_checkpoint(ck_path)["offsets"][str(data)]
    assert 200 < at_kill <= N, "killed mid-stream, after a checkpoint"
    emitted = n_lines(run_dir / "predictions.jsonl")
    assert emitted >= at_kill - 1

    again = cli("run", str(cfg))
    assert again.wait(timeout=300) == 0, again.stderr.read().decode()
    # the model: exactly the uninterrupted run's state (every event learned once)
    got, want = final_state(run_dir, data), final_state(tmp / "ref", data)
    assert got["offsets"] == want["offsets"] == {str(data): N + 1}
    assert got["state"]["counters"]["n_seen"] == N
    assert_same_state(got["state"], want["state"])
    # the outputs: at least once; the repeats are the events after the checkpoint, same position
    outs = lines(run_dir / "predictions.jsonl")
    assert len(outs) == N + (emitted - (at_kill - 1))
    last = {o["position"]["line"]: o for o in outs}
    assert sorted(last) == list(range(1, N + 1))
    assert [last[i] for i in range(1, N + 1)] == lines(tmp / "ref" / "predictions.jsonl")


def test_sigterm_finishes_the_batch_checkpoints_and_exits_0(stream):
    tmp, ref = stream
    data, run_dir = tmp / "s.jsonl", tmp / "stopped"
    cfg = write_config(tmp / "stopped.toml", data, run_dir)
    proc = cli("run", str(cfg), "--rate", "600")
    wait_for(lambda: n_lines(run_dir / "predictions.jsonl") >= 300 or proc.poll() is not None)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert b'"event": "stopping"' in proc.stderr.read()
    stopped_at = final_state(run_dir, data)["offsets"][str(data)]
    assert stopped_at - 1 == n_lines(run_dir / "predictions.jsonl") < N   # nothing emitted past it
    again = cli("run", str(cfg))
    assert again.wait(timeout=300) == 0
    outs = lines(run_dir / "predictions.jsonl")
    assert [o["id"] for o in outs] == [f"e{i}" for i in range(N)]          # exactly once
    assert_same_state(final_state(run_dir, data)["state"], final_state(tmp / "ref", data)["state"])

"""Issue 12, the state side: one owner per run and checkpoint folder, checkpoint integrity
(format, checksum, finite state, the previous file kept), one-line refusals of damaged and
foreign files (no pickled code ever runs), temp files of a kill mid-write removed, dead letters
durable before offsets are committed."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import streamnn
from streamnn.checkpoint import (FORMAT, CheckpointError, UnsafeCheckpointError, is_temp_file,
                                 load_checkpoint, previous_path, save_checkpoint)
from streamnn.runtime.config import parse
from streamnn.runtime.lock import FolderInUseError
from streamnn.runtime.loop import Runner
from streamnn.runtime.pipeline import Pipeline, lock_folders
from streamnn.runtime.records import Record
from streamnn.runtime.schema import Decoder
from streamnn.runtime.sinks import DeadLetterSink, MemorySink
from streamnn.runtime.state import CheckpointStore
from test_fencing import OneStream
from test_runtime_helpers import LEARNER, config, lines, write_stream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- helpers ---------------------------------------------------------------------------------

def _learner(n=60, cls=streamnn.MLPRegressor):
    model = cls(hidden=[4], seed=0, batch_size=4, update_every=2)
    for i in range(n):
        x = {"a": (i % 7) / 7, "b": (i % 3) / 3}
        model.learn_one(x, float(i % 5) if cls is streamnn.MLPRegressor else i % 2 == 0)
    return model


def _write_v2(path, payload: dict) -> None:
    """A well-formed format-2 file (valid header and checksum) holding any payload: what a
    bit flip *before* the checksum was taken, or a hand-made file, would look like."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    with open(path, "wb") as f:
        f.write(f"{FORMAT} {hashlib.sha256(body).hexdigest()} {len(body)}\n".encode() + body)


def _one_line_refusal(exc: BaseException, path) -> str:
    msg = str(exc)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    assert "weights_only" not in msg, msg
    return msg


class _Evil:
    """Unpickling it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# -- integrity -------------------------------------------------------------------------------

def test_a_checkpoint_carries_format_and_checksum_and_a_flipped_byte_is_refused(tmp_path):
    path = tmp_path / "m.pt"
    model = _learner()
    model.save(path)
    data = path.read_bytes()
    head = data.split(b"\n", 1)[0].decode().split(" ")
    assert head[0] == "streamnn-checkpoint/2" and len(head[1]) == 64 and int(head[2]) == len(data) - len(data.split(b"\n", 1)[0]) - 1
    assert streamnn.load(path).predict_one({"a": 0.1, "b": 0.2}) == model.predict_one({"a": 0.1, "b": 0.2})
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises(CheckpointError) as e:
        streamnn.load(path)
    assert "checksum" in _one_line_refusal(e.value, path)


def test_checkpoints_of_the_first_format_still_load(tmp_path):
    """Migration: files of `streamnn-checkpoint/1` (a bare torch.save, no checksum) are read."""
    model = _learner()
    old = {"format": "streamnn-checkpoint/1", "learner": "streamnn.regression.MLPRegressor",
           "params": streamnn.base._plain_params(model), "state": model.state_dict()}
    torch.save(old, tmp_path / "old.pt")
    loaded = streamnn.load(tmp_path / "old.pt")
    assert loaded.predict_one({"a": 0.3}) == model.predict_one({"a": 0.3})
    torch.save({"format": "streamnn-checkpoint/1", "offsets": {"s": 5}}, tmp_path / "unit.pt")
    assert load_checkpoint(tmp_path / "unit.pt")["offsets"] == {"s": 5}


@pytest.mark.parametrize("where", ["module", "scaler", "optimizer"])
def test_non_finite_weights_or_statistics_refuse_the_checkpoint(tmp_path, where):
    model = _learner()
    state = model.state_dict()
    if where == "module":
        w = next(k for k in state["module"] if k.endswith("weight"))
        state["module"][w][0, 0] = float("nan")
    elif where == "scaler":
        state["scaler"]["var"][0] = float("inf")
    else:
        st = next(iter(state["optimizer"]["state"].values()))
        next(v for v in st.values() if torch.is_tensor(v) and v.dim() > 0).view(-1)[0] = float("nan")
    payload = {"format": FORMAT, "learner": "streamnn.regression.MLPRegressor",
               "params": streamnn.base._plain_params(model), "state": state}
    path = tmp_path / "nan.pt"
    _write_v2(path, payload)
    with pytest.raises(CheckpointError) as e:
        streamnn.load(path)
    msg = _one_line_refusal(e.value, path)
    assert "non-finite" in msg and where in msg and "--fresh" in msg
    with pytest.raises(CheckpointError, match="not written"):   # nor is such a state ever written
        save_checkpoint(payload, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("make", [
    lambda: streamnn.AutoencoderDetector(seed=0),
    lambda: streamnn.AutoencoderDetector(seed=0, alarm_params={"context": False}),
    lambda: streamnn.MLPRegressor(seed=0),
])
def test_a_learner_fed_numpy_numbers_saves_a_checkpoint_that_loads(tmp_path, make):
    """Values read from numpy or pandas are numpy scalars; the state keeps some (the range rule's
    bounds); the checkpoint holds them as Python numbers, never pickled (the loader refuses
    pickles), and the loaded learner goes on exactly as the saved one."""
    import numpy as np
    v = np.sin(np.arange(700) / 5.0) + np.random.default_rng(0).normal(0, 0.05, 700)
    model = make()
    def feed(m, x):
        if isinstance(m, streamnn.AutoencoderDetector):
            m.learn_one(x)
        else:
            m.learn_one(x, x["value"])
    for x in v[:600]:
        feed(model, {"value": x})
    model.save(tmp_path / "m.pt")
    again = streamnn.load(tmp_path / "m.pt")
    for x in v[600:]:
        x = {"value": x}
        a = again.score_one(x) if isinstance(again, streamnn.AutoencoderDetector) else again.predict_one(x)
        b = model.score_one(x) if isinstance(model, streamnn.AutoencoderDetector) else model.predict_one(x)
        assert a == b
        feed(again, x)
        feed(model, x)


def test_large_finite_values_are_not_mistaken_for_non_finite(tmp_path):
    big = {"state": {"module": {"w": torch.full((1000,), 3e38)},
                     "scaler": {"var": torch.full((3,), 1.7e308, dtype=torch.float64), "clip": float("inf")}}}
    save_checkpoint(big, tmp_path / "big.pt")
    assert torch.equal(load_checkpoint(tmp_path / "big.pt")["state"]["module"]["w"], big["state"]["module"]["w"])


def test_the_previous_checkpoint_is_kept_and_named_in_the_refusal(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint({"step": 1}, path)
    save_checkpoint({"step": 2}, path)
    prev = previous_path(path)
    assert prev == str(tmp_path / "m.prev.pt")
    assert load_checkpoint(prev)["step"] == 1 and load_checkpoint(path)["step"] == 2
    path.write_bytes(path.read_bytes()[:-10])   # truncated
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = _one_line_refusal(e.value, path)
    assert f"mv {prev} {path}" in msg
    assert sorted(os.listdir(tmp_path)) == ["m.prev.pt", "m.pt"]   # no temp file left behind


# -- damaged and hostile files ---------------------------------------------------------------

def _hostile_files(tmp_path, marker) -> dict:
    good = tmp_path / "good.pt"
    _learner().save(good)
    data = good.read_bytes()
    files = {
        "bare pickle with code": pickle.dumps(_Evil(marker)),
        "empty": b"",
        "random bytes": os.urandom(4096),
        "csv": b"a,b,y\n0.1,0.2,1\n0.3,0.4,0\n",
        "truncated": data[: len(data) // 2],
        "header only": data.split(b"\n", 1)[0] + b"\n",
        "truncated legacy": None,
        "nan weights": None,
    }
    buf = io.BytesIO()
    torch.save({"format": "streamnn-checkpoint/1", "x": _Evil(marker)}, buf)
    files["legacy torch file with code"] = buf.getvalue()
    files["truncated legacy"] = buf.getvalue()[:300]
    out = {}
    for name, blob in files.items():
        p = tmp_path / (name.replace(" ", "_") + ".pt")
        if blob is not None:
            p.write_bytes(blob)
        out[name] = p
    _write_v2(out["nan weights"], {"format": FORMAT, "learner": "streamnn.regression.MLPRegressor",
                                   "params": {}, "state": {"module": {"w": torch.tensor([float("nan")])}}})
    evil_v2 = tmp_path / "checksummed_file_with_code.pt"
    _write_v2(evil_v2, {"format": FORMAT, "x": _Evil(marker)})
    out["checksummed file with code"] = evil_v2
    return out


def test_damaged_and_hostile_files_get_one_line_naming_the_file_and_run_no_code(tmp_path):
    marker = tmp_path / "PWNED"
    files = _hostile_files(tmp_path, marker)
    for kind, path in files.items():
        for load in (load_checkpoint, streamnn.load, streamnn.MLPRegressor.load):
            with pytest.raises(CheckpointError) as e:
                load(path)
            msg = _one_line_refusal(e.value, path)
            assert "Traceback" not in msg and len(msg) < 400, (kind, msg)
        assert not marker.exists(), f"{kind}: pickled code ran"
    with pytest.raises(UnsafeCheckpointError) as e:     # still a pickle.UnpicklingError too
        load_checkpoint(files["legacy torch file with code"])
    assert isinstance(e.value, pickle.UnpicklingError) and "nothing of it was run" in str(e.value)
    assert "not a streamnn checkpoint" in str(pytest.raises(CheckpointError, load_checkpoint, files["csv"]).value)
    assert "empty" in str(pytest.raises(CheckpointError, load_checkpoint, files["empty"]).value)


def test_missing_file_is_one_line_too(tmp_path):
    with pytest.raises(CheckpointError) as e:
        streamnn.load(tmp_path / "nope.pt")
    _one_line_refusal(e.value, tmp_path / "nope.pt")


def test_class_load_refuses_a_checkpoint_of_another_class_naming_both(tmp_path):
    _learner(cls=streamnn.MLPClassifier).save(tmp_path / "classifier.pt")
    with pytest.raises(CheckpointError) as e:
        streamnn.MLPRegressor.load(tmp_path / "classifier.pt")
    msg = _one_line_refusal(e.value, tmp_path / "classifier.pt")
    assert "MLPClassifier" in msg and "MLPRegressor" in msg
    assert isinstance(streamnn.MLPClassifier.load(tmp_path / "classifier.pt"), streamnn.MLPClassifier)
    assert isinstance(streamnn.TorchClassifier.load(tmp_path / "classifier.pt"), streamnn.MLPClassifier)
    assert isinstance(streamnn.load(tmp_path / "classifier.pt"), streamnn.MLPClassifier)
    save_checkpoint({"offsets": {"s": 1}}, tmp_path / "no_learner.pt")
    with pytest.raises(CheckpointError, match="without a learner"):
        streamnn.load(tmp_path / "no_learner.pt")


def test_a_damaged_unit_checkpoint_stops_the_run_with_one_line(tmp_path, capsys):
    from streamnn.runtime.cli import main

    write_stream(tmp_path / "s.jsonl", n=300)
    raw = config(tmp_path / "r", {"type": "file", "path": str(tmp_path / "s.jsonl")})
    p = Pipeline(parse(raw))
    p.run()
    (ck,) = p.store.paths()
    with open(ck, "r+b") as f:
        f.truncate(os.path.getsize(ck) - 7)
    cfg = tmp_path / "c.toml"
    cfg.write_text(_toml(raw))
    assert main(["run", str(cfg), "--quiet"]) == 1
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if not x.startswith('{"ts"')]   # besides the JSON log
    assert line.startswith("streamnn: error: ") and ck in line and "Traceback" not in err, err
    assert f"mv {previous_path(ck)} {ck}" in line and "--fresh" in line and "weights_only" not in err
    assert main(["run", str(cfg), "--quiet", "--fresh"]) == 0   # --fresh starts over


def _toml(raw: dict) -> str:
    out = [f"name = {json.dumps(raw['name'])}"]
    for sec, vals in raw.items():
        if isinstance(vals, dict):
            out.append(f"[{sec}]")
            for k, v in vals.items():
                if isinstance(v, dict):
                    out.append(f"{k} = {{{', '.join(f'{a} = {json.dumps(b)}' for a, b in v.items())}}}")
                else:
                    out.append(f"{k} = {json.dumps(v)}")
    return "\n".join(out) + "\n"


# -- temp files ------------------------------------------------------------------------------

def _temp_file(folder, name=".tmp-kill9.pt"):
    os.makedirs(folder, exist_ok=True)
    p = os.path.join(folder, name)
    with open(p, "wb") as f:
        f.write(b"streamnn-checkpoint/2 half-written")
    return p


@pytest.mark.parametrize("fresh", [False, True])
def test_temp_files_of_a_kill_mid_write_are_removed_at_start(tmp_path, fresh, caplog):
    write_stream(tmp_path / "s.jsonl", n=120)
    raw = config(tmp_path / "r", {"type": "file", "path": str(tmp_path / "s.jsonl")})
    Pipeline(parse(raw)).run()
    ck_dir = tmp_path / "r" / "checkpoints"
    stray = [_temp_file(ck_dir), _temp_file(ck_dir, ".tmp-123-456.prev")]
    with caplog.at_level(logging.WARNING, logger="streamnn.runtime"):
        p = Pipeline(parse(raw), fresh=fresh)
    assert "temp file" in caplog.text
    assert not any(os.path.exists(s) for s in stray)
    assert [is_temp_file(n) for n in sorted(os.listdir(ck_dir))].count(True) == 0
    p.close()


def test_a_temp_file_being_written_by_a_group_member_is_left_alone(tmp_path):
    import fcntl

    busy = _temp_file(tmp_path, ".tmp-busy.pt")
    old = time.time() - 60
    os.utime(busy, (old, old))
    abandoned = _temp_file(tmp_path, ".tmp-dead.pt")
    os.utime(abandoned, (old, old))
    with open(busy, "rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        removed = CheckpointStore(tmp_path, shared=True).remove_temp_files()
    assert removed == [abandoned] and os.path.exists(busy)


# -- one owner per folder --------------------------------------------------------------------

def test_a_second_pipeline_on_the_same_folders_is_refused_before_touching_anything(tmp_path):
    write_stream(tmp_path / "s.jsonl", n=300)
    raw = config(tmp_path / "r", {"type": "file", "path": str(tmp_path / "s.jsonl")})
    first = Pipeline(parse(raw))
    first.runner.max_events = 200
    first.runner.run()                      # the first is mid-stream, holding its folders
    preds = tmp_path / "r" / "predictions.jsonl"
    before = {p: os.path.getsize(p) for p in [preds, *first.store.paths()]}
    for fresh in (False, True):
        with pytest.raises(FolderInUseError) as e:
            Pipeline(parse(raw), fresh=fresh)
        msg = str(e.value)
        assert f"pid {os.getpid()}" in msg and "\n" not in msg and str(tmp_path / "r") in msg
        # nothing truncated, no checkpoint deleted (--fresh of a second instance used to do both)
        assert {p: os.path.getsize(p) for p in before} == before
    first.close()
    second = Pipeline(parse(raw))           # free again once the first closed
    second.close()


def test_an_output_file_outside_the_run_folder_has_one_writer(tmp_path):
    write_stream(tmp_path / "s.jsonl", n=50)
    src = {"type": "file", "path": str(tmp_path / "s.jsonl")}

    def cfg(run, out):
        return parse(config(tmp_path / run, src, sinks=[{"type": "jsonl", "path": str(tmp_path / "out" / out)}]))
    first = Pipeline(cfg("a", "p.jsonl"))
    with pytest.raises(FolderInUseError, match="output file .*p.jsonl.*pid"):
        Pipeline(cfg("b", "p.jsonl"))                  # another run, the same output file
    other = Pipeline(cfg("c", "q.jsonl"))              # the same folder, another file: fine
    first.close()
    other.close()


def test_kafka_group_members_share_a_checkpoint_folder_but_not_a_run_folder(tmp_path):
    def kafka_cfg(run_dir):
        return parse({"name": "k", "source": {"type": "kafka", "topics": ["t"], "group_id": "g"},
                      "learner": LEARNER, "schema": {"features": ["a"], "target": "y"},
                      "run": {"dir": str(tmp_path / run_dir)},
                      "checkpoint": {"dir": str(tmp_path / "ck")}})
    a = lock_folders(kafka_cfg("a"))
    b = lock_folders(kafka_cfg("b"))                       # another member: fine
    with pytest.raises(FolderInUseError, match="run folder"):
        lock_folders(kafka_cfg("a"))                       # the same member twice: refused
    with pytest.raises(FolderInUseError, match="checkpoint folder"):
        lock_folders(kafka_cfg("c"), fresh=True)           # --fresh would delete their checkpoints
    file_cfg = config(tmp_path / "f", {"type": "file", "path": str(tmp_path / "x.jsonl")},
                      checkpoint={"dir": str(tmp_path / "ck")})
    with pytest.raises(FolderInUseError, match="checkpoint folder"):
        lock_folders(parse(file_cfg))                      # a file run needs the folder alone
    for lock in a + b:
        lock.release()
    for lock in lock_folders(parse(file_cfg)):
        lock.release()


# -- fencing ---------------------------------------------------------------------------------

def _runner(src, folder, resume=True, shared=False):
    return Runner(src, Decoder(features=["a"], target="y"),
                  lambda: streamnn.MLPRegressor(hidden=[4], seed=0), [MemorySink()],
                  _MemoryLetters(), CheckpointStore(folder, shared=shared), batch_size=50,
                  checkpoint_every=10_000, resume=resume)


class _MemoryLetters:
    def send(self, record, reason):
        pass

    def flush(self):
        pass

    def close(self):
        pass


def test_a_fenced_fresh_member_never_rebuilds_a_blank_learner_nor_overwrites_newer_state(tmp_path, caplog):
    """The issue's run: a member started with --fresh is fenced mid-stream by the member that
    took its partition over; it must continue from that member's state (never from a blank
    learner) and never write over the complete checkpoint at the end."""
    a_src = OneStream()
    a = _runner(a_src, tmp_path, resume=False, shared=True)
    a.start()
    a.process(a_src.poll(100))
    a.checkpoint(force=True)                            # A: offset 100
    a.process(a_src.poll(50))                           # A: 150, unsaved; then it stalls
    b_src = OneStream()
    b = _runner(b_src, tmp_path, shared=True)
    b.start()
    assert b_src.next == 100
    while not b_src.exhausted:
        b.process(b_src.poll(50))
    b.checkpoint(force=True)                            # B: the whole stream, offset 300
    done = CheckpointStore(tmp_path).load("t:0")
    with caplog.at_level(logging.WARNING, logger="streamnn.runtime"):
        a.checkpoint(force=True)                        # A wakes up: fenced
        assert "another consumer owns it now" in caplog.text
        while not a_src.exhausted:                      # ... and reads on to the end
            a.process(a_src.poll(50))
        a.checkpoint(force=True)
    unit = a.units["t:0"]
    assert unit.learner.n_seen_ == done["state"]["counters"]["n_seen"] == 300   # B's model, not a blank one
    final = CheckpointStore(tmp_path).load("t:0")
    assert final["offsets"] == {"t:0": 300}
    assert final["state"]["counters"]["n_seen"] == 300 and final["counters"]["learned"] == 300


def test_without_resume_only_the_files_there_at_the_start_are_ignored(tmp_path):
    src = OneStream()
    old = _runner(src, tmp_path)
    old.start()
    old.process(src.poll(100))
    old.checkpoint(force=True)                          # an old run's checkpoint: offset 100
    src2 = OneStream()
    r = _runner(src2, tmp_path, resume=False)
    r.start()
    assert src2.next == 0 and r.units["t:0"].learner.n_seen_ == 0    # ignored: a fresh start
    r.process(src2.poll(40))
    r.checkpoint(force=True)                            # not fenced by the ignored file
    assert CheckpointStore(tmp_path).load("t:0")["offsets"] == {"t:0": 40}
    src2.lose()                                         # the unit comes back: from its new file
    r._on_assign({"t:0"})
    assert src2.next == 40 and r.units["t:0"].learner.n_seen_ == 40


# -- dead letters ----------------------------------------------------------------------------

def test_dead_letters_are_fsynced_before_the_checkpoint_and_the_offset_commit(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    letters = DeadLetterSink(tmp_path / "dead.jsonl")
    dl_fd = letters._f.fileno()

    def fsync(fd):
        if fd == dl_fd:
            events.append("dead letters fsynced")
        return real_fsync(fd)

    def replace(a, b):
        if str(b).endswith(".pt") and not str(b).endswith(".prev.pt"):
            events.append("checkpoint written")
        return real_replace(a, b)

    class Src(OneStream):
        def commit(self, offsets):
            events.append("offsets committed")

    src = Src(n=20)
    src.data[5] = b'{"a": 1, "y": '                       # a poison record
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    r = Runner(src, Decoder(features=["a"], target="y"), lambda: streamnn.MLPRegressor(hidden=[4], seed=0),
               [MemorySink()], letters, CheckpointStore(tmp_path / "ck"), batch_size=50)
    r.start()
    r.process(src.poll(20))
    events.clear()
    r.checkpoint(force=True)
    assert events == ["dead letters fsynced", "checkpoint written", "offsets committed"]
    letters.close()
    assert json.loads((tmp_path / "dead.jsonl").read_text())["offset"] == 5


# -- two real processes ----------------------------------------------------------------------

def _cli_env():
    return {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.mark.slow
def test_two_runs_of_one_config_the_second_exits_at_once_the_first_is_intact(tmp_path):
    n = 1500
    write_stream(tmp_path / "s.jsonl", n=n)
    raw = config(tmp_path / "r", {"type": "file", "path": str(tmp_path / "s.jsonl")},
                 checkpoint={"every_events": 200})
    cfg = tmp_path / "c.toml"
    cfg.write_text(_toml(raw))
    preds = tmp_path / "r" / "predictions.jsonl"
    # the second process imports everything first, then waits for "go": its timing is the
    # refusal itself, not the interpreter's start-up (measured apart, below)
    second = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, torch._dynamo\n"
         "from streamnn.runtime.cli import main\n"
         "print('ready', flush=True); sys.stdin.readline(); t = time.monotonic()\n"
         f"rc = main(['run', {str(cfg)!r}, '--quiet'])\n"
         "print('elapsed', time.monotonic() - t, flush=True); sys.exit(rc)"],
        cwd=ROOT, env=_cli_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    assert second.stdout.readline().strip() == "ready"
    first = subprocess.Popen([sys.executable, "-m", "streamnn", "run", str(cfg), "--quiet", "--rate", "150"],
                             cwd=ROOT, env=_cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while (not preds.exists() or preds.read_bytes().count(b"\n") < 200) and first.poll() is None:
        assert time.monotonic() - t0 < 180
        time.sleep(0.05)
    assert first.poll() is None, first.stderr.read()
    t1 = time.monotonic()
    out, err = second.communicate("go\n", timeout=60)
    wall = time.monotonic() - t1
    elapsed = float(out.split("elapsed")[1])
    assert second.returncode != 0
    assert elapsed < 2.0, (elapsed, wall)
    assert f"pid {first.pid}" in err and err.strip().count("\n") == 0, err
    assert first.poll() is None, "the first is still running"
    assert first.wait(timeout=300) == 0, first.stderr.read()
    outs = lines(preds)                                  # every line parses
    assert sorted(o["position"]["line"] for o in outs) == list(range(1, n + 1))   # complete, once
    ck = CheckpointStore(tmp_path / "r" / "checkpoints").load(str(tmp_path / "s.jsonl"))
    assert ck["offsets"] == {str(tmp_path / "s.jsonl"): n + 1} and ck["counters"]["learned"] == n
    print(f"second run refused {elapsed:.3f} s after main() started ({wall:.3f} s wall incl. exit)")


def test_per_key_windows_and_lags_are_bounded(monkeypatch):
    """A key new on every record must not grow a keyed detector's windows or the runtime's lags
    without end: past the bound the least recently seen key is forgotten, and a key that comes back
    starts a fresh window."""
    import streamnn.anomaly as anomaly_mod
    from streamnn.keystore import MAX_KEYS, remember
    from streamnn.runtime.state import Lags
    assert MAX_KEYS == 100_000
    lags = Lags(["v"], 2, max_keys=3)
    for i in range(10):
        lags.apply_block(np.array([[float(i)], [float(i) + 0.5]]), keys=[f"k{i}", "hot"])
    assert len(lags.windows) == 3 and "hot" in lags.windows and lags.n_forgotten == 8
    back = lags.apply_block(np.array([[1.0]]), keys=["k0"])       # forgotten: a fresh window
    assert np.isnan(back).all()
    state = lags.state_dict()
    again = Lags(["v"], 2, max_keys=3)
    again.load_state_dict(state)
    assert again.windows == lags.windows and again.n_forgotten == lags.n_forgotten

    monkeypatch.setattr(anomaly_mod, "remember", lambda d, k, v: remember(d, k, v, limit=5))
    det = streamnn.AutoencoderDetector(key="k", window=4, seed=0)
    for i in range(40):
        det.learn_one({"k": i, "v": float(i % 5)})
        det.learn_one({"k": "hot", "v": float(i % 3)})
    assert len(det.windows_) == 5 and "hot" in det.windows_ and 39 in det.windows_

"""A consumer evicted from its group must not overwrite the newer checkpoint of the member that
took its partitions over (that would make the next restart learn events twice)."""

import json
import logging

import streamnn
from streamnn.runtime.loop import Runner
from streamnn.runtime.records import Record
from streamnn.runtime.schema import Decoder
from streamnn.runtime.sinks import MemoryDeadLetterSink, MemorySink
from streamnn.runtime.sources import Source
from streamnn.runtime.state import CheckpointStore


class OneStream(Source):
    def __init__(self, n=300):
        super().__init__()
        self.data = [json.dumps({"a": i % 7, "y": float(i % 5)}).encode() for i in range(n)]
        self.next = 0

    def assigned(self):
        return {"t:0"}

    def seek(self, stream, next_offset):
        self.next = next_offset

    def poll(self, max_records, timeout_s=0.0):
        out = [Record(self.data[i], {"topic": "t", "partition": 0, "offset": i}, "t:0", i)
               for i in range(self.next, min(self.next + max_records, len(self.data)))]
        self.next += len(out)
        return out

    @property
    def exhausted(self):
        return self.next >= len(self.data)

    def lose(self):
        for cb in self._lost_cbs:
            cb({"t:0"})


def _runner(src, folder):
    dec = Decoder(features=["a"], target="y")
    return Runner(src, dec, lambda: streamnn.MLPRegressor(hidden=[4], seed=0), [MemorySink()],
                  MemoryDeadLetterSink(), CheckpointStore(folder), batch_size=50, checkpoint_every=10_000)


def test_a_stale_member_does_not_overwrite_a_newer_checkpoint(tmp_path, caplog):
    a_src = OneStream()
    a = _runner(a_src, tmp_path)
    a.start()
    a.process(a_src.poll(100))
    a.checkpoint(force=True)                         # A: offset 100
    a.process(a_src.poll(50))                        # A goes on to 150 without saving (then stalls)
    b_src = OneStream()
    b = _runner(b_src, tmp_path)                     # B takes the partition over from A's checkpoint
    b.start()
    assert b_src.next == 100
    b.process(b_src.poll(100))
    b.checkpoint(force=True)                         # B: offset 200
    with caplog.at_level(logging.WARNING, logger="streamnn.runtime"):
        a.checkpoint(force=True)                     # A wakes up: must not write offset 150
    assert "another consumer owns it now" in caplog.text
    assert CheckpointStore(tmp_path).load("t:0")["offsets"] == {"t:0": 200}
    assert "t:0" not in a.units
    b.process(b_src.poll(50))
    b.checkpoint(force=True)                         # B itself keeps saving
    assert CheckpointStore(tmp_path).load("t:0")["offsets"] == {"t:0": 250}


def test_lost_partitions_are_dropped_not_checkpointed(tmp_path):
    src = OneStream()
    r = _runner(src, tmp_path)
    r.start()
    r.process(src.poll(100))
    r.checkpoint(force=True)
    r.process(src.poll(50))
    src.lose()
    assert "t:0" not in r.units
    assert CheckpointStore(tmp_path).load("t:0")["offsets"] == {"t:0": 100}
    r._on_assign({"t:0"})                            # assigned again: resumes from the checkpoint
    assert src.next == 100 and r.units["t:0"].offsets == {"t:0": 100}

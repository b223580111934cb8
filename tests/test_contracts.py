"""The runtime's stage contracts (issue 16): every source, sink and dead-letter implementation
declares its contract, the Kafka modules import in one direction only, and a checkpoint commit
takes its five steps in order."""

import ast
import os

import pytest

import streamnn
from streamnn.runtime import contracts, sinks, sources
from streamnn.runtime.checkpointing import Checkpointer
from streamnn.runtime.contracts import DeadLetters, Sink, Source
from streamnn.runtime.loop import Runner
from streamnn.runtime.records import Record
from streamnn.runtime.schema import Decoder
from streamnn.runtime.state import CheckpointStore
from streamnn.runtime.tasks import Task, task_for

RUNTIME = os.path.dirname(contracts.__file__)


def test_every_implementation_declares_its_contract():
    from streamnn.runtime import kafka

    for cls in (sources.FileSource, sources.RiverDatasetSource, kafka.KafkaSource, kafka.ConfluentKafkaSource):
        assert issubclass(cls, Source), cls
    for cls in (sinks.JsonlSink, sinks.StdoutSink, sinks.MemorySink, kafka.KafkaSink):
        assert issubclass(cls, Sink), cls
    for cls in (sinks.DeadLetterSink, sinks.MemoryDeadLetterSink, kafka.KafkaDeadLetterSink):
        assert issubclass(cls, DeadLetters), cls
    for learner in (streamnn.MLPRegressor(), streamnn.MLPClassifier(), streamnn.AutoencoderDetector(),
                    streamnn.MultiTargetRegressor()):
        assert isinstance(task_for(learner), Task)


def test_a_source_missing_a_method_cannot_be_built():
    class Half(Source):
        def assigned(self):
            return set()

    with pytest.raises(TypeError, match="abstract"):
        Half()


def test_the_kafka_factory_picks_the_class_and_the_class_is_never_swapped():
    from streamnn.runtime.kafka import ConfluentKafkaSource, KafkaSource, kafka_source

    assert type(kafka_source(["t"], group_id="g")) is KafkaSource
    with pytest.raises(ValueError, match="kafka_source"):
        KafkaSource(["t"], client="confluent")
    with pytest.raises(ValueError, match="use 'kafka-python' or 'confluent'"):
        kafka_source(["t"], client="other")
    assert ConfluentKafkaSource.client_name == "confluent"


def _imports(path: str) -> set:
    """The runtime modules a file imports (anywhere in it, lazily or not)."""
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_no_import_cycle_in_the_runtime():
    mods = {f[:-3]: _imports(os.path.join(RUNTIME, f)) for f in os.listdir(RUNTIME) if f.endswith(".py")}
    state: dict = {}

    def visit(m, stack):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", " -> ".join(stack + [m])
        state[m] = "open"
        for d in sorted(mods.get(m, ())):
            visit(d, stack + [m])
        state[m] = "done"

    for m in sorted(mods):
        visit(m, [])




def test_checkpoint_commit_takes_its_five_steps_in_order(tmp_path):
    calls = []

    class S(Sink):
        def __init__(self, name):
            self.name = name

        def emit(self, outputs):
            pass

        def flush(self):
            calls.append(f"1 flush {self.name}")

        def close(self):
            pass

    class D(DeadLetters):
        def send(self, record, reason):
            pass

        def flush(self):
            calls.append("2 flush dead letters")

        def close(self):
            pass

    class Store(CheckpointStore):
        def ahead(self, unit, offsets):
            calls.append(f"3 fence {unit}")
            return ("s", 99, 1) if unit == "taken" else None

        def save(self, unit, state):
            calls.append(f"4 save {unit}")
            return super().save(unit, state)

    class Src(Source):
        def poll(self, max_records, timeout_s=0.0):
            return []

        def seek(self, stream, next_offset):
            pass

        def assigned(self):
            return set()

        def commit(self, offsets):
            calls.append(f"5 commit {sorted(offsets.items())}")

    runner = Runner(Src(), Decoder(features=["a"], target="y"), lambda: streamnn.MLPRegressor(hidden=[4]),
                    [S("a"), S("b")], D(), Store(tmp_path), state_per="stream")
    for name in ("mine", "taken"):
        runner.process([Record(b'{"a": 1, "y": 2}', {}, name, 5)])
    calls.clear()
    runner.checkpoint(force=True)
    assert calls == ["1 flush a", "1 flush b", "2 flush dead letters", "3 fence mine", "4 save mine",
                     "3 fence taken", "5 commit [('mine', 6)]"]
    assert set(runner.units) == {"mine"}   # the fenced unit is dropped, not saved
    assert isinstance(runner.checkpointer, Checkpointer) and runner.n_checkpoints == 1


def test_kafka_poll_waits_through_a_restarting_broker(caplog):
    """kafka-python 3 raises e.g. KafkaConnectionError from `KafkaConsumer.poll` while the group
    coordinator's broker restarts: the source returns no records (one warning), and the run goes on;
    a non-retriable error still stops it."""
    from kafka.errors import KafkaConnectionError, UnsupportedVersionError

    from streamnn.runtime.kafka_consumer import KafkaSource

    class Consumer:
        def __init__(self, exc):
            self.exc = exc

        def poll(self, **kwargs):
            raise self.exc

    src = KafkaSource(["t"], group_id="g")
    src._consumer = Consumer(KafkaConnectionError("111 ECONNREFUSED"))
    with caplog.at_level("WARNING", logger="streamnn.runtime.kafka"):
        assert src.poll(10, 0.01) == [] and src.poll(10, 0.01) == []
    warned = [r for r in caplog.records if "Kafka poll failed" in r.getMessage()]
    assert len(warned) == 1 and "KafkaConnectionError" in warned[0].getMessage()
    src._consumer = Consumer(UnsupportedVersionError("no"))
    with pytest.raises(UnsupportedVersionError):
        src.poll(10, 0.01)

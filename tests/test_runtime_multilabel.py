"""`MultiLabelClassifier` in the runtime: a list of true / false targets, decoded as flags, one
output dict of predictions and one of probabilities per event, the mean binary log loss and the
exact match in the metrics, dead letters for a label that is not true or false."""
import json
import random

import pytest

from streamnn.runtime.config import ConfigError, parse
from streamnn.runtime.records import NO_TARGET, DecodeError, Record
from streamnn.runtime.schema import Decoder, flag
from test_runtime_helpers import assert_same_state, config, lines, run

LEARNER = {"class": "MultiLabelClassifier", "params": {"seed": 0}}
SCHEMA = {"features": ["a", "b", "noise"], "target": ["pos", "big"], "event_id": "id"}


def rec(value: bytes) -> Record:
    return Record(value=value, stream="s", offset=0, position={"file": "s", "line": 1})


def write_labels(path, n=900, seed=0, odd=()):
    """A JSONL stream with features a, b, noise and labels pos (a > 0), big (a + b > 0.5, as 1 / 0);
    `odd` maps an event number to a replacement of its labels."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            a, b = rng.uniform(-1, 1), rng.uniform(-1, 1)
            r = {"id": f"e{i}", "a": a, "b": b, "noise": rng.gauss(0, 1), "pos": a > 0, "big": int(a + b > 0.5)}
            r.update(dict(odd).get(i, {}))
            f.write(json.dumps({k: v for k, v in r.items() if v != "<absent>"}) + "\n")


@pytest.mark.parametrize("value, want", [(True, True), (False, False), (1, True), (0, False), (1.0, True),
                                         (0.0, False), ("true", True), (" FALSE ", False), ("1", True),
                                         (2, None), (0.5, None), ("yes", None), (None, None), ([1], None)])
def test_a_flag_is_true_false_1_or_0(value, want):
    assert flag(value) is want


def test_the_decoder_reads_flags_and_refuses_anything_else():
    dec = Decoder(features=["a"], target=["p", "q"], target_kind="flag")
    assert dec.decode(rec(b'{"a": 1, "p": true, "q": 0}')).y == {"p": True, "q": False}
    assert dec.decode(rec(b'{"a": 1}')).y is NO_TARGET
    for body, start in ((b'{"a": 1, "p": true, "q": 2}', "wrong type: target 'q' is 2"),
                        (b'{"a": 1, "p": "maybe", "q": 0}', "wrong type: target 'p'"),
                        (b'{"a": 1, "p": true}', "missing field: target 'q'"),
                        (b'{"a": 1, "p": NaN, "q": 1}', "non-finite target")):
        ev = dec.decode(rec(body))
        assert type(ev) is DecodeError and ev.reason.startswith(start), ev
    csv = Decoder(features=["a"], target=["p", "q"], target_kind="flag", format="csv", columns=["a", "p", "q"])
    assert csv.decode(rec(b"1.5,true,0")).y == {"p": True, "q": False}
    with pytest.raises(ValueError, match="target_kind"):
        Decoder(target=["p"], target_kind="bool")


def test_a_multi_label_pipeline_end_to_end(tmp_path):
    write_labels(tmp_path / "s.jsonl", odd={700: {"pos": "maybe"}, 701: {"big": 2}, 702: {"big": "<absent>"},
                                            703: {"pos": "true", "big": "0"}})
    p, s = run(config(tmp_path / "r", {"type": "file", "path": str(tmp_path / "s.jsonl")}, LEARNER, schema=SCHEMA))
    assert s["task"] == "multi_label" and s["events_in"] == 900 and s["dead_letters"] == 3
    assert s["exact_match"] > 0.8 and 0 < s["prequential_loss"] < 0.4, s   # measured: 0.87, 0.25 on 1,500 events
    out = lines(tmp_path / "r" / "predictions.jsonl")
    assert len(out) == 897 and out[-1]["id"] == "e899"
    last = out[-1]
    assert set(last["prediction"]) == set(last["proba"]) == {"pos", "big"}
    assert all(type(v) is bool for v in last["prediction"].values())
    assert all(0.0 <= v <= 1.0 for v in last["proba"].values())
    assert last["y"] == {"pos": last["y"]["pos"], "big": last["y"]["big"]} and type(last["y"]["big"]) is bool
    e703 = next(o for o in out if o["id"] == "e703")
    assert e703["y"] == {"pos": True, "big": False}                      # texts read as flags
    reasons = [d["reason"] for d in lines(tmp_path / "r" / "dead_letters.jsonl")]
    assert [r.split(";")[0] for r in reasons] == ["wrong type: target 'pos' is 'maybe'", "wrong type: target 'big' is 2",
                                                 "missing field: target 'big' is absent"]
    assert "exact_match" in lines(tmp_path / "r" / "metrics.jsonl")[-1]
    assert next(iter(p.runner.units.values())).learner.n_seen_ == 897


def test_resume_from_checkpoint_equals_an_uninterrupted_run(tmp_path):
    write_labels(tmp_path / "s.jsonl", n=500)
    src = {"type": "file", "path": str(tmp_path / "s.jsonl")}
    full, _ = run(config(tmp_path / "full", src, LEARNER, schema=SCHEMA))
    for stop in (137, 311, None):
        part, _ = run(config(tmp_path / "parts", src, LEARNER, schema=SCHEMA),
                      max_events=stop and stop - (0 if stop == 137 else 137))
    assert part.resumed
    a = next(iter(full.runner.units.values())).learner.state_dict()
    b = next(iter(part.runner.units.values())).learner.state_dict()
    assert_same_state(a, b)
    full_out, part_out = lines(tmp_path / "full" / "predictions.jsonl"), lines(tmp_path / "parts" / "predictions.jsonl")
    assert [o["id"] for o in part_out] == [o["id"] for o in full_out] == [f"e{i}" for i in range(500)]


def test_delayed_labels_are_learned_when_they_arrive(tmp_path):
    rng, recs, late = random.Random(1), [], []
    for i in range(300):
        a, b = rng.uniform(-1, 1), rng.uniform(-1, 1)
        labels = {"pos": a > 0, "big": int(a + b > 0.5)}
        recs.append({"id": f"e{i}", "a": a, "b": b, "noise": 0.0, **({} if i % 3 == 0 else labels)})
        if i % 3 == 0:
            late.append({"id": f"e{i}", **labels})
        if i % 50 == 49:
            recs, late = recs + late, []
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    p, s = run(config(tmp_path / "r", {"type": "file", "path": str(tmp_path / "s.jsonl")}, LEARNER, schema=SCHEMA,
                      run={"delayed_labels": 1000}))
    assert s["delayed_matched"] == 100 and s["dead_letters"] == 0
    assert next(iter(p.runner.units.values())).learner.n_seen_ == 300


def test_one_target_is_a_config_error_naming_the_list(tmp_path):
    raw = config(tmp_path / "r", {"type": "file", "path": str(tmp_path / "s.jsonl")}, LEARNER,
                 schema={**SCHEMA, "target": "pos"})
    with pytest.raises(ConfigError, match=r"\[schema\] target: a MultiLabelClassifier needs a list"):
        parse(raw)


def test_inspect_names_the_labels(tmp_path, capsys):
    """`inspect` printed `classes [[], []]` for a multi-label checkpoint; it names the targets."""
    from streamnn.runtime.cli import main
    write_labels(tmp_path / "s.jsonl", n=200)
    run(config(tmp_path / "r", {"type": "file", "path": str(tmp_path / "s.jsonl")}, LEARNER, schema=SCHEMA))
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "r" / "checkpoints")]) == 0
    out = capsys.readouterr().out
    assert "targets   ['big', 'pos']" in out and "classes" not in out

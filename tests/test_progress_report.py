"""Progress and reports a person can read (issue 16): percentage and ETA for a finite source, the
summary's events/s over the processing time and the same figure in the progress line, event
time on the report's x axis, and no empty anomaly plot when the outputs went elsewhere."""

import json

import pytest

from streamnn.runtime.metrics import progress_line
from streamnn.runtime.report import write_report
from streamnn.runtime.sources import FileSource, RiverDatasetSource
from test_runtime_helpers import config, run, write_stream


def test_file_and_river_sources_say_how_far_they_are(tmp_path):
    write_stream(tmp_path / "s.jsonl", n=100)
    src = FileSource(tmp_path / "s.jsonl")
    assert src.progress() == 0.0
    src.poll(50)
    assert 0.4 < src.progress() < 0.6
    src.poll(100)
    assert src.progress() == 1.0
    assert FileSource(tmp_path / "s.jsonl", follow=True).progress() is None   # a growing file
    river = RiverDatasetSource("Phishing", limit=10)
    river.poll(5)
    assert river.progress() == 0.5


def test_progress_shows_percentage_eta_and_the_summary_rate(tmp_path):
    write_stream(tmp_path / "s.jsonl", n=600)
    snaps = []
    p, summary = run(config(tmp_path / "r", {"type": "file", "path": str(tmp_path / "s.jsonl")}),
                     progress=snaps.append)
    assert snaps, "no progress reported"
    mid = [s for s in snaps if 0 < s["done"] < 1]
    assert mid and all(s["eta_s"] is not None and s["eta_s"] >= 0 for s in mid)
    line = progress_line(mid[0])
    assert "%" in line and "ETA" in line
    assert "100%" in progress_line({**mid[0], "done": 1.0, "eta_s": 0.0})
    # the summary's rate is events over the processing time, the figure the progress line shows
    assert summary["events_per_s"] == pytest.approx(600 / summary["elapsed_s"], rel=1e-6)
    assert mid[0]["events_per_s"] == pytest.approx(mid[0]["events"] / mid[0]["elapsed_s"], rel=1e-3)


def _detector_run(tmp_path, sinks=None):
    rows = [{"ts": f"2024-01-01T{i // 60:02d}:{i % 60:02d}:00", "value": float(i % 7), "label": int(i == 50)}
            for i in range(400)]
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = config(tmp_path / "r", {"type": "file", "path": str(src)},
                 learner={"class": "AutoencoderDetector", "params": {"seed": 0}},
                 schema={"features": ["value"], "target": "label", "timestamp": "ts", "event_id": None})
    if sinks is not None:
        raw["sinks"] = sinks
    return run(raw)


def test_report_uses_event_time_and_names_metric_and_window(tmp_path):
    p, summary = _detector_run(tmp_path)
    assert summary["events_out"] == 400
    files = write_report(tmp_path / "r")
    names = {f.rsplit("/", 1)[-1] for f in files}
    assert {"prequential.png", "throughput.png", "scores.png", "index.md"} <= names
    metrics = [json.loads(line) for line in open(tmp_path / "r" / "metrics.jsonl")]
    assert metrics[-1]["event_time"] == "2024-01-01T06:39:00"
    from streamnn.runtime import report

    rows = [dict(r) for r in metrics]
    assert report._x_axis(rows) == "event time" and rows[0]["_x"].year == 2024
    assert "100 events" in report._window(rows)


def test_no_empty_anomaly_plot_when_the_outputs_went_elsewhere(tmp_path):
    _, summary = _detector_run(tmp_path, sinks=[{"type": "stdout"}])
    assert summary["events_out"] == 400
    files = write_report(tmp_path / "r")
    assert not any(f.endswith("scores.png") for f in files)
    index = open(tmp_path / "r" / "report" / "index.md").read()
    assert "No anomaly-score plot" in index and "--predictions" in index

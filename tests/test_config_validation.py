"""`streamnn check` knows everything that can be known before the first event, and `run` checks
the same first: each config below was accepted by `check` and then failed in `run` (some after
writing outputs) or ran silently with a nonsense value (issue 12)."""

import glob
import os
import subprocess
import sys

import pytest

from streamnn.runtime.cli import main
from streamnn.runtime.config import ConfigError, load_config, parse
from streamnn.runtime.validate import folder_problem, validate
from test_runtime_helpers import write_stream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BASE = """
name = "v"
{top}
[source]
{source}
[schema]
features = ["a", "b", "noise"]
target = "y"
[learner]
class = "MLPClassifier"
[learner.params]
seed = 0
{params}
[run]
dir = "{run_dir}"
batch_size = 32
{run}
[checkpoint]
every_events = 100
{checkpoint}
[metrics]
every = 50
{metrics}
[report]
on_exit = false
"""


def _config(tmp_path, top="", source=None, params="hidden = [8]", run="", checkpoint="", metrics="", run_dir=None):
    data = tmp_path / "s.jsonl"
    if not data.exists():
        write_stream(data, n=200, classes=True)
    text = BASE.format(top=top, source=source or f'type = "file"\npath = "{data}"', params=params,
                       run=run, checkpoint=checkpoint, metrics=metrics,
                       run_dir=run_dir or tmp_path / "run")
    cfg = tmp_path / "v.toml"
    cfg.write_text(text)
    return cfg


def _refused(cfg, capsys, *needles, run_dir=None):
    """`check` and `run` both exit 2 naming the problem, and `run` wrote nothing."""
    run_dir = run_dir or os.path.join(os.path.dirname(cfg), "run")
    before = os.path.exists(run_dir) and sorted(os.listdir(run_dir))
    assert main(["check", str(cfg)]) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err
    assert main(["run", str(cfg), "--quiet", "--no-report"]) == 2
    err_run = capsys.readouterr().err
    assert all(needle in err_run for needle in needles), err_run
    assert (os.path.exists(run_dir) and sorted(os.listdir(run_dir))) == before, "run wrote outputs"
    return err


def test_a_good_config_passes_and_check_creates_nothing(tmp_path, capsys):
    cfg = _config(tmp_path)
    assert main(["check", str(cfg)]) == 0
    assert "ok" in capsys.readouterr().out
    assert not os.path.exists(tmp_path / "run")


def test_missing_source_file(tmp_path, capsys):
    cfg = _config(tmp_path, source=f'type = "file"\npath = "{tmp_path / "nope.jsonl"}"')
    _refused(cfg, capsys, "[source] path", "no such file")


@pytest.mark.parametrize("source, needle", [
    ('type = "file"\npath = "{tmp}/s.jsonl"\nformat = "parquet"', '[source] format = \'parquet\''),
    ('type = "file"\npath = "{tmp}/data.txt"', "unknown extension"),
])
def test_unknown_format_or_extension(tmp_path, capsys, source, needle):
    (tmp_path / "data.txt").write_text('{"a": 1, "b": 2, "noise": 0, "y": true}\n')
    cfg = _config(tmp_path, source=source.format(tmp=tmp_path))
    _refused(cfg, capsys, needle, "jsonl")


@pytest.mark.parametrize("header, needle", [
    ("a,b,noise", "[schema] target: 'y' is not a column of"),          # nothing would ever be learned
    ("a,noise,y", "[schema] features: 'b' is not a column of"),       # 'b' would always be missing
    ("a,b,b,noise,y", "the CSV header names 'b' more than once"),     # the last 'b' silently won
    ("", "a CSV source needs a header row on line 1"),                # was a traceback-free ValueError in run only
    ("a;b;noise;y", "the file is ';'-separated, and streamnn reads comma-separated CSV"),   # named, not just missing
])
def test_csv_header_against_the_schema(tmp_path, capsys, header, needle):
    """A CSV's header is known before the first event: the schema's fields must be in it."""
    data = tmp_path / "s.csv"
    data.write_text(header + "\n" + ",".join(["1"] * max(1, len(header.split(",")))) + "\n")
    cfg = _config(tmp_path, source=f'type = "file"\npath = "{data}"')
    _refused(cfg, capsys, needle)


def test_unknown_river_dataset(tmp_path, capsys):
    cfg = _config(tmp_path, source='type = "river"\ndataset = "Phishingg"')
    _refused(cfg, capsys, "[source] dataset = 'Phishingg'", "not found")


def test_confluent_client_without_the_package(tmp_path, capsys):
    try:
        import confluent_kafka  # noqa: F401
        pytest.skip("confluent-kafka is installed here")
    except ImportError:
        pass
    cfg = _config(tmp_path, source='type = "kafka"\ntopics = ["t"]\nclient = "confluent"\nbootstrap = "127.0.0.1:1"')
    _refused(cfg, capsys, 'client = "confluent"', "pip install confluent-kafka")


def test_file_shaped_run_dir(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    cfg = _config(tmp_path, run_dir=tmp_path / "afile")
    _refused(cfg, capsys, "[run] dir", "is a file, not a folder", run_dir=str(tmp_path / "elsewhere"))


def test_file_shaped_checkpoint_dir(tmp_path, capsys):
    (tmp_path / "ck").write_text("x")
    cfg = _config(tmp_path, checkpoint=f'dir = "{tmp_path / "ck"}"')
    _refused(cfg, capsys, "[checkpoint] dir", "is a file, not a folder")


def test_run_dir_under_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    cfg = _config(tmp_path, run_dir=tmp_path / "afile" / "run")
    _refused(cfg, capsys, "[run] dir", "is a file, so the folder cannot be created")


def _unwritable_dir(tmp_path):
    """A folder this process cannot write in: a read-only one, or /sys when we are root."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o500)
        return d
    if folder_problem("x", "/sys/streamnn-test") is None:
        pytest.skip("no unwritable folder here (root, and /sys is writable)")
    return "/sys/streamnn-test"


def test_unwritable_run_dir(tmp_path, capsys):
    where = _unwritable_dir(tmp_path)
    cfg = _config(tmp_path, run_dir=f"{where}/run")
    _refused(cfg, capsys, "[run] dir", "cannot write in", run_dir=f"{where}/run")


def test_zero_threads(tmp_path, capsys):
    cfg = _config(tmp_path, top="threads = 0")
    _refused(cfg, capsys, "threads = 0: must be >= 1")


@pytest.mark.parametrize("params, needles", [
    ('hidden = "abc"', ["[learner.params] hidden = 'abc'", "list of layer widths"]),
    ('activation = "nope"', ["[learner.params] activation = 'nope'", "relu"]),
    ("lr = -0.1", ["[learner.params] lr = -0.1: must be > 0"]),
    ('init = "nope"', ["[learner.params] init = 'nope'", "xavier"]),      # found by building it
    ('optimizer = "nope"', ["[learner.params] optimizer='nope'", "adam"]),
])
def test_learner_parameters(tmp_path, capsys, params, needles):
    cfg = _config(tmp_path, params=params)
    _refused(cfg, capsys, *needles)


def test_metrics_port_out_of_range(tmp_path, capsys):
    cfg = _config(tmp_path, metrics="port = 70000")
    _refused(cfg, capsys, "[metrics] port = 70000: must be <= 65535")


def test_metrics_port_in_use(tmp_path, capsys):
    import socket

    s = socket.socket()
    s.bind(("", 0))
    s.listen(1)
    try:
        cfg = _config(tmp_path, metrics=f"port = {s.getsockname()[1]}")
        _refused(cfg, capsys, "[metrics] port", "cannot be served")
    finally:
        s.close()


@pytest.mark.parametrize("run, needle", [
    ("max_events = -5", "[run] max_events = -5: must be >= 0"),
    ("rate = -1", "[run] rate = -1: must be > 0"),
    ("delayed_labels = -1", "[run] delayed_labels = -1: must be >= 0"),
])
def test_negative_run_limits(tmp_path, capsys, run, needle):
    cfg = _config(tmp_path, run=run)
    _refused(cfg, capsys, needle)


@pytest.mark.parametrize("section, value, needle", [
    # each ran: the first crashed at the first poll, the next at the first learn, the rest ran silently wrong
    ("run", {"batch_size": 10**30}, "[run] batch_size = 1000000000000000000000000000000: must be <= 1000000"),
    ("schema", {"features": ["a", "a", "b"]}, "[schema] features: 'a' is listed twice"),
    ("schema", {"target": ["y", "y"]}, "[schema] target: 'y' is listed twice"),
    ("schema", {"features": ["a", "y"]}, "[schema] features: 'y' is also the target"),   # a leak
    ("schema", {"lags": 10**30}, "[schema] lags: 1000000000000000000000000000000 lags of 3 field(s) make more"),
    ("checkpoint", {"every_seconds": float("nan")}, "[checkpoint] every_seconds = nan: must be positive"),
])
def test_schema_and_limits_that_ran_wrong(tmp_path, section, value, needle):
    """The lags case allocated one name per lag (1e30 of them) when the run started."""
    from test_runtime_helpers import config

    raw = config(tmp_path / "r", {"type": "file", "path": str(tmp_path / "s.jsonl")}, **{section: value})
    with pytest.raises(ConfigError) as e:
        parse(raw)
    assert needle in str(e.value)


@pytest.mark.parametrize("flag, needle", [
    (["--max-events", "-5"], "--max-events = -5: must be >= 0"),
    (["--rate", "-1"], "--rate = -1.0: must be > 0"),
    (["--port", "70000"], "--port = 70000: must be <= 65535"),
])
def test_command_line_limits(tmp_path, capsys, flag, needle):
    cfg = _config(tmp_path)
    assert main(["run", str(cfg), "--quiet", *flag]) == 2
    assert needle in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")


def test_every_problem_is_reported_at_once(tmp_path):
    (tmp_path / "afile").write_text("x")
    cfg = load_config(_config(tmp_path, source=f'type = "file"\npath = "{tmp_path / "nope.jsonl"}"',
                              params="lr = -0.1", run_dir=tmp_path / "afile"))
    problems = validate(cfg)
    # the checkpoint dir and the output files inside the bad run dir are not repeated
    assert [p.split(" ")[0] for p in problems] == ["[source]", "[run]", "[learner.params]"], problems


def test_parse_names_constructor_parameters():
    with pytest.raises(ConfigError, match=r"\[learner.params\] scale_inputs='x': use 'welford'"):
        parse({"name": "t", "source": {"type": "river", "dataset": "Phishing"},
               "learner": {"class": "MLPClassifier", "params": {"scale_inputs": "x"}}})


@pytest.mark.slow
def test_bundled_pipelines_pass_validation(tmp_path):
    paths = sorted(glob.glob(os.path.join(ROOT, "pipelines", "*.toml")))
    assert paths
    cwd = os.getcwd()
    os.chdir(ROOT)   # bundled configs name their data relative to the repository
    try:
        for path in paths:
            cfg = load_config(path, {"run": {"dir": str(tmp_path / os.path.basename(path))}})
            cfg.checkpoint["dir"] = str(tmp_path / "ck")
            for s in cfg.sinks:
                if s.get("path"):
                    s["path"] = str(tmp_path / "out.jsonl")
            if cfg.dead_letters.get("path"):
                cfg.dead_letters["path"] = str(tmp_path / "dead.jsonl")
            problems = validate(cfg)
            if problems and "confluent" in cfg.source.get("client", ""):
                assert problems == [p for p in problems if "confluent-kafka package is not installed" in p]
                try:
                    import confluent_kafka  # noqa: F401
                except ImportError:
                    continue   # that pipeline needs the [confluent] extra, and says so
            assert problems == [], path
    finally:
        os.chdir(cwd)


@pytest.mark.slow
def test_run_exits_2_as_a_process_before_any_output(tmp_path):
    cfg = _config(tmp_path, params="lr = -0.1")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-m", "streamnn", "run", str(cfg)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "streamnn: config error: [learner.params] lr = -0.1: must be > 0; use a learning rate such as 0.001"]
    assert res.stdout == "" and not os.path.exists(tmp_path / "run")


KEYED = """name = "k"
[source]
type = "file"
path = "streamnn:data/demo_sensors.csv"
[schema]
features = ["temperature", "pressure"]
target = "vibration"
key = "machine"
[learner]
class = "LSTMRegressor"
[learner.params]
key = "machine"
[run]
dir = "RUN"
"""


def test_a_learner_key_the_learner_would_never_receive(tmp_path, capsys):
    """A sequence learner keyed by a field that is not among the features never saw it: every
    event was one series, silently (the run 'succeeded'). Now a config error naming the field."""
    text = KEYED.replace("RUN", str(tmp_path / "run"))
    cfg = tmp_path / "k.toml"
    cfg.write_text(text.replace('target = "vibration"\nkey = "machine"', 'target = "vibration"'))
    _refused(cfg, capsys, "[learner.params] key = 'machine'", "[schema] key = 'machine'")
    cfg.write_text(text.replace('key = "machine"\n[run]', 'seed = 0\n[run]'))   # no learner key: fine
    assert main(["check", str(cfg)]) == 0


def test_the_schema_key_reaches_a_keyed_learner(tmp_path, capsys):
    """`[schema] key` and the learner's `key` naming the same field: the learner gets that column,
    string ids included (a sensor id), and keeps one series per machine."""
    from streamnn.runtime.config import load_config
    from streamnn.runtime.pipeline import Pipeline
    cfg = tmp_path / "k.toml"
    cfg.write_text(KEYED.replace("RUN", str(tmp_path / "run"))
                   .replace('key = "machine"\n[run]', 'key = "machine"\nhidden_size = 4\nseed = 0\n[run]')
                   + "[report]\non_exit = false\n")
    assert main(["check", str(cfg)]) == 0
    p = Pipeline(load_config(str(cfg)))
    summary = p.run()
    learner = next(iter(p.runner.units.values())).learner
    from streamnn.runtime.config import resolve_path
    with open(resolve_path("streamnn:data/demo_sensors.csv")) as f:
        machines = {row.split(",")[1] for row in f.read().splitlines()[1:]}
    assert summary["dead_letters"] == 0 and summary["learned"] > 0
    assert set(learner.keys_.slots) == machines and len(machines) > 1


def test_a_learner_the_runtime_has_no_task_for_is_a_config_error(tmp_path, capsys):
    """A learner of no river kind the runtime runs (a forecaster) printed a TypeError traceback
    from `check` and `run` (it was `MultiLabelClassifier` until it got its task)."""
    cfg = _config(tmp_path, params="")
    cfg.write_text(cfg.read_text().replace('class = "MLPClassifier"', 'class = "LSTMForecaster"'))
    _refused(cfg, capsys, "[learner] class = 'LSTMForecaster'", "MultiLabelClassifier and anomaly detectors")


def test_a_multi_label_learner_with_one_target_is_a_config_error(tmp_path, capsys):
    cfg = _config(tmp_path, params="")
    cfg.write_text(cfg.read_text().replace('class = "MLPClassifier"', 'class = "MultiLabelClassifier"'))
    _refused(cfg, capsys, "[schema] target: a MultiLabelClassifier needs a list of target fields")


@pytest.mark.parametrize("where, says", [("missing", "does not exist; check the path"), ("folder", "is a folder"),
                                         ("device", "is not a regular file")])
def test_a_config_path_that_is_not_a_file_says_what_it_is(tmp_path, capsys, where, says):
    """`streamnn check /dev/null` said the file did not exist."""
    path = {"missing": str(tmp_path / "nope.toml"), "folder": str(tmp_path), "device": os.devnull}[where]
    assert main(["check", path]) == 2
    assert says in capsys.readouterr().err

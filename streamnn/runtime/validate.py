"""Everything about a config that can be known before the first event (`streamnn check`).

`parse` (config.py) checks the shape of a config: keys, types and ranges. This module checks it
against the machine it will run on: the source file exists, is readable and has a known format;
a river dataset exists; the Kafka client named is installed; every folder the run writes to can
be written; the metrics port can be served; and the learner builds, with its optimizer, and
learns and predicts two dummy events. `streamnn check` and `streamnn run` both call
:func:`check_config` first, so a config error never shows up after the first output.

Each problem names the config field and the fix; all of them are reported at once.

>>> import tempfile
>>> from streamnn.runtime.config import parse
>>> cfg = parse({"name": "t", "source": {"type": "river", "dataset": "Phishing"},
...              "learner": {"class": "MLPClassifier", "params": {"lr": -0.1}},
...              "run": {"dir": tempfile.mkdtemp()}})
>>> validate(cfg)
['[learner.params] lr = -0.1: must be > 0; use a learning rate such as 0.001']
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
import warnings

from .config import Config, ConfigError, check_range, resolve_learner, resolve_path

__all__ = ["validate", "check_config", "folder_problem", "learner_problems", "port_problem"]

# learner parameter -> (kind, lowest, lowest allowed itself?, highest, advice)
_PARAMS = {
    "lr": ("number", 0, False, None, "a learning rate such as 0.001"),
    "dropout": ("number", 0, True, 0.999, "a rate in [0, 1), e.g. 0.1"),
    "weight_decay": ("number", 0, True, None, "0 (off) or a small number such as 1e-4"),
    "grad_clip": ("number?", 0, False, None, "a norm such as 1.0, or leave it out (no clipping)"),
    "replay": ("number", 0, True, None, "0 (off) or a fraction such as 0.5"),
    "batch_size": ("int", 1, True, None, "1 or more samples per step, e.g. 32"),
    "update_every": ("int", 1, True, None, "1 or more samples between steps"),
    "warmup": ("int", 0, True, None, "0 or more samples"),
    "hidden_size": ("int", 1, True, None, "1 or more units, e.g. 32"),
    "num_layers": ("int", 1, True, None, "1 or more layers"),
    "latent": ("int?", 1, True, None, "1 or more units, or leave it out (automatic)"),
    "bptt": ("int", 1, True, None, "1 or more steps"),
    "noise": ("number", 0, True, None, "0 or more, e.g. 0.1"),
    "beta": ("number", 0, True, None, "0 or more, e.g. 1.0"),
    "seed": ("int?", None, True, None, "an integer, or leave it out"),
}


def validate(cfg: Config, replay_file: str | None = None, learner: bool = True) -> list:
    """Every problem found with `cfg` on this machine, one message each (empty: all is well).

    Parameters
    ----------
    cfg
        A config that `parse` accepted.
    replay_file
        The file `streamnn replay` reads instead of the config's source.
    learner
        Also build the learner and let it learn two dummy events.
    """
    problems = _source_problems(cfg, replay_file)
    problems += _folder_problems(cfg)
    problems += _metrics_problems(cfg)
    if learner:
        problems += learner_problems(cfg)
    return problems


def check_config(cfg: Config, replay_file: str | None = None) -> None:
    """Raise `ConfigError` listing every problem `validate` finds."""
    problems = validate(cfg, replay_file)
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))


# -- the source --------------------------------------------------------------------------------
def _source_problems(cfg: Config, replay_file) -> list:
    src = cfg.source
    if replay_file is not None:
        return _file_problems("replay FILE", replay_file, None, schema=cfg.schema)
    if src["type"] == "file":
        return _file_problems("[source] path", resolve_path(src["path"]), src.get("format"), src["path"],
                              cfg.schema)
    if src["type"] == "river":
        return _river_problems(src)
    if src["type"] == "kafka":
        return _kafka_problems(cfg)
    return []


def _file_problems(field: str, path: str, fmt, shown: str | None = None, schema: dict | None = None) -> list:
    from .sources import file_format

    shown = shown or path
    if not os.path.exists(path):
        return [f"{field} = {shown!r}: no such file; fix the path (relative to the current directory "
                f"{os.getcwd()!r}; \"streamnn:data/<file>\" for the bundled data)"]
    if not os.path.isfile(path):
        return [f"{field} = {shown!r}: is a folder, not a file; name a JSONL or CSV file"]
    if not os.access(path, os.R_OK):
        return [f"{field} = {shown!r}: cannot be read (permissions); make it readable (chmod +r)"]
    if path.lower().endswith(".gz"):
        with open(path, "rb") as f:
            if f.read(2) != b"\x1f\x8b":
                return [f"{field} = {shown!r}: not gzip-compressed, but named .gz; rename it without .gz"]
    try:
        fmt = file_format(path, fmt)
    except ValueError:
        if fmt is not None:
            return [f"[source] format = {fmt!r}: unknown; use \"jsonl\" or \"csv\""]
        return [f"{field} = {shown!r}: unknown extension; rename it to .jsonl or .csv (.gz too), "
                "or set format = \"jsonl\" or \"csv\" in [source]"]
    return _csv_header_problems(field, path, shown, schema) if fmt == "csv" and schema else []


def _csv_header_problems(field: str, path: str, shown: str, schema: dict) -> list:
    """A CSV's header against the schema: every field the schema names is a column, once."""
    from .sources import FileSource

    try:
        src = FileSource(path, format="csv")
    except ValueError:
        return [f"{field} = {shown!r}: a CSV source needs a header row on line 1; add the column names there"]
    except OSError as e:
        return [f"{field} = {shown!r}: cannot be read ({e.strerror}); fix the file or its permissions"]
    cols = src.columns
    src.close()
    problems = [f"{field} = {shown!r}: the CSV header names {c!r} more than once; give each column its own name"
                for c in sorted({c for c in cols if cols.count(c) > 1})]
    other = next((d for d in (";", "\t", "|") if len(cols) == 1 and d in cols[0]), None)
    hint = (f" (the header is one column holding {other!r}: the file is {other!r}-separated, and streamnn "
            "reads comma-separated CSV; convert it, e.g. with csvformat or pandas)") if other else ""
    for key in ("features", "target", "event_id", "key", "timestamp", "required", "lag_fields"):
        value = schema.get(key)
        names = [] if value in (None, "*") else [value] if isinstance(value, str) else list(value)
        missing = [n for n in names if n not in cols]
        if missing:
            problems.append(f"[schema] {key}: {missing[0]!r} is not a column of {shown!r} (its header: "
                            f"{', '.join(cols)[:120]}); fix the name, or the file's header{hint}")
    return problems


def _river_problems(src: dict) -> list:
    from .sources import _resolve_dataset

    problems = []
    limit = check_range("[source] limit", src.get("limit"), 0, True, None,
                        "0 or more samples (leave it out for the whole dataset)")
    if limit:
        problems.append(limit)
    try:
        factory = _resolve_dataset(src["dataset"])
    except ValueError as e:
        return problems + [f"[source] dataset = {src['dataset']!r}: {e}"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = factory(**src["params"])
    except Exception as e:   # noqa: BLE001 - any failure here is the config's
        return problems + [f"[source] params: river.datasets.{src['dataset']}(**params) failed: {_one_line(e)}; "
                           "fix or remove the parameter"]
    if getattr(data, "url", None) and not getattr(data, "is_downloaded", True):
        problems.append(f"[source] dataset = {src['dataset']!r}: not downloaded, and streamnn does not fetch "
                        "data at run time; download it once with river, or use a bundled dataset")
    return problems


def _kafka_problems(cfg: Config) -> list:
    import inspect

    problems = []
    specs = [("[source]", cfg.source)] + [(f"[[sinks]] {i}", s) for i, s in enumerate(cfg.sinks)
                                          if s["type"] == "kafka"]
    if cfg.dead_letters["type"] == "kafka":
        specs.append(("[dead_letters]", cfg.dead_letters))
    confluent = []
    for field, spec in specs:
        client = spec.get("client", "kafka-python")
        if client not in ("kafka-python", "confluent"):
            problems.append(f"{field} client = {client!r}: unknown; use \"kafka-python\" (default) or \"confluent\"")
        elif client == "confluent":
            confluent.append(field)
    if confluent:
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            problems.append(f"{' and '.join(confluent)} client = \"confluent\": the confluent-kafka package is not "
                            "installed; pip install confluent-kafka (or pip install -e \".[confluent]\"), or "
                            "remove the client lines to use kafka-python")
    try:
        from .kafka import KafkaDeadLetterSink, KafkaSink, KafkaSource
    except ImportError as e:   # pragma: no cover - kafka-python is a dependency
        return problems + [f"[source] type = \"kafka\": {e}; pip install kafka-python"]
    classes = {"[source]": KafkaSource, "[dead_letters]": KafkaDeadLetterSink}
    for field, spec in specs:
        cls = classes.get(field, KafkaSink)
        params = inspect.signature(cls.__init__).parameters
        for k in spec:
            if k != "type" and k not in params:
                known = ", ".join(p for p in params if p != "self")
                problems.append(f"{field} unknown key {k!r} for Kafka; known keys: {known}")
    if "topics" not in cfg.source:
        problems.append("[source] topics is missing; a Kafka source needs topics = [\"<topic>\"]")
    return problems


# -- folders and the metrics port --------------------------------------------------------------
def folder_problem(field: str, path: str) -> str | None:
    """Why `path` cannot be used as a folder to write in (None when it can).

    It may not exist yet: then the nearest existing folder above it must be writable. Writing is
    tried (a temporary file, removed at once), since permissions do not tell for root or for a
    read-only file system.

    >>> folder_problem("[run] dir", tempfile.mkdtemp()) is None
    True
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        return f"{field} = {path!r}: is a file, not a folder; choose another folder or move the file away"
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        return f"{field} = {path!r}: {probe!r} is a file, so the folder cannot be created; choose another folder"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".streamnn-check-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        return (f"{field} = {path!r}: cannot write in {probe!r} ({e.strerror}); choose a writable folder "
                "(e.g. --run-dir) or fix its permissions")
    return None


def _folder_problems(cfg: Config) -> list:
    fields = [("[run] dir", cfg.run["dir"]), ("[checkpoint] dir", cfg.checkpoint["dir"])]
    files = [(f"[[sinks]] {i} path", s["path"]) for i, s in enumerate(cfg.sinks)
             if s["type"] == "jsonl" and s.get("path")]
    if cfg.dead_letters["type"] == "jsonl" and cfg.dead_letters.get("path"):
        files.append(("[dead_letters] path", cfg.dead_letters["path"]))
    problems, bad = [], []

    def inside_bad(path):   # one message for a bad folder, not one more per file in it
        path = os.path.abspath(path)
        return any(path == b or path.startswith(b + os.sep) for b in bad)

    for field, folder in fields:
        problem = None if inside_bad(folder) else folder_problem(field, folder)
        if problem:
            problems.append(problem)
            bad.append(os.path.abspath(folder))
    for field, path in files:
        if inside_bad(path):
            continue
        if os.path.isdir(path):
            problems.append(f"{field} = {path!r}: is a folder; name a file, e.g. {os.path.join(path, 'out.jsonl')!r}")
        elif os.path.exists(path) and not os.access(path, os.W_OK):
            problems.append(f"{field} = {path!r}: cannot be written (permissions); fix them or choose another file")
        else:
            problem = folder_problem(field.replace("path", "folder"), os.path.dirname(os.path.abspath(path)))
            if problem:
                problems.append(problem)
    return problems


def _metrics_problems(cfg: Config) -> list:
    return port_problem(cfg.metrics["port"])


def port_problem(port) -> list:
    """[the problem] when `port` cannot be served now (taken, or privileged); [] when it can."""
    if not port:
        return []
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("", port))
    except OSError as e:
        return [f"[metrics] port = {port}: cannot be served ({e.strerror}); choose a free port, "
                "0 for any free port, or leave it out"]
    finally:
        s.close()
    return []


# -- the learner -------------------------------------------------------------------------------
def learner_problems(cfg: Config) -> list:
    """Check each parameter's range, then build the learner and let it learn two dummy events."""
    cls = resolve_learner(cfg.learner["class"])
    params = cfg.learner["params"]
    problems = [p for p in (_param_problem(k, v) for k, v in params.items()) if p]
    key, features = params.get("key"), cfg.schema.get("features")
    if isinstance(key, str) and isinstance(features, list) and key not in features and key != cfg.schema.get("key"):
        # the learner gets only the features: it would never see its key and would learn every
        # event as one series, silently
        problems.append(f"[learner.params] key = {key!r}: the learner receives only the [schema] features "
                        f"({features}), so it would never see {key!r} and would treat every event as one "
                        f"series; name it as [schema] key = {key!r} (any values, e.g. sensor ids), or add it "
                        "to [schema] features (numbers only), or remove the learner's key")
    if problems:
        return problems
    error = _dry_run(cls, params, cfg)
    if error is None:
        return []
    for k in params:   # which parameter is it? the one whose default makes the error go away
        if _dry_run(cls, {p: v for p, v in params.items() if p != k}, cfg) is None:
            msg = str(error).strip().split("\n")[0]
            if msg.startswith(f"{k}="):   # "lr=-0.1: use ..." -> "use ..."
                msg = msg.split(": ", 1)[-1]
            return [f"[learner.params] {k} = {params[k]!r}: {cls.__name__} cannot use it "
                    f"({type(error).__name__}: {msg}); fix the value or remove it (the default)"]
    return [f"[learner] {cls.__name__} with these params cannot learn a first event ({_one_line(error)}); "
            "check [learner.params]"]


def _param_problem(key: str, value) -> str | None:
    field = f"[learner.params] {key}"
    if key == "hidden":
        ok = value is None or (isinstance(value, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value))
        return None if ok else (f"{field} = {value!r}: must be a list of layer widths (positive "
                                "integers), e.g. hidden = [32] or [64, 32]")
    if key == "activation" and isinstance(value, str):
        from ..modules import ACTIVATIONS

        if value.lower() not in ACTIVATIONS:
            return f"{field} = {value!r}: unknown activation; use one of {sorted(ACTIVATIONS)}"
        return None
    if key not in _PARAMS:
        return None
    kind, low, low_ok, high, means = _PARAMS[key]
    if value is None and kind.endswith("?"):
        return None
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if not (is_int or (kind.startswith("number") and isinstance(value, float))):
        return f"{field} = {value!r}: must be {'an integer' if kind.startswith('int') else 'a number'}; use {means}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{field} = {value!r}: must be finite; use {means}"
    return None if low is None else check_range(field, value, low, low_ok, high, means)


def _dry_run(cls, params: dict, cfg: Config) -> Exception | None:
    """Build the learner and let it learn and predict two dummy events; the error if one fails."""
    from .tasks import task_for

    feats = cfg.schema["features"]
    names = list(feats) if isinstance(feats, list) and feats else ["x0", "x1"]
    xs = [{n: 0.5 * (i + 1) * (j + 1) for j, n in enumerate(names)} for i in range(2)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            learner = cls(**params)
            kind = task_for(learner).kind
            targets = cfg.schema["target"] if isinstance(cfg.schema["target"], list) else ["y0", "y1"]
            ys = {"classification": [True, False], "regression": [0.5, -0.5],
                  "multi_target": [{t: 0.5 for t in targets}, {t: -0.5 for t in targets}],
                  "multi_label": [{t: True for t in targets}, {t: False for t in targets}]}.get(kind)
            for i, x in enumerate(xs):
                if ys is None:
                    learner.learn_one(x)
                    learner.score_one(x)
                else:
                    learner.learn_one(x, ys[i])
                    learner.predict_one(x)
    except Exception as e:   # noqa: BLE001 - any failure here is the config's
        return e
    return None


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")

"""Pipeline config files: read, validate, fill in defaults.

A config is a TOML file (YAML too when PyYAML is installed) with these sections; everything but
`name`, `[source]` and `[learner]` has defaults (see docs/runtime.md for every key):

    name = "sensor_anomaly"
    [source]      type = "file" | "river" | "kafka", and its parameters
    [schema]      features, target, key, event_id, timestamp, required, max_bytes, lags, lag_fields,
                  max_abs, max_depth, max_features, max_classes
    [learner]     class = "MLPClassifier", [learner.params]
    [run]         dir, batch_size, state_per, delayed_labels, max_events, rate, post_update_every,
                  poll_timeout_s, strict, dead_letter_limit, feature_check_events
    [checkpoint]  dir, every_events, every_seconds, resume
    [[sinks]]     type = "jsonl" | "stdout" | "memory" | "kafka", and its parameters
    [dead_letters] type = "jsonl" | "memory" | "kafka", and its parameters
    [anomaly]     threshold, sigma, warmup, alpha, log   (anomaly detectors)
    [metrics]     port, every
    [report]      on_exit

An invalid config raises `ConfigError`, whose message names the field and the fix.

>>> cfg = parse({"name": "t", "source": {"type": "river", "dataset": "Phishing"},
...              "learner": {"class": "MLPClassifier"}})
>>> cfg.run["batch_size"], cfg.sinks[0]["path"]
(256, 'runs/t/predictions.jsonl')
>>> parse({"name": "t", "source": {"type": "river", "dataset": "Phishing"},
...        "learner": {"class": "MLPClassifier", "params": {"hiden": [8]}}})
Traceback (most recent call last):
...
streamnn.runtime.config.ConfigError: [learner.params] hiden: MLPClassifier has no parameter 'hiden'; did you mean 'hidden'?
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
import os
import tomllib
from dataclasses import dataclass

__all__ = ["Config", "ConfigError", "load_config", "parse", "resolve_learner", "resolve_path"]

REQUIRED = object()
_LEARNER_MODULES = ("classification", "regression", "multioutput", "anomaly", "sequence",
                    "forecasting", "autoencoders")

# section -> key -> (accepted types, default); "list" means a list of strings, "ints" a list of integers
SPEC = {
    "": {"name": (str, REQUIRED), "description": (str, ""), "threads": (int, 1)},
    "schema": {"features": ((str, "list"), "*"), "target": ((str, "list", type(None)), None),
               "key": ((str, type(None)), None), "event_id": ((str, type(None)), None),
               "timestamp": ((str, type(None)), None), "required": ("list", []),
               "max_bytes": (int, 1_000_000), "lags": ((int, "ints"), 0), "lag_fields": ("list", None),
               "max_abs": ((int, float), 1e30), "max_depth": (int, 64), "max_features": (int, 256),
               "max_classes": (int, 10_000)},
    "learner": {"class": (str, REQUIRED), "params": (dict, {})},
    "run": {"dir": (str, None), "batch_size": (int, 256), "state_per": (str, "stream"),
            "delayed_labels": (int, 10_000), "max_events": ((int, type(None)), None),
            "rate": ((int, float, type(None)), None), "post_update_every": (int, 8),
            "poll_timeout_s": ((int, float), 1.0), "strict": (bool, False),
            "dead_letter_limit": ((int, float), 0.1), "feature_check_events": (int, 1000)},
    "checkpoint": {"dir": (str, None), "every_events": (int, 10_000),
                   "every_seconds": ((int, float), 60.0), "resume": (bool, True)},
    "anomaly": {"threshold": ((int, float, str), "auto"), "sigma": ((int, float), 4.0),
                "warmup": (int, 256), "alpha": ((int, float), 0.01), "log": (bool, True)},
    "metrics": {"port": ((int, type(None)), None), "every": (int, 1000)},
    "report": {"on_exit": (bool, True)},
}
SOURCES = {
    "file": {"path": (str, REQUIRED), "format": ((str, type(None)), None), "follow": (bool, False)},
    "river": {"dataset": (str, REQUIRED), "params": (dict, {}), "target": (str, "y"),
              "limit": ((int, type(None)), None)},
}
SINKS = {"jsonl": {"path": (str, None)}, "stdout": {}, "memory": {}}
DEAD_LETTERS = {"jsonl": {"path": (str, None)}, "memory": {}}


class ConfigError(ValueError):
    """An invalid pipeline config; the message names the field and the fix."""


@dataclass
class Config:
    """A validated config: one dict per section, defaults filled in."""

    name: str
    description: str
    threads: int
    source: dict
    schema: dict
    learner: dict
    run: dict
    checkpoint: dict
    sinks: list
    dead_letters: dict
    anomaly: dict
    metrics: dict
    report: dict
    path: str | None = None

    @property
    def run_dir(self) -> str:
        return self.run["dir"]


def load_config(path, overrides: dict | None = None, learner: bool = True) -> Config:
    """Read and validate a TOML (or YAML) pipeline config; `overrides` ({section: {key: value}})
    replace keys of the file before validation (what command-line options do). With
    `learner=False` the learner class is not imported or built (no torch: what the CLI needs to
    take its folder locks first)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        what = ("is a folder; name a .toml file in it" if os.path.isdir(path) else
                "is not a regular file; name a .toml file" if os.path.exists(path) else
                "does not exist; check the path")
        raise ConfigError(f"config file {path!r} {what} (bundled pipelines are in pipelines/)")
    try:
        if path.endswith((".yaml", ".yml")):
            try:
                import yaml
            except ImportError:
                raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); "
                                  "or write the config in TOML") from None
            with open(path) as f:
                raw = yaml.safe_load(f)
        else:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
    except (tomllib.TOMLDecodeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{path}: not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'TOML'}: {e}") from None
    for section, values in (overrides or {}).items() if isinstance(raw, dict) else ():
        if isinstance(raw.get(section), dict) and isinstance(values, dict):
            raw[section] = {**raw[section], **values}
        else:
            raw[section] = values
    try:
        cfg = parse(raw, learner=learner)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    cfg.path = path
    return cfg


def parse(raw: dict, learner: bool = True) -> Config:
    """Validate a config given as a dict (what a TOML file holds); `learner=False` skips
    building the learner (see `load_config`)."""
    if not isinstance(raw, dict):
        raise ConfigError("a config is a table of sections (name, [source], [learner], ...)")
    known = set(SPEC) - {""} | set(SPEC[""]) | {"source", "sinks", "dead_letters"}
    for k in raw:
        if k not in known:
            raise ConfigError(_unknown("", k, known))
    top = _section("", {k: v for k, v in raw.items() if k in SPEC[""]}, SPEC[""])
    if top["threads"] < 1:
        raise ConfigError(f"threads = {top['threads']}: must be >= 1; use 1 (fastest for small "
                          "networks) or the number of CPU cores torch may use")
    if "source" not in raw:
        raise ConfigError("[source] is missing; add e.g. [source] type = \"file\", path = \"data.jsonl\"")
    sections = {s: _section(s, _table(raw, s), SPEC[s]) for s in SPEC if s}
    sec = sections
    run_dir = sec["run"]["dir"] = sec["run"]["dir"] or os.path.join("runs", top["name"])
    sec["checkpoint"]["dir"] = sec["checkpoint"]["dir"] or os.path.join(run_dir, "checkpoints")
    source = _typed("source", _table(raw, "source"), SOURCES)
    sinks = raw.get("sinks", [{"type": "jsonl"}])
    if isinstance(sinks, dict):
        sinks = [sinks]
    if not isinstance(sinks, list) or not all(isinstance(s, dict) for s in sinks):
        raise ConfigError("[[sinks]] must be a list of tables, e.g. [[sinks]] type = \"jsonl\"")
    sinks = [_typed(f"sinks[{i}]", s, SINKS) for i, s in enumerate(sinks)]
    for s in sinks:
        if s["type"] == "jsonl" and not s.get("path"):
            s["path"] = os.path.join(run_dir, "predictions.jsonl")
    dead = _typed("dead_letters", raw.get("dead_letters", {"type": "jsonl"}), DEAD_LETTERS)
    if dead["type"] == "jsonl" and not dead.get("path"):
        dead["path"] = os.path.join(run_dir, "dead_letters.jsonl")
    if source["type"] == "river" and sec["schema"]["target"] is None:
        sec["schema"]["target"] = source["target"]
    _check_values(sec)
    cfg = Config(name=top["name"], description=top["description"], threads=top["threads"],
                 source=source, sinks=sinks, dead_letters=dead, **sec)
    if not learner:
        return cfg
    cls = resolve_learner(cfg.learner["class"], cfg.learner["params"])   # fails now, not hours later
    from .tasks import task_for

    learner = cls(**cfg.learner["params"])
    try:
        task = task_for(learner)
    except TypeError as e:   # a learner the runtime has no task for
        raise ConfigError(f"[learner] class = {cfg.learner['class']!r}: {e} (it runs classifiers, "
                          "regressors, MultiTargetRegressor, MultiLabelClassifier and anomaly detectors)") from None
    if task.supervised and not cfg.schema["target"]:
        raise ConfigError(f"[schema] target is missing; a {cls.__name__} learns from a target: set "
                          "target = \"<field>\" (or a list of fields for several targets)")
    if task.kind in ("multi_target", "multi_label") and not isinstance(cfg.schema["target"], list):
        raise ConfigError(f"[schema] target: a {cls.__name__} needs a list of target fields, "
                          f"e.g. target = [{cfg.schema['target']!r}, ...]")
    return cfg


# (section, key) -> (lowest, lowest allowed itself?, highest, what it means; the fix); None passes
RANGES = {
    ("run", "batch_size"): (1, True, 1_000_000, "1 to 1,000,000 records per poll, e.g. 256"),
    ("run", "max_events"): (0, True, None, "0 or more events (leave it out for no limit)"),
    ("run", "rate"): (0, False, None, "records per second, more than 0 (leave it out for no limit)"),
    ("run", "delayed_labels"): (0, True, None, "0 (no delayed labels) or more cached events"),
    ("run", "post_update_every"): (0, True, None, "0 (off) or a number of batches"),
    ("run", "poll_timeout_s"): (0, False, 3600, "seconds, more than 0 (e.g. 1.0)"),
    ("run", "dead_letter_limit"): (0, True, 1, "a fraction in [0, 1] of the records read, e.g. 0.1"),
    ("run", "feature_check_events"): (1, True, None, "1 or more of the first records, e.g. 1000"),
    ("anomaly", "sigma"): (0, False, None, "more than 0 (e.g. 4.0)"),
    ("anomaly", "warmup"): (0, True, None, "0 or more events"),
    ("anomaly", "alpha"): (0, False, 1, "a rate in (0, 1], e.g. 0.01"),
    ("metrics", "port"): (0, True, 65535, "a TCP port 1-65535, 0 for any free port, or leave it out (no server)"),
    ("metrics", "every"): (1, True, None, "1 or more events per row of metrics.jsonl"),
}


def check_range(field: str, value, low, low_ok: bool, high, means: str) -> str | None:
    """The problem with a number outside its range (None when it is fine or absent).

    >>> check_range("[run] rate", -1, 0, False, None, "records per second, more than 0")
    '[run] rate = -1: must be > 0; use records per second, more than 0'
    """
    if value is None or isinstance(value, str):
        return None
    if isinstance(value, float) and value != value:
        rule = "must be a number, not NaN"
    elif value < low or (value == low and not low_ok):
        rule = f"must be {'>=' if low_ok else '>'} {low}"
    elif high is not None and value > high:
        rule = f"must be <= {high}"
    else:
        return None
    return f"{field} = {value!r}: {rule}; use {means}"


def _check_values(sec: dict) -> None:
    for (section, key), (low, low_ok, high, means) in RANGES.items():
        problem = check_range(f"[{section}] {key}", sec[section][key], low, low_ok, high, means)
        if problem:
            raise ConfigError(problem)
    thr = sec["anomaly"]["threshold"]
    if isinstance(thr, float) and not math.isfinite(thr):
        raise ConfigError(f"[anomaly] threshold = {thr!r}: must be a finite number, \"auto\" or \"sigma\"")
    run, ck, sch = sec["run"], sec["checkpoint"], sec["schema"]
    if run["state_per"] not in ("stream", "global"):
        raise ConfigError(f"[run] state_per: {run['state_per']!r} is not valid; use \"stream\" "
                          "(one learner per stream/partition) or \"global\" (one shared learner)")
    for section, key in (("run", "batch_size"), ("checkpoint", "every_events"), ("schema", "max_bytes"),
                         ("schema", "max_depth"), ("schema", "max_features"), ("schema", "max_classes")):
        if sec[section][key] < 1:
            raise ConfigError(f"[{section}] {key}: must be at least 1 (got {sec[section][key]})")
    if not 0 < sch["max_abs"] < float("inf"):
        raise ConfigError(f"[schema] max_abs: must be a positive finite number (got {sch['max_abs']!r}); "
                          "values beyond it are dead letters (default 1e30)")
    if not ck["every_seconds"] > 0:   # NaN too: no time-based checkpoint would ever be due
        raise ConfigError(f"[checkpoint] every_seconds = {ck['every_seconds']!r}: must be positive (e.g. 60)")
    from .schema import schema_problem

    problem = schema_problem(sch)
    if problem:
        raise ConfigError(problem)
    thr = sec["anomaly"]["threshold"]
    if isinstance(thr, str) and thr not in ("auto", "sigma"):
        raise ConfigError(f"[anomaly] threshold: {thr!r}; use \"auto\" (the detector's own threshold, "
                          "else \"sigma\"), \"sigma\" (mean + sigma * std of past scores) or a number")

def _table(raw: dict, name: str) -> dict:
    t = raw.get(name, {})
    if not isinstance(t, dict):
        raise ConfigError(f"[{name}] must be a table (a section), got a {type(t).__name__}")
    return t


def _section(name: str, table: dict, spec: dict) -> dict:
    out = {}
    for k in table:
        if k not in spec:
            raise ConfigError(_unknown(name, k, spec))
    for k, (types, default) in spec.items():
        if k not in table:
            if default is REQUIRED:
                where = f"[{name}] " if name else ""
                raise ConfigError(f"{where}{k} is missing; it is required")
            out[k] = type(default)(default) if isinstance(default, (list, dict)) else default
            continue
        out[k] = _check_type(name, k, table[k], types)
    return out


def _typed(name: str, table: dict, kinds: dict) -> dict:
    """A section with a `type` key that selects its other keys; "kafka" keys pass through."""
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table")
    kind = table.get("type")
    choices = sorted(kinds) + ["kafka"]
    if kind not in choices:
        raise ConfigError(f"[{name}] type: {kind!r} is not valid; use one of {choices}")
    if kind == "kafka":
        return dict(table)
    return {"type": kind, **_section(name, {k: v for k, v in table.items() if k != "type"}, kinds[kind])}


def _check_type(section, key, value, types):
    types = types if isinstance(types, tuple) else (types,)
    where = f"[{section}] {key}" if section else key
    for t in types:
        if t == "list" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        if t == "ints" and isinstance(value, list) and all(type(v) is int for v in value):
            return list(value)
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        if isinstance(t, type) and isinstance(value, t) and not (t is int and isinstance(value, bool)):
            return value
    names = [("a list of strings" if t == "list" else "a list of whole numbers" if t == "ints"
              else "absent" if t is type(None) else t.__name__) for t in types]
    raise ConfigError(f"{where}: got {value!r} ({type(value).__name__}); expected {' or '.join(names)}")


def _unknown(section: str, key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    where = f"[{section}] " if section else ""
    return f"{where}unknown key {key!r}; {hint}known keys: {', '.join(sorted(known))}"


def resolve_learner(name: str, params: dict | None = None):
    """The streamnn learner class called `name` (only streamnn's own learners are allowed).

    With `params`, also checks that the class accepts them (by building one).
    """
    import streamnn
    from river import base

    cls = getattr(streamnn, name, None)
    for mod in _LEARNER_MODULES:
        if cls is not None:
            break
        try:
            cls = getattr(importlib.import_module(f"streamnn.{mod}"), name, None)
        except ImportError:
            continue
    ok = (inspect.isclass(cls) and issubclass(cls, base.Estimator) and hasattr(cls, "state_dict")
          and cls.__module__.startswith("streamnn."))
    if not ok:
        raise ConfigError(f"[learner] class: {name!r} is not a streamnn learner; use one of "
                          f"{', '.join(available_learners())}")
    if params is not None:
        sig = inspect.signature(cls)
        for k in params:
            if k not in sig.parameters:
                close = difflib.get_close_matches(k, list(sig.parameters), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; parameters: {', '.join(sig.parameters)}"
                raise ConfigError(f"[learner.params] {k}: {name} has no parameter {k!r}{hint}")
        try:
            cls(**params)
        except (TypeError, ValueError) as e:
            if any(str(e).startswith(f"{k}=") for k in params):   # "optimizer='x': use ..." names it
                raise ConfigError(f"[learner.params] {e}") from None
            raise ConfigError(f"[learner.params] {name}(**params) failed: {e}") from None
    return cls


def available_learners() -> list:
    import streamnn
    from river import base

    names = []
    mods = [streamnn]
    for mod in _LEARNER_MODULES:
        try:
            mods.append(importlib.import_module(f"streamnn.{mod}"))
        except ImportError:
            pass
    for m in mods:
        for n, obj in vars(m).items():
            if (inspect.isclass(obj) and issubclass(obj, base.Estimator) and hasattr(obj, "state_dict")
                    and obj.__module__.startswith("streamnn.") and not n.startswith("_")
                    and not inspect.isabstract(obj)):
                names.append(n)
    return sorted(set(names))


def resolve_path(path: str) -> str:
    """A path from a config: ``streamnn:data/x.csv`` is inside the installed package, others are
    relative to the current directory."""
    if path.startswith("streamnn:"):
        import streamnn

        return os.path.join(os.path.dirname(streamnn.__file__), path.split(":", 1)[1])
    return path

"""Loud warnings for runs that go wrong without an error: no silent failure.

Two things a new user's config can get wrong while every record is still "handled":

1. **A configured feature or target that never arrives** (``features = ["valu"]`` for a field
   ``value``; ``target = "lable"``): the learner learns from an always-missing (imputed) column,
   or learns nothing at all. `Watch` reads the first `feature_check_events` records as they are
   polled and warns when a configured feature, or every target field, is missing (absent or null)
   in more than `missing_limit` of them, naming the closest field it saw.
2. **Most records dead-lettered** (a string where a number is expected): ``events_out`` stays 0.
   `Watch` warns once the dead-letter ratio crosses `dead_letter_limit` (after at least
   `feature_check_events` records, or at the end of a shorter run).
3. **A key that is new on almost every record** (``key = "event_id"`` where a sensor id was
   meant): every series is one or two events long, so a sequence learner or a keyed detector
   learns almost nothing from its history (and lags never fill), while the per-key state grows
   with every record. `Watch` warns when a key field (the learner's ``key``, or ``[schema] key``
   with lags) takes a value not seen before on more than `unique_key_limit` of the first records.

Each warning is a JSON log line (``"event": "warning"``), a ``streamnn_warnings{kind}``
Prometheus counter, and an entry of the run summary's ``"warnings"``. With ``strict`` the run
stops at the first one and `streamnn run` exits 1.

>>> w = Watch(["value"], check_events=3)
>>> recs = [type("R", (), {"value": b'{"valu": 1.0}'})() for _ in range(3)]
>>> w.observe(recs)
>>> [(a["kind"], a["feature"], a["closest"]) for a in w.warnings]
[('missing_feature', 'value', 'valu')]
>>> w = Watch(["id", "value"], check_events=100, keys=["id"])
>>> w.observe([type("R", (), {"value": b'{"id": %d, "value": 1.0}' % i})() for i in range(100)])
>>> [(a["kind"], a["key"], a["new_values"]) for a in w.warnings]
[('unique_key', 'id', 100)]
"""

from __future__ import annotations

import csv
import difflib
import json
import time

__all__ = ["Watch"]


# what a schema field that never arrives costs, by role
_WITHOUT = {"timestamp": "outputs carry no event time, and reports and lag windows go by arrival order",
            "key": "every record falls in one series (no key), so per-key state and lag windows mix the series",
            "lag": "its lags are always missing (the learner sees only an imputed constant)"}
_SECTION = {"lag": "lag_fields"}


class Watch:
    """Watches a run's first records and its dead-letter ratio; see the module docstring.

    Parameters
    ----------
    features
        The configured feature names (None or ``"*"``: nothing to check).
    check_events
        How many of the first records to check for the features.
    missing_limit
        Warn when a feature is missing in more than this fraction of them.
    dead_letter_limit
        Warn when more than this fraction of the records read went to the dead letters.
    strict
        Call `stop` at the first warning; `failed` turns True.
    log
        ``log(**fields)`` writes one warning line.
    registry
        A Prometheus registry for the ``streamnn_warnings`` counter (None: none).
    stop
        Called (once) when a strict run must end.
    columns
        A CSV source's header: records are CSV lines in this column order.
    keys
        Key fields to check (series keys: each should repeat across records).
    targets
        The target field or fields (a record has a target when any of them holds a value).
    unique_key_limit
        Warn when a key field takes a new value on more than this fraction of the first records
        (judged on at least 100 records).
    fields
        Other fields the schema names, with their role (``[("timestamp", "ts"), ("key", "machine"),
        ("lag", "temp")]``, or a dict role -> field): each missing in more than
        `missing_limit` of the first records is a warning.
    """

    def __init__(self, features, check_events: int = 1000, missing_limit: float = 0.99,
                 dead_letter_limit: float = 0.1, strict: bool = False, log=None, registry=None,
                 stop=None, columns=None, keys=(), unique_key_limit: float = 0.9, targets=None,
                 fields=None):
        self.features = list(features) if isinstance(features, (list, tuple)) else []
        self.targets = [targets] if isinstance(targets, str) else list(targets or [])
        self._no_target = 0
        self.key_fields = [k for k in dict.fromkeys(keys) if isinstance(k, str)]
        self.unique_key_limit = unique_key_limit
        self._key_values = {k: set() for k in self.key_fields}
        self.check_events, self.missing_limit = check_events, missing_limit
        self.dead_letter_limit, self.strict = dead_letter_limit, strict
        self.log, self.stop, self.columns = log, stop, columns
        self.warnings: list = []
        self.failed = False
        self._seen = 0
        self._missing = dict.fromkeys(self.features, 0)
        pairs = (fields or {}).items() if isinstance(fields, dict) else (fields or ())
        self.fields = list(dict.fromkeys((role, f) for role, f in pairs if isinstance(f, str) and f))
        self._field_missing = dict.fromkeys(self.fields, 0)
        self._keys: dict = {}
        self._dead_warned = False
        self._t = 0.0
        self._counter = None
        if registry is not None:
            from prometheus_client import Counter

            self._counter = Counter("streamnn_warnings", "Warnings about the run (missing features, fields or "
                                    "target, dead-letter ratio, a key new on every record)", ["kind"], registry=registry)

    @property
    def seen(self) -> int:
        """How many of the first records were checked so far."""
        return self._seen

    # -- the first records -----------------------------------------------------------------
    def observe(self, records) -> None:
        """Count the configured features in `records` until `check_events` were seen."""
        if not (self.features or self.key_fields or self.targets or self.fields) or self._seen >= self.check_events:
            return
        for r in records[: self.check_events - self._seen]:
            obj = self._parse(r.value)
            self._seen += 1
            for k in obj:
                if len(self._keys) < 10_000:
                    self._keys[k] = None
            for f in self.features:
                if obj.get(f) in (None, ""):
                    self._missing[f] += 1
            for rf in self.fields:
                if obj.get(rf[1]) in (None, ""):
                    self._field_missing[rf] += 1
            if self.targets and all(obj.get(t) in (None, "") for t in self.targets):
                self._no_target += 1
            for k, seen in self._key_values.items():
                v = obj.get(k)
                if v not in (None, ""):
                    seen.add(v if isinstance(v, (str, int, float, bool)) else repr(v))
        if self._seen >= self.check_events:
            self._judge_features()

    def _parse(self, value) -> dict:
        try:
            if self.columns is not None:
                row = next(csv.reader([value.decode("utf-8", "replace")]))
                return dict(zip(self.columns, row))
            obj = json.loads(value)
            return obj if isinstance(obj, dict) else {}
        except Exception:   # noqa: BLE001 - a bad record is the decoder's business (dead letter)
            return {}

    def _judge_features(self) -> None:
        n = self._seen
        for f, missing in self._missing.items():
            if n and missing / n > self.missing_limit:
                close = difflib.get_close_matches(f, [k for k in self._keys if k not in self.features], n=1)
                fix = (f"did you mean {close[0]!r}? " if close else "") + \
                    "fix [schema] features to name fields the records have"
                self._warn("missing_feature", f"feature {f!r} is missing in {missing} of the first {n} "
                           "records; the learner sees only an imputed constant", fix=fix, feature=f,
                           missing=missing, of=n, closest=close[0] if close else None)
        self._missing = {}
        if self.targets and n and self._no_target / n > self.missing_limit:
            names = self.targets[0] if len(self.targets) == 1 else self.targets
            close = difflib.get_close_matches(self.targets[0], [k for k in self._keys if k not in self.targets
                                                                and k not in self.features], n=1)
            self._warn("missing_target", f"target {names!r} is missing in {self._no_target} of the first {n} "
                       "records; nothing is learned from them (with delayed labels, the label records "
                       "never come)", fix=(f"did you mean {close[0]!r}? " if close else "") +
                       "fix [schema] target to name the field that holds the target", target=names,
                       missing=self._no_target, of=n, closest=close[0] if close else None)
        self.targets = []
        for (role, f), missing in self._field_missing.items():
            if n and missing / n > self.missing_limit:
                close = difflib.get_close_matches(f, [k for k in self._keys if role == "lag" or k not in self.features], n=1)
                self._warn("missing_field", f"{role} field {f!r} is missing in {missing} of the first {n} records; "
                           + _WITHOUT.get(role, "it is read as absent"),
                           fix=(f"did you mean {close[0]!r}? " if close else "") +
                           f"fix [schema] {_SECTION.get(role, role)} to name a field the records have, or remove it",
                           field=f, role=role, missing=missing, of=n, closest=close[0] if close else None)
        self.fields = []
        self._field_missing = {}
        for k, seen in self._key_values.items():
            if n >= 100 and len(seen) / n > self.unique_key_limit:
                self._warn("unique_key", f"key {k!r} took a new value on {len(seen)} of the first {n} records: "
                           "each series is about one event long, so the learner learns almost nothing from "
                           "a series' history, and its per-key state grows with every record",
                           fix=f"key by the field that names a series (a sensor, a device), not an event; "
                           f"or remove the key", key=k, new_values=len(seen), of=n)
        self._key_values = {}

    # -- the dead-letter ratio -------------------------------------------------------------
    def check_totals(self, totals: dict, final: bool = False) -> None:
        """Warn (once) when the dead-letter ratio of `totals` crosses the limit."""
        n, dead = totals.get("events_in", 0), totals.get("dead_letters", 0)
        if self._dead_warned or not n or (n < self.check_events and not final):
            return
        if dead / n > self.dead_letter_limit:
            self._dead_warned = True
            self._warn("dead_letters", f"{dead} of {n} records ({dead / n:.1%}) went to the dead letters "
                       f"(limit {self.dead_letter_limit:.1%})",
                       fix="read the reasons in the dead letters and fix [schema] or the producer",
                       dead_letters=dead, events_in=n)

    def finish(self, totals: dict) -> list:
        """The last checks at the end of a run; returns the warnings."""
        if (self._missing or self._key_values or self.targets or self.fields) and self._seen:
            self._judge_features()
        self.check_totals(totals, final=True)
        return self.warnings

    def wrap_poll(self, poll, totals):
        """A source's `poll` that also feeds `observe` and, every second, `check_totals(totals())`."""
        def watched(*args, **kwargs):
            records = poll(*args, **kwargs)
            if records and self._seen < self.check_events:
                self.observe(records)
            now = time.monotonic()
            if now - self._t >= 1.0:
                self._t = now
                self.check_totals(totals())
            return records
        return watched

    def _warn(self, kind: str, message: str, fix: str, **fields) -> None:
        entry = {"kind": kind, "message": message, "fix": fix, **fields}
        self.warnings.append(entry)
        if self._counter is not None:
            self._counter.labels(kind).inc()
        if self.log is not None:
            self.log(**entry, strict=self.strict)
        if self.strict and not self.failed:
            self.failed = True
            if self.stop is not None:
                self.stop()

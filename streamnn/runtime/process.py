"""One batch of a state unit, as columns: decode -> route (masks) -> predict -> emit -> learn.

This is the runtime's one batch path (mixed into `streamnn.runtime.loop.Runner`); every schema
takes it: listed features or ``"*"``, one target or several, delayed labels or not.

1. decode: `Decoder.decode_batch` gives a `Batch` and the dead letters (in record order);
2. route, as masks over the rows: with ``features = "*"``, rows that would take the learner past
   `max_features` names are dead letters, and so are labels that would take a classifier past
   `max_classes` classes; with delayed labels, label-only rows (a target, no
   feature) are matched with the cache of events waiting for their label (unmatched: dead
   letters); every other row is predicted;
3. lags (`Lags.apply_block`) are added to the predicted rows, in stream order;
4. predict them as one frame, count losses and anomalies, emit one `OutputBatch`;
5. learn, in stream order, the predicted rows with a target (detectors: every row) and the
   matched labels; rows without a target wait in the delayed-label cache when that is on.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np

from .outputs import SKIP, OutputBatch
from .records import NO_TARGET
from .schema import reason_class
from .tasks import frame, matrix_frame

__all__ = ["BatchPath", "features"]


def features(p, lags, dec, key=None):
    """The feature frame of batch `p` (what the learner's `*_many` methods get), the lag columns
    (`Lags.apply_block`, which moves the windows on) appended; `key`: the learner's key when it is
    the schema's key field (a sensor id, str or number), added as a column of that name."""
    if p.names is None:
        X = frame(p.rows)
        names, M = list(X.columns), X.to_numpy()
    else:
        names, M = list(p.names), p.X
    if lags is not None:
        V = np.empty((len(p), len(lags.fields)))
        for j, f in enumerate(lags.fields):
            if f in names:
                V[:, j] = M[:, names.index(f)]
            else:
                V[:, j] = _target_column(p.ys, f, dec)
        M = np.concatenate([M, lags.apply_block(V, p.keys)], axis=1)
        names += lags.names
    X = matrix_frame(M, names)
    if key is not None and key not in names:
        X[key] = np.array(p.keys, dtype=object)
    return X


class BatchPath:
    """The `Runner`'s steps for one unit's fresh records (see the module docstring)."""

    def _process_batch(self, unit, records: list) -> None:
        c, task, dec = unit.counters, unit.task, self.decoder
        batch, errors = dec.decode_batch(records)                          # 1. decode
        for record, reason in errors:
            self._dead_letter(unit, record, reason)
        # delayed labels need features to tell an event from its later label: with `features = []`
        # (inputs only from lags of the targets) every record is an event
        delayed = self.delayed_labels > 0 and bool(dec.event_id) and task.supervised and dec.features != []
        pred, labels = self._route(unit, batch, delayed)                   # 2. route
        p = batch if len(pred) == len(batch) else batch.take(pred)
        X = features(p, unit.lags, dec, self._learner_key(unit))           # 3. lags
        t0 = time.perf_counter()
        predicted = task.predict(unit.learner, X) if len(p) else None      # 4. predict, emit
        t1 = time.perf_counter()
        n_anom = c["anomalies"]
        has = [i for i, y in enumerate(p.ys) if y is not NO_TARGET]
        losses = self._score(unit, predicted, p.ys, has) if len(p) else []
        if len(p):
            outs = OutputBatch(p.records, predicted.fields, p.ids, p.keys, p.timestamps, bool(dec.key))
            for sink in self.sinks:
                sink.emit(outs)
            c["events_out"] += len(p)
            if p.timestamps is not None:
                unit.last_time = p.timestamps[-1]
        XL, yl = self._learn_set(unit, batch, pred, p, X, has, labels, delayed)   # 5. learn
        learn_s, post = 0.0, math.nan
        if yl:
            learn_s, post = self._learn(unit, XL, yl)
        if self.metrics is not None:
            self.metrics.batch(self, unit, len(records), len(p), len(yl), c["anomalies"] - n_anom, losses,
                               post, t1 - t0, learn_s)

    def _learner_key(self, unit):
        """The learner's `key` when it names the schema's key field (then the key column goes to
        the learner, whatever its values: a sensor id is often a string), else None."""
        key = getattr(unit.learner, "key", None)
        return key if isinstance(key, str) and key == self.decoder.key else None

    def _route(self, unit, batch, delayed: bool) -> tuple:
        """(rows to predict, label-only rows to match with the delayed-label cache)."""
        star = batch.names is None
        new_class = self._class_cap(unit, batch)
        if not (star or delayed or new_class):
            return range(len(batch)), []
        pred, labels, added = [], [], set()
        for i in range(len(batch)):
            empty = batch.featureless(i)
            if star and not empty and self._over_cap(unit, batch, i, added):
                continue
            if new_class and new_class(i):
                continue
            if delayed and empty and batch.ys[i] is not NO_TARGET:
                labels.append(i)   # matched in stream order by `_learn_set`
                continue
            pred.append(i)
        return pred, labels

    def _score(self, unit, predicted, ys: list, has: list) -> list:
        """Add the target / label and (detectors) anomaly fields; count losses and anomalies."""
        c, fields, n = unit.counters, predicted.fields, len(ys)
        column = ys if len(has) == n else [SKIP if y is NO_TARGET else y for y in ys]
        if unit.task.kind == "anomaly":
            flags, thresholds = unit.threshold.check_many(fields["score"])
            if not all(map(math.isfinite, thresholds)):
                thresholds = [t if math.isfinite(t) else None for t in thresholds]
            c["anomalies"] += sum(flags)
            fields["anomaly"], fields["threshold"], fields["label"] = flags, thresholds, column
            return []
        fields["y"] = column
        if not has:
            return []
        losses, correct = unit.task.losses(predicted, ys, has)
        s = c["loss_sum"]
        for v in losses:
            s += v
        c["loss_sum"] = s
        c["loss_n"] += len(losses)
        c["correct"] += correct
        return losses

    def _learn_set(self, unit, batch, pred, p, X, has: list, labels: list, delayed: bool) -> tuple:
        """(frame, targets) to learn, in stream order; with delayed labels, rows without a target
        wait in the cache and label-only rows are matched with it (stream order decides)."""
        rows = has if unit.task.supervised else range(len(p))
        if not delayed:
            if len(rows) == len(p):
                return X, p.ys
            return X.iloc[rows], [p.ys[i] for i in rows]
        cols, M = list(X.columns), X.to_numpy()
        at = dict(zip(pred, range(len(pred))))   # batch row -> row of p
        xs, ys, cache = [], [], unit.delayed
        for i in sorted(at.keys() | set(labels)):
            j = at.get(i)
            if j is not None:
                x = {k: v for k, v in zip(cols, M[j].tolist()) if v == v}
                if p.ys[j] is NO_TARGET:
                    cache.put(p.event_id(j), x)
                else:
                    xs.append(x)
                    ys.append(p.ys[j])
                continue
            eid = batch.event_id(i)
            cached = cache.pop(eid)
            if cached is None:
                self._dead_letter(unit, batch.records[i], f"unmatched label: no event with id {eid!r} "
                                  f"waits for its label (delayed-label cache of {self.delayed_labels})"
                                  + not_numbers_hint(self.decoder, batch.records[i]))
                continue
            unit.counters["delayed_matched"] += 1
            xs.append(cached)
            ys.append(batch.ys[i])
        if len(xs) == len(p) and not labels:
            return X, ys
        return (_frame_of(xs, None if p.names is None else cols, self._learner_key(unit)) if xs else None), ys

    def _over_cap(self, unit, batch, i: int, added: set) -> bool:
        """With ``features = "*"``: whether row i's new feature names would take the unit past
        `max_features` names in all (then it is a dead letter); `added` collects this batch's."""
        reg = getattr(unit.learner, "features_", None)
        known = reg.index if reg is not None else unit.names
        new = [k for k in batch.rows[i] if k not in known and k not in added]
        if not new:
            return False
        cap, n = self.decoder.max_features, len(known) + len(added)
        if n + len(new) > cap:
            self._dead_letter(unit, batch.records[i], f"too many features: {len(new)} new fields (e.g. "
                              f"{new[0]!r}) after {n} known would pass max_features={cap} (list the "
                              "features in schema.features, or raise [schema] max_features)"[:400])
            return True
        added.update(new)
        if reg is None:
            known.update(dict.fromkeys(new))
        return False

    def _class_cap(self, unit, batch):
        """For a classifier whose batch brings new labels: `over(i)`, True (after sending the
        dead letter) when row i's label would take the classes past `max_classes`; else None."""
        classes = getattr(unit.learner, "classes_", None)
        if unit.task.kind != "classification" or classes is None:
            return None
        known = set(classes)
        if all(y is NO_TARGET or y in known for y in batch.ys):
            return None
        cap = self.decoder.max_classes

        def over(i):
            y = batch.ys[i]
            if y is NO_TARGET or y in known:
                return False
            if len(known) >= cap:
                self._dead_letter(unit, batch.records[i], f"too many classes: label {y!r} would be class "
                                  f"{len(known) + 1} > max_classes={cap} (raise [schema] max_classes, or fix "
                                  "the producer's labels)"[:400])
                return True
            known.add(y)
            return False

        return over

    def _learn(self, unit, X, ys: list) -> tuple:
        """Learn one batch, then, when due, its post-update loss (the overfitting gauge).
        Returns (seconds spent learning, post-update loss or NaN)."""
        task = unit.task
        t0 = time.perf_counter()
        task.learn(unit.learner, X, ys)
        learn_s = time.perf_counter() - t0
        unit.counters["learned"] += len(ys)
        self.n_batches += 1
        every = self.post_update_every
        if every and task.supervised and self.n_batches % every == 1 % every:
            losses, _ = task.losses(task.predict(unit.learner, X), ys, range(len(ys)))
            return learn_s, (sum(losses) / len(losses) if losses else math.nan)
        return learn_s, math.nan

    def _dead_letter(self, unit, record, reason: str) -> None:
        self.dead_letters.send(record, reason)
        unit.counters["dead_letters"] += 1
        if self.metrics is not None:
            self.metrics.dead_letter(reason_class(reason))


def _frame_of(xs: list, cols, key):
    """Feature dicts -> the learner's frame; the learner's key column (a sensor id, often a
    string) is kept as it is, after the numeric columns, as `features` adds it."""
    if key is None:
        return frame(xs, cols)
    F = frame([{k: v for k, v in x.items() if k != key} for x in xs],
              None if cols is None else [c for c in cols if c != key])
    F[key] = np.array([x.get(key) for x in xs], dtype=object)
    return F


def not_numbers_hint(dec, record) -> str:
    """For an unmatched label record: a hint when it carries other fields that are not numbers (with
    ``features = "*"`` a record whose fields are all text has no features, so it reads as a label
    that waits for its event), else ""."""
    if dec.features != "*" or dec.format != "json":
        return ""
    try:
        obj = json.loads(record.value)
    except (ValueError, TypeError):
        return ""
    other = [k for k, v in obj.items() if k not in dec._reserved and not isinstance(v, (int, float))][:4] \
        if isinstance(obj, dict) else []
    if not other:
        return ""
    return (f"; its other fields ({', '.join(map(repr, other))}) are not numbers, so it has no features: with "
            "features = \"*\" only numeric fields are features (encode the others as numbers before streamnn)")


def _target_column(ys: list, field: str, dec) -> np.ndarray:
    """The values of target `field` (NaN where absent or not a number), for lag windows; a
    label "3" reads 3.0, as `float` does."""
    if dec.targets is not None:
        vals = [y.get(field) if type(y) is dict else None for y in ys]
    elif field == dec.target:
        vals = [None if y is NO_TARGET else y for y in ys]
    else:
        return np.full(len(ys), np.nan)
    try:
        return np.array(vals, dtype=np.float64).reshape(len(vals))
    except (TypeError, ValueError, OverflowError):
        pass
    out = np.full(len(vals), np.nan)
    for i, v in enumerate(vals):
        try:
            out[i] = float(v)
        except (TypeError, ValueError, OverflowError):
            pass
    return out

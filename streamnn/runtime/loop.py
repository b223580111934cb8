"""The consumer loop: read a batch, decode, predict, emit, learn, checkpoint; again.

Each batch goes through these steps, per state unit (one learner per stream by default, or one
shared "global" learner):

1. Records already covered by the unit's checkpoint are skipped (a re-delivery learns nothing twice).
2. Records are decoded; bad ones go to the dead letters (durably) with their reason.
3. Label-only events (a target, no features) are matched by event id with the delayed-label
   cache and learned; unmatched ones are dead letters.
4. Events with features are predicted (or scored) as one batch, and the outputs emitted.
5. Events with a target (and, for detectors, every event) are learned in stream order, through
   `learn_many`, whose schedule equals a loop of `learn_one`: batch boundaries never matter.
6. Every `checkpoint_every` events or `checkpoint_seconds`, and at the end: flush the sinks, write
   each changed unit's checkpoint atomically, then `source.commit(...)`.

Batches whose schema lists its features (one target at most, no delayed labels) take steps 2-5 as
columns (`streamnn.runtime.columns.ColumnarPath`): the same outputs, counters and model, a few
microseconds per event.

So outputs are at-least-once (an event after the last checkpoint is emitted again after a crash,
with the same position and id), and the model state is exactly-once.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..base import _plain_params
from .columns import ColumnarPath
from .metrics import summarize
from .records import Record
from .schema import reason_class
from .state import CheckpointStore, DelayedLabels, Lags, check_compatible, make_threshold
from .tasks import frame, task_for

__all__ = ["Runner", "Unit"]

log = logging.getLogger("streamnn.runtime")

COUNTERS = ("events_in", "events_out", "learned", "dead_letters", "anomalies", "delayed_matched",
            "skipped", "loss_sum", "loss_n", "correct")


@dataclass
class Unit:
    """One learner and everything that must be checkpointed with it."""

    name: str
    learner: object
    task: object
    offsets: dict = field(default_factory=dict)      # stream -> next offset
    positions: dict = field(default_factory=dict)    # stream -> position of the last record
    delayed: DelayedLabels = None
    lags: Lags = None
    threshold: object = None                          # a ScoreThreshold for detectors
    counters: dict = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    dirty: int = 0                                    # records since the last checkpoint
    columnar: bool | None = None                      # batches take the columnar path
    saved_at: float = field(default_factory=time.monotonic)


class Runner(ColumnarPath):
    """Runs a learner over a source; see the module docstring for the steps.

    Parameters
    ----------
    source, decoder, sinks, dead_letters
        The stages (`sinks` is a list of output sinks).
    make_learner
        A callable returning a fresh learner (called once per state unit).
    store
        A `CheckpointStore` (or a folder).
    batch_size
        Most records per poll.
    checkpoint_every, checkpoint_seconds
        Checkpoint a unit after this many records or seconds, whichever comes first.
    state_per
        "stream" (one learner per stream: what a Kafka consumer group scales out) or "global".
    resume
        Start from existing checkpoints (else the checkpoints present at the start are ignored
        and overwritten; one written since, by this run or by a consumer that took the unit
        over, is still read when a unit is loaded again).
    delayed_labels
        Size of the cache of events waiting for their label; it is used when the decoder has an
        `event_id` field (0 = off: label-only events are then events without features).
    lags
        `(fields, n)`: add the last n values of the fields as features (see `Lags`).
    threshold
        Keyword arguments of `ScoreThreshold` (detectors only).
    metrics
        A `RunMetrics` (or None).
    max_events, rate
        Stop after this many records; read at most `rate` records per second.
    post_update_every
        Every this many batches, measure the loss of the batch just learned with the updated
        model (the overfitting gauge: far below the prequential loss = memorizing); 0 = never.
    """

    def __init__(self, source, decoder, make_learner, sinks, dead_letters, store, *,
                 batch_size: int = 256, poll_timeout_s: float = 1.0, checkpoint_every: int = 10_000,
                 checkpoint_seconds: float = 60.0, state_per: str = "stream", resume: bool = True,
                 delayed_labels: int = 10_000, lags=None, threshold=None, metrics=None,
                 max_events: int | None = None, rate: float | None = None,
                 post_update_every: int = 8, columns=None):
        if state_per not in ("stream", "global"):
            raise ValueError(f"state_per={state_per!r}: use 'stream' or 'global'")
        self.source, self.decoder, self.make_learner = source, decoder, make_learner
        self.sinks, self.dead_letters = list(sinks), dead_letters
        self.store = store if isinstance(store, CheckpointStore) else CheckpointStore(store)
        self.batch_size, self.poll_timeout_s = batch_size, poll_timeout_s
        self.checkpoint_every, self.checkpoint_seconds = checkpoint_every, checkpoint_seconds
        self.state_per, self.resume = state_per, resume
        self._ignored = None   # without resume: {file: stamp} of the checkpoints there at the start
        self.delayed_labels, self.lags, self.threshold = delayed_labels, lags, threshold or {}
        self.metrics, self.max_events, self.rate = metrics, max_events, rate
        self.post_update_every, self.columns = post_update_every, columns
        self.n_batches = 0
        self.units: dict = {}
        self.retired: dict = {}   # unit name -> counters of a unit handed to another consumer
        self.n_read = 0
        self.n_checkpoints = 0
        self.started = None
        self._stop = self._in_batch = False

    # -- public ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish the current batch, checkpoint and return (signal-safe)."""
        self._stop = True

    def totals(self) -> dict:
        t = dict.fromkeys(COUNTERS, 0)
        for counters in self.retired.values():
            for k, v in counters.items():
                t[k] += v
        for u in self.units.values():
            for k, v in u.counters.items():
                t[k] += v
        return t

    def start(self) -> None:
        """Register for assignment changes and take the streams the source owns now (`run`
        does this itself; call it to drive the loop with `process` by hand)."""
        self.started = time.monotonic()
        self.source.on_assign(self._on_assign)
        self.source.on_revoke(self._on_revoke)
        if hasattr(self.source, "on_lost"):
            self.source.on_lost(self._on_lost)
        self._on_assign(self.source.assigned())
        if self.metrics is not None:
            self.metrics.start(self)

    def run(self) -> dict:
        """Run until the source is exhausted, `max_events` is reached or `stop()`; returns a summary."""
        if self.started is None:
            self.start()
        # Everything alive now (torch, pandas, the learner) is kept out of the garbage collector's
        # full passes while the loop runs: those passes took ~18% of the time at 100k events/s.
        frozen_before = gc.get_freeze_count()
        gc.freeze()
        try:
            while not self._stop:
                n = self.batch_size
                if self.max_events is not None:
                    n = min(n, self.max_events - self.n_read)
                    if n <= 0:
                        break
                records = self.source.poll(n, self.poll_timeout_s)
                if records:
                    self.process(records)
                elif self.source.exhausted:
                    break
                self._maybe_checkpoint()
                self._throttle()
        finally:
            if not frozen_before:
                gc.unfreeze()
            if not self._in_batch:   # never checkpoint a batch that an error cut in half
                self.checkpoint(force=True)
        if self.metrics is not None:
            return self.metrics.finish(self)
        return summarize(self, self.totals(), time.monotonic() - self.started)

    # -- assignment --------------------------------------------------------------------------

    def _unit_name(self, stream: str) -> str:
        return stream if self.state_per == "stream" else "global"

    def _on_assign(self, streams) -> None:
        for stream in sorted(streams):
            unit = self._unit(stream)
            if stream in unit.offsets:
                self.source.seek(stream, unit.offsets[stream])

    def _on_revoke(self, streams) -> None:
        names = {self._unit_name(s) for s in streams if self._unit_name(s) in self.units}
        self.checkpoint(force=True, names=names)
        if self.state_per == "stream":
            for name in names:   # a unit that comes back reloads these counts from its checkpoint
                self._retire(name)

    def _on_lost(self, streams) -> None:
        """Partitions taken away without a clean revoke (this member was evicted from its group):
        another member may already own them, so their state is dropped, not checkpointed; a
        stream assigned again resumes from its last checkpoint."""
        names = {self._unit_name(s) for s in streams if self._unit_name(s) in self.units}
        if names:
            log.warning("partitions lost (evicted from the group): dropping the unsaved state of %s",
                        sorted(names))
        for name in names:
            if self.state_per == "stream" or set(self.units[name].offsets) <= set(streams):
                self._retire(name)

    def _retire(self, name: str) -> None:
        unit = self.units.pop(name, None)
        if unit is not None:
            self.retired[name] = dict(unit.counters)

    def _unit(self, stream: str) -> Unit:
        name = self._unit_name(stream)
        unit = self.units.get(name)
        if unit is None:
            unit = self.units[name] = self._load_unit(name)
            self.retired.pop(name, None)
        return unit

    def _load_unit(self, name: str) -> Unit:
        learner = self.make_learner()
        if not hasattr(learner, "state_dict"):
            raise TypeError(f"{type(learner).__name__} has no state_dict(); the runtime checkpoints "
                            "streamnn learners only")
        unit = Unit(name, learner, task_for(learner), delayed=DelayedLabels(max(self.delayed_labels, 1)))
        if self.lags:
            unit.lags = Lags(*self.lags)
        if unit.task.kind == "anomaly":
            unit.threshold = make_threshold(learner, self.threshold)
        ck = self._stored(name)
        if ck is not None:
            check_compatible(ck, learner, self.store.path(name))
            learner.load_state_dict(ck["state"])
            rt = ck["runtime"]
            unit.offsets, unit.positions = dict(ck["offsets"]), dict(ck["positions"])
            unit.delayed.load_state_dict(rt["delayed"])
            if unit.lags is not None and "lags" in rt:
                unit.lags.load_state_dict(rt["lags"])
            if unit.threshold is not None and "threshold" in rt:
                unit.threshold.load_state_dict(rt["threshold"])
            unit.counters.update(ck["counters"])
        return unit

    def _stored(self, name: str):
        """The checkpoint unit `name` resumes from, or None. Without `resume` the files there at
        the first load are ignored, but never one written since: a unit that comes back (after
        a fence, a lost or revoked partition) continues from the newest state, not a blank one."""
        if self._ignored is None:
            self._ignored = {} if self.resume else self.store.ignore_existing()
        path = self.store.path(name)
        if path in self._ignored and self.store.stamp(name) == self._ignored[path]:
            return None
        return self.store.load(name)

    # -- one batch ---------------------------------------------------------------------------

    def process(self, records: list) -> None:
        """Steps 1-5 of the module docstring for one batch of records."""
        self.n_read += len(records)
        if len({r.stream for r in records}) == 1:   # the usual poll: one partition
            groups = {self._unit_name(records[0].stream): records}
        else:
            groups: dict = {}
            for r in records:
                groups.setdefault(self._unit_name(r.stream), []).append(r)
        self._in_batch = True
        for name, recs in groups.items():
            unit = self.units.get(name) or self._unit(recs[0].stream)
            self._process_unit(unit, recs)
        self._in_batch = False

    def _process_unit(self, unit: Unit, records: list) -> None:
        c = unit.counters
        fresh = self._fresh(unit, records)                            # 1. skip what is learned
        c["skipped"] += len(records) - len(fresh)
        c["events_in"] += len(fresh)
        unit.dirty += len(records)
        if self._columnar(unit):
            return self._process_columns(unit, fresh)
        events, errors = self.decoder.decode_many(fresh)               # 2. decode
        for record, reason in errors:
            self._dead_letter(unit, record, reason)
        task, delayed = unit.task, self.delayed_labels > 0 and bool(self.decoder.event_id)
        pred_ev, pred_x, learn_x, learn_y, learn_rows = [], [], [], [], []
        star, added = self.decoder.features == "*", set()
        for ev in events:                                              # 3. route
            x = ev.x
            if star and x and self._over_cap(unit, ev, added):
                continue
            if not x and ev.has_target and delayed and task.supervised:
                cached = unit.delayed.pop(ev.event_id)
                if cached is None:
                    self._dead_letter(unit, ev.record, f"unmatched label: no event with id {ev.event_id!r} "
                                      f"waits for its label (delayed-label cache of {self.delayed_labels})")
                else:
                    c["delayed_matched"] += 1
                    learn_x.append(cached)
                    learn_y.append(ev.y)
                    learn_rows.append(None)
                continue
            if unit.lags is not None:
                try:
                    x = unit.lags.apply(x, _values(ev, self.decoder), ev.key)
                except Exception as e:   # one record never stops the consumer
                    self._dead_letter(unit, ev.record, f"undecodable: {type(e).__name__}: {e}"[:300])
                    continue
            if ev.has_target or not task.supervised:
                learn_x.append(x)
                learn_y.append(ev.y)
                learn_rows.append(len(pred_x))
            elif delayed:
                unit.delayed.put(ev.event_id, x)
            pred_ev.append(ev)
            pred_x.append(x)
        X = frame(pred_x, self.columns) if pred_x else None
        t0 = time.perf_counter()
        outs = task.predict(unit.learner, X, pred_x) if pred_x else []  # 4. predict, emit
        t1 = time.perf_counter()
        n_anom = c["anomalies"]
        bad: list = []
        losses = self._outputs(unit, pred_ev, outs, bad)
        if bad:   # a loss that raised: that record is a dead letter, neither output nor learned
            drop = {i for i, _ in bad}
            for i, reason in bad:
                self._dead_letter(unit, pred_ev[i].record, reason)
            outs = [o for i, o in enumerate(outs) if i not in drop]
            keep = [j for j, r in enumerate(learn_rows) if r not in drop]
            learn_x, learn_y = [learn_x[j] for j in keep], [learn_y[j] for j in keep]
            learn_rows = [None] * len(keep)   # X no longer matches: learn from a frame of learn_x
        for sink in self.sinks:
            sink.emit(outs)
        c["events_out"] += len(outs)
        learn_s, post = 0.0, math.nan
        if learn_x:                                                    # 5. learn
            same = len(learn_x) == len(pred_x) and learn_rows[-1] == len(pred_x) - 1 and None not in learn_rows
            XL = X if same else frame(learn_x, self.columns)
            learn_s, post = self._learn(unit, XL, learn_x, learn_y,
                                        lambda: self._post_loss(unit, XL, learn_x, learn_y))
        if self.metrics is not None:
            self.metrics.batch(self, unit, len(fresh), len(outs), len(learn_x) if learn_x else 0,
                               c["anomalies"] - n_anom, losses, post, t1 - t0, learn_s)

    def _learn(self, unit: Unit, X, xs, ys: list, post_loss) -> tuple:
        """Step 5 for one batch: learn it, then, when due, `post_loss()` (the overfitting gauge).
        Returns (seconds spent learning, post-update loss or NaN)."""
        t0 = time.perf_counter()
        unit.task.learn(unit.learner, X, xs, ys)
        learn_s = time.perf_counter() - t0
        unit.counters["learned"] += len(ys)
        self.n_batches += 1
        every = self.post_update_every
        if every and unit.task.supervised and self.n_batches % every == 1 % every:
            return learn_s, post_loss()
        return learn_s, math.nan

    @staticmethod
    def _fresh(unit: Unit, records: list) -> list:
        """The records not covered by the unit's offsets yet (a re-delivery is skipped), in order;
        the offsets and positions move past them."""
        r0 = records[0]
        stream = r0.stream
        try:   # one stream, increasing offsets, all new: the usual batch
            offs = np.fromiter((r.offset for r in records), dtype=np.int64, count=len(records))
            simple = (records[-1].stream == stream and offs[0] >= unit.offsets.get(stream, -1)
                      and bool((np.diff(offs) > 0).all()) and all(r.stream == stream for r in records))
        except (TypeError, ValueError, OverflowError):
            simple = False
        if simple:
            unit.offsets[stream] = records[-1].offset + 1
            unit.positions[stream] = records[-1].position
            return records
        fresh = []
        for r in records:
            if r.offset < unit.offsets.get(r.stream, -1):
                continue
            fresh.append(r)
            unit.offsets[r.stream] = r.offset + 1
            unit.positions[r.stream] = r.position
        return fresh

    def _over_cap(self, unit: Unit, ev, added: set) -> bool:
        """With ``features = "*"``: whether the event's new feature names would take the unit past
        `max_features` names in all (then it is a dead letter); `added` collects this batch's."""
        reg = getattr(unit.learner, "features_", None)
        known = reg.index if reg is not None else unit.task.names
        new = [k for k in ev.x if k not in known and k not in added]
        if not new:
            return False
        cap, n = self.decoder.max_features, len(known) + len(added)
        if n + len(new) > cap:
            self._dead_letter(unit, ev.record, f"too many features: {len(new)} new fields (e.g. "
                              f"{new[0]!r}) after {n} known would pass max_features={cap} (list the "
                              "features in schema.features, or raise [schema] max_features)"[:400])
            return True
        added.update(new)
        if reg is None:
            known.update(dict.fromkeys(new))
        return False

    def _outputs(self, unit: Unit, events: list, outs: list, bad: list | None = None) -> list:
        """Fill in id, position, target and (detectors) anomaly flags; returns the losses. A loss
        that raises puts (row, reason) in `bad` (the caller dead-letters those records)."""
        task, c, thr = unit.task, unit.counters, unit.threshold
        dec, losses = self.decoder, []
        for i, (ev, out) in enumerate(zip(events, outs)):
            o = {"id": ev.event_id, "position": ev.record.position}
            if dec.key:
                o["key"] = ev.key
            elif ev.record.key is not None:   # no key field in the schema: the message's own key
                k = ev.record.key
                o["key"] = k.decode("utf-8", "replace") if isinstance(k, bytes) else k
            if dec.timestamp:
                o["timestamp"] = ev.timestamp
            o.update(out)
            if thr is not None:
                flag, t = thr.check(out["score"])
                o["anomaly"] = flag
                o["threshold"] = t if math.isfinite(t) else None
                c["anomalies"] += flag
                if ev.has_target:
                    o["label"] = ev.y
            elif ev.has_target:
                o["y"] = ev.y
                if out["prediction"] is None or out["prediction"] == {}:
                    outs[i] = o
                    continue   # an untrained model predicts nothing yet: no loss to count
                try:
                    loss = task.loss(out, ev.y, i)
                except Exception as e:
                    if bad is None:
                        raise
                    bad.append((i, f"bad value: the loss of this record failed ({type(e).__name__}: {e})"[:300]))
                    continue
                losses.append(loss)
                c["loss_sum"] += loss
                c["loss_n"] += 1
                if task.kind == "classification":
                    c["correct"] += out["prediction"] == ev.y
            outs[i] = o
        return losses

    def _post_loss(self, unit: Unit, X, xs: list, ys: list) -> float:
        outs = unit.task.predict(unit.learner, X, xs)
        losses = [unit.task.loss(o, y, i) for i, (o, y) in enumerate(zip(outs, ys))]
        return sum(losses) / len(losses)

    def _dead_letter(self, unit: Unit, record: Record, reason: str) -> None:
        self.dead_letters.send(record, reason)
        unit.counters["dead_letters"] += 1
        if self.metrics is not None:
            self.metrics.dead_letter(reason_class(reason))

    # -- checkpoints -------------------------------------------------------------------------

    def _maybe_checkpoint(self) -> None:
        now = time.monotonic()
        due = {n for n, u in self.units.items() if u.dirty and (
            u.dirty >= self.checkpoint_every or now - u.saved_at >= self.checkpoint_seconds)}
        if due:
            self.checkpoint(names=due)

    def checkpoint(self, force: bool = False, names=None) -> None:
        """Commit the changed units (all named ones with `force`) in five steps:

        1. flush the output sinks (fsynced files, acknowledged Kafka messages);
        2. flush the dead letters the same way: every letter of a record the checkpoint covers
           is durable before the checkpoint exists;
        3. fence: a unit whose stored checkpoint another consumer has written as far or further
           is dropped here, not saved (it owns the unit now);
        4. write each remaining unit's checkpoint atomically (steps 3 and 4 are one step for
           every process sharing the folder);
        5. commit the saved offsets to the source (lag monitoring only).
        """
        names = set(self.units) if names is None else set(names)
        units = [self.units[n] for n in sorted(names) if n in self.units and (self.units[n].dirty or force)]
        if not units:
            return
        for sink in self.sinks:                                                # 1
            sink.flush()
        self.dead_letters.flush()                                              # 2
        offsets = {}
        for u in units:
            stale = self.store.save_unless_ahead(u.name, self._state(u))       # 3, 4
            if stale is not None:   # evicted: another member checkpointed this unit further
                log.warning("not checkpointing %s: its stored checkpoint is as far or further along "
                            "(%s at %d, this consumer at %d), so another consumer owns it now; "
                            "dropping the state kept here", u.name, *stale)
                self._retire(u.name)
                continue
            u.dirty, u.saved_at = 0, time.monotonic()
            offsets.update(u.offsets)
            self.n_checkpoints += 1
        self.source.commit(offsets)                                            # 5
        if self.metrics is not None:
            self.metrics.checkpointed()

    def _state(self, u: Unit) -> dict:
        rt = {"delayed": u.delayed.state_dict()}
        if u.lags is not None:
            rt["lags"] = u.lags.state_dict()
        if u.threshold is not None:
            rt["threshold"] = u.threshold.state_dict()
        learner = u.learner
        return {"learner": f"{type(learner).__module__}.{type(learner).__qualname__}",
                "params": _plain_params(learner), "state": learner.state_dict(),
                "offsets": dict(u.offsets), "positions": dict(u.positions), "runtime": rt,
                "counters": dict(u.counters), "task": u.task.kind, "saved_at": time.time()}

    def _throttle(self) -> None:
        if not self.rate:
            return
        while not self._stop:
            wait = self.started + self.n_read / self.rate - time.monotonic()
            if wait <= 0:
                return
            time.sleep(min(wait, 0.1))


def _values(ev, decoder) -> dict:
    """The event's features and targets by field name (what lag windows read)."""
    if isinstance(ev.y, dict):
        return {**ev.x, **ev.y}
    if ev.has_target and decoder.target:
        return {**ev.x, decoder.target: ev.y}
    return ev.x

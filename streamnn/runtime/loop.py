"""The consumer loop: read a batch, decode, predict, emit, learn, checkpoint; again.

Each batch goes through these steps, per state unit (one learner per stream by default, or one
shared "global" learner):

1. Records already covered by the unit's checkpoint are skipped (a re-delivery learns nothing twice).
2. The rest take the one batch path (`streamnn.runtime.process`): decode into columns (bad records
   go to the dead letters, durably, with their reason), route (label-only events matched with the
   delayed-label cache), predict and emit, learn in stream order through `learn_many`, whose
   schedule equals a loop of `learn_one`: batch boundaries never matter.
3. Every `checkpoint_every` events or `checkpoint_seconds`, and at the end, `Checkpointer.commit`
   (`streamnn.runtime.checkpointing`): flush the sinks and dead letters, fence, save, commit offsets.

So outputs are at-least-once (an event after the last checkpoint is emitted again after a crash,
with the same position and id), and the model state is exactly-once.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from .checkpointing import Checkpointer, restore_unit
from .metrics import summarize
from .process import BatchPath
from .schema import lag_names
from .state import CheckpointStore, DelayedLabels, Lags, check_compatible, make_threshold
from .tasks import task_for

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
    names: dict = field(default_factory=dict)         # features seen (learners without `features_`)
    last_time: object = None                          # the schema timestamp of the last output
    saved_at: float = field(default_factory=time.monotonic)


class Runner(BatchPath):
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
                 post_update_every: int = 8):
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
        if lags and decoder.features == "*":
            decoder.reserve(lag_names(*lags))   # a record's field "a_lag1" is not a second column
        self.metrics, self.max_events, self.rate = metrics, max_events, rate
        self.post_update_every = post_update_every
        self.checkpointer = Checkpointer(self.sinks, dead_letters, self.store, source)
        self.n_batches = 0
        self.units: dict = {}
        self.retired: dict = {}   # unit name -> counters of a unit handed to another consumer
        self.n_read = 0
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
            restore_unit(unit, ck, self.store.path(name))
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
        self._process_batch(unit, fresh)                              # 2. the batch path

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

    # -- checkpoints -------------------------------------------------------------------------

    def _maybe_checkpoint(self) -> None:
        now = time.monotonic()
        due = {n for n, u in self.units.items() if u.dirty and (
            u.dirty >= self.checkpoint_every or now - u.saved_at >= self.checkpoint_seconds)}
        if due:
            self.checkpoint(names=due)

    def checkpoint(self, force: bool = False, names=None) -> None:
        """Commit the changed units (all named ones with `force`): `Checkpointer.commit`'s five
        steps; a unit fenced off there (another consumer owns it now) is dropped here."""
        names = set(self.units) if names is None else set(names)
        units = [self.units[n] for n in sorted(names) if n in self.units and (self.units[n].dirty or force)]
        if not units:
            return
        for name in self.checkpointer.commit(units):
            self._retire(name)
        if self.metrics is not None:
            self.metrics.checkpointed()

    @property
    def n_checkpoints(self) -> int:
        return self.checkpointer.n_saved

    def _throttle(self) -> None:
        if not self.rate:
            return
        while not self._stop:
            wait = self.started + self.n_read / self.rate - time.monotonic()
            if wait <= 0:
                return
            time.sleep(min(wait, 0.1))


"""`Checkpointer.commit()`: the order in which a checkpoint becomes true, as code.

1. flush the output sinks (fsynced files, acknowledged Kafka messages);
2. flush the dead letters the same way: every letter of a record the checkpoint covers is
   durable before the checkpoint exists;
3. fence: a unit whose stored checkpoint another consumer has written as far or further is not
   saved (it owns the unit now);
4. write each remaining unit's checkpoint atomically (3 and 4 are one step for every process
   sharing the folder: `CheckpointStore.save_unless_ahead`);
5. commit the saved offsets to the source (lag monitoring only: the checkpoint is the truth).

Outputs are therefore at-least-once (an event after the last checkpoint is emitted again after a
crash, with the same position and id), and the model state is exactly-once.
"""

from __future__ import annotations

import logging
import time

from ..base import _plain_params
from ..serialization import load_state

__all__ = ["Checkpointer", "unit_state", "restore_unit"]

log = logging.getLogger("streamnn.runtime")


class Checkpointer:
    """Commits units' checkpoints in the five steps of the module docstring.

    Parameters
    ----------
    sinks, dead_letters, store, source
        The runner's output sinks, dead-letter sink, `CheckpointStore` and source.
    """

    def __init__(self, sinks, dead_letters, store, source):
        self.sinks, self.dead_letters, self.store, self.source = sinks, dead_letters, store, source
        self.n_saved = 0

    def commit(self, units: list) -> list:
        """Commit `units`; returns the names of those fenced off (another consumer owns them)."""
        for sink in self.sinks:                                         # 1. flush sinks
            sink.flush()
        self.dead_letters.flush()                                       # 2. flush dead letters
        offsets, fenced = {}, []
        for u in units:
            stale = self.store.save_unless_ahead(u.name, unit_state(u))  # 3. fence, 4. save
            if stale is not None:
                log.warning("not checkpointing %s: its stored checkpoint is as far or further along "
                            "(%s at %d, this consumer at %d), so another consumer owns it now; "
                            "dropping the state kept here", u.name, *stale)
                fenced.append(u.name)
                continue
            u.dirty, u.saved_at = 0, time.monotonic()
            offsets.update(u.offsets)
            self.n_saved += 1
        self.source.commit(offsets)                                     # 5. commit offsets
        return fenced


def unit_state(u) -> dict:
    """A unit's checkpoint: the learner's state and parameters, offsets, runtime state, counters."""
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


def restore_unit(u, ck: dict, path: str) -> None:
    """Load a checkpoint written by `unit_state` (read from `path`) into unit `u` (its learner is
    fresh); a learner state that does not fit is a one-line `CheckpointError`."""
    load_state(u.learner, ck["state"], path, "delete it, or run with --fresh, to start over")
    rt = ck["runtime"]
    u.offsets, u.positions = dict(ck["offsets"]), dict(ck["positions"])
    u.delayed.load_state_dict(rt["delayed"])
    if u.lags is not None and "lags" in rt:
        u.lags.load_state_dict(rt["lags"])
    if u.threshold is not None and "threshold" in rt:
        u.threshold.load_state_dict(rt["threshold"])
    u.counters.update(ck["counters"])

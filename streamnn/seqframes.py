"""Frame-level `learn_many` of the stateful sequence learners.

The schedule is the one of a loop of `learn_one`: a frame is cut into chunks at the events where an
optimizer step is due (every `update_every` events, counted across frames), and each chunk is
learned at once:

1. the states after the chunk's events are computed with the current weights, one batched cell
   step per wave (wave i = the i-th event of every key in the chunk), from the keys' stored states;
2. the chunk's rows, targets, weights and states are written into the per-key store with one
   scatter per wave (`KeyStore.append`, which also cuts full BPTT segments);
3. the optimizer step is taken if it is due, exactly where `learn_one` takes it.

Equality with `learn_one`: with one key (or `key=None`), every wave holds one event, so the
arithmetic is that of `learn_one` and the result is bit-identical. With keys interleaved in a
chunk, a wave's states come from one (B, F) matrix product instead of B products of one row,
which rounds differently in the last bits (float32): the schedule, the segments and the steps are
the same and the model agrees with `learn_one` to float rounding, but not bit for bit. Given the
same frames, `learn_many` is deterministic, and a stream split at a frame boundary and resumed from
`state_dict` equals the uninterrupted run bit for bit (`tests/test_sequence_frames.py`).

Where a chunk cannot be learned at once, it falls back to one event at a time (same schedule):
a key with `max_keys` evictions in the chunk, or a BPTT segment that fills up while it still has
untrained events (a step forced inside the chunk; only when `update_every > bptt // 2`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["FrameLearning"]


def waves(keys):
    """Rows grouped by occurrence: waves (lists of rows; wave i = the i-th event of each key),
    prev (m,) the row of the same key's previous event in the chunk or -1, and for the first
    wave's rows, the number of events of their key in the chunk."""
    prev = np.full(len(keys), -1, np.int64)
    last, occ, groups = {}, {}, []
    for r, k in enumerate(keys):
        p = last.get(k)
        w = 0 if p is None else occ[p] + 1
        if p is not None:
            prev[r] = p
        occ[r] = w
        if w == len(groups):
            groups.append([])
        groups[w].append(r)
        last[k] = r
    first = np.asarray(groups[0] if groups else [], np.int64)
    groups = [slice(g[0], g[0] + 1) if len(g) == 1 else np.asarray(g) for g in groups]   # (views: cheap)
    count = np.ones(len(first), np.int64)
    if len(groups) > 1:
        n_of = {keys[r]: occ[r] + 1 for r in last.values()}
        count = np.fromiter((n_of[keys[r]] for r in first), np.int64, len(first))
    return groups, prev, first, count


class FrameLearning:
    """Mixed into `SequenceLearner`: `_learn_rows`, the frame path of `learn_many`."""

    def _learn_rows(self, keys, M: np.ndarray, targets, weights, encode):
        """Learn rows M (n, F) of `keys` in stream order, with the schedule of `learn_one`."""
        i, n = 0, len(M)
        while i < n:
            if not self.stateful or self.module_ is None or M.shape[1] > self.n_in_:
                self._learn_event(keys[i], M[i], encode(targets[i]), weights[i])
                i += 1
                continue
            j = min(n, i + self.update_every - self._pending)
            i += self._learn_chunk(keys[i:j], M[i:j], targets[i:j], weights[i:j], encode)

    def _learn_chunk(self, keys, M, targets, weights, encode) -> int:
        """Learn a chunk that ends at or before the next due step; returns the events learned."""
        st = self.keys_
        groups, prev, first, count = waves(keys)
        before = st.lookup(keys)
        starts, states = self._chunk_states(groups, prev, before, M)
        if self._needs_rows(before[first], count):
            return self._learn_chunk_rows(keys, M, targets, weights, encode, starts, states)
        T = np.array([encode(t) for t in targets], dtype=np.float64)   # no step inside the chunk
        W = np.asarray(weights, dtype=np.float64)
        st.ensure_features(M.shape[1])
        S = st.slots_of(keys)
        for rows in groups:
            st.append(S[rows], M[rows], T[rows], W[rows], states[rows])
        m = len(keys)
        self.n_seen_ += m
        self._pending += m
        self._version += 1
        if self._pending >= self.update_every:
            self._step()
        return m

    def _chunk_states(self, groups, prev, before, M):
        """Start and next states (m, S) of a chunk's events, one batched cell step per wave."""
        Z = self._scale(M)
        starts = np.zeros((len(M), self.keys_.state_size), np.float32)
        states = np.zeros_like(starts)
        for w, rows in enumerate(groups):
            if w == 0:
                starts[rows] = self.keys_.gather(before[rows])
            else:
                p = prev[rows]
                starts[rows] = states[p]
            states[rows] = self._run(Z[rows][:, None], starts[rows])[1]
        return starts, states

    def _needs_rows(self, first_slots, count) -> bool:
        """Whether the chunk must go one event at a time: an eviction, or a step forced inside it.
        `first_slots`: the slot of each key of the chunk before it (-1 = new), `count`: its events."""
        st = self.keys_
        if st.max_keys is not None and len(st) + int((first_slots < 0).sum()) > st.max_keys:
            return True
        known = first_slots >= 0
        s = np.where(known, first_slots, 0)
        length = np.where(known, st.length[s], 0) if len(st.length) else np.zeros_like(s)
        new = np.where(known, st.new[s], 0) if len(st.new) else np.zeros_like(s)
        L, c = self.bptt, count
        w0 = L - length                              # the key's event that finds its segment full
        forced = (w0 < c) & (new + w0 > 0)           # ... while it holds untrained events
        twice = w0 + (L - L // 2) < c                # a second cut inside the chunk
        return bool((forced | twice).any())

    def _learn_chunk_rows(self, keys, M, targets, weights, encode, starts, states) -> int:
        """One event at a time (the chunk's precomputed states reused where they still apply)."""
        st = self.keys_
        for r in range(len(keys)):
            s, u = st.get(keys[r]), self.n_updates_ + self.n_nonfinite_
            ok = np.array_equal(st.h[s], starts[r]) if s is not None else not starts[r].any()
            self._learn_event(keys[r], M[r], encode(targets[r]), weights[r], states[r] if ok else None)
            if self.n_updates_ + self.n_nonfinite_ != u and r < len(keys) - 1:   # a forced step
                return r + 1                                                  # recompute the rest
        return len(keys)


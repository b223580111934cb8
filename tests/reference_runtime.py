"""An oracle for the runtime's one batch path (tests only): the same steps written the plain
way, one event at a time: decode each record with `Decoder.decode`, route with dicts, lags from
a loop over events, outputs as dicts, one loss per event. `ReferenceRunner` swaps it in."""

import math

from streamnn.keystore import remember
from streamnn.runtime.loop import Runner
from streamnn.runtime.records import DecodeError
from streamnn.runtime.tasks import frame


def lag_loop(lags, x: dict, values: dict, key=None) -> dict:
    """Features `x` plus the lags of `lags.fields` (missing while the window fills); then
    remember `values` (the plain loop that `Lags.apply_block` replaces)."""
    k = "" if key is None else str(key)
    window = lags.windows.get(k, [])
    out = dict(x)
    for i, row in enumerate(window):
        for f, v in zip(lags.fields, row):
            if v == v:
                out[f"{f}_lag{i + 1}"] = v
    row = []
    for f in lags.fields:
        try:
            row.append(float(values.get(f)))
        except (TypeError, ValueError):
            row.append(math.nan)
    window.insert(0, row)
    del window[lags.n:]
    lags.n_forgotten += remember(lags.windows, k, window, lags.max_keys)   # the most recently seen last
    return out


def _loss(kind, out, y, P, index, i):
    if kind == "classification":
        j = index.get(y)
        return -math.log(max(0.0 if j is None else P[i, j], 1e-15))
    p = out["prediction"]
    if kind == "multi_target":
        return sum((p.get(k, 0.0) - v) * (p.get(k, 0.0) - v) for k, v in y.items()) / max(len(y), 1)
    d = p - y
    return d * d


class ReferenceRunner(Runner):
    def _process_batch(self, unit, records):
        c, task, dec = unit.counters, unit.task, self.decoder
        events = []
        for r in records:
            ev = dec.decode(r)
            if type(ev) is DecodeError:
                self._dead_letter(unit, r, ev.reason)
            else:
                events.append(ev)
        delayed = self.delayed_labels > 0 and bool(dec.event_id) and task.supervised
        star, added = dec.features == "*", set()
        pred_ev, pred_x, learn_x, learn_y = [], [], [], []
        for ev in events:
            x = ev.x
            if star and x and self._over_cap_x(unit, ev, added):
                continue
            if not x and ev.has_target and delayed:
                cached = unit.delayed.pop(ev.event_id)
                if cached is None:
                    self._dead_letter(unit, ev.record, f"unmatched label: no event with id {ev.event_id!r} "
                                      f"waits for its label (delayed-label cache of {self.delayed_labels})")
                else:
                    c["delayed_matched"] += 1
                    learn_x.append(cached)
                    learn_y.append(ev.y)
                continue
            if unit.lags is not None:
                vals = dict(ev.x)
                if isinstance(ev.y, dict):
                    vals.update(ev.y)
                elif ev.has_target and dec.target:
                    vals[dec.target] = ev.y
                x = lag_loop(unit.lags, x, vals, ev.key)
            if ev.has_target or not task.supervised:
                learn_x.append(x)
                learn_y.append(ev.y)
            elif delayed:
                unit.delayed.put(ev.event_id, {k: v for k, v in x.items() if v == v})
            pred_ev.append(ev)
            pred_x.append(x)
        cols = None if star else list(dec.features) + (unit.lags.names if unit.lags else [])
        n_anom, losses, outs = c["anomalies"], [], []
        if pred_x:
            X = frame(pred_x, cols)
            pr = task.predict(unit.learner, X)
            for i, ev in enumerate(pred_ev):
                o = {"id": ev.event_id, "position": ev.record.position}
                if dec.key:
                    o["key"] = ev.key
                elif ev.record.key is not None:
                    k = ev.record.key
                    o["key"] = k.decode("utf-8", "replace") if isinstance(k, bytes) else k
                if dec.timestamp:
                    o["timestamp"] = ev.timestamp
                out = {name: col[i] for name, col in pr.fields.items()}
                o.update(out)
                if task.kind == "anomaly":
                    flag, t = unit.threshold.check(out["score"])
                    o["anomaly"], o["threshold"] = flag, (t if math.isfinite(t) else None)
                    c["anomalies"] += flag
                    if ev.has_target:
                        o["label"] = ev.y
                elif ev.has_target:
                    o["y"] = ev.y
                    if out["prediction"] is not None and out["prediction"] != {}:
                        loss = _loss(task.kind, out, ev.y, pr.matrix, pr.columns, i)
                        losses.append(loss)
                        c["loss_sum"] += loss
                        c["loss_n"] += 1
                        if task.kind == "classification":
                            c["correct"] += out["prediction"] == ev.y
                outs.append(o)
            for sink in self.sinks:
                sink.emit(outs)
            c["events_out"] += len(outs)
        post = math.nan
        if learn_x:
            XL = frame(learn_x, cols)
            _, post = self._learn(unit, XL, learn_y)
        if self.metrics is not None:
            self.metrics.batch(self, unit, len(records), len(outs), len(learn_y), c["anomalies"] - n_anom,
                               losses, post, 0.0, 0.0)

    def _over_cap_x(self, unit, ev, added):
        reg = getattr(unit.learner, "features_", None)
        known = reg.index if reg is not None else unit.names
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

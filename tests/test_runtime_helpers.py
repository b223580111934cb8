"""Shared helpers of the runtime tests (no tests here): deterministic streams, small configs."""

from __future__ import annotations

import json
import math
import random

import pytest

import torch

from streamnn.runtime.config import parse
from streamnn.runtime.pipeline import Pipeline

LEARNER = {"class": "MLPRegressor",
           "params": {"hidden": [8], "seed": 0, "batch_size": 8, "update_every": 4, "lr": 0.01}}


def write_stream(path, n=600, seed=0, ids=True, classes=False):
    """A JSONL stream: features a, b (and a noise column), target y; returns the rows."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.uniform(-1, 1), rng.uniform(-1, 1)
        y = (a > b) if classes else 2 * a - b + rng.gauss(0, 0.05)
        row = {"id": f"e{i}", "a": a, "b": b, "noise": rng.gauss(0, 1), "y": y}
        if not ids:
            row.pop("id")
        rows.append(row)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return rows


def config(run_dir, source, learner=None, **sections):
    """A config dict for a pipeline writing into run_dir (no report unless asked)."""
    raw = {"name": "t", "source": source, "learner": learner or LEARNER,
           "schema": {"features": ["a", "b", "noise"], "target": "y", "event_id": "id"},
           "run": {"dir": str(run_dir), "batch_size": 50},
           "checkpoint": {"every_events": 100},
           "report": {"on_exit": False}, "metrics": {"every": 100}}
    for k, v in sections.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return raw


def run(raw, **kwargs):
    p = Pipeline(parse(raw), **kwargs)
    summary = p.run()
    return p, summary


def lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def assert_same_state(a, b):
    """Two learner states are identical (tensors bit for bit, everything else equal)."""
    if isinstance(a, torch.Tensor):   # NaN (a missing value in a buffer) equals NaN
        assert isinstance(b, torch.Tensor) and a.shape == b.shape
        assert torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.isnan(), b.isnan())
                                     and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0)))
    elif isinstance(a, dict):
        assert set(a) == set(b), (set(a) ^ set(b))
        for k in a:
            assert_same_state(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_state(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b)
    else:
        assert a == b, (a, b)


@pytest.mark.parametrize("kw", [{"fixed": 0.5}, {"sigma": 2.0, "warmup": 20}, {"sigma": 3.0, "warmup": 5, "log": False}])
def test_score_threshold_check_many_equals_checks_one_by_one(kw):
    """The runtime flags a batch's scores in one call; flags, thresholds and the running statistics
    are those of a loop of `check` (NaN, inf, 0 and negative scores included)."""
    from streamnn.runtime.state import ScoreThreshold

    rng = random.Random(1)
    scores = [rng.lognormvariate(0, 1) for _ in range(200)] + [float("nan"), float("inf"), 0.0, -1.0, 80.0]
    rng.shuffle(scores)
    fixed, sigma, warmup, log = kw.get("fixed"), kw.get("sigma", 4.0), kw.get("warmup", 256), kw.get("log", True)
    n, mean, var, loop = 0, 0.0, 0.0, []   # the rule written out: EWMA of (log) finite scores
    for s in scores:
        thr = fixed if fixed is not None else (math.inf if n < warmup else
                                               (math.exp if log else float)(mean + sigma * math.sqrt(var)))
        loop.append((s >= thr, thr))
        if math.isfinite(s):
            v = math.log(max(s, 1e-12)) if log else s
            n += 1
            a = max(0.01, 1.0 / n)
            d = v - mean
            mean, var = mean + a * d, (1 - a) * (var + a * d * d)
    one, many = ScoreThreshold(**kw), ScoreThreshold(**kw)
    assert [one.check(s) for s in scores] == loop
    flags, thresholds = [], []
    for i in range(0, len(scores), 37):
        f, t = many.check_many(scores[i:i + 37])
        flags += f
        thresholds += t
    assert [f for f, _ in loop] == flags and any(flags) and not all(flags)
    assert [t for _, t in loop] == pytest.approx(thresholds, rel=1e-12)
    assert one.state_dict() == many.state_dict() and many.n == sum(map(math.isfinite, scores))

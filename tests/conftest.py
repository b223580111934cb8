import os
import re

import pytest
import streamnn

streamnn.set_threads(1)

try:  # the real-broker fixtures (kafka_broker, kafka_topic)
    from kafka_broker import *  # noqa: F401,F403
except ImportError:  # pragma: no cover
    pass


@pytest.fixture
def tmp_run_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    return d


_RIVER_CHECK = re.compile(r"(check_[a-z_]+?)\d*\]$")


def _river_check(item):
    """The name of river's estimator check a parametrised test runs, or None."""
    m = _RIVER_CHECK.search(item.nodeid)
    return m.group(1) if m else None


def _measured_slow() -> set:
    """Node ids listed in tests/slow_tests.txt (measured durations; see its header)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slow_tests.txt")
    with open(path) as f:
        return {line.strip() for line in f if line.strip() and not line.startswith("#")}


@pytest.hookimpl(tryfirst=True)   # before `-m "not slow"` deselects
def pytest_collection_modifyitems(config, items):
    slow = _measured_slow()
    for item in items:
        if item.nodeid in slow:
            item.add_marker(pytest.mark.slow)
    if not os.environ.get("STREAMNN_FAST"):
        return
    # The fast subset: no slow or Kafka test, and river's check suite (yield_checks, which repeats
    # each check over several datasets and configurations of a class) once per class and check,
    # without its memory-growth check. The full suite (CI) runs every combination.
    skip = pytest.mark.skip(reason="STREAMNN_FAST=1 skips slow and kafka tests")
    repeat = pytest.mark.skip(reason="STREAMNN_FAST=1 runs each river check once per learner class")
    seen = set()
    for item in items:
        if "slow" in item.keywords or "kafka" in item.keywords:
            item.add_marker(skip)
            continue
        check = _river_check(item)
        if check is None:
            continue
        key = _RIVER_CHECK.sub(check + "]", item.nodeid)  # the same check on the same class
        if check == "check_bounded_memory_growth" or key in seen:
            item.add_marker(repeat)
        seen.add(key)

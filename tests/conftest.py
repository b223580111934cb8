import os

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


def pytest_collection_modifyitems(config, items):
    if os.environ.get("STREAMNN_FAST"):
        skip = pytest.mark.skip(reason="STREAMNN_FAST=1 skips slow and kafka tests")
        for item in items:
            if "slow" in item.keywords or "kafka" in item.keywords:
                item.add_marker(skip)

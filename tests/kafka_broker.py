"""Pytest plugin: a real single-node Kafka broker for integration tests.

Wraps ``scripts/kafka.sh`` (Kafka 4.x from Maven Central jars, KRaft, 127.0.0.1).
No test functions live here. Enable it from ``tests/conftest.py`` with::

    pytest_plugins = ["kafka_broker"]        # tests/ has no __init__.py (rootdir-relative import)
    # or: pytest_plugins = ["tests.kafka_broker"] if tests/ is a package

Fixtures:

``kafka_broker`` (session)
    A :class:`Broker`. Reuses a broker that already answers on its bootstrap
    address, else starts one with ``scripts/kafka.sh start`` (and stops it at
    the end of the session unless ``STREAMNN_KAFKA_KEEP=1``). If none can be
    brought up: ``pytest.fail`` under ``CI=true``, otherwise ``pytest.skip``.

``kafka_topic`` (function)
    A factory ``kafka_topic(partitions=1, *, name=None, configs=None) -> str``
    that creates a uniquely named topic (replication factor 1) and waits until
    every partition has a leader; the topics are deleted afterwards (best effort).

Fault tests must leave the broker running, e.g.::

    with kafka_broker.down(hard=True):      # SIGKILL; restarted on exit, even on failure
        ...
    kafka_broker.restart(hard=True)         # SIGKILL + start on the same data

Environment: ``STREAMNN_KAFKA_PORT`` / ``STREAMNN_KAFKA_CONTROLLER_PORT`` /
``STREAMNN_KAFKA_HOME`` are passed through to the script; ``CI`` and
``STREAMNN_KAFKA_KEEP`` are read here.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Iterator, Optional

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "kafka.sh"
HOST = "127.0.0.1"
DEFAULT_PORT = 19092
DEFAULT_CONTROLLER_PORT = 19093
PROBE_TOPIC = "streamnn-broker-probe"
_COORDINATOR_FAILED = ("is out of sync with the underlying log", "No in-memory snapshot for epoch")

__all__ = ["Broker", "BrokerError", "kafka_broker", "kafka_topic"]


class BrokerError(RuntimeError):
    """``scripts/kafka.sh`` failed; the message carries its output and the log tail."""


class Broker:
    """Handle on the single-node broker managed by ``scripts/kafka.sh``."""

    def __init__(
        self,
        port: Optional[int] = None,
        controller_port: Optional[int] = None,
        home: Optional[os.PathLike] = None,
        script: Path = SCRIPT,
    ) -> None:
        self.port = int(port or os.environ.get("STREAMNN_KAFKA_PORT") or DEFAULT_PORT)
        self.controller_port = int(
            controller_port
            or os.environ.get("STREAMNN_KAFKA_CONTROLLER_PORT")
            or DEFAULT_CONTROLLER_PORT
        )
        self.home = Path(home) if home else None
        self.script = Path(script)
        self.host = HOST
        self.bootstrap = f"{self.host}:{self.port}"

    # -- script plumbing -------------------------------------------------
    def _env(self) -> dict:
        env = dict(os.environ)
        env["STREAMNN_KAFKA_PORT"] = str(self.port)
        env["STREAMNN_KAFKA_CONTROLLER_PORT"] = str(self.controller_port)
        if self.home is not None:
            env["STREAMNN_KAFKA_HOME"] = str(self.home)
        return env

    def _run(self, *args: str, timeout: float = 180.0, check: bool = True) -> subprocess.CompletedProcess:
        if not self.script.is_file():
            raise BrokerError(f"{self.script} not found")
        try:
            proc = subprocess.run(
                ["bash", str(self.script), *args],
                env=self._env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(
                f"kafka.sh {' '.join(args)} timed out after {timeout}s\n{exc.output or ''}\n{self.log_tail()}"
            ) from None
        if check and proc.returncode != 0:
            tail = "" if "last log lines" in proc.stdout else "\n" + self.log_tail()
            raise BrokerError(f"kafka.sh {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{tail}")
        return proc

    # -- lifecycle -------------------------------------------------------
    def start(self) -> None:
        """Start (fetching jars on first use) and wait until ready; no-op if running."""
        self._run("start", timeout=float(os.environ.get("STREAMNN_KAFKA_START_TIMEOUT", 90)) + 300)

    def stop(self) -> None:
        """SIGTERM (controlled shutdown), wait up to 60 s, then SIGKILL."""
        self._run("stop", timeout=120)

    def kill(self) -> None:
        """SIGKILL: a crash. Acknowledged data and committed offsets survive."""
        self._run("kill", timeout=30)

    def restart(self, hard: bool = False) -> None:
        """Stop (SIGKILL if ``hard``) and start again on the same data."""
        self.kill() if hard else self.stop()
        self.start()
        if hard:
            self.heal_group_coordinator()

    def heal_group_coordinator(self, timeout_s: float = 30.0) -> None:
        """After a SIGKILL, make sure consumer groups work again; restart cleanly if they do not.

        Kafka 4.3's group coordinator can come back from a crash broken: on the first group
        write after the restart the broker logs "The state machine of the coordinator
        __consumer_offsets-0 is out of sync with the underlying log ... will be reloaded", the
        reload fails ("No in-memory snapshot for epoch 0") and from then on every group request
        of every client gets NOT_COORDINATOR until the broker restarts (seen 1 in ~3 runs of
        test_broker_killed_and_restarted_mid_stream under load: the consumer then waits for
        ever, as any client would). This makes a group write (an offset commit of a throwaway
        group) and, if it fails or the broker logs that failure, restarts the broker cleanly,
        which is what an operator would do; a second failure raises.
        """
        for attempt in range(2):
            if self._group_write_ok(timeout_s) and not self.coordinator_broken():
                return
            if attempt == 0:
                print("kafka_broker: the group coordinator did not survive the SIGKILL (NOT_COORDINATOR "
                      "for every group); restarting the broker cleanly", file=sys.stderr)
                self.stop()
                self.start()
        raise BrokerError(f"consumer groups still fail after a clean restart\n{self.log_tail()}")

    def coordinator_broken(self) -> bool:
        """Whether this incarnation's log shows the group coordinator's failed reload."""
        return any(sig in self.log_tail(400) for sig in _COORDINATOR_FAILED)

    def _group_write_ok(self, timeout_s: float) -> bool:
        from kafka import KafkaConsumer, TopicPartition
        from kafka.structs import OffsetAndMetadata

        admin = self.admin()
        try:
            if PROBE_TOPIC not in set(admin.list_topics()):
                with contextlib.suppress(Exception):
                    admin.create_topics({PROBE_TOPIC: {"num_partitions": 1, "replication_factor": 1}},
                                        timeout_ms=30000, wait_for_metadata=True)
        finally:
            admin.close()
        c = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=f"probe-{uuid.uuid4().hex[:8]}",
                          enable_auto_commit=False)
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                try:
                    c.commit({TopicPartition(PROBE_TOPIC, 0): OffsetAndMetadata(1, "", -1)}, timeout_ms=5000)
                    return True
                except Exception:  # noqa: BLE001 - retried until the deadline
                    time.sleep(0.5)
            return False
        finally:
            c.close()

    @contextlib.contextmanager
    def down(self, hard: bool = False) -> Iterator["Broker"]:
        """Take the broker down for the ``with`` body; always brought back up."""
        self.kill() if hard else self.stop()
        try:
            yield self
        finally:
            self.start()
            if hard:
                self.heal_group_coordinator()

    # -- inspection ------------------------------------------------------
    def is_up(self, timeout: float = 1.0) -> bool:
        """True when something accepts TCP connections on the bootstrap address."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout):
                return True
        except OSError:
            return False

    def is_managed(self) -> bool:
        """True when the broker on this port was started by ``kafka.sh`` (it can be killed/restarted)."""
        return self._run("status", check=False, timeout=30).returncode == 0

    def log_tail(self, lines: int = 60) -> str:
        try:
            proc = subprocess.run(
                ["bash", str(self.script), "logs"],
                env={**self._env(), "LINES": str(lines)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=30,
            )
            return f"--- broker log tail ---\n{proc.stdout}"
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            return f"(no broker log: {exc})"

    def admin(self, **configs):
        """A new ``kafka.KafkaAdminClient`` for this broker (caller closes it)."""
        from kafka import KafkaAdminClient

        configs.setdefault("request_timeout_ms", 10000)
        return KafkaAdminClient(bootstrap_servers=self.bootstrap, **configs)

    def __repr__(self) -> str:
        return f"Broker(bootstrap={self.bootstrap!r})"


def _probe(broker: Broker) -> None:
    """Raise unless the broker answers a Kafka metadata request."""
    admin = broker.admin(bootstrap_timeout_ms=15000)
    try:
        admin.describe_cluster()
    finally:
        admin.close()


def _unavailable(reason: str) -> None:
    lines = [ln.strip() for ln in reason.splitlines() if ln.strip() and not ln.startswith("---")]
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"Kafka broker unavailable under CI=true:\n{reason}", pytrace=False)
    pytest.skip(
        "no Kafka broker: run `bash scripts/kafka.sh start` (needs java 17+ and mvn) "
        f"or set CI=true to make this an error. Reason: {' | '.join(lines[:2]) or '?'}"
    )


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "kafka: test needs a real Kafka broker (kafka_broker fixture)")


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[Broker]:
    try:
        # kafka-python 3.0.12 emits ~200 DeprecationWarnings (importlib.resources.read_text)
        # while importing on Python 3.11: keep them from failing `-W error` runs
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import kafka  # noqa: F401
    except ImportError as exc:
        _unavailable(f"kafka-python not importable: {exc}")

    broker = Broker()
    started = False
    if not broker.is_up():
        try:
            broker.start()
            started = True
        except Exception as exc:  # noqa: BLE001 - any failure -> skip / fail
            _unavailable(f"{type(exc).__name__}: {exc}")
    try:
        _probe(broker)
    except Exception as exc:  # noqa: BLE001
        _unavailable(f"{broker.bootstrap} does not answer Kafka requests: {exc!r}\n{broker.log_tail()}")

    yield broker

    if started and os.environ.get("STREAMNN_KAFKA_KEEP", "") not in ("1", "true"):
        with contextlib.suppress(Exception):
            broker.stop()


@pytest.fixture
def kafka_topic(kafka_broker: Broker, request):
    created: list[str] = []
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:80].strip("-.") or "topic"

    def make(partitions: int = 1, *, name: Optional[str] = None, configs: Optional[dict] = None) -> str:
        topic = name or f"streamnn-test-{base}-{uuid.uuid4().hex[:8]}"
        spec = {"num_partitions": int(partitions), "replication_factor": 1}
        if configs:
            spec["configs"] = {str(k): str(v) for k, v in configs.items()}
        admin = kafka_broker.admin()
        try:
            admin.create_topics({topic: spec}, timeout_ms=30000, wait_for_metadata=True)
        finally:
            admin.close()
        created.append(topic)
        return topic

    yield make

    if created:
        with contextlib.suppress(Exception):
            if not kafka_broker.is_up():
                kafka_broker.start()  # a test left it down: bring it back for the next ones
            admin = kafka_broker.admin()
            try:
                admin.delete_topics(created, timeout_ms=30000, raise_errors=False)
            finally:
                admin.close()

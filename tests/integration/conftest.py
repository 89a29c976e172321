"""Fixtures for the integration tests, which talk to a real Apache Kafka broker.

The broker is found at ``$DRIFTREC_KAFKA_BOOTSTRAP`` (default ``127.0.0.1:9092``).
When nothing answers there and the address is local, the session starts one with
``deploy/kafka/kafka.sh up`` (Apache Kafka's own jars from Maven Central, KRaft
mode) and stops it at the end, but only if this test session started it.

Several pytest sessions may share one checkout and so one broker: each session
holds a lease (a file named by its pid) while it runs, and the broker that the
tests started is stopped by whichever session leaves last. A broker that someone
started by hand (``make kafka-up``, Docker) is never stopped by the tests.

"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

__all__ = [
    "BOOTSTRAP_ENV",
    "DEFAULT_BOOTSTRAP",
    "KAFKA_SCRIPT",
    "broker_answers",
    "kafka_bootstrap",
    "parse_bootstrap",
    "run_kafka_script",
    "script_env",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_SCRIPT = REPO_ROOT / "deploy" / "kafka" / "kafka.sh"
BOOTSTRAP_ENV = "DRIFTREC_KAFKA_BOOTSTRAP"
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
# The first `up` on a clean machine downloads the jars with Maven.
SCRIPT_UP_TIMEOUT_S = 600.0
LEASE_ROOT = REPO_ROOT / ".cache" / "kafka-test-leases"


def parse_bootstrap(bootstrap: str) -> tuple[str, int]:
    """Split ``"host:port"`` into its host and its port number."""
    host, separator, port_text = bootstrap.strip().rpartition(":")
    if not separator or not host or not port_text.isdigit():
        raise ValueError(
            f"{BOOTSTRAP_ENV} must look like 'host:port' (e.g. {DEFAULT_BOOTSTRAP!r}), "
            f"got {bootstrap!r}"
        )
    return host, int(port_text)


def broker_answers(bootstrap: str, timeout_s: float = 10.0) -> bool:
    """Whether a Kafka broker at ``bootstrap`` answers a metadata request.

    A refused TCP connection answers ``False`` at once; otherwise aiokafka
    bootstraps a client (a real Metadata round trip) within ``timeout_s``.
    """
    host, port = parse_bootstrap(bootstrap)
    try:
        with socket.create_connection((host, port), timeout=2.0):
            pass
    except OSError:
        return False
    return asyncio.run(_metadata_round_trip(bootstrap, timeout_s))


async def _metadata_round_trip(bootstrap: str, timeout_s: float) -> bool:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await client.close()
    return True


def script_env(bootstrap: str, **overrides: str) -> dict[str, str]:
    """The environment that makes ``kafka.sh`` serve ``bootstrap`` (a local address)."""
    host, port = parse_bootstrap(bootstrap)
    env = dict(os.environ)
    env["KAFKA_HOST"] = "127.0.0.1" if host in LOCAL_HOSTS else host
    env["KAFKA_PORT"] = str(port)
    env.update(overrides)
    return env


def run_kafka_script(
    command: str, env: dict[str, str], timeout_s: float = SCRIPT_UP_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run ``deploy/kafka/kafka.sh <command>``; stdout and stderr together in ``.stdout``."""
    return subprocess.run(
        ["bash", str(KAFKA_SCRIPT), command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _broker_pid(output: str) -> int | None:
    """The broker pid that ``kafka.sh up`` / ``status`` printed (``... pid 1234 ...``)."""
    match = re.search(r"\bpid (\d+)\b", output)
    return int(match.group(1)) if match else None


@contextlib.contextmanager
def _locked(lease_dir: Path) -> Iterator[None]:
    lease_dir.mkdir(parents=True, exist_ok=True)
    with (lease_dir / ".lock").open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _live_leases(lease_dir: Path) -> list[int]:
    """Pids of the test sessions that still use the broker; stale leases are removed."""
    alive = []
    for lease in lease_dir.glob("session-*"):
        pid = int(lease.name.removeprefix("session-"))
        if _pid_alive(pid):
            alive.append(pid)
        else:
            lease.unlink(missing_ok=True)
    return alive


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``"host:port"`` of a Kafka broker that answers, started for the session if needed."""
    bootstrap = os.environ.get(BOOTSTRAP_ENV, DEFAULT_BOOTSTRAP).strip()
    host, port = parse_bootstrap(bootstrap)
    lease_dir = LEASE_ROOT / str(port)
    owner_file = lease_dir / "started-by-tests"  # holds the pid of the broker the tests started
    own_lease = lease_dir / f"session-{os.getpid()}"

    with _locked(lease_dir):
        if owner_file.exists():
            owner_pid = _broker_pid(owner_file.read_text())
            if owner_pid is None or not _pid_alive(owner_pid):
                owner_file.unlink()
        if not broker_answers(bootstrap):
            if host not in LOCAL_HOSTS:
                pytest.fail(
                    f"no Kafka broker answers at {bootstrap} ({BOOTSTRAP_ENV}) and it is not "
                    "a local address, so the tests cannot start one there"
                )
            result = run_kafka_script("up", script_env(bootstrap))
            if result.returncode != 0:
                pytest.fail(
                    f"`{KAFKA_SCRIPT} up` failed (exit {result.returncode}) while no broker "
                    f"answered at {bootstrap}:\n{result.stdout}"
                )
            broker_pid = _broker_pid(result.stdout)
            if broker_pid is not None:
                owner_file.write_text(f"pid {broker_pid}\n")
        own_lease.touch()

    yield f"{'127.0.0.1' if host in LOCAL_HOSTS else host}:{port}"

    with _locked(lease_dir):
        own_lease.unlink(missing_ok=True)
        if not owner_file.exists() or _live_leases(lease_dir):
            return
        owner_pid = _broker_pid(owner_file.read_text())
        status = run_kafka_script("status", script_env(bootstrap), timeout_s=30.0)
        # Stop it only if the script's broker is still the very one the tests started.
        if status.returncode == 0 and _broker_pid(status.stdout) == owner_pid:
            run_kafka_script("down", script_env(bootstrap), timeout_s=120.0)
        owner_file.unlink(missing_ok=True)

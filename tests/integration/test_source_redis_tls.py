"""Redis Streams over TLS on the devstack's real server (its TLS port, the devstack CA's certificate): the
connections file's ``tls`` of a ``rediss://`` connection is what the controller's reader verifies against."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from autoscaler import connections
from autoscaler.cli.backlogs import SourceBacklogs
from autoscaler.model import TargetKey
from autoscaler.observability.log_events import SourceLog
from autoscaler.policy.backlog_keys import RedisCount, RedisPolicy, SourcePolicies
from autoscaler.sources import redis
from devstack import certs, ports
from devstack.config import layout as devstack_layout
from tests.integration.source_servers import redis_client
from tests.stack import Devstack, unique

pytestmark = pytest.mark.devstack
TARGET = TargetKey("shop", "orders")


async def a_stream_with_lag(devstack: Devstack, *, entries: int, delivered: int) -> str:
    stream = unique("secured")
    async with redis_client(devstack.layout) as client:
        for i in range(entries):
            await client.xadd(stream, {"n": str(i)})
        await client.xgroup_create(stream, "workers", id="0")
        if delivered:
            await client.xreadgroup("workers", "w1", {stream: ">"}, count=delivered)
    return stream


def connections_file(tmp_path: Path, tls: str, url: str) -> connections.Connections:
    path = tmp_path / "connections.yaml"
    path.write_text(f"redis:\n  secured: {{url: '{url}', tls: {tls}}}\n")
    return connections.load(path)


async def read_through_the_connections_file(
    devstack: Devstack, tmp_path: Path, tls: str, stream: str
) -> tuple[redis.StreamBacklog | None, str | None]:
    loaded = connections_file(tmp_path, tls, devstack.layout.redis_tls_url)
    backlogs = SourceBacklogs(loaded, registry=CollectorRegistry())
    policy = RedisPolicy(stream, "workers", "secured", RedisCount.LAG, per_replica=5, activation=0)
    try:
        figures = await backlogs.read(targets={TARGET: SourcePolicies(redis=policy)})
    finally:
        await backlogs.close()
    return figures[TARGET].redis, figures[TARGET].redis_error


async def test_a_rediss_connection_with_the_servers_ca_file_reads_the_backlog_over_tls(
    devstack: Devstack, tmp_path: Path
) -> None:
    stream = await a_stream_with_lag(devstack, entries=12, delivered=5)
    ca = certs.ensure(devstack.layout).ca

    backlog, error = await read_through_the_connections_file(devstack, tmp_path, f"{{ca-file: {ca}}}", stream)

    assert error is None
    assert backlog == redis.StreamBacklog(lag=7, pending=5)


async def test_a_server_certificate_from_another_ca_is_an_error_of_the_query_naming_the_verification(
    devstack: Devstack, tmp_path: Path
) -> None:
    stream = await a_stream_with_lag(devstack, entries=3, delivered=0)
    other = certs.ensure(devstack.layout).other_ca

    tls = f"{{ca-file: {other}}}"

    backlog, error = await read_through_the_connections_file(devstack, tmp_path, tls, stream)

    assert backlog is None
    assert error is not None
    assert "CERTIFICATE_VERIFY_FAILED" in error
    assert f"rediss://127.0.0.1:{devstack.layout.redis_tls_port}/0" in error


@contextlib.contextmanager
def redis_with_an_expired_certificate(tmp_path: Path, made: certs.Certificates) -> Iterator[int]:
    """A Redis server of its own, TLS only, with a certificate from the devstack CA that expired in 2020."""
    port = free_port()
    server = subprocess.Popen(
        [
            "redis-server", "--port", "0", "--bind", "127.0.0.1", "--tls-port", str(port),
            "--tls-cert-file", str(made.expired_cert), "--tls-key-file", str(made.expired_key),
            "--tls-ca-cert-file", str(made.ca), "--tls-auth-clients", "no",
            "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        ports.wait("127.0.0.1", port, timeout=20, what="redis-server with the expired certificate")
        yield port
    finally:
        server.terminate()
        server.wait(timeout=20)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_expired_server_certificate_from_a_trusted_ca_is_an_error_saying_it_expired(
    tmp_path: Path,
) -> None:
    made = certs.ensure(devstack_layout())
    with redis_with_an_expired_certificate(tmp_path, made) as port:
        loaded = connections_file(tmp_path, f"{{ca-file: {made.ca}}}", f"rediss://127.0.0.1:{port}/0")
        backlogs = SourceBacklogs(loaded, registry=CollectorRegistry())
        policy = RedisPolicy("s", "g", "secured", RedisCount.LAG, per_replica=5, activation=0)
        try:
            figures = await backlogs.read(targets={TARGET: SourcePolicies(redis=policy)})
        finally:
            await backlogs.close()

    error = figures[TARGET].redis_error
    assert figures[TARGET].redis is None
    assert error is not None
    assert "certificate verify failed: certificate has expired" in error, error


async def test_without_a_ca_file_the_system_cas_are_used_and_do_not_trust_the_devstack_server(
    devstack: Devstack, tmp_path: Path
) -> None:
    stream = await a_stream_with_lag(devstack, entries=3, delivered=0)

    backlog, error = await read_through_the_connections_file(devstack, tmp_path, "{}", stream)

    assert backlog is None
    assert error is not None
    assert "CERTIFICATE_VERIFY_FAILED" in error


async def test_insecure_skip_verify_reads_without_checking_the_certificate_and_says_so_once(
    devstack: Devstack, tmp_path: Path
) -> None:
    stream = await a_stream_with_lag(devstack, entries=4, delivered=1)

    with capture_logs() as logs:
        backlog, error = await read_through_the_connections_file(
            devstack, tmp_path, "{insecure-skip-verify: true}", stream
        )

    assert error is None
    assert backlog == redis.StreamBacklog(lag=3, pending=1)
    warned = [entry for entry in logs if entry["event"] == SourceLog.VERIFICATION_SKIPPED]
    assert [(entry["log_level"], entry["source"], entry["connection"]) for entry in warned] == [
        ("warning", "redis", "secured")
    ]


async def test_a_client_certificate_is_presented_and_accepted(devstack: Devstack, tmp_path: Path) -> None:
    stream = await a_stream_with_lag(devstack, entries=6, delivered=6)
    made = certs.ensure(devstack.layout)
    tls = f"{{ca-file: {made.ca}, cert-file: {made.client_cert}, key-file: {made.client_key}}}"

    backlog, error = await read_through_the_connections_file(devstack, tmp_path, tls, stream)

    assert error is None
    assert backlog == redis.StreamBacklog(lag=0, pending=6)


async def test_an_unusable_tls_file_is_named_in_the_error_not_reported_as_a_missing_connection(
    devstack: Devstack, tmp_path: Path
) -> None:
    stream = await a_stream_with_lag(devstack, entries=1, delivered=0)
    not_a_certificate = tmp_path / "ca.pem"
    not_a_certificate.write_text("not a certificate\n")

    backlog, error = await read_through_the_connections_file(
        devstack, tmp_path, f"{{ca-file: {not_a_certificate}}}", stream
    )

    assert backlog is None
    assert error is not None
    assert error.startswith(f"redis connection 'secured': TLS files {not_a_certificate}:")

"""Lag over the devstack broker's secured listeners: SASL_SSL with SCRAM-SHA-512, SASL/PLAIN or OAUTHBEARER
(an unsigned token, Kafka's own test validator) over TLS, and mTLS, named in a connections file; refused
credentials, expired tokens and untrusted certificates named per connection."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from structlog.testing import capture_logs

from autoscaler import connections
from autoscaler.errors import KafkaError
from autoscaler.model import PartitionOffsets
from autoscaler.observability.log_events import ControlLog, KafkaLog
from autoscaler.sources.kafka import connection as kafka_connection
from autoscaler.sources.kafka.offsets import GroupQuery, OffsetReader, ReaderSettings
from devstack import certs, kafka
from devstack.config import DEVSTACK_DIR, KAFKA_USERS
from tests.controller import Process, controller, queue_autoscaler
from tests.stack import (
    Devstack,
    commit,
    create_topic,
    deployment,
    events_of,
    eventually,
    produce,
    python_container,
    spec_replicas,
    target_annotations,
    unique,
)

pytestmark = pytest.mark.devstack

SECURED = ("scram", "mtls", "plain")
LISTENER = {"scram": "sasl-ssl-scram", "mtls": "ssl", "plain": "sasl-ssl-plain"}


def _user(mechanism: str) -> tuple[str, str]:
    user = next(u for u in KAFKA_USERS if u.mechanism == mechanism)
    return user.name, user.password


@pytest.fixture
def connections_file(devstack: Devstack, tmp_path: Path) -> Iterator[Path]:
    """A connections file naming every secured listener, its password files in ``tmp_path``."""
    if not kafka.ready(devstack.layout):
        pytest.fail(
            "the devstack broker does not listen on its SASL_SSL and SSL ports "
            f"({devstack.layout.kafka_sasl_ssl_port}, {devstack.layout.kafka_ssl_port}): it was started by a "
            "devstack without them; stop Kafka and run devstack/up",
            pytrace=False,
        )
    tls = certs.ensure(devstack.layout)
    scram_user, scram_password = _user("SCRAM-SHA-512")
    plain_user, plain_password = _user("PLAIN")
    (tmp_path / "scram-password").write_text(scram_password + "\n")
    (tmp_path / "plain-password").write_text(plain_password)
    sasl_ssl, mtls = devstack.layout.kafka_sasl_ssl_bootstrap, devstack.layout.kafka_ssl_bootstrap
    plain = {"mechanism": "PLAIN", "username": plain_user, "password-file": str(tmp_path / "plain-password")}
    document = {
        "kafka": {
            "default": {"bootstrap": devstack.kafka_bootstrap},
            "scram": {
                "bootstrap": sasl_ssl,
                "tls": {"ca-file": str(tls.ca)},
                "sasl": {
                    "mechanism": "SCRAM-SHA-512",
                    "username": scram_user,
                    "password-file": str(tmp_path / "scram-password"),
                },
            },
            "mtls": {
                "bootstrap": mtls,
                "tls": {
                    "ca-file": str(tls.ca),
                    "cert-file": str(tls.client_cert),
                    "key-file": str(tls.client_key),
                },
            },
            "plain": {"bootstrap": sasl_ssl, "tls": {"ca-file": str(tls.ca)}, "sasl": plain},
            "untrusted": {"bootstrap": sasl_ssl, "tls": {"ca-file": str(tls.other_ca)}, "sasl": plain},
            "unverified": {
                "bootstrap": sasl_ssl,
                "tls": {"ca-file": str(tls.other_ca), "insecure-skip-verify": True},
                "sasl": plain,
            },
            "oauth": {
                "bootstrap": sasl_ssl,
                "tls": {"ca-file": str(tls.ca)},
                "sasl": {"mechanism": "OAUTHBEARER", "token-file": str(tmp_path / "token")},
            },
        }
    }
    (tmp_path / "token").write_text(unsecured_token(expires_in=3600))
    path = tmp_path / "connections.yaml"
    path.write_text(json.dumps(document))
    kafka_connection.forget_warnings()
    yield path
    kafka_connection.forget_warnings()


def unsecured_token(*, expires_in: float, subject: str = "autoscaler") -> str:
    """An unsigned JWT ("alg": "none"): the devstack broker's OAUTHBEARER validator takes it until ``exp``."""

    def part(claims: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")

    now = time.time()
    return f"{part({'alg': 'none'})}.{part({'sub': subject, 'iat': now - 60, 'exp': now + expires_in})}."


async def lagging_group(devstack: Devstack, *, records: int = 300) -> tuple[str, str]:
    """A 3-partition topic with ``records`` records and a group that committed 10 on partition 0 and 0 on
    the others: its lag is ``records - 10``."""
    topic, group = unique("secured"), unique("group")
    await create_topic(devstack.kafka_bootstrap, topic, 3)
    await produce(devstack.kafka_bootstrap, topic, records, partitions=3)
    await commit(devstack.kafka_bootstrap, group, topic, {0: 10, 1: 0, 2: 0})
    return topic, group


async def read_once(target: connections.KafkaConnection | str, group: str) -> tuple[Any, dict[str, int]]:
    query = GroupQuery(group)
    async with OffsetReader(target) as reader:
        outcome = (await reader.read(queries=[query]))[query]
        return outcome, dict(reader.requests_by_api)


@pytest.mark.parametrize("name", SECURED)
async def test_lag_reads_over_a_secured_connection_equal_plaintext_in_values_and_request_counts(
    devstack: Devstack, connections_file: Path, name: str
) -> None:
    _topic, group = await lagging_group(devstack)
    secured = connections.load(connections_file).kafka_connection(name)

    over_tls, tls_requests = await read_once(secured, group)
    over_plaintext, plaintext_requests = await read_once(devstack.kafka_bootstrap, group)

    assert isinstance(over_tls, tuple)
    assert over_tls == over_plaintext
    assert over_tls[0].committed == 10
    assert tls_requests == plaintext_requests


async def test_oauthbearer_reads_the_lag_with_the_token_from_its_file_as_plaintext_does(
    devstack: Devstack, connections_file: Path
) -> None:
    _topic, group = await lagging_group(devstack)
    oauth = connections.load(connections_file).kafka_connection("oauth")

    over_oauth, oauth_requests = await read_once(oauth, group)
    over_plaintext, plaintext_requests = await read_once(devstack.kafka_bootstrap, group)

    assert isinstance(over_oauth, tuple)
    assert over_oauth == over_plaintext
    assert oauth_requests == plaintext_requests


async def test_an_expired_token_is_refused_naming_the_connection_and_a_new_one_in_the_file_is_used(
    devstack: Devstack, connections_file: Path
) -> None:
    _topic, group = await lagging_group(devstack)
    token = connections_file.parent / "token"
    token.write_text(unsecured_token(expires_in=-30))
    oauth = connections.load(connections_file).kafka_connection("oauth")
    query = GroupQuery(group)
    async with OffsetReader(oauth, settings=ReaderSettings(refused_backoff=30)) as reader:
        with pytest.raises(KafkaError, match="SASL OAUTHBEARER authentication failed") as refused:
            await reader.read(queries=[query])
        assert str(refused.value).startswith("connection 'oauth' (127.0.0.1:")

        token.write_text(unsecured_token(expires_in=3600))
        outcome = (await reader.read(queries=[query]))[query]
    assert isinstance(outcome, tuple)
    assert outcome[0].committed == 10


def kafka_tool(listener: str, group: str) -> dict[tuple[str, int], tuple[int, int, int]]:
    """Kafka's own ``kafka-consumer-groups --describe`` on a secured listener: (current, end, lag) per row."""
    done = subprocess.run(
        [str(DEVSTACK_DIR / "kafka-consumer-groups"), "--listener", listener, "--describe", "--group", group],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = {}
    for line in done.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[0] == group and fields[2].isdigit() and fields[3].isdigit():
            rows[(fields[1], int(fields[2]))] = (int(fields[3]), int(fields[4]), int(fields[5]))
    return rows


@pytest.mark.parametrize("name", SECURED)
async def test_the_lag_command_on_a_named_connection_equals_kafka_s_tool_on_the_secured_listener(
    devstack: Devstack, connections_file: Path, name: str
) -> None:
    topic, group = await lagging_group(devstack)
    await commit(devstack.kafka_bootstrap, group, topic, {0: 10, 1: 40, 2: 70})
    done = await asyncio.to_thread(
        subprocess.run,
        queue_autoscaler(
            "lag", "--connections", str(connections_file), "--connection", name, "--group", group, "--json"
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    ours = {
        (r["topic"], r["partition"]): (r["committed"], r["end"], r["lag"])
        for r in json.loads(done.stdout)["partitions"]
    }
    theirs = await asyncio.to_thread(kafka_tool, LISTENER[name], group)
    assert ours == theirs
    assert len(ours) == 3


def sleeper(name: str, **annotations: str) -> dict[str, Any]:
    """A Deployment whose pods only sleep: the test produces and commits the lag itself."""
    container = python_container(name, "timeit", ["-n", "1", "-r", "1", "import time; time.sleep(3600)"])
    notes = target_annotations(lag_per_replica="100", allow_idle_consumers="true", **annotations)
    return deployment(name, container, replicas=0, annotations=notes)


@pytest.fixture
async def secured_controller(
    devstack: Devstack, namespace: str, tmp_path: Path, connections_file: Path
) -> AsyncIterator[Process]:
    process = controller(
        devstack,
        tmp_path / "controller.log",
        namespaces=[namespace],
        extra=["--connections", str(connections_file)],
    ).start()
    try:
        await process.wait_port("metrics")
        yield process
    finally:
        process.stop()


async def test_a_controller_scales_a_deployment_through_each_secured_connection(
    devstack: Devstack, kube: client.ApiClient, namespace: str, secured_controller: Process
) -> None:
    apps = client.AppsV1Api(kube)
    expected = {}
    for replicas, name in enumerate(SECURED, start=2):
        topic, group = await lagging_group(devstack, records=replicas * 100 + 10)
        await apps.create_namespaced_deployment(
            namespace,
            sleeper(name, kafka_group=group, kafka_topics=topic, kafka_connection=name),
        )
        expected[name] = replicas  # (records - 10 committed) / 100

    for name, replicas in expected.items():
        await eventually(
            lambda n=name: spec_replicas(kube, namespace, n),  # type: ignore[misc]
            lambda n, want=replicas: n == want,  # type: ignore[misc]
            timeout=30,
            what=f"{name} at {replicas} replicas",
        )
    decided = {
        d["deployment"]: d
        for d in secured_controller.logged(ControlLog.DECISION_CHANGED)
        if d["rule"] == "activate"
    }
    assert {name: decided[name]["lag"] for name in SECURED} == {"scram": 200, "mtls": 300, "plain": 400}


async def test_a_wrong_password_holds_replicas_with_one_event_and_a_fixed_file_recovers_within_a_tick(
    devstack: Devstack,
    kube: client.ApiClient,
    namespace: str,
    secured_controller: Process,
    connections_file: Path,
) -> None:
    apps = client.AppsV1Api(kube)
    topic, group = await lagging_group(devstack, records=310)
    await apps.create_namespaced_deployment(
        namespace,
        sleeper("w", kafka_group=group, kafka_topics=topic, kafka_connection="scram"),
    )
    await eventually(
        lambda: spec_replicas(kube, namespace, "w"), lambda n: n == 3, timeout=30, what="3 replicas"
    )
    password_file = connections_file.parent / "scram-password"
    good = password_file.read_text()

    password_file.write_text("not-the-password\n")
    unavailable = await eventually(
        lambda: events_of(kube, namespace, "w"),
        lambda events: any(e["reason"] == "LagUnavailable" for e in events),
        timeout=30,
        what="a LagUnavailable Event",
    )
    message = next(e["note"] for e in unavailable if e["reason"] == "LagUnavailable")
    assert "connection 'scram'" in message
    assert "SASL SCRAM-SHA-512 authentication failed" in message
    assert "invalid credentials" in message  # the broker's own words
    await produce(devstack.kafka_bootstrap, topic, 300, partitions=3)  # would be 6 replicas if readable
    ticks_at_outage = await secured_controller.metric("queue_autoscaler_ticks_total")
    assert ticks_at_outage is not None
    await eventually(
        lambda: secured_controller.metric("queue_autoscaler_ticks_total"),
        lambda ticks: ticks is not None and ticks >= ticks_at_outage + 5,
        timeout=30,
        what="five more ticks during the outage",
    )
    assert await spec_replicas(kube, namespace, "w") == 3
    reasons = [e["reason"] for e in await events_of(kube, namespace, "w")]
    assert reasons.count("LagUnavailable") == 1
    # Backed off, not retried every tick: far fewer refused connections than ticks.
    assert len(secured_controller.logged(KafkaLog.CONNECTION_REFUSED)) <= 3

    password_file.write_text(good)
    fixed_at = await secured_controller.metric("queue_autoscaler_ticks_total")
    assert fixed_at is not None
    await eventually(
        lambda: spec_replicas(kube, namespace, "w"), lambda n: n == 6, timeout=30, what="6 replicas"
    )
    scaled = [
        d for d in secured_controller.logged(ControlLog.DECISION_CHANGED, deployment="w") if d["desired"] == 6
    ]
    # The first tick that starts after the file changed reads with the new password (the one running at
    # the moment of the write may still be counted in ``fixed_at``).
    assert scaled[0]["tick"] <= fixed_at + 2, scaled[0]


async def test_a_refused_password_is_not_retried_until_the_file_changes_or_the_back_off_passes(
    devstack: Devstack, connections_file: Path
) -> None:
    _topic, group = await lagging_group(devstack)
    (connections_file.parent / "scram-password").write_text("wrong")
    scram = connections.load(connections_file).kafka_connection("scram")
    query = GroupQuery(group)
    async with OffsetReader(scram, settings=ReaderSettings(refused_backoff=30)) as reader:
        with capture_logs() as logs:
            for _ in range(3):
                with pytest.raises(KafkaError, match="authentication failed") as refused:
                    await reader.read(queries=[query])
        assert (
            sum(reader.requests_by_api.values()) == 0
        )  # refused at the handshake, then held by the back-off
        assert [e["event"] for e in logs].count(KafkaLog.CONNECTION_REFUSED) == 1
        assert "connection 'scram'" in str(refused.value)

        (connections_file.parent / "scram-password").write_text(_user("SCRAM-SHA-512")[1])
        outcome = (await reader.read(queries=[query]))[query]
    assert isinstance(outcome, tuple)
    assert outcome[0] == PartitionOffsets(outcome[0].topic, 0, committed=10, end=100, start=0)


async def test_an_untrusted_server_certificate_is_an_error_naming_the_connection(
    devstack: Devstack, connections_file: Path
) -> None:
    _topic, group = await lagging_group(devstack)
    untrusted = connections.load(connections_file).kafka_connection("untrusted")
    with pytest.raises(KafkaError) as refused:
        await read_once(untrusted, group)
    assert str(refused.value).startswith("connection 'untrusted' (127.0.0.1:")
    assert "TLS: the broker's certificate is not trusted: unable to get local issuer certificate" in str(
        refused.value
    )


async def test_insecure_skip_verify_reads_and_warns_once(devstack: Devstack, connections_file: Path) -> None:
    _topic, group = await lagging_group(devstack)
    unverified = connections.load(connections_file).kafka_connection("unverified")
    with capture_logs() as logs:
        first, _ = await read_once(unverified, group)
        second, _ = await read_once(unverified, group)
    assert isinstance(first, tuple)
    assert first == second
    warnings = [e for e in logs if e["event"] == KafkaLog.VERIFICATION_SKIPPED]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["connection"] == "unverified"

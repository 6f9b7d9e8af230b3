"""A named connection's client options, the key that groups targets per connection, and the annotation that
names one."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from autoscaler import connections
from autoscaler.control.loop import ControlLoop
from autoscaler.errors import KafkaError, PolicyError
from autoscaler.observability.log_events import KafkaLog
from autoscaler.observability.metrics import ControllerMetrics
from autoscaler.policy import annotations as policy_annotations
from autoscaler.sources.kafka import connection, pool
from tests.unit.control.test_loop import PREFIX, FakeLag, FakeScaler, FakeTargets, lagging, running, until


def kafka(tmp_path: Path, **settings: object) -> connections.KafkaConnection:
    (tmp_path / "password").write_text("first")
    (tmp_path / "token").write_text("token-1")
    return connections.parse({"kafka": {"c": {"bootstrap": "b:9096", **settings}}}).kafka["c"]


def test_sasl_over_tls_options_carry_the_mechanism_user_password_and_a_verifying_context(
    tmp_path: Path,
) -> None:
    sasl = {"mechanism": "SCRAM-SHA-512", "username": "u", "password-file": str(tmp_path / "password")}
    (tmp_path / "password").write_text("first")
    opts = connection.options(kafka(tmp_path, tls={}, sasl=sasl))
    assert opts.kwargs["security_protocol"] == "SASL_SSL"
    assert opts.kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (opts.kwargs["sasl_plain_username"], opts.kwargs["sasl_plain_password"]) == ("u", "first")
    assert opts.kwargs["ssl_context"].check_hostname


def test_a_changed_password_file_changes_the_stamp_and_the_options(tmp_path: Path) -> None:
    sasl = {"mechanism": "PLAIN", "username": "u", "password-file": str(tmp_path / "password")}
    (tmp_path / "password").write_text("first")
    target = kafka(tmp_path, sasl=sasl)
    before = connection.stamp(target)
    replacement = tmp_path / "new"
    replacement.write_text("second")
    replacement.replace(tmp_path / "password")
    assert connection.stamp(target) != before
    assert connection.options(target).kwargs["sasl_plain_password"] == "second"


async def test_an_oauthbearer_token_is_read_from_its_file_each_time_it_changes(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("token-1")
    opts = connection.options(
        kafka(tmp_path, sasl={"mechanism": "OAUTHBEARER", "token-file": str(tmp_path / "token")})
    )
    provider = opts.kwargs["sasl_oauth_token_provider"]
    assert await provider.token() == "token-1"
    replacement = tmp_path / "new"
    replacement.write_text("token-2")
    replacement.replace(tmp_path / "token")
    assert await provider.token() == "token-2"


def test_a_removed_credential_file_is_a_kafka_error_naming_the_connection_and_the_file(
    tmp_path: Path,
) -> None:
    sasl = {"mechanism": "PLAIN", "username": "u", "password-file": str(tmp_path / "password")}
    (tmp_path / "password").write_text("first")
    target = kafka(tmp_path, sasl=sasl)
    (tmp_path / "password").unlink()
    with pytest.raises(KafkaError, match=r"connection 'c' \(b:9096, SASL_PLAINTEXT\).*password"):
        connection.stamp(target)


def test_insecure_skip_verify_warns_once_per_connection(tmp_path: Path) -> None:
    target = kafka(tmp_path, tls={"insecure-skip-verify": True})
    connection.forget_warnings()
    with capture_logs() as logs:
        connection.options(target)
        connection.options(target)
    connection.forget_warnings()
    assert [e["event"] for e in logs] == [KafkaLog.VERIFICATION_SKIPPED]
    assert logs[0]["log_level"] == "warning"


def test_a_connection_key_names_a_connection_or_its_settings_with_other_brokers() -> None:
    known = connections.parse(
        {"kafka": {"payments": {"bootstrap": "p:9096", "tls": {"insecure-skip-verify": True}}}}
    )
    assert pool.connection_for(known, "payments").bootstrap == ("p:9096",)
    overridden = pool.connection_for(known, "payments@q:9096,r:9096")
    assert overridden.bootstrap == ("q:9096", "r:9096")
    assert overridden.security_protocol == "SSL"
    assert pool.connection_for(known, "default@k:9092").security_protocol == "PLAINTEXT"
    with pytest.raises(KafkaError, match="no Kafka connection 'billing'; known: payments"):
        pool.connection_for(known, "billing")


@pytest.mark.looptime
async def test_the_loop_reads_once_per_kafka_connection_and_a_bootstrap_annotation_keeps_its_connection() -> (
    None
):
    targets, lag = FakeTargets(), FakeLag()
    for name, extra in [
        ("a", {"kafka_connection": "payments"}),
        ("b", {"kafka_connection": "payments"}),
        ("c", {}),
        ("d", {"kafka_connection": "payments", "kafka_bootstrap": "q:9096"}),
    ]:
        targets.put(name, 1, kafka_group=f"g-{name}", **extra)
        lag.partitions[f"g-{name}"] = lagging("t", [1])
    loop = ControlLoop(
        targets=targets,
        lag=lag,
        scaler=FakeScaler(targets),
        metrics=ControllerMetrics(CollectorRegistry()),
        default_bootstrap="k:9092",
    )
    async with running(loop):
        await until(0.5)
    assert sorted((key, len(groups)) for key, groups in lag.reads) == [
        ("default", 1),
        ("payments", 2),
        ("payments@q:9096", 1),
    ]


def test_the_kafka_connection_annotation_names_a_connection_and_defaults_to_default() -> None:
    policy = policy_annotations.parse({PREFIX + "kafka-group": "g", PREFIX + "kafka-connection": "payments"})
    assert policy is not None
    assert policy.kafka_connection == "payments"
    default = policy_annotations.parse({PREFIX + "kafka-group": "g"})
    assert default is not None
    assert default.kafka_connection == "default"
    with pytest.raises(PolicyError, match="kafka-connection='Pay/ments': a connection name"):
        policy_annotations.parse({PREFIX + "kafka-group": "g", PREFIX + "kafka-connection": "Pay/ments"})

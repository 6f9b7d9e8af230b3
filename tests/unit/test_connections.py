"""The connections file: named servers per kind, every problem of a bad file listed at once, credentials
read from files and read again when they change."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from autoscaler import connections, settings
from autoscaler.cli import build_parser
from autoscaler.errors import SettingsError


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    (tmp_path / "password").write_text("s3cret\n")
    (tmp_path / "token").write_text("eyJhbGciOi")
    (tmp_path / "ca.pem").write_text("not a certificate")
    return tmp_path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "connections.yaml"
    path.write_text(text)
    return path


def test_the_design_example_parses_into_one_connection_per_kind_and_name(secrets: Path) -> None:
    path = write(
        secrets,
        f"""
kafka:
  default: {{bootstrap: "kafka:9092"}}
  payments:
    bootstrap: "b-1.payments:9096,b-2.payments:9096"
    tls: {{ca-file: {secrets}/ca.pem}}
    sasl: {{mechanism: SCRAM-SHA-512, username: autoscaler, password-file: {secrets}/password}}
rabbitmq:
  default:
    {{management-url: "http://rabbitmq:15672", username: autoscaler, password-file: {secrets}/password}}
redis:
  default: {{url: "rediss://redis:6379/0", password-file: {secrets}/password}}
nats:
  default: {{monitoring-url: "http://nats:8222"}}
""",
    )
    loaded = connections.load(path)
    payments = loaded.kafka["payments"]
    assert payments.name == "payments"
    assert payments.bootstrap == ("b-1.payments:9096", "b-2.payments:9096")
    assert payments.security_protocol == "SASL_SSL"
    assert payments.tls is not None
    assert payments.tls.ca_file == secrets / "ca.pem"
    assert payments.sasl is not None
    assert payments.sasl.username == "autoscaler"
    assert payments.files == (secrets / "ca.pem", secrets / "password")
    assert loaded.kafka["default"].security_protocol == "PLAINTEXT"
    assert loaded.rabbitmq["default"].management_url == "http://rabbitmq:15672"
    assert loaded.redis["default"].url == "rediss://redis:6379/0"
    assert loaded.nats["default"].account == "$G"


def test_a_bad_file_is_one_error_listing_every_problem_with_connection_field_and_what_is_allowed(
    secrets: Path,
) -> None:
    path = write(
        secrets,
        f"""
kafka:
  payments:
    bootstrap: "b-1.payments"
    tls: {{ca-file: {secrets}/missing.pem}}
    sasl: {{mechanism: SCRAM-SHA-1, username: autoscaler, password-file: {secrets}/password}}
  Payments: {{bootstrap: "a:1"}}
  plain: {{bootstrap: "a:1", sasl: {{mechanism: PLAIN, username: u}}, tsl: {{}}}}
rabbitmq:
  default: {{management-url: "amqp://rabbitmq:5672"}}
redis:
  default: {{url: "redis://r:6379", tls: {{insecure-skip-verify: maybe}}}}
nats:
  default: {{monitoring-url: "http://nats:8222", account: ""}}
queues: {{}}
""",
    )
    with pytest.raises(SettingsError) as caught:
        connections.load(path)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"--connections={str(path)!r}: invalid connections file:"
    assert [line.strip() for line in lines[1:]] == [
        "kafka connection 'payments': bootstrap='b-1.payments': a comma list of host:port Kafka brokers; "
        "'b-1.payments' is not host:port",
        f"kafka connection 'payments': tls.ca-file='{secrets}/missing.pem': a readable file; "
        f"{secrets}/missing.pem does not exist or is not a file",
        "kafka connection 'payments': sasl.mechanism='SCRAM-SHA-1': one of PLAIN, SCRAM-SHA-256, "
        "SCRAM-SHA-512, OAUTHBEARER",
        "kafka: connection name 'Payments': lowercase letters, digits and '-', at most 63, starting and "
        "ending with a letter or digit",
        "kafka connection 'plain': sasl: PLAIN: username and password-file, and no token-file",
        "kafka connection 'plain': tsl: unknown field; allowed: bootstrap, tls, sasl",
        "rabbitmq connection 'default': management-url='amqp://rabbitmq:5672': a URL starting with http:// "
        "or https:// and a host",
        "redis connection 'default': tls.insecure-skip-verify='maybe': true or false",
        "nats connection 'default': account='': a non-empty string",
        "queues: unknown section; allowed: kafka, rabbitmq, redis, nats",
    ]


@pytest.mark.parametrize(
    ("sasl", "problem"),
    [
        ("{mechanism: OAUTHBEARER, username: u, token-file: TOKEN}", "OAUTHBEARER: token-file, and neither"),
        ("{mechanism: SCRAM-SHA-256, username: u, token-file: TOKEN}", "SCRAM-SHA-256: username and"),
    ],
)
def test_sasl_credentials_must_match_the_mechanism(secrets: Path, sasl: str, problem: str) -> None:
    path = write(
        secrets, f"kafka: {{c: {{bootstrap: 'a:1', sasl: {sasl}}}}}".replace("TOKEN", f"{secrets}/token")
    )
    with pytest.raises(SettingsError, match=problem):
        connections.load(path)


def test_a_client_certificate_needs_both_its_certificate_and_its_key(secrets: Path) -> None:
    path = write(secrets, f"kafka: {{c: {{bootstrap: 'a:1', tls: {{cert-file: {secrets}/ca.pem}}}}}}")
    with pytest.raises(SettingsError, match="cert-file and key-file: both"):
        connections.load(path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("kafka: [a, b]", "kafka: a mapping of connection name"),
        ("[1]", "the file: a mapping"),
        ("a: b: c", "not YAML"),
    ],
)
def test_a_file_that_is_not_a_mapping_of_sections_says_so(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(SettingsError, match=problem):
        connections.load(write(tmp_path, text))


def test_a_missing_connections_file_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="No such file"):
        connections.load(tmp_path / "absent.yaml")


def test_an_empty_file_has_no_connections(tmp_path: Path) -> None:
    loaded = connections.load(write(tmp_path, ""))
    assert dict(loaded.kafka) == {}


def test_kafka_bootstrap_is_the_default_kafka_connection_when_the_file_does_not_define_one(
    tmp_path: Path,
) -> None:
    args = build_parser().parse_args(
        [
            "run",
            "--connections",
            str(write(tmp_path, "kafka: {other: {bootstrap: 'o:1'}}")),
            "--kafka-bootstrap",
            "k:9",
            "--report-insecure",
            "true",
        ]
    )
    loaded = settings.controller_settings(args).connections
    assert loaded.kafka_connection("default").bootstrap == ("k:9",)
    assert loaded.kafka_connection("other").bootstrap == ("o:1",)


def test_the_file_s_default_connection_wins_over_kafka_bootstrap(tmp_path: Path) -> None:
    loaded = connections.load(write(tmp_path, "kafka: {default: {bootstrap: 'f:1'}}")).with_default_kafka(
        "k:9"
    )
    assert loaded.kafka_connection("default").bootstrap == ("f:1",)


def test_the_connections_file_is_read_from_the_environment_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "QUEUE_AUTOSCALER_CONNECTIONS", str(write(tmp_path, "kafka: {default: {bootstrap: 'e:1'}}"))
    )
    args = build_parser().parse_args(["run", "--report-insecure", "true"])
    assert settings.controller_settings(args).connections.kafka_connection("default").bootstrap == ("e:1",)


def test_an_unknown_connection_name_names_the_known_ones() -> None:
    known = connections.parse({"kafka": {"a": {"bootstrap": "a:1"}, "b": {"bootstrap": "b:1"}}})
    with pytest.raises(SettingsError, match="no Kafka connection 'c'; known: a, b"):
        known.kafka_connection("c")
    with pytest.raises(SettingsError, match=r"no Kafka connection 'default' \(set --kafka-bootstrap"):
        connections.Connections.empty().kafka_connection("default")


def test_a_bad_kafka_bootstrap_flag_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="--kafka-bootstrap='nope': a comma list of host:port"):
        connections.Connections.empty().with_default_kafka("nope")


def test_a_credential_file_is_read_again_once_it_changed(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("first\n")
    assert connections.read_secret(path) == "first"
    before = connections.files_stamp([path])
    replacement = tmp_path / "new"
    replacement.write_text("second")
    os.replace(replacement, path)  # how a Secret volume swaps its files: a new inode
    assert connections.files_stamp([path]) != before
    assert connections.read_secret(path) == "second"


def test_an_unreadable_or_empty_credential_file_is_a_settings_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SettingsError, match=r"empty.*the file is empty"):
        connections.read_secret(tmp_path / "empty")
    with pytest.raises(SettingsError, match=r"gone.*No such file"):
        connections.read_secret(tmp_path / "gone")


def test_insecure_skip_verify_turns_off_certificate_and_name_checks() -> None:
    strict = connections.ssl_context(connections.TLS())
    assert strict.verify_mode == ssl.CERT_REQUIRED
    assert strict.check_hostname
    loose = connections.ssl_context(connections.TLS(insecure_skip_verify=True))
    assert loose.verify_mode == ssl.CERT_NONE
    assert not loose.check_hostname


def test_a_ca_file_that_is_no_certificate_is_a_settings_error_naming_the_file(secrets: Path) -> None:
    tls = connections.parse(
        {"kafka": {"c": {"bootstrap": "a:1", "tls": {"ca-file": str(secrets / "ca.pem")}}}}
    )
    connection_tls = tls.kafka["c"].tls
    assert connection_tls is not None
    with pytest.raises(SettingsError, match=r"ca\.pem"):
        connections.ssl_context(connection_tls)


def test_tls_over_a_plaintext_url_is_refused_for_every_kind_naming_the_scheme_to_use(secrets: Path) -> None:
    tls = f"tls: {{ca-file: {secrets}/ca.pem}}"
    plaintext = write(
        secrets,
        f"""
redis: {{default: {{url: 'redis://r:6379', {tls}}}}}
rabbitmq: {{default: {{management-url: 'http://rabbitmq:15672', {tls}}}}}
nats: {{default: {{monitoring-url: 'http://nats:8222', {tls}}}}}
""",
    )
    with pytest.raises(SettingsError) as caught:
        connections.load(plaintext)
    assert [line.strip() for line in str(caught.value).splitlines()[1:]] == [
        "rabbitmq connection 'default': tls is set but the management-url is http:// (plaintext): use "
        "https:// for TLS",
        "redis connection 'default': tls is set but the url is redis:// (plaintext): use rediss:// for TLS",
        "nats connection 'default': tls is set but the monitoring-url is http:// (plaintext): use https:// "
        "for TLS",
    ]


def test_redis_tls_with_rediss_is_kept(secrets: Path) -> None:
    tls = f"tls: {{ca-file: {secrets}/ca.pem}}"

    secured = write(secrets, f"redis: {{default: {{url: 'rediss://r:6379', {tls}}}}}")
    kept = connections.load(secured).redis["default"].tls
    assert kept is not None
    assert kept.ca_file == secrets / "ca.pem"

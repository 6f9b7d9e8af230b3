"""Settings of `queue-autoscaler broker-ingress` and `dispatcher`, from flags and their env equivalents."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from autoscaler.errors import SettingsError
from autoscaler.settings import (
    KubeSettings,
    LogFormat,
    _kube,
    _log_format,
    _port,
    _positive_float,
    _positive_int,
    add_kube_flags,
    env_default,
)

MATCH_HELP = """\
Reads {"trigger": <a Trigger manifest as JSON>, "event": <a structured-mode CloudEvent as JSON>} on stdin
and writes {"matches": true|false, "reason": "..."}: the filter code the dispatcher runs, with what decided.
An invalid Trigger exits with status 2 and lists every problem on stderr.
"""


@dataclass(frozen=True, slots=True)
class BrokerIngressSettings:
    kube: KubeSettings
    kafka_bootstrap: str
    listen_host: str
    port: int
    metrics_port: int
    partitions: int
    max_body_bytes: int
    max_in_flight: int
    log_format: LogFormat


@dataclass(frozen=True, slots=True)
class DispatcherSettings:
    kube: KubeSettings
    kafka_bootstrap: str
    ingress_url: str
    metrics_port: int
    partitions: int
    max_in_flight: int
    cluster_domain: str
    log_format: LogFormat
    activator_url: str | None = None
    revoke_grace: float = 5.0


def _add_broker_kafka_flags(parser: argparse.ArgumentParser) -> None:
    add_kube_flags(parser)
    parser.add_argument(
        "--kafka-bootstrap",
        default=env_default("--kafka-bootstrap", None),
        help="bootstrap servers of the brokers' Kafka (env QUEUE_AUTOSCALER_KAFKA_BOOTSTRAP)",
    )
    parser.add_argument(
        "--broker-partitions",
        default=env_default("--broker-partitions", "10"),
        help="partitions of a new broker topic knative-broker-<namespace>-<name> (default 10, as Knative's)",
    )


def add_broker_ingress_flags(parser: argparse.ArgumentParser) -> None:
    _add_broker_kafka_flags(parser)
    parser.add_argument("--host", default=env_default("--host", "0.0.0.0"), help="address to listen on")
    parser.add_argument("--port", default=env_default("--port", "8080"), help="ingress port (default 8080)")
    parser.add_argument(
        "--metrics-port", default=env_default("--metrics-port", "9092"), help="metrics port (default 9092)"
    )
    parser.add_argument(
        "--max-body-bytes",
        default=env_default("--max-body-bytes", str(1024 * 1024)),
        help="largest event accepted, in bytes (default 1 MiB, as Kafka's record limit); larger: 413",
    )
    parser.add_argument(
        "--max-in-flight",
        default=env_default("--max-in-flight", "1000"),
        help="events waiting for Kafka's acknowledgement at once (default 1000); beyond: 503",
    )


def add_dispatcher_flags(parser: argparse.ArgumentParser) -> None:
    _add_broker_kafka_flags(parser)
    parser.add_argument(
        "--broker-ingress-url",
        default=env_default("--broker-ingress-url", None),
        help="base URL of the broker ingress (replies go there; a Broker is at <url>/<namespace>/<name>)",
    )
    parser.add_argument(
        "--metrics-port", default=env_default("--metrics-port", "9093"), help="metrics port (default 9093)"
    )
    parser.add_argument(
        "--max-in-flight",
        default=env_default("--max-in-flight", "100"),
        help="deliveries in flight per unordered Trigger (default 100)",
    )
    parser.add_argument(
        "--cluster-domain",
        default=env_default("--cluster-domain", "cluster.local"),
        help="cluster domain of Service URLs http://<name>.<namespace>.svc.<domain> (default cluster.local)",
    )
    parser.add_argument(
        "--activator-url",
        default=env_default("--activator-url", None),
        help="the activator's URL: deliveries to cluster Services go through it (Host: the Service's name), "
        "so a subscriber at zero replicas is woken and holds the event instead of failing it",
    )
    parser.add_argument(
        "--revoke-grace",
        default=env_default("--revoke-grace", "5"),
        help="seconds the deliveries in flight on a partition moving to another dispatcher replica get to "
        "finish before it goes (default 5); later ones are delivered again by the new owner",
    )


def _bootstrap(args: argparse.Namespace) -> str:
    if not args.kafka_bootstrap:
        raise SettingsError("--kafka-bootstrap: required (or set QUEUE_AUTOSCALER_KAFKA_BOOTSTRAP)")
    return str(args.kafka_bootstrap)


def broker_ingress_settings(args: argparse.Namespace) -> BrokerIngressSettings:
    return BrokerIngressSettings(
        kube=_kube(args),
        kafka_bootstrap=_bootstrap(args),
        listen_host=args.host,
        port=_port("--port", args.port),
        metrics_port=_port("--metrics-port", args.metrics_port),
        partitions=_positive_int("--broker-partitions", args.broker_partitions),
        max_body_bytes=_positive_int("--max-body-bytes", args.max_body_bytes),
        max_in_flight=_positive_int("--max-in-flight", args.max_in_flight),
        log_format=_log_format(args.log_format),
    )


def dispatcher_settings(args: argparse.Namespace) -> DispatcherSettings:
    url = args.broker_ingress_url or ""
    if not url.startswith(("http://", "https://")):
        raise SettingsError(f"--broker-ingress-url={url!r}: the http(s) URL of the broker ingress")
    return DispatcherSettings(
        kube=_kube(args),
        kafka_bootstrap=_bootstrap(args),
        ingress_url=url.rstrip("/"),
        metrics_port=_port("--metrics-port", args.metrics_port),
        partitions=_positive_int("--broker-partitions", args.broker_partitions),
        max_in_flight=_positive_int("--max-in-flight", args.max_in_flight),
        cluster_domain=args.cluster_domain,
        log_format=_log_format(args.log_format),
        activator_url=args.activator_url or None,
        revoke_grace=_positive_float("--revoke-grace", args.revoke_grace),
    )

"""Process settings, from command-line flags with ``QUEUE_AUTOSCALER_*`` environment equivalents.

Every flag ``--some-flag`` may be given as ``QUEUE_AUTOSCALER_SOME_FLAG``; a flag on the command line wins.
Values are checked once here and carried as frozen dataclasses.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from autoscaler import connections as connections_file
from autoscaler.errors import SettingsError
from autoscaler.kube import leases

ENV_PREFIX = "QUEUE_AUTOSCALER_"
LogFormat = Literal["auto", "json", "console"]


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def env_default(flag: str, default: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    return (os.environ if environ is None else environ).get(env_name(flag), default)


def _positive_float(flag: str, text: str | None) -> float:
    try:
        value = float(text or "")
    except ValueError:
        raise SettingsError(f"{flag}={text!r}: a number of seconds > 0") from None
    if value <= 0:
        raise SettingsError(f"{flag}={text!r}: a number of seconds > 0")
    return value


def _port(flag: str, text: str | None) -> int:
    if text is None or not text.isdigit() or not 0 <= int(text) <= 65535:
        raise SettingsError(f"{flag}={text!r}: a TCP port from 0 to 65535")
    return int(text)


def _log_format(text: str | None) -> LogFormat:
    if text == "auto":
        return "auto"
    if text == "json":
        return "json"
    if text == "console":
        return "console"
    raise SettingsError(f"--log-format={text!r}: one of auto, json, console")


def _namespaces(text: str | None) -> tuple[str, ...]:
    return tuple(sorted({n.strip() for n in (text or "").split(",") if n.strip()}))


def default_identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class KubeSettings:
    kubeconfig: Path | None
    namespaces: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    kube: KubeSettings
    kafka_bootstrap: str | None
    interval: float
    metrics_host: str
    metrics_port: int
    report_port: int
    report_token: str | None
    report_url: str | None
    log_format: LogFormat
    leader_election: bool
    lease_namespace: str
    lease_name: str
    identity: str
    report_insecure: bool = False
    cross_namespace_hosts: bool = False
    lease_duration: float = leases.LEASE_DURATION
    renew_deadline: float = leases.RENEW_DEADLINE
    retry_period: float = leases.RETRY_PERIOD
    connections: connections_file.Connections = field(default_factory=connections_file.Connections.empty)


@dataclass(frozen=True, slots=True)
class ActivatorSettings:
    kube: KubeSettings
    listen_host: str
    port: int
    metrics_port: int
    controller_url: str | None
    lease_namespace: str
    lease_name: str
    report_token: str | None
    report_interval: float
    max_body_bytes: int
    max_in_flight: int
    drain_timeout: float
    log_format: LogFormat
    identity: str
    cross_namespace_hosts: bool = False
    header_timeout: float = 10.0
    body_idle_timeout: float = 30.0
    max_connections_per_client: int = 256
    processes: int = 1
    max_connections_per_endpoint: int = 100
    event_loop: str = "uvloop"  # checked by activator.loops when the activator starts
    # Set in the processes of a multi-process activator: the proxy port is shared with SO_REUSEPORT.
    reuse_port: bool = False


def add_kube_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig",
        default=env_default("--kubeconfig", os.environ.get("KUBECONFIG")),
        help="kubeconfig file; unset: the in-cluster service account "
        "(env QUEUE_AUTOSCALER_KUBECONFIG or KUBECONFIG)",
    )
    parser.add_argument(
        "--namespace",
        default=env_default("--namespace", ""),
        help="comma list of namespaces to watch; empty: all namespaces (env QUEUE_AUTOSCALER_NAMESPACE)",
    )
    parser.add_argument(
        "--log-format",
        default=env_default("--log-format", "auto"),
        help="json, console, or auto (console on a terminal, JSON otherwise); default auto",
    )
    parser.add_argument(
        "--lease-namespace",
        default=env_default("--lease-namespace", os.environ.get("POD_NAMESPACE", "queue-autoscaler")),
        help="namespace of the leader-election Lease (default: the pod's namespace or queue-autoscaler)",
    )
    parser.add_argument(
        "--lease-name",
        default=env_default("--lease-name", "queue-autoscaler-controller"),
        help="name of the leader-election Lease (default queue-autoscaler-controller)",
    )
    parser.add_argument(
        "--report-token-file",
        default=env_default("--report-token-file", None),
        help="file holding the shared token of the activator -> controller channel (from a Secret); "
        "env QUEUE_AUTOSCALER_REPORT_TOKEN may hold the token itself",
    )
    parser.add_argument(
        "--identity",
        default=env_default("--identity", None),
        help="this replica's name in Leases and Events (default: $POD_NAME, else host-pid)",
    )


def _kube(args: argparse.Namespace) -> KubeSettings:
    return KubeSettings(
        kubeconfig=Path(args.kubeconfig) if args.kubeconfig else None,
        namespaces=_namespaces(args.namespace),
    )


def _token(args: argparse.Namespace) -> str | None:
    if args.report_token_file:
        try:
            token = Path(args.report_token_file).read_text().strip()
        except OSError as exc:
            raise SettingsError(f"--report-token-file={args.report_token_file!r}: {exc.strerror}") from None
        if not token:
            raise SettingsError(f"--report-token-file={args.report_token_file!r}: the file is empty")
        return token
    return os.environ.get(ENV_PREFIX + "REPORT_TOKEN") or None


def add_connections_flags(
    parser: argparse.ArgumentParser, *, bootstrap_flag: str = "--kafka-bootstrap"
) -> None:
    """``--connections FILE`` and the ``default`` Kafka connection's ``--kafka-bootstrap``."""
    parser.add_argument(
        "--connections",
        default=env_default("--connections", None),
        help="connections file (YAML): named Kafka, RabbitMQ, Redis and NATS servers with TLS and "
        "credential files (env QUEUE_AUTOSCALER_CONNECTIONS)",
    )
    parser.add_argument(
        bootstrap_flag,
        dest="kafka_bootstrap",
        default=env_default("--kafka-bootstrap", None),
        help="bootstrap servers (host:port[,host:port]) of the 'default' Kafka connection, a PLAINTEXT "
        "one, when the connections file does not define it (env QUEUE_AUTOSCALER_KAFKA_BOOTSTRAP)",
    )


def connections_settings(args: argparse.Namespace) -> connections_file.Connections:
    """The connections file (every problem listed in one SettingsError) plus ``--kafka-bootstrap``."""
    loaded = (
        connections_file.load(args.connections) if args.connections else connections_file.Connections.empty()
    )
    return loaded.with_default_kafka(args.kafka_bootstrap or None)


def _add_cross_namespace_hosts_flag(parser: argparse.ArgumentParser) -> None:
    """Shared by the controller and the activator: both must resolve host ownership alike."""
    parser.add_argument(
        "--allow-cross-namespace-hosts",
        default=env_default("--allow-cross-namespace-hosts", "false"),
        help="true: an http-host may name a host of another namespace (<name>.<namespace>[.svc...]); "
        "default false: such a claim is refused (give controller and activators the same value)",
    )


def add_controller_flags(parser: argparse.ArgumentParser) -> None:
    add_kube_flags(parser)
    add_connections_flags(parser)
    _add_cross_namespace_hosts_flag(parser)
    parser.add_argument(
        "--interval", default=env_default("--interval", "1"), help="seconds between ticks (default 1)"
    )
    parser.add_argument(
        "--metrics-port",
        default=env_default("--metrics-port", "9090"),
        help="port of /metrics, /healthz and /readyz (default 9090; 0 picks a free port)",
    )
    parser.add_argument(
        "--metrics-host", default=env_default("--metrics-host", "0.0.0.0"), help="address to listen on"
    )
    parser.add_argument(
        "--report-port",
        default=env_default("--report-port", "8081"),
        help="port where activators POST concurrency reports (default 8081; 0 picks a free port)",
    )
    parser.add_argument(
        "--report-insecure",
        nargs="?",
        const="true",
        default=env_default("--report-insecure", "false"),
        help="accept reports without a token (local use only: anyone who reaches the port can then scale "
        "targets); without it the controller refuses to start when no report token is set",
    )
    parser.add_argument(
        "--report-url",
        default=env_default("--report-url", None),
        help="URL the activators should use to reach this replica when it leads "
        "(default http://$POD_IP:<report-port>)",
    )
    parser.add_argument(
        "--leader-election",
        default=env_default("--leader-election", "true"),
        help="true/false: take a Lease so that only one replica scales (default true)",
    )
    parser.add_argument(
        "--lease-duration",
        default=env_default("--lease-duration", f"{leases.LEASE_DURATION:g}"),
        help="seconds a standby waits after the Lease last changed before it takes over "
        f"(default {leases.LEASE_DURATION:g}); "
        "a leader that dies without releasing the Lease is replaced within about this plus 2.4 retry periods",
    )
    parser.add_argument(
        "--renew-deadline",
        default=env_default("--renew-deadline", f"{leases.RENEW_DEADLINE:g}"),
        help="seconds the leader keeps leading without a successful renewal before it stops scaling "
        f"(default {leases.RENEW_DEADLINE:g}; less than --lease-duration, so it stops before a standby "
        "may start)",
    )
    parser.add_argument(
        "--retry-period",
        default=env_default("--retry-period", f"{leases.RETRY_PERIOD:g}"),
        help="seconds between the leader's renewals and a standby's attempts to take the Lease "
        f"(default {leases.RETRY_PERIOD:g}; less than --renew-deadline)",
    )


def _lease_timing(args: argparse.Namespace) -> tuple[float, float, float]:
    duration = _positive_float("--lease-duration", args.lease_duration)
    deadline = _positive_float("--renew-deadline", args.renew_deadline)
    retry = _positive_float("--retry-period", args.retry_period)
    if not duration > deadline > retry:
        raise SettingsError(
            f"--lease-duration={args.lease_duration!r}, --renew-deadline={args.renew_deadline!r}, "
            f"--retry-period={args.retry_period!r}: need lease-duration > renew-deadline > retry-period"
        )
    return duration, deadline, retry


def controller_settings(args: argparse.Namespace) -> ControllerSettings:
    if args.leader_election not in ("true", "false"):
        raise SettingsError(f"--leader-election={args.leader_election!r}: true or false")
    lease_duration, renew_deadline, retry_period = _lease_timing(args)
    if args.report_insecure not in ("true", "false"):
        raise SettingsError(f"--report-insecure={args.report_insecure!r}: true or false")
    report_token, insecure = _token(args), args.report_insecure == "true"
    if report_token is None and not insecure:
        raise SettingsError(
            "no report token: set --report-token-file (or QUEUE_AUTOSCALER_REPORT_TOKEN) so that only the "
            "activators can report, or pass --report-insecure for local use"
        )
    return ControllerSettings(
        kube=_kube(args),
        kafka_bootstrap=args.kafka_bootstrap or None,
        interval=_positive_float("--interval", args.interval),
        metrics_host=args.metrics_host,
        metrics_port=_port("--metrics-port", args.metrics_port),
        report_port=_port("--report-port", args.report_port),
        report_token=report_token,
        report_insecure=insecure,
        report_url=args.report_url,
        cross_namespace_hosts=_boolean("--allow-cross-namespace-hosts", args.allow_cross_namespace_hosts),
        log_format=_log_format(args.log_format),
        leader_election=args.leader_election == "true",
        lease_namespace=args.lease_namespace,
        lease_name=args.lease_name,
        identity=args.identity or default_identity(),
        lease_duration=lease_duration,
        renew_deadline=renew_deadline,
        retry_period=retry_period,
        connections=connections_settings(args),
    )


def add_activator_flags(parser: argparse.ArgumentParser) -> None:
    add_kube_flags(parser)
    parser.add_argument("--host", default=env_default("--host", "0.0.0.0"), help="address to listen on")
    parser.add_argument("--port", default=env_default("--port", "8080"), help="proxy port (default 8080)")
    parser.add_argument(
        "--metrics-port", default=env_default("--metrics-port", "9091"), help="metrics port (default 9091)"
    )
    parser.add_argument(
        "--controller-url",
        default=env_default("--controller-url", None),
        help="fixed URL of the controller's report endpoint; unset: read the leader's URL from its Lease",
    )
    parser.add_argument(
        "--report-interval",
        default=env_default("--report-interval", "1"),
        help="seconds between concurrency reports (default 1); a cold start is reported at once",
    )
    parser.add_argument(
        "--max-body-bytes",
        default=env_default("--max-body-bytes", str(10 * 1024 * 1024)),
        help="largest request body accepted, in bytes (default 10 MiB); larger gets 413",
    )
    parser.add_argument(
        "--max-in-flight",
        default=env_default("--max-in-flight", "10000"),
        help="requests forwarded at once over all targets (default 10000)",
    )
    parser.add_argument(
        "--drain-timeout",
        default=env_default("--drain-timeout", "30"),
        help="on SIGTERM, seconds to finish in-flight and buffered requests (default 30)",
    )
    _add_cross_namespace_hosts_flag(parser)
    parser.add_argument(
        "--header-timeout",
        default=env_default("--header-timeout", "10"),
        help="seconds a client has to send a request's line and headers (default 10); then 408",
    )
    parser.add_argument(
        "--body-idle-timeout",
        default=env_default("--body-idle-timeout", "30"),
        help="seconds a request body may pause between chunks (default 30); then 408",
    )
    parser.add_argument(
        "--max-connections-per-client",
        default=env_default("--max-connections-per-client", "256"),
        help="open connections accepted from one client address (default 256); more are closed at once",
    )
    parser.add_argument(
        "--processes",
        default=env_default("--processes", "1"),
        help="activator processes sharing the proxy port with SO_REUSEPORT (default 1); each runs its own "
        "watches and reports as <identity>-<n>; process n serves metrics and probes on --metrics-port + n",
    )
    parser.add_argument(
        "--max-connections-per-endpoint",
        default=env_default("--max-connections-per-endpoint", "100"),
        help="kept-alive connections open at once to one pod address, per process (default 100)",
    )
    parser.add_argument(
        "--event-loop",
        default=env_default("--event-loop", "uvloop"),
        help="uvloop (default) or asyncio; never replaced silently",
    )


def _boolean(flag: str, text: str | None) -> bool:
    if text == "true":
        return True
    if text == "false":
        return False
    raise SettingsError(f"{flag}={text!r}: true or false")


def _positive_int(flag: str, text: str | None) -> int:
    if text is None or not text.isdigit() or int(text) <= 0:
        raise SettingsError(f"{flag}={text!r}: an integer > 0")
    return int(text)


def activator_settings(args: argparse.Namespace) -> ActivatorSettings:
    found = _activator_settings(args)
    if found.metrics_port and found.metrics_port + found.processes - 1 > 65535:
        raise SettingsError(
            f"--metrics-port={found.metrics_port} with --processes={found.processes}: process n serves "
            "metrics on --metrics-port + n, which must stay <= 65535"
        )
    return found


def _activator_settings(args: argparse.Namespace) -> ActivatorSettings:
    return ActivatorSettings(
        kube=_kube(args),
        listen_host=args.host,
        port=_port("--port", args.port),
        metrics_port=_port("--metrics-port", args.metrics_port),
        controller_url=args.controller_url or None,
        lease_namespace=args.lease_namespace,
        lease_name=args.lease_name,
        report_token=_token(args),
        report_interval=_positive_float("--report-interval", args.report_interval),
        max_body_bytes=_positive_int("--max-body-bytes", args.max_body_bytes),
        max_in_flight=_positive_int("--max-in-flight", args.max_in_flight),
        drain_timeout=_positive_float("--drain-timeout", args.drain_timeout),
        log_format=_log_format(args.log_format),
        identity=args.identity or default_identity(),
        cross_namespace_hosts=_boolean("--allow-cross-namespace-hosts", args.allow_cross_namespace_hosts),
        header_timeout=_positive_float("--header-timeout", args.header_timeout),
        body_idle_timeout=_positive_float("--body-idle-timeout", args.body_idle_timeout),
        max_connections_per_client=_positive_int(
            "--max-connections-per-client", args.max_connections_per_client
        ),
        processes=_positive_int("--processes", args.processes),
        max_connections_per_endpoint=_positive_int(
            "--max-connections-per-endpoint", args.max_connections_per_endpoint
        ),
        event_loop=args.event_loop,
    )


# --- the event broker: broker-ingress and dispatcher --------------------------------------------------------

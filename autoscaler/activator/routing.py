"""Host -> target routes: a Deployment's HTTP annotations parsed into a frozen Route, looked up by Host."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from autoscaler import errors
from autoscaler.model import PREFIX as PREFIX
from autoscaler.model import TargetKey

HTTP_SERVICE = PREFIX + "http-service"
HTTP_PORT = PREFIX + "http-port"
HTTP_HOST = PREFIX + "http-host"
CONCURRENCY_PER_REPLICA = PREFIX + "concurrency-per-replica"
MAX_PENDING = PREFIX + "max-pending"
ACTIVATION_TIMEOUT = PREFIX + "activation-timeout"
CLOUDEVENTS = PREFIX + "cloudevents"
CLOUDEVENTS_TYPES = PREFIX + "cloudevents-types"

DEFAULT_CONCURRENCY_PER_REPLICA = 10
DEFAULT_MAX_REPLICAS = 100
DEFAULT_MAX_PENDING = 1000
DEFAULT_ACTIVATION_TIMEOUT = 60.0
CLUSTER_DOMAIN = "cluster.local"

_MAX_PENDING_LIMIT = 1_000_000
_MAX_CONCURRENCY_PER_REPLICA = 1_000_000
_MAX_ACTIVATION_TIMEOUT = 3600.0

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_SERVICE_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_PORT_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$")
_INT_RE = re.compile(r"^[0-9]{1,9}$")
_DURATION_RE = re.compile(r"^([0-9]{1,9})(ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_HOST_PORT_RE = re.compile(r"^[0-9]{0,5}$")


@dataclass(frozen=True, slots=True)
class CloudEventsFilter:
    """Whether requests must be CloudEvents 1.0, and which ``type`` values are accepted (None: any)."""

    enabled: bool = False
    types: frozenset[str] | None = None

    def accepts(self, event_type: str) -> bool:
        return self.types is None or event_type in self.types


@dataclass(frozen=True, slots=True)
class Route:
    """Where the activator sends requests for one Deployment, and how long and how many it may hold."""

    target: TargetKey
    service: str
    port: int | str
    hosts: frozenset[str]
    cloudevents: CloudEventsFilter = CloudEventsFilter()
    max_pending: int = DEFAULT_MAX_PENDING
    activation_timeout: float = DEFAULT_ACTIVATION_TIMEOUT
    concurrency_per_replica: int = DEFAULT_CONCURRENCY_PER_REPLICA
    # The controller validates max-replicas; here it only bounds how many endpoints a wake-up waits for.
    max_replicas: int = DEFAULT_MAX_REPLICAS


def default_hosts(target: TargetKey, *, cluster_domain: str = CLUSTER_DOMAIN) -> frozenset[str]:
    """``<deployment>.<namespace>``, with ``.svc`` and ``.svc.<cluster domain>``."""
    base = f"{target.name}.{target.namespace}".lower()
    return frozenset({base, f"{base}.svc", f"{base}.svc.{cluster_domain.lower().strip('.')}"})


def normalize_host(value: str | None) -> str | None:
    """A Host header value without port, lowercase, without a trailing dot; None when it is not a host."""
    if value is None:
        return None
    text = value.strip()
    if text.startswith("["):
        literal, bracket, rest = text[1:].partition("]")
        if not bracket or not literal or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return "[" + literal.lower() + "]"
    host, _, port = text.partition(":")
    if not _HOST_PORT_RE.match(port):
        return None
    host = host.lower().rstrip(".")
    return host or None


def parse_route(
    *, namespace: str, name: str, annotations: Mapping[str, str], cluster_domain: str = CLUSTER_DOMAIN
) -> Route | None:
    """The route of a Deployment, or None when it has no ``http-service`` annotation.

    Raises PolicyError listing every bad HTTP annotation at once.
    """
    if HTTP_SERVICE not in annotations:
        return None
    problems: list[errors.AnnotationProblem] = []

    def problem(key: str, allowed: str) -> None:
        problems.append(errors.AnnotationProblem(key=key, value=annotations.get(key), allowed=allowed))

    service = annotations[HTTP_SERVICE].strip()
    if not _SERVICE_RE.match(service):
        problem(
            HTTP_SERVICE, "a Service name: lowercase letters, digits and '-', starting with a letter, <= 63"
        )

    port = _parse_port(annotations.get(HTTP_PORT))
    if port is None:
        problem(HTTP_PORT, "required with http-service: a port number 1-65535 or a port name (<= 15 chars)")

    target = TargetKey(namespace, name)
    hosts = set(default_hosts(target, cluster_domain=cluster_domain))
    if HTTP_HOST in annotations:
        extra = _parse_list(annotations[HTTP_HOST])
        if extra is None or not all(_is_hostname(h) for h in extra):
            problem(HTTP_HOST, "comma list of DNS host names without port, e.g. 'orders.example.com'")
        else:
            hosts.update(h.lower().rstrip(".") for h in extra)

    concurrency = _parse_int(annotations, CONCURRENCY_PER_REPLICA, DEFAULT_CONCURRENCY_PER_REPLICA)
    if concurrency is None or not 1 <= concurrency <= _MAX_CONCURRENCY_PER_REPLICA:
        problem(CONCURRENCY_PER_REPLICA, f"integer 1-{_MAX_CONCURRENCY_PER_REPLICA}")
    max_pending = _parse_int(annotations, MAX_PENDING, DEFAULT_MAX_PENDING)
    if max_pending is None or max_pending > _MAX_PENDING_LIMIT:
        problem(MAX_PENDING, f"integer 0-{_MAX_PENDING_LIMIT}")

    timeout = _parse_duration(annotations.get(ACTIVATION_TIMEOUT), DEFAULT_ACTIVATION_TIMEOUT)
    if timeout is None or not 0 < timeout <= _MAX_ACTIVATION_TIMEOUT:
        problem(ACTIVATION_TIMEOUT, "duration > 0 and <= 1h, e.g. '500ms', '30s', '5m', '1h'")

    enabled = _parse_bool(annotations.get(CLOUDEVENTS), default=False)
    if enabled is None:
        problem(CLOUDEVENTS, "'true' or 'false'")
    types: frozenset[str] | None = None
    if CLOUDEVENTS_TYPES in annotations:
        listed = _parse_list(annotations[CLOUDEVENTS_TYPES])
        if listed is None:
            problem(CLOUDEVENTS_TYPES, "non-empty comma list of CloudEvents type values without empty items")
        elif enabled is False:
            problem(CLOUDEVENTS_TYPES, f"needs {CLOUDEVENTS}: 'true'")
        else:
            types = frozenset(listed)

    if (
        problems
        or port is None
        or concurrency is None
        or max_pending is None
        or timeout is None
        or enabled is None
    ):
        raise errors.PolicyError(tuple(problems))
    return Route(
        target=target,
        service=service,
        port=port,
        hosts=frozenset(hosts),
        cloudevents=CloudEventsFilter(enabled=enabled, types=types),
        max_pending=max_pending,
        activation_timeout=timeout,
        concurrency_per_replica=concurrency,
        max_replicas=_lenient_max_replicas(annotations.get(PREFIX + "max-replicas")),
    )


def _lenient_max_replicas(value: str | None) -> int:
    """max-replicas as the controller will apply it; an invalid value (the controller reports it) counts
    as the default."""
    text = (value or "").strip()
    return int(text) if text.isdigit() else DEFAULT_MAX_REPLICAS


class RouteTable:
    """The routes known to this activator, by target and by host name.

    A host claimed by several targets (an ``http-host`` equal to another Deployment's name) goes to the
    smallest TargetKey, so every activator replica picks the same one.
    """

    def __init__(self) -> None:
        self._routes: dict[TargetKey, Route] = {}
        self._hosts: dict[str, set[TargetKey]] = {}

    def __len__(self) -> int:
        return len(self._routes)

    def __contains__(self, target: object) -> bool:
        return target in self._routes

    def routes(self) -> tuple[Route, ...]:
        return tuple(self._routes[key] for key in sorted(self._routes))

    def get(self, target: TargetKey) -> Route | None:
        return self._routes.get(target)

    def put(self, route: Route) -> Route | None:
        """Adds or replaces the route of ``route.target``; returns the route it replaced."""
        old = self.remove(route.target)
        self._routes[route.target] = route
        for host in route.hosts:
            self._hosts.setdefault(host, set()).add(route.target)
        return old

    def remove(self, target: TargetKey) -> Route | None:
        old = self._routes.pop(target, None)
        if old is not None:
            for host in old.hosts:
                claimants = self._hosts.get(host)
                if claimants is not None:
                    claimants.discard(target)
                    if not claimants:
                        del self._hosts[host]
        return old

    def lookup(self, host_header: str | None) -> Route | None:
        """The route for a Host header value (any case, with or without port), or None."""
        host = normalize_host(host_header)
        if host is None:
            return None
        claimants = self._hosts.get(host)
        if not claimants:
            return None
        return self._routes[min(claimants)]


def _parse_port(value: str | None) -> int | str | None:
    if value is None:
        return None
    text = value.strip()
    if _INT_RE.match(text):
        number = int(text)
        return number if 1 <= number <= 65535 else None
    if _PORT_NAME_RE.match(text) and "--" not in text and any(c.isalpha() for c in text):
        return text
    return None


def _parse_int(annotations: Mapping[str, str], key: str, default: int) -> int | None:
    value = annotations.get(key)
    if value is None:
        return default
    text = value.strip()
    return int(text) if _INT_RE.match(text) else None


def _parse_duration(value: str | None, default: float) -> float | None:
    if value is None:
        return default
    match = _DURATION_RE.match(value.strip())
    if match is None:
        return None
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _parse_bool(value: str | None, *, default: bool) -> bool | None:
    if value is None:
        return default
    return {"true": True, "false": False}.get(value.strip())


def _parse_list(value: str) -> list[str] | None:
    items = [item.strip() for item in value.split(",")]
    if not items or any(not item for item in items):
        return None
    return items


def _is_hostname(value: str) -> bool:
    host = value.lower().rstrip(".")
    return len(host) <= 253 and bool(_HOSTNAME_RE.match(host))

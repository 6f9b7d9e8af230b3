"""Activator metrics on an injected prometheus registry; a removed target's series are dropped."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from autoscaler.model import TargetKey

_LABELS = ("namespace", "deployment")
_WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ActivatorMetrics:
    """Per-target request metrics. Series exist only for routed targets (and unrouted requests)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.pending = Gauge(
            "queue_autoscaler_activator_pending_requests",
            "Requests waiting for a first ready endpoint of the target.",
            _LABELS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "queue_autoscaler_activator_in_flight_requests",
            "Requests held for the target and not queued: being forwarded or answered.",
            _LABELS,
            registry=registry,
        )
        self.responses = Counter(
            "queue_autoscaler_activator_responses",
            "Responses sent, by target and HTTP status code (unrouted requests have empty target labels).",
            (*_LABELS, "code"),
            registry=registry,
        )
        self.cold_starts = Counter(
            "queue_autoscaler_activator_cold_starts",
            "Times a request found the target with no ready endpoint and nobody waiting before it.",
            _LABELS,
            registry=registry,
        )
        self.cold_start_wait = Histogram(
            "queue_autoscaler_activator_cold_start_wait_seconds",
            "Time a request queued until an endpoint of the target turned ready.",
            _LABELS,
            buckets=_WAIT_BUCKETS,
            registry=registry,
        )
        self.proxy_latency = Histogram(
            "queue_autoscaler_activator_proxy_latency_seconds",
            "Time from forwarding a request to an endpoint until its response headers arrived.",
            _LABELS,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.reports = Counter(
            "queue_autoscaler_activator_reports",
            "Concurrency reports sent to the controller, by result (ok, rejected, failed).",
            ("result",),
            registry=registry,
        )
        self._targets: dict[TargetKey, _Bound] = {}
        self._unrouted: dict[int, Any] = {}

    def track(self, target: TargetKey, *, held: Callable[[], tuple[int, int]] | None = None) -> None:
        """Starts recording for a routed target: its series, bound once, so that a request looks none up.

        ``held`` gives its (in flight, queued) requests, read when the metrics are collected (nothing to
        write per request); without it the two gauges are set with ``set_held``.
        """
        if target not in self._targets:
            labels = (target.namespace, target.name)
            bound = _Bound(
                pending=self.pending.labels(*labels),
                in_flight=self.in_flight.labels(*labels),
                responses={},
            )
            if held is None:
                bound.pending.set(0)
                bound.in_flight.set(0)
            else:
                bound.pending.set_function(lambda: held()[1])
                bound.in_flight.set_function(lambda: held()[0])
            self._targets[target] = bound

    def forget(self, target: TargetKey) -> None:
        """Removes every series of the target; later records for it are ignored."""
        self._targets.pop(target, None)
        labels = {"namespace": target.namespace, "deployment": target.name}
        for metric in (
            self.pending,
            self.in_flight,
            self.responses,
            self.cold_starts,
            self.cold_start_wait,
            self.proxy_latency,
        ):
            metric.remove_by_labels(labels)

    def set_held(self, target: TargetKey, *, in_flight: int, queued: int) -> None:
        bound = self._targets.get(target)
        if bound is not None:
            bound.pending.set(queued)
            bound.in_flight.set(in_flight)

    def response(self, target: TargetKey | None, code: int) -> None:
        if target is None:
            child = self._unrouted.get(code)
            if child is None:
                child = self._unrouted[code] = self.responses.labels("", "", str(code))
            child.inc()
            return
        bound = self._targets.get(target)
        if bound is not None:
            child = bound.responses.get(code)
            if child is None:
                child = bound.responses[code] = self.responses.labels(
                    target.namespace, target.name, str(code)
                )
            child.inc()

    def cold_start(self, target: TargetKey) -> None:
        if target in self._targets:
            self.cold_starts.labels(target.namespace, target.name).inc()  # once per wake-up: not bound

    def waited(self, target: TargetKey, seconds: float) -> None:
        if target in self._targets:
            self.cold_start_wait.labels(target.namespace, target.name).observe(seconds)

    def latency(self, target: TargetKey, seconds: float) -> None:
        bound = self._targets.get(target)
        if bound is not None:
            if bound.proxy_latency is None:  # the series appears with the first forwarded request
                bound.proxy_latency = self.proxy_latency.labels(target.namespace, target.name)
            bound.proxy_latency.observe(seconds)

    def report(self, result: str) -> None:
        self.reports.labels(result).inc()


@dataclass(slots=True)
class _Bound:
    """One routed target's series (prometheus children), looked up once when it is tracked."""

    pending: Any
    in_flight: Any
    responses: dict[int, Any]
    proxy_latency: Any = None

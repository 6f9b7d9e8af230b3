"""The controller's Prometheus metrics, on an injected registry; a deleted target's series are removed."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from autoscaler.model import TargetKey

_TARGET = ("namespace", "deployment")
_FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.desired_replicas = Gauge(
            "queue_autoscaler_desired_replicas",
            "Replicas the last decision asked for",
            _TARGET,
            registry=registry,
        )
        self.current_replicas = Gauge(
            "queue_autoscaler_current_replicas", "spec.replicas as last seen", _TARGET, registry=registry
        )
        self.lag = Gauge(
            "queue_autoscaler_lag",
            "Total consumer-group lag used for the last decision; absent while the lag cannot be read",
            _TARGET,
            registry=registry,
        )
        self.source_up = Gauge(
            "queue_autoscaler_source_up",
            "1 when the target's source could be read for the last decision, 0 when it could not",
            (*_TARGET, "source"),
            registry=registry,
        )
        self.concurrency = Gauge(
            "queue_autoscaler_http_concurrency",
            "In-flight plus queued requests reported by the activators",
            _TARGET,
            registry=registry,
        )
        self.active = Gauge(
            "queue_autoscaler_active",
            "1 when the target has work (above its activation threshold)",
            _TARGET,
            registry=registry,
        )
        self.scale_patches = Counter(
            "queue_autoscaler_scale_patches_total",
            "Scale subresource patches issued, by direction",
            (*_TARGET, "direction"),
            registry=registry,
        )
        self.ticks = Counter("queue_autoscaler_ticks", "Ticks run (as leader or not)", registry=registry)
        self.tick_seconds = Histogram(
            "queue_autoscaler_tick_duration_seconds",
            "Duration of one tick: the batched lag reads and posting each target's reading to its worker",
            registry=registry,
            buckets=_FAST_BUCKETS,
        )
        self.decision_seconds = Histogram(
            "queue_autoscaler_decision_duration_seconds",
            "Duration of one target's decision",
            registry=registry,
            buckets=(0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01),
        )
        self.reaction_seconds = Histogram(
            "queue_autoscaler_reaction_seconds",
            "From the observation that changed the decision to the scale patch being acknowledged",
            registry=registry,
            buckets=_FAST_BUCKETS,
        )
        self.errors = Counter("queue_autoscaler_errors_total", "Errors by kind", ("kind",), registry=registry)
        self.targets = Gauge("queue_autoscaler_targets", "Annotated Deployments watched", registry=registry)
        self.leader = Gauge(
            "queue_autoscaler_leader", "1 while this replica is the leader", registry=registry
        )
        self._children: dict[TargetKey, tuple[Gauge, ...]] = {}
        self._lag_children: dict[TargetKey, Gauge] = {}
        self._last: dict[TargetKey, tuple[object, ...]] = {}  # the values last set, per target
        self._source_children: dict[TargetKey, dict[str, Gauge]] = {}
        self._target_gauges = (
            self.desired_replicas,
            self.current_replicas,
            self.lag,
            self.concurrency,
            self.active,
        )

    def observe_target(
        self,
        key: TargetKey,
        *,
        desired: int,
        current: int,
        lag: int | None,
        concurrency: int | None,
        active: bool,
        sources_up: tuple[tuple[str, bool], ...] = (),
    ) -> None:
        """The gauges of one decision. ``lag`` None (no Kafka, or unreadable) leaves no lag series;
        ``sources_up`` says, per source the target scales on, whether it could be read."""
        seen = (desired, current, lag, concurrency, active, sources_up)
        if self._last.get(key) == seen:
            return  # at 1,000 mostly idle targets, most decisions change no gauge
        self._last[key] = seen
        children = self._children.get(key)
        if children is None:  # labels() per call costs more than the decision itself at 1,000 targets
            labels = (key.namespace, key.name)
            children = self._children[key] = tuple(
                gauge.labels(*labels) for gauge in (self.desired_replicas, self.current_replicas, self.active)
            )
        desired_child, current_child, active_child = children
        desired_child.set(desired)
        current_child.set(current)
        active_child.set(1 if active else 0)
        if lag is None:
            if self._lag_children.pop(key, None) is not None:
                with contextlib.suppress(KeyError):
                    self.lag.remove(key.namespace, key.name)
        else:
            lag_child = self._lag_children.get(key)
            if lag_child is None:
                lag_child = self._lag_children[key] = self.lag.labels(key.namespace, key.name)
            lag_child.set(lag)
        if sources_up:
            known = self._source_children.setdefault(key, {})
            for source, up in sources_up:
                child = known.get(source)
                if child is None:
                    child = known[source] = self.source_up.labels(key.namespace, key.name, source)
                child.set(1 if up else 0)
        if concurrency is not None:  # only targets with an HTTP source have this series
            self.concurrency.labels(key.namespace, key.name).set(concurrency)

    def forget_target(self, key: TargetKey) -> None:
        self._last.pop(key, None)
        self._children.pop(key, None)
        self._lag_children.pop(key, None)
        labels = (key.namespace, key.name)
        for source in self._source_children.pop(key, {}):
            with contextlib.suppress(KeyError):
                self.source_up.remove(*labels, source)
        for gauge in self._target_gauges:
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
        for direction in ("up", "down", "to-zero", "from-zero"):
            with contextlib.suppress(KeyError):
                self.scale_patches.remove(*labels, direction)

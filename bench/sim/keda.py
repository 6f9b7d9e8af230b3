"""KEDA's Kafka scaler with its HPA, as a policy in the simulator (defaults, and a tuned configuration).

Every rule is cited from kedacore/keda (main, 2026) and, for the 1→N part, ``bench/sim/hpa.py``:

- Poll every 30 s: ``defaultPollingInterval = 30`` (``apis/keda/v1alpha1/withtriggers_types.go``), the
  period of ``scaleHandler.startScaleLoop`` (``pkg/scaling/scale_handler.go``), which calls
  ``scaleExecutor.RequestScale`` (``pkg/scaling/executor/scale_scaledobjects.go``) with the scaler's
  activity.
- Activity: ``kafkaScaler.GetMetricsAndActivity`` (``pkg/scalers/kafka_scaler.go``): active when the total
  lag (persistent lag included) > ``activationLagThreshold`` (default 0).
- 0 → 1: ``RequestScale`` with ``currentReplicas == 0`` and an active trigger calls ``scaleFromZeroOrIdle``,
  which sets ``max(minReplicaCount, 1)`` replicas; the HPA does the rest (it does not act at 0 replicas).
- Active: ``lastActiveTime`` is refreshed on every poll that finds the trigger active.
- → 0: ``scaleToZeroOrIdle``: when not active, ``minReplicaCount`` 0 and ``lastActiveTime + cooldownPeriod``
  has passed (``defaultCooldownPeriod = 5 * 60``, ``pkg/scaling/executor/scale_executor.go``), scale to 0
  from any count.
- 1 → N: the HPA on the external metric, target type ``AverageValue`` (``GetMetricTargetType``,
  ``pkg/scalers/scaler.go``) of ``lagThreshold`` (``defaultKafkaLagThreshold = 10``); the HPA queries the
  metric at its own sync (KEDA's metrics server asks the scaler then).
- The metric: ``kafkaScaler.getTotalLag``: the sum of the partitions' lags, and unless
  ``allowIdleConsumers``, ``if (totalLag / lagThreshold) > upperBound { totalLag = upperBound ×
  lagThreshold }`` with ``upperBound`` the partition count: an integer division, so a lag of up to
  ``P × lagThreshold + lagThreshold − 1`` passes uncapped and ``ceil`` in the HPA asks for P + 1 replicas;
  and at the cap, ``P / (P − 1) ≤ 1.1`` for P ≥ 11 keeps the HPA's tolerance band from moving P − 1 to P.

Tuned: ``pollingInterval: 5``, ``cooldownPeriod: 60`` and
``advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds: 60``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.sim.engine import View
from bench.sim.hpa import Hpa, HpaBehavior


@dataclass(frozen=True)
class KedaConfig:
    polling_interval: float = 30.0
    cooldown_period: float = 300.0
    lag_threshold: int = 10
    activation_lag_threshold: int = 0
    allow_idle_consumers: bool = False
    min_replica_count: int = 0
    max_replica_count: int = 100
    hpa: HpaBehavior = field(default_factory=HpaBehavior)


DEFAULT = KedaConfig()
TUNED = KedaConfig(polling_interval=5.0, cooldown_period=60.0, hpa=HpaBehavior(scale_down_stabilization=60.0))


def kafka_metric(view: View, config: KedaConfig) -> tuple[int, bool]:
    """``getTotalLag`` and the activity of ``GetMetricsAndActivity``: (metric, active)."""
    total = view.backlog
    active = total > config.activation_lag_threshold
    partitions = len(view.end)
    if not config.allow_idle_consumers and total // config.lag_threshold > partitions:
        total = partitions * config.lag_threshold
    return total, active


def concurrency_metric(view: View, config: KedaConfig) -> tuple[int, bool]:
    """The HTTP add-on's external scaler: pending requests (queued + in flight), active when > 0."""
    return view.concurrency, view.concurrency > config.activation_lag_threshold


class Keda:
    """The KEDA operator's poll loop and the HPA's sync loop, each at its own period from t = 0."""

    def __init__(self, name: str, config: KedaConfig, *, http: bool = False) -> None:
        self.name = name
        self.config = config
        behavior = config.hpa
        self.hpa = Hpa(
            HpaBehavior(
                **{
                    **behavior.__dict__,
                    "min_replicas": max(config.min_replica_count, 1),
                    "max_replicas": config.max_replica_count,
                }
            )
        )
        self._metric = concurrency_metric if http else kafka_metric
        self._next_poll = 0.0
        self._next_sync = 0.0
        self._last_active: float | None = None

    def step(self, view: View) -> int:
        desired = view.spec
        if view.t + 1e-9 >= self._next_poll:
            self._next_poll += self.config.polling_interval
            desired = self._poll(view)
        if view.t + 1e-9 >= self._next_sync:
            self._next_sync += self.config.hpa.sync_period
            if desired > 0:
                metric, _ = self._metric(view, self.config)
                desired = self.hpa.sync(
                    view.t,
                    metric=metric,
                    target=self.config.lag_threshold,
                    current=desired,
                    status_replicas=view.existing if desired == view.spec else desired,
                )
        return desired

    def _poll(self, view: View) -> int:
        _, active = self._metric(view, self.config)
        if active:
            self._last_active = view.t
            if view.spec == 0:
                return max(self.config.min_replica_count, 1)
            return view.spec
        if view.spec > 0 and self.config.min_replica_count == 0:
            cooled = self._last_active is None or view.t >= self._last_active + self.config.cooldown_period
            if cooled:
                return 0
        return view.spec

"""The Kubernetes Horizontal Pod Autoscaler, as KEDA drives it, for an external ``AverageValue`` metric.

Every rule is cited from kubernetes/kubernetes (v1.3x):

- Sync every 15 s: kube-controller-manager's ``--horizontal-pod-autoscaler-sync-period`` default
  (``pkg/controller/podautoscaler/config/v1alpha1/defaults.go``).
- Raw count: ``ReplicaCalculator.GetExternalPerPodMetricReplicas``
  (``pkg/controller/podautoscaler/replica_calculator.go``): ``usageRatio = metric / (target ×
  statusReplicas)``; only when ``|1 − usageRatio| > tolerance`` does the count become ``ceil(metric /
  target)``, otherwise it stays at ``statusReplicas`` (the pods that exist, ready or not).
- Tolerance 0.1: ``--horizontal-pod-autoscaler-tolerance`` default (same defaults file).
- Stabilization: ``HorizontalController.stabilizeRecommendationWithBehaviors`` (``horizontal.go``): every
  sync's raw count is recorded; the recommendation is raised to the lowest count within the scale-up window
  (default 0 s: the current one) and lowered to the highest within the scale-down window (default 300 s,
  ``--horizontal-pod-autoscaler-downscale-stabilization``).
- Rate limits: ``calculateScaleUpLimitWithScalingRules`` / ``calculateScaleDownLimitWithBehaviors``
  (``horizontal.go``) with the default behavior of ``pkg/apis/autoscaling/v2/defaults.go``
  (``defaultHPAScaleUpRules``: the larger of 4 pods and 100 % per 15 s; ``defaultHPAScaleDownRules``: 100 %
  per 15 s), each measured from the count at the start of the period (the changes of the last 15 s undone).
- Bounds: ``minReplicas`` at least 1 (an HPA never scales to zero; KEDA sets it to
  ``max(minReplicaCount, 1)``), ``maxReplicas``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class HpaBehavior:
    sync_period: float = 15.0
    tolerance: float = 0.1
    scale_up_stabilization: float = 0.0
    scale_down_stabilization: float = 300.0
    scale_up_pods: int = 4
    scale_up_percent: float = 100.0
    scale_down_percent: float = 100.0
    policy_period: float = 15.0
    min_replicas: int = 1
    max_replicas: int = 100


@dataclass
class Hpa:
    """One HPA's memory: recommendations and its own scale events (time, change)."""

    behavior: HpaBehavior
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    events: list[tuple[float, int]] = field(default_factory=list)

    def raw(self, *, metric: float, target: float, status_replicas: int) -> int:
        """``GetExternalPerPodMetricReplicas``: the tolerance band around the current count."""
        if status_replicas <= 0:
            return math.ceil(metric / target)
        ratio = metric / (target * status_replicas)
        if abs(1.0 - ratio) > self.behavior.tolerance:
            return math.ceil(metric / target)
        return status_replicas

    def sync(self, now: float, *, metric: float, target: float, current: int, status_replicas: int) -> int:
        """One sync: the replica count the HPA writes (``current`` when it keeps it)."""
        b = self.behavior
        raw = self.raw(metric=metric, target=target, status_replicas=status_replicas)
        keep_for = max(b.scale_up_stabilization, b.scale_down_stabilization)
        self.recommendations = [(t, n) for t, n in self.recommendations if now - t < keep_for]
        up = raw
        down = raw
        for t, n in self.recommendations:
            if now - t < b.scale_up_stabilization:
                up = min(up, n)
            if now - t < b.scale_down_stabilization:
                down = max(down, n)
        self.recommendations.append((now, raw))
        desired = max(current, up)
        desired = min(desired, down)
        self.events = [(t, d) for t, d in self.events if now - t < b.policy_period]
        if desired > current:
            start = current - sum(d for _, d in self.events if d > 0)
            limit = max(start + b.scale_up_pods, math.ceil(start * (1 + b.scale_up_percent / 100)))
            desired = min(desired, limit)
        elif desired < current:
            start = current - sum(d for _, d in self.events if d < 0)
            limit = math.ceil(start * (1 - b.scale_down_percent / 100))
            desired = max(desired, limit)
        desired = max(b.min_replicas, min(b.max_replicas, desired))
        if desired != current:
            self.events.append((now, desired - current))
        return desired

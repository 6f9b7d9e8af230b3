"""Knative Serving's KPA with its defaults, as a policy in the simulator (HTTP traces).

Every rule is cited from knative/serving (main, 2026):

- Tick every 2 s: ``tickInterval = 2 * time.Second`` (``pkg/autoscaler/scaling/multiscaler.go``); a
  request at zero is a ``MultiScaler.Poke`` (the activator's stat), which decides at once.
- Defaults (``pkg/autoscaler/config/config.go``, ``defaultConfig``): ``StableWindow`` 60 s,
  ``PanicWindowPercentage`` 10 (a 6 s panic window), ``PanicThresholdPercentage`` 200,
  ``TargetUtilization`` / ``ContainerConcurrencyTargetFraction`` 0.7, ``MaxScaleUpRate`` 1000,
  ``MaxScaleDownRate`` 2, ``ScaleToZeroGracePeriod`` 30 s. The per-pod target is the container
  concurrency × 0.7 (``containerConcurrency`` = the worker model's concurrency per replica).
- ``autoscaler.Scale`` (``pkg/autoscaler/scaling/autoscaler.go``): observed stable and panic concurrency
  are the window averages; ``readyPodsCount`` is at least 1; ``maxScaleUp = ceil(MaxScaleUpRate × ready)``,
  ``maxScaleDown = floor(ready / MaxScaleDownRate)``; ``dspc = ceil(stable / target)``, ``dppc =
  ceil(panic / target)``, each kept within [maxScaleDown, maxScaleUp]; panic starts when ``dppc / ready >=
  PanicThreshold`` and lasts until a stable window passed without that; in panic the count never goes down
  (``maxPanicPods``) and is the larger of the stable and panic counts.
- To zero: ``kpa/scaler.go`` ``handleScaleToZero``: a desired count of 0 is applied only after the
  revision has been inactive for ``ScaleToZeroGracePeriod``; until then one pod stays.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from bench.sim.engine import View


@dataclass(frozen=True)
class KpaConfig:
    tick_interval: float = 2.0
    stable_window: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0
    target_utilization: float = 0.7
    container_concurrency: int = 10
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_to_zero_grace_period: float = 30.0


class Kpa:
    def __init__(self, name: str, config: KpaConfig = KpaConfig()) -> None:
        self.name = name
        self.config = config
        self._samples: deque[tuple[float, int]] = deque()  # (time, concurrency), one per second
        self._next_sample = 0.0
        self._next_tick = 0.0
        self._panic_since: float | None = None
        self._max_panic_pods = 0
        self._zero_since: float | None = None

    def step(self, view: View) -> int:
        c = self.config
        if view.t + 1e-9 >= self._next_sample:
            self._next_sample += 1.0
            self._samples.append((view.t, view.concurrency))
            while self._samples and view.t - self._samples[0][0] >= c.stable_window:
                self._samples.popleft()
        if view.t + 1e-9 >= self._next_tick:
            self._next_tick += c.tick_interval
            return self._scale(view)
        if view.cold and view.spec == 0:
            self._samples.append((view.t, max(view.concurrency, 1)))
            return self._scale(view)
        return view.spec

    def _average(self, window: float, now: float) -> float:
        values = [n for t, n in self._samples if now - t < window]
        return sum(values) / len(values) if values else 0.0

    def _scale(self, view: View) -> int:
        c = self.config
        target = c.container_concurrency * c.target_utilization
        stable = self._average(c.stable_window, view.t)
        panic = self._average(c.stable_window * c.panic_window_percentage / 100, view.t)
        ready = max(1.0, float(view.ready))
        max_up = math.ceil(c.max_scale_up_rate * ready)
        max_down = math.floor(ready / c.max_scale_down_rate)
        dspc, dppc = math.ceil(stable / target), math.ceil(panic / target)
        desired_stable = int(min(max(dspc, max_down), max_up))
        desired_panic = int(min(max(dppc, max_down), max_up))
        over = dppc / ready >= c.panic_threshold_percentage / 100
        if over:
            self._panic_since = view.t
        elif self._panic_since is not None and view.t - self._panic_since > c.stable_window:
            self._panic_since, self._max_panic_pods = None, 0
        desired = desired_stable
        if self._panic_since is not None:
            desired = max(desired, desired_panic)
            self._max_panic_pods = max(self._max_panic_pods, desired)
            desired = self._max_panic_pods
        if desired == 0 and dspc == 0 and dppc == 0:
            if self._zero_since is None:
                self._zero_since = view.t
            if view.t - self._zero_since < c.scale_to_zero_grace_period and view.spec > 0:
                return 1
            return 0
        self._zero_since = None
        return max(desired, 1) if stable > 0 or panic > 0 else desired

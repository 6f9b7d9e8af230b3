"""Our controller in the simulator: the real ``policy.decide``, called the way ``control/loop.py`` calls it.

The one place the simulator touches the decision's API. As in the loop: a fixed-rate tick (default 1 s)
reads every partition's committed and end offsets, builds an ``Observation`` with the Deployment's
``spec.replicas`` as the current count, passes the previous ``DecisionState`` and gets the next one back
(the scale-down window, the idle timer and drain-within's rates live there, exactly as in the
controller), with the ready replicas the Deployment's status reports, and patches when the count changes.
HTTP targets: the activators report concurrency (queued + in flight) every second, and a
request for a target with no ready replica pokes the loop, which decides at once with the poke counted as
one waiting request (``control/worker.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from autoscaler.model import Observation, PartitionOffsets
from autoscaler.policy import annotations as policy_annotations
from autoscaler.policy import decide
from bench.sim.engine import View

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
TOPIC = "simulated"


class Ours:
    """``name`` and the Deployment annotations (keys with or without the ``queue-autoscaler.dev/`` prefix)."""

    def __init__(self, name: str, annotations: Mapping[str, str], *, interval: float = 1.0) -> None:
        notes = {k if "/" in k else policy_annotations.PREFIX + k: v for k, v in annotations.items()}
        policy = policy_annotations.parse(notes)
        if policy is None:
            raise ValueError(f"{name}: the annotations name neither kafka-group nor http-service")
        self.name = name
        self.policy = policy
        self.interval = interval
        self.state = decide.DecisionState.initial(policy.last_active)
        self.rules: list[str] = []
        self._next_tick = 0.0
        self._topic = policy.kafka_topics[0] if policy.kafka_topics else TOPIC

    def step(self, view: View) -> int:
        if view.t + 1e-9 >= self._next_tick:
            self._next_tick += self.interval * (1 + int((view.t - self._next_tick) // self.interval))
            return self._decide(view, poked=False)
        if self.policy.uses_http and view.cold and view.spec == 0:
            return self._decide(view, poked=True)
        return view.spec

    def _decide(self, view: View, *, poked: bool) -> int:
        partitions = None
        if self.policy.uses_kafka:
            partitions = tuple(
                PartitionOffsets(self._topic, p, committed, end, 0)
                for p, (committed, end) in enumerate(zip(view.committed, view.end, strict=True))
            )
        concurrency = None
        if self.policy.uses_http:
            concurrency = max(view.concurrency, 1) if poked else view.concurrency
        observation = Observation(
            current_replicas=view.spec,
            partitions=partitions,
            kafka_error=None,
            concurrency=concurrency,
            ready_replicas=view.ready,
        )
        now = EPOCH + timedelta(seconds=round(view.t, 6))
        decision, self.state = decide.decide(self.policy, observation, self.state, now)
        self.rules.append(str(decision.rule))
        return decision.desired_replicas

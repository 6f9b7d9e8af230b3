"""queue-autoscaler processes for tests; they live in ``devstack.processes`` (the benchmarks share them)."""

from devstack.processes import (
    Process,
    activator,
    controller,
    parse_metric,
    queue_autoscaler,
)

__all__ = [
    "Process",
    "activator",
    "controller",
    "parse_metric",
    "queue_autoscaler",
]

"""The one error tree of queue-autoscaler.

Third-party errors (aiokafka, kubernetes-asyncio, aiohttp) are translated into these once, at the adapter
boundary. ``retriable`` tells the tenacity retry policies whether trying again can help.

    AutoscalerError
    ├── PolicyError              invalid annotations; ``problems`` lists every bad key at once
    ├── SettingsError            invalid flags / QUEUE_AUTOSCALER_* environment
    ├── ListenError              a port cannot be listened on (in use, not allowed); names the flag
    ├── KafkaError
    │   ├── KafkaUnavailable     broker unreachable, timeouts, coordinator moving        (retriable)
    │   ├── GroupError           one consumer group failed (e.g. GROUP_AUTHORIZATION_FAILED)
    │   └── PartitionError       one partition's offsets failed (e.g. NOT_LEADER)        (retriable)
    ├── SourceError              a RabbitMQ / Redis / NATS read failed
    │   ├── SourceUnavailable    server unreachable, timeouts, 5xx, management plugin absent (retriable)
    │   └── BacklogError         one queue / stream group / consumer cannot be read: missing, no counts
    ├── KubeError
    │   ├── TargetGone           404: the Deployment no longer exists
    │   ├── Conflict             409: read again and retry                              (retriable)
    │   ├── KubeUnavailable      API server unreachable, 429, 5xx                        (retriable)
    │   └── Forbidden            401/403: RBAC does not allow it
    ├── ActivatorError
    │   ├── QueueFull            the target's pending queue is at max-pending
    │   ├── ActivationTimeout    no endpoint turned ready within activation-timeout
    │   └── UpstreamError        the pod did not answer
    └── TriggerError             an invalid Trigger; ``problems`` lists every bad field at once
"""

from __future__ import annotations

from dataclasses import dataclass


class AutoscalerError(Exception):
    """Base of every error queue-autoscaler raises on purpose."""

    retriable: bool = False


@dataclass(frozen=True, slots=True)
class AnnotationProblem:
    """One bad annotation: its key, the value found (None when missing), and what is allowed."""

    key: str
    value: str | None
    allowed: str

    def __str__(self) -> str:
        shown = "<missing>" if self.value is None else repr(self.value)
        return f"{self.key}={shown}: {self.allowed}"


class PolicyError(AutoscalerError):
    """The annotations of a Deployment do not form a valid policy. Lists every problem at once."""

    def __init__(self, problems: tuple[AnnotationProblem, ...]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class SettingsError(AutoscalerError):
    """A flag or QUEUE_AUTOSCALER_* environment variable has a value that is not allowed."""


class ListenError(AutoscalerError):
    """A listening port cannot be bound at start-up: already in use, not permitted, or no such address."""


class KafkaError(AutoscalerError):
    """A Kafka read failed."""


class KafkaUnavailable(KafkaError):
    retriable = True


class GroupError(KafkaError):
    """One consumer group could not be read; only targets using it are affected."""

    def __init__(self, group: str, reason: str, *, retriable: bool = False) -> None:
        self.group = group
        self.reason = reason
        self.retriable = retriable
        super().__init__(f"group {group!r}: {reason}")


class PartitionError(KafkaError):
    retriable = True


class SourceError(AutoscalerError):
    """A read of RabbitMQ, Redis Streams or NATS JetStream failed."""


class SourceUnavailable(SourceError):
    """The server (or its management / monitoring endpoint) cannot be reached or answered with an error."""

    retriable = True


class BacklogError(SourceError):
    """One target's queue, stream group or consumer cannot be read; only targets using it hold."""


class KubeError(AutoscalerError):
    """A Kubernetes API call failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class TargetGone(KubeError):
    """404: the Deployment (or its scale subresource) no longer exists."""


class Conflict(KubeError):
    retriable = True


class KubeUnavailable(KubeError):
    retriable = True


class Forbidden(KubeError):
    """401/403: the service account may not do this."""


class ActivatorError(AutoscalerError):
    """A request held by the activator could not be served."""


class QueueFull(ActivatorError):
    pass


class ActivationTimeout(ActivatorError):
    pass


class UpstreamError(ActivatorError):
    pass


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One bad field of a resource: its path (``spec.filters[0]``), and what is wrong and what is allowed."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class TriggerError(AutoscalerError):
    """A Trigger that cannot be used. Lists every problem at once."""

    def __init__(self, problems: tuple[FieldProblem, ...]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))

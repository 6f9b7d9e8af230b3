"""What the control loop reads from and writes to, as one- or two-method Protocols."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from autoscaler import errors
from autoscaler.model import PartitionOffsets, TargetKey


class TargetInfo(Protocol):
    """What the loop needs to know of an annotated Deployment (kube.targets provides it)."""

    @property
    def key(self) -> TargetKey: ...
    @property
    def uid(self) -> str: ...
    @property
    def annotations(self) -> Mapping[str, str]: ...
    @property
    def replicas(self) -> int: ...
    @property
    def ready_replicas(self) -> int: ...
    @property
    def created(self) -> datetime | None: ...


class TargetSource(Protocol):
    def snapshot(self) -> Mapping[TargetKey, TargetInfo]: ...


@dataclass(frozen=True, slots=True)
class GroupRead:
    """One consumer group to read: its topics (empty = every topic it has offsets for)."""

    group: str
    topics: tuple[str, ...]


GroupResult = tuple[PartitionOffsets, ...] | errors.KafkaError


class LagSource(Protocol):
    """Reads the offsets of many groups of one Kafka cluster in one batch."""

    async def read(
        self, *, bootstrap: str, groups: Sequence[GroupRead]
    ) -> Mapping[GroupRead, GroupResult]: ...


class TriggerDirectory(Protocol):
    """The Broker each Trigger belongs to (kube.eventing's Trigger cache provides it)."""

    def broker_of(self, namespace: str, trigger: str) -> str | None:
        """The Trigger's ``spec.broker``; None when the Trigger is not known or names no broker."""
        ...


class Scaler(Protocol):
    """Writes to the Deployments (kube.scaling behind it)."""

    async def scale(self, *, target: TargetKey, replicas: int) -> int: ...
    async def set_last_active(self, *, target: TargetKey, when: datetime | None) -> None: ...
    async def event(
        self, *, target: TargetKey, uid: str, type: str, reason: str, message: str, action: str
    ) -> None: ...


class EventSender(Protocol):
    """Sends a Warning or Normal Event about a target without waiting for it (the loop owns the task)."""

    def __call__(self, info: TargetInfo, *, type: str, reason: str, message: str) -> None: ...

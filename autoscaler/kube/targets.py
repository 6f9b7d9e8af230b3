"""The Deployments to scale: a watched, in-memory cache of those with a ``queue-autoscaler.dev/`` annotation.

The annotations are handed over as they are (only the prefixed keys); parsing them is the caller's job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

import structlog
from kubernetes_asyncio import client

from autoscaler.kube import calls, watch
from autoscaler.model import PREFIX as PREFIX
from autoscaler.model import TargetKey

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DeploymentInfo:
    """What the controller needs of one Deployment. ``annotations`` holds only the prefixed keys (in full)."""

    key: TargetKey
    uid: str
    annotations: Mapping[str, str] = field(hash=False)
    replicas: int
    ready_replicas: int
    generation: int
    resource_version: str
    # metadata.creationTimestamp: which of two Deployments claiming one host is the older.
    created: datetime | None = None
    # The readinessProbe of the pod template's first container that has one (raw), and the template's named
    # container ports: the activator probes starting pods with it.
    readiness_probe: Mapping[str, object] | None = field(default=None, hash=False)
    container_ports: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    @property
    def is_target(self) -> bool:
        return bool(self.annotations)


def parse_deployment(obj: calls.JSON) -> DeploymentInfo:
    """A Deployment's raw JSON -> DeploymentInfo; ValueError when it has no namespace or name."""
    metadata = obj.get("metadata")
    namespace, name = calls.dig(metadata, "namespace"), calls.dig(metadata, "name")
    if not isinstance(namespace, str) or not isinstance(name, str) or not namespace or not name:
        raise ValueError("Deployment without metadata.namespace and metadata.name")
    annotations = {
        key: value
        for key, value in calls.string_map(calls.dig(metadata, "annotations")).items()
        if key.startswith(PREFIX)
    }
    return DeploymentInfo(
        key=TargetKey(namespace, name),
        uid=str(calls.dig(metadata, "uid") or ""),
        annotations=MappingProxyType(annotations),
        replicas=calls.integer(calls.dig(obj, "spec", "replicas"), default=1),
        ready_replicas=calls.integer(calls.dig(obj, "status", "readyReplicas")),
        generation=calls.integer(calls.dig(metadata, "generation")),
        resource_version=str(calls.dig(metadata, "resourceVersion") or ""),
        created=_timestamp(calls.dig(metadata, "creationTimestamp")),
        **_readiness(calls.dig(obj, "spec", "template", "spec", "containers")),
    )


def _readiness(containers: object) -> dict[str, Any]:
    probe: Mapping[str, object] | None = None
    ports: dict[str, int] = {}
    for container in containers if isinstance(containers, list) else []:
        listed = calls.dig(container, "ports")
        for port in listed if isinstance(listed, list) else []:
            name, number = calls.dig(port, "name"), calls.dig(port, "containerPort")
            if isinstance(name, str) and isinstance(number, int):
                ports.setdefault(name, number)
        found = calls.dig(container, "readinessProbe")
        if probe is None and isinstance(found, dict):
            probe = MappingProxyType(found)
    return {"readiness_probe": probe, "container_ports": MappingProxyType(ports)}


def _timestamp(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


OnChange = Callable[[TargetKey, DeploymentInfo | None], None]
Change = tuple[TargetKey, DeploymentInfo | None, DeploymentInfo | None]


class TargetCache:
    """Annotated Deployments of one watch scope (all namespaces or one), kept from its events.

    ``apply`` returns the changes it made as (key, info before or None, info after or None).
    """

    def __init__(self) -> None:
        self.items: dict[TargetKey, DeploymentInfo] = {}

    def apply(self, event: watch.WatchEvent[DeploymentInfo]) -> list[Change]:
        match event:
            case watch.Listed(objects=objects):
                fresh = {info.key: info for info in objects if info.is_target}
                changes: list[Change] = [
                    (key, old, None) for key, old in self.items.items() if key not in fresh
                ]
                changes.extend(
                    (key, self.items.get(key), info)
                    for key, info in fresh.items()
                    if self.items.get(key) != info
                )
                self.items = fresh
                return changes
            case watch.Added(object=info) | watch.Modified(object=info):
                old = self.items.get(info.key)
                if not info.is_target:
                    return [(info.key, self.items.pop(info.key), None)] if old is not None else []
                if old == info:
                    return []
                self.items[info.key] = info
                return [(info.key, old, info)]
            case watch.Deleted(object=info):
                old = self.items.pop(info.key, None)
                return [(info.key, old, None)] if old is not None else []
        raise AssertionError(f"unknown watch event {event!r}")


class TargetWatch(watch.ScopedWatches[DeploymentInfo]):
    """Watches Deployments in all namespaces (``namespaces=None``) or in each given namespace.

    ``synced`` is set once every namespace was listed; ``snapshot()`` is a copy of the annotated Deployments;
    after every change ``on_change(key, info or None)`` is called (None: deleted or no longer annotated) and
    ``changed`` is set (the consumer clears it).
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespaces: Sequence[str] | None = None,
        on_change: OnChange | None = None,
        timeout_seconds: int | None = None,
    ) -> None:
        apps = client.AppsV1Api(api)
        scopes = watch.namespace_scopes(
            all_namespaces=apps.list_deployment_for_all_namespaces,
            namespaced=apps.list_namespaced_deployment,
            namespaces=namespaces,
            kind="deployments",
        )
        super().__init__(scopes, parse=parse_deployment, timeout_seconds=timeout_seconds)
        self._caches = [TargetCache() for _ in self.watches]
        self._on_change = on_change

    def snapshot(self) -> Mapping[TargetKey, DeploymentInfo]:
        merged: dict[TargetKey, DeploymentInfo] = {}
        for cache in self._caches:
            merged.update(cache.items)
        return MappingProxyType(merged)

    def handle(self, index: int, event: watch.WatchEvent[DeploymentInfo]) -> bool:
        changes = self._caches[index].apply(event)
        for key, old, new in changes:
            bound = log.bind(namespace=key.namespace, deployment=key.name)
            if new is None:
                bound.info("kube.target.removed")
            elif old is None:
                bound.info("kube.target.added", replicas=new.replicas, annotations=len(new.annotations))
            else:
                bound.debug("kube.target.updated", replicas=new.replicas, ready_replicas=new.ready_replicas)
            if self._on_change is not None:
                self._on_change(key, new)
        return bool(changes)

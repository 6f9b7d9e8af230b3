"""Knative Eventing resources on the API server: watched caches of Brokers and Triggers, status writes, and
the reads that resolve a destination (a Trigger's subscriber or dead-letter sink) to a URL.

Only Brokers whose ``eventing.knative.dev/broker.class`` annotation is ``queue-autoscaler`` are ours; the
annotation is required and immutable in Knative, and each broker controller serves its own class only.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from kubernetes_asyncio import client

from autoscaler.errors import KubeError, TargetGone
from autoscaler.kube import calls, watch

GROUP = "eventing.knative.dev"
VERSION = "v1"
BROKER_CLASS_ANNOTATION = "eventing.knative.dev/broker.class"
BROKER_CLASS = "queue-autoscaler"


@dataclass(frozen=True, slots=True)
class Resource:
    """A Broker or Trigger as stored: its identity and the raw manifest (spec and status are parsed by
    the eventing package, not here)."""

    namespace: str
    name: str
    uid: str
    generation: int
    annotations: Mapping[str, str] = field(hash=False)
    manifest: Mapping[str, Any] = field(hash=False, compare=False)

    @property
    def ours(self) -> bool:
        return self.annotations.get(BROKER_CLASS_ANNOTATION) == BROKER_CLASS


def parse_resource(obj: calls.JSON) -> Resource:
    metadata = obj.get("metadata")
    namespace, name = calls.dig(metadata, "namespace"), calls.dig(metadata, "name")
    if not isinstance(namespace, str) or not isinstance(name, str) or not namespace or not name:
        raise ValueError("object without metadata.namespace and metadata.name")
    return Resource(
        namespace=namespace,
        name=name,
        uid=str(calls.dig(metadata, "uid") or ""),
        generation=calls.integer(calls.dig(metadata, "generation")),
        annotations=MappingProxyType(calls.string_map(calls.dig(metadata, "annotations"))),
        manifest=MappingProxyType(obj),
    )


class Cache(watch.ScopedWatches[Resource]):
    """Every object of one kind in the watched namespaces, by (namespace, name)."""

    def __init__(self, scopes: Sequence[tuple[calls.ApiMethod, str]]) -> None:
        super().__init__(scopes, parse=parse_resource)
        self._scoped: list[dict[tuple[str, str], Resource]] = [{} for _ in scopes]

    def handle(self, index: int, event: watch.WatchEvent[Resource]) -> bool:
        held = self._scoped[index]
        if isinstance(event, watch.Listed):
            fresh = {(o.namespace, o.name): o for o in event.objects}
            changed = fresh != held
            self._scoped[index] = fresh
            return changed
        key = (event.object.namespace, event.object.name)
        if isinstance(event, watch.Deleted):
            return held.pop(key, None) is not None
        before = held.get(key)
        held[key] = event.object
        return before != event.object or before.manifest != event.object.manifest

    def get(self, namespace: str, name: str) -> Resource | None:
        for held in self._scoped:
            if (found := held.get((namespace, name))) is not None:
                return found
        return None

    def all(self) -> list[Resource]:
        return [o for held in self._scoped for o in held.values()]


class TriggerCache(Cache):
    """The Triggers of the watched namespaces, asked for their Broker (control.ports.TriggerDirectory).

    While the Trigger resource is not served (no CRD), the watch retries with backoff and knows none."""

    def broker_of(self, namespace: str, trigger: str) -> str | None:
        found = self.get(namespace, trigger)
        broker = None if found is None else calls.dig(found.manifest.get("spec"), "broker")
        return broker if isinstance(broker, str) and broker else None


def cache(api: client.ApiClient, *, plural: str, namespaces: Sequence[str] | None) -> Cache:
    return Cache(_scopes(api, plural=plural, namespaces=namespaces))


def trigger_cache(api: client.ApiClient, *, namespaces: Sequence[str] | None) -> TriggerCache:
    return TriggerCache(_scopes(api, plural="triggers", namespaces=namespaces))


def _scopes(
    api: client.ApiClient, *, plural: str, namespaces: Sequence[str] | None
) -> list[tuple[calls.ApiMethod, str]]:
    custom = client.CustomObjectsApi(api)
    return watch.namespace_scopes(
        all_namespaces=functools.partial(custom.list_cluster_custom_object, GROUP, VERSION, plural),
        namespaced=lambda namespace, **kw: custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, **kw
        ),
        namespaces=namespaces,
        kind=plural,
    )


async def patch_status(
    api: client.ApiClient, *, plural: str, namespace: str, name: str, status: Mapping[str, Any]
) -> None:
    """Replaces the status fields given (a JSON merge patch of the status subresource)."""
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}/status"
    await _request(
        api, "PATCH", path, body={"status": dict(status)}, content_type="application/merge-patch+json"
    )


async def get_object(
    api: client.ApiClient, *, api_version: str, kind: str, namespace: str, name: str
) -> calls.JSON | None:
    """One object by apiVersion and kind (plural: the lowercase kind + s, as Knative's kinds are); None
    when it does not exist. Raises TargetGone when the API server does not serve that kind at all."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    plural = kind.lower() + ("es" if kind.lower().endswith("s") else "s")
    if not await served(api, api_version=api_version, plural=plural):
        raise TargetGone(f"the API server does not serve {kind} in {api_version}", status=404)
    try:
        return await _request(api, "GET", f"{base}/namespaces/{namespace}/{plural}/{name}")
    except TargetGone:
        return None


async def served(api: client.ApiClient, *, api_version: str, plural: str) -> bool:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    try:
        doc = await _request(api, "GET", base)
    except TargetGone:
        return False
    resources = doc.get("resources")
    return isinstance(resources, list) and any(
        isinstance(r, dict) and r.get("name") == plural for r in resources
    )


async def _request(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    body: Mapping[str, Any] | None = None,
    content_type: str = "application/json",
) -> calls.JSON:
    what = f"{method} {path}"
    try:
        response = await api.call_api(
            path,
            method,
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=calls.REQUEST_TIMEOUT,
        )
        try:
            status = int(response.status)
            raw: bytes = await response.read()
        finally:
            response.release()
    except Exception as exc:
        raise calls.translate(exc, what=what) from exc
    if not 200 <= status < 300:
        raise calls.error_for_status(status, calls.status_message(raw), what=what)
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise KubeError(f"{what}: response is not JSON", status=status) from exc
    if not isinstance(doc, dict):
        raise KubeError(f"{what}: response is not a JSON object", status=status)
    return doc

"""Writes to a scaled Deployment: its replica count (scale subresource), ``last-active``, and Events."""

from __future__ import annotations

import asyncio
import random
import secrets
from datetime import UTC, datetime
from typing import Literal

import structlog
from kubernetes_asyncio import client

from autoscaler.errors import Conflict
from autoscaler.kube import calls
from autoscaler.model import LAST_ACTIVE_ANNOTATION, PREFIX, EventReason, TargetKey

LAST_ACTIVE = LAST_ACTIVE_ANNOTATION
REPORTING_CONTROLLER = PREFIX + "controller"
PATCH_ATTEMPTS = 8

# Event reasons the controller uses (model.EventReason is their one definition).
SCALED_UP = EventReason.SCALED_UP
SCALED_DOWN = EventReason.SCALED_DOWN
SCALED_TO_ZERO = EventReason.SCALED_TO_ZERO
ACTIVATED_FROM_ZERO = EventReason.ACTIVATED_FROM_ZERO
INVALID_ANNOTATIONS = EventReason.INVALID_ANNOTATIONS
LAG_UNAVAILABLE = EventReason.LAG_UNAVAILABLE

EventType = Literal["Normal", "Warning"]

_NOTE_LIMIT = 1024  # events.k8s.io/v1 rejects a longer note
_FIELD_LIMIT = 128  # ... and longer action, reason or reportingInstance

log = structlog.get_logger(__name__)


async def read_replicas(*, api: client.ApiClient, target: TargetKey) -> int:
    """``spec.replicas`` of the Deployment's scale subresource. TargetGone when it does not exist."""
    scale = await _read_scale(api, target)
    return calls.integer(calls.dig(scale, "spec", "replicas"))


async def patch_replicas(*, api: client.ApiClient, target: TargetKey, replicas: int) -> int:
    """Sets the Deployment's replica count through its scale subresource; returns the count it had before.

    The write carries the resourceVersion just read, so it never overwrites a change it did not see; on 409
    Conflict it reads and writes again after a short random pause, up to PATCH_ATTEMPTS times, then raises
    Conflict. TargetGone when the
    Deployment does not exist. Nothing is written when the count is already ``replicas``.
    """
    if replicas < 0:
        raise ValueError(f"replicas must be >= 0, not {replicas}")
    apps = client.AppsV1Api(api)
    bound = log.bind(namespace=target.namespace, deployment=target.name)
    for attempt in range(1, PATCH_ATTEMPTS + 1):
        scale = await _read_scale(api, target)
        before = calls.integer(calls.dig(scale, "spec", "replicas"))
        if before == replicas:
            return before
        patch = {
            "metadata": {"resourceVersion": calls.dig(scale, "metadata", "resourceVersion")},
            "spec": {"replicas": replicas},
        }
        try:
            await calls.call_json(
                apps.patch_namespaced_deployment_scale,
                target.name,
                target.namespace,
                patch,
                what=f"patch deployments/scale {target}",
                _content_type=calls.MERGE_PATCH,
            )
        except Conflict:
            # Someone wrote the Deployment since the read; often the deployment controller's status update.
            bound.info("kube.scale.conflict", attempt=attempt)
            await asyncio.sleep(random.uniform(0, 0.02 * attempt))
            continue
        bound.info("kube.scale.patched", replicas=replicas, before=before)
        return before
    raise Conflict(
        f"patch deployments/scale {target}: still conflicting after {PATCH_ATTEMPTS} attempts", status=409
    )


async def write_last_active(*, api: client.ApiClient, target: TargetKey, when: datetime | None) -> None:
    """Sets the ``last-active`` annotation to ``when`` as RFC 3339 UTC, or removes it when None.

    ``when`` must be timezone-aware. TargetGone when the Deployment does not exist.
    """
    value = None if when is None else format_time(when)
    await calls.call_json(
        client.AppsV1Api(api).patch_namespaced_deployment,
        target.name,
        target.namespace,
        {"metadata": {"annotations": {LAST_ACTIVE: value}}},
        what=f"patch {LAST_ACTIVE} of deployment {target}",
        _content_type=calls.MERGE_PATCH,
    )
    log.debug("kube.last-active.written", namespace=target.namespace, deployment=target.name, value=value)


async def record_event(
    *,
    api: client.ApiClient,
    target: TargetKey,
    uid: str,
    type: EventType,
    reason: str,
    message: str,
    action: str,
    reporting_controller: str = REPORTING_CONTROLLER,
    reporting_instance: str,
    now: datetime | None = None,
) -> str:
    """Creates an events.k8s.io/v1 Event regarding the Deployment (``uid`` as seen by the caller) and returns
    its name, ``<deployment>.<time><random>``, unique across controller instances. ``message`` is cut to the
    1 KiB the API allows; ``now`` defaults to the current time.
    """
    when = now or datetime.now(UTC)
    event = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": _event_name(target.name, when), "namespace": target.namespace},
        "eventTime": format_time(when, micro=True),
        "type": type,
        "reason": reason[:_FIELD_LIMIT],
        "action": action[:_FIELD_LIMIT],
        "note": _truncate(message, _NOTE_LIMIT),
        "reportingController": reporting_controller,
        "reportingInstance": reporting_instance[:_FIELD_LIMIT],
        "regarding": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "namespace": target.namespace,
            "name": target.name,
            "uid": uid,
        },
    }
    created = await calls.call_json(
        client.EventsV1Api(api).create_namespaced_event,
        target.namespace,
        event,
        what=f"create {reason} event for deployment {target}",
    )
    name = str(calls.dig(created, "metadata", "name") or "")
    log.debug(
        "kube.event.recorded", namespace=target.namespace, deployment=target.name, reason=reason, name=name
    )
    return name


def format_time(when: datetime, *, micro: bool = False) -> str:
    """RFC 3339 in UTC with a ``Z``: whole seconds unless there are microseconds (or ``micro``, always)."""
    if when.tzinfo is None:
        raise ValueError(f"{when!r} has no time zone")
    utc = when.astimezone(UTC)
    if micro or utc.microsecond:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _read_scale(api: client.ApiClient, target: TargetKey) -> calls.JSON:
    return await calls.call_json(
        client.AppsV1Api(api).read_namespaced_deployment_scale,
        target.name,
        target.namespace,
        what=f"read deployments/scale {target}",
    )


def _event_name(deployment: str, when: datetime) -> str:
    suffix = f"{int(when.timestamp() * 1_000_000):x}{secrets.token_hex(4)}"
    base = deployment[: 253 - len(suffix) - 1].rstrip(".-")
    return f"{base}.{suffix}"


def _truncate(text: str, limit: int) -> str:
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode(errors="ignore") + "..."

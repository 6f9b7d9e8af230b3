"""Reconciling Brokers and Triggers of class queue-autoscaler: their status, and which Triggers deliver.

Broker status (Knative's Kafka broker writes these types): ``TopicReady`` (the topic
``knative-broker-<namespace>-<name>`` exists), ``Addressable`` (``status.address.url`` is
``<ingress>/<namespace>/<name>``), ``Ready`` (both). Trigger status (Knative's types): ``BrokerReady``,
``SubscriberResolved``, ``DeadLetterSinkResolved``, ``SubscriptionReady`` (its consumer group delivers),
``Ready`` (all of them), each False with a reason and a message a user can act on.

Destinations resolve as Knative's resolver does: a core ``v1 Service`` to
``http://<name>.<namespace>.svc.<domain>``, any other object to its ``status.address.url`` (an
Addressable), a ``uri`` alone as it is, a ``uri`` with a ``ref`` relative to the ref's URL.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from autoscaler.eventing import delivery

Condition = dict[str, str]


class NotServed(Exception):
    """The API server does not serve the kind at all (its API group is not installed)."""


class Objects(Protocol):
    """Reads one object by apiVersion/kind; None when absent; raises NotServed for an unknown kind."""

    async def get(
        self, *, api_version: str, kind: str, namespace: str, name: str
    ) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True, slots=True)
class Resolved:
    url: str


@dataclass(frozen=True, slots=True)
class Unresolved:
    reason: str
    message: str


async def resolve(
    destination: delivery.Destination, *, objects: Objects, domain: str
) -> Resolved | Unresolved:
    if destination.ref is None:
        assert destination.uri is not None
        return Resolved(destination.uri)
    ref = destination.ref
    shown = f"{ref.kind} {ref.namespace}/{ref.name} ({ref.api_version})"
    try:
        found = await objects.get(
            api_version=ref.api_version, kind=ref.kind, namespace=ref.namespace, name=ref.name
        )
    except NotServed:
        if ref.api_version.startswith("serving.knative.dev/"):
            return Unresolved(
                "KnativeServingNotInstalled",
                f"the subscriber {shown} cannot be resolved: Knative Serving is not installed in this "
                "cluster, so there are no serving.knative.dev Services. Point the subscriber at the core "
                "Service of your workload instead "
                f"(ref: {{apiVersion: v1, kind: Service, name: {ref.name}}}), and annotate its Deployment "
                "with queue-autoscaler.dev/trigger to scale it on this Trigger's backlog",
            )
        return Unresolved("KindNotServed", f"the API server does not serve {ref.kind} in {ref.api_version}")
    if found is None:
        return Unresolved("NotFound", f"{shown} does not exist")
    if ref.api_version == "v1" and ref.kind == "Service":
        base = f"http://{ref.name}.{ref.namespace}.svc.{domain}"
    else:
        address = (found.get("status") or {}).get("address") or {}
        url = address.get("url") if isinstance(address, Mapping) else None
        if not isinstance(url, str) or not url:
            return Unresolved("NotAddressable", f"{shown} has no status.address.url (it is not Addressable)")
        base = url
    if destination.uri is None:
        return Resolved(base)
    return Resolved(
        urllib.parse.urljoin(base if base.endswith("/") else base + "/", destination.uri.lstrip("/"))
    )


def condition(kind: str, ok: bool | None, reason: str = "", message: str = "") -> Condition:
    found: Condition = {"type": kind, "status": "Unknown" if ok is None else ("True" if ok else "False")}
    if reason:
        found["reason"] = reason
    if message:
        found["message"] = message
    return found


def with_ready(conditions: list[Condition]) -> list[Condition]:
    """Adds ``Ready``: True when every other condition is, else the first that is not, with its reason."""
    blocking = next((c for c in conditions if c["status"] != "True"), None)
    ready = (
        condition("Ready", True)
        if blocking is None
        else condition(
            "Ready",
            None if blocking["status"] == "Unknown" else False,
            blocking.get("reason", ""),
            blocking.get("message", ""),
        )
    )
    return [*conditions, ready]


def status(
    conditions: list[Condition],
    *,
    previous: Mapping[str, Any] | None,
    generation: int,
    now: datetime | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A status document: ``lastTransitionTime`` kept from ``previous`` for conditions whose status did not
    change (as Knative's condition manager does), set to ``now`` for the others."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    before = {c.get("type"): c for c in ((previous or {}).get("conditions") or []) if isinstance(c, Mapping)}
    written = []
    for c in conditions:
        old = before.get(c["type"])
        same = old is not None and old.get("status") == c["status"] and old.get("lastTransitionTime")
        written.append({**c, "lastTransitionTime": str(old["lastTransitionTime"]) if same and old else stamp})
    return {"observedGeneration": generation, "conditions": written, **fields}


def same_status(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> bool:
    """Whether writing ``b`` over ``a`` would change anything but the transition times."""
    if a is None:
        return False

    def strip(doc: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(doc)
        out["conditions"] = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in doc.get("conditions") or []
        ]
        return out

    return strip(a) == strip(b)

"""The event broker's kustomize component against the devstack's real API server.

Every rendered object of the base with the ``manifests/eventing`` component (CRDs, RBAC, ingress, dispatcher)
passes a server-side dry-run with strict field validation; SubjectAccessReviews ask the real authorizer what
the ingress and the dispatcher may do; and the CRDs, applied for real (they stay installed: they are the
cluster's API, like Knative's), accept the canonical Trigger verbatim and refuse what Knative refuses.
"""

from __future__ import annotations

import asyncio
import copy
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from devstack.eventing_harness import GROUP, ISSUE_TRIGGER, install_crds, render_install
from devstack.kube_rest import Rest, ident
from tests.integration.test_manifests import (
    NAMESPACE,
    RBAC_KINDS,
    Access,
    allowed,
    kustomize,
    real_objects,
    rest,
)
from tests.stack import eventually, unique

__all__ = ["kustomize", "rest"]  # fixtures

pytestmark = pytest.mark.devstack

INGRESS_SA = f"system:serviceaccount:{NAMESPACE}:queue-autoscaler-broker-ingress"
DISPATCHER_SA = f"system:serviceaccount:{NAMESPACE}:queue-autoscaler-dispatcher"


async def test_the_component_renders_crds_rbac_and_the_ingress_and_dispatcher_next_to_the_base(
    kustomize: Path,
) -> None:
    objects = await render_install(kustomize)
    names = {ident(o) for o in objects}
    assert {
        ("CustomResourceDefinition", "", "brokers.eventing.knative.dev"),
        ("CustomResourceDefinition", "", "triggers.eventing.knative.dev"),
        ("Deployment", NAMESPACE, "queue-autoscaler-broker-ingress"),
        ("Deployment", NAMESPACE, "queue-autoscaler-dispatcher"),
        ("Service", NAMESPACE, "queue-autoscaler-broker-ingress"),
        ("ServiceAccount", NAMESPACE, "queue-autoscaler-broker-ingress"),
        ("ServiceAccount", NAMESPACE, "queue-autoscaler-dispatcher"),
        ("Deployment", NAMESPACE, "queue-autoscaler-controller"),
    } <= names
    for obj in objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "queue-autoscaler", ident(obj)
    for crd in (o for o in objects if o["kind"] == "CustomResourceDefinition"):
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1"
        assert version["subresources"] == {"status": {}}


async def test_every_object_of_the_eventing_install_passes_a_strict_server_side_dry_run(
    kustomize: Path, rest: Rest
) -> None:
    objects = await render_install(kustomize)
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    others = [o for o in objects if o["kind"] != "Namespace"]
    rejected: list[str] = []
    async with real_objects(rest, namespaces):
        for obj in others:
            status, doc = await rest.apply(obj, dry_run=True)
            if status not in (200, 201):
                rejected.append(f"{ident(obj)}: HTTP {status}: {doc.get('message', doc)}")
    assert not rejected, "\n".join(rejected)


INGRESS_CAN = [
    *(Access(verb, "brokers", "", group=GROUP) for verb in ("get", "list", "watch")),
    Access("get", "brokers", "serverless-apps", group=GROUP),
]
INGRESS_CANNOT = [
    Access("list", "triggers", "", group=GROUP),
    Access("patch", "brokers", "serverless-apps", group=GROUP),
    Access("update", "brokers", "", group=GROUP, subresource="status"),
    Access("get", "secrets", NAMESPACE),
    Access("get", "services", "serverless-apps"),
]
DISPATCHER_CAN = [
    *(
        Access(verb, kind, "", group=GROUP)
        for verb in ("get", "list", "watch")
        for kind in ("brokers", "triggers")
    ),
    *(
        Access(verb, kind, "", group=GROUP, subresource="status")
        for verb in ("patch", "update")
        for kind in ("brokers", "triggers")
    ),
    Access("get", "services", "serverless-apps"),
    Access("get", "services", "serverless-apps", group="serving.knative.dev"),
    Access("create", "events", "serverless-apps", group="events.k8s.io"),
]
DISPATCHER_CANNOT = [
    Access("update", "triggers", "serverless-apps", group=GROUP),
    Access("patch", "brokers", "serverless-apps", group=GROUP),
    Access("delete", "triggers", "serverless-apps", group=GROUP),
    Access("create", "triggers", "serverless-apps", group=GROUP),
    Access("list", "services", "serverless-apps"),
    Access("get", "secrets", "serverless-apps"),
    Access("list", "secrets", ""),
    Access("patch", "deployments", "serverless-apps", group="apps", subresource="scale"),
    Access("get", "pods", "serverless-apps"),
]


async def test_the_rbac_grants_the_ingress_and_the_dispatcher_exactly_what_they_need(
    kustomize: Path, rest: Rest
) -> None:
    objects = await render_install(kustomize)
    namespace = [o for o in objects if o["kind"] == "Namespace"]
    rbac = [
        o
        for o in objects
        if o["kind"] in RBAC_KINDS
        and ("ingress" in o["metadata"]["name"] or "dispatcher" in o["metadata"]["name"])
    ]
    assert len(rbac) == 6

    async with real_objects(rest, [*namespace, *rbac]) as created:

        async def verdicts(user: str, accesses: Sequence[Access]) -> dict[str, bool]:
            answers = await asyncio.gather(*(allowed(rest, user, a) for a in accesses))
            return {str(a): answer for a, answer in zip(accesses, answers, strict=True)}

        for user, can in ((INGRESS_SA, INGRESS_CAN), (DISPATCHER_SA, DISPATCHER_CAN)):
            await eventually(
                functools.partial(verdicts, user, can),
                lambda found: all(found.values()),
                timeout=10,
                interval=0.25,
                what=f"every grant of {user}",
            )
        wrongly_allowed = {
            "ingress": [k for k, v in (await verdicts(INGRESS_SA, INGRESS_CANNOT)).items() if v],
            "dispatcher": [k for k, v in (await verdicts(DISPATCHER_SA, DISPATCHER_CANNOT)).items() if v],
        }
        assert wrongly_allowed == {"ingress": [], "dispatcher": []}
    left = [ident(o) for o in created if await rest.get(o) is not None]
    assert not left, f"left behind: {left}"


async def test_the_installed_crds_accept_the_canonical_trigger_verbatim_and_refuse_what_knative_refuses(
    kustomize: Path, rest: Rest
) -> None:
    await install_crds(kustomize, rest)
    namespace: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": unique("eventing-crd")},
    }
    verbatim = copy.deepcopy(ISSUE_TRIGGER)
    verbatim["metadata"]["namespace"] = "serverless-apps"
    home = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "serverless-apps"}}
    async with real_objects(rest, [home]), real_objects(rest, [namespace]):
        status, doc = await rest.apply(verbatim, dry_run=False)
        assert status in (200, 201), doc.get("message", doc)
        try:
            stored = await rest.get(verbatim)
            assert stored is not None
            assert stored["spec"] == ISSUE_TRIGGER["spec"]

            moved = copy.deepcopy(verbatim)
            moved["spec"]["broker"] = "another-broker"
            status, doc = await rest.apply(moved, dry_run=True)
            assert status == 422, doc
            assert "spec.broker is immutable" in doc["message"]
        finally:
            await rest.delete(verbatim)

        name = namespace["metadata"]["name"]
        broken = {
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Trigger",
            "metadata": {"name": "broken", "namespace": name},
            "spec": {
                "filters": [{"exact": {"type": "a"}, "prefix": {"type": "b"}}],
                "subscriber": {},
                "delivery": {"backoffPolicy": "fibonacci"},
            },
        }
        status, doc = await rest.apply(broken, dry_run=True)
        assert status == 422, doc
        message = doc["message"]
        for expected in ("spec.broker: Required value", "fibonacci", "spec.filters[0]: Too many"):
            assert expected in message, message
        nowhere = copy.deepcopy(broken)
        nowhere["spec"] = {"broker": "b", "subscriber": {}}
        status, doc = await rest.apply(nowhere, dry_run=True)
        assert status == 422, doc
        assert "spec.subscriber: Invalid value" in doc["message"]
        assert "needs a ref or a uri" in doc["message"]

        broker = {
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Broker",
            "metadata": {
                "name": "default-event-broker",
                "namespace": name,
                "annotations": {"eventing.knative.dev/broker.class": "queue-autoscaler"},
            },
            "spec": {"delivery": {"retry": 3, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"}},
        }
        status, doc = await rest.apply(broker, dry_run=True)
        assert status in (200, 201), doc.get("message", doc)

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
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_manifests import (
    MANIFESTS,
    NAMESPACE,
    RBAC_KINDS,
    Access,
    Rest,
    allowed,
    ident,
    kustomize,
    kustomize_build,
    real_objects,
    rest,
)
from tests.stack import eventually, unique

__all__ = ["kustomize", "rest"]  # fixtures

pytestmark = pytest.mark.devstack

COMPONENT = MANIFESTS / "eventing"
INGRESS_SA = f"system:serviceaccount:{NAMESPACE}:queue-autoscaler-broker-ingress"
DISPATCHER_SA = f"system:serviceaccount:{NAMESPACE}:queue-autoscaler-dispatcher"
GROUP = "eventing.knative.dev"

ISSUE_TRIGGER: dict[str, Any] = {
    "apiVersion": "eventing.knative.dev/v1",
    "kind": "Trigger",
    "metadata": {"name": "billing-process-trigger", "namespace": "serverless-apps"},
    "spec": {
        "broker": "default-event-broker",
        "filter": {"attributes": {"type": "com.shivamitcs.billing.started"}},
        "subscriber": {
            "ref": {
                "apiVersion": "serving.knative.dev/v1",
                "kind": "Service",
                "name": "billing-worker-service",
            }
        },
    },
}


def write_install(scratch: Path) -> Path:
    """A user's kustomization beside copies of the base (with its install-generated token) and the
    eventing component; returns its directory."""
    shutil.copytree(MANIFESTS / "base", scratch / "base")
    (scratch / "base" / "report-token").write_text("test-token\n")
    shutil.copytree(COMPONENT, scratch / "eventing")
    (scratch / "install").mkdir()
    (scratch / "install" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [../base]\ncomponents: [../eventing]\n"
    )
    return scratch / "install"


async def render_install(kustomize: Path) -> list[dict[str, Any]]:
    """The base with the eventing component, as a user's kustomization would include them."""
    with tempfile.TemporaryDirectory() as scratch:
        done = await kustomize_build(kustomize, write_install(Path(scratch)))
    assert done.returncode == 0, (
        f"kustomize build of the base with the eventing component failed:\n{done.stderr}"
    )
    objects = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    assert all(isinstance(o, dict) for o in objects)
    return objects


async def install_crds(kustomize: Path, rest: Rest) -> None:
    """Applies the CRDs for real (idempotent) and waits until both are Established."""
    crds = await render_install(kustomize)
    for crd in (o for o in crds if o["kind"] == "CustomResourceDefinition"):
        status, doc = await rest.apply(crd, dry_run=False)
        assert status in (200, 201), f"apply {ident(crd)}: HTTP {status}: {doc.get('message', doc)}"

        def established(found: dict[str, Any] | None) -> bool:
            conditions = ((found or {}).get("status") or {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

        await eventually(
            functools.partial(rest.get, crd), established, timeout=30, interval=0.2, what=f"{ident(crd)}"
        )
    rest._discovered.pop(f"/apis/{GROUP}/v1", None)

    async def served() -> bool:
        status, _doc = await rest.request("GET", f"/apis/{GROUP}/v1")
        return status == 200

    await eventually(served, bool, timeout=30, interval=0.2, what=f"{GROUP}/v1 to be served")


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

"""The kustomize manifests against the devstack's real API server (RBAC authorizer on).

Every rendered object goes through a server-side dry-run apply (``dryRun=All``, ``fieldValidation=Strict``):
the API server runs defaulting, validation and admission on it and stores nothing. Namespaced dry-runs need
their namespace to exist (NamespaceLifecycle admission rejects them otherwise), so each Namespace of the
manifests is first dry-run itself and then created for real when absent, and deleted again afterwards. A
Namespace that already existed (someone deployed the manifests) is left alone.

Then the RBAC objects are applied for real and SubjectAccessReviews ask the real authorizer what the two
service accounts may do. Objects created here are deleted afterwards, cluster-scoped ones included.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client

from devstack.eventing_harness import install_crds
from devstack.kube_rest import MANIFESTS, Obj, Rest, ident, kustomize_build
from tests.stack import Devstack, eventually

pytestmark = pytest.mark.devstack

NAMESPACE = "queue-autoscaler"
CONTROLLER_SA = f"system:serviceaccount:{NAMESPACE}:queue-autoscaler-controller"
ACTIVATOR_SA = f"system:serviceaccount:{NAMESPACE}:queue-autoscaler-activator"
TOKEN_SECRET = "queue-autoscaler-report-token"
CONNECTIONS_SECRET = "queue-autoscaler-connections"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


# --- kustomize ------------------------------------------------------------------------------------------


@pytest.fixture
def kustomize(devstack: Devstack) -> Path:
    """The kustomize binary devstack/build-tools installs; fails (never skips) without it."""
    binary = devstack.layout.kustomize
    if not binary.is_file():
        pytest.fail(f"kustomize is not installed at {binary}; run devstack/build-tools", pytrace=False)
    return binary


async def render(kustomize: Path, directory: Path, *, token: str = "test-token") -> list[Obj]:
    """``kustomize build`` of ``directory`` in a copy of manifests/, after the install step that generates
    the base's token (overlays reach the base by relative path, so the whole tree is copied)."""
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "manifests"
        shutil.copytree(MANIFESTS, copy)
        (copy / "base" / "report-token").write_text(token + "\n")
        done = await kustomize_build(kustomize, copy / directory.relative_to(MANIFESTS))
    assert done.returncode == 0, f"kustomize build {directory} failed:\n{done.stderr}"
    objects = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    assert all(isinstance(o, dict) for o in objects)
    return objects


async def test_the_base_ships_no_token_and_renders_the_one_generated_at_install(kustomize: Path) -> None:
    shipped = [doc for f in (MANIFESTS / "base").glob("*.yaml") for doc in yaml.safe_load_all(f.read_text())]
    assert not [d for d in shipped if d and d.get("kind") == "Secret"]
    token = secrets.token_hex(32)

    (secret,) = [o for o in await render(kustomize, MANIFESTS / "base", token=token) if o["kind"] == "Secret"]

    assert ident(secret) == ("Secret", NAMESPACE, TOKEN_SECRET)
    assert base64.b64decode(secret["data"]["token"]).decode().strip() == token


# --- objects applied for real, through devstack.kube_rest.Rest ------------------------------------------


@asynccontextmanager
async def real_objects(rest: Rest, objects: Sequence[Obj]) -> AsyncIterator[list[Obj]]:
    """Applies ``objects`` for real, in order, and yields those that did not exist before; afterwards
    deletes those, in reverse order (and waits until a deleted Namespace is gone, so that the next run does
    not find it terminating).
    """
    created: list[Obj] = []
    try:
        for obj in objects:
            existing = await rest.get(obj)
            if existing is not None and obj["kind"] == "Namespace":
                if existing["metadata"].get("deletionTimestamp"):
                    await namespace_gone(rest, obj)
                    existing = None
                else:
                    continue  # someone else's: use it, leave it
            status, doc = await rest.apply(obj, dry_run=False)
            assert status in (200, 201), f"apply {ident(obj)}: HTTP {status}: {doc.get('message', doc)}"
            if existing is None:
                created.append(obj)
        yield created
    finally:
        for obj in reversed(created):
            await rest.delete(obj)
        for obj in created:
            if obj["kind"] == "Namespace":
                await namespace_gone(rest, obj)


async def namespace_gone(rest: Rest, namespace: Obj) -> None:
    await eventually(
        lambda: rest.get(namespace),
        lambda found: found is None,
        timeout=60,
        interval=0.5,
        what=f"namespace {namespace['metadata']['name']} to be deleted",
    )


@pytest.fixture
def rest(kube: client.ApiClient) -> Rest:
    return Rest(kube)


# --- rendering ------------------------------------------------------------------------------------------


async def test_the_base_and_the_examples_render_with_kustomize_into_namespaced_labelled_objects(
    kustomize: Path,
) -> None:
    base = await render(kustomize, MANIFESTS / "base")
    examples = await render(kustomize, MANIFESTS / "examples")

    kinds = sorted({o["kind"] for o in base})
    assert kinds == sorted(
        {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
        | {"ConfigMap", "Secret", "Deployment", "Service"}
    )
    assert {(o["kind"], o["metadata"]["name"]) for o in base if o["kind"] == "Deployment"} == {
        ("Deployment", "queue-autoscaler-controller"),
        ("Deployment", "queue-autoscaler-activator"),
    }
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for obj in base:
        expected = "" if obj["kind"] in cluster_scoped else NAMESPACE
        assert obj["metadata"].get("namespace", "") == expected, ident(obj)
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "queue-autoscaler", ident(obj)
    # Bindings name their subjects in the namespace the service accounts are in.
    for obj in base:
        for subject in obj.get("subjects", []):
            assert subject["namespace"] == NAMESPACE, ident(obj)

    assert {ident(o) for o in examples} == {
        ("Namespace", "", "billing"),
        ("Deployment", "billing", "billing-worker"),
        ("Deployment", "billing", "billing-worker-service"),
        ("Service", "billing", "billing-worker-service"),
        ("Broker", "billing", "default-event-broker"),
        ("Trigger", "billing", "billing-process-trigger"),
    }
    annotated = [o for o in examples if o["kind"] == "Deployment"]
    for obj in annotated:
        assert any(k.startswith("queue-autoscaler.dev/") for k in obj["metadata"]["annotations"]), ident(obj)


async def test_the_secured_kafka_overlay_mounts_the_connections_file_from_its_secret_by_name(
    kustomize: Path,
) -> None:
    objects = await render(kustomize, MANIFESTS / "examples" / "secured-kafka")
    secrets = [
        o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"].startswith(CONNECTIONS_SECRET)
    ]
    assert len(secrets) == 1
    secret = secrets[0]
    assert secret["metadata"]["namespace"] == NAMESPACE
    assert set(secret["data"]) == {"connections.yaml", "payments-ca.pem", "payments-password"}
    document = yaml.safe_load(base64.b64decode(secret["data"]["connections.yaml"]))
    payments = document["kafka"]["payments"]
    assert payments["sasl"]["password-file"] == "/etc/queue-autoscaler/payments-password"
    assert payments["tls"]["ca-file"] == "/etc/queue-autoscaler/payments-ca.pem"

    controller = next(
        o for o in objects if ident(o) == ("Deployment", NAMESPACE, "queue-autoscaler-controller")
    )
    pod = controller["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["connections"]["secret"]["secretName"] == secret["metadata"]["name"]
    container = pod["containers"][0]
    assert {"name": "connections", "mountPath": "/etc/queue-autoscaler", "readOnly": True} in container[
        "volumeMounts"
    ]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["QUEUE_AUTOSCALER_CONNECTIONS"] == "/etc/queue-autoscaler/connections.yaml"


# --- server-side dry-run ---------------------------------------------------------------------------------


@pytest.mark.parametrize("directory", ["base", "examples", "examples/secured-kafka"])
async def test_every_rendered_object_passes_a_server_side_dry_run_apply_on_the_api_server(
    kustomize: Path, rest: Rest, directory: str
) -> None:
    objects = await render(kustomize, MANIFESTS / directory)
    if any(o["apiVersion"].startswith("eventing.knative.dev/") for o in objects):
        await install_crds(kustomize, rest)  # the examples' Broker and Trigger: the eventing component's CRDs
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    others = [o for o in objects if o["kind"] != "Namespace"]
    assert namespaces, "the kustomization should create its namespace"

    rejected: list[str] = []
    for obj in namespaces:
        status, doc = await rest.apply(obj, dry_run=True)
        if status not in (200, 201):
            rejected.append(f"{ident(obj)}: HTTP {status}: {doc.get('message', doc)}")
    assert not rejected, "\n".join(rejected)

    async with real_objects(rest, namespaces):
        absent = [o for o in others if await rest.get(o) is None]
        for obj in others:
            status, doc = await rest.apply(obj, dry_run=True)
            if status not in (200, 201):
                rejected.append(f"{ident(obj)}: HTTP {status}: {doc.get('message', doc)}")
                continue
            # The answer is the object as it would be stored: defaulted, validated, never persisted.
            assert doc["kind"] == obj["kind"]
            assert doc["metadata"]["name"] == obj["metadata"]["name"]
        assert not rejected, "\n".join(rejected)
        stored = [ident(o) for o in absent if await rest.get(o) is not None]
        assert not stored, f"a dry-run stored {stored}"


# --- RBAC, for real --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    verb: str
    resource: str
    namespace: str = ""
    group: str = ""
    subresource: str = ""
    name: str = ""

    def __str__(self) -> str:
        what = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        what = f"{self.group}/{what}" if self.group else what
        where = f" in {self.namespace}" if self.namespace else " cluster-wide"
        return f"{self.verb} {what}{f' {self.name!r}' if self.name else ''}{where}"


async def allowed(rest: Rest, user: str, access: Access) -> bool:
    """A SubjectAccessReview for a service account, with the groups its token would carry."""
    namespace = user.split(":")[2]
    attributes = {
        "verb": access.verb,
        "group": access.group,
        "resource": access.resource,
        "subresource": access.subresource,
        "name": access.name,
        "namespace": access.namespace,
    }
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{namespace}",
                "system:authenticated",
            ],
            "resourceAttributes": {k: v for k, v in attributes.items() if v},
        },
    }
    status, doc = await rest.request(
        "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=review
    )
    assert status == 201, f"SubjectAccessReview: HTTP {status}: {doc}"
    return bool(doc["status"].get("allowed"))


CONTROLLER_CAN = [
    *(
        Access("patch", "deployments", ns, group="apps", subresource="scale")
        for ns in ("billing", "default", "team-a")
    ),
    Access("patch", "deployments", "", group="apps", subresource="scale"),
    Access("get", "deployments", "", group="apps", subresource="scale"),
    *(Access(verb, "deployments", "", group="apps") for verb in ("get", "list", "watch", "patch")),
    *(Access(verb, "deployments", "billing", group="apps") for verb in ("get", "list", "watch", "patch")),
    Access("create", "events", "billing", group="events.k8s.io"),
    Access("create", "events", "", group="events.k8s.io"),
    *(
        Access(verb, "leases", NAMESPACE, group="coordination.k8s.io", name="queue-autoscaler-controller")
        for verb in ("get", "update")
    ),
    Access("create", "leases", NAMESPACE, group="coordination.k8s.io"),
    Access("get", "secrets", NAMESPACE, name=TOKEN_SECRET),
    *(
        Access(verb, "triggers", ns, group="eventing.knative.dev")
        for verb in ("get", "list", "watch")
        for ns in ("", "billing")
    ),
]
CONTROLLER_CANNOT = [
    *(Access(verb, "triggers", "billing", group="eventing.knative.dev") for verb in ("patch", "delete")),
    Access("patch", "triggers", "billing", group="eventing.knative.dev", subresource="status"),
    Access("list", "brokers", "billing", group="eventing.knative.dev"),
    Access("get", "secrets", NAMESPACE),
    Access("list", "secrets", NAMESPACE),
    Access("list", "secrets", ""),
    Access("get", "secrets", "billing", name=TOKEN_SECRET),
    Access("get", "secrets", NAMESPACE, name="another-secret"),
    Access("get", "secrets", NAMESPACE, name=CONNECTIONS_SECRET),  # mounted by the kubelet, never read
    Access("watch", "secrets", NAMESPACE),
    Access("delete", "deployments", "billing", group="apps"),
    Access("delete", "deployments", "", group="apps"),
    Access("create", "deployments", "billing", group="apps"),
    Access("update", "deployments", "billing", group="apps"),
    *(
        Access(verb, "leases", "kube-system", group="coordination.k8s.io")
        for verb in ("update", "get", "create")
    ),
    Access("update", "leases", "billing", group="coordination.k8s.io"),
    Access("delete", "leases", NAMESPACE, group="coordination.k8s.io"),
    Access("create", "pods", "billing"),
    Access("delete", "events", "billing", group="events.k8s.io"),
    Access("create", "events", "billing"),  # core/v1 Events: the controller writes events.k8s.io only
    Access("escalate", "clusterroles", "", group="rbac.authorization.k8s.io"),
]
ACTIVATOR_CAN = [
    *(Access(verb, "endpointslices", "", group="discovery.k8s.io") for verb in ("list", "watch")),
    *(Access(verb, "endpointslices", "billing", group="discovery.k8s.io") for verb in ("list", "watch")),
    *(Access(verb, "deployments", "", group="apps") for verb in ("list", "watch")),
    Access("get", "secrets", NAMESPACE, name=TOKEN_SECRET),
    Access("get", "leases", NAMESPACE, group="coordination.k8s.io", name="queue-autoscaler-controller"),
]
ACTIVATOR_CANNOT = [
    Access("list", "secrets", NAMESPACE),
    Access("list", "secrets", ""),
    Access("get", "secrets", NAMESPACE, name="another-secret"),
    Access("patch", "deployments", "billing", group="apps", subresource="scale"),
    Access("patch", "deployments", "", group="apps", subresource="scale"),
    Access("update", "deployments", "billing", group="apps", subresource="scale"),
    Access("patch", "deployments", "billing", group="apps"),
    Access("create", "events", "billing", group="events.k8s.io"),
    Access("update", "leases", NAMESPACE, group="coordination.k8s.io", name="queue-autoscaler-controller"),
    Access("get", "leases", NAMESPACE, group="coordination.k8s.io", name="another-lease"),
]


async def test_the_rbac_grants_the_controller_and_the_activator_exactly_what_they_need(
    kustomize: Path, rest: Rest
) -> None:
    objects = await render(kustomize, MANIFESTS / "base")
    namespace = [o for o in objects if o["kind"] == "Namespace"]
    rbac = [o for o in objects if o["kind"] in RBAC_KINDS]
    assert {o["kind"] for o in rbac} == RBAC_KINDS

    async with real_objects(rest, [*namespace, *rbac]) as created:

        async def verdicts(user: str, accesses: Sequence[Access]) -> dict[str, bool]:
            answers = await asyncio.gather(*(allowed(rest, user, a) for a in accesses))
            return {str(a): answer for a, answer in zip(accesses, answers, strict=True)}

        # The authorizer sees new bindings through its informers: wait until every grant is visible
        # (each binding grants at least one of these), then ask everything once.
        await eventually(
            lambda: verdicts(CONTROLLER_SA, CONTROLLER_CAN),
            lambda found: all(found.values()),
            timeout=10,
            interval=0.25,
            what="every grant of the controller",
        )
        await eventually(
            lambda: verdicts(ACTIVATOR_SA, ACTIVATOR_CAN),
            lambda found: all(found.values()),
            timeout=10,
            interval=0.25,
            what="every grant of the activator",
        )
        wrongly_allowed = {
            "controller": [k for k, v in (await verdicts(CONTROLLER_SA, CONTROLLER_CANNOT)).items() if v],
            "activator": [k for k, v in (await verdicts(ACTIVATOR_SA, ACTIVATOR_CANNOT)).items() if v],
        }
        assert wrongly_allowed == {"controller": [], "activator": []}

    # Everything created here is gone again, the cluster-scoped roles and bindings included.
    left = [ident(o) for o in created if await rest.get(o) is not None]
    assert not left, f"left behind: {left}"

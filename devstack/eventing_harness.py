"""The event broker on the devstack, shared by the tests and the benchmarks: the eventing CRDs installed from
``manifests/eventing``, a Broker of class queue-autoscaler with its ingress and dispatcher as real processes,
and subscribers served in the calling process that record what they receive."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from aiokafka import errors as aiokafka_errors
from aiokafka.admin import AIOKafkaAdminClient
from kubernetes_asyncio import client

from autoscaler.model import broker_topic, trigger_consumer_group
from autoscaler.observability.log_events import EventingLog
from devstack.harness import Devstack, eventually
from devstack.kube_rest import MANIFESTS, Rest, ident, kustomize_build
from devstack.loopback import running
from devstack.processes import Process, queue_autoscaler

GROUP, VERSION = "eventing.knative.dev", "v1"
BROKER = "default-event-broker"
BILLING = "com.shivamitcs.billing.started"
# The billing flow's canonical Trigger, as written for Knative (its subscriber is a Knative Service).
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
PARTITIONS = 3
COMPONENT = MANIFESTS / "eventing"


# --- the CRDs -----------------------------------------------------------------------------------------------


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
    rest.forget(f"{GROUP}/{VERSION}")

    async def served() -> bool:
        status, _doc = await rest.request("GET", f"/apis/{GROUP}/{VERSION}")
        return status == 200

    await eventually(served, bool, timeout=30, interval=0.2, what=f"{GROUP}/{VERSION} to be served")


# --- a subscriber that records -----------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def id(self) -> str:
        return self.headers.get("ce-id", "")


@dataclass
class Subscriber:
    """Records every request; ``answer`` decides the status (and body) per request."""

    received: list[Received] = field(default_factory=list)
    answer: Callable[[Received], tuple[int, bytes, dict[str, str]]] = lambda _r: (200, b"", {})
    url: str = ""
    delay: float = 0.0  # seconds before answering

    async def handle(self, request: web.Request) -> web.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        got = Received(
            {k.lower(): v for k, v in request.headers.items()},
            await request.read(),
            asyncio.get_running_loop().time(),
        )
        self.received.append(got)
        status, body, headers = self.answer(got)
        return web.Response(status=status, body=body, headers=headers)

    def ids(self) -> list[str]:
        return [r.id for r in self.received]


@contextlib.asynccontextmanager
async def subscriber() -> AsyncIterator[Subscriber]:
    sink = Subscriber()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", sink.handle)
    async with running(app) as port:
        sink.url = f"http://127.0.0.1:{port}/"
        yield sink


# --- the processes ----------------------------------------------------------------------------------------


def logged_port(process: Process, event: str, key: str) -> int | None:
    for entry in process.logged(event):
        return int(entry[key])
    return None


async def wait_logged_port(process: Process, event: str, key: str) -> int:
    async def probe() -> int | None:
        process.assert_alive()
        return logged_port(process, event, key)

    found = await eventually(probe, lambda p: p is not None, timeout=60, interval=0.1, what=f"{event} {key}")
    assert found is not None
    return found


@dataclass
class Broker:
    namespace: str
    ingress: Process
    dispatcher: Process
    url: str  # the Broker's address: POST events here
    api: client.ApiClient
    devstack: Devstack
    partitions: int = PARTITIONS  # of the Broker's topic

    @property
    def topic(self) -> str:
        return broker_topic(self.namespace, BROKER)

    async def post(self, event_id: str, event_type: str, *, extra: dict[str, str] | None = None) -> int:
        headers = {
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-source": "/tests",
            "ce-type": event_type,
            "Content-Type": "application/json",
            **(extra or {}),
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.url, headers=headers, data=json.dumps({"id": event_id}).encode()) as response,
        ):
            return response.status

    async def trigger(
        self, name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None
    ) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Trigger",
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": {"broker": BROKER, **spec},
        }
        await client.CustomObjectsApi(self.api).create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "triggers", body
        )

    async def status(self, plural: str, name: str) -> dict[str, Any]:
        found = await client.CustomObjectsApi(self.api).get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, name
        )
        return dict(found.get("status") or {})

    async def conditions(self, plural: str, name: str) -> dict[str, dict[str, str]]:
        return {c["type"]: c for c in (await self.status(plural, name)).get("conditions", [])}

    async def ready_trigger(self, name: str) -> None:
        """Waits until the Trigger is Ready and its consumer group holds an offset for every partition."""
        await eventually(
            lambda: self.conditions("triggers", name),
            lambda c: c.get("Ready", {}).get("status") == "True",
            timeout=60,
            interval=0.2,
            what=f"Trigger {name} Ready",
        )
        group = trigger_consumer_group(self.namespace, name)
        await eventually(
            lambda: committed(self.devstack.kafka_bootstrap, group),
            lambda offsets: len(offsets) == self.partitions,
            timeout=60,
            interval=0.2,
            what=f"group {group} anchored on every partition",
        )


async def committed(bootstrap: str, group: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    except aiokafka_errors.KafkaError as exc:
        if not exc.retriable:
            raise
        return {}  # no coordinator yet (a Kafka just restarted creates __consumer_offsets first)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


@contextlib.asynccontextmanager
async def broker_processes(
    devstack: Devstack,
    kube: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    *,
    dispatcher_extra: tuple[str, ...] = (),
    partitions: int = PARTITIONS,
    create_broker: bool = True,
) -> AsyncIterator[Broker]:
    """The Broker in ``namespace`` (unless ``create_broker`` is false: the caller applied its own
    ``default-event-broker``), and an ingress and a dispatcher process for that namespace (their logs in
    ``tmp_path``); the Broker's topic gets ``partitions`` partitions."""
    if create_broker:
        await client.CustomObjectsApi(kube).create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "brokers",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Broker",
                "metadata": {
                    "name": BROKER,
                    "annotations": {"eventing.knative.dev/broker.class": "queue-autoscaler"},
                },
            },
        )
    env = {**os.environ, "QUEUE_AUTOSCALER_LOG_FORMAT": "json"}
    common = [
        "--kubeconfig",
        str(devstack.kubeconfig),
        "--namespace",
        namespace,
        "--kafka-bootstrap",
        devstack.kafka_bootstrap,
        "--broker-partitions",
        str(partitions),
    ]
    ingress = Process(
        queue_autoscaler(
            "broker-ingress", *common, "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"
        ),
        tmp_path / "ingress.log",
        env,
    ).start()
    dispatcher: Process | None = None
    try:
        port = await wait_logged_port(ingress, EventingLog.INGRESS_LISTENING, "port")
        ingress_url = f"http://127.0.0.1:{port}"
        dispatcher = Process(
            queue_autoscaler(
                "dispatcher",
                *common,
                "--broker-ingress-url",
                ingress_url,
                "--metrics-port",
                "0",
                *dispatcher_extra,
            ),
            tmp_path / "dispatcher.log",
            env,
        ).start()
        await wait_logged_port(dispatcher, EventingLog.DISPATCHER_STARTED, "metrics_port")
        yield Broker(
            namespace, ingress, dispatcher, f"{ingress_url}/{namespace}/{BROKER}", kube, devstack, partitions
        )
    finally:
        for process in (dispatcher, ingress):
            if process is not None:
                process.stop()


async def another_dispatcher(broker: Broker, name: str) -> Process:
    """One more dispatcher replica for the Broker's namespace (the first one's arguments, its log in
    ``<name>.log`` beside the first one's), started and listening; the caller stops it."""
    replica = Process(
        broker.dispatcher.argv, broker.dispatcher.log_path.with_name(f"{name}.log"), broker.dispatcher.env
    ).start()
    try:
        await wait_logged_port(replica, EventingLog.DISPATCHER_STARTED, "metrics_port")
    except BaseException:
        replica.stop()
        raise
    return replica

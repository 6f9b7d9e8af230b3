"""The devstack harness shared by the tests and the benchmarks: the running stack, namespaces, topics,
Deployments, waiting for conditions (``eventually``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from kubernetes_asyncio import client
from kubernetes_asyncio import config as kube_config

from devstack import config, stack
from devstack.config import DEVSTACK_DIR, REPO_ROOT, Layout

T = TypeVar("T")


@dataclass(frozen=True)
class Devstack:
    layout: Layout

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    @property
    def kafka_bootstrap(self) -> str:
        return self.layout.kafka_bootstrap

    @property
    def kafka_pod_bootstrap(self) -> str:
        return self.layout.kafka_pod_bootstrap


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def eventually(
    probe: Callable[[], Awaitable[T]],
    predicate: Callable[[T], bool],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str,
) -> T:
    """Polls ``probe`` until ``predicate`` holds; fails with the last value seen after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    value = await probe()
    while not predicate(value):
        if loop.time() > deadline:
            shown = repr(value)
            shown = shown if len(shown) <= 2000 else f"{shown[:1000]} ... {shown[-1000:]}"
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {shown}")
        await asyncio.sleep(interval)
        value = await probe()
    return value


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    errors = [error for _name, error, *_ in response.topic_errors if error]
    assert not errors, f"creating {topic}: error codes {errors}"


async def produce(bootstrap: str, topic: str, count: int, *, partitions: int | None = None) -> None:
    """Produces ``count`` records, spread round-robin over ``partitions`` when given."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for i in range(count):
            partition = i % partitions if partitions else None
            futures.append(await producer.send(topic, f"record-{i}".encode(), partition=partition))
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def python_container(
    name: str,
    module: str,
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    readiness_port: int | None = None,
) -> dict[str, Any]:
    """A container spec that runs ``python -m module args`` from this repository on the local kubelet."""
    container: dict[str, Any] = {
        "name": name,
        "image": "devstack/python",
        "command": [sys.executable, "-u", "-m", module],
        "args": args,
        "workingDir": str(REPO_ROOT),
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            *({"name": k, "value": v} for k, v in (env or {}).items()),
        ],
    }
    if readiness_port is not None:
        container["ports"] = [{"name": "http", "containerPort": readiness_port}]
        container["readinessProbe"] = {
            "httpGet": {"path": "/healthz", "port": readiness_port},
            "periodSeconds": 1,
        }
    return container


def deployment(
    name: str,
    container: dict[str, Any],
    *,
    replicas: int,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container], "terminationGracePeriodSeconds": 5},
            },
        },
    }


def service(name: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port, "targetPort": port}]},
    }


async def ready_endpoints(api: client.ApiClient, namespace: str, service_name: str) -> list[str]:
    """Addresses of ready endpoints over all EndpointSlices of a Service."""
    slices = await client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service_name}"
    )
    found: list[str] = []
    for item in slices.items:
        for endpoint in item.endpoints or []:
            if endpoint.conditions is None or endpoint.conditions.ready:
                found.extend(endpoint.addresses)
    return sorted(found)


async def events_of(
    api: client.ApiClient,
    namespace: str,
    name: str,
    *,
    controller: str | None = "queue-autoscaler.dev/controller",
) -> list[dict[str, Any]]:
    """events.k8s.io Events regarding one object (by default only queue-autoscaler's), oldest first, raw JSON.

    Raw, because Events converted from core/v1 may have no eventTime, which the generated models reject.
    """
    response = await client.EventsV1Api(api).list_namespaced_event(
        namespace, field_selector=f"regarding.name={name}", _preload_content=False
    )
    items: list[dict[str, Any]] = json.loads(await response.read())["items"]
    if controller is not None:
        items = [e for e in items if e.get("reportingController") == controller]
    return sorted(items, key=lambda e: e.get("eventTime") or e["metadata"]["creationTimestamp"])


async def event_reasons_become(
    api: client.ApiClient, namespace: str, name: str, expected: list[str], *, timeout: float = 10.0
) -> list[str]:
    """The reasons of queue-autoscaler's Events regarding ``name``, once they are ``expected``. The controller
    records an Event just after the change it reports, so a reader that has seen the change may not see the
    Event yet: a bare read races it. Fails with the last reasons seen after ``timeout`` s."""

    async def reasons() -> list[str]:
        return [str(e["reason"]) for e in await events_of(api, namespace, name)]

    return await eventually(
        reasons, lambda found: found == expected, timeout=timeout, what=f"Events {expected}"
    )


async def list_topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics: list[str] = await admin.list_topics()
    finally:
        await admin.close()
    return topics


async def commit(bootstrap: str, group: str, topic: str, offsets: Mapping[int, int]) -> None:
    """Commits ``offsets`` (partition -> offset) for ``group`` as a consumer of assigned partitions does."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in offsets])
        await consumer.commit({TopicPartition(topic, p): offset for p, offset in offsets.items()})
    finally:
        await consumer.stop()


async def delete_records(bootstrap: str, topic: str, before: Mapping[int, int]) -> dict[int, int]:
    """Deletes records below ``before[partition]``; returns the new log start offset per partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        low = await admin.delete_records(
            {TopicPartition(topic, p): RecordsToDelete(offset) for p, offset in before.items()}
        )
    finally:
        await admin.close()
    return {tp.partition: offset for tp, offset in low.items()}


@dataclass(frozen=True)
class ToolRow:
    current: int
    end: int
    lag: int


async def kafka_tool_describe(bootstrap: str, group: str) -> dict[tuple[str, int], ToolRow]:
    """``kafka-consumer-groups --describe --group``, per (topic, partition) with a committed offset."""
    done = await asyncio.to_thread(
        subprocess.run,
        [
            str(DEVSTACK_DIR / "kafka-consumer-groups"),
            "--bootstrap-server",
            bootstrap,
            "--describe",
            "--group",
            group,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"kafka-consumer-groups failed: {done.stderr}"
    rows: dict[tuple[str, int], ToolRow] = {}
    for line in done.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[0] == group and fields[2].isdigit():
            rows[(fields[1], int(fields[2]))] = ToolRow(int(fields[3]), int(fields[4]), int(fields[5]))
    return rows


async def consume_and_commit(bootstrap: str, topic: str, group: str, count: int) -> int:
    """Consumes ``count`` records of ``topic`` in ``group`` from the start, then commits the position of every
    assigned partition, so partitions not yet read are committed at 0 and Kafka's tool lists them all."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumed = 0
        while consumed < count:
            batch = await consumer.getmany(timeout_ms=1000, max_records=count - consumed)
            consumed += sum(len(records) for records in batch.values())
        await consumer.commit()
    finally:
        await consumer.stop()
    return consumed


@asynccontextmanager
async def running(coroutine: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    """Runs ``coroutine`` as a task for the block, then cancels and awaits it."""
    task = asyncio.create_task(coroutine)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def delete_topics(bootstrap: str, topics: Sequence[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(list(topics))
    finally:
        await admin.close()


async def wait_last_active(api: client.ApiClient, namespace: str, *, timeout: float) -> None:
    """Waits until every Deployment in ``namespace`` carries the controller's last-active annotation."""
    apps = client.AppsV1Api(api)
    deadline = time.monotonic() + timeout
    while True:
        found = await apps.list_namespaced_deployment(namespace)
        missing = [
            d for d in found.items if "queue-autoscaler.dev/last-active" not in (d.metadata.annotations or {})
        ]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(missing)} Deployments still without last-active after {timeout}s")
        await asyncio.sleep(0.5)


async def create_deployments(api: client.ApiClient, namespace: str, manifests: Sequence[Any]) -> None:
    apps = client.AppsV1Api(api)
    gate = asyncio.Semaphore(16)

    async def one(manifest: Any) -> None:
        async with gate:
            await apps.create_namespaced_deployment(namespace, manifest)

    await asyncio.gather(*(one(m) for m in manifests))


ANNOTATION_PREFIX = "queue-autoscaler.dev/"


def target_annotations(**annotations: str) -> dict[str, str]:
    """queue-autoscaler annotations from keyword arguments: ``lag_per_replica="100"`` ->
    ``queue-autoscaler.dev/lag-per-replica: "100"``."""
    return {ANNOTATION_PREFIX + key.replace("_", "-"): value for key, value in annotations.items()}


def kafka_worker(devstack: Devstack, name: str, topic: str, group: str, *, rate: float) -> dict[str, Any]:
    """A container consuming ``topic`` in ``group`` at ``rate`` records per second per replica."""
    args = ["--bootstrap", devstack.kafka_pod_bootstrap, "--topic", topic, "--group", group]
    return python_container(name, "devstack.workers.kafka_worker", [*args, "--rate", str(rate)])


async def spec_replicas(api: client.ApiClient, namespace: str, name: str) -> int:
    """spec.replicas as the scale subresource reports it."""
    scale = await client.AppsV1Api(api).read_namespaced_deployment_scale(name, namespace)
    return int(scale.spec.replicas or 0)


@asynccontextmanager
async def kube_api(devstack: Devstack) -> AsyncIterator[client.ApiClient]:
    """An API client on the devstack's admin kubeconfig; SystemExit naming devstack/up when there is none."""
    configuration = client.Configuration()
    try:
        await kube_config.load_kube_config(
            config_file=str(devstack.kubeconfig), client_configuration=configuration
        )
    except (OSError, kube_config.ConfigException) as exc:
        raise SystemExit(f"no devstack kubeconfig ({exc}): start the devstack with devstack/up") from exc
    async with client.ApiClient(configuration) as api:
        yield api


@asynccontextmanager
async def devstack_namespace(prefix: str) -> AsyncIterator[tuple[Devstack, client.ApiClient, str]]:
    """The devstack (started when it is not), an API client and a new namespace, deleted afterwards."""
    layout = config.layout()
    await asyncio.to_thread(stack.up, layout)
    devstack = Devstack(layout)
    async with kube_api(devstack) as api:
        namespace = unique(prefix)
        core = client.CoreV1Api(api)
        await core.create_namespace({"metadata": {"name": namespace}})
        try:
            yield devstack, api, namespace
        finally:
            with contextlib.suppress(client.ApiException):
                await core.delete_namespace(namespace)

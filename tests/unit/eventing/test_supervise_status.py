"""Two dispatcher replicas reconciling the same Brokers and Triggers never flip a status back and forth: each
writes only what differs from what it last wrote (or, before its first write, from the stored status). The
API server is a shared store behind the caches and ``patch_status``; Kafka's topics behind ``Topics``."""

from __future__ import annotations

import copy
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from autoscaler.errors import KafkaUnavailable
from autoscaler.eventing import dispatcher, filters, supervise
from autoscaler.kube import eventing as kube_eventing

Store = dict[tuple[str, str, str], dict[str, Any]]  # (plural, namespace, name) -> the stored object


class StoredCache(kube_eventing.Cache):
    """A cache that always sees the store as it is now (a watch with no delay)."""

    def __init__(self, store: Store, plural: str) -> None:
        super().__init__([])
        self._store, self._plural = store, plural

    def all(self) -> list[kube_eventing.Resource]:
        return [
            kube_eventing.parse_resource(copy.deepcopy(o))
            for (p, _, _), o in self._store.items()
            if p == self._plural
        ]

    def get(self, namespace: str, name: str) -> kube_eventing.Resource | None:
        found = self._store.get((self._plural, namespace, name))
        return None if found is None else kube_eventing.parse_resource(copy.deepcopy(found))


class Topics:
    def __init__(self, *, reachable: bool) -> None:
        self.reachable = reachable

    async def ensure(self, topic: str) -> None:
        if not self.reachable:
            raise KafkaUnavailable(f"creating topic {topic}: Kafka is unavailable: connection refused")


def never_consumes(_trigger: filters.Trigger) -> dispatcher.Consumer:
    raise AssertionError("no Trigger here is Ready")


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> tuple[Store, list[tuple[str, str, str]]]:
    objects: Store = {
        ("brokers", "shop", "default"): {
            "metadata": {
                "namespace": "shop",
                "name": "default",
                "uid": "b-1",
                "generation": 1,
                "annotations": {"eventing.knative.dev/broker.class": "queue-autoscaler"},
            },
        },
        ("triggers", "shop", "invalid"): {
            "metadata": {"namespace": "shop", "name": "invalid", "uid": "t-1", "generation": 1},
            "spec": {"broker": "default", "filter": {"attributes": {"Not-A-Name": "x"}}},
        },
    }
    writes: list[tuple[str, str, str]] = []

    async def patch_status(
        _api: object, *, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        writes.append((plural, namespace, name))
        objects[(plural, namespace, name)]["status"] = copy.deepcopy(dict(status))

    monkeypatch.setattr(kube_eventing, "patch_status", patch_status)
    return objects, writes


def replica(objects: Store, session: aiohttp.ClientSession, *, kafka_reachable: bool) -> supervise.Supervisor:
    return supervise.Supervisor(
        api=object(),
        brokers=StoredCache(objects, "brokers"),
        triggers=StoredCache(objects, "triggers"),
        topics=Topics(reachable=kafka_reachable),
        consumers=never_consumes,
        session=session,
        metrics=dispatcher.DispatcherMetrics(CollectorRegistry()),
        settings=supervise.SuperviseSettings(ingress_url="http://ingress"),
    )


async def test_two_replicas_seeing_the_same_objects_write_each_status_once_between_them(
    store: tuple[Store, list[tuple[str, str, str]]],
) -> None:
    objects, writes = store
    async with aiohttp.ClientSession() as session:
        replicas = [replica(objects, session, kafka_reachable=True) for _ in range(2)]
        for _round in range(4):
            for one in replicas:
                await one.reconcile_once()
    assert sorted(writes) == [("brokers", "shop", "default"), ("triggers", "shop", "invalid")]
    ready = {c["type"]: c["status"] for c in objects[("brokers", "shop", "default")]["status"]["conditions"]}
    assert ready["Ready"] == "True"


async def test_replicas_that_disagree_write_once_each_and_then_stop_instead_of_flipping_the_status(
    store: tuple[Store, list[tuple[str, str, str]]],
) -> None:
    objects, writes = store
    async with aiohttp.ClientSession() as session:
        replicas = [replica(objects, session, kafka_reachable=r) for r in (True, False)]
        for _round in range(5):
            for one in replicas:
                await one.reconcile_once()
    assert writes.count(("brokers", "shop", "default")) == 2
    assert writes.count(("triggers", "shop", "invalid")) == 1


class Started(Exception):
    """Raised by the consumer factory: the Trigger it was asked to start is all a test needs."""


async def test_a_trigger_takes_every_delivery_field_it_leaves_out_from_its_broker(
    store: tuple[Store, list[tuple[str, str, str]]],
) -> None:
    objects, _writes = store
    objects[("brokers", "shop", "default")]["spec"] = {
        "delivery": {
            "retry": 4,
            "backoffPolicy": "linear",
            "backoffDelay": "PT1S",
            "deadLetterSink": {"uri": "http://dead-letters.shop.svc.cluster.local/"},
        }
    }
    del objects[("triggers", "shop", "invalid")]
    objects[("triggers", "shop", "orders")] = {
        "metadata": {"namespace": "shop", "name": "orders", "uid": "t-2", "generation": 1},
        "spec": {
            "broker": "default",
            "subscriber": {"uri": "http://orders.shop.svc.cluster.local/"},
            "delivery": {"retry": 1},
        },
    }
    started: list[filters.Trigger] = []

    def consumers(trigger: filters.Trigger) -> dispatcher.Consumer:
        started.append(trigger)
        raise Started

    async with aiohttp.ClientSession() as session:
        one = replica(objects, session, kafka_reachable=True)
        one._consumers = consumers
        with pytest.raises(Started):
            await one.reconcile_once()
    (trigger,) = started
    assert trigger.delivery.retry == 1  # the Trigger's own field wins
    assert trigger.delivery.backoff_policy == "linear"
    assert trigger.delivery.backoff_delay == 1.0
    assert trigger.delivery.dead_letter_sink is not None
    assert trigger.delivery.dead_letter_sink.uri == "http://dead-letters.shop.svc.cluster.local/"
    status = objects[("triggers", "shop", "orders")]["status"]
    assert status["deadLetterSinkUri"] == "http://dead-letters.shop.svc.cluster.local/"

"""The Trigger cache the controller asks for each Trigger's Broker."""

from __future__ import annotations

from typing import Any

from autoscaler.kube import eventing, watch


async def never_called(**_kwargs: Any) -> Any:
    raise AssertionError("the cache is fed by hand here")


def trigger(name: str, spec: dict[str, Any]) -> eventing.Resource:
    return eventing.parse_resource(
        {"metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}"}, "spec": spec}
    )


def test_a_trigger_names_its_broker_from_spec_broker_and_is_forgotten_when_deleted() -> None:
    cache = eventing.TriggerCache([(never_called, "triggers in ns")])
    billing = trigger("billing", {"broker": "default-event-broker"})
    cache.handle(0, watch.Listed((billing, trigger("no-broker", {}), trigger("odd", {"broker": 3})), "1"))

    assert cache.broker_of("ns", "billing") == "default-event-broker"
    assert cache.broker_of("ns", "no-broker") is None
    assert cache.broker_of("ns", "odd") is None
    assert cache.broker_of("other", "billing") is None

    cache.handle(0, watch.Modified(trigger("billing", {"broker": "second"})))
    assert cache.broker_of("ns", "billing") == "second"
    cache.handle(0, watch.Deleted(billing))
    assert cache.broker_of("ns", "billing") is None

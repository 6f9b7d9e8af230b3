"""The controller refuses what the activators refuse (http-host claims) and connections it does not know."""

from __future__ import annotations

import dataclasses

import pytest

from autoscaler.model import ConcurrencyReport, TargetConcurrency
from tests.unit.control.test_loop import T0, FakeLag, FakeScaler, FakeTargets, make_loop, running, until

pytestmark = pytest.mark.looptime


async def test_an_http_host_naming_another_targets_default_host_gets_one_warning_naming_the_owner() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    web = targets.put("web", 1, http_service="web")
    thief = targets.put("thief", 1, http_service="thief", http_host="web.ns")
    loop, _ = make_loop(targets, lag, scaler)
    busy = {key: TargetConcurrency(in_flight=25, queued=0) for key in (web, thief)}

    async with running(loop):
        loop.report(ConcurrencyReport("a1", busy))
        await until(2.5)  # three ticks

    warnings = [e for e in scaler.events if e[1] == "Warning"]
    assert [(e[0], e[2]) for e in warnings] == [(thief, "InvalidAnnotations")]
    assert "web.ns" in warnings[0][3]
    assert "ns/web" in warnings[0][3]
    # The refused name does not stop either target's own scaling.
    assert sorted(scaler.patches) == [(thief, 3), (web, 3)]


async def test_of_two_claims_of_one_host_the_younger_deployment_is_refused_and_warned_again_after_a_fix() -> (
    None
):
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    older = targets.put("a", 1, http_service="a", http_host="shop.example.com")
    younger = targets.put("b", 1, http_service="b", http_host="shop.example.com")
    targets.infos[older] = dataclasses.replace(targets.infos[older], created=T0)
    targets.infos[younger] = dataclasses.replace(targets.infos[younger], created=T0.replace(hour=13))
    loop, _ = make_loop(targets, lag, scaler)

    async with running(loop):
        await until(1.5)
        targets.put("b", 1, http_service="b")  # the claim is withdrawn ...
        targets.infos[younger] = dataclasses.replace(targets.infos[younger], created=T0.replace(hour=13))
        await until(2.5)
        targets.put("b", 1, http_service="b", http_host="shop.example.com")  # ... and made again
        targets.infos[younger] = dataclasses.replace(targets.infos[younger], created=T0.replace(hour=13))
        await until(3.5)

    warnings = [(e[0], e[2]) for e in scaler.events if e[1] == "Warning"]
    assert warnings == [(younger, "InvalidAnnotations"), (younger, "InvalidAnnotations")]
    assert all("ns/a" in e[3] for e in scaler.events if e[1] == "Warning")


async def test_a_target_naming_an_unknown_kafka_connection_gets_one_invalid_annotations_warning() -> None:
    targets, lag = FakeTargets(), FakeLag()
    scaler = FakeScaler(targets)
    key = targets.put("w", 1, kafka_group="g", kafka_connection="billing")
    loop, _ = make_loop(targets, lag, scaler, connections={"kafka": frozenset({"default"})})

    async with running(loop):
        await until(2.5)

    assert lag.reads == []
    assert [(e[0], e[1], e[2]) for e in scaler.events] == [(key, "Warning", "InvalidAnnotations")]
    assert "kafka-connection='billing'" in scaler.events[0][3]

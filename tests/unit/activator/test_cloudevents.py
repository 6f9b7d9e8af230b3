"""CloudEvents checks: binary and structured mode, batch, type filter; valid events pass byte for byte."""

from __future__ import annotations

import io
import json

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from autoscaler.activator import cloudevents, proxy, routing
from tests.unit.activator import helpers
from tests.unit.activator.conftest import ORDERS, Stack, make_stack

ANY = routing.CloudEventsFilter(enabled=True)
ORDERS_ONLY = routing.CloudEventsFilter(enabled=True, types=frozenset({"order.created", "order.paid"}))
BINARY = {
    "ce-specversion": "1.0",
    "ce-id": "e-1",
    "ce-source": "/shop/checkout",
    "ce-type": "order.created",
}
STRUCTURED = {"specversion": "1.0", "id": "e-1", "source": "/shop/checkout", "type": "order.created"}


def headers(values: dict[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(values))


def structured(doc: object, content_type: str = cloudevents.STRUCTURED) -> cloudevents.Rejection | None:
    return cloudevents.check_structured(
        json.dumps(doc).encode(), headers({"Content-Type": content_type}), ORDERS_ONLY
    )


def test_a_valid_binary_event_passes() -> None:
    assert cloudevents.check_binary(headers({**BINARY, "ce-time": "2026-01-02T03:04:05Z"}), ANY) is None
    assert cloudevents.check_binary(headers({**BINARY, "Content-Type": "text/plain"}), ORDERS_ONLY) is None


@pytest.mark.parametrize("missing", ["ce-specversion", "ce-id", "ce-source", "ce-type"])
def test_a_binary_event_without_a_required_header_is_refused_naming_it(missing: str) -> None:
    values = {key: value for key, value in BINARY.items() if key != missing}
    rejection = cloudevents.check_binary(headers(values), ANY)
    assert rejection is not None
    assert rejection.status == 400
    assert f"missing {missing}" in rejection.reason


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"ce-specversion": "0.3"}, "specversion"),
        ({"ce-source": ""}, "source"),
        ({"ce-id": ""}, "id"),
        ({"ce-time": "yesterday"}, "ce-time"),
        ({"ce-time": "2026-01-02T03:04:05"}, "time"),
        ({"ce-my-ext": "x"}, "my-ext"),
    ],
)
def test_an_invalid_binary_attribute_is_refused_naming_it(extra: dict[str, str], named: str) -> None:
    rejection = cloudevents.check_binary(headers({**BINARY, **extra}), ANY)
    assert rejection is not None
    assert rejection.status == 400
    assert named in rejection.reason


def test_a_repeated_binary_attribute_header_is_refused() -> None:
    values = CIMultiDict(BINARY)
    values.add("ce-id", "e-2")
    rejection = cloudevents.check_binary(CIMultiDictProxy(values), ANY)
    assert rejection is not None
    assert "ce-id appears 2 times" in rejection.reason


def test_a_structured_event_passes_and_its_type_is_filtered() -> None:
    assert structured(STRUCTURED) is None
    assert structured({**STRUCTURED, "data": {"x": 1}, "time": "2026-01-02T03:04:05+01:00"}) is None
    assert structured({**STRUCTURED, "data_base64": "aGk="}) is None
    rejection = structured({**STRUCTURED, "type": "order.cancelled"})
    assert rejection == cloudevents.Rejection(
        404,
        "CloudEvent type 'order.cancelled' is not accepted here (accepted types: order.created, order.paid)",
    )


@pytest.mark.parametrize("missing", ["specversion", "id", "source", "type"])
def test_a_structured_event_without_a_required_attribute_is_refused_naming_it(missing: str) -> None:
    rejection = structured({key: value for key, value in STRUCTURED.items() if key != missing})
    assert rejection is not None
    assert rejection.status == 400
    assert f"missing required attribute '{missing}'" in rejection.reason


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "must be a JSON object, not list"),
        (json.dumps({**STRUCTURED, "specversion": "0.3"}).encode(), "specversion"),
        (json.dumps({**STRUCTURED, "type": 7}).encode(), "type"),
        (json.dumps({**STRUCTURED, "time": "soon"}).encode(), "attribute 'time'"),
        (json.dumps({**STRUCTURED, "time": 5}).encode(), "attribute 'time'"),
        (json.dumps({**STRUCTURED, "data_base64": "abc"}).encode(), "data_base64"),
    ],
)
def test_an_invalid_structured_event_is_refused_saying_what_is_wrong(body: bytes, named: str) -> None:
    rejection = cloudevents.check_structured(body, headers({"Content-Type": cloudevents.STRUCTURED}), ANY)
    assert rejection is not None
    assert rejection.status == 400
    assert named in rejection.reason


def test_batch_mode_is_refused() -> None:
    rejection = structured([STRUCTURED], content_type=cloudevents.BATCH)
    assert rejection is not None
    assert rejection.status == 400
    assert rejection.reason.startswith("batch mode not supported")


def test_another_structured_format_is_refused() -> None:
    rejection = structured(STRUCTURED, content_type="application/cloudevents+avro")
    assert rejection is not None
    assert "not supported" in rejection.reason


def test_structured_mode_is_recognised_with_parameters_and_any_case() -> None:
    assert cloudevents.is_structured(headers({"Content-Type": "Application/CloudEvents+JSON; charset=utf-8"}))
    assert not cloudevents.is_structured(headers({"Content-Type": "application/json"}))
    assert not cloudevents.is_structured(headers({}))


RAW_BINARY = (
    b"POST /events?x=1 HTTP/1.1\r\n"
    b"Host: orders.shop\r\n"
    b"ce-specversion: 1.0\r\n"
    b"ce-id: e-1\r\n"
    b"ce-source: /shop/checkout\r\n"
    b"ce-type: order.created\r\n"
    b"ce-time: 2026-01-02T03:04:05Z\r\n"
    b"ce-traceparent: 00-abc-def-01\r\n"
    b"Content-Type: application/json\r\n"
    b"X-Custom: Mixed Case  value\r\n"
    b"Content-Length: 27\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b'{"order": 1,  "total": 9.5}'
)

RAW_STRUCTURED_BODY = (
    b'{ "specversion":"1.0", "id":"e-2","source":"/shop/checkout","type":"order.paid",'
    b' "data": {"b": 2, "a": 1},  "comexampleext" : "x" }'
)
RAW_STRUCTURED = (
    b"POST / HTTP/1.1\r\n"
    b"Host: orders.shop\r\n"
    b"Content-Type: application/cloudevents+json; charset=utf-8\r\n"
    b"Content-Length: " + str(len(RAW_STRUCTURED_BODY)).encode() + b"\r\n"
    b"Connection: close\r\n"
    b"\r\n" + RAW_STRUCTURED_BODY
)


def forwarded(raw_headers: tuple[tuple[bytes, bytes], ...]) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in raw_headers if not name.lower().startswith(b"x-forwarded-")]


def sent_headers(raw: bytes) -> list[tuple[bytes, bytes]]:
    lines = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    pairs = [line.partition(b": ") for line in lines]
    return [(name, value) for name, _, value in pairs if name.lower() != b"connection"]


@pytest.mark.parametrize(
    ("raw", "body"), [(RAW_BINARY, b'{"order": 1,  "total": 9.5}'), (RAW_STRUCTURED, RAW_STRUCTURED_BODY)]
)
async def test_valid_events_reach_the_pod_byte_for_byte(stack: Stack, raw: bytes, body: bytes) -> None:
    stack.route(cloudevents="true", cloudevents_types="order.created,order.paid")
    async with helpers.pods(1) as (pod,):
        stack.activator.endpoints.update(ORDERS, [pod.address])
        status, _ = await helpers.raw_exchange(stack.port, raw)
    assert status == 200
    (seen,) = pod.seen
    assert seen.body == body
    assert forwarded(seen.raw_headers) == sent_headers(raw)


async def test_invalid_events_are_refused_with_the_reason_and_wrong_types_with_404(stack: Stack) -> None:
    stack.route(cloudevents="true", cloudevents_types="order.created")
    async with helpers.pods(1) as (pod,):
        stack.activator.endpoints.update(ORDERS, [pod.address])
        missing = await stack.send(method="POST", headers={"ce-specversion": "1.0", "ce-id": "1"}, data=b"{}")
        wrong_type = await stack.send(method="POST", headers={**BINARY, "ce-type": "order.lost"}, data=b"{}")
        bad_json = await stack.send(
            method="POST", headers={"Content-Type": cloudevents.STRUCTURED}, data=b'{"id": '
        )
        batch = await stack.send(method="POST", headers={"Content-Type": cloudevents.BATCH}, data=b"[]")
        plain = await stack.send(method="POST", data=b"hello")
    assert missing.status == 400
    assert b"missing ce-source, ce-type" in missing.body
    assert wrong_type.status == 404
    assert b"'order.lost'" in wrong_type.body
    assert bad_json.status == 400
    assert b"not JSON" in bad_json.body
    assert batch.status == 400
    assert b"batch mode not supported" in batch.body
    assert plain.status == 400
    assert pod.seen == []
    assert stack.sample("queue_autoscaler_activator_responses_total", code="400") == 4.0
    assert stack.sample("queue_autoscaler_activator_responses_total", code="404") == 1.0


async def test_a_structured_event_larger_than_the_body_limit_gets_413() -> None:
    async with make_stack(limits=proxy.Limits(max_request_body=16)) as small:
        small.route(cloudevents="true")
        answer = await small.send(
            method="POST",
            headers={"Content-Type": cloudevents.STRUCTURED},
            data=json.dumps(STRUCTURED).encode(),
        )
    assert answer.status == 413


async def test_a_large_structured_event_passes_byte_for_byte(stack: Stack) -> None:
    stack.route(cloudevents="true")
    body = json.dumps({**STRUCTURED, "data": {"blob": "z" * 700_000}}).encode()
    async with helpers.pods(1) as (pod,):
        stack.activator.endpoints.update(ORDERS, [pod.address])
        async with stack.client.post(
            f"http://127.0.0.1:{stack.port}/",
            headers={"Host": "orders.shop", "Content-Type": cloudevents.STRUCTURED},
            data=io.BytesIO(body),
        ) as response:
            assert response.status == 200
    assert pod.seen[0].body == body

"""Whatever the Host header, request target, method or CloudEvents attributes: no 500, and no connection
except to the target's endpoints."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace

import aiohttp
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from yarl import URL

from autoscaler.activator import proxy, server
from autoscaler.model import TargetKey
from autoscaler.policy.annotations import PREFIX
from tests.unit.activator import helpers
from tests.unit.activator.conftest import ORDERS

EVENTS = TargetKey("shop", "events")
PRINTABLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
KNOWN_HOSTS = [
    "orders.shop",
    "orders.shop.svc",
    "orders.shop.svc.cluster.local",
    "orders.example.com",
    "payments.shop",
    "127.0.0.1",
    "localhost",
    "{pod}",
    "{decoy}",
    "{activator}",
]


def _spell(host: str, upper: bool, port: int | None, dot: bool) -> str:
    spelled = host.upper() if upper else host
    return spelled + ("." if dot else "") + ("" if port is None else f":{port}")


HOSTS = st.one_of(
    st.builds(
        _spell,
        st.sampled_from(KNOWN_HOSTS),
        st.booleans(),
        st.one_of(st.none(), st.integers(0, 99999)),
        st.booleans(),
    ),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
)
ORIGIN = st.text(alphabet=PRINTABLE, max_size=60).map(lambda tail: "/" + tail)
AUTHORITY = st.builds(
    "{}:{}".format, st.sampled_from(KNOWN_HOSTS), st.sampled_from(["{pod_port}", "{decoy_port}", "80", "443"])
)
TARGETS = st.one_of(
    ORIGIN,
    st.builds(
        "{}://{}{}".format,
        st.sampled_from(["http", "https", "HTTP", "ws", "ftp"]),
        AUTHORITY,
        ORIGIN,
    ),
    st.builds("//{}{}".format, AUTHORITY, ORIGIN),
    AUTHORITY,
    st.just("*"),
    st.text(alphabet=PRINTABLE, min_size=1, max_size=40),
)
METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"])


@dataclass
class Guarded:
    """An activator whose only outbound session records every URL it is asked to reach."""

    activator: server.Activator
    port: int
    pod: helpers.Pod
    decoy: helpers.Pod
    outbound: list[URL] = field(default_factory=list)


@pytest.fixture(params=["own-connections", "aiohttp-session"])
async def guarded(request: pytest.FixtureRequest) -> AsyncIterator[Guarded]:
    """The activator forwarding over its own pooled connections (the default), or over an aiohttp session
    whose every outbound request is recorded."""
    outbound: list[URL] = []

    async def record(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestStartParams
    ) -> None:
        outbound.append(params.url)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(record)
    limits = proxy.Limits()
    session = proxy.client_session(limits, trace_configs=[trace])
    given = session if request.param == "aiohttp-session" else None
    activator = server.Activator(registry=CollectorRegistry(), limits=limits, session=given)
    activator.apply_deployment(
        namespace="shop",
        name="orders",
        annotations={
            PREFIX + "http-service": "orders",
            PREFIX + "http-port": "8080",
            PREFIX + "http-host": "orders.example.com",
            PREFIX + "activation-timeout": "1s",
        },
    )
    activator.apply_deployment(
        namespace="shop",
        name="events",
        annotations={
            PREFIX + "http-service": "events",
            PREFIX + "http-port": "8080",
            PREFIX + "activation-timeout": "1s",
            PREFIX + "cloudevents": "true",
            PREFIX + "cloudevents-types": "com.example.started,com.example.done",
        },
    )
    try:
        async with (
            helpers.pods(2) as (pod, decoy),
            helpers.proxy_serving(server.build_server(activator)) as port,
        ):
            activator.endpoints.update(ORDERS, [pod.address])
            activator.endpoints.update(EVENTS, [pod.address])
            yield Guarded(activator=activator, port=port, pod=pod, decoy=decoy, outbound=outbound)
    finally:
        await activator.close()
        await session.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=METHODS, target=TARGETS, host=HOSTS)
async def test_no_request_gets_a_500_or_reaches_anything_but_the_targets_endpoints(
    guarded: Guarded, method: str, target: str, host: str
) -> None:
    ports = {
        "{pod}": f"127.0.0.1:{guarded.pod.port}",
        "{decoy}": f"127.0.0.1:{guarded.decoy.port}",
        "{activator}": f"127.0.0.1:{guarded.port}",
        "{pod_port}": str(guarded.pod.port),
        "{decoy_port}": str(guarded.decoy.port),
    }
    for placeholder, value in ports.items():
        target = target.replace(placeholder, value)
        host = host.replace(placeholder, value)
    request = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    before = len(guarded.pod.seen)

    status, answer = await helpers.raw_exchange(guarded.port, request.encode("latin-1"))

    event(f"status {status}")
    assert status in {200, 400, 404}, answer
    routed = guarded.activator.routes.lookup(host) is not None
    origin_form = target.startswith("/") and method != "CONNECT"
    if status == 200:
        assert routed
        assert origin_form
        assert len(guarded.pod.seen) == before + 1
        path, _, query = target.partition("?")
        assert guarded.pod.seen[-1].raw_path == (f"{path}?{query}" if query else path)
    assert guarded.decoy.seen == []
    assert {(url.host, url.port) for url in guarded.outbound} <= {("127.0.0.1", guarded.pod.port)}
    assert all(url.raw_path_qs.startswith("/") for url in guarded.outbound)
    await helpers.eventually(lambda: guarded.activator.buffer.held == 0)


HEADER_VALUE = st.one_of(
    st.sampled_from(["1.0", "0.3", "", "com.example.started", "com.example.other", "/source", "id-1"]),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
)
CE_HEADERS = st.dictionaries(
    st.one_of(
        st.sampled_from(
            ["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-subject", "CE-Type"]
        ),
        st.text(alphabet=st.characters(min_codepoint=0x61, max_codepoint=0x7A), min_size=1, max_size=8).map(
            "ce-{}".format
        ),
    ),
    HEADER_VALUE,
    max_size=8,
)
CONTENT_TYPES = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "application/cloudevents+json",
            "application/cloudevents+json; charset=utf-8",
            "APPLICATION/CLOUDEVENTS+JSON",
            "application/cloudevents-batch+json",
            "text/plain",
        ]
    ),
    st.text(alphabet=PRINTABLE, max_size=30),
)
JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
ATTRIBUTES = st.dictionaries(
    st.sampled_from(["specversion", "id", "source", "type", "data", "datacontenttype", "time", "subject"]),
    st.one_of(HEADER_VALUE, JSON_VALUE),
    max_size=8,
)
BODIES = st.one_of(
    st.binary(max_size=200),
    ATTRIBUTES.map(lambda a: json.dumps(a).encode()),
    JSON_VALUE.map(lambda v: json.dumps(v).encode()),
)


TYPES = st.sampled_from(["com.example.started", "com.example.done", "com.example.other"])
VALID_BINARY = st.fixed_dictionaries(
    {
        "ce-specversion": st.just("1.0"),
        "ce-id": st.text(alphabet=PRINTABLE, min_size=1, max_size=12),
        "ce-source": st.sampled_from(["/billing", "urn:example:source"]),
        "ce-type": TYPES,
    }
)
VALID_ATTRIBUTES = st.fixed_dictionaries(
    {
        "specversion": st.just("1.0"),
        "id": st.text(alphabet=PRINTABLE, min_size=1, max_size=12),
        "source": st.sampled_from(["/billing", "urn:example:source"]),
        "type": TYPES,
    },
    optional={"data": JSON_VALUE, "datacontenttype": st.just("application/json")},
)
SMALL_CE_HEADERS = st.dictionaries(
    st.sampled_from(["ce-specversion", "ce-id", "ce-type", "ce-x"]), HEADER_VALUE, max_size=2
)


@st.composite
def cloudevent_requests(draw: st.DrawFn) -> tuple[dict[str, str], str | None, bytes]:
    """Valid binary or structured events, each perhaps damaged by a few random changes, or noise."""
    kind = draw(st.sampled_from(["binary", "structured", "noise"]))
    if kind == "binary":
        headers = {**draw(VALID_BINARY), **draw(SMALL_CE_HEADERS)}
        return headers, draw(st.sampled_from(["application/json", "text/plain", None])), draw(BODIES)
    if kind == "structured":
        attributes = {**draw(VALID_ATTRIBUTES), **draw(st.one_of(st.just({}), ATTRIBUTES))}
        return draw(SMALL_CE_HEADERS), "application/cloudevents+json", json.dumps(attributes).encode()
    return draw(CE_HEADERS), draw(CONTENT_TYPES), draw(BODIES)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=cloudevent_requests(), method=st.sampled_from(["POST", "PUT"]))
async def test_no_cloudevent_gets_a_500_or_reaches_anything_but_the_targets_endpoints(
    guarded: Guarded, request: tuple[dict[str, str], str | None, bytes], method: str
) -> None:
    headers, content_type, body = request
    lines = [
        f"{method} /events HTTP/1.1",
        "Host: events.shop",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    before = len(guarded.pod.seen)

    status, answer = await helpers.raw_exchange(
        guarded.port, "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body
    )

    event(f"status {status}")
    assert status in {200, 400, 404, 415}, answer
    if status == 200:
        assert len(guarded.pod.seen) == before + 1
    else:
        assert len(guarded.pod.seen) == before
    assert guarded.decoy.seen == []
    assert {(url.host, url.port) for url in guarded.outbound} <= {("127.0.0.1", guarded.pod.port)}
    await helpers.eventually(lambda: guarded.activator.buffer.held == 0)

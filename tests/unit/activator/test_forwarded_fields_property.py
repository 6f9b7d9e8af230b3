"""Whatever fields a client sends and an endpoint answers: the pooled path (a body read whole, the
activator's own head and parser) and the streamed path (aiohttp's client) forward the same field lines to
the endpoint, and relay the same ones back, in the same order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from autoscaler.activator import server
from autoscaler.policy.annotations import PREFIX
from tests.unit.activator import helpers
from tests.unit.activator.conftest import ORDERS

NAMES = [
    "X-A",
    "x-a",
    "X-B",
    "Keep-Alive",
    "Proxy-Authorization",
    "Proxy-Other",
    "TE",
    "Trailer",
    "Upgrade",
    "Expect",
    "X-Forwarded-For",
    "x-forwarded-for",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "Accept",
    "Cookie",
]
VALUE = st.one_of(
    st.sampled_from(["1", "a b", "gzip", "10.0.0.1", "10.0.0.1, 10.0.0.2", "https", "h.example"]),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12),
)
FIELD = st.tuples(st.sampled_from(NAMES), VALUE)
CONNECTION = st.lists(st.sampled_from(["X-A", "x-b", "keep-alive", "Cookie", "close-not"]), max_size=3)
FRAMING = {"content-length", "transfer-encoding"}
ANSWER_NAMES = ["X-R", "x-s", "Keep-Alive", "Proxy-Foo", "Cache-Control", "Vary", "TE"]
# What the activator or the pod's server adds on its own: not relayed fields.
OWN = {"content-length", "transfer-encoding", "connection", "date", "server"}


@dataclass
class Forwarding:
    port: int
    pod: helpers.Pod


@pytest.fixture
async def forwarding() -> AsyncIterator[Forwarding]:
    activator = server.Activator(registry=CollectorRegistry())
    activator.apply_deployment(
        namespace="shop",
        name="orders",
        annotations={PREFIX + "http-service": "orders", PREFIX + "http-port": "8080"},
    )
    try:
        async with (
            helpers.pods(1) as (pod,),
            helpers.proxy_serving(server.build_server(activator)) as port,
        ):
            activator.endpoints.update(ORDERS, [pod.address])
            yield Forwarding(port=port, pod=pod)
    finally:
        await activator.close()


def _head(fields: list[tuple[str, str]], connection: list[str], framing: str) -> bytes:
    lines = ["POST /x HTTP/1.1", "Host: orders.shop"]
    lines += [f"{name}: {value}" for name, value in fields]
    # "close": raw_exchange reads until the activator closes the connection.
    lines.append("Connection: " + ", ".join(["close", *connection]))
    lines.append(framing)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _forwarded(pod: helpers.Pod) -> list[tuple[str, bytes]]:
    """The fields the pod received but the framing, names lower-cased (their case carries no meaning)."""
    seen = pod.seen.pop()
    fields = [(name.decode().lower(), value) for name, value in seen.raw_headers]
    return [(name, value) for name, value in fields if name not in FRAMING]


def _relayed(answer: bytes) -> list[tuple[str, str]]:
    """The fields of an answer the client got, names lower-cased, but the ones the servers add."""
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    fields = [
        (name.strip().lower(), value.strip()) for name, _, value in (line.partition(":") for line in head)
    ]
    return [(name, value) for name, value in fields if name not in OWN]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fields=st.lists(FIELD, max_size=8),
    connection=CONNECTION,
    answered=st.dictionaries(st.sampled_from(ANSWER_NAMES), VALUE.filter(str.strip), max_size=4),
)
async def test_the_pooled_and_the_streamed_path_forward_and_relay_the_same_fields(
    forwarding: Forwarding, fields: list[tuple[str, str]], connection: list[str], answered: dict[str, str]
) -> None:
    forwarding.pod.response_headers = answered
    pooled = _head(fields, connection, "Content-Length: 3") + b"abc"
    streamed = _head(fields, connection, "Transfer-Encoding: chunked") + b"3\r\nabc\r\n0\r\n\r\n"

    first, pooled_answer = await helpers.raw_exchange(forwarding.port, pooled)
    via_pool = _forwarded(forwarding.pod)
    second, streamed_answer = await helpers.raw_exchange(forwarding.port, streamed)
    via_client = _forwarded(forwarding.pod)

    assert (first, second) == (200, 200)
    assert via_pool == via_client
    assert _relayed(pooled_answer) == _relayed(streamed_answer)
    relayed = {name for name, _ in _relayed(pooled_answer)}
    assert not relayed & {"keep-alive", "te"}
    assert not any(name.startswith("proxy-") for name in relayed)
    assert "x-pod" in relayed
    names = {name for name, _ in via_pool}
    assert not names & {"keep-alive", "te", "trailer", "upgrade", "expect", "connection"}
    assert not any(name.startswith("proxy-") for name in names)

"""Kubernetes API errors are translated once into the error tree; responses come back as raw JSON."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from autoscaler.errors import Conflict, Forbidden, KubeError, KubeUnavailable, TargetGone
from autoscaler.kube import calls
from tests.unit.kube.fakes import FakeResponse


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (404, TargetGone),
        (409, Conflict),
        (401, Forbidden),
        (403, Forbidden),
        (429, KubeUnavailable),
        (500, KubeUnavailable),
        (503, KubeUnavailable),
        (504, KubeUnavailable),
    ],
)
def test_each_http_status_maps_to_its_error_class(status: int, expected: type[KubeError]) -> None:
    error = calls.error_for_status(status, "boom", what="read it")
    assert type(error) is expected
    assert error.status == status
    assert str(error) == f"read it: HTTP {status}: boom"


def test_other_client_errors_are_plain_kube_errors_and_not_retriable() -> None:
    error = calls.error_for_status(422, "spec.replicas: Invalid value", what="patch")
    assert type(error) is KubeError
    assert error.status == 422
    assert not error.retriable


def test_conflict_and_unavailable_are_retriable_but_gone_and_forbidden_are_not() -> None:
    assert calls.error_for_status(409, "", what="w").retriable
    assert calls.error_for_status(503, "", what="w").retriable
    assert not calls.error_for_status(404, "", what="w").retriable
    assert not calls.error_for_status(403, "", what="w").retriable


def test_an_api_exception_keeps_the_message_of_the_status_body() -> None:
    exc = ApiException(status=404, reason="Not Found")
    exc.body = '{"kind":"Status","message":"deployments.apps \\"web\\" not found","code":404}'
    error = calls.translate(exc, what="read deployments/scale ns/web")
    assert isinstance(error, TargetGone)
    assert str(error) == 'read deployments/scale ns/web: HTTP 404: deployments.apps "web" not found'


@pytest.mark.parametrize(
    "exc",
    [
        aiohttp.ClientConnectionError("refused"),
        aiohttp.ServerDisconnectedError(),
        ConnectionResetError("reset"),
        TimeoutError(),
        aiohttp.ServerTimeoutError("read timeout"),
    ],
)
def test_connection_failures_and_timeouts_are_unavailable(exc: BaseException) -> None:
    error = calls.translate(exc, what="list deployments")
    assert isinstance(error, KubeUnavailable)
    assert error.retriable
    assert error.status is None


def test_anything_else_is_a_bug_not_an_api_error() -> None:
    with pytest.raises(TypeError):
        calls.translate(KeyError("x"), what="w")


async def test_call_json_returns_the_body_of_a_2xx_answer_and_releases_it() -> None:
    response = FakeResponse(200, {"spec": {"replicas": 3}})
    seen: dict[str, Any] = {}

    async def method(*args: Any, **kwargs: Any) -> FakeResponse:
        seen.update(kwargs, args=args)
        return response

    doc = await calls.call_json(method, "web", "ns", what="read")

    assert doc == {"spec": {"replicas": 3}}
    assert response.closed
    assert seen["args"] == ("web", "ns")
    assert seen["_preload_content"] is False
    assert seen["_request_timeout"] is calls.REQUEST_TIMEOUT


async def test_call_json_raises_the_translated_error_of_an_error_answer() -> None:
    async def method(**kwargs: Any) -> FakeResponse:
        return FakeResponse(409, {"kind": "Status", "message": "the object has been modified"})

    with pytest.raises(Conflict, match="the object has been modified"):
        await calls.call_json(method, what="patch")


async def test_call_json_translates_a_refused_connection() -> None:
    async def method(**kwargs: Any) -> FakeResponse:
        raise aiohttp.ClientOSError(111, "Connect call failed")

    with pytest.raises(KubeUnavailable, match="ClientOSError"):
        await calls.call_json(method, what="read")

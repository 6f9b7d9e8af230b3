"""Kubernetes API calls as raw JSON, with kubernetes-asyncio and aiohttp errors translated once, here.

404 → TargetGone, 409 → Conflict, 401/403 → Forbidden, 429/5xx/connection errors/timeouts → KubeUnavailable,
anything else → KubeError carrying the HTTP status.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from autoscaler.errors import Conflict, Forbidden, KubeError, KubeUnavailable, TargetGone

JSON = dict[str, Any]

# A bound kubernetes-asyncio API method, e.g. ``AppsV1Api(api).read_namespaced_deployment_scale``.
ApiMethod = Callable[..., Awaitable[Any]]

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)
MERGE_PATCH = "application/merge-patch+json"

_NETWORK_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)


def error_for_status(status: int, message: str, *, what: str) -> KubeError:
    """The KubeError for an HTTP error ``status`` answered to the request described by ``what``."""
    text = f"{what}: HTTP {status}: {message}" if message else f"{what}: HTTP {status}"
    if status == 404:
        return TargetGone(text, status=status)
    if status == 409:
        return Conflict(text, status=status)
    if status in (401, 403):
        return Forbidden(text, status=status)
    if status == 429 or status >= 500:
        return KubeUnavailable(text, status=status)
    return KubeError(text, status=status)


def status_message(body: bytes | str | None) -> str:
    """The ``message`` of a Kubernetes Status body, or the body itself (shortened) when it is not one."""
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        doc = json.loads(text)
    except ValueError:
        return text.strip()[:200]
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        return str(doc["message"])
    return text.strip()[:200]


def translate(exc: BaseException, *, what: str) -> KubeError:
    """Maps a kubernetes-asyncio, aiohttp or timeout error to the error tree; other errors are a bug.

    Raises TypeError for an exception that is not an API, network or timeout error.
    """
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, ApiException):
        status = exc.status if isinstance(exc.status, int) else 0
        if status == 0:
            return KubeError(f"{what}: {exc.reason}")
        return error_for_status(status, status_message(exc.body) or str(exc.reason or ""), what=what)
    if isinstance(exc, aiohttp.ClientResponseError):
        return error_for_status(exc.status, exc.message, what=what)
    if isinstance(exc, TimeoutError):
        return KubeUnavailable(f"{what}: timed out")
    if isinstance(exc, _NETWORK_ERRORS):
        return KubeUnavailable(f"{what}: {type(exc).__name__}: {exc}")
    raise TypeError(f"not a Kubernetes API error: {exc!r}")


async def call_json(method: ApiMethod, *args: Any, what: str, **kwargs: Any) -> JSON:
    """Calls a kubernetes-asyncio API method and returns the response body as JSON, unparsed into models.

    Raises the translated KubeError for an error status, a network failure or a timeout.
    """
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
    try:
        response = await method(*args, _preload_content=False, **kwargs)
        try:
            status: int = response.status
            body: bytes = await response.read()
        finally:
            response.release()
    except (ApiException, *_NETWORK_ERRORS) as exc:
        raise translate(exc, what=what) from exc
    if not 200 <= status < 300:
        raise error_for_status(status, status_message(body), what=what)
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise KubeError(f"{what}: response is not JSON: {body[:200]!r}", status=status) from exc
    if not isinstance(doc, dict):
        raise KubeError(f"{what}: response is not a JSON object", status=status)
    return doc


def dig(doc: object, *path: str) -> object:
    """``doc[path[0]][path[1]]...``, or None as soon as a level is missing or not an object."""
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def string_map(value: object) -> dict[str, str]:
    """A JSON object of strings (labels, annotations) as a dict; anything else as {}."""
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str)}


def integer(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default

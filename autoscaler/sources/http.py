"""JSON over HTTP GET for the RabbitMQ management API and NATS monitoring, behind a one-method Protocol.

Transport failures are translated here, once, into SourceUnavailable; what a status code means is the
caller's to say (a 404 is a missing vhost to RabbitMQ).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import yarl

from autoscaler.errors import SourceUnavailable


@dataclass(frozen=True, slots=True)
class JsonAnswer:
    """An HTTP answer: its status and its body parsed as JSON (None when it is not JSON)."""

    status: int
    body: object


class JsonGetter(Protocol):
    async def get(
        self, url: str, *, params: Mapping[str, str], auth: tuple[str, str] | None = None
    ) -> JsonAnswer:
        """GET ``url`` (path already percent-encoded); raises SourceUnavailable when no answer comes."""
        ...


class AiohttpGetter:
    """A JsonGetter on one aiohttp session (opened on first use, in the running loop)."""

    def __init__(self, *, timeout: float, ssl_context: ssl.SSLContext | None = None) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None

    async def get(
        self, url: str, *, params: Mapping[str, str], auth: tuple[str, str] | None = None
    ) -> JsonAnswer:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {} if auth is None else {"Authorization": aiohttp.encode_basic_auth(auth[0], auth[1])}
        target = yarl.URL(url, encoded=True).with_query(dict(params))
        try:
            async with self._session.get(target, headers=headers, ssl=self._ssl) as response:
                raw = await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise SourceUnavailable(f"GET {url}: {type(exc).__name__}: {exc}") from exc
        try:
            body: object = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return JsonAnswer(status, body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

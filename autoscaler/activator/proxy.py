"""Forwarding one request to one endpoint address and relaying the response: over the pool's own connections
when the body is absent or small, through aiohttp's client when it streams; bodies within size bounds.

Which fields cross, both ways, is ``fields``'. Only the given endpoint address is ever connected to.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import aiohttp
from aiohttp import hdrs
from multidict import CIMultiDictProxy

from autoscaler import errors
from autoscaler.activator import bodies, endpoints, fields, messages, pool

_CHUNK = bodies.CHUNK
_INLINE_BODY = 512 * 1024
# Responses up to this declared length are read whole and sent in one write (head and body together);
# request bodies up to it are read whole before they are forwarded.
_WHOLE_BODY = 64 * 1024
# Methods whose request carries a Content-Length even when the body is empty (as aiohttp's client sends them).
_BODY_METHODS = frozenset({hdrs.METH_POST, hdrs.METH_PUT, hdrs.METH_PATCH})


ConnectFailed = pool.ConnectFailed
BodyTooLarge = bodies.BodyTooLarge
BodyFailed = bodies.BodyFailed
BodyStalled = bodies.BodyStalled
BodyMalformed = bodies.BodyMalformed
read_body = bodies.read_body
UpstreamTimeout = pool.UpstreamTimeout


class BodyReader(Protocol):
    """A response body as it arrives (the pool's messages.Body, or aiohttp's StreamReader)."""

    async def readexactly(self, n: int) -> bytes: ...
    def iter_chunked(self, n: int) -> AsyncIterator[bytes]: ...


class Upstream(Protocol):
    """An endpoint's response once its head arrived (aiohttp's ClientResponse, or the pool's Answer)."""

    @property
    def status(self) -> int: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def headers(self) -> CIMultiDictProxy[str]: ...
    @property
    def content(self) -> BodyReader: ...
    @property
    def raw_headers(self) -> Sequence[tuple[bytes, bytes]]: ...
    @property
    def content_length(self) -> int | None: ...
    def release(self) -> Any: ...


class ResponseTooLarge(errors.UpstreamError):
    """The endpoint's response body is larger than the activator relays."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds of one forwarded exchange (bytes and seconds)."""

    max_request_body: int = 10 * 1024 * 1024
    max_response_body: int = 100 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout: float = 300.0
    # Longest pause between two chunks of a request body before the request is answered 408.
    body_idle_timeout: float = 30.0
    # Kept-alive connections open at once to one endpoint address; more requests wait for one to come free.
    max_connections_per_endpoint: int = 100


class Relayed(NamedTuple):
    """A response relayed to the client (``answer``: a whole Reply still to be written, or STREAMED, written);
    ``cut`` says why it was cut short, None when it is whole."""

    answer: messages.Answer
    status: int
    cut: str | None


def client_session(
    limits: Limits, *, trace_configs: list[aiohttp.TraceConfig] | None = None
) -> aiohttp.ClientSession:
    """The session the Forwarder uses by default: HTTP/1.1 keep-alive with at most
    ``max_connections_per_endpoint`` connections to one endpoint address (no bound over all: the activator's
    in-flight bound is that), no cookies, no decompression, no redirects followed, no proxy from the
    environment, no headers added beyond the client's.

    ``connect_timeout`` bounds opening a connection; waiting for a pooled one to come free is bounded by
    ``read_timeout``, as waiting for an answer is."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=0, limit_per_host=limits.max_connections_per_endpoint, use_dns_cache=False
        ),
        timeout=aiohttp.ClientTimeout(
            total=None,
            connect=max(limits.read_timeout, limits.connect_timeout),
            sock_connect=limits.connect_timeout,
            sock_read=limits.read_timeout,
        ),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=(hdrs.USER_AGENT, hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.CONTENT_TYPE),
        trust_env=False,
        requote_redirect_url=False,
        trace_configs=trace_configs,
    )


class Forwarder:
    """Sends requests to endpoint addresses: over the activator's own pooled connections (``pool``) when the
    request body is in memory or absent, which is the common case and the fast path; a body streamed from
    the client goes through an aiohttp client session (bounded per endpoint too)."""

    def __init__(self, *, limits: Limits, session: aiohttp.ClientSession | None = None) -> None:
        """``session`` (e.g. from ``client_session``) is used as given, for every request, and left open
        on ``close``."""
        self._limits = limits
        self._session = session
        self._owned = session is None
        self._pool = pool.Pool(
            limit=limits.max_connections_per_endpoint,
            connect_timeout=limits.connect_timeout,
            wait_timeout=max(limits.read_timeout, limits.connect_timeout),
        )

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = client_session(self._limits)
        return self._session

    async def close(self) -> None:
        self._pool.close()
        if self._owned and self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self, *, request: messages.Request, address: endpoints.Address, body: bytes | None
    ) -> Upstream:
        """Sends the request to ``address`` and returns its response once the headers arrived.

        ``body`` is the already-read body (see ``small_body``), or None to stream it from the client. The
        caller must ``release()`` the response. Raises ConnectFailed
        (nothing sent: safe to retry), UpstreamTimeout, BodyTooLarge, BodyStalled (the client paused its
        body too long), or UpstreamError.
        """
        pooled = body is not None or not request.body_exists
        if self._owned and pooled and request.method != hdrs.METH_HEAD:
            return await self._send_pooled(request, address, body)
        streamed: bodies.StreamedBody | None = None
        data: bytes | io.BytesIO | AsyncIterator[bytes] | None = body
        if body is not None and len(body) > _INLINE_BODY:
            data = io.BytesIO(body)
        elif body is None and request.body_exists:
            streamed = bodies.StreamedBody(
                request, self._limits.max_request_body, self._limits.body_idle_timeout
            )
            data = streamed.chunks()
        try:
            return await self._client().request(
                request.method,
                fields.upstream_url(address, request.raw_path),
                headers=fields.spelled_once(fields.request_headers(request)),
                data=data,
                allow_redirects=False,
                compress=False,
            )
        except BodyFailed:
            raise
        except aiohttp.ConnectionTimeoutError as slow:
            raise UpstreamTimeout(f"{address} did not accept a connection in time") from slow
        except aiohttp.ClientConnectorError as refused:
            raise ConnectFailed(f"cannot connect to {address}: {refused.os_error}") from refused
        except (TimeoutError, aiohttp.ServerTimeoutError) as timeout:
            if streamed is not None and streamed.stalled is not None:
                raise streamed.stalled from timeout
            raise UpstreamTimeout(f"{address} did not answer in time") from timeout
        except aiohttp.ClientError as exc:
            if streamed is not None and streamed.stalled is not None:
                raise streamed.stalled from exc
            if streamed is not None and streamed.too_large:
                raise BodyTooLarge(f"request body exceeds {self._limits.max_request_body} bytes") from exc
            raise errors.UpstreamError(f"{address} failed: {exc}") from exc

    async def small_body(self, request: messages.Request, body: bytes | None) -> bytes | None:
        """``body``, or the client's body read whole when it declares at most 64 KiB (so that it takes the
        fast path and can be sent again), or None: to be streamed. Raises BodyTooLarge, BodyStalled."""
        if body is not None or not self._owned or not request.body_exists:
            return body
        declared = request.content_length
        if declared is None or declared > _WHOLE_BODY:
            return None
        limit, idle = self._limits.max_request_body, self._limits.body_idle_timeout
        return await read_body(request, limit=limit, idle_timeout=idle)

    async def _send_pooled(
        self, request: messages.Request, address: endpoints.Address, body: bytes | None
    ) -> pool.Answer:
        sends_length = body or request.content_length is not None or request.method in _BODY_METHODS
        head = fields.pooled_head(
            request,
            len(body or b"") if sends_length else None,
            fields.authority(address),
            fields.forwarded_target(request.raw_path),
        )
        return await pool.exchange(
            self._pool,
            address=address,
            method=request.method,
            head=head,
            body=body or b"",
            read_timeout=self._limits.read_timeout,
        )

    async def relay(self, *, request: messages.Request, upstream: Upstream) -> Relayed:
        """Streams the endpoint's response to the client.

        Raises ResponseTooLarge, before anything was sent, when the declared length is over the bound. A
        body that fails or grows past it later cuts the client connection, so the client sees it
        incomplete, and the result says why.
        """
        limit = self._limits.max_response_body
        declared = upstream.content_length
        if declared is not None and declared > limit:
            raise ResponseTooLarge(f"response of {declared} bytes exceeds {limit} bytes")
        if declared is not None and declared <= _WHOLE_BODY and _has_body(request, upstream.status):
            return await self._relay_whole(request, upstream, declared)
        status = upstream.status
        await request.start(status, upstream.reason, _response_headers(upstream), length=declared)
        size = 0
        try:
            async for chunk in upstream.content.iter_chunked(_CHUNK):
                size += len(chunk)
                if size > limit:
                    request.abort()
                    return Relayed(messages.STREAMED, status, cut=f"response body exceeds {limit} bytes")
                await request.write(chunk)
        except (TimeoutError, aiohttp.ClientError, errors.UpstreamError) as exc:
            request.abort()
            return Relayed(messages.STREAMED, status, cut=f"response body failed: {exc!r}")
        await request.finish()
        return Relayed(messages.STREAMED, status, cut=None)

    async def _relay_whole(self, request: messages.Request, upstream: Upstream, declared: int) -> Relayed:
        """A small response of declared length, read whole first, so that its head and body go to the
        client in one write. A body that fails or comes out short cuts the client connection after the
        head, as when streaming."""
        status = upstream.status
        failed: BaseException | None = None
        try:
            body = await upstream.content.readexactly(declared)
        except (TimeoutError, aiohttp.ClientError, asyncio.IncompleteReadError, errors.UpstreamError) as exc:
            failed = exc
        if failed is not None:  # awaited outside the except block: see server.Activator._send
            await request.start(status, upstream.reason, _response_headers(upstream), length=declared)
            request.abort()
            return Relayed(messages.STREAMED, status, cut=f"response body failed: {failed!r}")
        if isinstance(upstream, pool.Answer):
            block = upstream.block  # rendered while its head was parsed
        else:
            block = fields.end_to_end_block(upstream.raw_headers, drop=fields.FRAMING)
        whole = messages.Reply(status, body, reason=upstream.reason, block=block)
        return Relayed(whole, status, cut=None)


def _response_headers(upstream: Upstream) -> list[tuple[str, str]]:
    """The endpoint's headers the client receives: the end-to-end ones (the framing is the activator's)."""
    return list(fields.end_to_end(upstream.headers).items())


def _has_body(request: messages.Request, status: int) -> bool:
    """Whether a response of ``status`` to ``request`` carries the body its Content-Length declares."""
    return request.method != hdrs.METH_HEAD and status >= 200 and status not in (204, 304)

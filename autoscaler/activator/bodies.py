"""A client's request body as it arrives: read whole within a bound, or streamed to the endpoint, paused for
no longer than the body idle timeout. Async generators, which mypyc does not compile: this module stays
interpreted when the rest of the request path is compiled (setup.py); ``proxy`` uses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from autoscaler import errors
from autoscaler.activator import messages

CHUNK = 64 * 1024


class BodyTooLarge(errors.ActivatorError):
    """The request body is larger than the activator accepts."""


class BodyFailed(errors.ActivatorError):
    """The client's request body did not arrive whole: the request is answered ``status`` and withdrawn."""

    status = 400


class BodyStalled(BodyFailed):
    """The client stopped sending its request body for longer than the body idle timeout."""

    status = 408


class BodyMalformed(BodyFailed):
    """The client's request body broke its framing (a chunk that is not one)."""


async def body_chunks(request: messages.Request, *, idle_timeout: float) -> AsyncIterator[bytes]:
    """The request body as it arrives; BodyStalled when no byte comes for ``idle_timeout`` seconds."""
    while True:
        try:
            async with asyncio.timeout(idle_timeout):
                chunk = await request.content.read(CHUNK)
        except TimeoutError:
            raise BodyStalled(f"request body paused for more than {idle_timeout:g}s") from None
        except messages.BodyMalformed as exc:
            raise BodyMalformed(f"malformed request body: {exc}") from None
        if not chunk:
            return
        yield chunk


async def read_body(request: messages.Request, *, limit: int, idle_timeout: float) -> bytes:
    """The whole request body; BodyTooLarge past ``limit`` bytes, BodyStalled on a pause."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in body_chunks(request, idle_timeout=idle_timeout):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class StreamedBody:
    """Streams the request body to the endpoint, counting bytes, refusing to go past the limit."""

    def __init__(self, request: messages.Request, limit: int, idle_timeout: float) -> None:
        self._request = request
        self._limit = limit
        self._idle_timeout = idle_timeout
        self.sent = 0
        self.too_large = False
        self.stalled: BodyFailed | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._chunks():
                yield chunk
        except BodyFailed as failed:
            self.stalled = failed
            raise

    async def _chunks(self) -> AsyncIterator[bytes]:
        async for chunk in body_chunks(self._request, idle_timeout=self._idle_timeout):
            self.sent += len(chunk)
            if self.sent > self._limit:
                self.too_large = True
                raise BodyTooLarge(f"request body exceeds {self._limit} bytes")
            yield chunk

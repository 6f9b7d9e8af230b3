"""The head of each request on a connection, gathered as httptools parses it, within the connection's bounds.

A request line over ``max_line_size`` bytes, a header field over ``max_field_size`` or more than
``max_headers`` fields raises TooLarge (answered 431); the fields the activator itself reads (Host,
Content-Length, Transfer-Encoding, Expect, Connection) are picked up on the way, so that the rest need not be
decoded. ``http1.Connection`` inherits these callbacks and makes the Request when the head is complete.
"""

from __future__ import annotations

from typing import NoReturn

from autoscaler.activator import guard


class TooLarge(Exception):
    """A request line or header field over its bound (answered 431)."""


class Malformed(Exception):
    """A request the parser accepted but HTTP refuses (answered 400)."""


class HeadParsing:
    """httptools' head callbacks and what they gather of the request being parsed."""

    _limits: guard.ConnectionLimits

    def _begin_heads(self) -> None:
        self._in_head = False
        self._url = bytearray()
        self._headers: list[tuple[bytes, bytes]] = []
        self._host: bytes | None = None
        self._hosts = 0
        self._length: bytes | None = None
        self._chunked = False
        self._expects = False
        self._connection_values: list[bytes] = []
        self._head_size = 0
        self._refusal: TooLarge | Malformed | None = None

    def _refuse_head(self, refusal: TooLarge | Malformed) -> NoReturn:
        """Stops the parser from a callback; ``data_received`` answers ``self._refusal``. Kept here, not read
        back from the parser's error: httptools hands a callback's exception on only as the ``__context__``
        of its own, and CPython replaces that with whatever exception is being handled when it is raised."""
        self._refusal = refusal
        raise refusal

    def on_message_begin(self) -> None:
        self._in_head = True
        self._url.clear()
        self._headers = []
        self._host = self._length = None
        self._hosts = 0
        self._chunked = self._expects = False
        self._connection_values = []
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_line_size:
            self._refuse_head(TooLarge("request line"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) + 2 > self._limits.max_field_size:
            self._refuse_head(TooLarge("header field"))
        if len(self._headers) >= self._limits.max_headers:
            self._refuse_head(TooLarge("header fields"))
        self._headers.append((name, value))
        # The fields the activator itself reads, picked up here so that the rest need not be decoded.
        lowered = name.lower()
        if lowered == b"host":
            self._host = value
            self._hosts += 1
        elif lowered == b"content-length":
            self._length = value
        elif lowered == b"transfer-encoding":
            self._chunked = True
        elif lowered == b"expect":
            self._expects = value.lower() == b"100-continue"
        elif lowered == b"connection":
            self._connection_values.append(value)

"""Which fields cross the activator, both ways, and the request target the endpoint receives.

Hop-by-hop fields (``messages.HOP_BY_HOP``, those the Connection fields list, ``Proxy-*``) are dropped both
ways; the endpoint receives X-Forwarded-For/Proto/Host; the request target is used as a path, never as a URL.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from aiohttp import hdrs
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from autoscaler.activator import endpoints, messages

HOP_BY_HOP = messages.HOP_BY_HOP


def end_to_end(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """The headers without hop-by-hop ones: the fixed set, ``Proxy-*``, and those Connection names."""
    listed = {
        token.strip().lower() for value in headers.getall(hdrs.CONNECTION, ()) for token in value.split(",")
    }
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in HOP_BY_HOP or lowered in listed or lowered.startswith("proxy-"):
            continue
        kept.add(name, value)
    return kept


_HOP_BY_HOP_BYTES = messages.HOP_BY_HOP_BYTES


def _connection_listed(raw: Sequence[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The lower-cased field names the Connection fields list (hop-by-hop too)."""
    return messages.listed_tokens([value for name, value in raw if name.lower() == b"connection"])


def end_to_end_block(raw: Sequence[tuple[bytes, bytes]], *, drop: frozenset[bytes] = frozenset()) -> bytes:
    """The end-to-end fields of ``raw`` (as ``end_to_end`` keeps them, and without ``drop``), rendered as
    header lines each ending in CRLF, names and values as they came."""
    listed = _connection_listed(raw)
    kept = [
        b"%s: %s\r\n" % (name, value)
        for name, value in raw
        if (lowered := name.lower()) not in _HOP_BY_HOP_BYTES
        and lowered not in listed
        and lowered not in drop
        and not lowered.startswith(b"proxy-")
    ]
    return b"".join(kept)


FRAMING = frozenset({b"content-length"})


def forwarded_fields(request: messages.Request, body_length: int | None) -> list[tuple[bytes, bytes]]:
    """The fields the endpoint receives, names and values as the client sent them: its end-to-end ones in
    order (Expect dropped too: the activator itself answered ``100 Continue``; a Content-Length given the
    value ``body_length``, or dropped when it is None), then X-Forwarded-For (the client's chain and its
    address), X-Forwarded-Proto and X-Forwarded-Host unless sent, then Content-Length if none was sent."""
    listed = request.connection_listed
    fields: list[tuple[bytes, bytes]] = []
    earlier: list[bytes] = []
    proto = forwarded_host = length_written = False
    for name, value in request.raw_headers:
        lowered = name.lower()
        if lowered in _HOP_BY_HOP_BYTES or lowered in listed or lowered.startswith(b"proxy-"):
            continue
        if lowered == b"expect":
            continue
        if lowered == b"x-forwarded-for":
            earlier.append(value)
            continue
        if lowered == b"content-length":
            if body_length is not None and not length_written:
                fields.append((name, b"%d" % body_length))
                length_written = True
            continue
        proto = proto or lowered == b"x-forwarded-proto"
        forwarded_host = forwarded_host or lowered == b"x-forwarded-host"
        fields.append((name, value))
    client = request.remote
    chain = b", ".join(earlier)
    if client:
        peer = client.encode("latin-1")
        fields.append((b"X-Forwarded-For", chain + b", " + peer if chain else peer))
    elif earlier:
        fields.append((b"X-Forwarded-For", chain))
    if not proto:
        fields.append((b"X-Forwarded-Proto", request.scheme.encode()))
    if not forwarded_host and request.host is not None:
        fields.append((b"X-Forwarded-Host", request.host.encode("latin-1")))
    if body_length is not None and not length_written:
        fields.append((b"Content-Length", b"%d" % body_length))
    return fields


def pooled_head(request: messages.Request, body_length: int | None, authority: str, target: str) -> bytes:
    """The head the endpoint receives over the pool: the request line, ``forwarded_fields`` and Host
    (``authority``) when the client sent none."""
    lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("latin-1"), target.encode("latin-1"))]
    lines.extend(b"%s: %s\r\n" % field for field in forwarded_fields(request, body_length))
    if request.host is None or b"host" in request.connection_listed:  # no Host forwarded
        lines.append(b"Host: %s\r\n" % authority.encode("latin-1"))
    lines.append(b"\r\n")
    return b"".join(lines)


def request_headers(request: messages.Request) -> CIMultiDict[str]:
    """``forwarded_fields`` for aiohttp's client, the client's Content-Length kept as sent (aiohttp adds Host
    from the URL when the client sent none)."""
    fields = forwarded_fields(request, request.content_length)
    return CIMultiDict((name.decode("latin-1"), value.decode("latin-1")) for name, value in fields)


def spelled_once(headers: CIMultiDict[str]) -> CIMultiDict[str]:
    """The fields with every repetition of a name spelled as its first occurrence: aiohttp's client merges
    a field into an earlier one of the same name spelled in another case (``X-A`` then ``x-a``: only the
    second is sent), which would drop a field line."""
    first: dict[str, str] = {}
    spelled: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        spelled.add(first.setdefault(name.lower(), name), value)
    return spelled


def forwarded_target(target: str) -> str:
    """The origin-form request target as the endpoint receives it: as sent, except that an empty query (a
    bare '?') is dropped. ValueError for a target that is not origin-form."""
    if not target.startswith("/"):
        raise ValueError(f"request target {target!r} is not origin-form")
    return target[:-1] if target.endswith("?") and target.count("?") == 1 else target


def upstream_url(address: endpoints.Address, target: str) -> URL:
    """The endpoint's URL for an origin-form request target: only the address decides where it goes.

    The target is kept as sent (no normalization), except that an empty query (a bare '?') is dropped.
    """
    path, _, query = forwarded_target(target).partition("?")
    return URL.build(scheme="http", authority=authority(address), path=path, query_string=query, encoded=True)


@functools.lru_cache(maxsize=4096)
def authority(address: endpoints.Address) -> str:
    """``ip:port`` as a URL writes it (IPv6 in brackets), computed once per address."""
    return URL.build(scheme="http", host=address.ip, port=address.port).raw_authority

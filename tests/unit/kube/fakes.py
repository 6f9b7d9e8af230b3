"""Tiny stand-ins for kubernetes-asyncio list methods and their raw aiohttp responses, for watch tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any


class FakeContent:
    """The streamed body of a watch response: scripted lines, then either end of stream or a hang."""

    def __init__(self, lines: Sequence[bytes | BaseException], *, hang: bool) -> None:
        self._lines = list(lines)
        self._hang = hang

    async def readline(self) -> bytes:
        if self._lines:
            line = self._lines.pop(0)
            if isinstance(line, BaseException):
                raise line
            return line
        if self._hang:
            await asyncio.Event().wait()
        return b""


class FakeResponse:
    def __init__(
        self,
        status: int,
        body: object = None,
        *,
        lines: Sequence[bytes | BaseException] = (),
        hang: bool = False,
    ) -> None:
        self.status = status
        self._body = json.dumps(body).encode() if body is not None else b""
        self.content = FakeContent(lines, hang=hang)
        self.closed = False

    async def read(self) -> bytes:
        return self._body

    def release(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True


def event(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def deployment(
    name: str, version: str, *, annotations: dict[str, str] | None = None, replicas: int = 1
) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": version,
            "generation": 1,
            "annotations": annotations or {},
        },
        "spec": {"replicas": replicas},
        "status": {},
    }


def listing(items: list[dict[str, Any]], version: str, *, page: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"resourceVersion": version}
    if page is not None:
        metadata["continue"] = page
    return {"kind": "List", "metadata": metadata, "items": items}


class FakeListMethod:
    """Answers list calls and watch calls from two scripts and records every call's keyword arguments.

    A script entry is a response, or an exception to raise instead. When the watch script runs out, the
    next watch hangs with no events (as a quiet watch would).
    """

    def __init__(
        self, lists: Sequence[FakeResponse | BaseException], watches: Sequence[FakeResponse | BaseException]
    ) -> None:
        self._lists = list(lists)
        self._watches = list(watches)
        self.list_calls: list[dict[str, Any]] = []
        self.watch_calls: list[dict[str, Any]] = []
        self.watching = asyncio.Event()

    async def __call__(self, **kwargs: Any) -> FakeResponse:
        if kwargs.get("watch"):
            self.watch_calls.append(kwargs)
            self.watching.set()
            script = self._watches
            answer: FakeResponse | BaseException = script.pop(0) if script else FakeResponse(200, hang=True)
        else:
            self.list_calls.append(kwargs)
            answer = self._lists.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

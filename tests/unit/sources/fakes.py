"""Tiny fakes behind the readers' I/O Protocols: scripted HTTP answers and scripted Redis replies."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from autoscaler.errors import SourceUnavailable
from autoscaler.sources.http import JsonAnswer


@dataclass
class Request:
    url: str
    params: dict[str, str]
    auth: tuple[str, str] | None


@dataclass
class FakeGetter:
    """Answers GETs with ``answer(url, params)``; an exception it returns is raised instead."""

    answer: Callable[[str, Mapping[str, str]], JsonAnswer | Exception]
    requests: list[Request] = field(default_factory=list)

    async def get(
        self, url: str, *, params: Mapping[str, str], auth: tuple[str, str] | None = None
    ) -> JsonAnswer:
        self.requests.append(Request(url, dict(params), auth))
        outcome = self.answer(url, params)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@dataclass
class FakePipe:
    """Replies to a round trip with ``reply(command)`` per command; ``down`` fails whole round trips."""

    reply: Callable[[tuple[str, ...]], object]
    down: int = 0
    round_trips: list[list[tuple[str, ...]]] = field(default_factory=list)
    closed: bool = False

    async def run(self, commands: Sequence[tuple[str, ...]]) -> list[object]:
        self.round_trips.append(list(commands))
        if self.down > 0:
            self.down -= 1
            raise SourceUnavailable("redis: connection refused")
        return [self.reply(c) for c in commands]

    async def close(self) -> None:
        self.closed = True

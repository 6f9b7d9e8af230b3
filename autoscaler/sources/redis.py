"""Backlog of Redis Streams consumer groups: one pipelined round trip per Redis server per read.

The pipeline holds one ``XINFO GROUPS`` per stream named by any query (every group of a stream comes in
one answer) and one ``XLEN`` per stream whose length is asked for. A group's ``lag`` (Redis >= 7) is None
when Redis cannot tell it (after XDEL inside the undelivered range, or an older server): the caller holds
on it, never reads it as 0. A stream that does not exist, a key that is not a stream and a group that does
not exist are errors of the queries that name them; a server that cannot be reached is every query's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from prometheus_client import CollectorRegistry

from autoscaler import connections
from autoscaler.errors import BacklogError, SourceError
from autoscaler.model import StreamBacklog as StreamBacklog
from autoscaler.observability.log_events import SourceLog
from autoscaler.sources import reading

log = structlog.get_logger(__name__)

SOURCE = "redis"
API = "pipeline"


@dataclass(frozen=True, slots=True)
class StreamQuery:
    stream: str
    group: str
    length: bool = False


StreamResult = StreamBacklog | SourceError


class CommandPipe(Protocol):
    async def run(self, commands: Sequence[tuple[str, ...]]) -> list[object]:
        """Sends every command in one round trip; each reply, or the server's error for that command
        (an Exception in the list). Raises SourceUnavailable when the round trip itself fails."""
        ...

    async def close(self) -> None: ...


class StreamReader(reading.BatchReader[StreamQuery, StreamResult]):
    """Reads the consumer groups of many streams of one Redis server in one pipelined round trip."""

    def __init__(
        self,
        url: str,
        *,
        password: Callable[[], str | None] | None = None,
        tls: connections.TLS | None = None,
        pipe: CommandPipe | None = None,
        settings: reading.ReaderSettings | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.url = url
        super().__init__(SOURCE, _without_password(url), settings=settings, registry=registry, log=log)
        if pipe is None:
            # redis-py is imported only by a controller that reads a Redis stream (it costs ~6 MiB).
            from autoscaler.sources.redis_pipe import RedisPipe

            pipe = RedisPipe(url, password=password, tls=tls, timeout=self.settings.request_timeout)
        self._pipe: CommandPipe = pipe

    async def close(self) -> None:
        await self._pipe.close()

    async def _read(self, wanted: tuple[StreamQuery, ...]) -> dict[StreamQuery, StreamResult]:
        streams = sorted({q.stream for q in wanted})
        lengths = sorted({q.stream for q in wanted if q.length})
        commands = [("XINFO GROUPS", s) for s in streams] + [("XLEN", s) for s in lengths]

        async def attempt() -> list[object]:
            self.metrics.count(API)
            return await self._pipe.run(commands)

        try:
            replies = await reading.with_retries(attempt, settings=self.settings, log=self._log)
        except SourceError as exc:
            self._log.debug(SourceLog.READ_FAILED, error=str(exc))
            return dict.fromkeys(wanted, exc)
        if len(replies) != len(commands):
            error = SourceError(f"redis {self._where}: {len(replies)} replies to {len(commands)} commands")
            return dict.fromkeys(wanted, error)
        groups = dict(zip(streams, replies[: len(streams)], strict=True))
        length_of = dict(zip(lengths, replies[len(streams) :], strict=True))
        result = {q: self._backlog(q, groups[q.stream], length_of.get(q.stream)) for q in wanted}
        return self._done(result, streams=len(streams))

    @property
    def _where(self) -> str:
        return _without_password(self.url)

    def _backlog(self, query: StreamQuery, groups: object, length: object) -> StreamResult:
        if isinstance(groups, Exception):
            return _stream_error(query, groups)
        if not isinstance(groups, list):
            return SourceError(f"stream {query.stream!r}: XINFO GROUPS answered {groups!r:.200}")
        info = next((g for g in groups if isinstance(g, dict) and g.get("name") == query.group), None)
        if info is None:
            return BacklogError(f"stream {query.stream!r} has no consumer group {query.group!r} (NOGROUP)")
        pending, lag = _count(info.get("pending")), _count(info.get("lag"))
        if pending is None:
            return BacklogError(f"stream {query.stream!r} group {query.group!r}: no pending count")
        if not query.length:
            return StreamBacklog(lag=lag, pending=pending)
        if isinstance(length, Exception):
            return _stream_error(query, length)
        entries = _count(length)
        if entries is None:
            return SourceError(f"stream {query.stream!r}: XLEN answered {length!r:.200}")
        return StreamBacklog(lag=lag, pending=pending, length=entries)


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _stream_error(query: StreamQuery, exc: Exception) -> SourceError:
    message = str(exc.args[0]) if exc.args else repr(exc)
    if "no such key" in message.lower():
        return BacklogError(f"stream {query.stream!r} does not exist")
    if message.startswith("WRONGTYPE"):
        return BacklogError(f"key {query.stream!r} is not a stream")
    if message.startswith("NOGROUP"):
        return BacklogError(f"stream {query.stream!r} has no consumer group {query.group!r} (NOGROUP)")
    return SourceError(f"stream {query.stream!r}: {message}")


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


async def read_stream(
    *, url: str, query: StreamQuery, password: Callable[[], str | None] | None = None
) -> StreamBacklog:
    """One group's backlog, for ``queue-autoscaler lag``; raises its error."""
    async with StreamReader(url, password=password) as reader:
        outcome = (await reader.read(queries=[query]))[query]
    if isinstance(outcome, SourceError):
        raise outcome
    return outcome

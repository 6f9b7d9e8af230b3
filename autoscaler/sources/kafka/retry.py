"""The reader's tunables and its retry policy: retriable leftovers are tried again within a read's budget."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import tenacity
from tenacity.stop import stop_base

from autoscaler.errors import KafkaError
from autoscaler.observability.log_events import KafkaLog


@dataclass(frozen=True, slots=True)
class ReaderSettings:
    """Tunables of an OffsetReader; times in seconds.

    ``retry_budget`` bounds the retrying of one read: no retry starts later than this after the read began
    (about half the default 1 s tick). ``missing_topic_recheck`` is how long "topic does not exist" is
    believed before asking again. A refused connection (credentials, certificate) is tried again after
    ``refused_backoff``, doubling up to ``refused_backoff_max``, or at once when its files change.
    """

    request_timeout: float = 2.0
    retry_budget: float = 0.5
    retry_attempts: int = 3
    retry_backoff: float = 0.05
    metadata_max_age: float = 60.0
    missing_topic_recheck: float = 5.0
    read_committed: bool = False
    client_id: str = "queue-autoscaler"
    refused_backoff: float = 2.0
    refused_backoff_max: float = 60.0


def now() -> float:
    return asyncio.get_running_loop().time()


class _Unsettled(Exception):
    """Some groups or partitions still have a retriable error: try again within the budget."""


class _StopAt(stop_base):
    """Stops before a retry whose backoff would end past the read's deadline."""

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return now() + retry_state.upcoming_sleep >= self._deadline


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, _Unsettled) or (isinstance(exc, KafkaError) and exc.retriable)


async def until_settled(
    attempt: Callable[[], Awaitable[bool]], deadline: float, *, settings: ReaderSettings, log: Any
) -> None:
    """Repeats ``attempt`` while it reports retriable leftovers (returns False), within the retry policy.

    Retriable KafkaErrors raised by ``attempt`` are retried too and re-raised once the policy gives up.
    """

    def log_retry(retry_state: tenacity.RetryCallState) -> None:
        outcome = retry_state.outcome
        exc = None if outcome is None else outcome.exception()
        log.debug(
            KafkaLog.REQUEST_RETRIED,
            attempt=retry_state.attempt_number,
            sleep=retry_state.upcoming_sleep,
            error=repr(exc),
        )

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(settings.retry_attempts) | _StopAt(deadline),
        wait=tenacity.wait_exponential(multiplier=settings.retry_backoff, max=settings.retry_budget),
        retry=tenacity.retry_if_exception(_retriable),
        before_sleep=log_retry,
        reraise=True,
    )
    try:
        async for trial in retrying:
            with trial:
                if not await attempt():
                    raise _Unsettled
    except _Unsettled:
        return

"""The delivery schedule and the offset-commit bookkeeping of the dispatcher. PURE: no I/O, no clock.

Retry (Knative's Kafka broker, checked against eventing-kafka-broker): a response is a failure when its
status is >= 300 or there is none (a network error or a timeout); only 5xx, 404, 408, 409, 429 and network
errors are retried; 400, 401, 403, other 4xx and 3xx go straight to the dead-letter sink. Retry ``n``
(1-based) waits ``delay × n`` (linear) or ``delay × 2^n`` (exponential), as the Kafka broker computes it;
Knative's core Go dispatcher counts from 0 instead (its first linear retry is immediate).

Commits (at-least-once): an offset is committable only when every record fetched below it has finished
(delivered, dead-lettered, or filtered out). Offsets need not be contiguous (transaction markers and
compaction leave gaps): what counts is the records fetched, so a gap never stalls a partition. A record
whose dead-letter send failed is not finished; unlike the Kafka broker, which commits and loses it, we
keep it (and everything above it) uncommitted and keep trying the sink.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

BACKOFF_POLICIES = ("linear", "exponential")
# Defaults of Knative's Kafka broker class: exponential from 200 ms; 600 s per request.
DEFAULT_BACKOFF_DELAY = 0.2
DEFAULT_TIMEOUT = 600.0
_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
RETRIED_STATUSES = frozenset({404, 408, 409, 429})
DEAD_LETTER_MAX_WAIT = 30.0  # seconds between sends to a dead-letter sink that keeps failing


@dataclass(frozen=True, slots=True)
class Ref:
    """A KReference: the object a destination points at (namespace defaults to the Trigger's)."""

    api_version: str
    kind: str
    name: str
    namespace: str


@dataclass(frozen=True, slots=True)
class Destination:
    """A Knative Destination: a ``ref``, a ``uri``, or both (the uri is then relative to the ref's URL)."""

    ref: Ref | None
    uri: str | None


@dataclass(frozen=True, slots=True)
class Delivery:
    """``spec.delivery``: ``retry`` retries after the first attempt; durations in seconds."""

    retry: int = 0
    backoff_policy: Literal["linear", "exponential"] = "exponential"
    backoff_delay: float = DEFAULT_BACKOFF_DELAY
    timeout: float = DEFAULT_TIMEOUT
    dead_letter_sink: Destination | None = None


def inherited(trigger: object, broker: object) -> object:
    """A Trigger's ``spec.delivery`` with every field it leaves out taken from its Broker's ``spec.delivery``
    (Knative's Kafka broker merges the two the same way, the Trigger's fields winning; it takes
    ``backoffPolicy`` from the Trigger alone, its default when unset, where this takes the Broker's).
    Anything that is not a mapping is returned as it is, for the Trigger's parser to report."""
    if not isinstance(broker, Mapping) or not broker:
        return trigger
    if trigger is None:
        return dict(broker)
    if not isinstance(trigger, Mapping):
        return trigger
    return {**broker, **trigger}


def parse_duration(text: str) -> float:
    """An ISO 8601 duration (``PT0.2S``, ``PT1M30S``, ``P1D``) in seconds; ValueError otherwise."""
    found = _DURATION.match(text) if isinstance(text, str) else None
    if found is None or text in ("P", "PT") or text.endswith("T"):
        raise ValueError(f"{text!r} is not an ISO 8601 duration such as PT0.2S, PT30S or PT1M")
    scale = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
    seconds = sum(float(v) * scale[k] for k, v in found.groupdict().items() if v is not None)
    if not math.isfinite(seconds):
        raise ValueError(f"{text!r} is too long")
    return seconds


def succeeded(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


def retriable(status: int | None) -> bool:
    """Whether a failed attempt may be retried; ``None`` is a network error or a timeout."""
    return status is None or status >= 500 or status in RETRIED_STATUSES


def backoff(delivery: Delivery, retry: int) -> float:
    """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
    if retry < 1:
        raise ValueError(f"retry {retry}: retries are numbered from 1")
    if delivery.backoff_policy == "linear":
        return delivery.backoff_delay * retry
    return float(delivery.backoff_delay * 2**retry)


def schedule(delivery: Delivery) -> tuple[float, ...]:
    """The waits before each of the ``retry`` retries, in order."""
    return tuple(backoff(delivery, n) for n in range(1, delivery.retry + 1))


def dead_letter_wait(delivery: Delivery, failures: int) -> float:
    """Seconds before sending again to a dead-letter sink that failed ``failures`` times (>= 1): the
    delivery's own schedule while it lasts, then exponential from its delay, capped."""
    if failures <= delivery.retry:
        return min(backoff(delivery, failures), DEAD_LETTER_MAX_WAIT)
    return min(max(delivery.backoff_delay, 0.05) * float(2 ** min(failures, 20)), DEAD_LETTER_MAX_WAIT)


@dataclass(frozen=True, slots=True)
class Progress:
    """One partition's records in flight. ``pending``: fetched and not finished, ascending; ``high``: one
    past the highest offset fetched (None before the first record)."""

    pending: tuple[int, ...] = ()
    high: int | None = None

    def fetched(self, offset: int) -> Progress:
        if self.high is not None and offset < self.high:
            raise ValueError(f"offset {offset} fetched after {self.high - 1}: records arrive in order")
        return Progress((*self.pending, offset), offset + 1)

    def finished(self, offset: int) -> Progress:
        if offset not in self.pending:
            raise ValueError(f"offset {offset} is not in flight")
        return Progress(tuple(o for o in self.pending if o != offset), self.high)

    @property
    def committable(self) -> int | None:
        """The offset to commit (the next record to read after a restart), None when nothing was fetched."""
        return self.pending[0] if self.pending else self.high

    @property
    def in_flight(self) -> int:
        return len(self.pending)

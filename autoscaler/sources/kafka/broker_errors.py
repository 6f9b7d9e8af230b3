"""Kafka error codes and client exceptions -> the ``autoscaler.errors`` tree; the one place this happens."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import errors as aiokafka_errors

from autoscaler.errors import KafkaError, KafkaUnavailable


@dataclass(frozen=True, slots=True)
class BrokerError:
    """One error code of a broker's answer: its name and how the reader treats it."""

    code: int
    name: str
    retriable: bool
    stale_metadata: bool

    @property
    def coordinator_moved(self) -> bool:
        return self.code in (15, 16)  # COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR


# Codes newer than aiokafka's table: (name, retriable, metadata is stale).
_NEWER_CODES: dict[int, tuple[str, bool, bool]] = {
    6: ("NOT_LEADER_OR_FOLLOWER", True, True),
    74: ("FENCED_LEADER_EPOCH", True, True),
    75: ("UNKNOWN_LEADER_EPOCH", True, True),
    78: ("OFFSET_NOT_AVAILABLE", True, True),
    88: ("UNSTABLE_OFFSET_COMMIT", True, False),
    100: ("UNKNOWN_TOPIC_ID", True, True),
}

TOPIC_MISSING = BrokerError(3, "does not exist", retriable=False, stale_metadata=False)
GROUP_ID_NOT_FOUND = 69


def broker_error(code: int) -> BrokerError:
    if code in _NEWER_CODES:
        name, retriable, stale = _NEWER_CODES[code]
        return BrokerError(code, name, retriable, stale)
    kind = aiokafka_errors.for_code(code)
    if kind is aiokafka_errors.UnknownError:
        return BrokerError(code, f"error code {code}", retriable=False, stale_metadata=False)
    return BrokerError(code, str(kind.message), bool(kind.retriable), bool(kind.invalid_metadata))


def translate(exc: BaseException, what: str) -> KafkaError:
    """aiokafka, socket and timeout errors -> the errors.py tree."""
    if isinstance(exc, aiokafka_errors.IncompatibleBrokerVersion | NotImplementedError):
        return KafkaError(f"{what}: the broker lacks the API version needed (Kafka >= 3.0): {exc}")
    unreachable = (aiokafka_errors.KafkaTimeoutError, aiokafka_errors.KafkaUnavailableError)
    if isinstance(exc, aiokafka_errors.KafkaError) and not (exc.retriable or isinstance(exc, unreachable)):
        return KafkaError(f"{what}: {exc!r}")
    return KafkaUnavailable(f"{what}: {exc!r}")


TRANSLATED = (aiokafka_errors.KafkaError, NotImplementedError, OSError, TimeoutError)
"""The exceptions ``translate`` takes: anything else is a bug and propagates."""

"""CloudEvents 1.0 checks for HTTP requests (binary and structured mode), on the CloudEvents SDK.

A request is only checked, never rewritten: a valid event is forwarded byte for byte.
"""

from __future__ import annotations

import binascii
import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.exceptions import CloudEventValidationError
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from multidict import CIMultiDictProxy

from autoscaler.activator import routing

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
SPECVERSION = "1.0"
BINARY_REQUIRED = ("ce-specversion", "ce-id", "ce-source", "ce-type")
_REQUIRED = ("specversion", "id", "source", "type")
_FORMAT = JSONFormat()


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a request is not an acceptable CloudEvent: the HTTP status to answer and a plain reason."""

    status: int
    reason: str


class _MissingAttribute(ValueError):
    pass


def media_type(headers: CIMultiDictProxy[str]) -> str:
    """The request's Content-Type without parameters, lowercase ('' when absent)."""
    return headers.get("Content-Type", "").partition(";")[0].strip().lower()


def is_structured(headers: CIMultiDictProxy[str]) -> bool:
    """Whether the request claims structured (or batch) mode, so its body must be read to check it."""
    return media_type(headers).startswith("application/cloudevents")


def check_binary(headers: CIMultiDictProxy[str], accepted: routing.CloudEventsFilter) -> Rejection | None:
    """Checks a binary-mode event from its headers alone (the body is data, forwarded unread)."""
    missing = [name for name in BINARY_REQUIRED if name not in headers]
    if missing:
        return Rejection(
            400,
            "not a valid CloudEvent: binary mode needs headers "
            + ", ".join(BINARY_REQUIRED)
            + f"; missing {', '.join(missing)} (or send Content-Type: {STRUCTURED} for structured mode)",
        )
    attribute_headers: dict[str, str] = {}
    for name in headers:
        lowered = name.lower()
        if not lowered.startswith(ce_http.CE_PREFIX) or lowered in attribute_headers:
            continue
        values = headers.getall(name)
        if len(values) > 1:
            return Rejection(400, f"not a valid CloudEvent: header {lowered} appears {len(values)} times")
        attribute_headers[lowered] = values[0]
    if "Content-Type" in headers:
        attribute_headers["content-type"] = headers["Content-Type"]
    try:
        event = ce_http.from_binary(
            ce_http.HTTPMessage(headers=attribute_headers, body=b""), _FORMAT, _strict_v1
        )
    except CloudEventValidationError as exc:
        return Rejection(400, "not a valid CloudEvent: " + _explain(exc))
    except (ValueError, TypeError, OverflowError) as exc:
        if "ce-time" in attribute_headers:
            return Rejection(400, f"not a valid CloudEvent: header ce-time is not an RFC 3339 time: {exc}")
        return Rejection(400, f"not a valid CloudEvent: {exc}")
    return _check_type(event, accepted)


def check_structured(
    body: bytes, headers: CIMultiDictProxy[str], accepted: routing.CloudEventsFilter
) -> Rejection | None:
    """Checks a structured-mode event: the whole event is the JSON body."""
    kind = media_type(headers)
    if kind == BATCH:
        return Rejection(400, f"batch mode not supported: send one event per request, not {BATCH}")
    if kind != STRUCTURED:
        return Rejection(400, f"structured mode format {kind!r} not supported: only {STRUCTURED}")
    duplicated = _duplicate_attributes(body)
    if duplicated is not None:
        return duplicated
    try:
        event = ce_http.from_structured(ce_http.HTTPMessage(headers={}, body=body), _FORMAT, _strict_v1)
    except CloudEventValidationError as exc:
        return Rejection(400, "not a valid CloudEvent: " + _explain(exc))
    except _MissingAttribute as exc:
        return Rejection(400, f"not a valid CloudEvent: {exc}")
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        return Rejection(400, "not a valid CloudEvent: " + _diagnose_structured(body, exc))
    return _check_type(event, accepted)


class _Members(dict[str, Any]):
    """A JSON object, remembering the names it had more than once."""

    repeated: tuple[str, ...] = ()


def _members(pairs: list[tuple[str, Any]]) -> _Members:
    found = _Members(pairs)
    if len(found) != len(pairs):
        counts = Counter(name for name, _ in pairs)
        found.repeated = tuple(sorted(name for name, count in counts.items() if count > 1))
    return found


def _duplicate_attributes(body: bytes) -> Rejection | None:
    """Refuses a body whose top-level object names an attribute twice (which one would count is up to the
    parser: a type filter must never see a different type than the subscriber), and JSON nested deeper
    than the parser takes. Other JSON problems are left to the SDK's diagnosis."""
    try:
        doc = json.loads(body, object_pairs_hook=_members)
    except RecursionError:
        return Rejection(400, "not a valid CloudEvent: structured-mode body is nested too deeply to parse")
    except (ValueError, TypeError):
        return None
    if isinstance(doc, _Members) and doc.repeated:
        return Rejection(
            400,
            "not a valid CloudEvent: attributes given more than once: " + ", ".join(map(repr, doc.repeated)),
        )
    return None


def _strict_v1(attributes: dict[str, Any], data: dict[str, Any] | str | bytes | None) -> BaseCloudEvent:
    """Builds a 1.0 event, refusing the defaults the SDK would fill in for a missing id or specversion."""
    missing = [name for name in _REQUIRED if name not in attributes]
    if missing:
        raise _MissingAttribute(
            "missing required attribute" + ("s " if len(missing) > 1 else " ") + ", ".join(map(repr, missing))
        )
    return CloudEvent(attributes, data)


def _check_type(event: BaseCloudEvent, accepted: routing.CloudEventsFilter) -> Rejection | None:
    event_type = event.get_type()
    if accepted.accepts(event_type):
        return None
    listed = ", ".join(sorted(accepted.types or ()))
    return Rejection(404, f"CloudEvent type {event_type!r} is not accepted here (accepted types: {listed})")


def _explain(exc: CloudEventValidationError) -> str:
    return "; ".join(
        f"{attribute}: {', '.join(str(problem) for problem in problems)}"
        for attribute, problems in sorted(exc.errors.items())
    )


def _diagnose_structured(body: bytes, exc: Exception) -> str:
    """Names what the SDK tripped on; runs only for a body already known to be invalid."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as decode_error:
        return f"structured-mode body is not UTF-8: {decode_error}"
    except json.JSONDecodeError as json_error:
        return f"structured-mode body is not JSON: {json_error}"
    if not isinstance(doc, dict):
        return f"structured-mode body must be a JSON object, not {type(doc).__name__}"
    time = doc.get("time")
    if "time" in doc and not _looks_like_time(time):
        return f"attribute 'time' is not an RFC 3339 time: {time!r}"
    if "data_base64" in doc and isinstance(exc, binascii.Error | TypeError):
        return f"data_base64 is not valid base64: {exc}"
    return str(exc) or type(exc).__name__


def _looks_like_time(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True

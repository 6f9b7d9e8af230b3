"""CloudEvents between HTTP and Kafka records, on the CloudEvents SDK. No I/O.

Records are in Kafka binary content mode, as Knative's Kafka broker writes them: every attribute a header
``ce_<name>`` (canonical string form), ``datacontenttype`` the ``content-type`` header, the data the value,
the key the ``partitionkey`` extension (absent: no key). An HTTP event arrives in binary or structured mode
and is validated by the SDK like the activator validates it (a 1.0 event, required attributes present, no
defaults filled in, ``time`` an RFC 3339 time); it is delivered in binary mode. Batch mode is refused.

``knativebrokerttl`` guards reply loops: set to ``DEFAULT_TTL`` (255, Knative's default) on ingress when
absent, and decremented on every reply the dispatcher sends back to the broker.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.exceptions import CloudEventValidationError
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
TTL = "knativebrokerttl"
PARTITION_KEY = "partitionkey"
DEFAULT_TTL = 255
BINARY_REQUIRED = ("ce-specversion", "ce-id", "ce-source", "ce-type")
_REQUIRED = ("specversion", "id", "source", "type")
_FORMAT = JSONFormat()


class InvalidEvent(ValueError):
    """The request is not an acceptable CloudEvent; the message says why (answered with 400)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One event as a Kafka record in binary content mode."""

    headers: tuple[tuple[str, bytes], ...]
    key: bytes | None
    value: bytes

    def attributes(self) -> dict[str, str]:
        """Context attributes and extensions, canonical strings (what filters compare)."""
        found: dict[str, str] = {}
        for name, raw in self.headers:
            if name.startswith("ce_"):
                found[name[3:]] = raw.decode("utf-8", "replace")
            elif name == "content-type":
                found["datacontenttype"] = raw.decode("utf-8", "replace")
        return found

    def with_attribute(self, name: str, value: str) -> Record:
        header = f"ce_{name}"
        kept = tuple((k, v) for k, v in self.headers if k != header)
        return replace(self, headers=(*kept, (header, value.encode())))

    def ttl(self) -> int | None:
        raw = self.attributes().get(TTL)
        try:
            return None if raw is None else int(raw)
        except ValueError:
            return None


def _canonical(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    return str(value)


def media_type(headers: Mapping[str, str]) -> str:
    return headers.get("Content-Type", "").partition(";")[0].strip().lower()


def from_http(headers: Mapping[str, str], body: bytes) -> Record:
    """An HTTP request's event (binary or structured mode) -> a record; InvalidEvent saying why not."""
    kind = media_type(headers)
    if kind == BATCH:
        raise InvalidEvent(f"batch mode is not supported: send one event per request, not {BATCH}")
    if kind.startswith("application/cloudevents"):
        if kind != STRUCTURED:
            raise InvalidEvent(f"structured mode format {kind!r} is not supported: only {STRUCTURED}")
        return _from_structured(body)
    return _from_binary(headers, body)


def _from_binary(headers: Mapping[str, str], body: bytes) -> Record:
    lowered = {name.lower(): value for name, value in headers.items()}
    missing = [name for name in BINARY_REQUIRED if name not in lowered]
    if missing:
        raise InvalidEvent(
            "not a valid CloudEvent: binary mode needs headers "
            + ", ".join(BINARY_REQUIRED)
            + f"; missing {', '.join(missing)} (or send Content-Type: {STRUCTURED} for structured mode)"
        )
    attribute_headers = {name: value for name, value in lowered.items() if name.startswith("ce-")}
    if "content-type" in lowered:
        attribute_headers["content-type"] = lowered["content-type"]
    try:
        event = ce_http.from_binary(
            ce_http.HTTPMessage(headers=attribute_headers, body=b""), _FORMAT, _strict_v1
        )
    except CloudEventValidationError as exc:
        raise InvalidEvent("not a valid CloudEvent: " + _explain(exc)) from None
    except (ValueError, TypeError, OverflowError) as exc:
        if "ce-time" in attribute_headers:
            raise InvalidEvent(
                f"not a valid CloudEvent: header ce-time is not an RFC 3339 time: {exc}"
            ) from None
        raise InvalidEvent(f"not a valid CloudEvent: {exc}") from None
    record_headers = [
        (f"ce_{name[3:]}" if name.startswith("ce-") else name, value.encode())
        for name, value in attribute_headers.items()
    ]
    return _finish(event, record_headers, body)


def _from_structured(body: bytes) -> Record:
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"not a valid CloudEvent: structured-mode body is not UTF-8 JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidEvent(
            f"not a valid CloudEvent: the body must be a JSON object, not {type(doc).__name__}"
        )
    try:
        event = ce_http.from_structured(ce_http.HTTPMessage(headers={}, body=body), _FORMAT, _strict_v1)
    except CloudEventValidationError as exc:
        raise InvalidEvent("not a valid CloudEvent: " + _explain(exc)) from None
    except InvalidEvent:
        raise
    except (ValueError, TypeError, AttributeError, OverflowError, binascii.Error) as exc:
        if "time" in doc:
            raise InvalidEvent(f"not a valid CloudEvent: attribute 'time' {doc['time']!r}: {exc}") from None
        raise InvalidEvent(f"not a valid CloudEvent: {exc}") from None
    record_headers: list[tuple[str, bytes]] = []
    for name, value in doc.items():
        if name in ("data", "data_base64") or value is None:
            continue
        if name == "datacontenttype":
            record_headers.append(("content-type", str(value).encode()))
        else:
            record_headers.append((f"ce_{name}", _canonical(value).encode()))
    if "data_base64" in doc:
        try:
            value_bytes = base64.b64decode(str(doc["data_base64"]), validate=True)
        except binascii.Error as exc:
            raise InvalidEvent(f"not a valid CloudEvent: data_base64 is not valid base64: {exc}") from None
    elif "data" not in doc or doc["data"] is None:
        value_bytes = b""
    elif isinstance(doc["data"], str) and not _is_json(doc.get("datacontenttype")):
        value_bytes = doc["data"].encode()
    else:
        value_bytes = json.dumps(doc["data"], separators=(",", ":")).encode()
        if "datacontenttype" not in doc:
            record_headers.append(("content-type", b"application/json"))
    return _finish(event, record_headers, value_bytes)


def _is_json(content_type: object) -> bool:
    if not isinstance(content_type, str):
        return False
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _finish(event: BaseCloudEvent, headers: list[tuple[str, bytes]], value: bytes) -> Record:
    names = {k for k, _ in headers}
    ttl_header = f"ce_{TTL}"
    if ttl_header in names:
        raw = dict(headers)[ttl_header].decode()
        if not raw.lstrip("-").isdigit():
            raise InvalidEvent(f"not a valid CloudEvent: {TTL} {raw!r} must be an integer")
        if int(raw) <= 0:
            raise InvalidEvent(f"{TTL} is {raw}: the event looped through the broker too often, dropped")
    else:
        headers.append((ttl_header, str(DEFAULT_TTL).encode()))
    key = event.get_extension(PARTITION_KEY)
    return Record(tuple(headers), None if key is None else _canonical(key).encode(), value)


def _strict_v1(attributes: dict[str, Any], data: dict[str, Any] | str | bytes | None) -> BaseCloudEvent:
    """Builds a 1.0 event, refusing the defaults the SDK would fill in for a missing id or specversion."""
    missing = [name for name in _REQUIRED if name not in attributes]
    if missing:
        raise InvalidEvent(
            "not a valid CloudEvent: missing required attribute"
            + ("s " if len(missing) > 1 else " ")
            + ", ".join(map(repr, missing))
        )
    return CloudEvent(attributes, data)


def _explain(exc: CloudEventValidationError) -> str:
    return "; ".join(
        f"{attribute}: {', '.join(str(problem) for problem in problems)}"
        for attribute, problems in sorted(exc.errors.items())
    )


def to_http(record: Record) -> tuple[dict[str, str], bytes]:
    """A record -> HTTP binary-mode headers and body (what the dispatcher sends)."""
    headers: dict[str, str] = {}
    for name, raw in record.headers:
        if name.startswith("ce_"):
            headers[f"ce-{name[3:]}"] = raw.decode("utf-8", "replace")
        elif name == "content-type":
            headers["Content-Type"] = raw.decode("utf-8", "replace")
    return headers, record.value


def from_kafka(
    headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...], key: bytes | None, value: bytes | None
) -> Record | None:
    """A consumed Kafka record -> Record, or None when it is not a binary-mode CloudEvent (Knative's
    Kafka broker discards and commits such records)."""
    kept = tuple((k, v) for k, v in headers if k.startswith("ce_") or k == "content-type")
    names = {k for k, _ in kept}
    if not {"ce_specversion", "ce_id", "ce_source", "ce_type"} <= names:
        return None
    return Record(kept, key, value or b"")

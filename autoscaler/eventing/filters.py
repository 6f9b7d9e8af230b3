"""Triggers, parsed and validated, and the filter that decides whether a Trigger takes an event. PURE.

This module imports only ``model`` and ``errors``: the dispatcher, ``queue-autoscaler match`` and the
reconciler run exactly this code. Facts about Knative below are from knative/eventing and
eventing-kafka-broker (see the project's reference notes); where we differ it is said, with why.

- ``spec.broker`` is required (Knative: required, immutable). ``spec.brokerRef`` (cross-namespace) is not
  implemented and is refused with a reason instead of being ignored.
- Attribute names are CloudEvents names, ``^[a-z][a-z0-9]*$`` (Knative's trigger validation).
- ``filter.attributes``: an AND of exact, case-sensitive comparisons; extensions are attributes like any
  other. A value of ``""`` means "present, with any value": the CloudEvents Subscriptions spec's rule.
  Knative's core Go filter also wants the value non-empty and the Kafka broker drops ``""`` entries (so
  an absent attribute matches, eventing#4847); we follow the spec: what a user writing ``""`` means.
- ``filters`` (Subscriptions API): a list ANDed; each entry has exactly one dialect of ``exact``, ``prefix``,
  ``suffix`` (one attribute each, case-sensitive, a missing attribute fails), ``all`` (AND), ``any`` (OR),
  ``not``, ``cesql``. An empty list matches everything. When ``filters`` is non-empty it wins over
  ``filter`` (Knative's filter_handler and the Kafka broker's ConsumerVerticleBuilder do the same).
  Knative skips an ``exact``/``prefix``/``suffix`` with an empty key or value at run time (it then matches);
  we refuse it when the Trigger is validated, so a typo never silently routes everything.
- ``cesql`` is not implemented: the Trigger parses, but ``unsupported`` says why it is not Ready and the
  dispatcher delivers nothing for it (never everything).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from autoscaler import model
from autoscaler.errors import FieldProblem, TriggerError
from autoscaler.eventing.delivery import (
    BACKOFF_POLICIES,
    DEFAULT_BACKOFF_DELAY,
    DEFAULT_TIMEOUT,
    Delivery,
    Destination,
    Ref,
    parse_duration,
)

ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9]*$")
DIALECTS = ("exact", "prefix", "suffix", "all", "any", "not", "cesql")
DELIVERY_ORDER_ANNOTATION = "kafka.eventing.knative.dev/delivery.order"
_STRUCTURED_DATA = ("data", "data_base64")


# --- the parsed Trigger ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exact:
    attribute: str
    value: str


@dataclass(frozen=True, slots=True)
class Prefix:
    attribute: str
    value: str


@dataclass(frozen=True, slots=True)
class Suffix:
    attribute: str
    value: str


@dataclass(frozen=True, slots=True)
class All:
    filters: tuple[Expression, ...]


@dataclass(frozen=True, slots=True)
class Any:
    filters: tuple[Expression, ...]


@dataclass(frozen=True, slots=True)
class Not:
    filter: Expression


@dataclass(frozen=True, slots=True)
class CESQL:
    expression: str


Expression = Exact | Prefix | Suffix | All | Any | Not | CESQL


@dataclass(frozen=True, slots=True)
class Trigger:
    namespace: str
    name: str
    broker: str
    attributes: tuple[tuple[str, str], ...]
    filters: tuple[Expression, ...]
    subscriber: Destination
    delivery: Delivery
    ordered: bool

    @property
    def consumer_group(self) -> str:
        return model.trigger_consumer_group(self.namespace, self.name)

    @property
    def unsupported(self) -> str | None:
        """Why this Trigger cannot be served although it is valid (None when it can)."""
        if self.filters and any(_uses_cesql(f) for f in self.filters):
            return (
                "the cesql filter dialect is not supported by the queue-autoscaler broker class; "
                "express the filter with exact, prefix, suffix, all, any and not"
            )
        return None


def _uses_cesql(expression: Expression) -> bool:
    match expression:
        case CESQL():
            return True
        case All(filters) | Any(filters):
            return any(_uses_cesql(f) for f in filters)
        case Not(inner):
            return _uses_cesql(inner)
    return False


# --- parsing --------------------------------------------------------------------------------------------


class _Problems:
    def __init__(self) -> None:
        self.found: list[FieldProblem] = []

    def add(self, field: str, message: str) -> None:
        self.found.append(FieldProblem(field, message))


def parse_trigger(doc: object, *, default_namespace: str = "default") -> Trigger:
    """A Trigger manifest (JSON/YAML as Python values) -> Trigger; TriggerError listing every problem."""
    problems = _Problems()
    if not isinstance(doc, Mapping):
        raise TriggerError((FieldProblem("trigger", "must be an object (a Trigger manifest)"),))
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if api_version is not None and api_version != "eventing.knative.dev/v1":
        problems.add("apiVersion", f"{api_version!r}: only eventing.knative.dev/v1")
    if kind is not None and kind != "Trigger":
        problems.add("kind", f"{kind!r}: must be Trigger")
    metadata = _mapping(doc.get("metadata", {}), "metadata", problems)
    name = metadata.get("name", "")
    if not isinstance(name, str) or not name:
        problems.add("metadata.name", "required, a non-empty string")
        name = ""
    namespace = metadata.get("namespace") or default_namespace
    if not isinstance(namespace, str):
        problems.add("metadata.namespace", "must be a string")
        namespace = default_namespace
    annotations = _mapping(metadata.get("annotations", {}), "metadata.annotations", problems)
    order = annotations.get(DELIVERY_ORDER_ANNOTATION, "unordered")
    if order not in ("ordered", "unordered"):
        problems.add(f"metadata.annotations[{DELIVERY_ORDER_ANNOTATION}]", f"{order!r}: ordered or unordered")

    spec = _mapping(doc.get("spec"), "spec", problems, required=True)
    broker = spec.get("broker")
    if not isinstance(broker, str) or not broker:
        problems.add("spec.broker", "required: the name of a Broker in the Trigger's namespace")
        broker = ""
    if "brokerRef" in spec:
        problems.add("spec.brokerRef", "not supported: name a Broker of the same namespace in spec.broker")
    attributes = _parse_attributes(spec.get("filter"), problems)
    raw_filters = spec.get("filters", [])
    filters: tuple[Expression, ...] = ()
    if not isinstance(raw_filters, list):
        problems.add("spec.filters", "must be a list of filter expressions")
    else:
        parsed = [_parse_expression(f, f"spec.filters[{i}]", problems) for i, f in enumerate(raw_filters)]
        filters = tuple(p for p in parsed if p is not None)
    subscriber = _parse_destination(spec.get("subscriber"), "spec.subscriber", namespace, problems)
    delivery = _parse_delivery(spec.get("delivery"), namespace, problems)
    if problems.found:
        raise TriggerError(tuple(problems.found))
    assert subscriber is not None
    return Trigger(
        namespace=namespace,
        name=name,
        broker=broker,
        attributes=attributes,
        filters=filters,
        subscriber=subscriber,
        delivery=delivery,
        ordered=order == "ordered",
    )


def _mapping(
    value: object, field: str, problems: _Problems, *, required: bool = False
) -> Mapping[str, object]:
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        problems.add(field, "required, an object" if value is None else "must be an object")
        return {}
    return value


def _parse_attributes(raw: object, problems: _Problems) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    block = _mapping(raw, "spec.filter", problems)
    for key in block:
        if key != "attributes":
            problems.add(f"spec.filter.{key}", "unknown field: spec.filter has only attributes")
    attributes = _mapping(block.get("attributes", {}), "spec.filter.attributes", problems)
    found: list[tuple[str, str]] = []
    for key, value in attributes.items():
        field = f"spec.filter.attributes[{key!r}]"
        if not isinstance(key, str) or not ATTRIBUTE_NAME.match(key):
            problems.add(field, "attribute names are lowercase letters and digits, from a letter")
        elif not isinstance(value, str):
            problems.add(field, f"{value!r}: the value must be a string ('' = present with any value)")
        else:
            found.append((key, value))
    return tuple(sorted(found))


def _parse_expression(raw: object, field: str, problems: _Problems) -> Expression | None:
    if not isinstance(raw, Mapping) or not raw:
        problems.add(field, f"must be an object with one dialect of {', '.join(DIALECTS)}")
        return None
    dialects = [key for key in raw if key in DIALECTS]
    unknown = [key for key in raw if key not in DIALECTS]
    if unknown:
        problems.add(field, f"unknown dialect {', '.join(map(repr, unknown))}: one of {', '.join(DIALECTS)}")
    if len(dialects) > 1:
        problems.add(field, f"multiple dialects found ({', '.join(dialects)}): one per filters entry")
    if len(dialects) != 1:
        return None
    dialect = dialects[0]
    value = raw[dialect]
    here = f"{field}.{dialect}"
    if dialect in ("exact", "prefix", "suffix"):
        if not isinstance(value, Mapping) or len(value) != 1:
            problems.add(here, "must hold exactly one attribute name and value")
            return None
        ((attribute, wanted),) = value.items()
        ok = True
        if not isinstance(attribute, str) or not ATTRIBUTE_NAME.match(attribute):
            problems.add(here, f"{attribute!r}: attribute names are lowercase letters and digits")
            ok = False
        if not isinstance(wanted, str) or not wanted:
            problems.add(f"{here}[{attribute!r}]", "the value must be a non-empty string")
            ok = False
        if not ok:
            return None
        kinds: dict[str, type[Exact | Prefix | Suffix]] = {"exact": Exact, "prefix": Prefix, "suffix": Suffix}
        return kinds[dialect](attribute, wanted)
    if dialect in ("all", "any"):
        if not isinstance(value, list):
            problems.add(here, "must be a list of filter expressions")
            return None
        inner = [_parse_expression(f, f"{here}[{i}]", problems) for i, f in enumerate(value)]
        kept = tuple(f for f in inner if f is not None)
        return All(kept) if dialect == "all" else Any(kept)
    if dialect == "not":
        negated = _parse_expression(value, here, problems)
        return None if negated is None else Not(negated)
    if not isinstance(value, str) or not value.strip():
        problems.add(here, "must be a non-empty CloudEvents SQL expression")
        return None
    return CESQL(value)


def _parse_destination(raw: object, field: str, namespace: str, problems: _Problems) -> Destination | None:
    if raw is None:
        problems.add(field, "required: a ref (apiVersion, kind, name) and/or a uri")
        return None
    block = _mapping(raw, field, problems)
    ref: Ref | None = None
    if "ref" in block:
        raw_ref = _mapping(block["ref"], f"{field}.ref", problems)
        values = {key: raw_ref.get(key) for key in ("apiVersion", "kind", "name")}
        missing = [key for key, value in values.items() if not isinstance(value, str) or not value]
        for key in missing:
            problems.add(f"{field}.ref.{key}", "required, a non-empty string")
        ref_namespace = raw_ref.get("namespace") or namespace
        if not missing and isinstance(ref_namespace, str):
            ref = Ref(str(values["apiVersion"]), str(values["kind"]), str(values["name"]), ref_namespace)
    uri = block.get("uri")
    if uri is not None and (not isinstance(uri, str) or not uri):
        problems.add(f"{field}.uri", "must be a non-empty string")
        uri = None
    if "ref" not in block and uri is None:
        problems.add(field, "needs a ref or a uri")
        return None
    if uri is not None:
        absolute = "://" in uri
        if "ref" in block and absolute:
            problems.add(f"{field}.uri", f"{uri!r}: with a ref the uri must be relative (a path)")
        if "ref" not in block and not uri.startswith(("http://", "https://")):
            problems.add(f"{field}.uri", f"{uri!r}: without a ref the uri must be an absolute http(s) URL")
    return Destination(ref, uri)


def _parse_delivery(raw: object, namespace: str, problems: _Problems) -> Delivery:
    if raw is None:
        return Delivery()
    block = _mapping(raw, "spec.delivery", problems)
    retry = block.get("retry", 0)
    if not isinstance(retry, int) or isinstance(retry, bool) or retry < 0:
        problems.add("spec.delivery.retry", f"{retry!r}: an integer >= 0")
        retry = 0
    policy = block.get("backoffPolicy", "exponential")
    if policy not in BACKOFF_POLICIES:
        problems.add("spec.delivery.backoffPolicy", f"{policy!r}: linear or exponential")
        policy = "exponential"
    delay = _duration(
        block.get("backoffDelay"), "spec.delivery.backoffDelay", DEFAULT_BACKOFF_DELAY, problems
    )
    timeout = _duration(block.get("timeout"), "spec.delivery.timeout", DEFAULT_TIMEOUT, problems)
    if timeout == 0:
        problems.add("spec.delivery.timeout", "must be longer than 0")
    sink = None
    if "deadLetterSink" in block:
        sink = _parse_destination(
            block["deadLetterSink"], "spec.delivery.deadLetterSink", namespace, problems
        )
    return Delivery(
        retry=retry,
        backoff_policy="linear" if policy == "linear" else "exponential",
        backoff_delay=delay,
        timeout=timeout,
        dead_letter_sink=sink,
    )


def _duration(raw: object, field: str, default: float, problems: _Problems) -> float:
    if raw is None:
        return default
    try:
        return parse_duration(raw) if isinstance(raw, str) else parse_duration(repr(raw))
    except ValueError as exc:
        problems.add(field, str(exc))
        return default


# --- events and matching --------------------------------------------------------------------------------


def event_attributes(event: object) -> dict[str, str]:
    """A structured-mode CloudEvent (JSON object) -> its context attributes and extensions as strings.

    Values are in the CloudEvents canonical string form (booleans ``true``/``false``, integers in decimal),
    the form they have in binary mode, so one filter gives one answer in both modes.
    """
    if not isinstance(event, Mapping):
        raise ValueError("event must be a JSON object (a structured-mode CloudEvent)")
    found: dict[str, str] = {}
    for key, value in event.items():
        if key in _STRUCTURED_DATA or value is None:
            continue
        if isinstance(value, bool):
            found[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            found[key] = str(value)
        else:
            raise ValueError(
                f"attribute {key!r} must be a string, number or boolean, not {type(value).__name__}"
            )
    return found


@dataclass(frozen=True, slots=True)
class Match:
    matches: bool
    reason: str


def match(trigger: Trigger, attributes: Mapping[str, str]) -> Match:
    """Whether ``trigger`` takes an event with these attributes, and what decided it."""
    unsupported = trigger.unsupported
    if unsupported is not None:
        return Match(False, f"the Trigger is not Ready: {unsupported}")
    if trigger.filters:
        reasons = []
        for index, expression in enumerate(trigger.filters):
            ok, why = _evaluate(expression, attributes)
            if not ok:
                return Match(False, f"filters[{index}]: {why}")
            reasons.append(f"filters[{index}]: {why}")
        return Match(True, "; ".join(reasons))
    if not trigger.attributes:
        return Match(True, "the Trigger has no filter: every event matches")
    for key, wanted in trigger.attributes:
        if key not in attributes:
            return Match(False, f"filter.attributes: the event has no attribute {key!r}")
        if wanted and attributes[key] != wanted:
            return Match(
                False, f"filter.attributes: {key} is {attributes[key]!r}, the Trigger wants {wanted!r}"
            )
    shown = ", ".join(f"{k}={v!r}" if v else f"{k} present" for k, v in trigger.attributes)
    return Match(True, f"filter.attributes matched: {shown}")


def matches(trigger: Trigger, attributes: Mapping[str, str]) -> bool:
    return match(trigger, attributes).matches


def _evaluate(expression: Expression, attributes: Mapping[str, str]) -> tuple[bool, str]:
    match expression:
        case Exact(attribute, wanted) | Prefix(attribute, wanted) | Suffix(attribute, wanted):
            dialect = type(expression).__name__.lower()
            if attribute not in attributes:
                return False, f"{dialect}: the event has no attribute {attribute!r}"
            found = attributes[attribute]
            if isinstance(expression, Exact):
                ok = found == wanted
            elif isinstance(expression, Prefix):
                ok = found.startswith(wanted)
            else:
                ok = found.endswith(wanted)
            verb = {"exact": "is", "prefix": "starts with", "suffix": "ends with"}[dialect]
            outcome = "" if ok else "not "
            return ok, f"{dialect}: {attribute} {found!r} {outcome}{verb} {wanted!r}".replace(
                "not is", "is not"
            )
        case All(filters):
            for index, inner in enumerate(filters):
                ok, why = _evaluate(inner, attributes)
                if not ok:
                    return False, f"all[{index}]: {why}"
            return True, f"all: {len(filters)} matched"
        case Any(filters):
            reasons = []
            for index, inner in enumerate(filters):
                ok, why = _evaluate(inner, attributes)
                if ok:
                    return True, f"any[{index}]: {why}"
                reasons.append(why)
            return False, "any: none matched" + (f" ({'; '.join(reasons)})" if reasons else "")
        case Not(inner):
            ok, why = _evaluate(inner, attributes)
            return not ok, f"not: ({why})"
        case CESQL():
            return False, "cesql is not supported"
    raise AssertionError(f"unknown filter expression {expression!r}")

"""The connections file: named Kafka, RabbitMQ, Redis and NATS servers, with their TLS and credentials.

Annotations name a connection (``kafka-connection: payments``) and never carry credentials; credentials
arrive as files (mounted from a Secret) and are re-read when they change, without a restart.

```yaml
kafka:
  default: {bootstrap: "kafka:9092"}
  payments:
    bootstrap: "b-1.payments:9096,b-2.payments:9096"
    tls: {ca-file: /etc/queue-autoscaler/payments-ca.pem}      # cert-file + key-file: client certificate
    sasl: {mechanism: SCRAM-SHA-512, username: autoscaler, password-file: /etc/queue-autoscaler/pw}
rabbitmq:
  default: {management-url: "http://rabbitmq:15672", username: autoscaler, password-file: /etc/qa/rabbit}
redis:
  default: {url: "redis://redis:6379/0", password-file: /etc/queue-autoscaler/redis-password}
nats:
  default: {monitoring-url: "http://nats:8222", account: "$G"}
```

API (stable; every value is frozen):

- ``load(path) -> Connections``: reads and checks a file (YAML or JSON). Raises ``SettingsError`` listing
  every problem at once, each as ``<kind> connection '<name>': <field>=<value>: <what is allowed>``.
- ``parse(document, source=...) -> Connections``: the same for an already loaded document.
- ``Connections.kafka / .rabbitmq / .redis / .nats``: ``Mapping[str, <Kind>Connection]`` by name.
  ``Connections.with_default_kafka(bootstrap)`` adds ``kafka.default`` (``--kafka-bootstrap``) when the
  file does not define it. ``Connections.kafka_connection(name)`` raises ``SettingsError`` naming the
  known connections when ``name`` is unknown.
- ``KafkaConnection``: ``name``, ``bootstrap`` (tuple of ``host:port``), ``tls: TLS | None``,
  ``sasl: Sasl | None``, ``security_protocol`` (``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT``, ``SASL_SSL``).
- ``RabbitMQConnection``: ``management_url``, ``username``, ``password_file``, ``tls``.
  ``RedisConnection``: ``url`` (``redis://`` or ``rediss://``), ``password_file``, ``tls``.
  ``NatsConnection``: ``monitoring_url``, ``account`` (default ``$G``), ``tls``.
- ``TLS``: ``ca_file``, ``cert_file``, ``key_file`` (both or neither), ``insecure_skip_verify``;
  ``ssl_context(tls)`` builds a client context from the files as they are now (server name checked
  unless ``insecure-skip-verify``).
- ``Sasl``: ``mechanism`` (``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512``, ``OAUTHBEARER``),
  ``username`` + ``password_file`` (PLAIN/SCRAM) or ``token_file`` (OAUTHBEARER).
- ``read_secret(path)``: a credential file's content (surrounding whitespace stripped), read again only
  when the file changed (inode, size or mtime; a Secret's atomic symlink swap counts).
  ``files_stamp(paths)`` is a value that changes whenever one of the files changes: a client built from
  the files is rebuilt when its stamp is no longer current. Both raise ``SettingsError`` naming the file.
"""

from __future__ import annotations

import os
import re
import ssl
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from autoscaler.errors import SettingsError

DEFAULT = "default"
NAME_PATTERN = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
NAME_ALLOWED = "lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit"
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
MECHANISMS: tuple[str, ...] = typing.get_args(Mechanism)
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):([0-9]{1,5})")


def _readable_file(path: Path) -> Path:
    if not path.is_absolute():
        path = path.resolve()
    if not path.is_file():
        raise ValueError(f"a readable file; {path} does not exist or is not a file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"a readable file; {path} cannot be read by this process")
    return path


def _bootstrap(value: object) -> tuple[str, ...]:
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        value = ",".join(value)
    if not isinstance(value, str):
        raise ValueError("a comma list of host:port Kafka brokers (a string)")
    items = tuple(dict.fromkeys(item.strip() for item in value.split(",") if item.strip()))
    for item in items:
        match = _HOST_PORT.fullmatch(item)
        if match is None or not 1 <= int(match.group(1)) <= 65535:
            raise ValueError(f"a comma list of host:port Kafka brokers; {item!r} is not host:port")
    if not items:
        raise ValueError("a comma list of host:port Kafka brokers, at least one")
    return items


def _url(schemes: tuple[str, ...]) -> AfterValidator:
    def check(text: str) -> str:
        scheme, sep, rest = text.partition("://")
        if not sep or scheme not in schemes or not rest.strip("/"):
            raise ValueError(f"a URL starting with {' or '.join(s + '://' for s in schemes)} and a host")
        return text.rstrip("/")

    return AfterValidator(check)


File = Annotated[Path, AfterValidator(_readable_file)]
Bootstrap = Annotated[tuple[str, ...], BeforeValidator(_bootstrap)]
_NonEmpty = Annotated[str, Field(min_length=1)]


class _Frozen(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=lambda name: name.replace("_", "-"),
        populate_by_name=True,
    )


class TLS(_Frozen):
    """TLS to the server: verified against ``ca_file`` (else the system CAs); a client certificate when
    ``cert_file`` and ``key_file`` are set; ``insecure_skip_verify`` skips the server certificate and name
    check (logged as a warning by the reader that uses it)."""

    ca_file: File | None = None
    cert_file: File | None = None
    key_file: File | None = None
    insecure_skip_verify: bool = False

    @pydantic.model_validator(mode="after")
    def _pair(self) -> TLS:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert-file and key-file: both (a client certificate) or neither")
        return self

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.ca_file, self.cert_file, self.key_file) if p is not None)


class Sasl(_Frozen):
    """SASL authentication: ``username`` + ``password_file`` (PLAIN, SCRAM-*) or ``token_file``
    (OAUTHBEARER, the token re-read when the file changes)."""

    mechanism: Mechanism
    username: _NonEmpty | None = None
    password_file: File | None = None
    token_file: File | None = None

    @pydantic.model_validator(mode="after")
    def _credentials(self) -> Sasl:
        if self.mechanism == "OAUTHBEARER":
            if self.token_file is None or self.username is not None or self.password_file is not None:
                raise ValueError("OAUTHBEARER: token-file, and neither username nor password-file")
        elif self.username is None or self.password_file is None or self.token_file is not None:
            raise ValueError(f"{self.mechanism}: username and password-file, and no token-file")
        return self

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.password_file, self.token_file) if p is not None)


class KafkaConnection(_Frozen):
    """One Kafka cluster: its bootstrap brokers, TLS and SASL."""

    name: str = DEFAULT
    bootstrap: Bootstrap
    tls: TLS | None = None
    sasl: Sasl | None = None

    @property
    def bootstrap_servers(self) -> str:
        """The brokers as one comma list, as Kafka clients take them."""
        return ",".join(self.bootstrap)

    @property
    def security_protocol(self) -> Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]:
        if self.sasl is None:
            return "PLAINTEXT" if self.tls is None else "SSL"
        return "SASL_PLAINTEXT" if self.tls is None else "SASL_SSL"

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file the connection's credentials come from; their stamp tells when to reconnect."""
        return (*(self.tls.files if self.tls else ()), *(self.sasl.files if self.sasl else ()))


def _tls_needs_scheme(tls: TLS | None, url: str, field: str, secure: str) -> None:
    """``tls`` over a plaintext URL would be accepted and never used: refused, naming the scheme to use."""
    if tls is not None and not url.startswith(f"{secure}://"):
        plain = url.partition("://")[0]
        raise ValueError(f"tls is set but the {field} is {plain}:// (plaintext): use {secure}:// for TLS")


class RabbitMQConnection(_Frozen):
    """One RabbitMQ management API (HTTP basic authentication with the password from a file); ``tls`` needs
    an ``https://`` URL."""

    name: str = DEFAULT
    management_url: Annotated[str, _url(("http", "https"))]
    username: _NonEmpty | None = None
    password_file: File | None = None
    tls: TLS | None = None

    @pydantic.model_validator(mode="after")
    def _credentials(self) -> RabbitMQConnection:
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password-file: both or neither")
        _tls_needs_scheme(self.tls, self.management_url, "management-url", "https")
        return self


class RedisConnection(_Frozen):
    """One Redis server (``rediss://`` is TLS, verified as ``tls`` says, else against the system CAs); the
    password from a file. ``tls`` with a ``redis://`` URL is refused: it would be plaintext."""

    name: str = DEFAULT
    url: Annotated[str, _url(("redis", "rediss"))]
    password_file: File | None = None
    tls: TLS | None = None

    @pydantic.model_validator(mode="after")
    def _tls_scheme(self) -> RedisConnection:
        _tls_needs_scheme(self.tls, self.url, "url", "rediss")
        return self


class NatsConnection(_Frozen):
    """One NATS server's monitoring endpoint (``/jsz``) and the JetStream account to read; ``tls`` needs an
    ``https://`` URL."""

    name: str = DEFAULT
    monitoring_url: Annotated[str, _url(("http", "https"))]
    account: _NonEmpty = "$G"
    tls: TLS | None = None

    @pydantic.model_validator(mode="after")
    def _tls_scheme(self) -> NatsConnection:
        _tls_needs_scheme(self.tls, self.monitoring_url, "monitoring-url", "https")
        return self


_Name = Annotated[str, Field(pattern=f"^{NAME_PATTERN}$")]


class _Document(_Frozen):
    kafka: dict[_Name, KafkaConnection] = {}
    rabbitmq: dict[_Name, RabbitMQConnection] = {}
    redis: dict[_Name, RedisConnection] = {}
    nats: dict[_Name, NatsConnection] = {}

    @pydantic.model_validator(mode="before")
    @classmethod
    def _names(cls, data: Any) -> Any:
        """Each connection takes its name from its key."""
        if isinstance(data, Mapping):
            data = dict(data)
            for kind in ("kafka", "rabbitmq", "redis", "nats"):
                section = data.get(kind)
                if isinstance(section, Mapping):
                    data[kind] = {
                        key: {**value, "name": key} if isinstance(value, Mapping) else value
                        for key, value in section.items()
                    }
        return data


@dataclass(frozen=True, slots=True)
class Connections:
    """Every named connection, by kind and name."""

    kafka: Mapping[str, KafkaConnection]
    rabbitmq: Mapping[str, RabbitMQConnection]
    redis: Mapping[str, RedisConnection]
    nats: Mapping[str, NatsConnection]
    source: str = "<none>"

    @classmethod
    def empty(cls) -> Connections:
        return cls(MappingProxyType({}), MappingProxyType({}), MappingProxyType({}), MappingProxyType({}))

    def with_default_kafka(self, bootstrap: str | None) -> Connections:
        """``--kafka-bootstrap`` as the ``default`` Kafka connection (PLAINTEXT), unless already defined."""
        if bootstrap is None or DEFAULT in self.kafka:
            return self
        try:
            default = KafkaConnection.model_validate({"name": DEFAULT, "bootstrap": bootstrap})
        except pydantic.ValidationError as exc:
            raise SettingsError(
                f"--kafka-bootstrap={bootstrap!r}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}"
            ) from None
        kafka = MappingProxyType({**self.kafka, DEFAULT: default})
        return Connections(kafka, self.rabbitmq, self.redis, self.nats, self.source)

    def kafka_connection(self, name: str) -> KafkaConnection:
        connection = self.kafka.get(name)
        if connection is None:
            known = ", ".join(sorted(self.kafka)) or "none"
            hint = " (set --kafka-bootstrap or --connections)" if name == DEFAULT else ""
            raise SettingsError(f"no Kafka connection {name!r}{hint}; known: {known}")
        return connection


def parse(document: object, *, source: str = "<connections>") -> Connections:
    """Checks a loaded document; SettingsError lists every problem."""
    if document is None:
        document = {}
    try:
        parsed = _Document.model_validate(document)
    except pydantic.ValidationError as exc:
        problems = [_describe(error, document) for error in exc.errors()]
        raise SettingsError(f"{source}: invalid connections file:\n  " + "\n  ".join(problems)) from None
    return Connections(
        kafka=MappingProxyType(dict(parsed.kafka)),
        rabbitmq=MappingProxyType(dict(parsed.rabbitmq)),
        redis=MappingProxyType(dict(parsed.redis)),
        nats=MappingProxyType(dict(parsed.nats)),
        source=source,
    )


def load(path: str | os.PathLike[str]) -> Connections:
    """Reads a connections file (YAML or JSON); SettingsError lists every problem."""
    source = f"--connections={os.fspath(path)!r}"
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SettingsError(f"{source}: {exc.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SettingsError(f"{source}: not YAML or JSON: {exc}".replace("\n", " ")) from None
    return parse(document, source=source)


_KINDS_ALL: dict[str, type[_Frozen]] = {
    "kafka": KafkaConnection,
    "rabbitmq": RabbitMQConnection,
    "redis": RedisConnection,
    "nats": NatsConnection,
}
_NESTED: dict[str, type[_Frozen]] = {"tls": TLS, "sasl": Sasl}


def _fields(model: type[_Frozen]) -> str:
    return ", ".join(name.replace("_", "-") for name in model.model_fields if name != "name")


def _describe(error: Mapping[str, Any], document: object) -> str:
    """One pydantic error as ``<kind> connection '<name>': <field>=<value>: <what is allowed>``."""
    loc = [str(part) for part in error["loc"]]
    kind_type = error["type"]
    message = str(error["msg"]).removeprefix("Value error, ")
    if not loc:
        return f"the file: a mapping with the sections {', '.join(_KINDS_ALL)}; got {_shown(document)}"
    if len(loc) == 1:
        if kind_type == "extra_forbidden":
            return f"{loc[0]}: unknown section; allowed: {', '.join(_KINDS_ALL)}"
        return f"{loc[0]}: a mapping of connection name -> settings"
    kind, name, fields = loc[0], loc[1], loc[2:]
    where = f"{kind} connection {name!r}"
    if kind_type == "string_pattern_mismatch" or (fields[-1:] == ["[key]"]):
        return f"{kind}: connection name {name!r}: {NAME_ALLOWED}"
    fields = [f for f in fields if f != "[key]"]
    if not fields:
        if kind_type in ("model_type", "dict_type"):
            return f"{where}: a mapping of settings ({_fields(_KINDS_ALL[kind])})"
        return f"{where}: {message}"
    field = ".".join(fields)
    model: type[_Frozen] = _NESTED.get(fields[-2], TLS) if len(fields) > 1 else _KINDS_ALL[kind]
    if kind_type == "extra_forbidden":
        return f"{where}: {field}: unknown field; allowed: {_fields(model)}"
    if kind_type == "missing":
        return f"{where}: {field}: required"
    value = error.get("input")
    if kind_type == "literal_error":
        message = "one of " + ", ".join(MECHANISMS)
    elif kind_type in ("model_type", "dict_type"):
        message = f"a mapping ({_fields(_NESTED.get(fields[-1], TLS))})"
    elif kind_type == "bool_type" or kind_type == "bool_parsing":
        message = "true or false"
    elif kind_type == "string_type":
        message = "a string"
    elif kind_type == "string_too_short":
        message = "a non-empty string"
    if kind_type == "value_error" and isinstance(value, Mapping):
        return f"{where}: {field}: {message}"
    return f"{where}: {field}={_shown(value)}: {message}"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- credential files, re-read when they change -----------------------------------------------------------

_Stamp = tuple[int, int, int]
_SECRETS: dict[Path, tuple[_Stamp, str]] = {}


def _stamp(path: Path) -> _Stamp:
    try:
        st = path.stat()  # follows symlinks: a Secret volume's ..data swap changes the inode
    except OSError as exc:
        raise SettingsError(f"credential file {str(path)!r}: {exc.strerror}") from None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def files_stamp(paths: Iterable[Path]) -> tuple[_Stamp, ...]:
    """A value that differs whenever one of ``paths`` changed (or SettingsError when one is gone)."""
    return tuple(_stamp(path) for path in paths)


def read_secret(path: Path) -> str:
    """The file's content without surrounding whitespace; read again only after the file changed."""
    stamp = _stamp(path)
    cached = _SECRETS.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        value = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"credential file {str(path)!r}: {exc}") from None
    if not value:
        raise SettingsError(f"credential file {str(path)!r}: the file is empty")
    _SECRETS[path] = (stamp, value)
    return value


def ssl_context(tls: TLS) -> ssl.SSLContext:
    """A client context from the TLS files as they are now; SettingsError names a file that is unusable."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        if tls.ca_file is not None:
            context.load_verify_locations(cafile=str(tls.ca_file))
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(certfile=str(tls.cert_file), keyfile=str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"TLS files {', '.join(map(str, tls.files))}: {exc}") from None
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context

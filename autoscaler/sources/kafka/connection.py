"""One named Kafka connection's client: TLS and SASL from the connections file, credentials read from
their files when the client is built (and the client rebuilt when a file changes), and the broker's own
reason when it refuses us. aiokafka's bootstrap only says "unable to bootstrap"; ``diagnose`` opens one
connection itself to learn why, so an expired password or an untrusted certificate is named as such.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import errors as aiokafka_errors
from aiokafka.abc import AbstractTokenProvider
from aiokafka.conn import create_conn
from aiokafka.protocol.admin import SaslAuthenticateRequest, SaslHandShakeRequest

from autoscaler import connections
from autoscaler.errors import KafkaError, SettingsError
from autoscaler.observability.log_events import KafkaLog

log = structlog.get_logger(__name__)

_WARNED_UNVERIFIED: set[str] = set()


class _FileToken(AbstractTokenProvider):  # type: ignore[misc]
    """An OAUTHBEARER token from its file, read again whenever the file changes."""

    def __init__(self, sasl: connections.Sasl) -> None:
        assert sasl.token_file is not None
        self._path = sasl.token_file

    async def token(self) -> str:
        return connections.read_secret(self._path)


@dataclass(frozen=True, slots=True)
class Options:
    """The aiokafka client arguments of a connection, and the stamp of the files they came from."""

    kwargs: dict[str, Any]
    stamp: tuple[object, ...]


def describe(connection: connections.KafkaConnection) -> str:
    """How errors name the connection: ``connection 'payments' (b-1:9096, SASL_SSL)``."""
    return f"connection {connection.name!r} ({connection.bootstrap_servers}, {connection.security_protocol})"


def stamp(connection: connections.KafkaConnection) -> tuple[object, ...]:
    """Changes whenever one of the connection's files changes; KafkaError names a file that is gone."""
    try:
        return connections.files_stamp(connection.files)
    except SettingsError as exc:
        raise KafkaError(f"{describe(connection)}: {exc}") from None


def options(connection: connections.KafkaConnection) -> Options:
    """Client arguments from the connection's files as they are now; KafkaError names an unusable file."""
    try:
        stamp = connections.files_stamp(connection.files)
        kwargs: dict[str, Any] = {"security_protocol": connection.security_protocol}
        tls = connection.tls
        if tls is not None:
            kwargs["ssl_context"] = connections.ssl_context(tls)
            if tls.insecure_skip_verify and connection.name not in _WARNED_UNVERIFIED:
                _WARNED_UNVERIFIED.add(connection.name)
                log.warning(
                    KafkaLog.VERIFICATION_SKIPPED,
                    connection=connection.name,
                    bootstrap=connection.bootstrap_servers,
                    detail="insecure-skip-verify: the broker's certificate and name are not checked",
                )
        sasl = connection.sasl
        if sasl is not None:
            kwargs["sasl_mechanism"] = sasl.mechanism
            if sasl.mechanism == "OAUTHBEARER":
                kwargs["sasl_oauth_token_provider"] = _FileToken(sasl)
            else:
                assert sasl.password_file is not None
                kwargs["sasl_plain_username"] = sasl.username
                kwargs["sasl_plain_password"] = connections.read_secret(sasl.password_file)
    except SettingsError as exc:
        raise KafkaError(f"{describe(connection)}: {exc}") from None
    return Options(kwargs=kwargs, stamp=stamp)


def forget_warnings() -> None:
    """Lets the next reader of each insecure connection warn again (tests start from a clean slate)."""
    _WARNED_UNVERIFIED.clear()


async def diagnose(
    connection: connections.KafkaConnection, opts: Options, *, client_id: str, timeout: float
) -> str | None:
    """Why the brokers refuse this client (TLS or SASL), or None when they accept it or cannot be reached."""
    if connection.security_protocol == "PLAINTEXT":
        return None
    for server in connection.bootstrap:
        host, _, port = server.rpartition(":")
        try:
            conn = await create_conn(
                host.strip("[]"),
                int(port),
                client_id=client_id,
                request_timeout_ms=int(timeout * 1000),
                **opts.kwargs,
            )
        except ssl.SSLCertVerificationError as exc:
            return f"TLS: the broker's certificate is not trusted: {exc.verify_message}"
        except ssl.SSLError as exc:
            return f"TLS: {exc.reason or exc}"
        except (aiokafka_errors.SaslAuthenticationFailed, aiokafka_errors.AuthenticationFailedError) as exc:
            return f"SASL {opts.kwargs.get('sasl_mechanism')} authentication failed: {_broker_text(exc)}"
        except aiokafka_errors.UnsupportedSaslMechanismError as exc:
            return (
                f"SASL: the broker does not accept {opts.kwargs.get('sasl_mechanism')}: {_broker_text(exc)}"
            )
        except aiokafka_errors.KafkaConnectionError as exc:
            if connection.tls is not None and "closed" in str(exc):
                return f"TLS: the broker closed the connection during the handshake ({exc})"
            continue
        except (OSError, aiokafka_errors.KafkaError):
            continue  # unreachable: the bootstrap error says so
        conn.close()
        if opts.kwargs.get("sasl_mechanism") == "OAUTHBEARER":
            return await _token_refusal(
                host.strip("[]"), int(port), opts, client_id=client_id, timeout=timeout
            )
        return None
    return None


async def _token_refusal(
    host: str, port: int, opts: Options, *, client_id: str, timeout: float
) -> str | None:
    """Why the broker refuses the OAUTHBEARER token, or None when it takes it.

    aiokafka reads the broker's error challenge to a refused token (RFC 7628 3.2.2) as success and never
    answers it, so a refused token would look like a broker that cannot be reached: the exchange is made
    here.
    """
    plain = {k: v for k, v in opts.kwargs.items() if not k.startswith("sasl_")}
    plain["security_protocol"] = "SSL" if opts.kwargs["security_protocol"] == "SASL_SSL" else "PLAINTEXT"
    try:
        conn = await create_conn(
            host, port, client_id=client_id, request_timeout_ms=int(timeout * 1000), **plain
        )
    except (OSError, ssl.SSLError, aiokafka_errors.KafkaError):
        return None
    try:
        handshake = await conn.send(SaslHandShakeRequest("OAUTHBEARER"))
        if handshake.error_code != 0:
            return None  # the mechanism itself is refused: the regular connection says so
        token = await opts.kwargs["sasl_oauth_token_provider"].token()
        answer = await conn.send(SaslAuthenticateRequest(f"n,,\x01auth=Bearer {token}\x01\x01".encode()))
        if answer.error_code != 0:
            return f"SASL OAUTHBEARER authentication failed: {answer.error_message}"
        if not answer.sasl_auth_bytes:
            return None
        try:
            status = json.loads(answer.sasl_auth_bytes).get("status", "refused")
        except (ValueError, AttributeError):
            status = "refused"
        return (
            f"SASL OAUTHBEARER authentication failed: the broker refused the token ({status}): expired, "
            "not yet valid, or not accepted by its validator"
        )
    except (OSError, aiokafka_errors.KafkaError):
        return None
    finally:
        conn.close()


def _broker_text(exc: BaseException) -> str:
    text = str(exc)
    # "[Error 58] SaslAuthenticationFailed: Authentication failed ...": keep the broker's sentence.
    return text.split(": ", 1)[1] if text.startswith("[Error") and ": " in text else text

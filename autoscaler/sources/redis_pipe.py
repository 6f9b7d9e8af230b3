"""The Redis command pipe on redis-py's asyncio client: every command of a read in one round trip.

Kept apart from ``sources.redis`` so that redis-py is imported only where a Redis stream is read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.credentials import CredentialProvider

from autoscaler import connections
from autoscaler.errors import SourceError, SourceUnavailable


class _PasswordProvider(CredentialProvider):
    def __init__(self, password: Callable[[], str | None]) -> None:
        self._password = password

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        secret = self._password()
        return () if secret is None else (secret,)  # type: ignore[return-value]


class RedisPipe:
    """A CommandPipe on redis-py's asyncio client; the password is asked for at every (re)connection."""

    def __init__(
        self,
        url: str,
        *,
        password: Callable[[], str | None] | None,
        timeout: float,
        tls: connections.TLS | None = None,
    ) -> None:
        self.url = url
        self._client = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            credential_provider=None if password is None else _PasswordProvider(password),
            **({} if tls is None else _tls_options(tls)),
        )

    async def run(self, commands: Sequence[tuple[str, ...]]) -> list[object]:
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        try:
            replies: list[object] = await pipe.execute(raise_on_error=False)
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError, TimeoutError) as exc:
            raise SourceUnavailable(f"redis {self.url}: {type(exc).__name__}: {exc}") from exc
        except redis_errors.RedisError as exc:
            raise SourceError(f"redis {self.url}: {type(exc).__name__}: {exc}") from exc
        return replies

    async def close(self) -> None:
        await self._client.aclose()


def _tls_options(tls: connections.TLS) -> dict[str, Any]:
    """redis-py's SSLConnection arguments (used for ``rediss://`` URLs)."""

    def text(path: object) -> str | None:
        return None if path is None else str(path)

    verify = not tls.insecure_skip_verify
    return {
        "ssl_ca_certs": text(tls.ca_file),
        "ssl_certfile": text(tls.cert_file),
        "ssl_keyfile": text(tls.key_file),
        "ssl_cert_reqs": "required" if verify else "none",
        "ssl_check_hostname": verify,
    }

"""The local kubelet's API, the part ``kubectl logs`` needs: ``GET /containerLogs/<ns>/<pod>/<container>``.

Served over HTTPS on the Node's address and ``kubelet_port`` (the Node's status.daemonEndpoints), with the
devstack's kubelet serving certificate; only callers presenting a client certificate signed by the devstack's
kubelet CA (the kube-apiserver's kubelet client certificate) are answered. Query parameters as the kubelet
takes them: ``tailLines``, ``limitBytes``, ``follow``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from devstack.pki import KubeletCerts

FOLLOW_POLL_SECONDS = 0.2
# Finds the log file of a running or finished pod's container, and tells whether it may still grow.
LogLookup = Callable[[str, str, str], tuple[Path, bool] | None]


def tail(data: bytes, lines: int | None, limit: int | None) -> bytes:
    """The last ``lines`` lines of ``data`` (all when None), cut to its first ``limit`` bytes (as the kubelet
    applies limitBytes after tailLines)."""
    if lines is not None:
        if lines <= 0:
            data = b""
        else:
            parts = data.splitlines(keepends=True)
            data = b"".join(parts[-lines:])
    if limit is not None:
        data = data[:limit]
    return data


def _number(request: web.Request, name: str) -> int | None:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer, got {text!r}\n") from None
    if value < 0:
        raise web.HTTPBadRequest(text=f"{name} must be >= 0, got {value}\n")
    return value


def app(lookup: LogLookup) -> web.Application:
    async def container_logs(request: web.Request) -> web.StreamResponse:
        namespace, pod, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        found = lookup(namespace, pod, container)
        if found is None:
            raise web.HTTPNotFound(
                text=f"pod {namespace}/{pod} has no container {container!r} on this node\n"
            )
        path, running = found
        lines, limit = _number(request, "tailLines"), _number(request, "limitBytes")
        data = await asyncio.to_thread(path.read_bytes) if path.exists() else b""
        body = tail(data, lines, limit)
        follow = request.query.get("follow", "false").lower() in ("true", "1")
        if not follow or limit is not None:
            return web.Response(body=body, content_type="text/plain")
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(body)
        offset = len(data)
        while running:
            await asyncio.sleep(FOLLOW_POLL_SECONDS)
            again = lookup(namespace, pod, container)
            running = again is not None and again[1]
            size = path.stat().st_size if path.exists() else offset
            if size > offset:
                with path.open("rb") as log:
                    log.seek(offset)
                    chunk = log.read(size - offset)
                offset = size
                await response.write(chunk)
        await response.write_eof()
        return response

    application = web.Application()
    application.router.add_get("/containerLogs/{namespace}/{pod}/{container}", container_logs)
    return application


def server_context(certs: KubeletCerts) -> ssl.SSLContext:
    """Serves with the kubelet's certificate and requires a client certificate from the kubelet CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs.ca))
    context.load_cert_chain(str(certs.serving_cert), str(certs.serving_key))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


async def serve(lookup: LogLookup, *, host: str, port: int, certs: KubeletCerts) -> web.AppRunner:
    runner = web.AppRunner(app(lookup), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=server_context(certs), reuse_address=True).start()
    return runner

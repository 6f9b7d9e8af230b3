"""The controller's end of the activator channel: POST /v1/reports with a shared bearer token.

Each activator replica posts its per-target concurrency every report interval, and at once when a request
arrives for a target with no ready endpoint. Only the leader acts on reports; a standby answers 409 so that
an activator with a stale leader address looks the leader up again.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable

import structlog
from aiohttp import web

from autoscaler.model import REPORT_PATH, ConcurrencyReport

log = structlog.get_logger(__name__)
MAX_REPORT_BYTES = 4 * 1024 * 1024


def build_app(
    *, token: str | None, on_report: Callable[[ConcurrencyReport], None], is_leader: Callable[[], bool]
) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        if token is not None:
            presented = request.headers.get("Authorization", "")
            if not hmac.compare_digest(presented.encode(), f"Bearer {token}".encode()):
                return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        if not is_leader():
            return web.json_response({"error": "not the leader"}, status=409)
        try:
            report = ConcurrencyReport.from_json(json.loads(await request.read()))
        except (ValueError, UnicodeDecodeError) as exc:
            return web.json_response({"error": f"malformed report: {exc}"}, status=400)
        on_report(report)
        return web.json_response({"accepted": True})

    app = web.Application(client_max_size=MAX_REPORT_BYTES)
    app.router.add_post(REPORT_PATH, receive)
    return app

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from devstack.workers import http_worker

# The worker keys its settings by plain strings, as its main() does.
pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")


def worker_app(record: str, *, consume: bool = False) -> web.Application:
    app = http_worker.build_app(record=record, consume=consume)
    app[http_worker.READY_AT] = 12.5
    return app


async def test_with_record_each_post_appends_its_cloudevents_id_type_and_time_and_the_arrival(
    tmp_path: Path,
) -> None:
    record = tmp_path / "received.jsonl"
    headers = {"ce-id": "e1", "ce-type": "com.example.t", "ce-time": "2026-12-01T10:00:00Z"}
    async with TestClient(TestServer(worker_app(str(record)))) as session:
        first = await session.post("/events", data=b"{}", headers=headers)
        second = await session.post("/events", data=b"{}", headers={**headers, "ce-id": "e2"})
        probe = await session.get("/anything")
    lines = [json.loads(line) for line in record.read_text().splitlines()]

    assert (first.status, second.status, probe.status) == (200, 200, 200)
    assert [(e["id"], e["type"], e["time"], e["ready_at"]) for e in lines] == [
        ("e1", "com.example.t", "2026-12-01T10:00:00Z", 12.5),
        ("e2", "com.example.t", "2026-12-01T10:00:00Z", 12.5),
    ]
    assert lines[0]["at"] <= lines[1]["at"]


async def test_without_record_nothing_is_written(tmp_path: Path) -> None:
    async with TestClient(TestServer(worker_app(""))) as session:
        answer = await session.post("/events", data=b"x", headers={"ce-id": "e1"})
        body = await answer.read()

    assert (answer.status, body) == (200, b"x")
    assert list(tmp_path.iterdir()) == []  # noqa: ASYNC240


async def test_as_a_consumer_a_post_is_answered_202_without_a_body_or_cloudevents_headers_so_it_is_no_reply(
    tmp_path: Path,
) -> None:
    record = tmp_path / "received.jsonl"
    async with TestClient(TestServer(worker_app(str(record), consume=True))) as session:
        answer = await session.post("/", data=b"{}", headers={"ce-id": "e1", "ce-type": "t"})
        body = await answer.read()
        headers = dict(answer.headers)

    assert (answer.status, body) == (202, b"")
    assert not [k for k in headers if k.lower().startswith("ce-")]
    assert "e1" in record.read_text()

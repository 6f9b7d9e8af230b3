"""The concurrency reporter against a real HTTP endpoint standing in for the controller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from autoscaler.activator import metrics, reporter
from autoscaler.model import ConcurrencyReport, TargetConcurrency, TargetKey
from devstack import loopback
from tests.unit.activator import helpers

ORDERS = TargetKey("shop", "orders")
PAYMENTS = TargetKey("shop", "payments")


@dataclass
class Source:
    targets: dict[TargetKey, TargetConcurrency] = field(default_factory=dict)
    waiting: frozenset[TargetKey] = frozenset()

    def concurrency(self) -> dict[TargetKey, TargetConcurrency]:
        return dict(self.targets)

    def cold(self) -> frozenset[TargetKey]:
        return self.waiting


@dataclass
class Controller:
    """Records reports; answers with ``status``."""

    status: int = 200
    reports: asyncio.Queue[tuple[str, ConcurrencyReport]] = field(default_factory=asyncio.Queue)

    async def handle(self, request: web.Request) -> web.Response:
        report = ConcurrencyReport.from_json(await request.json())
        await self.reports.put((request.headers.get("Authorization", ""), report))
        return web.Response(status=self.status)


@pytest.fixture
async def controller() -> AsyncIterator[tuple[Controller, str]]:
    fake = Controller()
    app = web.Application()
    app.router.add_post("/report", fake.handle)
    async with loopback.running(app) as port:
        yield fake, f"http://127.0.0.1:{port}/report"


async def run(pusher: reporter.Reporter) -> asyncio.Task[None]:
    task = asyncio.create_task(pusher.run())
    await asyncio.sleep(0)
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_poke_wakes_the_reporter_before_its_interval(controller: tuple[Controller, str]) -> None:
    fake, url = controller
    source = Source(
        targets={ORDERS: TargetConcurrency(in_flight=0, queued=2), PAYMENTS: TargetConcurrency(1, 0)}
    )
    registry = CollectorRegistry()
    pusher = reporter.Reporter(
        url=url,
        token=lambda: "s3cret",
        activator="activator-0",
        source=source,
        metrics=metrics.ActivatorMetrics(registry),
        interval=3600,
    )
    task = await run(pusher)
    try:
        pusher.poke(ORDERS)
        authorization, report = await asyncio.wait_for(fake.reports.get(), 5)
    finally:
        await stop(task)
    assert authorization == "Bearer s3cret"
    assert report == ConcurrencyReport(
        activator="activator-0",
        targets={ORDERS: TargetConcurrency(0, 2), PAYMENTS: TargetConcurrency(1, 0)},
        cold=frozenset({ORDERS}),
    )
    assert registry.get_sample_value("queue_autoscaler_activator_reports_total", {"result": "ok"}) == 1.0


async def test_reports_go_out_periodically_without_pokes(controller: tuple[Controller, str]) -> None:
    fake, url = controller
    pusher = reporter.Reporter(
        url=url,
        token="t",
        activator="a",
        source=Source(waiting=frozenset({ORDERS})),
        metrics=metrics.ActivatorMetrics(CollectorRegistry()),
        interval=0.01,
    )
    task = await run(pusher)
    try:
        reports = [await asyncio.wait_for(fake.reports.get(), 5) for _ in range(3)]
    finally:
        await stop(task)
    assert all(report.cold == {ORDERS} for _, report in reports)


async def test_a_rejected_report_is_counted_and_logged_and_reporting_goes_on(
    controller: tuple[Controller, str],
) -> None:
    fake, url = controller
    fake.status = 500
    registry = CollectorRegistry()
    pusher = reporter.Reporter(
        url=url,
        token="t",
        activator="a",
        source=Source(),
        metrics=metrics.ActivatorMetrics(registry),
        interval=3600,
    )
    task = await run(pusher)
    try:
        with structlog.testing.capture_logs() as logs:
            pusher.poke(ORDERS)
            _, first = await asyncio.wait_for(fake.reports.get(), 5)
            await helpers.eventually(
                lambda: (
                    registry.get_sample_value(
                        "queue_autoscaler_activator_reports_total", {"result": "rejected"}
                    )
                    == 1.0
                )
            )
            fake.status = 204
            pusher.poke(PAYMENTS)
            _, second = await asyncio.wait_for(fake.reports.get(), 5)
    finally:
        await stop(task)
    assert first.cold == {ORDERS}
    assert second.cold == {ORDERS, PAYMENTS}
    assert any(entry["event"] == "concurrency report rejected" and entry["status"] == 500 for entry in logs)


async def test_an_unreachable_controller_is_counted_and_never_crashes_the_reporter() -> None:
    registry = CollectorRegistry()
    pusher = reporter.Reporter(
        url=f"http://127.0.0.1:{helpers.closed_port()}/report",
        token="t",
        activator="a",
        source=Source(),
        metrics=metrics.ActivatorMetrics(registry),
        interval=3600,
        timeout=1.0,
    )

    def failures() -> float:
        return (
            registry.get_sample_value("queue_autoscaler_activator_reports_total", {"result": "failed"}) or 0.0
        )

    task = await run(pusher)
    try:
        pusher.poke(ORDERS)
        await helpers.eventually(lambda: failures() == 1.0)
        pusher.poke(ORDERS)
        await helpers.eventually(lambda: failures() == 2.0)
        assert not task.done()
    finally:
        await stop(task)


async def test_a_token_that_cannot_be_read_is_a_counted_failure() -> None:
    registry = CollectorRegistry()

    def unreadable() -> str:
        raise OSError("token file missing")

    pusher = reporter.Reporter(
        url="http://127.0.0.1:1/report",
        token=unreadable,
        activator="a",
        source=Source(),
        metrics=metrics.ActivatorMetrics(registry),
    )
    async with aiohttp.ClientSession() as session:
        assert not await pusher.report(session=session)
    assert registry.get_sample_value("queue_autoscaler_activator_reports_total", {"result": "failed"}) == 1.0

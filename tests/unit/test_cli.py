"""The CLI wiring: the report URL the leader publishes, and the ports the activator says it listens on."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from autoscaler import cli, errors, settings
from autoscaler.activator import metrics as activator_metrics
from autoscaler.activator import reporter, server, serving
from autoscaler.cli import controller as cli_controller
from autoscaler.control import reports
from autoscaler.kube import leases
from autoscaler.model import ConcurrencyReport, TargetConcurrency, TargetKey
from autoscaler.observability import logging as obs_logging
from devstack import loopback

ORDERS = TargetKey("shop", "orders")


class OneColdTarget:
    def concurrency(self) -> dict[TargetKey, TargetConcurrency]:
        return {ORDERS: TargetConcurrency(in_flight=0, queued=1)}

    def cold(self) -> frozenset[TargetKey]:
        return frozenset({ORDERS})


async def test_an_activator_reporting_to_the_url_the_leader_publishes_reaches_the_report_endpoint() -> None:
    received: list[ConcurrencyReport] = []
    app = reports.build_app(token="s3cret", on_report=received.append, is_leader=lambda: True)
    async with loopback.running(app) as port:
        published = cli_controller.published_report_url(None, pod_ip="127.0.0.1", port=port)
        pusher = reporter.Reporter(
            url=published,
            token="s3cret",
            activator="activator-1",
            source=OneColdTarget(),
            metrics=activator_metrics.ActivatorMetrics(CollectorRegistry()),
        )
        async with aiohttp.ClientSession() as session:
            accepted = await pusher.report(session=session)
    assert accepted
    assert [r.cold for r in received] == [frozenset({ORDERS})]


@pytest.mark.parametrize(
    ("configured", "pod_ip", "expected"),
    [
        (None, "10.1.2.3", "http://10.1.2.3:8081/v1/reports"),
        (None, "fd00::7", "http://[fd00::7]:8081/v1/reports"),
        ("http://controller.ops:8081", "10.1.2.3", "http://controller.ops:8081/v1/reports"),
        ("http://controller.ops:8081/", "10.1.2.3", "http://controller.ops:8081/v1/reports"),
        ("https://reports.example/custom", "10.1.2.3", "https://reports.example/custom"),
    ],
)
def test_the_published_report_url_names_the_report_endpoint_unless_a_path_is_configured(
    configured: str | None, pod_ip: str, expected: str
) -> None:
    assert cli_controller.published_report_url(configured, pod_ip=pod_ip, port=8081) == expected


async def test_on_every_interface_the_ports_said_to_be_the_proxy_and_the_metrics_ones_really_are() -> None:
    activator = server.Activator(registry=CollectorRegistry())
    listening: asyncio.Future[serving.Listening] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    served = asyncio.create_task(
        serving.serve(
            activator=activator,
            stop=stop,
            host="",
            port=0,
            admin_host="",
            admin_port=0,
            on_listening=listening.set_result,
        )
    )
    try:
        bound = await asyncio.wait_for(listening, 5)
        proxy_ports, metrics_ports = bound.proxy_ports, bound.admin_ports
        loopback = {s.port: "[::1]" if ":" in s.host else "127.0.0.1" for s in bound.proxy + bound.admin}
        async with aiohttp.ClientSession() as session:
            for port in metrics_ports:
                async with session.get(f"http://{loopback[port]}:{port}/metrics") as response:
                    assert response.status == 200
                    assert "queue_autoscaler_activator_responses" in await response.text()
            for port in proxy_ports:
                async with session.get(
                    f"http://{loopback[port]}:{port}/metrics", headers={"Host": "nobody.nowhere"}
                ) as response:
                    assert response.status == 404
                    assert "no Deployment is routed" in await response.text()
    finally:
        stop.set()
        await asyncio.wait_for(served, 10)
    assert proxy_ports
    assert metrics_ports
    assert len(proxy_ports) == len(metrics_ports)


@pytest.fixture
def isolated_main(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """cli.main configures logging for the whole process; keep that out of the other tests."""
    monkeypatch.setattr(obs_logging, "configure", lambda **_: None)
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


@pytest.mark.usefixtures("isolated_main")
def test_an_unusable_kubeconfig_ends_run_with_one_clear_line_and_status_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nope"
    status = cli.main(
        [
            "run",
            "--kubeconfig",
            str(missing),
            "--metrics-port",
            "0",
            "--report-port",
            "0",
            "--report-insecure",
        ]
    )
    err = capsys.readouterr().err
    assert status == 1
    assert err.strip() == f"queue-autoscaler run: kubeconfig {missing}: no such file: {missing}"


@pytest.mark.usefixtures("isolated_main")
def test_lag_without_a_bootstrap_says_which_flag_is_missing_and_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QUEUE_AUTOSCALER_KAFKA_BOOTSTRAP", raising=False)
    status = cli.main(["lag", "--group", "g"])
    assert status == 2
    assert "--bootstrap: required" in capsys.readouterr().err


def test_the_lease_timings_have_one_set_of_defaults_for_flags_settings_and_the_elector() -> None:
    args = cli.build_parser().parse_args(["run", "--report-insecure"])
    from_flags = settings.controller_settings(args)
    elector = inspect.signature(leases.LeaderElector).parameters
    fields = {f.name: f.default for f in dataclasses.fields(settings.ControllerSettings)}
    timings = ("lease_duration", "renew_deadline", "retry_period")

    assert [getattr(from_flags, name) for name in timings] == [10.0, 7.0, 1.5]
    assert [fields[name] for name in timings] == [10.0, 7.0, 1.5]
    assert [elector[name].default for name in timings] == [10.0, 7.0, 1.5]


def test_the_controller_refuses_to_start_without_a_report_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUEUE_AUTOSCALER_REPORT_TOKEN", raising=False)
    monkeypatch.delenv("QUEUE_AUTOSCALER_REPORT_INSECURE", raising=False)
    args = cli.build_parser().parse_args(["run"])
    with pytest.raises(errors.SettingsError, match=r"no report token.*--report-insecure"):
        settings.controller_settings(args)


def test_report_insecure_is_an_explicit_choice_and_a_token_needs_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("QUEUE_AUTOSCALER_REPORT_TOKEN", raising=False)
    insecure = settings.controller_settings(cli.build_parser().parse_args(["run", "--report-insecure"]))
    assert (insecure.report_token, insecure.report_insecure) == (None, True)
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    args = cli.build_parser().parse_args(["run", "--report-token-file", str(token)])
    secured = settings.controller_settings(args)
    assert (secured.report_token, secured.report_insecure) == ("s3cret", False)


@pytest.mark.usefixtures("isolated_main")
def test_decide_refuses_deeply_nested_json_with_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    nested = ("[" * 100_000 + "]" * 100_000).encode()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(nested)))
    status = cli.main(["decide"])
    assert (status, capsys.readouterr().err) == (2, "decide: stdin is JSON nested too deeply to read\n")

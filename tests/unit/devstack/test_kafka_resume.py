"""When devstack/up brings a stopped broker back on its data, and when it starts one afresh."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from devstack import certs, config, kafka


def test_a_broker_is_resumed_only_on_its_data_under_the_configuration_a_start_writes_now(
    tmp_path: Path,
) -> None:
    layout = dataclasses.replace(config.layout(), run=tmp_path / "run")
    home = layout.run / "kafka"
    assert not kafka.resumable(layout)  # never started here

    (home / "data").mkdir(parents=True)
    props = home / "server.properties"
    props.write_text(kafka.server_properties(layout, home / "data", certs.ensure(layout)))
    assert kafka.resumable(layout)

    props.write_text(props.read_text().replace("num.partitions=1", "num.partitions=2"))
    assert not kafka.resumable(layout)  # the configuration changed: a fresh start

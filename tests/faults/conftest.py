"""Fault trials: real brokers and real worker processes, faults injected from outside (kill -9, ...).

Fixtures of the monitor kill trials are prefixed ``monitor_``; other trials keep their fixtures apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_brokers import embedded_broker

from driftwarden.bench.kill_trials import trial_broker
from driftwarden.kafka.broker import EmbeddedBroker
from driftwarden.settings import Settings


@pytest.fixture(scope="session")
def monitor_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Path]]:
    """One broker for every monitor kill run (each run has topics and a group of its own), and a
    directory for the runs' worker logs."""
    work = tmp_path_factory.mktemp("monitor-kills")
    with trial_broker(work) as settings:
        yield settings, work


@pytest.fixture(scope="session")
def service_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One broker for the trainer, serving and through-Kafka fuzz trials (each uses a topic prefix of its own)."""
    with trial_broker(tmp_path_factory.mktemp("service-trials")) as settings:
        yield settings


@pytest.fixture(scope="session")
def durable_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One SeaweedFS-backed broker for the durable restart trials (each trial has topics of its own)."""
    with embedded_broker(tmp_path_factory.mktemp("durable"), durable=True) as broker:
        yield broker

"""The durable broker's store helpers that need no running process (the process itself: tests/faults)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from driftwarden.kafka.broker import EmbeddedBroker
from driftwarden.kafka.object_store import LOW_PORTS, Credentials, SeaweedPorts, weed_binary


def test_credentials_are_private_random_and_kept_per_directory(tmp_path: Path) -> None:
    first = Credentials.load_or_create(tmp_path / "a" / "s3.json")
    assert stat.S_IMODE((tmp_path / "a" / "s3.json").stat().st_mode) == 0o600
    assert Credentials.load_or_create(tmp_path / "a" / "s3.json") == first
    assert Credentials.load_or_create(tmp_path / "b" / "s3.json") != first


def test_store_ports_are_distinct_below_the_ephemeral_range_and_avoid_taken_ones() -> None:
    taken = {LOW_PORTS.start + 1}
    ports = list(vars(SeaweedPorts.pick(taken)).values())
    assert len(set(ports)) == len(ports) == 8
    assert all(port in LOW_PORTS and port not in taken for port in ports)


def test_weed_binary_is_installed_and_executable() -> None:
    assert os.access(weed_binary(), os.X_OK)


def test_memory_is_the_default_and_a_data_directory_selects_s3(tmp_path: Path) -> None:
    assert EmbeddedBroker(tmp_path / "broker.log").storage_engine == "memory://tansu/"
    durable = EmbeddedBroker(tmp_path / "broker.log", data_dir=tmp_path / "data")
    assert durable.storage_engine == "s3://driftwarden/"
    assert durable.port in LOW_PORTS and durable.port not in vars(durable.store.ports).values()
    assert durable.pids == {} and durable.failure() is None and not durable.running

"""Read what the monitor reports about itself on the topics (status, dead letters, alerts)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from driftwarden.core.events import MonitorStatus, status_key
from driftwarden.kafka.reader import read_topic
from driftwarden.settings import Settings


async def latest_status(settings: Settings, model_id: str, group: str | None = None) -> MonitorStatus | None:
    """The newest status monitor group ``group`` (default: the configured one) published for ``model_id``."""
    values = await records_for(settings, settings.topics.monitor_status, _key(settings, model_id, group))
    return MonitorStatus.model_validate_json(values[-1]) if values else None


async def status_history(settings: Settings, model_id: str, group: str | None = None) -> list[MonitorStatus]:
    """Every status monitor group ``group`` (default: the configured one) published for ``model_id``, oldest first."""
    values = await records_for(settings, settings.topics.monitor_status, _key(settings, model_id, group))
    return [MonitorStatus.model_validate_json(v) for v in values]


async def wait_for_status(
    settings: Settings,
    model_id: str,
    done: Callable[[MonitorStatus], bool],
    timeout_s: float,
    group: str | None = None,
) -> MonitorStatus:
    """Poll the status topic until ``done(status)`` holds for ``model_id``'s status of ``group`` (default:
    the configured monitor group); TimeoutError otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        status = await latest_status(settings, model_id, group)
        if status is not None and done(status):
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"monitor status for {model_id!r} did not get there in {timeout_s:.0f} s: {status}")
        await asyncio.sleep(0.5)


def _key(settings: Settings, model_id: str, group: str | None) -> str:
    return status_key(model_id, settings.monitor_group if group is None else group)


async def records_for(settings: Settings, topic: str, key: str) -> list[bytes]:
    """Values of every record on ``topic`` whose key is ``key`` (a model id on most topics), in partition order."""
    return [record.value or b"" async for record in read_topic(settings, topic) if record.key == key.encode()]


async def probe_monitor(settings: Settings, timeout_s: float) -> None:
    """Send a tiny stream for a fresh probe model and wait until the monitor has processed it."""
    from driftwarden_load.producer import ScenarioProducer
    from driftwarden_load.scenarios import Scenario

    probe = Scenario(name="stable", n_events=10, model_id=f"probe-{uuid.uuid4().hex[:8]}")
    await ScenarioProducer(settings, probe, batch_size=10, label_fraction=0.0).run()
    await wait_for_status(settings, probe.model_id, lambda s: s.events_processed == 10, timeout_s)

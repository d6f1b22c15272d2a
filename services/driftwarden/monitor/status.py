"""Read what the monitor reports about itself on the topics (status, dead letters, alerts)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from driftwarden.core.events import MonitorStatus
from driftwarden.kafka.reader import read_topic
from driftwarden.settings import Settings


async def latest_status(settings: Settings, model_id: str) -> MonitorStatus | None:
    """The newest status the monitor published for ``model_id``, if any."""
    values = await records_for(settings, settings.topics.monitor_status, model_id)
    return MonitorStatus.model_validate_json(values[-1]) if values else None


async def status_history(settings: Settings, model_id: str) -> list[MonitorStatus]:
    """Every status the monitor published for ``model_id``, oldest first."""
    return [MonitorStatus.model_validate_json(v) for v in await records_for(settings, settings.topics.monitor_status,
                                                                            model_id)]  # fmt: skip


async def wait_for_status(
    settings: Settings, model_id: str, done: Callable[[MonitorStatus], bool], timeout_s: float
) -> MonitorStatus:
    """Poll the status topic until ``done(status)`` holds for ``model_id``; TimeoutError otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        status = await latest_status(settings, model_id)
        if status is not None and done(status):
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"monitor status for {model_id!r} did not get there in {timeout_s:.0f} s: {status}")
        await asyncio.sleep(0.5)


async def records_for(settings: Settings, topic: str, model_id: str) -> list[bytes]:
    """Values of every record on ``topic`` whose key is ``model_id``, in partition order."""
    return [record.value or b"" async for record in read_topic(settings, topic) if record.key == model_id.encode()]


async def probe_monitor(settings: Settings, timeout_s: float) -> None:
    """Send a tiny stream for a fresh probe model and wait until the monitor has processed it."""
    from driftwarden_load.producer import ScenarioProducer
    from driftwarden_load.scenarios import Scenario

    probe = Scenario(name="stable", n_events=10, model_id=f"probe-{uuid.uuid4().hex[:8]}")
    await ScenarioProducer(settings, probe, batch_size=10, label_fraction=0.0).run()
    await wait_for_status(settings, probe.model_id, lambda s: s.events_processed == 10, timeout_s)

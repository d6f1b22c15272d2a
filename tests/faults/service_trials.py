"""Real service processes for fault trials: started, killed with SIGKILL and restarted, one log per
incarnation; topics of a trial of their own. A plain module (not a conftest) so any fault test can import it.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from driftwarden.kafka.clients import ensure_topics
from driftwarden.kafka.reader import read_topic
from driftwarden.processes import spawn, terminate
from driftwarden.settings import Settings

T = TypeVar("T", bound=BaseModel)


def trial_settings(base: Settings, work: Path, name: str) -> Settings:
    """Topics, groups, registry and state of this trial only (created now); a short session so a killed
    member leaves its group quickly."""
    unique = f"{name}-{uuid.uuid4().hex[:6]}"
    settings = base.model_copy(update={
        "topic_prefix": f"{unique}.", "monitor_group": f"{unique}-monitor", "state_dir": work / unique,
        "registry_dir": work / unique / "registry", "session_timeout_s": 3.0, "heartbeat_interval_s": 0.5,
    })  # fmt: skip
    asyncio.run(ensure_topics(settings, settings.topics.specs(settings.partitions)))
    return settings


class Service:
    """One ``driftwarden ARGS`` process at a time; ``kill()`` is ``kill -9``; every incarnation logs to
    a file of its own (``log``: the current one)."""

    def __init__(self, args: list[str], settings: Settings, work: Path, name: str) -> None:
        self.args, self.settings, self.work, self.name = args, settings, work, name
        self.incarnations = 0
        self.process, self.log = self._spawn()

    def _spawn(self) -> tuple[subprocess.Popen[bytes], Path]:
        self.incarnations += 1
        log = self.work / f"{self.name}-{self.incarnations}.log"
        return spawn(self.args, self.settings, log), log

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def restart(self, args: list[str] | None = None) -> None:
        self.args = args or self.args
        self.process, self.log = self._spawn()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        return terminate(self.process)


def read_events(settings: Settings, topic: str, model: type[T]) -> list[T]:
    """Every record of ``topic`` (to its current end) as ``model``; records that do not parse are left out."""

    async def read() -> list[T]:
        found = []
        async for record in read_topic(settings, topic):
            try:
                found.append(model.model_validate_json(record.value or b""))
            except ValueError:
                continue
        return found

    return asyncio.run(read())

"""What integration tests share besides fixtures (a module of its own: ``from conftest import`` would
find ``tests/faults/conftest.py`` when both directories are collected in one run)."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from driftwarden.settings import Settings
from driftwarden_load.producer import ProduceReport, ScenarioProducer
from driftwarden_load.scenarios import Scenario


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    metrics_port: int
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def produce(settings: Settings, scenario: Scenario, **options: object) -> ProduceReport:
    return asyncio.run(ScenarioProducer(settings, scenario, **options).run())  # type: ignore[arg-type]


def unique_model(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"

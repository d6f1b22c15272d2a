"""The README's producer snippet, run as a user would paste it, against the real broker and monitor."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import unique_model

from driftwarden.monitor.status import wait_for_status
from driftwarden.settings import Settings

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def producer_snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (snippet,) = [b for b in blocks if "AIOKafkaProducer" in b]
    return snippet


def test_readme_producer_snippet_runs_and_its_event_is_monitored(kafka: Settings, monitor_worker, tmp_path):
    model_id = unique_model("readme")
    snippet = (
        producer_snippet()
        .replace("127.0.0.1:9092", kafka.kafka_bootstrap or "")
        .replace('"driftwarden.predictions"', repr(kafka.topics.predictions))
        .replace('"fraud"', repr(model_id))
    )
    script = tmp_path / "snippet.py"
    script.write_text(snippet)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    status = asyncio.run(wait_for_status(kafka, model_id, lambda s: s.events_processed >= 1, timeout_s=60))
    assert (status.events_processed, status.events_dead_lettered) == (1, 0)

"""The README's Python snippets, run as a user would paste them, against the real broker and monitor."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_integration import unique_model

from driftwarden.monitor.status import wait_for_status
from driftwarden.settings import Settings

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def python_snippets() -> list[str]:
    """Every ```python block of the README, in order."""
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_every_readme_python_snippet_runs_as_written_against_the_real_broker(kafka: Settings, monitor_worker, tmp_path):
    """Each snippet runs as a user would paste it (only the broker address, topic and model id are this
    test's own); the producer snippet's event is then monitored."""
    snippets = python_snippets()
    assert sum("AIOKafkaProducer" in snippet for snippet in snippets) == 1
    for number, snippet in enumerate(snippets):
        model_id = unique_model("readme")
        script = tmp_path / f"snippet{number}.py"
        script.write_text(
            snippet.replace("127.0.0.1:9092", kafka.kafka_bootstrap or "")
            .replace('"driftwarden.predictions"', repr(kafka.topics.predictions))
            .replace('"fraud"', repr(model_id))
        )
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 0, f"README python snippet {number}:\n{done.stderr}"
        if "AIOKafkaProducer" in snippet:
            status = asyncio.run(wait_for_status(kafka, model_id, lambda s: s.events_processed >= 1, timeout_s=60))
            assert (status.events_processed, status.events_dead_lettered) == (1, 0)

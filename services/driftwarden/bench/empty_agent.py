"""An empty Faust agent: the framework's own ceiling for ``driftwarden bench throughput``.

Run as ``python -m driftwarden.bench.empty_agent TOPIC EXPECTED_MESSAGES``: it consumes the topic
in batches exactly as the monitor does (``take_events``), does nothing with the messages, and prints
``first=<t> last=<t> messages=<n> first_batch=<n>`` (wall-clock seconds of its first and last batch, the
messages in all, in its first batch) once it has seen them all, then exits.
"""

from __future__ import annotations

import os
import sys
import time

import faust

from driftwarden.kafka.faust_app import create_faust_app, take_events
from driftwarden.settings import Settings


def main() -> None:
    topic_name, expected = sys.argv[1], int(sys.argv[2])
    settings = Settings()
    app = create_faust_app(f"{settings.topic_prefix}empty-agent", settings)
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")
    seen = {"n": 0, "first": 0.0, "first_batch": 0}

    @app.agent(topic, name="empty")
    async def empty(stream: faust.StreamT[bytes]) -> None:
        async for batch in take_events(stream):
            if not seen["n"]:
                seen["first"], seen["first_batch"] = time.time(), len(batch)
            seen["n"] += len(batch)
            if seen["n"] >= expected:
                counts = f"messages={seen['n']} first_batch={seen['first_batch']}"
                print(f"first={seen['first']} last={time.time()} {counts}", flush=True)
                os._exit(0)

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()

"""Supervised background tasks: an unexpected exception is logged, counted, and the task restarted with
backoff; the component's state (``starting``, ``running``, ``failed: ...``) feeds ``/readyz``.

A component is an async function taking a ``started`` callback: it calls it once it is serving (its
consumer joined, say), and runs until cancelled. Returning is a failure too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import Counter

log = logging.getLogger(__name__)

RESTARTS = Counter("driftwarden_serving_task_restarts", "Background tasks restarted after a failure.", ["component"])

Component = Callable[[Callable[[], None]], Awaitable[None]]


@dataclass
class _Status:
    state: str = "starting"
    failures: int = 0


class Supervisor:
    def __init__(self, first_backoff_s: float = 0.5, max_backoff_s: float = 30.0, stable_after_s: float = 60.0) -> None:
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self.stable_after_s = stable_after_s  # a run this long resets the backoff
        self.status: dict[str, _Status] = {}
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, name: str, component: Component) -> None:
        self.status[name] = _Status()
        self.tasks.append(asyncio.create_task(self._supervise(name, component), name=name))

    def problems(self) -> dict[str, str]:
        """The components that are not running, with their state."""
        return {name: status.state for name, status in self.status.items() if status.state != "running"}

    async def _supervise(self, name: str, component: Component) -> None:
        status = self.status[name]
        backoff = self.first_backoff_s

        def started() -> None:
            status.state = "running"

        while True:
            began = time.monotonic()
            try:
                await component(started)
                reason = "stopped unexpectedly"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                log.exception("%s failed", name)
            if time.monotonic() - began >= self.stable_after_s:
                backoff = self.first_backoff_s
            status.failures += 1
            status.state = f"failed ({status.failures}x): {reason}; restarting in {backoff:.1f} s"
            RESTARTS.labels(name).inc()
            log.error("%s %s", name, status.state)
            await asyncio.sleep(backoff)
            status.state = "starting"
            backoff = min(backoff * 2, self.max_backoff_s)

    async def stop(self, timeout_s: float) -> None:
        """Cancel every task; give them ``timeout_s`` to clean up."""
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=timeout_s)

"""``driftwarden ui``: a live page of every model, read from the topics, updated over SSE.

Three readers follow the monitor status, alerts and models topics from their beginning (no consumer
group, nothing committed) into a :class:`~driftwarden.ui.board.Board` of one monitor group's statuses
(``--group``, default the configured group; other groups publishing a model's status are named). The
page (``static/``, uPlot vendored from the npm registry, no CDN) loads ``/api/models`` once and then
listens on ``/events``: a server-sent ``model`` event carries a model's whole view whenever it changed,
at most every ``PUSH_INTERVAL_S``. On a compacted status topic the drift history starts at the statuses the topic
still holds (the latest per model) and grows while the page runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from driftwarden.core.events import Alert, ModelPublished, read_status
from driftwarden.kafka.reader import read_topic
from driftwarden.settings import Settings
from driftwarden.ui.board import Board

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
#: Shortest time between two pushes to one page.
PUSH_INTERVAL_S = 0.5
#: Wait before reading a topic again when it is missing or the broker went away.
RETRY_S = 2.0
BOARD = web.AppKey("board", Board)
CHANGED = web.AppKey("changed", asyncio.Condition)
CLOSING = web.AppKey("closing", asyncio.Event)


def create_app(settings: Settings, group: str) -> web.Application:
    app = web.Application()
    app[BOARD] = Board(group)
    app[CHANGED] = asyncio.Condition()
    app[CLOSING] = asyncio.Event()
    app.router.add_get("/", index)
    app.router.add_get("/api/models", models)
    app.router.add_get("/events", events)
    app.router.add_static("/static/", STATIC)
    app.cleanup_ctx.append(lambda app: _followers(app, settings))
    app.on_shutdown.append(_close_streams)
    return app


async def _close_streams(app: web.Application) -> None:
    """End every event stream now: the server waits for open requests before it exits, and a stream
    whose page went away would otherwise only notice at its next keep-alive."""
    app[CLOSING].set()
    async with app[CHANGED]:
        app[CHANGED].notify_all()


async def _followers(app: web.Application, settings: Settings) -> AsyncIterator[None]:
    board = app[BOARD]
    topics = settings.topics
    readers: list[tuple[str, Callable[[bytes], Any], Callable[[Any], None]]] = [
        (topics.monitor_status, read_status, board.status),
        (topics.alerts, Alert.model_validate_json, board.alert),
        (topics.models, ModelPublished.model_validate_json, board.verdict),
    ]
    tasks = [asyncio.create_task(_follow(settings, *reader, app[CHANGED])) for reader in readers]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _follow(
    settings: Settings,
    topic: str,
    parse: Callable[[bytes], Any],
    apply: Callable[[Any], None],
    changed: asyncio.Condition,
) -> None:
    """Apply every valid record of ``topic`` to the board, following it; skip invalid ones with a log line."""
    offsets: dict[int, int] = {}  # next offset per partition: a re-read after an error skips what was applied
    while True:
        try:
            async for record in read_topic(settings, topic, follow=True):
                if record.offset < offsets.get(record.partition, 0):
                    continue
                offsets[record.partition] = record.offset + 1
                try:
                    apply(parse(record.value or b""))
                except ValidationError as exc:
                    log.warning("%s[%d]@%d: not a valid record, skipped: %s", topic, record.partition, record.offset,
                                exc.errors()[0]["msg"])  # fmt: skip
                    continue
                async with changed:
                    changed.notify_all()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a missing topic or a broker outage: the page stays up and reads again
            log.warning("reading %s failed (%s); again in %.0f s", topic, exc, RETRY_S)
            await asyncio.sleep(RETRY_S)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def models(request: web.Request) -> web.Response:
    board = request.app[BOARD]
    body = orjson.dumps({"models": [board.view(model_id) for model_id in sorted(board.models)]})
    return web.Response(body=body, content_type="application/json")


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: each model's view whenever it changed (all of them first)."""
    board, changed, closing = request.app[BOARD], request.app[CHANGED], request.app[CLOSING]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    sent: dict[str, int] = {}
    while not closing.is_set():
        for model_id in board.changed_since(sent):
            view = board.view(model_id)
            sent[model_id] = view["revision"]
            await response.write(b"event: model\ndata: " + orjson.dumps(view) + b"\n\n")
        await asyncio.sleep(PUSH_INTERVAL_S)
        async with changed:
            with contextlib.suppress(TimeoutError):  # a comment now and then keeps proxies from closing it
                await asyncio.wait_for(
                    changed.wait_for(lambda: closing.is_set() or bool(board.changed_since(sent))), 15
                )
        if not closing.is_set() and not board.changed_since(sent):
            await response.write(b": keep-alive\n\n")
    return response


def run_ui(settings: Settings, host: str, port: int, ready: Callable[[str], None], group: str) -> None:
    """Serve the page of monitor group ``group``'s statuses until SIGINT/SIGTERM."""
    web.run_app(create_app(settings, group), host=host, port=port, print=lambda _: ready(f"http://{host}:{port}/"),
                handle_signals=True)  # fmt: skip

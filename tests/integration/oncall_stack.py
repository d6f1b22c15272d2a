"""Real Prometheus, Alertmanager and an aiohttp webhook receiver on free loopback ports, for the on-call tests."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from ruamel.yaml import YAML

from driftwarden.kafka.broker import free_port
from driftwarden.processes import terminate

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
T = TypeVar("T")


def binary(*names: str) -> str:
    for name in names:
        if path := shutil.which(name):
            return path
    raise RuntimeError(f"{' or '.join(names)} not found: `make test` installs Debian's prometheus and "
                       "prometheus-alertmanager (as root), or install them yourself")  # fmt: skip


def poll(check: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.5) -> T:
    """Call ``check`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen in {timeout_s:.0f} s (last: {result!r})")
        time.sleep(interval_s)


def get_json(url: str, params: dict[str, str] | None = None) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(url + query, timeout=10) as response:
        return json.loads(response.read())


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class Server:
    """A child process serving HTTP on ``port``; ready once ``/-/ready`` answers."""

    def __init__(self, args: list[str], port: int, log_path: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            poll(lambda: self.process.poll() is not None or answers(f"{self.url}/-/ready"), 60, f"{args[0]} ready")
        except TimeoutError:
            self.stop()
            raise
        if self.process.poll() is not None:
            raise RuntimeError(f"{args[0]} exited:\n{log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        terminate(self.process)  # type: ignore[arg-type]


def start_alertmanager(work: Path) -> Server:
    """The shipped deploy/alertmanager/alertmanager.yml, clustering off, state in ``work``."""
    port = free_port()
    config = DEPLOY / "alertmanager/alertmanager.yml"
    args = [binary("prometheus-alertmanager", "alertmanager"), f"--config.file={config}",
            f"--storage.path={work / 'alertmanager'}", f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address="]  # fmt: skip
    return Server(args, port, work / "alertmanager.log")


def start_prometheus(work: Path, targets: dict[str, str], alertmanager: str) -> Server:
    """The shipped prometheus.yml and rule files, with static loopback targets and 1 s intervals.

    ``targets`` maps a shipped job name to host:port; jobs not in it are dropped (not running here).
    """
    yaml = YAML(typ="safe")
    config = yaml.load((DEPLOY / "prometheus/prometheus.yml").read_text())
    config["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] in targets:
            job.pop("dns_sd_configs")
            jobs.append(job | {"static_configs": [{"targets": [targets[job["job_name"]]]}]})
    assert {j["job_name"] for j in jobs} == set(targets), "a target for a job the shipped config does not have"
    config["scrape_configs"] = jobs
    directory = work / "prometheus"
    shutil.copytree(DEPLOY / "prometheus/rules", directory / "rules")
    with (directory / "prometheus.yml").open("w") as file:
        yaml.dump(config, file)
    port = free_port()
    args = [binary("prometheus"), f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
    return Server(args, port, work / "prometheus.log")


class WebhookReceiver:
    """A real aiohttp server that checks the HMAC signature independently and dedupes by CloudEvent id.

    The first ``fail_first`` correctly signed deliveries get 503, to make notify retry.
    """

    def __init__(self, secret: bytes, fail_first: int = 0) -> None:
        self.secret = secret
        self.fail_first = fail_first
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.events: dict[str, dict[str, Any]] = {}
        self.signed_deliveries = 0
        self.bad_signatures = 0
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers.get("X-Driftwarden-Timestamp", "")
        digest = hmac.new(self.secret, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        expected = f"t={stamp},v1={digest}"
        fresh = stamp.isdigit() and abs(time.time() - int(stamp)) <= 300
        if not fresh or not hmac.compare_digest(request.headers.get("X-Driftwarden-Signature", ""), expected):
            self.bad_signatures += 1
            return web.Response(status=401)
        self.signed_deliveries += 1
        if self.signed_deliveries <= self.fail_first:
            return web.Response(status=503)
        assert request.content_type == "application/cloudevents+json"
        event = json.loads(body)
        self.events.setdefault(event["id"], event)  # dedupe by id: redeliveries are harmless
        return web.Response(status=204)

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

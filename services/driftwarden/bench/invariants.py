"""The invariants every fault trial checks after its faults, from what outlives the processes: the
topics, the consumer groups' committed offsets and the model registry. Each check returns a list of
problems (empty when the invariant holds), so a trial reports all of them at once.

Shared by the monitor kill trials (:mod:`driftwarden.bench.kill_trials`) and the trainer, serving
and through-Kafka fuzz trials in ``tests/faults``.

>>> from driftwarden.core.events import DeadLetter
>>> letter = DeadLetter(ts=1, source_topic="t", source_partition=0, source_offset=7, reason="bad", payload_b64="")
>>> sorted(dead_letter_coordinates([letter, letter]))  # a replay writes the same dead letter again
[('t', 0, 7, None)]
>>> accounting_problems("m", produced=10, processed=8, dead_lettered=2)
[]
>>> accounting_problems("m", produced=10, processed=7, dead_lettered=2)
['m: produced 10, processed 7 + dead-lettered 2 = 9']
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable

from driftwarden.core.events import Alert, DeadLetter, ModelPublished
from driftwarden.registry.store import ModelRegistry, RegistryError

#: Where a dead letter came from: (topic, partition, offset, index in a batch envelope).
Coordinates = tuple[str, int, int, int | None]


def dead_letter_coordinates(letters: Iterable[DeadLetter]) -> set[Coordinates]:
    """The distinct inputs dead-lettered (a replayed input is dead-lettered again with the same coordinates)."""
    return {(d.source_topic, d.source_partition, d.source_offset, d.batch_index) for d in letters}


def accounting_problems(what: str, produced: int, processed: int, dead_lettered: int) -> list[str]:
    """produced = processed + dead-lettered, exactly."""
    if produced == processed + dead_lettered:
        return []
    return [f"{what}: produced {produced:,}, processed {processed:,} + dead-lettered {dead_lettered:,} "
            f"= {processed + dead_lettered:,}"]  # fmt: skip


def alert_id_problems(what: str, alerts: Iterable[Alert]) -> tuple[int, list[str]]:
    """How many distinct alerts (fingerprint and state) there are, and those raised again under a new id."""
    ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    for alert in alerts:
        ids[(alert.fingerprint, alert.state)].add(alert.alert_id)
    duplicated = {k: v for k, v in ids.items() if len(v) > 1}
    return len(ids), [f"{what}: alerts raised again under new ids: {duplicated}"] if duplicated else []


def verdict_problems(command_ids: Iterable[str], verdicts: Iterable[ModelPublished]) -> list[str]:
    """Every command has a verdict, and every verdict of one command says the same (a replayed command
    republishes its verdict: at least once, never a different one)."""
    said: dict[str, set[tuple[str, str, str | None]]] = defaultdict(set)
    for v in verdicts:
        said[v.command_id].add((v.model_version, v.status, v.sha256))
    problems = [f"command {c}: no verdict" for c in command_ids if not said[c]]
    return problems + [f"command {c}: different verdicts {sorted(s, key=str)}" for c, s in said.items() if len(s) > 1]


def registry_problems(registry: ModelRegistry, model_id: str, verdicts: Iterable[ModelPublished]) -> list[str]:
    """No command registered two versions; every version is whole (manifest and model matching its
    sha256); every published verdict names a registered version with its sha256; the champion is
    the newest version a verdict promoted."""
    problems: list[str] = []
    by_command: dict[str | None, list[str]] = defaultdict(list)
    for manifest in registry.manifests(model_id):
        by_command[manifest.command_id].append(manifest.version)
        try:
            registry.load(model_id, manifest.version)
        except RegistryError as exc:
            problems.append(f"a partially written version: {exc}")
    problems += [f"command {c} registered versions {v}" for c, v in by_command.items() if c and len(v) > 1]
    promoted = "0"
    for v in verdicts:
        if v.sha256 is None:
            continue
        try:
            if registry.manifest(model_id, v.model_version).sha256 != v.sha256:
                problems.append(f"verdict for v{v.model_version}: sha256 differs from the registry's")
        except RegistryError as exc:
            problems.append(f"a verdict names a version the registry lacks: {exc}")
        if v.status == "promoted":
            promoted = max(promoted, v.model_version, key=int)
    champion = registry.champion(model_id)
    if promoted != "0" and (champion is None or champion.version != promoted):
        problems.append(f"champion is {champion and champion.version}, the newest promoted verdict says v{promoted}")
    return problems


def wait_counts(read: Callable[[], dict[str, int]], expected: dict[str, int], stall_s: float = 90.0) -> None:
    """Poll ``read()`` until every count reached its expected value. Bounded by progress, not by the
    clock (a loaded machine is slow, not stuck): TimeoutError once no count moved for ``stall_s``."""
    counts, moved_at = read(), time.monotonic()
    while any(counts.get(key, 0) < n for key, n in expected.items()):
        if time.monotonic() - moved_at > stall_s:
            raise TimeoutError(f"counts stuck for {stall_s:.0f} s at {counts}, expected {expected}")
        time.sleep(0.5)
        previous, counts = counts, read()
        if counts != previous:
            moved_at = time.monotonic()

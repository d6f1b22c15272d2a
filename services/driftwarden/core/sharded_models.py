"""The sharded path of a monitor worker: the shards it reads, the models it owns, their state.

A model is sharded when its config says ``shards > 1`` (:mod:`driftwarden.core.shards`). A worker holds,
per **input partition** it reads, a :class:`~driftwarden.core.shards.ShardSummarizer` per shard (and model
version) keyed to it, and per **window-summaries partition** it reads, the owner of each model whose
summaries land there (a :class:`~driftwarden.core.shards.SummaryMerger` and an
:class:`~driftwarden.core.alerting.AlertBook`). Both are state of their partition: :meth:`ShardedModels.export`
and :meth:`ShardedModels.restore` move it through the monitor's checkpoints with the offsets it covers,
so a restart or a rebalance restores it and replays what followed (a replay regenerates the same
summaries with the same ``seq``, which the owner drops as duplicates).

A sharded model's reference must be a profile from ``load_profile`` (every shard needs the same one):
without one its events are counted as ``unprofiled`` and not monitored. An owner's findings fire alerts
through its AlertBook (one open alert per feature, resolved by window tests that pass with a margin, as
on the single-worker path).

>>> models = ShardedModels(MonitoringConfig.from_dict({"models": {"hot": {"shards": 4}}}), lambda m, v: None)
>>> models.shards_of("hot"), models.shards_of("cold")
(4, 1)
>>> models.export(0) is None  # no shard read, no model owned on partition 0: its checkpoint is the core's
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from driftwarden.core.alerting import AlertBook, Finding, passes_with_margin
from driftwarden.core.config import MonitoringConfig
from driftwarden.core.events import Alert, MonitorStatusV1, PredictionEvent, Scalar, WindowSummary
from driftwarden.core.profile import FeatureSchema, ReferenceProfile, schema_of, to_columns
from driftwarden.core.shards import Decision, ShardBatch, ShardedReference, ShardSummarizer, SummaryMerger
from driftwarden.core.state import State, StateError, StateReader


@dataclass
class Owner:
    """The owner of one version of a sharded model."""

    merger: SummaryMerger
    book: AlertBook
    alerts: int = 0  # alerts fired


class ShardedModels:
    """The summarizers and owners of one worker of consumer group ``group``, by partition (pure: the service
    moves the summaries). Its summaries carry ``group``; its owners merge only those of ``group`` (others,
    of another group reading the same predictions, are counted in ``foreign`` and left alone)."""

    def __init__(self, config: MonitoringConfig, load_profile: Callable[[str, str], ReferenceProfile | None],
                 group: str = "") -> None:  # fmt: skip
        self.config, self.load_profile, self.group = config, load_profile, group
        self.foreign = 0
        self.references: dict[tuple[str, str], tuple[ShardedReference, FeatureSchema] | None] = {}
        self.summarizers: dict[int, dict[tuple[str, str, int], ShardSummarizer]] = {}  # by input partition
        self.owners: dict[int, dict[tuple[str, str], Owner]] = {}  # by window-summaries partition
        self.unprofiled = 0

    def shards_of(self, model_id: str) -> int:
        return self.config.for_model(model_id).shards

    def _reference(self, model_id: str, model_version: str) -> tuple[ShardedReference, FeatureSchema] | None:
        key = (model_id, model_version)
        if key not in self.references:
            profile = self.load_profile(model_id, model_version)
            self.references[key] = None if profile is None else (ShardedReference.of(profile), schema_of(profile))
        return self.references[key]

    def summarize(self, topic: str, partition: int, offset: int, model_id: str, shard: int,
                  events: Sequence[PredictionEvent]) -> list[WindowSummary]:  # fmt: skip
        """Count the events of one input message (at ``offset`` of ``topic``/``partition``) of one shard of a
        sharded model; the summaries of the buckets they close. Call it once per message, in offset order."""
        config, shards = self.config.for_model(model_id), self.shards_of(model_id)
        summarizers = self.summarizers.setdefault(partition, {})
        summaries: list[WindowSummary] = []
        for version in dict.fromkeys(e.model_version for e in events):
            of_version = [e for e in events if e.model_version == version]
            reference = self._reference(model_id, version)
            if reference is None:
                self.unprofiled += len(of_version)
                continue
            key = (model_id, version, shard)
            if key not in summarizers:
                summarizers[key] = ShardSummarizer(model_id, version, reference[0], shard, shards,
                                                   config.bucket_seconds, config.shard_lateness_s, topic, partition,
                                                   offset, self.group)  # fmt: skip
            batch = ShardBatch.of_columns(to_columns(of_version, reference[1]), reference[1])
            summaries += summarizers[key].add(batch)
        return summaries

    def merge(self, partition: int, summary: WindowSummary, now: float) -> list[Alert]:
        """Take one summary read from ``partition`` of the window-summaries topic into its model's owner; the
        alerts its decisions fire. ``now``: wall-clock time (a shard silent for ``shard_idle_s`` stops
        holding decisions back). A summary that cannot be merged raises ValueError with the reason (no
        profile of its model version, :meth:`~driftwarden.core.shards.SummaryMerger.refusal`); the caller
        dead-letters it and calls :meth:`skip`."""
        if summary.group != self.group:
            self.foreign += 1
            return []
        key = (summary.model_id, summary.model_version)
        owners = self.owners.setdefault(partition, {})
        owner = owners.get(key) or self._owner(*key, self.shards_of(summary.model_id))
        if owner is None:
            raise ValueError(f"no reference profile of {summary.model_id} version {summary.model_version} here")
        owners[key] = owner
        return self._alerts(owner, owner.merger.add(summary, now), summary.bucket_seconds, now)

    def skip(self, partition: int, summary: WindowSummary, now: float) -> None:
        """The owner of ``summary`` (read from ``partition``) moves past it without merging it: it was
        dead-lettered, and what its stream holds behind it is merged (decided by the next :meth:`decide_idle`)."""
        owner = self.owners.get(partition, {}).get((summary.model_id, summary.model_version))
        if owner is not None and summary.group == self.group:
            owner.merger.skip(summary, now)

    def decide_idle(self, now: float) -> tuple[list[Alert], set[int]]:
        """Decisions that wait for no silent shard (or gap) any more: their alerts, and the partitions that
        changed."""
        alerts, changed = [], set()
        for partition, owners in self.owners.items():
            for owner in owners.values():
                missing = owner.merger.missing
                decisions = owner.merger.decide(now)
                if decisions or owner.merger.missing != missing:
                    changed.add(partition)
                    alerts += self._alerts(owner, decisions, self.config.for_model(owner.book.model_id).bucket_seconds,
                                           now)  # fmt: skip
        return alerts, changed

    def _owner(self, model_id: str, model_version: str, shards: int) -> Owner | None:
        reference = self._reference(model_id, model_version)
        if reference is None:
            return None
        config = self.config.for_model(model_id)
        merger = SummaryMerger(reference[0], shards, config.streaming_arl(len(reference[0].numeric)),
                               config.window_size, config.window_level, config.js_threshold,
                               config.shard_idle_s)  # fmt: skip
        book = AlertBook(model_id, model_version, config.resolve_after_windows, config.cooldown_s,
                         config.repeat_tolerance)  # fmt: skip
        return Owner(merger, book)

    def _alerts(self, owner: Owner, decisions: list[Decision], bucket_seconds: float, now: float) -> list[Alert]:
        book = owner.book
        resolve_p_value = self.config.for_model(book.model_id).resolve_p_value
        alerts = []
        for decision in decisions:
            alert = book.report(_finding(decision, resolve_p_value),
                                f"{book.model_id}/{book.model_version}/bucket/{decision.bucket}",
                                (decision.bucket + 1) * bucket_seconds, now)  # fmt: skip
            if alert is not None:
                alerts.append(alert)
        owner.alerts += len(alerts)
        return alerts

    def statuses(self, now: float) -> list[MonitorStatusV1]:
        """Per owned model: the events merged over its shards (every version) and the alerts fired."""
        models: dict[str, list[Owner]] = {}
        for owners in self.owners.values():
            for (model_id, _), owner in sorted(owners.items()):
                models.setdefault(model_id, []).append(owner)
        return [
            MonitorStatusV1(
                model_id=model_id,
                ts=now,
                model_version=owners[-1].book.model_version,
                events_processed=sum(o.merger.merged_events for o in owners),
                events_dead_lettered=0,
                alerts_fired=sum(o.alerts for o in owners),
                alerts_suppressed=sum(o.book.suppressed for o in owners),
            )
            for model_id, owners in sorted(models.items())
        ]

    def mergers(self) -> list[tuple[tuple[str, str], SummaryMerger]]:
        """Every owner's merger, by (model_id, model_version)."""
        return [(key, owner.merger) for owners in self.owners.values() for key, owner in sorted(owners.items())]

    # -- state, per partition ------------------------------------------------------------------------

    def export(self, partition: int) -> State | None:
        """The summarizers and owners of ``partition`` (None: it has none)."""
        summarizers = self.summarizers.get(partition, {})
        owners = self.owners.get(partition, {})
        if not summarizers and not owners:
            return None
        return {
            "summarizers": [summarizer.state() for _, summarizer in sorted(summarizers.items())],
            "owners": [
                {"merger": o.merger.state(), "book": o.book.state(), "alerts": o.alerts}
                for _, o in sorted(owners.items())
            ],
        }

    def restore(self, partition: int, state: StateReader) -> None:
        """Replace ``partition``'s summarizers and owners by those of ``state`` (of :meth:`export`)."""
        summarizers: dict[tuple[str, str, int], ShardSummarizer] = {}
        for row in state.children("summarizers"):
            reference = self._restored_reference(row)
            summarizer = ShardSummarizer.from_state(row, reference)
            summarizers[(summarizer.model_id, summarizer.model_version, summarizer.shard)] = summarizer
        owners: dict[tuple[str, str], Owner] = {}
        for row in state.children("owners"):
            book = AlertBook.from_state(row.child("book"))
            merger_state = row.child("merger")
            owner = self._owner(book.model_id, book.model_version, merger_state.integer("shards", 1))
            if owner is None:
                raise StateError(f"{row.where}: no profile of {book.model_id} version {book.model_version}")
            owner.merger.restore(merger_state)
            owners[(book.model_id, book.model_version)] = Owner(owner.merger, book, row.integer("alerts"))
        self.summarizers[partition], self.owners[partition] = summarizers, owners

    def _restored_reference(self, row: StateReader) -> ShardedReference:
        reference = self._reference(row.text("model_id"), row.text("model_version"))
        if reference is None:
            raise StateError(f"{row.where}: no profile of {row.text('model_id')} version {row.text('model_version')}")
        return reference[0]

    def forget(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self.summarizers.pop(partition, None)
            self.owners.pop(partition, None)


def _finding(decision: Decision, resolve_p_value: float) -> Finding:
    evidence: dict[str, Scalar] = {"statistic": decision.statistic, "threshold": decision.threshold,
                                   "bucket": decision.bucket}  # fmt: skip
    if decision.kind == "window":
        evidence |= {"p_value": decision.p_value, "window_values": decision.values, "current_mean": decision.mean}
        summary = (
            f"{decision.feature}: the window's binned ranks differ from the reference (p = {decision.p_value:.2g})"
        )
    else:
        summary = f"{decision.feature}: CUSUM '{decision.detector}' crossed its threshold over merged shards"
    detector = "sharded_chi2" if decision.kind == "window" else "sharded_rank_cusum"
    settled = not decision.drifted and passes_with_margin(evidence, resolve_p_value)
    return Finding("data_drift", decision.feature, detector, decision.drifted, evidence, summary, settled=settled)

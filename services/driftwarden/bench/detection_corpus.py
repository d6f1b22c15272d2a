"""Running the shape corpus (:mod:`driftwarden.bench.detection_shapes`): delays, misses, false alarms.

One task per (family, seed): a stable stream of ``stable_events`` values, then one stream per
(change type, KL size) with ``onset`` unchanged values and a change lasting ``8 x`` Lorden's bound
(at least 2,000 values). Every stream has its own reference of ``reference_size`` values from the
unchanged distribution. Each configuration watches the values; unchanged values (the stable stream
and every stream's part before its change) give the false alarms, the first alarm after a change
its delay (changed values consumed, so the bound ``ln(arl) / KL`` compares directly).

Configurations: driftwarden's default detector set for a one-feature model (:data:`DRIFTWARDEN`: an
alarm is whichever of its streaming detector and its window tests fires first, the source recorded);
each of them alone: the streaming detector (:class:`RankCusumDetector` at the monitor's streaming
share of one false alarm per million values; a categorical feature on its categories' frequency ranks,
as the monitor runs it) and the window tests as the monitor
runs them (:class:`WindowRun`); River's ADWIN and PageHinkley with default parameters on values
standardized by the reference (as River users would); KSWIN (default parameters, ~170 µs per update:
change streams of the first ``kswin_seeds`` seeds only); a windowed two-sample test per 1,000 values
(KS for numbers, chi² for categories, p < 0.05: NannyML's default univariate drift method); the
dummies.

>>> settings = CorpusSettings(seeds=1, stable_events=2_000, kl_sizes=(0.2,), families=("poisson",), kswin_seeds=0)
>>> rows = run_family("poisson", 0, settings, _thetas("poisson", (0.2,)))
>>> sorted({row.change for row in rows})
['location', 'mixture', 'scale', 'stable']
>>> sorted({row.source for row in rows if row.configuration == DRIFTWARDEN and row.changed})
['streaming']
"""

from __future__ import annotations

import math
import os
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import orjson
from river import drift
from scipy import stats

from driftwarden.bench.detection_shapes import (
    CHANGES,
    FAMILIES,
    category_probabilities,
    category_theta_for,
    change,
    lorden_bound,
    theta_for,
)
from driftwarden.core.config import ModelMonitorConfig
from driftwarden.core.detectors import RankCusumDetector, decide, window_detectors
from driftwarden.core.monitor import (
    DRIFT_KINDS,
    category_alarm,
    category_detector,
    category_ranking,
    category_ranks,
    drift_severity,
)
from driftwarden.core.profile import CategoricalProfile, Columns, NumericProfile, ReferenceProfile

#: The monitor's default set for a one-feature model: the streaming detector and the window tests.
DRIFTWARDEN = "driftwarden (default)"
STREAMING = "driftwarden streaming only"
WINDOW_TESTS = "driftwarden window tests only"
#: Where a default-set alarm came from (``CorpusRow.source``).
SOURCES = {STREAMING: "streaming", WINDOW_TESTS: "window"}
WINDOWED = "windowed KS/chi² (1,000, p<0.05)"
CATEGORICAL = "categorical"
ALL_FAMILIES = (*FAMILIES, CATEGORICAL)
ThetaTable = dict[tuple[str, str, float], float]


@dataclass(frozen=True)
class CorpusSettings:
    seeds: int = 10
    stable_events: int = 111_112  # per family and seed: 9 families x 10 seeds x 111,112 > 10M
    kl_sizes: tuple[float, ...] = (0.02, 0.05, 0.2)
    families: tuple[str, ...] = ALL_FAMILIES
    reference_size: int = 5_000
    onset: int = 2_000
    kswin_seeds: int = 2
    period: int = 1_000
    false_alarms_per_million: float = ModelMonitorConfig().false_alarms_per_million

    @property
    def arl(self) -> float:
        """Values between false alarms of a one-feature model at the budget (what Lorden's bound uses)."""
        return 1e6 / self.false_alarms_per_million

    @property
    def detector_arl(self) -> float:
        """The streaming detector's share of that budget, as the monitor sets it for a one-feature model."""
        return ModelMonitorConfig(false_alarms_per_million=self.false_alarms_per_million).streaming_arl(1)


@dataclass
class CorpusRow:
    """One configuration on one stream: its alarms split into false ones and the detection."""

    family: str
    change: str  # or "stable"
    kl: float | None
    seed: int
    configuration: str
    unchanged_values: int
    false_alarms: int
    critical_false_alarms: int = 0
    delay: int | None = None  # changed values consumed by the first alarm after the change
    bound: float | None = None
    changed: bool = False
    source: str | None = None  # the default set's detection: "streaming" or "window"

    @property
    def missed(self) -> bool:
        return self.changed and self.delay is None


Run = Callable[[np.ndarray], list[int]]


@dataclass(frozen=True)
class Alarm:
    at: int  # the value it came on
    critical: bool = False
    source: str | None = None


class DriftwardenRun:
    """driftwarden's streaming detector on a fresh stream, as the monitor runs it on a one-feature model (a
    categorical feature: on its categories' frequency ranks); remembers which alarms were ``critical``."""

    def __init__(self, reference: np.ndarray, categorical: bool, settings: CorpusSettings) -> None:
        self.profile = one_feature_profile(reference, categorical)
        self.categorical = categorical
        self.arl = settings.detector_arl
        self.config = ModelMonitorConfig()
        self.critical: list[bool] = []

    def __call__(self, values: np.ndarray) -> list[int]:
        codes: dict[str, int] = {}
        if self.categorical:
            codes, counts = category_ranking(self.profile.categorical["x"])
            detector = category_detector(counts, self.arl, 0)
            values = category_ranks(_codes(values), codes)
        else:
            numeric = self.profile.numeric["x"]
            detector = RankCusumDetector(numeric.quantiles, numeric.n, self.arl)
        alarms: list[int] = []
        self.critical = []

        def on_drift(i: int) -> None:  # critical as the monitor judges it
            alarms.append(i)
            categorical = self.profile.categorical
            evidence = category_alarm(categorical["x"], codes, detector)[1] if codes else detector.evidence()
            self.critical.append(drift_severity(self.config, evidence) == "critical")

        detector.update_many(values, on_drift)
        return alarms


def monitor_windows(n: int, config: ModelMonitorConfig) -> list[tuple[int, int]]:
    """(start, stop) of the windows the monitor tests in the first ``n`` values after its reference.

    The early looks at the growing first window, then tumbling windows of ``window_size``.

    >>> monitor_windows(4_500, ModelMonitorConfig())
    [(0, 125), (0, 250), (0, 500), (0, 1000), (0, 2000), (2000, 4000)]
    """
    size = config.window_size
    looks = [(0, stop) for stop in config.early_looks_at if stop <= n]
    return looks + [(start, start + size) for start in range(0, n - size + 1, size)]


def _codes(values: np.ndarray) -> list[str | None]:
    """The categorical family's values as the category labels a monitor sees."""
    return [str(int(v)) for v in values]


def one_feature_profile(reference: np.ndarray, categorical: bool) -> ReferenceProfile:
    """The reference profile of a model whose one feature ``x`` has these reference values (no prediction signal)."""
    numeric, categories = {}, {}
    if categorical:
        counts = Counter(_codes(reference))
        categories["x"] = CategoricalProfile({str(c): n for c, n in sorted(counts.items())}, 0.0)
    else:
        numeric["x"] = NumericProfile.of(reference, 0.0)
    return ReferenceProfile("shapes", "1", len(reference), "regression", None, numeric, categories, None, None)


class WindowRun:
    """The monitor's window tests for a one-feature model on a fresh stream; remembers which alarms were critical.

    The detectors :func:`window_detectors` makes for the feature's profile, on the monitor's windows
    (:func:`monitor_windows`), decided together by :func:`decide` at ``window_level`` (the window
    tests' quarter of the budget). An alarm is a window where a distribution test drifted (its p-value
    and its effect floor; data-quality checks are not counted), on the window's last value; it is
    critical by the monitor's severity floors.
    """

    def __init__(self, reference: np.ndarray, categorical: bool, settings: CorpusSettings) -> None:
        self.config = ModelMonitorConfig(false_alarms_per_million=settings.false_alarms_per_million)
        self.categorical = categorical
        self.detectors = window_detectors(one_feature_profile(reference, categorical), self.config)
        self.critical: list[bool] = []

    def __call__(self, values: np.ndarray) -> list[int]:
        if self.categorical:
            rows = Columns.of_rows(np.empty((len(values), 0)), categorical=[_codes(values)])
        else:
            rows = Columns.of_rows(values[:, None])
        alarms: list[int] = []
        self.critical = []
        for start, stop in monitor_windows(len(values), self.config):
            tested = [d for d in self.detectors if d.update(rows.slice(start, stop))]
            decide(tested, self.config.window_level)
            drifted = [d for d in tested if d.drift_detected and d.kind in DRIFT_KINDS]
            if drifted:
                alarms.append(stop - 1)
                self.critical.append(any(drift_severity(self.config, d.evidence()) == "critical" for d in drifted))
        return alarms


def default_set(streaming: list[Alarm], window: list[Alarm]) -> list[Alarm]:
    """The alarms of the monitor's default set, in the order it raises them, each with its source.

    On the same value the streaming alarm comes first (the monitor feeds a window's values to the
    streaming detector before it tests the window).

    >>> default_set([Alarm(5, source="streaming")], [Alarm(5, True, "window"), Alarm(1, source="window")])
    [Alarm(at=1, critical=False, source='window'), Alarm(at=5, critical=False, source='streaming'), \
Alarm(at=5, critical=True, source='window')]
    """
    return sorted(streaming + window, key=lambda a: (a.at, a.source != "streaming"))


def _river(factory: Callable[[], Any], mean: float, std: float) -> Run:
    def run(values: np.ndarray) -> list[int]:
        detector, alarms = factory(), []
        update = detector.update
        for i, x in enumerate(((values - mean) / (std or 1.0)).tolist()):
            update(x)
            if detector.drift_detected:
                alarms.append(i)
        return alarms

    return run


def _windowed(reference: np.ndarray, categorical: bool, size: int = 1_000) -> Run:
    levels, counts = np.unique(reference, return_counts=True)
    expected = counts / len(reference)

    def run(values: np.ndarray) -> list[int]:
        alarms = []
        for end in range(size, len(values) + 1, size):
            window = values[end - size : end]
            if categorical:
                counts = np.array([np.sum(window == v) for v in levels], dtype=float)
                p = stats.chisquare(counts, expected * counts.sum()).pvalue
            else:
                p = stats.ks_2samp(reference, window).pvalue
            if p < 0.05:
                alarms.append(end - 1)
        return alarms

    return run


def _periodic(period: int) -> Run:
    return lambda values: list(range(period - 1, len(values), period)) if period else []


def watchers(reference: np.ndarray, categorical: bool, settings: CorpusSettings, kswin: bool) -> list[tuple[str, Run]]:
    """Every configuration for a stream with this reference."""
    mean, std = float(reference.mean()), float(reference.std())
    configurations: list[tuple[str, Run]] = [
        (STREAMING, DriftwardenRun(reference, categorical, settings)),
        (WINDOW_TESTS, WindowRun(reference, categorical, settings)),
        ("ADWIN", _river(drift.ADWIN, mean, std)),
        ("PageHinkley", _river(drift.PageHinkley, mean, std)),
    ]
    if kswin:
        configurations.append(("KSWIN", _river(lambda: drift.KSWIN(seed=1), mean, std)))
    configurations.append((WINDOWED, _windowed(reference, categorical)))
    configurations.append((f"retrain every {settings.period:,}", _periodic(settings.period)))
    configurations.append(("never retrain", _periodic(0)))
    return configurations


def _sampler(family: str, kind: str, theta: float) -> tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]]:
    if family == CATEGORICAL:  # category codes ranked by reference frequency (0: the most common)
        before, after = category_probabilities(0.0), category_probabilities(theta)
        return (lambda rng, n: rng.choice(len(before), size=n, p=before).astype(float),
                lambda rng, n: rng.choice(len(after), size=n, p=after).astype(float))  # fmt: skip
    pre, post = change(family, kind, theta)
    return pre.sample, post.sample


def _score(
    family: str, kind: str, kl: float | None, seed: int, values: np.ndarray, onset: int, settings: CorpusSettings,
    reference: np.ndarray, kswin: bool,
) -> list[CorpusRow]:  # fmt: skip
    found: dict[str, list[Alarm]] = {}
    for name, run in watchers(reference, family == CATEGORICAL, settings, kswin):
        at = run(values)
        flags = run.critical if isinstance(run, DriftwardenRun | WindowRun) else [False] * len(at)
        found[name] = [Alarm(a, c, SOURCES.get(name)) for a, c in zip(at, flags, strict=True)]
    found = {DRIFTWARDEN: default_set(found[STREAMING], found[WINDOW_TESTS])} | found
    bound = lorden_bound(kl, settings.arl) if kl else None
    rows = []
    for name, alarms in found.items():
        false = [a for a in alarms if a.at < onset]
        after = [a for a in alarms if a.at >= onset]
        rows.append(
            CorpusRow(
                family, kind, kl, seed, name, onset, len(false), sum(a.critical for a in false),
                after[0].at - onset + 1 if after else None, bound, kl is not None,
                after[0].source if after and name == DRIFTWARDEN else None,
            )
        )  # fmt: skip
    return rows


def run_family(family: str, seed: int, settings: CorpusSettings, thetas: ThetaTable) -> list[CorpusRow]:
    """Every stream of one family and seed (the stable one first)."""
    rng = np.random.default_rng([seed, ALL_FAMILIES.index(family)])
    kinds = ("mixture",) if family == CATEGORICAL else CHANGES[family]
    before, _ = _sampler(family, kinds[0], 0.0)
    reference = before(rng, settings.reference_size)
    stable = before(rng, settings.stable_events)
    rows = _score(family, "stable", None, seed, stable, len(stable), settings, reference, kswin=False)
    for kind in kinds:
        for kl in settings.kl_sizes:
            pre, post = _sampler(family, kind, thetas[(family, kind, kl)])
            reference = pre(rng, settings.reference_size)
            length = max(2_000, int(8 * lorden_bound(kl, settings.arl)))
            values = np.concatenate([pre(rng, settings.onset), post(rng, length)])
            rows += _score(family, kind, kl, seed, values, settings.onset, settings, reference,
                           kswin=seed < settings.kswin_seeds)  # fmt: skip
    return rows


def _thetas(family: str, kl_sizes: tuple[float, ...]) -> ThetaTable:
    if family == CATEGORICAL:
        return {(family, "mixture", kl): category_theta_for(kl) for kl in kl_sizes}
    return {(family, kind, kl): theta_for(family, kind, kl) for kind in CHANGES[family] for kl in kl_sizes}


def _family_task(task: tuple[str, int, CorpusSettings, ThetaTable]) -> list[CorpusRow]:
    return run_family(*task)


def run_corpus(settings: CorpusSettings, workers: int = 0) -> list[CorpusRow]:
    """Every (family, seed) of the corpus, in parallel over ``workers`` processes (0: one per core)."""
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        thetas: ThetaTable = {}
        for table in pool.map(_thetas, settings.families, [settings.kl_sizes] * len(settings.families)):
            thetas |= table
        tasks = [(family, seed, settings, thetas) for seed in range(settings.seeds) for family in settings.families]
        return [row for rows in pool.map(_family_task, tasks) for row in rows]


# -- results -------------------------------------------------------------------------------------


@dataclass
class Pooled:
    unchanged: int = 0
    false_alarms: int = 0
    critical: int = 0
    changes: int = 0
    missed: int = 0
    by_window: int = 0  # detections the default set owes to its window tests
    delays: list[int] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)

    def add(self, row: CorpusRow) -> None:
        self.unchanged += row.unchanged_values
        self.false_alarms += row.false_alarms
        self.critical += row.critical_false_alarms
        if row.changed:
            self.changes += 1
            self.missed += row.missed
            self.by_window += row.source == "window"
            if row.delay is not None and row.bound:
                self.delays.append(row.delay)
                self.ratios.append(row.delay / row.bound)

    @property
    def per_million(self) -> float:
        return self.false_alarms / self.unchanged * 1e6 if self.unchanged else math.nan


def pool(rows: Iterable[CorpusRow], key: Callable[[CorpusRow], tuple[Any, ...]]) -> dict[tuple[Any, ...], Pooled]:
    pooled: dict[tuple[Any, ...], Pooled] = {}
    for row in rows:
        pooled.setdefault(key(row), Pooled()).add(row)
    return pooled


def _median(values: list[float] | list[int], digits: int = 0) -> str:
    return f"{statistics.median(values):,.{digits}f}" if values else "–"


def family_table(rows: list[CorpusRow]) -> str:
    """Per family and configuration: false alarms per million unchanged values, misses, delays."""
    lines = [
        "| family | detector | unchanged values | false alarms /M (critical) | missed | median delay "
        "| median delay ÷ bound | max of per-change median ÷ bound |",
        "|---|---|---|---|---|---|---|---|",
    ]
    per_change = pool(rows, lambda r: (r.family, r.configuration, r.change, r.kl))
    for (family, configuration), p in pool(rows, lambda r: (r.family, r.configuration)).items():
        medians = [statistics.median(c.ratios) for (f, k, _, _), c in per_change.items()
                   if f == family and k == configuration and c.ratios]  # fmt: skip
        worst = f"{max(medians):.2f}" if medians else "–"
        lines.append(
            f"| {family} | {configuration} | {p.unchanged:,} | {p.per_million:.2f} ({p.critical}) "
            f"| {p.missed}/{p.changes} | {_median(p.delays)} | {_median(p.ratios, 2)} | {worst} |"
        )
    return "\n".join(lines) + "\n"


def change_table(rows: list[CorpusRow]) -> str:
    """Per (family, change, KL): misses and delay against Lorden's bound, streaming detector alone and default set.

    The last column counts the default set's detections that came from its window tests first.
    """
    lines = [
        "| family | change | KL | bound | missed: streaming only → default | median delay: streaming only → default "
        "| median ÷ bound: streaming only → default | first by window tests |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cells = pool([r for r in rows if r.changed], lambda r: (r.family, r.change, r.kl, r.configuration))
    for (family, kind, kl, configuration), default in cells.items():
        if configuration != DRIFTWARDEN:
            continue
        alone = cells[(family, kind, kl, STREAMING)]
        lines.append(
            f"| {family} | {kind} | {kl:g} | {lorden_bound(kl, 1e6):,.0f} | {alone.missed}/{alone.changes} → "
            f"{default.missed}/{default.changes} | {_median(alone.delays)} → {_median(default.delays)} "
            f"| {_median(alone.ratios, 2)} → {_median(default.ratios, 2)} | {default.by_window}/{default.changes} |"
        )
    return "\n".join(lines) + "\n"


def corpus_targets(
    rows: list[CorpusRow], settings: CorpusSettings, configuration: str = DRIFTWARDEN
) -> list[tuple[str, bool, str]]:
    """Issue 10's targets for one configuration (the default set) on the corpus: (target, met, evidence)."""
    ours = [r for r in rows if r.configuration == configuration]
    families = pool(ours, lambda r: (r.family,))
    total = sum(p.unchanged for p in families.values())
    worst = max(families.items(), key=lambda item: item[1].per_million)
    critical = sum(p.critical for p in families.values())
    per_change = pool([r for r in ours if r.changed], lambda r: (r.family, r.change, r.kl))
    missed = sum(p.missed for p in per_change.values())
    changes = sum(p.changes for p in per_change.values())
    medians = {key: statistics.median(p.ratios) for key, p in per_change.items() if p.ratios}
    over = sorted((f"{f}/{c}/KL {k:g}: {m:.2f}" for (f, c, k), m in medians.items() if m > 1.5))
    return [
        (
            f"≤ {settings.false_alarms_per_million:g} false alarm per million unchanged values on every family",
            worst[1].per_million <= settings.false_alarms_per_million,
            f"{total:,} unchanged values; worst family {worst[0][0]} at {worst[1].per_million:.2f} per million",
        ),
        ("0 critical false alarms", critical == 0, f"{critical} critical"),
        (
            f"0 missed changes with KL ≥ {min(settings.kl_sizes):g}",
            missed == 0,
            f"{missed} missed of {changes}",
        ),
        (
            "median delay ≤ 1.5 x Lorden's bound on every (family, change, KL)",
            not over and len(medians) == len(per_change),
            f"{len(medians) - len(over)} of {len(per_change)} within; over: {', '.join(over) or 'none'}",
        ),
    ]


def corpus_json(rows: list[CorpusRow]) -> bytes:
    """Every row (one configuration on one stream), for re-analysis."""
    return orjson.dumps([asdict(row) for row in rows], option=orjson.OPT_INDENT_2)

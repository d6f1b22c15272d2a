"""Monitoring configuration: sensible defaults, optional TOML file, precise errors naming the key.

A file holds ``[defaults]`` for every model and ``[models.<model_id>]`` overrides; any key may be
left out. ``[models.<id>.retrain]`` overrides single keys of the retrain policy.

>>> config = MonitoringConfig.from_toml('''
... [defaults]
... window_size = 3000
... [models.fraud]
... features = { amount = "numeric", country = "categorical" }
... [models.fraud.retrain]
... min_drifted_features = 2
... ''')
>>> fraud = config.for_model("fraud")
>>> fraud.window_size, fraud.retrain.min_drifted_features, fraud.retrain.on_performance_drift
(3000, 2, True)
>>> chosen = MonitoringConfig.from_toml('''
... [defaults]
... features = { amount = { type = "numeric", tests = ["ks", "psi"] }, country = "categorical" }
... ''')
>>> chosen.defaults.features, chosen.defaults.tests_for("amount", "numeric")
({'amount': 'numeric', 'country': 'categorical'}, ('ks', 'psi'))
>>> MonitoringConfig.from_toml('''
... [models.fraud]
... features = { country = { type = "categorical", tests = ["ks"] } }
... ''', "monitoring.toml")
Traceback (most recent call last):
...
driftwarden.core.config.ConfigError: monitoring.toml: models.fraud.features.country.tests: 'ks' is not a test for \
categorical features (choose from: chi2, js)
>>> MonitoringConfig.from_toml("[models.fraud]\\nwindow_size = -1")
Traceback (most recent call last):
...
driftwarden.core.config.ConfigError: models.fraud.window_size: Input should be greater than or equal to 100
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from driftwarden.core.features import FeatureType
from driftwarden.core.state import StateError, StateReader
from driftwarden.core.stattests import DEFAULT_TESTS, check_tests
from driftwarden.errors import DriftwardenError

#: The share of a model's ``false_alarms_per_million`` given to its window tests; the streaming
#: detectors share the rest (docs/detectors.md, "False alarms").
WINDOW_TESTS_SHARE = 0.25

ErrorDetector = Literal["bernoulli_cusum", "adwin", "ddm", "eddm", "hddm_a", "hddm_w", "page_hinkley", "none"]


class ConfigError(DriftwardenError):
    """An invalid monitoring configuration; the message names the file and the key."""


class LocatedError(ValueError):
    """A validation error inside a field, with the path below the model (``features.amount.tests``)."""

    def __init__(self, loc: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


S = TypeVar("S", bound=Strict)


class RetrainPolicyConfig(Strict):
    """When to ask the trainer for a challenger."""

    on_performance_drift: bool = True
    min_drifted_features: int = Field(default=3, ge=1, description="Open data-drift alerts that trigger a retrain.")
    cooldown_s: float = Field(default=3600.0, ge=0, description="Event time between two commands of a model.")
    training_window_s: float = Field(default=7 * 86400.0, gt=0, description="Longest data window to train on.")
    min_examples: int = Field(
        default=5000, ge=1, description="Labelled examples after the drift started before the command goes out."
    )


class ModelMonitorConfig(Strict):
    """Everything tunable about monitoring one model. The defaults need no file."""

    # Reference and windows
    reference_size: int = Field(
        default=5000, ge=100, description="Events of a new version forming its reference (without a profile)."
    )
    min_reference_size: int = Field(
        default=5000,
        ge=100,
        description="Without a profile, detection starts on this many first events; the reference then "
        "doubles with events tested clean, up to reference_size, until a drift alert freezes it (e.g. 500 for "
        "short streams; at the default, equal to reference_size, it does not grow: each growth rebuilds the profile).",
    )
    early_looks: int = Field(
        default=4,
        ge=0,
        description="Before the first full window, the window tests also run on the growing "
        "window at window_size/2^k events, k = early_looks..1 (so short streams are tested).",
    )
    window_size: int = Field(default=2000, ge=100, description="Events per tumbling test window.")
    features: dict[str, FeatureType] = Field(
        default_factory=dict,
        description="Feature types; inferred from the reference when absent. A feature may also be given as "
        '{ type = "numeric", tests = ["ks", "psi"] } to choose its drift tests (driftwarden.core.stattests).',
    )
    feature_tests: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="Drift tests per feature (from the long form of features)."
    )
    ignore_features: list[str] = Field(default_factory=list)
    segments: list[str] = Field(default_factory=list, description="Segment fields monitored per value.")
    # One hot model over several workers (driftwarden.core.shards)
    shards: int = Field(
        default=1,
        ge=1,
        description="Above 1, the model's predictions keyed model_id/shard (shard 0..shards-1) are counted per "
        "event-time bucket by each shard's worker and decided by one owner on the merged buckets (its reference "
        "must be a profile in --profiles-dir). Keyed model_id, they take the single-worker path as before.",
    )
    bucket_seconds: float = Field(default=1.0, gt=0, description="Event time per bucket of a sharded model.")
    shard_lateness_s: float = Field(
        default=5.0, ge=0, description="How far a sharded model's events may arrive behind the latest of their shard."
    )
    shard_idle_s: float = Field(
        default=30.0,
        gt=0,
        description="Wall-clock seconds after which a silent shard of a sharded model no longer holds its owner's "
        "decisions back (a later summary of a decided bucket is counted in the next undecided one).",
    )
    # False-alarm budget, streaming detectors
    false_alarms_per_million: float = Field(
        default=1.0,
        gt=0,
        description="False-alarm budget of the model: alarms per million events. A quarter goes to the window "
        "tests (window_level), the rest is split evenly (Bonferroni) over the streaming detectors (streaming_arl).",
    )
    adwin_delta: float = Field(
        default=1e-5, gt=0, lt=1, description="The label error stream's ADWIN confidence (error_detector = adwin)."
    )
    critical_shift_sigma: float = Field(
        default=2.0,
        gt=0,
        description="A streaming change whose values moved this far (normal scores, reference σ) is critical.",
    )
    # Window tests and false-alarm control
    psi_threshold: float = Field(default=0.2, gt=0)
    wasserstein_threshold: float = Field(default=0.15, gt=0)
    js_threshold: float = Field(default=0.05, gt=0, le=1)
    multivariate: bool = True
    multivariate_distance_threshold: float = Field(
        default=0.1, gt=0, description="Mahalanobis distance the joint mean must move (Hotelling T² effect floor)."
    )
    embedding_mmd_threshold: float = Field(
        default=0.005,
        gt=0,
        description="Unbiased MMD² an embedding's window must reach against its reference (the MMD effect floor).",
    )
    min_window_values: int = Field(default=30, ge=2, description="Fewer values in a window: no verdict.")
    critical_psi: float = Field(default=0.5, gt=0, description="A window drift with this PSI is critical.")
    critical_wasserstein: float = Field(default=1.0, gt=0, description="...or with this Wasserstein distance (σ).")
    critical_js: float = Field(default=0.2, gt=0, le=1, description="...or with this Jensen-Shannon distance.")
    # Data quality (rates are shares of a window)
    unseen_category_rate: float = Field(default=0.01, gt=0, le=1)
    missing_rate_increase: float = Field(default=0.05, gt=0, le=1)
    out_of_range_rate: float = Field(default=0.05, gt=0, le=1)
    type_violation_rate: float = Field(default=0.001, gt=0, le=1)
    # Performance with labels
    fdr_q: float = Field(
        default=0.001,
        gt=0,
        lt=1,
        description="Level of the label-based performance tests: a label window's p-value, and "
        "Benjamini-Hochberg's false discovery rate over the segments.",
    )
    label_window: int = Field(default=1000, ge=50, description="Joined labels per performance window.")
    accuracy_drop: float = Field(default=0.05, gt=0, le=1, description="Smallest accuracy drop to alert on.")
    error_increase: float = Field(default=0.2, gt=0, description="Regression: relative MAE increase to alert on.")
    error_detector: ErrorDetector = Field(
        default="bernoulli_cusum",
        description="The detector on the per-label error stream: Bernoulli CUSUMs with thresholds from the budget "
        "(label_arl), or a River detector.",
    )
    label_ttl_s: float = Field(default=86400.0, gt=0, description="Event time a prediction waits for its label.")
    max_pending: int = Field(default=200_000, ge=1, description="Unjoined predictions/labels kept per model.")
    # Event time and identity
    future_tolerance_s: float = Field(
        default=300.0,
        ge=0,
        description="A prediction's ts may be this far ahead of the monitor's clock; "
        "further (or in milliseconds, or older than label_ttl_s behind the model's event time) is dead-lettered.",
    )
    dedupe_horizon: int = Field(
        default=100_000, ge=1, description="Distinct event ids remembered per model: a repeat among them is dropped."
    )
    estimated_accuracy_drop: float = Field(default=0.05, gt=0, le=1)
    segment_min_labels: int = Field(default=200, ge=10)
    segment_accuracy_gap: float = Field(default=0.1, gt=0, le=1)
    segment_max_values: int = Field(default=50, ge=1, description="Segment fields with more values are skipped.")
    # Operations
    latency_p99_budget_ms: float | None = Field(default=None, gt=0)
    cost_per_1k_budget: float | None = Field(default=None, gt=0)
    latency_change_ratio: float = Field(default=2.0, gt=1)
    cost_change_ratio: float = Field(default=1.5, gt=1)
    # Alert lifecycle
    resolve_after_windows: int = Field(
        default=3, ge=1, description="Consecutive windows whose test passes with a margin before an alert resolves."
    )
    resolve_p_value: float = Field(
        default=0.05, gt=0, lt=1, description="The margin: a window settles when its test's p-value is at least this."
    )
    cooldown_s: float = Field(
        default=3600.0,
        ge=0,
        description="Event time after resolving during which a repeat of the same finding "
        "is suppressed (a new change fires at once).",
    )
    repeat_tolerance: float = Field(
        default=0.5,
        ge=0,
        description="A finding repeats a resolved one if its change size is within this "
        "relative band (and detector, aspect and direction agree).",
    )
    retrain: RetrainPolicyConfig = Field(default_factory=RetrainPolicyConfig)

    @model_validator(mode="before")
    @classmethod
    def _split_feature_specs(cls, data: Any) -> Any:
        """``features`` entries of the long form ``{type, tests}`` give a type and their tests."""
        if not isinstance(data, dict) or not isinstance(data.get("features"), dict):
            return data
        types: dict[str, object] = {}
        tests: dict[str, object] = dict(data.get("feature_tests") or {})
        for name, spec in data["features"].items():
            if isinstance(spec, dict):
                unknown = set(spec) - {"type", "tests"}
                if unknown or "type" not in spec:
                    raise LocatedError(("features", name), "expected { type = ..., tests = [...] }")
                types[name] = spec["type"]
                if "tests" in spec:
                    tests[name] = spec["tests"]
            else:
                types[name] = spec
        return {**data, "features": types, "feature_tests": tests}

    @property
    def window_level(self) -> float:
        """The level of one test window (every window test of the model, Benjamini–Hochberg across them).

        The window tests' share of the budget (:data:`WINDOW_TESTS_SHARE`) per ``window_size`` events,
        so their false alarms stay within that share per million events whatever the window size.

        >>> ModelMonitorConfig().window_level
        0.0005
        >>> ModelMonitorConfig(false_alarms_per_million=4, window_size=100).window_level
        0.0001
        """
        return WINDOW_TESTS_SHARE * self.false_alarms_per_million * self.window_size / 1e6

    @property
    def early_looks_at(self) -> list[int]:
        """Sizes of the growing first window at which the window tests also run: window_size / 2^k, k = looks..1.

        >>> ModelMonitorConfig().early_looks_at
        [125, 250, 500, 1000]
        """
        sizes = [self.window_size >> k for k in range(self.early_looks, 0, -1)]
        return [n for n in sizes if n >= self.min_window_values]

    def streaming_arl(self, detectors: int) -> float:
        """Mean events between false alarms of each of a model's ``detectors`` streaming detectors.

        The rest of the budget after the window tests' share, split evenly (Bonferroni) over them.

        >>> ModelMonitorConfig().streaming_arl(17) / 1e6
        22.666666666666668
        """
        return 1e6 * detectors / ((1 - WINDOW_TESTS_SHARE) * self.false_alarms_per_million)

    @property
    def label_arl(self) -> float:
        """Mean labels between false alarms of the error-stream CUSUMs of a classifier.

        The streaming detectors' share of the budget, counted per million labels (one detector).

        >>> round(ModelMonitorConfig().label_arl)
        1333333
        """
        return self.streaming_arl(1)

    @model_validator(mode="after")
    def _check_window_level(self) -> Self:
        if self.window_level >= 0.5:
            raise LocatedError(
                ("false_alarms_per_million",),
                f"{self.false_alarms_per_million:g} false alarms per million leave the window tests a level of "
                f"{self.window_level:g} per window of {self.window_size} events (at most 0.5)",
            )
        return self

    @model_validator(mode="after")
    def _check_feature_tests(self) -> Self:
        for name, tests in self.feature_tests.items():
            feature_type = self.features.get(name)
            if feature_type is None:
                raise LocatedError(("features", name), "tests need the feature's type")
            try:
                check_tests(feature_type, tests)
            except ValueError as exc:
                raise LocatedError(("features", name, "tests"), str(exc)) from None
        return self

    def tests_for(self, feature: str, feature_type: FeatureType) -> tuple[str, ...]:
        """The drift tests of a feature: as configured, else the default of its type."""
        return self.feature_tests.get(feature, DEFAULT_TESTS[feature_type])


class MonitoringConfig(Strict):
    """Defaults plus per-model overrides."""

    defaults: ModelMonitorConfig = Field(default_factory=ModelMonitorConfig)
    models: dict[str, ModelMonitorConfig] = Field(default_factory=dict)

    def for_model(self, model_id: str) -> ModelMonitorConfig:
        return self.models.get(model_id, self.defaults)

    @classmethod
    def from_toml(cls, text: str, source: str = "") -> MonitoringConfig:
        return cls.from_dict(parse_toml(text, source), source_prefix(source))

    @classmethod
    def from_file(cls, path: Path) -> MonitoringConfig:
        return cls.from_toml(read_config_file(path, "monitoring config"), str(path))

    @classmethod
    def from_dict(cls, document: dict[str, Any], prefix: str = "") -> MonitoringConfig:
        unknown = set(document) - {"defaults", "models"}
        if unknown:
            raise ConfigError(f"{prefix}{sorted(unknown)[0]}: unknown section (expected [defaults] or [models.<id>])")
        defaults = validate_section(ModelMonitorConfig, document.get("defaults", {}), "defaults", prefix)
        models_section = document.get("models", {})
        if not isinstance(models_section, dict):
            raise ConfigError(f"{prefix}models: expected a table of [models.<model_id>] sections")
        models = {}
        for model_id, overrides in models_section.items():
            if not isinstance(overrides, dict):
                raise ConfigError(f"{prefix}models.{model_id}: expected a table")
            merged = _merge(defaults.model_dump(), overrides)
            models[model_id] = validate_section(ModelMonitorConfig, merged, f"models.{model_id}", prefix)
        return cls(defaults=defaults, models=models)


def model_config_from_state(state: StateReader, key: str) -> ModelMonitorConfig:
    """A ``ModelMonitorConfig`` saved in a state (``model_dump(mode="json")``), validated again."""
    try:
        return ModelMonitorConfig.model_validate(state.child(key).data)
    except ValidationError as exc:
        raise StateError(f"{state.where}.{key}: not a valid config ({exc.errors()[0]['msg']})") from None


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key == "retrain":
            merged[key] = {**base[key], **value}
        elif key == "features" and "feature_tests" not in overrides:
            merged[key], merged["feature_tests"] = value, {}  # the model's own features, with their own tests
        else:
            merged[key] = value
    return merged


def source_prefix(source: str) -> str:
    """How errors name the file they come from (``"monitoring.toml: "``)."""
    return f"{source}: " if source else ""


def parse_toml(text: str, source: str = "") -> dict[str, Any]:
    """A TOML document; a syntax error is a :class:`ConfigError` naming the source."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source_prefix(source)}not valid TOML: {exc}") from None


def read_config_file(path: Path, what: str) -> str:
    """A config file's text; an unreadable file is a one-line :class:`ConfigError`."""
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None


def validate_section(model: type[S], data: Any, where: str, prefix: str) -> S:
    """``data`` as ``model``; the first error is a :class:`ConfigError` naming file, key and problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        located = error.get("ctx", {}).get("error")
        parts = located.loc if isinstance(located, LocatedError) else error["loc"]
        loc = ".".join([where, *(str(part) for part in parts)])
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        if isinstance(located, LocatedError):
            message = located.message
        raise ConfigError(f"{prefix}{loc}: {message}") from None

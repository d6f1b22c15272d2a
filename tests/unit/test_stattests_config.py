"""Drift tests chosen per feature in the config, and the detector constants that became config fields."""

from __future__ import annotations

import sys

import pytest

from driftwarden.cli import main
from driftwarden.core.config import ConfigError, ModelMonitorConfig, MonitoringConfig
from driftwarden.core.detectors import MultivariateDriftDetector, NumericDriftDetector, window_detectors
from driftwarden.core.events import PredictionEvent
from driftwarden.core.profile import build_profile
from driftwarden.core.stattests import DEFAULT_TESTS, STAT_TESTS
from driftwarden.core.stattests import tests_for as allowed_tests
from driftwarden_load.scenarios import Scenario, generate

PROFILE = build_profile(
    "m", "1", [PredictionEvent.model_validate(e) for e in next(generate(Scenario(), 2_000)).prediction_events()]
)


def test_every_test_is_registered_for_a_feature_type_and_the_defaults_are_registered():
    assert all(test.feature_types for test in STAT_TESTS.values())
    for feature_type, names in DEFAULT_TESTS.items():
        assert set(names) <= set(allowed_tests(feature_type))


def test_the_long_form_chooses_tests_and_the_short_form_keeps_working():
    config = MonitoringConfig.from_toml(
        '[defaults]\nfeatures = { num_00 = { type = "numeric", tests = ["psi"] }, num_01 = "numeric" }'
    ).defaults
    assert config.features == {"num_00": "numeric", "num_01": "numeric"}
    by_subject = {d.subject: d for d in window_detectors(PROFILE, config) if isinstance(d, NumericDriftDetector)}
    assert by_subject["num_00"].tests == ("psi",) and by_subject["num_00"].name == "psi"
    assert (
        by_subject["num_01"].tests == ("ks", "psi", "wasserstein") and by_subject["num_01"].name == "ks_psi_wasserstein"
    )


def test_a_feature_judged_by_an_effect_size_alone_has_no_p_value():
    config = ModelMonitorConfig(features={"num_00": "numeric"}, feature_tests={"num_00": ("psi",)})
    detector = next(d for d in window_detectors(PROFILE, config) if d.subject == "num_00" and d.kind == "data_drift")
    from driftwarden.core.profile import schema_of, to_columns

    events = [PredictionEvent.model_validate(e) for e in next(generate(Scenario(seed=4), 2_000)).prediction_events()]
    assert detector.update(to_columns(events, schema_of(PROFILE)))
    assert detector.p_value is None and detector.evidence()["p_value"] is not None


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            'features = { amount = { type = "numeric", tests = ["chi2"] } }',
            "features.amount.tests: 'chi2' is not a test for numeric features (choose from: ks, psi, wasserstein)",
        ),
        (
            'features = { amount = { type = "numeric", tests = ["kss"] } }',
            "features.amount.tests: 'kss' is not a test for numeric features (unknown test; choose from",
        ),
        ('features = { amount = { type = "numeric", tests = [] } }', "features.amount.tests: choose at least one"),
        ('features = { amount = { tests = ["ks"] } }', "features.amount: expected { type = ..., tests = [...] }"),
        ('features = { amount = { type = "numeric", test = ["ks"] } }', "features.amount: expected { type"),
        ("multivariate_distance_threshold = 0", "multivariate_distance_threshold: Input should be greater than 0"),
    ],
)
def test_a_bad_test_choice_is_an_error_naming_the_file_and_the_key(toml, message):
    with pytest.raises(ConfigError) as error:
        MonitoringConfig.from_toml(f"[models.fraud]\n{toml}", "monitoring.toml")
    assert str(error.value).startswith(f"monitoring.toml: models.fraud.{message}"), str(error.value)


def test_a_models_own_features_replace_the_defaults_tests():
    config = MonitoringConfig.from_toml(
        '[defaults]\nfeatures = { amount = { type = "numeric", tests = ["ks"] } }\n'
        '[models.fraud]\nfeatures = { amount = "numeric" }\n[models.other]\nwindow_size = 500\n'
    )
    assert config.for_model("fraud").tests_for("amount", "numeric") == DEFAULT_TESTS["numeric"]
    assert config.for_model("other").tests_for("amount", "numeric") == ("ks",)


def test_the_former_constants_are_config_fields_with_the_same_defaults():
    config = ModelMonitorConfig()
    assert (
        config.multivariate_distance_threshold, config.min_window_values, config.critical_shift_sigma,
        config.critical_psi, config.critical_wasserstein, config.critical_js, config.segment_max_values,
    ) == (0.1, 30, 2.0, 0.5, 1.0, 0.2, 50)  # fmt: skip
    (default,) = [d for d in window_detectors(PROFILE, config) if isinstance(d, MultivariateDriftDetector)]
    (chosen,) = [
        d
        for d in window_detectors(PROFILE, config.model_copy(update={"multivariate_distance_threshold": 0.7}))
        if isinstance(d, MultivariateDriftDetector)
    ]
    assert (default.distance_threshold, chosen.distance_threshold) == (0.1, 0.7)


def test_config_check_prints_the_tests_and_thresholds(monkeypatch, capsys, tmp_path):
    path = tmp_path / "monitoring.toml"
    path.write_text('[defaults]\nfeatures = { amount = { type = "numeric", tests = ["ks", "psi"] } }\n')
    monkeypatch.setattr(sys, "argv", ["driftwarden", "config", "check", str(path)])
    main()
    out = capsys.readouterr().out
    assert '"multivariate_distance_threshold": 0.1' in out and '"min_window_values": 30' in out
    assert '"feature_tests": {\n    "amount": [\n      "ks",\n      "psi"\n    ]' in out

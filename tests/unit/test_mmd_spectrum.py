"""The MMD p-value's fewer weights (bounding_spectrum): its tail bounds the full spectrum's from above, closely.

Exact in the distribution (raising a weight raises the tail stochastically); checked here through
the saddlepoint, on the load generator's kernel spectrum and on spectra that decay slowly.
"""

from __future__ import annotations

import numpy as np
import pytest

from driftwarden.core.profile import projection
from driftwarden.core.stats import (
    REFERENCE_SHARE,
    SPECTRUM_EXACT_SHARE,
    SPECTRUM_MOST_EXACT,
    SPECTRUM_RATIO,
    MmdReference,
    bounding_spectrum,
    quadratic_form_sf,
)
from driftwarden_load.scenarios import EMBEDDING_DIMS, TOPIC_CENTERS, TOPIC_NOISE, TOPIC_PROBS

K = np.arange(1, 2_001.0)


def topic_spectrum() -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = TOPIC_CENTERS[rng.choice(len(TOPIC_PROBS), 1_000, p=TOPIC_PROBS)]
    vectors = (centres + rng.normal(0, TOPIC_NOISE, (1_000, EMBEDDING_DIMS))) @ projection(EMBEDDING_DIMS, 0)
    return MmdReference(vectors).eigenvalues


@pytest.mark.parametrize(
    ("spectrum", "within"),
    [
        (topic_spectrum, 1.03),  # the load generator's embedding, projected (1,000 vectors): ≤ 1.7 % at 2,000
        (lambda: 0.1 * K**-2, 1.01),
        (lambda: 0.01 / K, 1.2),  # slow decays: the leading 256 carry less than 95 %
        (lambda: 0.05 * 0.99**K, 1.5),
        (lambda: np.r_[np.full(5, 0.05), np.full(1_995, 1e-4)], 1.000001),  # equal weights: one term, exact
    ],
)
def test_the_fewer_weights_bound_the_p_value_from_above_and_closely(spectrum, within):
    eigenvalues = np.sort(spectrum())[::-1]
    starts, weights = bounding_spectrum(eigenvalues, SPECTRUM_EXACT_SHARE, SPECTRUM_RATIO, SPECTRUM_MOST_EXACT)
    degrees = np.diff(np.append(starts, len(eigenvalues)))
    assert len(weights) <= 400 and degrees.sum() == len(eigenvalues)
    shifts = 0.25 * np.random.default_rng(1).normal(0, 1, (200, len(eigenvalues))) ** 2  # n / m = 1 / 4
    mean, sd = (eigenvalues * 1.25).sum(), np.sqrt(2 * (eigenvalues**2).sum())
    checked = 0
    for z in np.linspace(-1, 59, 31):
        full = np.quantile(quadratic_form_sf(mean + z * sd, eigenvalues, shifts), REFERENCE_SHARE)
        if full < 1e-13:
            break
        bound = np.quantile(
            quadratic_form_sf(mean + z * sd, weights, np.add.reduceat(shifts, starts, axis=1), degrees), REFERENCE_SHARE
        )
        assert full * (1 - 1e-9) <= bound <= within * full, (z, full, bound)
        checked += 1
    assert checked >= 6 and full < 1e-13  # from the bulk down to p-values below 1e-13


def test_the_mmd_p_value_is_the_full_spectrums_or_a_little_above():
    """The test's own p-value (the same draws of the reference's error) against the full spectrum's:
    a Gaussian sample (a spectrum flatter than the topics'), up to 4.5 % above."""
    rng = np.random.default_rng(2)
    test = MmdReference(rng.normal(0, 1, (800, 16)))
    n = 200
    for biased in (0.001, 0.003, 0.01, 0.02):
        bound = test.p_value(biased, n)
        shifts = n / test.m * np.random.default_rng([test.seed, n, 1]).normal(0, 1, (200, len(test.eigenvalues))) ** 2
        full = np.quantile(quadratic_form_sf(n * biased, test.eigenvalues, shifts), REFERENCE_SHARE)
        assert full * (1 - 1e-9) <= bound <= 1.06 * full, (biased, full, bound)

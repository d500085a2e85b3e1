"""Disentanglement metrics (MIG, DCI) on synthetic codes whose answers are known.

The factors are a full grid of 3 x 4 x 5 values, each combination repeated: the factors
are then exactly independent and uniform in the sample, so the histogram mutual
informations of codes that the bins resolve are exact empirical entropies.
"""

import json
import math

import numpy as np
import pytest
import torch

from pyro_vae.disentanglement import (
    DCIResult, MIGResult, dci, dci_scores, disentanglement_metrics, mutual_information_gap,
    mutual_information_matrix)

SIZES = (3, 4, 5)
LOG = np.log(np.array(SIZES, dtype=float))  # H(v_k) of a uniform factor, nats


def grid(repeats=40):
    """(60 * repeats, 3) int64 factor indices: every combination, ``repeats`` times."""
    combos = np.stack(np.meshgrid(*[np.arange(s) for s in SIZES], indexing="ij"), -1)
    return np.tile(combos.reshape(-1, len(SIZES)), (repeats, 1)).astype(np.int64)


def aligned_codes(factors):
    """One code per factor (its index), plus a constant dimension."""
    return np.concatenate([factors.astype(float), np.full((len(factors), 1), 2.5)], axis=1)


def test_mutual_information_of_aligned_codes_is_the_factor_entropy():
    factors = grid()
    mi = mutual_information_matrix(aligned_codes(factors), factors)
    assert mi.shape == (4, 3)
    np.testing.assert_allclose(mi[:3], np.diag(LOG), atol=1e-6)
    np.testing.assert_allclose(mi[3], 0.0, atol=1e-12)  # the constant dimension


def test_aligned_codes_are_disentangled():
    factors = grid()
    codes = aligned_codes(factors) + 0.01 * np.random.default_rng(0).normal(size=(len(factors), 4))
    result = mutual_information_gap(codes, factors)
    assert isinstance(result, MIGResult)
    assert result.mig > 0.95 and (result.per_factor > 0.95).all()
    np.testing.assert_allclose(result.factor_entropy, LOG, atol=1e-12)
    scores = dci(codes, factors)
    assert isinstance(scores, DCIResult)
    assert scores.importance.shape == (4, 3)
    assert scores.disentanglement > 0.9 and scores.completeness > 0.9
    assert scores.informativeness > 0.99


def test_codes_independent_of_the_factors_score_near_zero():
    factors = grid(repeats=100)
    codes = np.random.default_rng(1).normal(size=(len(factors), 4))
    assert mutual_information_gap(codes, factors).mig < 0.05
    scores = dci(codes, factors)
    assert scores.disentanglement < 0.1
    assert scores.informativeness < 0.45  # chance is 1/3, 1/4, 1/5


def entangled_codes(factors):
    """code0 = v0 * 4 + v1 (both factors, 12 values); code1 = v1 // 2 (half of v1);
    code2 = v2; code3 constant."""
    v0, v1, v2 = factors.T
    return np.stack([v0 * 4 + v1, v1 // 2, v2, np.zeros(len(factors))], axis=1).astype(float)


def test_entangled_codes_give_the_exact_partial_gap():
    factors = grid()
    result = mutual_information_gap(entangled_codes(factors), factors)  # 20 bins resolve all
    expected_mi = np.array([[LOG[0], LOG[1], 0.0],
                            [0.0, math.log(2), 0.0],
                            [0.0, 0.0, LOG[2]],
                            [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(result.mutual_information, expected_mi, atol=1e-6)
    # v0: only code0 knows it -> 1; v1: code0 knows log 4, code1 log 2 -> 1/2; v2 -> 1.
    # code0 carrying two factors costs nothing: MIG does not penalize it.
    np.testing.assert_allclose(result.per_factor, [1.0, 0.5, 1.0], atol=1e-6)
    assert result.mig == pytest.approx(2.5 / 3, abs=1e-6)


def test_dci_penalizes_a_code_carrying_two_factors():
    factors = grid()
    aligned = dci(aligned_codes(factors), factors)
    entangled = dci(entangled_codes(factors), factors)
    assert entangled.disentanglement < aligned.disentanglement - 0.2
    # code0 is the main predictor of both v0 and v1: its own score is low
    assert entangled.per_code[0] < 0.6 < aligned.per_code[0]
    assert entangled.informativeness > 0.99  # the codes still determine every factor


def test_dci_scores_of_known_importance_matrices():
    d, c, per_code, per_factor = dci_scores(np.eye(3))
    assert (d, c) == (pytest.approx(1.0), pytest.approx(1.0))
    d, c, per_code, per_factor = dci_scores(np.ones((3, 3)))
    assert (d, c) == (pytest.approx(0.0, abs=1e-12), pytest.approx(0.0, abs=1e-12))
    # one code for both factors: not disentangled, but complete; an unused code weighs 0
    d, c, per_code, per_factor = dci_scores(np.array([[0.5, 0.5], [0.0, 0.0]]))
    assert d == pytest.approx(0.0, abs=1e-12) and c == pytest.approx(1.0)
    np.testing.assert_allclose(per_factor, [1.0, 1.0])
    with pytest.raises(ValueError, match="non-negative"):
        dci_scores(-np.eye(2))


def test_mig_is_invariant_to_permuting_and_monotonically_rescaling_codes():
    factors = grid()
    rng = np.random.default_rng(2)
    codes = np.concatenate([entangled_codes(factors)[:, :3],
                            rng.normal(size=(len(factors), 1))], axis=1)
    base = mutual_information_gap(codes, factors, bins=100)
    permuted = mutual_information_gap(codes[:, [3, 2, 0, 1]], factors, bins=100)
    assert permuted.mig == pytest.approx(base.mig, abs=1e-12)
    np.testing.assert_allclose(permuted.per_factor, base.per_factor, atol=1e-12)
    rescaled = codes.copy()
    rescaled[:, 0] = np.exp(rescaled[:, 0] / 3.0)      # 100 bins still resolve the 12 values
    rescaled[:, 2] = -7.0 * rescaled[:, 2] + 3.0        # decreasing and affine
    again = mutual_information_gap(rescaled, factors, bins=100)
    assert again.mig == pytest.approx(base.mig, abs=1e-12)
    np.testing.assert_allclose(again.mutual_information, base.mutual_information, atol=1e-12)


def test_torch_inputs_and_the_json_summary():
    factors = grid(repeats=20)
    codes = torch.tensor(aligned_codes(factors), dtype=torch.float32)
    out = disentanglement_metrics(codes, torch.from_numpy(factors), ["shape", "scale", "x"],
                                  max_points=500)
    json.dumps(out)  # JSON-ready
    assert out["settings"]["points"] == 500
    assert list(out["mig_per_factor"]) == ["shape", "scale", "x"]
    assert out["mig"] > 0.95 and out["dci"]["informativeness"] > 0.95
    assert np.shape(out["mutual_information"]) == (4, 3) == np.shape(out["importance"])
    assert out["settings"]["dci_regressor"].startswith("RandomForestClassifier(")
    again = disentanglement_metrics(codes, factors, ["shape", "scale", "x"], max_points=500)
    assert again == out  # seeded


@pytest.mark.parametrize("call, match", [
    (lambda c, f: mutual_information_gap(c[:-1], f), "one row per image"),
    (lambda c, f: dci(c, f[:-1]), "one row per image"),
    (lambda c, f: mutual_information_gap(c[:, :1], f), "at least two code dimensions"),
    (lambda c, f: mutual_information_gap(np.where(c == 1.0, np.nan, c), f), "NaN"),
    (lambda c, f: dci(np.where(c == 1.0, np.nan, c), f), "NaN"),
    (lambda c, f: mutual_information_matrix(c[:, 0], f), "2-D"),
    (lambda c, f: dci(c, np.zeros_like(f)), "fewer than 2 distinct values"),
    (lambda c, f: mutual_information_gap(c, f + 0.5), "integer"),
    (lambda c, f: dci(c, f, train_fraction=1.0), "empty"),
    (lambda c, f: disentanglement_metrics(c, f, ["a"]), "1 factor names for 3 factors"),
])
def test_bad_input_raises_a_clear_error(call, match):
    factors = grid(repeats=2)
    with pytest.raises(ValueError, match=match):
        call(aligned_codes(factors), factors)

"""S9 — seeds share subspaces, not bases: the unit-matching measures (Li et al. 2016) and the finding at smoke size."""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest

from workbench import measures, similarity
from workbench.similarity import match_units, unit_correlations, unit_matching, unit_matching_matrix


def _rotation(d: int, seed: int = 0) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def _corr_loop(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlations unit by unit with numpy's corrcoef (the independent reference)."""
    return np.array([[np.corrcoef(x[:, i], y[:, j])[0, 1] for j in range(y.shape[1])] for i in range(x.shape[1])])


def _brute(s: np.ndarray) -> float:
    """Best one-to-one assignment by enumerating every injective map of the narrower side (D <= 6)."""
    if s.shape[0] > s.shape[1]:
        s = s.T
    p, q = s.shape
    return max(np.mean([s[i, j] for i, j in enumerate(perm)]) for perm in itertools.permutations(range(q), p))


@pytest.fixture(scope="module")
def x():
    rng = np.random.default_rng(0)
    return rng.normal(size=(3000, 8)) * np.arange(1, 9) + rng.normal(size=8)


def test_permuted_copy_matches_fully_and_a_rotation_does_not(x):
    perm = np.random.default_rng(1).permutation(8)
    assert unit_matching(x, x[:, perm]) == pytest.approx(1.0, abs=1e-12)
    assert unit_matching(x, x[:, perm], semi=True) == pytest.approx(1.0, abs=1e-12)
    z = (x - x.mean(0)) / x.std(0)  # equal variances: a rotation mixes every unit with the others
    rotated = z @ _rotation(8)
    # the subspace measures cannot tell a rotated copy from the original ...
    assert similarity.cka(z, rotated) == pytest.approx(1.0, abs=1e-9)
    assert similarity.shape_distance(z, rotated) == pytest.approx(0.0, abs=1e-6)
    # ... the unit matching can: the finding's mechanism in miniature
    hard, semi = unit_matching(z, rotated), unit_matching(z, rotated, semi=True)
    assert hard < 0.8 and semi < 0.85 and semi >= hard


def test_invariant_to_unit_scale_sign_and_shift(x):
    rng = np.random.default_rng(2)
    y = np.tanh(x @ rng.normal(size=(8, 6)) / 4)
    scale = rng.uniform(0.1, 10, size=6) * rng.choice([-1, 1], size=6)
    moved = y * scale + rng.normal(size=6)
    for semi in (False, True):
        assert unit_matching(x, moved, semi=semi) == pytest.approx(unit_matching(x, y, semi=semi), abs=1e-12)
    # without the absolute value a sign flip is a mismatch (Li et al.'s rule): -x's units pair with other units
    assert unit_matching(x, -x, absolute=False) < 0.1
    assert unit_matching(x, -x) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (6, 4), (6, 6)])
@pytest.mark.parametrize("absolute", [True, False])
def test_hungarian_equals_brute_force_over_all_assignments(shape, absolute):
    rng = np.random.default_rng(sum(shape))
    a = rng.normal(size=(60, shape[0]))
    b = a[:, :min(shape)] @ rng.normal(size=(min(shape), shape[1])) + rng.normal(size=(60, shape[1]))
    c = _corr_loop(a, b)
    s = np.abs(c) if absolute else c
    assert unit_matching(a, b, absolute=absolute) == pytest.approx(_brute(s), abs=1e-12)
    semi = (s.max(axis=1).mean() + s.max(axis=0).mean()) / 2
    assert unit_matching(a, b, semi=True, absolute=absolute) == pytest.approx(semi, abs=1e-12)
    pairs = match_units(a, b, absolute=absolute)
    assert len(pairs) == min(shape) and pairs["unit_b"].is_unique
    np.testing.assert_allclose(pairs["correlation"], c[pairs["unit_a"], pairs["unit_b"]], atol=1e-12)


def test_correlations_equal_numpy_and_float32_is_accumulated_in_float64(x):
    y = np.tanh(x[:, :5] @ np.random.default_rng(3).normal(size=(5, 5)))
    np.testing.assert_allclose(unit_correlations(x, y), _corr_loop(x, y), atol=1e-12)
    big = (x + 1e4).astype(np.float32)  # a large offset: a float32 accumulation would lose the centered values
    want = unit_matching(big.astype(np.float64), y)
    assert unit_matching(big, y) == pytest.approx(want, abs=1e-9)


def test_dead_units_are_left_out_with_a_warning(x):
    y = np.maximum(x[:, ::-1], 0)
    dead = np.hstack([y, np.zeros((len(x), 2)), np.full((len(x), 1), 3.0)])
    with pytest.warns(UserWarning, match="3 of its 11 units are constant"):
        value = unit_matching(x, dead)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert value == pytest.approx(unit_matching(x, y), abs=1e-12)
    with pytest.warns(UserWarning):
        c = unit_correlations(x, dead)
    assert (c[:, 8:] == 0).all()
    with pytest.warns(UserWarning):
        pairs = match_units(dead, x)
    assert set(pairs["unit_a"]) == set(range(8))  # the dead columns 8, 9, 10 are never matched
    with pytest.raises(ValueError, match=r"\ba\b.*none of its 3 units varies"):
        unit_matching(np.ones((50, 3)), x[:50])


def test_bad_input_names_the_argument(x):
    with pytest.raises(ValueError, match=r"\bb has 10"):
        unit_matching(x, x[:10])
    with pytest.raises(TypeError, match="semi"):
        unit_matching(x, x, semi="yes")
    with pytest.raises(ValueError, match="output"):
        unit_matching_matrix(x, output="wide")


def test_registry_entries_equal_the_functions(x):
    layers = {"l0": x, "l1": np.tanh(x[:, :5])}
    other = {"l0": x @ _rotation(8, 4), "l1": np.tanh(x[:, 3:])}
    for name, semi in (("unit_matching", False), ("unit_semimatching", True)):
        spec = measures.get(name)
        assert (spec.takes, spec.returns, spec.family) == ("a, b", "layer_pair", "similarity")
        got = measures.compute(name, layers, b=other).set_index(["layer", "layer_b"])["value"]
        for la, lb in itertools.product(layers, other):
            assert got[(la, lb)] == pytest.approx(unit_matching(layers[la], other[lb], semi=semi), abs=1e-12)
    mat = unit_matching_matrix(layers, output="matrix")
    np.testing.assert_allclose(mat.to_numpy(), mat.to_numpy().T, atol=1e-12)
    np.testing.assert_allclose(np.diag(mat.to_numpy()), 1.0, atol=1e-12)


# ------------------------------------------------------------------------------------------------ the finding
@pytest.fixture(scope="module")
def smoke(smoke_store):
    from workbench.findings.seed_subspaces import FINDING

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FINDING.run("smoke", store=smoke_store, progress=False, record=False)


def test_cross_run_rows_name_both_seeds(smoke):
    cross = smoke.table[smoke.table.kind == "cross_run"]
    assert {"unit_matching", "unit_semimatching", "cka", "shape_distance"} <= set(cross["measure"])
    assert set(zip(cross["seed"].astype(int), cross["seed_b"].astype(int))) == {(0, 1)}
    assert set(zip(cross["run"], cross["run_b"])) == {("seed=0", "seed=1")}


def test_smoke_verdict_recomputed_from_the_cross_run_rows(smoke):
    table, verdict = smoke.table, smoke.verdict
    cross = table[(table.kind == "cross_run") & (table.layer == table.layer_b) & (table.layer != "head")]
    last = cross[cross.step == cross.step.max()].set_index(["measure", "layer"])["value"]
    hidden = sorted(set(cross.layer))
    cka = np.mean([last[("cka", la)] for la in hidden])
    match = np.mean([last[("unit_matching", la)] for la in hidden])
    procrustes = np.mean([np.cos(last[("shape_distance", la)]) for la in hidden])
    checks = verdict.checks.set_index("quantity")
    assert checks.loc["CKA − unit matching", "estimate"] == pytest.approx(cka - match, abs=1e-9)
    assert checks.loc["Procrustes − unit matching", "estimate"] == pytest.approx(procrustes - match, abs=1e-9)
    assert (checks["n_seeds"] == 2).all() and verdict.outcome == "inconclusive"  # two seeds never give a verdict
    # each seed's number is the mean over its pairs: with one pair both seeds carry the same value
    per_seed = pd.read_json(pd.io.common.StringIO(checks.loc["CKA − unit matching", "per_seed"]), typ="series")
    assert per_seed.nunique() == 1


def test_smoke_figures(smoke):
    figs = smoke.finding.figures(smoke.table)
    assert set(figs) == {"similarity_by_layer", "cka_vs_matching"}
    assert all(len(f.data) for f in figs.values())

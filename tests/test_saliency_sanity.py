"""Saliency sanity checks (Adebayo et al. 2018): model-parameter and label randomization, SSIM, the figure.

Known answers: maps of a fully randomized model are as (un)related to the trained model's maps as those of
independently initialized models (computed here with scipy); a method that ignores the model stays at 1 and is
flagged; similarities against scipy / skimage / explicit loops; the caller's model and random state untouched.
"""
from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import workbench.data as wd
from workbench.figures import plotted_data
from workbench.figures import randomization_figure
from workbench.models import build
from workbench.saliency import (METHODS, Method, attribute, feature_map, label_randomization_check,
                                randomization_check, register_method, ssim)
from workbench.train import symmetric_label_noise

SIDE, N_TEST = 16, 16
LAYERS_TOP_DOWN = ["head", "stage2", "stage1", "stem"]


def _cnn(seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build("cnn", input_shape=(3, SIDE, SIDE), num_classes=6, width=8, depth=2)


@pytest.fixture(scope="module")
def shapes():
    ds = wd.load("shapes", n_train=96, n_test=N_TEST, n_ood=0, size=SIDE, seed=0)
    return ds


@pytest.fixture(scope="module")
def trained(shapes):
    """A small CNN trained briefly on the shapes (its maps depend on learned weights)."""
    model = _cnn(0)
    x, y = torch.from_numpy(shapes["train"].inputs), torch.from_numpy(shapes["train"].labels)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        idx = torch.randint(0, len(x), (32,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def images(shapes):
    return torch.from_numpy(shapes["test"].inputs), torch.from_numpy(shapes["test"].labels)


def _abs_maps(model, x, method, target, **kw) -> np.ndarray:
    a = attribute(model, x, method=method, target=target, **kw)
    return feature_map(a.attributions, "l1").reshape(len(x), -1).double().numpy()


def _mean_spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([spearmanr(u, v).statistic for u, v in zip(a, b)]))


# --------------------------------------------------------------------------------------- model randomization
@pytest.mark.parametrize("method,kw", [("saliency", {}), ("integrated_gradients", {"n_steps": 8})])
def test_full_randomization_makes_maps_as_unrelated_as_a_fresh_model(trained, images, method, kw):
    x, y = images
    table = randomization_check(trained, x, method=method, target=y, similarity=("spearman_abs",), n_boot=200,
                                **kw)
    assert table["layer"].iloc[1:].tolist() == LAYERS_TOP_DOWN
    assert table["n_randomized"].tolist() == [0, 1, 2, 3, 4]
    full = float(table["value"].iloc[-1])
    # reference: rank correlation (scipy) of the trained model's |maps| with those of independently initialized
    # models — the distribution the fully randomized copy is drawn from (every layer re-initialized)
    trained_maps = _abs_maps(trained, x, method, y, **kw)
    reference = [_mean_spearman(trained_maps, _abs_maps(_cnn(s), x, method, y, **kw)) for s in (1, 2, 3, 4)]
    assert max(reference) < 0.5 and full < 0.5
    assert min(reference) - 0.1 <= full <= max(reference) + 0.1, (full, reference)
    # the trained model's maps are far more similar to themselves than to a random model's
    assert table["value"].iloc[0] == 1.0
    row = table.iloc[-1]
    assert row["ci_low"] <= full <= row["ci_high"]


class _EdgeDetector:
    """An 'attribution' that ignores the model: the input's horizontal + vertical finite differences."""

    def __init__(self, forward_func):
        self.forward_func = forward_func

    def attribute(self, inputs, target=None, **kwargs):
        x = inputs.detach()
        dx = torch.zeros_like(x)
        dy = torch.zeros_like(x)
        dx[..., :, 1:] = (x[..., :, 1:] - x[..., :, :-1]).abs()
        dy[..., 1:, :] = (x[..., 1:, :] - x[..., :-1, :]).abs()
        return dx + dy


def test_a_method_that_ignores_the_model_stays_at_one_and_is_flagged(trained, images):
    x, y = images
    register_method(Method("edge_detector", _EdgeDetector, gradient=False))
    try:
        with pytest.warns(UserWarning, match="fail the sanity check"):
            table = randomization_check(trained, x, method="edge_detector", target=y, n_boot=50)
    finally:
        METHODS.pop("edge_detector")
    assert set(table["measure"]) == {"spearman", "spearman_abs", "ssim", "topk_overlap"}
    assert (table["value"] == 1.0).all(), table
    # a gradient method on the same model is not flagged
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        randomization_check(trained, x, method="saliency", target=y, n_boot=50)
    assert not [w for w in caught if "sanity check" in str(w.message)]


def test_step0_is_one_and_the_callers_model_and_random_state_are_untouched(trained, images):
    x, _ = images
    before = copy.deepcopy(trained.state_dict())
    rng_before, np_before = torch.get_rng_state(), np.random.get_state()[1].copy()
    trained.train()
    try:
        # gradient_shap draws random baselines and noise: seeded alike for every model, so step 0 is exactly 1
        table = randomization_check(trained, x, method="gradient_shap", n_boot=50, n_samples=3)
        assert trained.training
    finally:
        trained.eval()
    step0 = table[table["n_randomized"] == 0]
    assert len(step0) == 4 and (step0["value"] == 1.0).all() and (step0["ci_low"] == 1.0).all()
    after = trained.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(rng_before, torch.get_rng_state())
    assert np.array_equal(np_before, np.random.get_state()[1])


def test_orders_share_the_layer_reinitialization_and_seed_makes_it_reproducible(trained, images):
    x, y = images
    kw = dict(method="saliency", target=y, n_boot=50)
    cascading = randomization_check(trained, x, **kw)
    independent = randomization_check(trained, x, order="independent", **kw)
    assert independent["layer"].dropna().unique().tolist() == LAYERS_TOP_DOWN
    assert (independent["n_randomized"].iloc[4:] == 1).all()
    # step 1 of both orders re-initializes the head alone, with the same seed: identical rows
    pick = ["measure", "value", "ci_low", "ci_high"]
    first_c = cascading[cascading["layer"] == "head"][pick].reset_index(drop=True)
    first_i = independent[independent["layer"] == "head"][pick].reset_index(drop=True)
    assert first_c.equals(first_i)
    # the head alone, selected explicitly, gets the same re-initialization
    head_only = randomization_check(trained, x, layers=["head"], **kw)
    assert head_only[head_only["layer"] == "head"][pick].reset_index(drop=True).equals(first_c)
    # same seed, same table; another seed, other random weights
    assert randomization_check(trained, x, **kw).equals(cascading)
    other = randomization_check(trained, x, seed=1, **kw)
    assert not np.allclose(other["value"].iloc[4:], cascading["value"].iloc[4:])


def test_similarities_match_scipy_skimage_and_plain_numpy(trained, images):
    x, y = images
    random_labels = _cnn(3)
    table = label_randomization_check(trained, random_labels, x, method="saliency", target=y, k=0.1, n_boot=100)
    got = dict(zip(table["measure"], table["value"]))
    a = attribute(trained, x, method="saliency", target=y).attributions.double().numpy()
    b = attribute(random_labels, x, method="saliency", target=y).attributions.double().numpy()
    signed_a, signed_b = a.sum(1).reshape(len(a), -1), b.sum(1).reshape(len(b), -1)
    abs_a, abs_b = np.abs(a).sum(1), np.abs(b).sum(1)
    assert got["spearman"] == pytest.approx(_mean_spearman(signed_a, signed_b), abs=1e-12)
    assert got["spearman_abs"] == pytest.approx(
        _mean_spearman(abs_a.reshape(len(a), -1), abs_b.reshape(len(b), -1)), abs=1e-12)
    # top-k Jaccard overlap, from Python sets (ties by position, first wins)
    top = math.ceil(0.1 * SIDE * SIDE)
    jac = []
    for u, v in zip(abs_a.reshape(len(a), -1), abs_b.reshape(len(b), -1)):
        su = set(sorted(range(len(u)), key=lambda i: (-u[i], i))[:top])
        sv = set(sorted(range(len(v)), key=lambda i: (-v[i], i))[:top])
        jac.append(len(su & sv) / len(su | sv))
    assert got["topk_overlap"] == pytest.approx(np.mean(jac), abs=1e-12)
    # SSIM of the maps scaled by their maximum, data range 1
    metrics = pytest.importorskip("skimage.metrics")
    want = [metrics.structural_similarity(u / u.max(), v / v.max(), win_size=7, data_range=1.0)
            for u, v in zip(abs_a, abs_b)]
    assert got["ssim"] == pytest.approx(np.mean(want), abs=1e-10)
    assert (table["ci_low"] <= table["value"]).all() and (table["value"] <= table["ci_high"]).all()
    assert table["n"].tolist() == [N_TEST] * 4
    # a copy of the model in place of the random-label model: the same maps, every similarity exactly 1
    same = label_randomization_check(trained, copy.deepcopy(trained), x, method="saliency", target=y, n_boot=20)
    assert (same["value"] == 1.0).all()


def _ssim_loop(u: np.ndarray, v: np.ndarray, win: int, data_range: float) -> float:
    """SSIM (Wang et al. 2004) of two 2-D maps with an explicit loop over every window inside the map."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(u.shape[0] - win + 1):
        for j in range(u.shape[1] - win + 1):
            p, q = u[i:i + win, j:j + win].ravel(), v[i:i + win, j:j + win].ravel()
            mp, mq = p.mean(), q.mean()
            vp, vq = p.var(ddof=1), q.var(ddof=1)
            cpq = ((p - mp) * (q - mq)).sum() / (p.size - 1)
            values.append((2 * mp * mq + c1) * (2 * cpq + c2) / ((mp ** 2 + mq ** 2 + c1) * (vp + vq + c2)))
    return float(np.mean(values))


def test_ssim_against_an_explicit_loop_and_skimage():
    rng = np.random.default_rng(0)
    a = rng.random((3, 12, 10))
    b = 0.6 * a + 0.4 * rng.random((3, 12, 10))
    got = ssim(a, b, data_range=1.0)
    assert got == pytest.approx([_ssim_loop(u, v, 7, 1.0) for u, v in zip(a, b)], abs=1e-12)
    got5 = ssim(torch.from_numpy(a), torch.from_numpy(b), win_size=5, data_range=2.0)
    assert got5 == pytest.approx([_ssim_loop(u, v, 5, 2.0) for u, v in zip(a, b)], abs=1e-12)
    # default data range: the pair's range
    pairs = [(u, v, max(u.max(), v.max()) - min(u.min(), v.min())) for u, v in zip(a, b)]
    assert ssim(a, b) == pytest.approx([_ssim_loop(u, v, 7, r) for u, v, r in pairs], abs=1e-12)
    assert ssim(a, a).tolist() == [1.0, 1.0, 1.0]
    metrics = pytest.importorskip("skimage.metrics")
    assert got == pytest.approx([metrics.structural_similarity(u, v, data_range=1.0) for u, v in zip(a, b)],
                                abs=1e-12)
    s1 = rng.random((2, 30))  # 1-D maps (signals)
    s2 = rng.random((2, 30))
    assert ssim(s1, s2, data_range=1.0) == pytest.approx(
        [metrics.structural_similarity(u, v, data_range=1.0) for u, v in zip(s1, s2)], abs=1e-12)


def test_symmetric_noise_at_k_minus_1_over_k_gives_labels_independent_of_the_class():
    """The docstring's recipe for a random-label model: label_noise = (K - 1) / K."""
    k = 6
    y = np.repeat(np.arange(k), 1000)
    noisy, _ = symmetric_label_noise(y, (k - 1) / k, k, seed=0)
    confusion = np.zeros((k, k))
    np.add.at(confusion, (y, noisy), 1)
    assert np.allclose(confusion / 1000, 1 / k, atol=0.05)
    full, _ = symmetric_label_noise(y, 1.0, k, seed=0)
    assert (full != y).all()  # label_noise=1.0: never the true class, not random labels


# --------------------------------------------------------------------------------------------------- figure
def test_randomization_figure_draws_similarity_vs_layers_top_down(trained, images):
    x, y = images
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tables = [randomization_check(trained, x, method="saliency", target=y, order=o, n_boot=50,
                                      similarity=("spearman_abs", "ssim")) for o in ("cascading", "independent")]
    fig = randomization_figure(tables[0], reference=0.1)
    assert list(fig.layout.xaxis.categoryarray) == ["original", *LAYERS_TOP_DOWN]
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.name for t in lines] == ["spearman_abs", "ssim"]
    want = tables[0][tables[0]["measure"] == "ssim"]["value"].tolist()
    assert list(lines[1].y) == pytest.approx(want)
    assert list(lines[1].x) == ["original", *LAYERS_TOP_DOWN]
    drawn = plotted_data(fig)
    assert len(drawn) == len(tables[0]) and {"x", "series"} <= set(drawn.columns)
    both = randomization_figure(__import__("pandas").concat(tables, ignore_index=True), similarity="ssim")
    assert len([t for t in both.data if t.mode == "lines+markers"]) == 2  # one panel per order


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs,name", [
    ({"order": "sideways"}, "order"),
    ({"similarity": ("pearson",)}, "similarity"),
    ({"similarity": ()}, "similarity"),
    ({"k": 0.0}, "k"),
    ({"layers": ["pool"]}, "layers"),
    ({"layers": ["no_such_layer"]}, "layers"),
    ({"n_boot": 0}, "n_boot"),
    ({"seed": -1}, "seed"),
    ({"method": "no_such_method"}, "method"),
])
def test_bad_options_are_refused_naming_the_argument(trained, images, kwargs, name):
    x, _ = images
    with pytest.raises((ValueError, TypeError), match=rf"\b{name}\b"):
        randomization_check(trained, x[:4], **{"method": "saliency", **kwargs})


def test_bad_models_maps_and_tables_are_refused(trained, images):
    x, _ = images
    with pytest.raises(TypeError, match="model"):
        randomization_check("model", x)
    with pytest.raises(ValueError, match="random_label_model"):
        label_randomization_check(trained, trained, x[:4], method="saliency")
    with pytest.raises(TypeError, match="random_label_model"):
        label_randomization_check(trained, None, x[:4], method="saliency")
    with pytest.raises(ValueError, match="a and b"):
        ssim(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)))
    with pytest.raises(ValueError, match="win_size"):
        ssim(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)), win_size=9)
    with pytest.raises(ValueError, match="win_size"):
        ssim(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)), win_size=4)
    with pytest.raises(ValueError, match=r"\ba\b"):
        ssim(np.full((2, 8, 8), np.nan), np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="ssim"):
        randomization_check(build("mlp", input_shape=(2,), num_classes=2, hidden=(4,)), torch.randn(4, 2),
                            method="saliency", similarity="ssim")
    from workbench.results import tidy
    with pytest.raises(ValueError, match="n_randomized"):
        randomization_figure(tidy([{"measure": "ssim", "value": 1.0}]))
    with pytest.raises(ValueError, match="similarity"):
        randomization_figure(tidy([{"measure": "ssim", "value": 1.0, "method": "saliency", "order": "cascading",
                                    "n_randomized": 0}]), similarity="spearman")

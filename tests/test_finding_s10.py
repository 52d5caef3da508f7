"""S10 — eigenmodes learned one at a time: the ``eig_steps`` recorder, onset detection (``mode_onsets``,
``stepwiseness``) and the finding at smoke size.

Ground truths are independent of the code under test: logistic curves with known midpoints and widths; the
gradient flow of the linear Barlow Twins model of Simon et al. (2023) (``L = ||W Γ Wᵀ − I||²_F``), whose modes
along Γ's eigenvectors follow ``c' = 8 η γ c (1 − c)`` exactly, so mode ``i`` reaches half its plateau at
``ln(1/c₀ − 1) / (8 η γ_i)``; eigenvalues recomputed with numpy from the saved weights; the finding's contrast
recomputed here from the study table with plain numpy.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from workbench import data as wb_data
from workbench.dynamics import mode_onsets, stepwiseness
from workbench.runs import RunConfig, RunStore
from workbench.train import train

pytestmark = pytest.mark.usefixtures("one_thread")


def _logistic(t: np.ndarray, heights, mids, width: float = 2.0) -> np.ndarray:
    return np.asarray(heights, float) / (1 + np.exp(-(t[:, None] - np.asarray(mids, float)) / width))


# ------------------------------------------------------------------------------------------------ onsets
def test_onsets_of_sigmoids_are_their_midpoints():
    t = np.arange(0, 400, 2.0)
    mids = [40.0, 150.0, 260.0]
    curves = _logistic(t, [5.0, 1.0, 0.2], mids)
    assert mode_onsets(curves, t).tolist() == pytest.approx(mids, abs=2.0)  # the recording resolution
    rng = np.random.default_rng(0)  # 3 % multiplicative noise: still within a few steps
    noisy = curves * (1 + 0.03 * rng.standard_normal(curves.shape))
    assert mode_onsets(noisy, t) == pytest.approx(mids, abs=6.0)
    # a quarter of the rise: midpoint − width · ln 3 for a logistic
    assert mode_onsets(curves, t, fraction=0.25) == pytest.approx(np.array(mids) - 2 * math.log(3), abs=2.0)


def test_onsets_invariances():
    t = np.arange(300.0)
    curves = _logistic(t, [3.0, 2.0, 1.0], [30.0, 120.0, 200.0])
    base = mode_onsets(curves, t)
    assert np.array_equal(mode_onsets(curves * 1e-6, t), base)  # scale of the eigenvalues
    assert np.array_equal(mode_onsets(curves[:, ::-1], t), base[::-1])  # modes permuted
    assert np.array_equal(mode_onsets(curves, t + 1000), base + 1000)  # steps shifted
    assert np.array_equal(mode_onsets(curves), base)  # default steps 0..T-1 here


def test_a_mode_already_on_at_the_start_turns_on_at_the_first_step():
    t = np.arange(100.0)
    curves = np.column_stack([np.full(100, 2.0), 1 + 0.01 * t])  # constant; 1 → 2 (above half from the start)
    assert mode_onsets(curves, t).tolist() == [0.0, 0.0]


def test_stepwiseness_of_known_curves():
    t = np.arange(0, 1001, 1.0)
    apart = stepwiseness(_logistic(t, [3.0, 2.0, 1.0], [200.0, 500.0, 800.0], width=10.0), t)
    assert apart["onset_spread"] == pytest.approx(0.6, abs=0.003)
    assert apart["mean_gap"] == pytest.approx(0.3, abs=0.002)
    assert apart["rise_width"] == pytest.approx(2 * 10 * math.log(9) / 1000, abs=0.002)  # 10 % → 90 % of a logistic
    assert apart["separation"] == pytest.approx(300 / (20 * math.log(9)), rel=0.03)
    assert apart["n_modes"] == 3
    together = stepwiseness(_logistic(t, [3.0, 2.0, 1.0], [200.0, 200.0, 200.0], width=10.0), t)
    assert together["onset_spread"] == 0.0 and together["separation"] == 0.0


def test_onset_input_errors():
    t = np.arange(50.0)
    good = _logistic(t, [2.0, 1.0], [10.0, 30.0])
    with pytest.raises(ValueError, match="curves"):
        mode_onsets(-good, t)
    with pytest.raises(ValueError, match="curves"):
        mode_onsets(good[:, 0], t)
    with pytest.raises(ValueError, match="steps"):
        mode_onsets(good, t[:-1])
    with pytest.raises(ValueError, match="steps"):
        mode_onsets(good, t[::-1])
    with pytest.raises(TypeError, match="steps"):
        mode_onsets(good, np.array(["a"] * 50))
    with pytest.raises(ValueError, match="fraction"):
        mode_onsets(good, t, fraction=1.0)
    with pytest.raises(ValueError, match="low"):
        stepwiseness(good, t, low=0.9, high=0.1)
    with pytest.raises(ValueError, match="curves"):
        stepwiseness(good[:, :1], t)


# ------------------------------------------------------------------------------------ linear Barlow Twins
def _linear_barlow(gammas, init: float, *, steps: int, lr: float, d_out: int, seed: int = 0, aligned: bool = False):
    """Gradient descent on L = ||W Γ Wᵀ − I||²_F (Simon et al. 2023's linear Barlow Twins on the population
    cross-correlation Γ); returns the eigenvalues of W Γ Wᵀ at every step (sorted, largest first) and Γ's
    eigenvectors."""
    g = torch.Generator().manual_seed(seed)
    m = len(gammas)
    q = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))[0]
    gamma = q @ torch.diag(torch.tensor(gammas, dtype=torch.float64)) @ q.T
    w0 = torch.eye(d_out, m, dtype=torch.float64) @ q.T if aligned else torch.randn(d_out, m, generator=g,
                                                                                     dtype=torch.float64)
    w = (init * w0).requires_grad_()
    eigs = []
    for _ in range(steps + 1):
        c = w @ gamma @ w.T
        eigs.append(torch.linalg.eigvalsh(c.detach()).flip(0).numpy())
        loss = (c - torch.eye(d_out, dtype=torch.float64)).pow(2).sum()
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
            w.grad = None
    return np.array(eigs), q.numpy(), w.detach().numpy()


def test_linear_barlow_modes_turn_on_when_the_theory_says():
    gammas, lr, a0 = [4.0, 2.0, 1.0], 1e-3, 1e-3
    eigs, _, _ = _linear_barlow(gammas, a0, steps=3000, lr=lr, d_out=3, aligned=True)
    c0 = np.array(gammas) * a0 ** 2  # c = γ a² along each eigenvector
    theory = np.log(1 / c0 - 1) / (8 * lr * np.array(gammas))  # half of the plateau c = 1
    assert mode_onsets(eigs, np.arange(len(eigs))) == pytest.approx(theory, rel=0.02)


def test_linear_barlow_learns_the_largest_eigenvalue_first_and_stepwise_only_from_small_init():
    gammas = [8.0, 4.0, 2.0, 1.0, 0.5, 0.25]
    small, q, w = _linear_barlow(gammas, 1e-3, steps=4000, lr=5e-4, d_out=3)
    onsets = mode_onsets(small)
    assert onsets[0] < onsets[1] < onsets[2]
    # onset ratios follow 1/γ (log(1/c₀) is similar for every mode): 2 and 4
    assert onsets[1] / onsets[0] == pytest.approx(2.0, rel=0.25)
    assert onsets[2] / onsets[0] == pytest.approx(4.0, rel=0.25)
    # the learned row space is spanned by Γ's top-3 eigenvectors (the largest cross-correlation eigenvalues)
    top = q[:, :3]
    assert np.linalg.norm(w - w @ top @ top.T) / np.linalg.norm(w) < 1e-2
    large, _, _ = _linear_barlow(gammas, 0.5, steps=4000, lr=5e-4, d_out=3)
    assert stepwiseness(small)["onset_spread"] > 3 * stepwiseness(large)["onset_spread"]
    assert stepwiseness(small)["separation"] > 1.0 > stepwiseness(large)["separation"]


# ------------------------------------------------------------------------------------------ the recorder
REC = dict(dataset="gaussian-mixture", dataset_options={"n_train": 96, "n_test": 40, "n_ood": 0, "dim": 12,
                                                        "latent_dim": 4},
           model="mlp", model_options={"hidden": [10, 6]}, objective="vicreg", augment=("noise",), projector="linear",
           embed_dim=5, steps=20, batch_size=32, checkpoints=2, lr=1e-2)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("s10-rec"))
    cfg = RunConfig(**REC, recorders=("eig_steps",))
    return cfg, train(cfg, store, progress=False), train(RunConfig(**REC, recorders=()), store, progress=False)


def test_eig_steps_rows_every_logged_step_on_embed_and_projector(recorded):
    cfg, run, _ = recorded
    h = run.history()
    e = h[h.measure.str.startswith("eig_")]
    assert set(e.split) == {"probe"} and set(e.layer) == {"embed", "projector"}
    log_every = max(1, cfg.steps // 100)
    assert sorted(e.step.unique()) == [0, *range(log_every, cfg.steps + 1, log_every)]
    per = e.groupby(["step", "layer"]).measure.apply(set)
    assert per.xs("embed", level="layer").map(len).eq(6).all()  # min(16, width 6)
    assert per.xs("projector", level="layer").map(len).eq(5).all()  # embed_dim
    assert not e.duplicated(["step", "layer", "measure"]).any()


def test_eig_steps_values_match_numpy_on_the_saved_weights(recorded):
    cfg, run, _ = recorded
    ds = wb_data.load(cfg.dataset, **dict(cfg.dataset_options))
    x = np.asarray(ds["test"].inputs, np.float64)  # the whole probe set (40 < 512)
    state = load_file(str(run.checkpoint_dir(cfg.steps) / "model.safetensors"))
    h = x  # the ReLU MLP's hidden layers written out with numpy
    for i in range(2):
        weight, bias = (state[f"hidden.{i}.0.{n}"].double().numpy() for n in ("weight", "bias"))
        h = np.maximum(h @ weight.T + bias, 0)
    obj = load_file(str(run.checkpoint_dir(cfg.steps) / "objective.safetensors"))
    z = h @ obj["projector.weight"].double().numpy().T + obj["projector.bias"].double().numpy()
    hist = run.history()
    for layer, feats in (("embed", h), ("projector", z)):
        want = np.sort(np.linalg.eigvalsh(np.cov(feats, rowvar=False)))[::-1]
        got = hist[(hist.step == cfg.steps) & (hist.layer == layer) & hist.measure.str.startswith("eig_")]
        got = got.assign(k=got.measure.str[4:].astype(int)).sort_values("k")["value"].to_numpy()
        assert got == pytest.approx(np.clip(want, 0, None), rel=1e-4, abs=1e-9)


def test_eig_steps_leaves_the_training_trajectory_alone(recorded):
    _, with_rec, without = recorded
    a, b = with_rec.history(), without.history()
    la = a[a.measure == "loss"].set_index("step")["value"]
    lb = b[b.measure == "loss"].set_index("step")["value"]
    pd.testing.assert_series_equal(la, lb)


def test_eig_steps_and_eigs_write_one_row_per_step(tmp_path):
    cfg = RunConfig(**{**REC, "steps": 10}, recorders=("eig_steps", "eigs"))
    h = train(cfg, RunStore(tmp_path), progress=False).history()
    e = h[h.measure.str.startswith("eig_")]
    assert not e.duplicated(["step", "layer", "measure"]).any()
    assert {"effective_rank", "rankme"} <= set(h.measure)  # eigs' other rows stay


# ------------------------------------------------------------------------------------------ the finding
@pytest.fixture(scope="module")
def smoke(smoke_store):
    from workbench.findings.eigenmode_steps import FINDING

    return FINDING.run("smoke", store=smoke_store, progress=False, record=False)


def _spread_by_hand(g: pd.DataFrame) -> float:
    """Onset spread written out with numpy: final = median of the last ceil(T/10) rows, onset = first step at
    half of it, spread = (last onset − first onset) / recorded span."""
    g = g[g.measure.str.match(r"eig_\d+$")]
    piv = g.pivot_table(index="step", columns="measure", values="value").sort_index()
    c, s = piv.to_numpy(), piv.index.to_numpy(float)
    final = np.median(c[-int(np.ceil(len(c) / 10)):], axis=0)
    on = np.array([s[np.nonzero(c[:, k] >= 0.5 * final[k])[0][0]] for k in range(c.shape[1])])
    return (on.max() - on.min()) / (s[-1] - s[0])


def test_smoke_verdict_numbers_by_hand(smoke):
    t = smoke.table
    hist = t[(t.kind == "history") & (t.layer == "embed") & (t.split == "probe")]
    spread = {(r.objective, float(r.init_scale), int(r.seed)): _spread_by_hand(g)
              for r, g in ((g.iloc[0], g) for _, g in hist.groupby("run"))}
    seeds = sorted({s for _, _, s in spread})
    assert len(spread) == 4 * len(seeds) == 8
    d = [spread[("vicreg", 0.05, s)] - spread[("vicreg", 1.0, s)] for s in seeds]
    row = smoke.verdict.checks.iloc[0]
    assert row["check"].startswith("vicreg")
    assert row["estimate"] == pytest.approx(np.mean(d))
    assert row["outcome"] == "inconclusive"  # two seeds: below the three a verdict needs


def test_smoke_figures_and_onset_table(smoke):
    from workbench.findings.eigenmode_steps import FINDING, onset_table

    figs = FINDING.figures(smoke.table)
    assert set(figs) == {"eigenvalues_over_steps", "loss_over_steps", "mode_onsets"}
    ot = onset_table(smoke.table)
    assert len(ot) == 8 * 4 and set(ot["mode"]) == {1, 2, 3, 4}
    assert ot["onset"].between(0, 200).all()

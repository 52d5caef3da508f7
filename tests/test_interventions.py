"""Interventions (issue 18): INLP, amnesic probing, activation patching — known answers on hand-built data and
models, each checked against an independent computation written here."""
from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from torch import nn

from workbench.interventions import (NullspaceProjection, amnesic_probe, leace_projection, nullspace_projection,
                                     orthonormal_basis, patch, patch_layers, patched_outputs, projection_hook,
                                     random_projection)
from workbench.results import COLUMNS

pytestmark = pytest.mark.usefixtures("one_thread")

D = 20


def _one_direction_data(n: int, seed: int, u: np.ndarray, signal: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """x = s·(2y − 1)·u + isotropic unit noise in D dimensions, balanced labels y."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = signal * np.outer(2 * y - 1, u) + rng.normal(size=(n, D))
    return x, y


@pytest.fixture(scope="module")
def u() -> np.ndarray:
    v = np.random.default_rng(123).normal(size=D)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def inlp(u):
    x, y = _one_direction_data(4000, 0, u)
    return nullspace_projection(x, y, n_boot=50)


# ------------------------------------------------------------------------------------------------------------- INLP
def test_inlp_first_direction_is_the_label_direction(inlp, u):
    assert abs(float(inlp.directions[0] @ u)) > 0.95
    assert inlp.iteration[0] == 0
    np.testing.assert_allclose(np.linalg.norm(inlp.directions, axis=1), 1.0, atol=1e-12)


def test_inlp_projection_is_symmetric_idempotent_and_kills_u(inlp, u):
    p = inlp.projection
    assert np.abs(p - p.T).max() < 1e-12
    assert np.abs(p @ p - p).max() < 1e-10
    assert np.linalg.norm(p @ u) < 0.1
    # independently: the projection onto the orthogonal complement of the directions' span (QR, not SVD)
    q, _ = np.linalg.qr(inlp.directions.T)
    np.testing.assert_allclose(p, np.eye(D) - q @ q.T, atol=1e-10)
    assert inlp.n_removed == len(inlp.directions) == round(D - np.trace(p))
    np.testing.assert_allclose(p @ inlp.directions.T, 0.0, atol=1e-10)


def test_after_inlp_a_fresh_probe_is_at_chance(inlp, u):
    # new data from the same distribution, projected, probed by an independent classifier: chance within a margin
    x, y = _one_direction_data(2000, 1, u)
    z = inlp.apply(x)
    np.testing.assert_allclose(z, inlp.mean + (x - inlp.mean) @ inlp.projection, atol=1e-12)
    clf = LogisticRegression(max_iter=2000).fit(z[:1000], y[:1000])
    acc = float((clf.predict(z[1000:]) == y[1000:]).mean())
    assert acc <= 0.5 + 3 * math.sqrt(0.25 / 1000), acc
    # the unprojected data, by the same classifier, is far above it
    clf = LogisticRegression(max_iter=2000).fit(x[:1000], y[:1000])
    assert float((clf.predict(x[1000:]) == y[1000:]).mean()) > 0.9


def test_inlp_table_accuracy_per_iteration(inlp):
    t = inlp.table
    assert list(t.columns[:len(COLUMNS)]) == list(COLUMNS)
    acc = t[t.measure == "accuracy"].sort_values("iteration")
    chance = inlp.chance
    assert chance == pytest.approx(0.5) and set(t["measure"]) == {"accuracy"}
    assert acc["iteration"].tolist() == list(range(len(acc)))
    assert acc["value"].iloc[0] > 0.9                     # before any removal the label is read off easily
    n_held = 1200                                         # 30 % of each class of 4000
    assert acc["value"].iloc[-1] <= chance + 2 * math.sqrt(0.25 / n_held) + 1e-12
    assert (acc["value"].iloc[:-1] > chance + 2 * math.sqrt(0.25 / n_held)).all()  # it stopped at the first chance
    assert (acc["ci_low"] <= acc["value"]).all() and (acc["value"] <= acc["ci_high"]).all()
    assert len(acc) == inlp.iteration.max() + 2           # one row per classifier, the last one at chance


def test_inlp_multiclass_removes_the_class_subspace():
    rng = np.random.default_rng(5)
    basis, _ = np.linalg.qr(rng.normal(size=(D, 2)))
    y = np.arange(1500) % 3
    centres = 3.0 * np.array([[1, 0], [-0.5, 0.87], [-0.5, -0.87]]) @ basis.T
    x = centres[y] + rng.normal(size=(1500, D))
    r = nullspace_projection(x, y, n_boot=0)
    assert r.n_removed >= 2
    assert np.linalg.norm(r.projection @ basis, axis=0).max() < 0.15
    assert r.table.loc[r.table.measure == "accuracy", "value"].iloc[-1] < 1 / 3 + 0.08


def test_inlp_stops_after_n_iterations(u):
    x, y = _one_direction_data(600, 2, u, signal=3.0)
    r = nullspace_projection(x, y, n_iterations=1, n_boot=0)
    assert r.n_removed == 1 and r.iteration.tolist() == [0]
    assert r.table.loc[r.table.measure == "accuracy", "iteration"].tolist() == [0, 1]


def test_inlp_bad_input(u):
    x, y = _one_direction_data(100, 0, u)
    with pytest.raises(ValueError, match=r"labels|samples"):
        nullspace_projection(x, y[:-1])
    with pytest.raises(ValueError, match="n_iterations"):
        nullspace_projection(x, y, n_iterations=0)
    with pytest.raises(ValueError, match="labels"):
        nullspace_projection(x[:5], np.array([0, 1, 1, 1, 1]))  # class 0 has one example: nothing to hold out


def test_random_projection_is_a_haar_projection():
    p = random_projection(7, 3, seed=4)
    assert np.abs(p - p.T).max() < 1e-12 and np.abs(p @ p - p).max() < 1e-10
    assert np.trace(p) == pytest.approx(4.0)
    # E[I − QQᵀ] over Haar-random 2-frames in 5 dimensions is (1 − 2/5) I
    mean = np.mean([random_projection(5, 2, seed=s) for s in range(400)], axis=0)
    np.testing.assert_allclose(mean, 0.6 * np.eye(5), atol=0.05)
    np.testing.assert_array_equal(random_projection(4, 0), np.eye(4))
    with pytest.raises(ValueError, match="n_removed"):
        random_projection(3, 4)


def test_orthonormal_basis_spans_the_rows():
    rows = np.array([[1.0, 1.0, 0.0], [2.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    b = orthonormal_basis(rows)
    assert b.shape == (2, 3)
    np.testing.assert_allclose(b @ b.T, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(b.T @ b, [[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1]], atol=1e-12)


# -------------------------------------------------------------------------------------------------------- LEACE
def test_leace_equalises_the_class_means_with_an_anisotropic_covariance():
    rng = np.random.default_rng(7)
    y = np.arange(900) % 3
    mix = rng.normal(size=(6, 6))
    x = rng.normal(size=(900, 6)) @ mix + 1.5 * rng.normal(size=(3, 6))[y]
    r = leace_projection(x, y, n_boot=0)
    z = r.apply(x)
    # independently: after erasure every class mean is the overall mean, and the cross-covariance with z is 0
    for c in range(3):
        np.testing.assert_allclose(z[y == c].mean(0), z.mean(0), atol=1e-9)
    onehot = np.eye(3)[y]
    np.testing.assert_allclose((z - z.mean(0)).T @ (onehot - onehot.mean(0)) / len(y), 0.0, atol=1e-10)
    p = r.projection
    assert np.abs(p @ p - p).max() < 1e-9 and r.n_removed == 2 and r.directions.shape == (2, 6)
    assert np.abs(p - p.T).max() > 1e-3                      # oblique: the covariance is not isotropic
    np.testing.assert_allclose(r.mean, x.mean(0), atol=1e-12)
    acc = r.table.sort_values("iteration")["value"].tolist()
    assert acc[0] > 0.6 and acc[1] <= 1 / 3 + 3 * math.sqrt(2 / 9 / 270)


def test_leace_with_isotropic_noise_is_the_orthogonal_projection_off_the_mean_difference(u):
    x, y = _one_direction_data(4000, 4, u)
    r = leace_projection(x, y, n_boot=0)
    diff = x[y == 1].mean(0) - x[y == 0].mean(0)
    d = diff / np.linalg.norm(diff)
    # the covariance is near-isotropic, so P is near I − d dᵀ; exactly, P kills the mean difference
    np.testing.assert_allclose(diff @ r.projection, 0.0, atol=1e-9)
    np.testing.assert_allclose(r.projection, np.eye(D) - np.outer(d, d), atol=0.1)
    assert abs(float(r.directions[0] @ u)) > 0.95


# ------------------------------------------------------------------------------------------------------ amnesic
class Readout(nn.Module):
    """x → enc (orthogonal R) → head reading only the direction R u: logits (−h·Ru, h·Ru)·scale."""

    def __init__(self, u: np.ndarray, seed: int = 0):
        super().__init__()
        r, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(D, D)))
        self.enc = nn.Linear(D, D)
        self.head = nn.Linear(D, 2)
        with torch.no_grad():
            self.enc.weight.copy_(torch.tensor(r, dtype=torch.float32))
            self.enc.bias.zero_()
            ru = torch.tensor(r @ u, dtype=torch.float32)
            self.head.weight.copy_(torch.stack([-ru, ru]) * 2.0)
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(self.enc(x))


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.fixture(scope="module")
def readout_data(u):
    x, y = _one_direction_data(1200, 3, u)
    return x.astype(np.float32), y


def test_amnesic_removing_the_used_direction_drops_to_chance(u, readout_data):
    x, y = readout_data
    model = Readout(u).train()
    state = _state(model)
    t = amnesic_probe(model, x, "enc", y, task_labels=y, n_controls=3, n_boot=50)
    acc = t[t.measure == "accuracy"].set_index("method")["value"]
    # independent: the model's own accuracy
    with torch.no_grad():
        logits = model(torch.tensor(x))
    assert acc["none"] == pytest.approx(float((logits.argmax(1).numpy() == y).mean()))
    assert acc["none"] > 0.95
    assert abs(acc["amnesic"] - 0.5) <= 3 * math.sqrt(0.25 / len(y))
    assert acc["none"] - acc["control"] < 0.05
    assert set(t["method"]) == {"none", "amnesic", "control"}
    assert (t.loc[t.method != "none", "n_removed"] >= 1).all() and (t.loc[t.method == "none", "n_removed"] == 0).all()
    assert (t["ci_low"] <= t["value"] + 1e-12).all() and (t["value"] <= t["ci_high"] + 1e-12).all()
    # the caller's model: same weights, no hooks, train mode kept
    assert _same_state(model, state) and _hooks(model) == 0 and model.training


def test_amnesic_with_leace_drops_to_chance(u, readout_data):
    x, y = readout_data
    t = amnesic_probe(Readout(u), x, "enc", y, task_labels=y, eraser="leace", n_controls=2, n_boot=0)
    acc = t[t.measure == "accuracy"].set_index("method")["value"]
    assert acc["none"] > 0.95 and abs(acc["amnesic"] - 0.5) <= 3 * math.sqrt(0.25 / len(y))
    assert acc["none"] - acc["control"] < 0.05
    assert (t.loc[t.method == "amnesic", "n_removed"] == 1).all()


def test_amnesic_matches_a_hand_computed_projection(u, readout_data):
    x, y = readout_data
    model = Readout(u)
    with torch.no_grad():
        h = model.enc(torch.tensor(x)).double().numpy()
    r = nullspace_projection(h, y, n_boot=0)
    assert isinstance(r, NullspaceProjection)
    t = amnesic_probe(model, x, "enc", task_labels=y, projection=r, control=None, n_boot=0)
    # independent: project by hand in numpy, read out with the head's weights
    w = model.head.weight.detach().double().numpy()
    b = model.head.bias.detach().double().numpy()
    logits = (r.mean + (h - r.mean) @ r.projection) @ w.T + b
    loss = np.log(np.exp(logits).sum(1)) - logits[np.arange(len(y)), y]
    got = t[t.method == "amnesic"].set_index("measure")["value"]
    assert got["accuracy"] == pytest.approx(float((logits.argmax(1) == y).mean()), abs=2 / len(y))
    assert got["loss"] == pytest.approx(float(loss.mean()), rel=1e-5)
    assert set(t["method"]) == {"none", "amnesic"}


def test_projection_hook_acts_on_channels_of_conv_maps_and_features_of_tokens():
    rng = np.random.default_rng(0)
    p = random_projection(3, 1, seed=2)
    mu = rng.normal(size=3)
    conv = nn.Conv2d(3, 3, 1)
    handle = conv.register_forward_hook(projection_hook(p, mu))
    x = torch.randn(2, 3, 4, 5)
    with torch.no_grad():
        out = conv(x).double().numpy()
        handle.remove()
        raw = conv(x).double().numpy()
    expected = np.einsum("bchw,cd->bdhw", raw - mu[None, :, None, None], p) + mu[None, :, None, None]
    np.testing.assert_allclose(out, expected, atol=1e-5)
    lin = nn.Linear(3, 3)  # a token sequence [B, T, D]: along the last axis
    handle = lin.register_forward_hook(projection_hook(p, mu, layout="sequence"))
    t = torch.randn(2, 6, 3)
    with torch.no_grad():
        out = lin(t).double().numpy()
        handle.remove()
        raw = lin(t).double().numpy()
    np.testing.assert_allclose(out, mu + (raw - mu) @ p, atol=1e-5)


def test_amnesic_bad_input(u, readout_data):
    x, y = readout_data
    model = Readout(u).train()
    state = _state(model)
    with pytest.raises(ValueError, match="layer"):
        amnesic_probe(model, x, "nope", y, task_labels=y)
    with pytest.raises(ValueError, match="projection"):
        amnesic_probe(model, x, "enc", task_labels=y, projection=random_projection(D + 1, 1))
    with pytest.raises(ValueError, match="projection"):
        amnesic_probe(model, x, "enc", task_labels=y, projection=np.ones((D, D)))
    with pytest.raises(ValueError, match="labels"):
        amnesic_probe(model, x, "enc", task_labels=y)          # neither labels nor a projection
    with pytest.raises(ValueError, match="task_labels"):
        amnesic_probe(model, x, "enc", y)                       # an array has no task labels
    with pytest.raises(ValueError, match="eraser"):
        amnesic_probe(model, x, "enc", y, task_labels=y, eraser="svd")
    # the projection of the wrong size raised inside the forward pass: the hook is gone, the mode restored
    assert _hooks(model) == 0 and model.training and _same_state(model, state)


# ----------------------------------------------------------------------------------------------------- patching
class Net(nn.Module):
    probe_points = {"enc": "enc", "mid": "mid", "head": "head"}

    def __init__(self, width: int = 8, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.enc = nn.Linear(5, width)
        self.mid = nn.Linear(width, width)
        self.head = nn.Linear(width, 3)
        self.fail = False  # a plain attribute (not state): raise in the forward pass after the head

    def forward(self, x):
        out = self.head(torch.tanh(self.mid(torch.tanh(self.enc(x)))))
        if self.fail:
            raise RuntimeError("boom")
        return out


@pytest.fixture(scope="module")
def patch_data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(96, 5, generator=g), torch.arange(96) % 3


def _pair():
    a = Net()
    b = copy.deepcopy(a)
    with torch.no_grad():
        b.mid.weight.add_(0.8 * torch.randn_like(b.mid.weight))  # the only difference
    return a, b


def test_patching_the_only_different_layer_moves_the_whole_gap(patch_data):
    x, y = patch_data
    a, b = _pair()
    t = patch_layers(a, b, x, labels=y, n_boot=100)
    frac = t[t.measure == "patched_fraction"].set_index("layer")["value"]
    assert list(frac.index) == ["enc", "mid", "head"]
    assert frac["mid"] == pytest.approx(1.0, abs=1e-6)
    assert frac["head"] == pytest.approx(1.0, abs=1e-6)
    assert frac["enc"] == pytest.approx(0.0, abs=1e-12)
    # independent: the losses by hand, and the patched model composed by hand
    with torch.no_grad():
        la = F.cross_entropy(a(x).double(), y).item()
        lb = F.cross_entropy(b(x).double(), y).item()
        hand = a.head(torch.tanh(b.mid(torch.tanh(a.enc(x)))))
        lp = F.cross_entropy(hand.double(), y).item()
    rows = t[t.measure == "loss"]
    assert rows.loc[rows.method == "model_a", "value"].item() == pytest.approx(la, rel=1e-6)
    assert rows.loc[rows.method == "model_b", "value"].item() == pytest.approx(lb, rel=1e-6)
    assert rows.loc[(rows.method == "patched") & (rows.layer == "mid"), "value"].item() == pytest.approx(lp, rel=1e-6)
    assert abs(lb - la) > 1e-3
    mid = t[(t.measure == "patched_fraction") & (t.layer == "mid")].iloc[0]
    assert mid.ci_low <= 1.0 + 1e-6 and mid.ci_high >= 1.0 - 1e-6


def test_patch_one_layer_and_accuracy_metric(patch_data):
    x, y = patch_data
    a, b = _pair()
    t = patch(a, b, x, "enc", labels=y, metric="accuracy", n_boot=0, run="a", run_b="b")
    assert t["run"].eq("a").all() and t["run_b"].eq("b").all()
    with torch.no_grad():
        acc_a = float((a(x).argmax(1) == y).double().mean())
        acc_b = float((b(x).argmax(1) == y).double().mean())
    got = t[t.measure == "accuracy"].set_index("method")["value"]
    assert got["model_a"] == pytest.approx(acc_a) and got["model_b"] == pytest.approx(acc_b)
    assert got["patched"] == pytest.approx(acc_a)       # enc is identical: patching it changes nothing
    frac = t.loc[t.measure == "patched_fraction", "value"].item()
    if acc_a != acc_b:
        assert frac == pytest.approx(0.0, abs=1e-12)
    # a callable metric: per-example logit of the true class
    t = patch(a, b, x, "mid", labels=y, metric=lambda out, lab: out.gather(1, lab[:, None])[:, 0], n_boot=0)
    assert t.loc[t.measure == "patched_fraction", "value"].item() == pytest.approx(1.0, abs=1e-6)


def test_patched_outputs_match_a_hand_composition(patch_data):
    x, _ = patch_data
    a, b = _pair()
    out = patched_outputs(a, b, x, "mid", batch_size=40)    # several batches
    with torch.no_grad():
        hand = a.head(torch.tanh(b.mid(torch.tanh(a.enc(x)))))
    np.testing.assert_allclose(out.numpy(), hand.numpy(), rtol=0, atol=1e-6)


def test_identical_models_give_identical_outputs_and_an_undefined_fraction(patch_data):
    x, y = patch_data
    a = Net()
    b = copy.deepcopy(a)
    with torch.no_grad():
        assert torch.equal(patched_outputs(a, b, x, "mid"), a(x))
    with pytest.warns(RuntimeWarning, match="undefined"):
        t = patch(a, b, x, "mid", labels=y, n_boot=20)
    row = t[t.measure == "patched_fraction"].iloc[0]
    assert math.isnan(row.value) and math.isnan(row.ci_low) and math.isnan(row.ci_high)
    loss = t[t.measure == "loss"].set_index("method")["value"]
    assert loss["patched"] == loss["model_a"] == loss["model_b"]


def test_patching_leaves_the_models_as_they_were_also_on_error(patch_data):
    x, y = patch_data
    a, b = _pair()
    a.train()
    b.eval()
    sa, sb = _state(a), _state(b)
    patch_layers(a, b, x, labels=y, n_boot=0)
    assert _same_state(a, sa) and _same_state(b, sb) and _hooks(a) == _hooks(b) == 0
    assert a.training and not b.training
    b.fail = True  # raises inside model_b's forward, while its capture hooks are registered
    with pytest.raises(ValueError, match="model_b"):
        patch_layers(a, b, x, labels=y, n_boot=0)
    assert _hooks(a) == _hooks(b) == 0 and a.training and not b.training
    b.fail, a.fail = False, True  # raises inside model_a's patched forward
    with pytest.raises(ValueError, match="model_a"):
        patch(a, b, x, "mid", labels=y, n_boot=0)
    assert _hooks(a) == _hooks(b) == 0 and a.training
    a.fail = False

    def bad_metric(out, lab):
        raise KeyError("metric failed")

    with pytest.raises(KeyError):
        patch(a, b, x, "mid", labels=y, metric=bad_metric)
    assert _hooks(a) == _hooks(b) == 0 and a.training and _same_state(a, sa) and _same_state(b, sb)


def test_patching_bad_input(patch_data):
    x, y = patch_data
    a = Net()
    with pytest.raises(ValueError, match="model_b"):
        patch(a, Net(width=9), x, "mid", labels=y)            # another width: not one architecture
    with pytest.raises(ValueError, match="layer"):
        patch(a, copy.deepcopy(a), x, "nope", labels=y)
    with pytest.raises(ValueError, match="metric"):
        patch(a, copy.deepcopy(a), x, "mid", labels=y, metric="f1")
    with pytest.raises(TypeError, match="model_a"):
        patch("a", a, x, "mid", labels=y)
    with pytest.raises(ValueError, match="labels"):
        patch(a, copy.deepcopy(a), x, "mid")                  # an array has no labels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _hooks(a) == 0


# ------------------------------------------------------------------------------------------------------- figures
from workbench.figures import amnesic_bars, inlp_curve, patching_curve  # noqa: E402

from workbench.figures import plotted_data  # noqa: E402


def test_inlp_curve_draws_the_table(inlp):
    fig = inlp_curve(inlp.table, chance=inlp.chance)
    acc = inlp.table[inlp.table.measure == "accuracy"]
    line = [t for t in fig.data if t.mode == "lines+markers"]
    assert len(line) == 1
    assert list(line[0].x) == acc["iteration"].astype(float).tolist()
    assert list(line[0].y) == acc["value"].tolist()
    assert any(s.y0 == 0.5 for s in fig.layout.shapes)                    # the chance line
    assert len(plotted_data(fig)) == len(inlp.table)
    assert not any(s.y0 == 0.5 for s in inlp_curve(inlp.table).layout.shapes)
    with pytest.raises(ValueError, match="df"):
        inlp_curve(inlp.table.drop(columns="iteration"))


def test_patching_curve_and_amnesic_bars_draw_the_tables(patch_data, u, readout_data):
    x, y = patch_data
    a, b = _pair()
    t = patch_layers(a, b, x, labels=y, n_boot=20, run="a", run_b="b")
    fig = patching_curve(t)
    frac = t[t.measure == "patched_fraction"]
    assert [tr.name for tr in fig.data] == ["b"]
    assert list(fig.data[0].x) == ["enc", "mid", "head"]
    np.testing.assert_allclose(fig.data[0].y, frac["value"].to_numpy())
    np.testing.assert_allclose(fig.data[0].error_y.array, (frac["ci_high"] - frac["value"]).clip(lower=0))
    assert len(plotted_data(fig)) == 3
    assert len(patching_curve(t, kind="line").data) == 1
    with pytest.raises(ValueError, match="df"):
        patching_curve(t[t.measure == "loss"])
    xs, ys = readout_data
    am = amnesic_probe(Readout(u), xs, "enc", ys, task_labels=ys, n_controls=1, n_boot=0)
    fig = amnesic_bars(am)
    assert [tr.name for tr in fig.data] == ["none", "amnesic", "control"]
    got = {tr.name: tr.y[0] for tr in fig.data}
    want = am[am.measure == "accuracy"].set_index("method")["value"].to_dict()
    assert got == pytest.approx(want)

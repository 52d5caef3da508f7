"""The ``projector_geometry`` recorder: alignment, uniformity and tolerance where a contrastive loss acts.

The recorded values are checked against an independent computation written here: the projector rebuilt with
plain ``torch.nn`` layers from the checkpoint's ``objective.safetensors``, the views redrawn from seed 0 with
the run's augmentations, and the three quantities written out with numpy / scipy (pairwise distances, an
explicit same-class mask), never with :mod:`workbench.spectrum`.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.spatial.distance import pdist
from torch import nn

from workbench import data as wb_data
from workbench.runs import RunConfig
from workbench.train import train
from workbench.train.augment import make_augment

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = dict(dataset="shapes", dataset_options={"n_train": 64, "n_test": 40, "n_ood": 0, "size": 16},
            model="cnn", model_options={"width": 4, "depth": 2}, steps=4, batch_size=16, checkpoints=2, lr=1e-2,
            objective="simclr", augment=("crop", "flip", "color"), augment_strength=0.5, projector="mlp",
            projector_depth=2, embed_dim=8, temperature=0.2, recorders=("align_unif", "projector_geometry"))


def _unit(z: np.ndarray) -> np.ndarray:
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _uniformity(z: np.ndarray) -> float:
    return float(np.log(np.mean(np.exp(-2.0 * pdist(_unit(z), "sqeuclidean")))))


def _tolerance(z: np.ndarray, y: np.ndarray) -> float:
    s = _unit(z) @ _unit(z).T
    same = (y[:, None] == y[None, :]) & ~np.eye(len(y), dtype=bool)
    return float(s[same].mean())


def _alignment(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.sum((_unit(a) - _unit(b)) ** 2, axis=1)))


def _projector_from_checkpoint(state: dict[str, torch.Tensor]) -> nn.Module:
    """Linear -> BatchNorm1d -> ReLU -> Linear, shapes read from the saved weights."""
    w0, w3 = state["projector.0.weight"], state["projector.3.weight"]
    net = nn.Sequential(nn.Linear(w0.shape[1], w0.shape[0]), nn.BatchNorm1d(w0.shape[0]), nn.ReLU(),
                        nn.Linear(w3.shape[1], w3.shape[0]))
    net.load_state_dict({k[len("projector."):]: v for k, v in state.items() if k.startswith("projector.")})
    return net.eval()


def _expected(run, cfg: RunConfig, step: int, projector: str) -> dict[tuple[str, str], float]:
    ds = wb_data.load(cfg.dataset, **dict(cfg.dataset_options))
    x = torch.as_tensor(ds["test"].inputs, dtype=torch.float32)  # 40 test rows: the whole probe set (< 512)
    y = np.asarray(ds["test"].labels)
    aug = make_augment(cfg.augment, cfg.augment_strength, kind="image")
    model = run.load_model(step).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        h1, h2 = model.embed(aug(x)), model.embed(aug(x))
        if projector == "mlp":
            proj = _projector_from_checkpoint(load_file(run.checkpoint_dir(step) / "objective.safetensors"))
            z1, z2 = proj(h1), proj(h2)
        else:
            z1, z2 = h1, h2
    h1, h2, z1, z2 = (t.double().numpy() for t in (h1, h2, z1, z2))
    return {("alignment", "projector"): _alignment(z1, z2),
            ("uniformity", "projector"): 0.5 * (_uniformity(z1) + _uniformity(z2)),
            ("tolerance", "projector"): 0.5 * (_tolerance(z1, y) + _tolerance(z2, y)),
            ("tolerance", "embed"): 0.5 * (_tolerance(h1, y) + _tolerance(h2, y))}


@pytest.mark.parametrize("projector", ["mlp", "none"])
def test_projector_rows_match_an_independent_computation_at_every_checkpoint(tmp_path, projector):
    cfg = RunConfig.from_dict({**BASE, "projector": projector})
    run = train(cfg, tmp_path, progress=False)
    hist = run.history()
    rows = hist[hist.layer.isin(["projector"]) | ((hist.layer == "embed") & (hist.measure == "tolerance"))]
    assert sorted(rows.step.unique()) == run.checkpoints() == [0, 1, 4]
    for step in run.checkpoints():
        got = rows[rows.step == step]
        assert set(got.split) == {"probe"}
        expected = _expected(run, cfg, step, projector)
        assert set(zip(got.measure, got.layer)) == set(expected)
        for (measure, layer), value in expected.items():
            recorded = got[(got.measure == measure) & (got.layer == layer)]["value"].item()
            assert recorded == pytest.approx(value, rel=1e-4, abs=1e-6), (step, measure, layer)
    if projector == "none":  # the identity projector: the projector rows describe the representation itself
        tol = rows[rows.measure == "tolerance"].pivot_table(index="step", columns="layer", values="value")
        np.testing.assert_allclose(tol["projector"], tol["embed"], rtol=1e-9)


def test_the_recorder_does_not_change_training(tmp_path):
    with_rec = train(BASE, tmp_path / "a", progress=False)
    without = train({**BASE, "recorders": ("align_unif",)}, tmp_path / "b", progress=False)
    for step in with_rec.checkpoints():
        a = load_file(with_rec.checkpoint_dir(step) / "model.safetensors")
        b = load_file(without.checkpoint_dir(step) / "model.safetensors")
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), step


def test_training_leaves_the_collapsed_start_at_the_projector(tmp_path):
    # a few more steps: the projector output starts (eval mode, fresh BatchNorm statistics) nearly collapsed
    # -- all probe examples on almost one direction -- and the contrastive loss spreads it out
    run = train({**BASE, "steps": 40, "dataset_options": {**BASE["dataset_options"], "n_train": 256}},
                tmp_path, progress=False)
    h = run.history()
    unif = h[(h.measure == "uniformity") & (h.layer == "projector")].set_index("step")["value"]
    assert unif.index.min() == 0 and unif.index.max() == 40
    assert unif[0] > -0.5 and unif[40] < unif[0] - 0.5


@pytest.mark.parametrize("changes", [{"objective": "supervised", "augment": ("flip",), "projector": "none"},
                                     {"objective": "mae", "augment": (), "projector": "none"}])
def test_objectives_without_a_projector_are_refused_with_the_reason(tmp_path, changes):
    cfg = {**BASE, **changes, "recorders": ("projector_geometry",)}
    with pytest.raises(ValueError, match=r"'projector_geometry'.*has no projector.*simclr"):
        train(cfg, tmp_path, progress=False)


def test_the_recorder_name_is_validated_by_the_config():
    assert "projector_geometry" in RunConfig(recorders=("projector_geometry",)).recorders
    with pytest.raises(ValueError, match="recorders"):
        RunConfig(recorders=("projector_geometry_typo",))

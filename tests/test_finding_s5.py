"""S5 (projection head): the backbone + head model (``Run.load_model(head=True)``), its probe points, the study and
downstream wiring, and the finding at smoke size."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from workbench import data as wb_data
from workbench.activations import extract
from workbench.models import build, probe_points
from workbench.models.heads import DinoHead, WithHead, make_projector
from workbench.runs import RunConfig, RunStore
from workbench.train import train
from workbench.train.downstream import evaluate

_DATA = {"n_train": 96, "n_test": 64, "n_ood": 0, "dim": 12, "n_classes": 3, "seed": 0}


def _config(**changes):
    base = RunConfig(dataset="gaussian-mixture", dataset_options=_DATA, model="mlp", model_options={"hidden": [16, 16]},
                     objective="simclr", augment=("noise", "mask"), projector="mlp", projector_depth=2, embed_dim=8,
                     steps=6, batch_size=32, checkpoints=1, recorders=())
    return base.replace(**changes)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return RunStore(tmp_path_factory.mktemp("s5"))


@pytest.fixture(scope="module")
def runs(store):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {depth: train(_config(projector_depth=depth), store, progress=False) for depth in (2, 3)}


@pytest.fixture(scope="module")
def test_x():
    return torch.as_tensor(wb_data.load("gaussian-mixture", **_DATA)["test"].inputs, dtype=torch.float32)


def _state(run):
    return load_file(str(run.checkpoint_dir(run.resolve_step("final")) / "objective.safetensors"))


def _by_hand(h, state, depth):
    """The projector (Linear → BN (eval: running statistics, eps 1e-5) → ReLU, …, Linear) applied to ``h`` with the
    stored tensors: the hidden outputs and z."""
    hidden, a = [], h
    for k in range(depth - 1):
        i = 3 * k
        a = a @ state[f"projector.{i}.weight"].T + state[f"projector.{i}.bias"]
        bn = f"projector.{i + 1}"
        a = (a - state[f"{bn}.running_mean"]) / torch.sqrt(state[f"{bn}.running_var"] + 1e-5)
        a = torch.relu(a * state[f"{bn}.weight"] + state[f"{bn}.bias"])
        hidden.append(a)
    last = 3 * (depth - 1)
    return hidden, a @ state[f"projector.{last}.weight"].T + state[f"projector.{last}.bias"]


@pytest.mark.parametrize("depth", [2, 3])
def test_head_outputs_equal_the_projector_applied_by_hand(runs, test_x, depth):
    run = runs[depth]
    with torch.no_grad():
        h = run.load_model().embed(test_x)
    hidden, z = _by_hand(h, _state(run), depth)
    acts = extract(run.load_model(head=True), test_x.numpy())
    assert torch.allclose(acts["projector"], z, atol=1e-5)
    for k, a in enumerate(hidden, start=1):
        assert torch.allclose(acts[f"projector.fc{k}"], a, atol=1e-5)
    assert torch.allclose(acts["fc2"], h, atol=1e-6)  # the backbone's layers are unchanged


def test_probe_points_continue_in_forward_order(runs):
    assert list(probe_points(runs[2].load_model(head=True))) == ["fc1", "fc2", "projector.fc1", "projector"]
    m = runs[3].load_model(head=True)
    assert list(probe_points(m)) == ["fc1", "fc2", "projector.fc1", "projector.fc2", "projector"]
    assert m.probe_points["projector.fc2"] == "projector.5"  # the ReLU closing the second hidden layer
    assert not m.training and "head" not in m.probe_points  # eval mode; the classifier head never runs


def test_with_head_of_linear_none_and_dino_heads():
    backbone = build("mlp", input_shape=(6,), num_classes=2, hidden=(8,)).eval()
    assert WithHead(backbone, make_projector("linear", 8, 4)).probe_points == {"fc1": "backbone.hidden.0",
                                                                              "projector": "projector"}
    x = torch.randn(5, 6)
    none = WithHead(backbone, make_projector("none", 8, 4)).eval()
    assert torch.equal(none(x), backbone.embed(x))
    dino = WithHead(backbone, DinoHead(8, "mlp", 2, 4, 16), name="head").eval()
    assert list(dino.probe_points) == ["fc1", "head.fc1", "head.mlp", "head.bottleneck", "head"]
    with torch.no_grad():  # DINO head by hand: Linear, GELU, Linear, Linear, L2-normalise, unit-norm rows
        h = backbone.embed(x)
        u = F.linear(F.gelu(F.linear(h, dino.head.mlp[0].weight, dino.head.mlp[0].bias)), dino.head.mlp[2].weight,
                     dino.head.mlp[2].bias)
        u = F.linear(u, dino.head.bottleneck.weight, dino.head.bottleneck.bias)
        u = u / u.norm(dim=1, keepdim=True)
        w = dino.head.last.weight
        assert torch.allclose(dino(x), u @ (w / w.norm(dim=1, keepdim=True)).T, atol=1e-6)


def test_distill_run_loads_its_dino_head(store):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = train(_config(objective="distill", steps=2, embed_dim=4), store, progress=False)
    m = run.load_model(head=True)
    assert list(m.probe_points)[-3:] == ["head.mlp", "head.bottleneck", "head"]
    state = _state(run)
    assert torch.equal(m.head.last.weight, state["head.last.weight"])
    assert not any(k.startswith("teacher") for k in m.state_dict())  # the frozen teacher is not part of it


def test_a_run_without_projector_loads_an_identity_head(store, test_x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = train(_config(projector="none"), store, progress=False)
    m = run.load_model(head=True)
    assert list(m.probe_points) == ["fc1", "fc2", "projector"]
    acts = extract(m, test_x.numpy(), layers=["fc2", "projector"])
    assert torch.equal(acts["fc2"], acts["projector"])  # no head: z is h


def test_refusals(store, runs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sup = train(_config(objective="supervised", projector="none", augment=()), store, progress=False)
    with pytest.raises(ValueError, match=r"head=True.*objective='supervised'.*head=False"):
        sup.load_model(head=True)
    with pytest.raises(TypeError, match="head must be True or False"):
        runs[2].load_model(head="projector")
    with pytest.raises(TypeError, match="head must be True, False or None"):
        evaluate(runs[2], layer="projector", head=1)
    with pytest.raises(TypeError, match="backbone"):
        WithHead(torch.nn.Linear(3, 3), torch.nn.Identity())
    with pytest.raises(ValueError, match="name="):
        WithHead(build("mlp", input_shape=(3,), num_classes=2, hidden=(4,)), torch.nn.Identity(), name="predictor")


def test_evaluate_reads_head_layers(runs):
    run = runs[2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auto = evaluate(run, layer=["fc2", "projector"], splits=["test"], cache=False)  # "projector": head inferred
        plain = evaluate(run, layer="fc2", splits=["test"], cache=False)
        default = evaluate(run, head=True, splits=["test"], cache=False)
    acc = auto[auto.measure == "accuracy"].set_index("layer")
    assert list(acc.index) == ["fc2", "projector"] and list(acc.layer_index) == [1, 3]
    assert acc.loc["fc2", "value"] == pytest.approx(plain[plain.measure == "accuracy"].value.iloc[0])
    assert set(default.layer) == {"projector"}  # with head=True the default layer is the head's output


def test_study_head_measures_every_layer(runs, store):
    from workbench.study import Study

    base = runs[2].config
    study = Study(base, {"projector_depth": [2]}, seeds=[base.seed], head=True, downstream=[], store=store,
                  measures=["effective_rank"], name="s5-test")
    with pytest.raises(TypeError, match="head must be True or False"):
        Study(base, seeds=[0], head="yes", store=store)
    table = study.run(progress=False)
    er = table[(table.kind == "measure") & (table.measure == "effective_rank")].sort_values("layer_index")
    assert list(er.layer) == ["fc1", "fc2", "projector.fc1", "projector"]
    assert er.value.iloc[-1] <= base.embed_dim + 1e-6  # z has embed_dim columns


# ----------------------------------------------------------------------------------------------- the finding
@pytest.fixture(scope="module")
def smoke(smoke_store):
    from workbench.findings.projection_head import FINDING

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FINDING.run("smoke", store=smoke_store, progress=False, record=False)


def test_smoke_verdict_recomputed_by_hand(smoke):
    t = smoke.table
    acc = t[(t.kind == "downstream") & (t.task == "color") & (t.measure == "accuracy") & (t.projector_depth == 2)]
    per_seed = {int(s): float(g.set_index("layer").value["pool"] - g.set_index("layer").value["projector"])
                for s, g in acc.groupby("seed")}
    row = smoke.verdict.checks.iloc[0]
    assert "colour" in row.check and "depth 2" in row.check
    got = {int(k): v for k, v in json.loads(row.per_seed).items()}
    assert got.keys() == per_seed.keys()
    assert all(got[s] == pytest.approx(per_seed[s], abs=1e-6) for s in per_seed)
    assert row.estimate == pytest.approx(np.mean(list(per_seed.values())))
    assert smoke.verdict.outcome == "inconclusive"  # two seeds never make a verdict


def test_smoke_table_has_every_layer_and_the_figures(smoke):
    t = smoke.table
    probed = t[(t.kind == "downstream") & (t.measure == "accuracy")]
    assert set(probed.layer) == {"stage1", "pool", "projector.fc1", "projector"}
    spec = t[(t.kind == "measure") & (t.measure == "effective_rank") & (t.projector_depth == 3)]
    assert {"projector.fc2", "projector"} <= set(spec.layer)
    figs = smoke.finding.figures(t)
    assert set(figs) == {"probe_per_layer", "spectrum_per_layer", "backbone_minus_head"}
    assert isinstance(figs["backbone_minus_head"].data[0].y[0], (float, np.floating))
    assert pd.notna(smoke.verdict.checks.estimate).all()

"""S7 — probe ranking ≠ fine-tune ranking: configurable fine-tuning with layer-wise learning-rate decay, the model
size as a number (``n_params``), and the finding at smoke size."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from workbench import data as wb_data
from workbench.models import build
from workbench.runs import RunConfig, RunStore
from workbench.study import Study
from workbench.train import train
from workbench.train.downstream import (FINETUNE_DEFAULTS, backbone_parameters, evaluate, finetune_settings,
                                        layer_decay_groups)

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------ layer-wise decay
def test_layer_decay_lrs_follow_the_formula_on_a_cnn():
    cnn = build("cnn", input_shape=(3, 16, 16), num_classes=5, width=4, depth=3)
    groups = layer_decay_groups(cnn, 2e-3, 0.5)
    # the backbone layers in forward order: stem, stage1..3 (pool has no parameters, head is excluded): L = 4
    names = ["stem", "stage1", "stage2", "stage3"]
    assert [g["name"] for g in groups] == [*names, "head"]
    for layer, name in enumerate(names, start=1):
        g = next(g for g in groups if g["name"] == name)
        assert g["layer"] == layer and g["lr"] == pytest.approx(2e-3 * 0.5 ** (4 - layer))
    assert groups[-1]["lr"] == pytest.approx(2e-3)  # the old head (unused by the representation) at lr
    # every trainable parameter exactly once, and each group holds its module's parameters
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in cnn.parameters()) and len(set(ids)) == len(ids)
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in cnn.stages[0].parameters()}


def test_parameters_outside_probe_points_are_layer_zero_and_decay_one_is_flat():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos = nn.Parameter(torch.zeros(3))  # in no probe point: the embedding end
            self.a, self.b, self.head = nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 2)
            self.probe_points = {"a": "a", "b": "b", "head": "head"}

    groups = layer_decay_groups(Net(), 1.0, 0.1)
    assert [(g["name"], g["layer"]) for g in groups] == [("other", 0), ("a", 1), ("b", 2), ("head", 2)]
    assert [g["lr"] for g in groups] == pytest.approx([0.01, 0.1, 1.0, 1.0])
    assert {g["lr"] for g in layer_decay_groups(Net(), 0.3, 1.0)} == {0.3}


def test_layer_decay_groups_refuse_bad_arguments_naming_them():
    mlp = build("mlp", input_shape=(4,), num_classes=2, hidden=(8,))
    for kwargs, name in [({"lr": 0.0}, "lr"), ({"lr": -1.0}, "lr"), ({"layer_decay": 0.0}, "layer_decay"),
                         ({"layer_decay": 1.5}, "layer_decay"), ({"layer_decay": "x"}, "layer_decay")]:
        with pytest.raises((ValueError, TypeError), match=name):
            layer_decay_groups(mlp, **{"lr": 1e-3, **kwargs})
    with pytest.raises(TypeError, match="model"):
        layer_decay_groups("mlp", 1e-3)
    with pytest.raises(TypeError, match="exclude"):
        layer_decay_groups(mlp, 1e-3, exclude="head")


# ------------------------------------------------------------------------------------------ settings
def test_finetune_settings_default_update_and_alias():
    assert finetune_settings() == FINETUNE_DEFAULTS
    got = finetune_settings({"optimizer": "sgd", "lr": 0.01, "layer_decay": 0.75})
    assert got == {**FINETUNE_DEFAULTS, "optimizer": "sgd", "lr": 0.01, "layer_decay": 0.75}
    assert finetune_settings(steps=7)["steps"] == 7  # the old finetune_steps=


@pytest.mark.parametrize(("finetune", "named"), [
    ({"learning_rate": 1e-3}, "learning_rate"), ({"lr": 0}, "lr"), ({"lr": float("nan")}, "lr"),
    ({"head_lr": -1}, "head_lr"), ({"optimizer": "rmsprop"}, "optimizer"), ({"steps": 1.5}, "steps"),
    ({"steps": 0}, "steps"), ({"batch_size": True}, "batch_size"), ({"layer_decay": 0}, "layer_decay"),
    ({"layer_decay": 2.0}, "layer_decay"), ({"weight_decay": -0.1}, "weight_decay"),
    ({"schedule": "step"}, "schedule"), ({"momentum": 1.0}, "momentum"), ("fast", "finetune"),
])
def test_finetune_settings_refuse_bad_keys_and_values_naming_them(finetune, named):
    with pytest.raises((ValueError, TypeError), match=named):
        finetune_settings(finetune)


def test_finetune_steps_alias_conflict_and_study_checks_settings_before_training(tmp_path):
    with pytest.raises(ValueError, match="once"):
        finetune_settings({"steps": 5}, steps=5)
    with pytest.raises(TypeError, match="finetune_steps"):
        finetune_settings(steps=2.5)
    base = RunConfig(dataset="gaussian-mixture", model="mlp", model_options={"hidden": [8]}, steps=2)
    with pytest.raises(ValueError, match="layer_decay"):
        Study(base, downstream=["finetune"], store=RunStore(tmp_path),
              evaluate_options={"finetune": {"layer_decay": 0}})
    with pytest.raises(ValueError, match="unknown key"):
        Study(base, downstream=["finetune"], store=RunStore(tmp_path), evaluate_options={"finetune": {"epochs": 3}})


# ------------------------------------------------------------------------------------------ fine-tuning
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cfg = RunConfig(dataset="gaussian-mixture", model="mlp", model_options={"hidden": [16, 16]}, steps=20,
                    checkpoints=1, seed=0)
    return train(cfg, RunStore(tmp_path_factory.mktemp("s7-tiny")), progress=False)


def _plain_finetune(model, ds, steps, seed, lrs=None, head_lr=1e-3):
    """An independent fine-tune: AdamW over the whole network at 1e-4 (or per-module ``lrs``: module -> lr) and a
    fresh linear head at ``head_lr``, as the method was written before its settings became configurable."""
    torch.manual_seed(seed)
    net = copy.deepcopy(model).train()
    x = torch.as_tensor(ds["train"].inputs, dtype=torch.float32)
    y = torch.as_tensor(ds["train"].labels, dtype=torch.long)
    with torch.no_grad():
        width = net.embed(x[:2]).shape[-1]
    head = nn.Linear(width, int(y.max()) + 1)
    backbone = ([{"params": net.parameters(), "lr": 1e-4}] if lrs is None else
                [{"params": getattr_path(net, m).parameters(), "lr": lr} for m, lr in lrs.items()])
    opt = torch.optim.AdamW([*backbone, {"params": head.parameters(), "lr": head_lr}])
    bs = min(128, len(y))
    for t in range(steps):
        rows = np.random.default_rng([seed, t]).choice(len(y), size=bs, replace=False)
        loss = nn.functional.cross_entropy(head(net.embed(x[rows])), y[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        xt = torch.as_tensor(ds["test"].inputs, dtype=torch.float32)
        return float((head(net.embed(xt)).argmax(1).numpy() == np.asarray(ds["test"].labels)).mean())


def getattr_path(module, path):
    return module.get_submodule(path)


def test_finetune_with_no_decay_equals_plain_finetuning_and_decay_follows_the_formula(tiny_run):
    ds = wb_data.load(tiny_run.config.dataset, **tiny_run.config.dataset_options)
    model = tiny_run.load_model()

    def acc(**kwargs):
        t = evaluate(tiny_run, methods=["finetune"], splits=["test"], cache=False, **kwargs)
        return float(t["value"].iloc[0])

    want = _plain_finetune(model, ds, steps=15, seed=0)
    assert acc(finetune={"steps": 15, "layer_decay": 1.0}) == want
    assert acc(finetune_steps=15) == want  # the old argument still works
    # decay 0.01 over the MLP's L = 2 layers: fc1 at lr * 0.01, fc2 and the (unused) old head at lr; head_lr 5e-3
    lr = 3e-3
    want = _plain_finetune(model, ds, steps=15, seed=0, lrs={"hidden.0": lr * 0.01, "hidden.1": lr, "head": lr},
                           head_lr=5e-3)
    assert acc(finetune={"steps": 15, "lr": lr, "head_lr": 5e-3, "layer_decay": 0.01}) == want


def test_finetune_optimizer_gets_the_layer_decay_learning_rates(tiny_run, monkeypatch):
    made = []

    class Spy(torch.optim.SGD):
        def __init__(self, params, **kwargs):
            super().__init__(params, **kwargs)
            made.append(self)

    monkeypatch.setattr(torch.optim, "SGD", Spy)
    evaluate(tiny_run, methods=["finetune"], splits=["test"], cache=False,
             finetune={"optimizer": "sgd", "steps": 2, "lr": 0.1, "head_lr": 0.3, "layer_decay": 0.5,
                       "momentum": 0.5, "weight_decay": 0.0})
    groups = {g["name"]: g for g in made[0].param_groups}
    assert {n: g["lr"] for n, g in groups.items()} == pytest.approx({"fc1": 0.05, "fc2": 0.1, "head": 0.1,
                                                                     "new head": 0.3})
    assert all(g["momentum"] == 0.5 and g["weight_decay"] == 0.0 for g in groups.values())
    assert [p.shape for p in groups["fc1"]["params"]] == [(16, tiny_run.load_model().hidden[0][0].in_features), (16,)]


def test_evaluate_refuses_bad_finetune_settings_naming_the_key(tiny_run):
    with pytest.raises(ValueError, match="lr"):
        evaluate(tiny_run, methods=["finetune"], finetune={"lr": -1.0}, cache=False)
    with pytest.raises(ValueError, match="unknown key"):
        evaluate(tiny_run, methods=["finetune"], finetune={"decay": 0.5}, cache=False)


# ------------------------------------------------------------------------------------------ model size
def test_backbone_parameters_match_hand_counts():
    # MLP 20 -> 8 -> 8 (-> head 3): (20 + 1) * 8 + (8 + 1) * 8
    assert backbone_parameters(build("mlp", input_shape=(20,), num_classes=3, hidden=(8, 8))) == 21 * 8 + 9 * 8
    # with LayerNorm: + 2 * 8 per hidden layer
    assert backbone_parameters(build("mlp", input_shape=(20,), num_classes=3, hidden=(8, 8), norm="layer")) == \
        21 * 8 + 9 * 8 + 2 * 2 * 8
    # CNN width 4, depth 2, BatchNorm (convolutions without bias): stem 3*4*9 + 2*4; stage1 (4 -> 4) two 3x3
    # convs + 2 BNs; stage2 (4 -> 8, stride 2) 4*8*9 + 2*8 + 8*8*9 + 2*8 + a 1x1 shortcut 4*8 + its BN 2*8
    stem = 3 * 4 * 9 + 2 * 4
    stage1 = 2 * (4 * 4 * 9 + 2 * 4)
    stage2 = 4 * 8 * 9 + 2 * 8 + 8 * 8 * 9 + 2 * 8 + 4 * 8 + 2 * 8
    cnn = build("cnn", input_shape=(3, 16, 16), num_classes=5, width=4, depth=2)
    assert backbone_parameters(cnn) == stem + stage1 + stage2 == 1364
    assert backbone_parameters(cnn, exclude=()) == 1364 + 8 * 5 + 5  # with the head


def test_backbone_parameters_count_a_tied_tensor_once_and_skip_frozen_ones():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = nn.Linear(4, 4), nn.Linear(4, 4)
            self.head.weight = self.body.weight  # tied: the head's weight is the body's
            self.probe_points = {"body": "body", "head": "head"}

    assert backbone_parameters(Tied()) == 16 + 4
    mlp = build("mlp", input_shape=(20,), num_classes=3, hidden=(8, 8))
    mlp.hidden[0][0].weight.requires_grad_(False)
    assert backbone_parameters(mlp) == 8 + 9 * 8
    with pytest.raises(TypeError, match="model"):
        backbone_parameters(np.zeros(3))


def test_study_table_carries_n_params_on_every_row_of_a_run(tmp_path):
    base = RunConfig(dataset="gaussian-mixture", model="mlp", model_options={"hidden": [8]}, steps=3, checkpoints=1)
    study = Study(base, {"model_options.hidden": [[4], [8, 8]]}, downstream=["linear"], measures=["rankme"],
                  store=RunStore(tmp_path), name="size")
    table = study.run(progress=False)
    d = wb_data.load("gaussian-mixture")["train"].inputs.shape[1]
    hand = {"[4]": (d + 1) * 4, "[8, 8]": (d + 1) * 8 + 9 * 8}
    per_run = table.groupby("model_options.hidden")["n_params"]
    assert per_run.nunique().eq(1).all() and table["n_params"].notna().all()
    assert per_run.first().to_dict() == hand
    assert isinstance(table, pd.DataFrame)


# ------------------------------------------------------------------------------------------ the finding (smoke)
@pytest.fixture(scope="module")
def smoke(smoke_store):
    from workbench.findings.probe_vs_finetune import FINDING

    return FINDING.run("smoke", store=smoke_store, progress=False, record=False)


def _mean_accuracy(table: pd.DataFrame, method: str) -> pd.DataFrame:
    """Per (model size, seed): the held-out-shapes test accuracy of ``method`` averaged over the label fractions,
    straight from the downstream rows."""
    d = table[(table["kind"] == "downstream") & (table["method"] == method) & (table["measure"] == "accuracy")
              & (table["split"] == "test")]
    return d.groupby(["model_options", "seed"])["value"].mean().unstack("model_options")


def test_smoke_checks_recomputed_by_hand(smoke):
    from scipy.stats import spearmanr

    from workbench.findings.probe_vs_finetune import SIZES

    table, checks = smoke.table, smoke.verdict.checks.set_index("check")
    small, large = (json_key(s) for s in (SIZES[0], SIZES[-1]))
    frozen, tuned = _mean_accuracy(table, "linear"), _mean_accuracy(table, "finetune")
    row = checks.loc["frozen: the smallest model transfers better than the largest"]
    assert row["estimate"] == pytest.approx((frozen[small] - frozen[large]).mean())
    row = checks.loc["fine-tuned: the largest model transfers better than the smallest"]
    assert row["estimate"] == pytest.approx((tuned[large] - tuned[small]).mean())
    order = [json_key(s) for s in SIZES]
    rho = [spearmanr(frozen.loc[s, order], tuned.loc[s, order])[0] - 1 for s in frozen.index]
    row = checks.loc["frozen and fine-tuned rankings of the model sizes differ (Spearman ρ − 1 < 0)"]
    assert row["estimate"] == pytest.approx(np.nanmean(rho))
    assert set(checks["n_seeds"]) == {2} and set(checks["outcome"]) == {"inconclusive"}  # smoke: 2 seeds


def json_key(size):
    import json

    return json.dumps(size, sort_keys=True)


def test_smoke_table_has_model_size_and_figures(smoke):
    from workbench.findings.probe_vs_finetune import FINDING, SIZES, rank_table

    table = smoke.table
    runs = table[table["kind"] != "ranks"].groupby("model_options")["n_params"].agg(["min", "max"])
    for size in SIZES:
        want = backbone_parameters(build("cnn", input_shape=(3, 20, 20), num_classes=5, **size))
        assert runs.loc[json_key(size)].tolist() == [want, want]
    ranks = rank_table(table)
    assert set(ranks["label_fraction"]) == {"0.1", "1", "mean"}
    assert ranks.groupby(["seed", "label_fraction", "method"])["rank"].apply(sorted).map(
        lambda r: r == [1.0, 2.0, 3.0, 4.0] or len(set(r)) < 4).all()  # ranks 1..4 (or ties)
    figs = FINDING.figures(table)
    assert {"accuracy_vs_size", "rank_crossings", "rank_correlation"} <= set(figs)
    bump = figs["rank_crossings"]
    assert bump.layout.yaxis.autorange == "reversed"  # rank 1 on top

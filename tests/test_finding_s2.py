"""S2 (ssl_length_dense): unpooled token maps, the dense probe on a ViT, DSE per checkpoint in a Study for a CNN
and a ViT, select_checkpoint, and the finding at smoke size."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from workbench import data as wb_data
from workbench.activations import extract
from workbench.models import build, get_module
from workbench.runs import RunStore
from workbench.study import SELECTION_MEASURES, Study, select_checkpoint
from workbench.train import train

pytestmark = pytest.mark.usefixtures("one_thread")


def _hooked(model, x, path):
    """The raw output of module ``path`` on ``x`` (written independently of extract)."""
    got = []
    h = get_module(model, path).register_forward_hook(lambda _m, _i, o: got.append(o.detach()))
    with torch.no_grad():
        model.eval()
        model(torch.as_tensor(x))
    h.remove()
    return got[0]


# ------------------------------------------------------------------------------------------ unpooled extraction
def test_tokens_of_a_cnn_are_positions_by_channels():
    torch.manual_seed(0)
    model = build("cnn", input_shape=(3, 12, 8), num_classes=3, width=4, depth=2)
    x = np.random.default_rng(0).normal(size=(5, 3, 12, 8)).astype(np.float32)
    acts = extract(model, x, layers=["stage1", "stage2", "pool"], pool="tokens", batch_size=2)
    raw = _hooked(model, x, "stages.1")  # [N, C, h, w]
    _, c, h, w = raw.shape
    ref = torch.stack([raw[:, :, i, j] for i in range(h) for j in range(w)], dim=1)  # row-major positions
    torch.testing.assert_close(acts["stage2"], ref)
    assert acts.meta["grids"]["stage2"] == (h, w) and acts.meta["grids"]["pool"] is None
    assert acts["pool"].shape == (5, c)  # one vector per example stays [N, D]
    # patch-tokens of a conv map are the same tokens (no CLS to drop); the mean of the tokens is pool="mean"
    patches = extract(model, x, layers=["stage2"], pool="patch-tokens")
    torch.testing.assert_close(patches["stage2"], acts["stage2"])
    torch.testing.assert_close(acts["stage2"].mean(1), extract(model, x, layers=["stage2"])["stage2"])


def test_patch_tokens_of_a_vit_drop_cls_and_know_their_grid(tmp_path):
    torch.manual_seed(0)
    model = build("vit", input_shape=(3, 8, 16), num_classes=3, patch=4, dim=8, depth=2, heads=2)
    x = np.random.default_rng(1).normal(size=(4, 3, 8, 16)).astype(np.float32)
    raw = _hooked(model, x, "blocks.0")  # [N, 1 + 2*4, D]
    acts = extract(model, x, layers=["block1", "head"], pool="patch-tokens", cache=tmp_path)
    torch.testing.assert_close(acts["block1"], raw[:, 1:])
    assert acts.meta["grids"] == {"block1": (2, 4), "head": None}  # an 8 x 16 image in 4 x 4 patches
    every = extract(model, x, layers=["block1"], pool="tokens")
    torch.testing.assert_close(every["block1"], raw)
    assert every.meta["grids"]["block1"] is None  # a sequence with its CLS token has no grid
    again = extract(model, x, layers=["block1", "head"], pool="patch-tokens", cache=tmp_path)  # from the cache
    assert again.meta["cached"] and again.meta["grids"] == acts.meta["grids"]
    torch.testing.assert_close(again["block1"], acts["block1"])


def test_unknown_pool_names_the_choices():
    with pytest.raises(ValueError, match="patch-tokens"):
        extract(torch.nn.Linear(2, 2), np.zeros((3, 2), np.float32), pool="patches")


# ------------------------------------------------------------------------------------------ dense probe on a ViT
@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    cfg = {"dataset": "shapes", "dataset_options": {"n_train": 48, "n_test": 32, "n_ood": 0, "size": 16},
           "model": "vit", "model_options": {"dim": 8, "depth": 2, "heads": 2, "patch": 4}, "steps": 4,
           "checkpoints": 1, "batch_size": 16, "lr": 1e-2}
    return train(cfg, tmp_path_factory.mktemp("vit"), progress=False)


def test_dense_probe_runs_on_vit_patch_tokens(vit_run):
    from workbench.train.downstream import _dense_default, _pixel_features, evaluate

    model = vit_run.load_model()
    assert _dense_default(model) == "block2"  # the middle block of two (the CNN's rule: index len // 2)
    ds = wb_data.load("shapes", n_train=48, n_test=32, n_ood=0, size=16)
    split = ds["test"]
    got = _pixel_features(model, split, "block1", torch.device("cpu"))
    raw = _hooked(model, split.inputs, "blocks.0")[:, 1:]  # [N, 16, D] on a 4 x 4 patch grid
    fmap = raw.reshape(len(split), 4, 4, -1).permute(0, 3, 1, 2)
    up = F.interpolate(fmap, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(got, up.permute(0, 2, 3, 1).reshape(-1, raw.shape[-1]))
    table = evaluate(vit_run, methods=["dense"], dense_layer="block1", dense_pixels=2000, cache=False)
    scores = table.set_index("measure")["value"]
    assert set(scores.index) == {"pixel_accuracy", "miou"} and ((scores >= 0) & (scores <= 1)).all()
    with pytest.raises(ValueError, match="dense_layer"):
        evaluate(vit_run, methods=["dense"], dense_layer="head", cache=False)


def test_dse_per_checkpoint_in_a_study_for_cnn_and_vit(tmp_path):
    from workbench.spectrum import dse

    base = {"dataset": "shapes", "dataset_options": {"n_train": 32, "n_test": 24, "n_ood": 0, "size": 16},
            "steps": 3, "checkpoints": 1, "batch_size": 16, "lr": 1e-2}
    for model, options, layer in (("cnn", {"width": 4, "depth": 2}, "stage2"),
                                  ("vit", {"dim": 8, "depth": 2, "heads": 2, "patch": 4}, "block1")):
        study = Study({**base, "model": model, "model_options": options}, {}, store=RunStore(tmp_path / model),
                      downstream=[], measures=["dse"], layers=[layer], steps="all", measure_examples=16,
                      measure_options={"dse": {"normalize": False}})  # a tiny ReLU CNN has all-zero tokens
        table = study.run(progress=False)
        rows = table[(table.kind == "measure") & (table.measure == "dse")]
        run = study.store.get(study.configs["seed=0"][1])
        assert sorted(rows["step"]) == run.checkpoints() and set(rows["layer"]) == {layer}
        # the value at the last step is dse() of that checkpoint's tokens, extracted independently
        m = run.load_model(run.checkpoints()[-1])
        x = wb_data.load("shapes", n_train=32, n_test=24, n_ood=0, size=16)["test"].inputs[:16]
        path = {"stage2": "stages.1", "block1": "blocks.0"}[layer]
        raw = _hooked(m, x, path)
        tokens = raw.flatten(2).transpose(1, 2) if raw.dim() == 4 else raw[:, 1:]
        want = dse(tokens.numpy(), normalize=False).dse
        assert rows.loc[rows.step == rows.step.max(), "value"].item() == pytest.approx(want, rel=1e-5, abs=1e-6)


# ------------------------------------------------------------------------------------------ select_checkpoint
def _table():
    # run a: DSE peaks at 100, the dense score at 300, last step 1000; run b: DSE and score both best at the end
    rows = []
    for run, seed, est, score in (("a", 0, [0.1, 0.5, 0.4, 0.2], [0.3, 0.5, 0.6, 0.4]),
                                  ("b", 1, [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4])):
        for step, e, s in zip((10, 100, 300, 1000), est, score):
            rows.append({"run": run, "seed": seed, "step": step, "kind": "measure", "measure": "dse", "value": e})
            rows.append({"run": run, "seed": seed, "step": step, "kind": "downstream", "method": "dense",
                         "measure": "miou", "split": "test", "value": s})
    return pd.DataFrame(rows)


def _wide(sel):
    return sel.pivot(index="run", columns="measure", values="value")


def test_select_checkpoint_on_a_hand_made_table():
    sel = select_checkpoint(_table(), by={"measure": "dse"}, score={"method": "dense", "measure": "miou"})
    assert set(sel["measure"]) == set(SELECTION_MEASURES) and (sel["kind"] == "selection").all()
    w = _wide(sel)
    assert w.loc["a", ["picked_step", "oracle_step", "last_step"]].tolist() == [100, 300, 1000]
    assert w.loc["a", "picked_minus_last"] == pytest.approx(0.5 - 0.4)
    assert w.loc["a", "oracle_minus_picked"] == pytest.approx(0.6 - 0.5)
    assert w.loc["b", ["picked_step", "oracle_step", "last_step"]].tolist() == [1000, 1000, 1000]
    assert w.loc["b", "picked_minus_last"] == 0 and w.loc["b", "oracle_minus_picked"] == 0
    a = sel[sel.run == "a"].set_index("measure")
    assert a.loc["score_picked", "step"] == 100 and a.loc["picked_minus_last", "step"] == 1000
    assert (a["seed"] == 0).all() and (a["split"] == "test").all()  # constant columns of the run are kept
    # argmin picks the smallest estimate; best="min" treats the score as a loss (gaps stay "positive = better")
    w = _wide(select_checkpoint(_table(), by={"measure": "dse"}, score={"measure": "miou"}, pick="min", best="min"))
    assert w.loc["a", ["picked_step", "oracle_step"]].tolist() == [10, 10]
    assert w.loc["a", "picked_minus_last"] == pytest.approx(-(0.3 - 0.4))


def test_select_checkpoint_uses_common_steps_and_breaks_ties_early():
    t = _table()
    t = t[~((t.run == "a") & (t.step == 1000) & (t.measure == "dse"))]  # no estimate at a's last step
    t.loc[(t.run == "b") & (t.measure == "dse"), "value"] = 0.7  # a tie everywhere: the earliest step
    w = _wide(select_checkpoint(t, by={"measure": "dse"}, score={"measure": "miou"}))
    assert w.loc["a", "last_step"] == 300 and w.loc["a", "picked_minus_last"] == pytest.approx(0.5 - 0.6)
    assert w.loc["b", "picked_step"] == 10


@pytest.mark.parametrize("kwargs, err, match", [
    ({"table": "t"}, TypeError, "table"),
    ({"by": {}}, TypeError, "by"),
    ({"by": {"nope": 1}}, ValueError, "nope"),
    ({"by": {"measure": "cka"}}, ValueError, "selects no rows"),
    ({"score": {"kind": "downstream"}}, ValueError, "one row per run and step"),
    ({"pick": "largest"}, ValueError, "pick"),
    ({"best": 1}, ValueError, "best"),
])
def test_select_checkpoint_rejects_bad_input(kwargs, err, match):
    args = {"table": _table(), "by": {"measure": "dse"}, "score": {"measure": "miou"}, **kwargs}
    t = args.pop("table")
    if kwargs.get("score") == {"kind": "downstream"}:
        t = pd.concat([t, t[t.kind == "downstream"].assign(split="ood")])
    with pytest.raises(err, match=match):
        select_checkpoint(t, **args)


# ------------------------------------------------------------------------------------------ the finding (smoke)
@pytest.fixture(scope="module")
def smoke(smoke_store):
    from workbench.findings import get

    return get("S2").run("smoke", store=smoke_store, progress=False, record=False)


def test_smoke_finding_checks_recomputed_from_the_table(smoke):
    table, verdict = smoke.table, smoke.verdict
    assert verdict.outcome == "inconclusive" and list(verdict.checks["n_seeds"]) == [2, 2, 2]  # 2 seeds: never more
    dense = table[(table.kind == "downstream") & (table.method == "dense") & (table.measure == "miou")
                  & (table.split == "test")]
    measured = table[(table.kind == "measure") & (table.measure == "dse") & (table.layer == "block2")]
    image = table[(table.kind == "downstream") & (table.method == "linear") & (table.measure == "accuracy")
                  & (table.task == "label") & (table.split == "test")]
    per_seed = {0: [], 1: [], 2: []}
    for seed in (0, 1):
        own = dense[(dense.seed == seed) & (dense.task == "label")].set_index("step")["value"]
        held = dense[(dense.seed == seed) & (dense.task == "held-out")].set_index("step")["value"]
        est = measured[measured.seed == seed].set_index("step")["value"]
        acc = image[image.seed == seed].set_index("step")["value"]
        steps = sorted(own.index)
        assert steps == sorted(est.index) == sorted(held.index) == sorted(acc.index) and len(steps) == 4
        last = steps[-1]
        early = min(steps, key=lambda s: abs(s - 0.1 * last))  # nearest 10 % of training (ties: the earlier)
        per_seed[0].append(acc[last] - acc[early])
        per_seed[1].append(held[own.idxmax()] - held[last])  # peak picked on own test, scored held-out
        per_seed[2].append(own[est.idxmax()] - own[last])  # DSE's pick, scored on own test
    for i, row in verdict.checks.iterrows():
        assert row["estimate"] == pytest.approx(np.mean(per_seed[i]), abs=1e-9), row["check"]
    assert set(smoke.finding.figures(table)) == {"scores_over_training", "dse_tracks_dense", "checkpoint_selection"}

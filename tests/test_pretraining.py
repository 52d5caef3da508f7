"""Pretraining lab: objectives through the trainer, resume, label noise, data fraction, schedules, init scale,
recorders, downstream evaluation and studies.

Every check compares with an independent computation written here (closed-form schedule, explicit
per-class counts, autograd on the checkpoint weights, numpy eigenvalues, sklearn probes, scipy Spearman),
never with the code's own output. All runs are tiny (a few steps of a 4-channel CNN / 16-unit MLP).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from workbench import data as wb_data
from workbench.models import probe_points
from workbench.results import COLUMNS
from workbench.runs import RunConfig, RunStore, checkpoint_schedule
from workbench.train import build_model, lr_factor, pairflip_label_noise, symmetric_label_noise, train, train_subset

SHAPES = dict(dataset="shapes", dataset_options={"n_train": 64, "n_test": 32, "n_ood": 32, "size": 16},
              model="cnn", model_options={"width": 4, "depth": 2}, steps=3, batch_size=16, checkpoints=1, lr=1e-3)
GMM = dict(dataset="gaussian-mixture", dataset_options={"n_train": 96, "n_test": 48, "n_ood": 48, "dim": 8},
           model="mlp", model_options={"hidden": [16]}, steps=3, batch_size=16, checkpoints=1, lr=1e-3)
MNIST1D = dict(dataset="mnist1d", dataset_options={"n_train": 48, "n_test": 16}, model="cnn",
               model_options={"width": 4, "depth": 2}, steps=2, batch_size=16, checkpoints=1, lr=1e-3)
# ood sentences are padded to 2 x max_len: the trainer sizes the Transformer for the longest split
LANG = dict(dataset="tiny-language",
            dataset_options={"n_train": 48, "n_test": 16, "n_ood": 16, "max_len": 12, "max_depth": 1},
            model="transformer", model_options={"dim": 16, "depth": 1, "heads": 2}, steps=3, batch_size=16,
            checkpoints=1, lr=1e-3)


pytestmark = pytest.mark.usefixtures("one_thread")


def _load(run, step, what="model"):
    return load_file(run.checkpoint_dir(step) / f"{what}.safetensors")


def _same_tensors(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------ 1 resume
def test_contrastive_resume_is_bitwise_identical(tmp_path):
    cfg = {**SHAPES, "objective": "simclr", "augment": ("flip", "noise"), "projector": "mlp", "embed_dim": 8,
           "steps": 6, "checkpoints": 3, "recorders": ("align_unif", "grad_norm")}
    store_a = RunStore(tmp_path / "a")
    part = train(cfg, store_a, progress=False, stop_after=3)
    assert part.status["state"] == "interrupted" and not part.done
    assert part.checkpoints() == [0, 1, 2]  # stopped after step 3; the last checkpoint is step 2
    resumed = train(cfg, store_a, progress=False)
    full = train(cfg, tmp_path / "b", progress=False)
    assert resumed.done and full.done
    assert resumed.checkpoints() == full.checkpoints() == checkpoint_schedule(6, 3)
    for step in full.checkpoints():
        assert _same_tensors(_load(resumed, step), _load(full, step)), f"model differs at step {step}"
        obj_full = _load(full, step, "objective")
        assert any(k.startswith("projector.") for k in obj_full)  # the projector's weights are checkpointed
        assert _same_tensors(_load(resumed, step, "objective"), obj_full), f"projector differs at step {step}"
    h_res, h_full = resumed.history(), full.history()
    assert len(h_res) == len(h_full)
    cols = ["step", "measure", "split", "layer", "layer_index"]
    pd.testing.assert_frame_equal(h_res[cols], h_full[cols])
    np.testing.assert_array_equal(h_res["value"].to_numpy(), h_full["value"].to_numpy())
    assert {"alignment", "uniformity", "grad_norm", "loss"} <= set(h_full["measure"])
    al = h_full[h_full.measure == "alignment"]["value"]
    un = h_full[h_full.measure == "uniformity"]["value"]
    assert (al >= 0).all() and (al <= 4).all() and (un <= 0).all()  # ||z1-z2||^2 of unit vectors; log E exp(-2d^2)


# ------------------------------------------------------------------------------------------ 2 objectives
OBJECTIVE_CASES = [
    ("supervised", SHAPES, {}),
    ("simclr", GMM, {"augment": ("noise", "mask"), "projector": "linear", "embed_dim": 8}),
    ("supcon", GMM, {"augment": ("noise",)}),
    ("barlow", GMM, {"augment": ("noise", "mask"), "projector": "mlp", "embed_dim": 8}),
    ("vicreg", GMM, {"augment": ("noise",), "embed_dim": 8, "projector": "linear", "views": 3}),
    ("mae", MNIST1D, {"mask_ratio": 0.5}),
    ("mae", SHAPES, {"mask_ratio": 0.75}),
    ("autoencoder", GMM, {"augment": ("noise",)}),
    ("distill", GMM, {"embed_dim": 8}),
    ("mlm", LANG, {"mask_ratio": 0.15}),
    ("clm", LANG, {}),
    ("supervised", LANG, {}),
]


@pytest.mark.parametrize("objective, base, extra", OBJECTIVE_CASES,
                         ids=[f"{o}-{b['dataset']}" for o, b, _ in OBJECTIVE_CASES])
def test_every_objective_trains_and_logs_a_finite_loss(tmp_path, objective, base, extra):
    cfg = RunConfig.from_dict({**base, "objective": objective, **extra})
    run = train(cfg, tmp_path, progress=False)
    assert run.done and run.status["error"] is None
    assert run.checkpoints() == checkpoint_schedule(cfg.steps, cfg.checkpoints)
    hist = run.history()
    loss = hist[(hist.measure == "loss") & (hist.split == "train_batch")]
    assert sorted(loss["step"]) == list(range(1, cfg.steps + 1))  # steps // 100 == 0 -> every step logged
    assert np.isfinite(loss["value"].to_numpy(float)).all()
    if objective in ("simclr", "supcon", "mae", "autoencoder", "barlow", "distill"):
        assert (loss["value"] >= 0).all()  # cross-entropies, squared errors, KL: never negative
    if objective in ("mlm", "clm"):
        # per-token cross-entropy of an untrained LM: about log(vocab)
        vocab = len(wb_data.load(cfg.dataset, **cfg.dataset_options).vocab)
        assert abs(loss[loss.step == 1]["value"].iloc[0] - math.log(vocab)) < 1.0
    # the checkpoint reloads and gives finite outputs on the test split
    model = run.load_model()
    ds = wb_data.load(cfg.dataset, **cfg.dataset_options)
    x = torch.as_tensor(ds["test"].inputs[:4])
    with torch.no_grad():
        mask = torch.as_tensor(ds["test"].attention_mask[:4]) if ds.kind == "tokens" else None
        out = model(x) if mask is None else model(x, attention_mask=mask)
    assert torch.isfinite(out).all()
    if objective in ("simclr", "barlow", "vicreg", "distill", "mae", "autoencoder"):
        assert (run.checkpoint_dir(cfg.steps) / "objective.safetensors").exists()  # head / decoder saved


def test_objective_none_is_a_zero_step_baseline(tmp_path):
    cfg = RunConfig.from_dict({**SHAPES, "objective": "none", "steps": 50})
    assert cfg.steps == 0
    run = train(cfg, tmp_path, progress=False)
    assert run.done and run.checkpoints() == [0]
    assert "loss" not in set(run.history()["measure"])
    # the step-0 weights are the seeded initialisation
    ds = wb_data.load(cfg.dataset, **cfg.dataset_options)
    ref = build_model(cfg, ds).state_dict()
    saved = _load(run, 0)
    assert all(torch.equal(saved[k], ref[k]) for k in saved)


# ---------------------------------------------------------------------------------- 3, 4 label noise, data fraction
def test_pairflip_noise_and_data_fraction_in_a_run(tmp_path):
    frac, rate = 0.3, 0.25
    cfg = {**GMM, "dataset_options": {**GMM["dataset_options"], "n_train": 150}, "data_fraction": frac,
           "label_noise": rate, "noise_type": "pairflip", "steps": 2}
    run = train(cfg, tmp_path, progress=False)
    ds = wb_data.load("gaussian-mixture", **cfg["dataset_options"])
    true_all, k = ds["train"].labels, ds.num_classes
    art = run.load_artifact("label_noise")
    index, noisy, flipped = art["index"], art["noisy_labels"], art["flipped"]
    # data fraction: max(1, round(f n_c)) rows of every class, distinct, sorted
    counts = np.bincount(true_all, minlength=k)
    assert all(abs(frac * c % 1 - 0.5) > 1e-9 for c in counts)  # no rounding ties in this setup
    expected = [max(1, round(frac * c)) for c in counts]
    assert np.array_equal(np.bincount(true_all[index], minlength=k), expected)
    assert np.array_equal(index, np.unique(index))
    assert np.array_equal(index, train_subset(RunConfig.from_dict(cfg), true_all, len(true_all)))
    # pair flip: exactly round(rate * n) flips, each c -> (c + 1) mod K, the others untouched
    true = true_all[index]
    assert len(noisy) == len(flipped) == len(index)
    assert flipped.sum() == round(rate * len(index))
    assert np.array_equal(noisy[flipped], (true[flipped] + 1) % k)
    assert np.array_equal(noisy[~flipped], true[~flipped])
    # clean / flipped accuracies of the final model, recomputed from its predictions
    model = run.load_model()
    with torch.no_grad():
        pred = model(torch.as_tensor(ds["train"].inputs[index])).argmax(1).numpy()
    hist = run.history()
    last = hist[hist.step == cfg["steps"]].set_index(["measure", "split"])["value"]
    assert last[("accuracy", "train_clean")] == pytest.approx(np.mean(pred[~flipped] == noisy[~flipped]), abs=1e-12)
    assert last[("memorized", "train_flipped")] == pytest.approx(np.mean(pred[flipped] == noisy[flipped]), abs=1e-12)
    assert last[("accuracy", "train_flipped_true")] == pytest.approx(np.mean(pred[flipped] == true[flipped]),
                                                                     abs=1e-12)


@pytest.mark.parametrize("k", [2, 3, 7])
def test_symmetric_noise_never_keeps_the_class_and_pairflip_is_a_shift(k):
    y = np.arange(700) % k
    noisy, flipped = symmetric_label_noise(y, 0.4, k, seed=1)
    assert flipped.sum() == round(0.4 * 700)
    assert np.all(noisy[flipped] != y[flipped]) and np.array_equal(noisy[~flipped], y[~flipped])
    assert noisy.min() >= 0 and noisy.max() < k
    if k == 2:
        assert np.array_equal(noisy[flipped], 1 - y[flipped])
    pf, pflip = pairflip_label_noise(y, 1.0, k, seed=1)
    assert pflip.all() and np.array_equal(pf, (y + 1) % k)
    pf, pflip = pairflip_label_noise(y, 0.1, k, seed=1)
    assert pflip.sum() == 70 and np.array_equal(pf[pflip], (y[pflip] + 1) % k)


def test_train_subset_unlabelled_and_full():
    cfg = RunConfig(data_fraction=0.37)
    idx = train_subset(cfg, None, 101)
    assert len(idx) == round(0.37 * 101) and np.array_equal(idx, np.unique(idx)) and idx.max() < 101
    assert np.array_equal(train_subset(RunConfig(), np.zeros(5, int), 5), np.arange(5))
    tiny = train_subset(RunConfig(data_fraction=0.01), np.array([0] * 50 + [1] * 3), 53)
    assert np.bincount(np.array([0] * 50 + [1] * 3)[tiny]).tolist() == [1, 1]  # at least one per class


# ------------------------------------------------------------------------------------------ 5 lr schedule
def test_lr_factor_matches_closed_form_and_is_applied(tmp_path):
    cfg = RunConfig(steps=100, warmup=10, schedule="cosine")
    for t in (1, 5, 10):
        assert lr_factor(cfg, t) == pytest.approx(t / 10, abs=1e-15)
    for t in (11, 40, 55, 99, 100):
        assert lr_factor(cfg, t) == pytest.approx(0.5 * (1 + math.cos(math.pi * (t - 10) / 90)), abs=1e-15)
    assert lr_factor(cfg, 55) == pytest.approx(0.5, abs=1e-15) and lr_factor(cfg, 100) == pytest.approx(0, abs=1e-15)
    const = RunConfig(steps=100, warmup=4, schedule="constant")
    assert [lr_factor(const, t) for t in (1, 2, 4, 5, 100)] == pytest.approx([0.25, 0.5, 1, 1, 1])
    nowarm = RunConfig(steps=20, schedule="warmup-cosine")
    assert lr_factor(nowarm, 1) == pytest.approx(0.5 * (1 + math.cos(math.pi / 20)))
    # the trainer sets the optimizer's lr to lr * factor(step): read it back from the checkpoints
    run = train({**GMM, "steps": 8, "checkpoints": 3, "warmup": 3, "schedule": "cosine", "lr": 0.02}, tmp_path,
                progress=False)
    assert run.checkpoints() == [0, 1, 3, 8]
    for step, factor in [(1, 1 / 3), (3, 1.0), (8, 0.0)]:
        state = torch.load(run.checkpoint_dir(step) / "trainer.pt", weights_only=True)
        assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.02 * factor, abs=1e-15)


# ------------------------------------------------------------------------------------------ 6 init scale
@pytest.mark.parametrize("base", [SHAPES, LANG], ids=["cnn", "transformer"])
def test_init_scale_multiplies_weight_matrices_only(tmp_path, base):
    cfg = RunConfig.from_dict({**base, "objective": "none"})
    ds = wb_data.load(cfg.dataset, **cfg.dataset_options)
    ref = build_model(cfg, ds)
    run = train(cfg.replace(init_scale=2.5), tmp_path, progress=False)
    scaled = _load(run, 0)
    params = dict(ref.named_parameters())
    n_scaled = 0
    for name, value in ref.state_dict().items():
        if name in params and value.dim() >= 2:
            assert torch.equal(scaled[name], value * 2.5), name
            n_scaled += 1
        else:  # biases, norm gains, buffers
            assert torch.equal(scaled[name], value), name
    assert n_scaled >= 3


# ------------------------------------------------------------------------------------------ 7 recorders
@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    cfg = RunConfig.from_dict({**SHAPES, "steps": 1, "batch_size": 16, "label_noise": 0.3,
                               "recorders": ("grad_norm", "act_var", "eigs", "clean_flipped", "el2n"), "lr": 1e-2})
    run = train(cfg, tmp_path_factory.mktemp("rec"), progress=False)
    return cfg, run, wb_data.load(cfg.dataset, **cfg.dataset_options)


def test_grad_norm_and_act_var_match_autograd_on_the_step0_weights(recorded_run):
    from workbench.models import get_module, probe_points

    cfg, run, ds = recorded_run
    assert run.checkpoints() == [0, 1]
    noisy = run.load_artifact("label_noise")["noisy_labels"]
    n = len(ds["train"])
    batch = np.random.default_rng([cfg.seed, 0]).permutation(n)[:cfg.batch_size]  # step 1 = epoch 0, slice 0
    model = run.load_model(0)
    model.train()
    outs = {}
    handles = [get_module(model, path).register_forward_hook(lambda _m, _i, o, name=name: outs.__setitem__(name, o))
               for name, path in probe_points(model).items()]
    torch.manual_seed(cfg.seed * 1_000_003 + 1)
    logits = model(torch.as_tensor(ds["train"].inputs[batch]))
    F.cross_entropy(logits, torch.as_tensor(noisy[batch])).backward()  # trained on the *noisy* labels
    for h in handles:
        h.remove()
    hist = run.history()
    rec = hist[(hist.measure == "grad_norm") & (hist.step == 1)].set_index("layer")["value"]
    expected = {}
    for name, path in probe_points(model).items():
        grads = [p.grad.double() for p in get_module(model, path).parameters()]
        if grads:
            expected[name] = math.sqrt(sum(float((g ** 2).sum()) for g in grads))
    assert set(rec.index) == set(expected) and {"stem", "stage1", "stage2", "head"} <= set(expected)
    for name, value in expected.items():
        assert rec[name] == pytest.approx(value, rel=1e-5), name
    act = hist[(hist.measure == "act_var") & (hist.step == 1)].set_index("layer")["value"]
    assert set(act.index) == set(probe_points(model))
    for name, out in outs.items():
        ref = np.var(out.detach().double().numpy(), ddof=1)
        assert act[name] == pytest.approx(ref, rel=1e-4), name


def test_el2n_eigs_and_clean_flipped_rows(recorded_run):
    _, run, ds = recorded_run
    art = run.load_artifact("label_noise")
    noisy, flipped = art["noisy_labels"], art["flipped"]
    hist = run.history()
    for step in (0, 1):
        model = run.load_model(step)
        with torch.no_grad():
            logits = model(torch.as_tensor(ds["train"].inputs)).double().numpy()
            z = model.embed(torch.as_tensor(ds["test"].inputs[:512])).double().numpy()
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        ref = np.linalg.norm(p - np.eye(ds.num_classes)[noisy], axis=1)
        scores = run.load_artifact(f"el2n_{step:08d}")["scores"]
        np.testing.assert_allclose(scores, ref, rtol=1e-5, atol=1e-7)
        rows = hist[(hist.step == step) & (hist.measure == "el2n_mean")].set_index("split")["value"]
        assert rows["train"] == pytest.approx(ref.mean(), rel=1e-5)
        assert rows["train_flipped"] == pytest.approx(ref[flipped].mean(), rel=1e-5)
        assert rows["train_clean"] == pytest.approx(ref[~flipped].mean(), rel=1e-5)
        # eigs: top eigenvalues of the (unbiased) covariance of the representation on the probe set
        lam = np.sort(np.linalg.eigvalsh(np.cov(z, rowvar=False)))[::-1]
        eig_rows = hist[(hist.step == step) & hist.measure.str.match(r"eig_\d+$")]
        got = eig_rows.assign(k=eig_rows.measure.str[4:].astype(int)).sort_values("k")["value"].to_numpy()
        assert len(got) == min(16, z.shape[1])
        np.testing.assert_allclose(got, np.clip(lam[:len(got)], 0, None), rtol=1e-4, atol=1e-7 * lam[0])
        assert set(eig_rows["layer"]) == {"embed"} and set(eig_rows["split"]) == {"probe"}
        assert {"effective_rank", "rankme"} <= set(hist[hist.step == step]["measure"])
        assert {"train_clean", "train_flipped", "train_flipped_true"} <= set(hist[hist.step == step]["split"])


# ------------------------------------------------------------------------------------------ 8 evaluate
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    cfg = {**SHAPES, "steps": 12, "checkpoints": 2, "lr": 1e-2,
           "dataset_options": {"n_train": 48, "n_test": 32, "n_ood": 24, "size": 16}}
    return train(cfg, tmp_path_factory.mktemp("eval"), progress=False)


def _pixel_features_reference(model, split, layer_path):
    """[N*H*W, C]: the stage's feature map, bilinearly upsampled to the image (written independently)."""
    from workbench.models import get_module

    got = []
    h = get_module(model, layer_path).register_forward_hook(lambda _m, _i, o: got.append(o))
    with torch.no_grad():
        model(torch.as_tensor(split.inputs))
    h.remove()
    up = F.interpolate(got[0].float(), size=split.inputs.shape[-2:], mode="bilinear", align_corners=False)
    return up.permute(0, 2, 3, 1).reshape(-1, up.shape[1]).double().numpy()


def test_evaluate_probes_match_sklearn_and_are_stored(finished_run):
    sk_lin = pytest.importorskip("sklearn.linear_model")
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    from workbench.activations import extract
    from workbench.train.downstream import evaluate

    run = finished_run
    ds = wb_data.load(run.config.dataset, **run.config.dataset_options)
    n_pix = len(ds["train"]) * 16 * 16
    table = evaluate(run, methods=["linear", "knn", "finetune", "dense"], finetune_steps=4, dense_layer="stage1",
                     dense_pixels=n_pix)  # every training pixel: no sampling to reproduce
    assert set(table["method"]) == {"linear", "knn", "finetune", "dense"}
    assert list(table.columns) == [*COLUMNS, "task", "method", "label_fraction"]
    assert set(table["run"]) == {run.name} and (table["task"] == "label").all()
    order = {name: i for i, name in enumerate(probe_points(run.load_model()))}
    frozen = table[table.method != "finetune"]
    assert (frozen["layer_index"] == frozen["layer"].map(order)).all()
    assert table.loc[table.method == "finetune", "layer_index"].isna().all()  # "embed": the representation
    for method, group in table.groupby("method"):
        assert set(group["split"]) == {"test", "ood"}, method
    score = table[table.measure.isin(["accuracy", "pixel_accuracy", "miou"])]["value"]
    assert ((score >= 0) & (score <= 1)).all()
    assert (table["step"] == 12).all() and (table["label_fraction"] == 1.0).all()

    model = run.load_model()
    layer = table[table.method == "linear"]["layer"].iloc[0]
    assert layer == "pool"  # the representation feeding the head
    feats = {s: extract(model, ds[s], layers=[layer])[layer].double().numpy() for s in ("train", "test", "ood")}
    scaler = StandardScaler().fit(feats["train"])
    logreg = sk_lin.LogisticRegression(C=1.0, tol=1e-10, max_iter=10000).fit(scaler.transform(feats["train"]),
                                                                            ds["train"].labels)
    knn = KNeighborsClassifier(n_neighbors=min(20, len(ds["train"]) - 1), metric="cosine",
                               algorithm="brute").fit(feats["train"], ds["train"].labels)
    for split in ("test", "ood"):
        got = table[(table.split == split)].set_index(["method", "measure"])["value"]
        x = scaler.transform(feats[split])
        assert got[("linear", "accuracy")] == pytest.approx(logreg.score(x, ds[split].labels), abs=1e-6)
        proba = logreg.predict_proba(x)
        ce = -np.mean(np.log(proba[np.arange(len(x)), np.searchsorted(logreg.classes_, ds[split].labels)]))
        assert got[("linear", "loss")] == pytest.approx(ce, rel=1e-4)
        assert abs(got[("knn", "accuracy")] - knn.score(feats[split], ds[split].labels)) <= 1 / len(x) + 1e-12

    # dense: sklearn on the same (independently extracted) pixel features, pixel labels = mask * (class + 1)
    def pixel_labels(split):
        return (split.masks * (split.labels[:, None, None] + 1)).reshape(-1)

    xtr = _pixel_features_reference(model, ds["train"], "stages.0")
    pscale = StandardScaler().fit(xtr)
    dense = sk_lin.LogisticRegression(C=1.0, tol=1e-10, max_iter=10000).fit(pscale.transform(xtr),
                                                                           pixel_labels(ds["train"]))
    for split in ("test", "ood"):
        truth = pixel_labels(ds[split])
        pred = dense.predict(pscale.transform(_pixel_features_reference(model, ds[split], "stages.0")))
        ious = [np.sum((pred == c) & (truth == c)) / np.sum((pred == c) | (truth == c))
                for c in np.union1d(pred, truth)]
        got = table[(table.method == "dense") & (table.split == split)].set_index("measure")["value"]
        assert abs(got["pixel_accuracy"] - np.mean(pred == truth)) <= 3 / len(truth)
        assert got["miou"] == pytest.approx(np.mean(ious), abs=0.01)
        assert (table[table.method == "dense"]["layer"] == "stage1").all()

    # stored with the run; the same evaluation again replaces its rows, a new label fraction adds rows
    stored = run.downstream()
    assert len(stored) == len(table) and set(stored["method"]) == set(table["method"])
    again = evaluate(run, methods=["linear"])
    stored2 = run.downstream()
    assert len(stored2) == len(stored)
    key = ["method", "split", "measure", "label_fraction", "layer", "step", "task"]
    assert not stored2.duplicated(key).any()
    merged = stored2.merge(again.drop(columns="run"), on=key, suffixes=("", "_new"))
    np.testing.assert_allclose(merged["value"], merged["value_new"])
    half = evaluate(run, methods=["linear"], label_fractions=[0.5])
    assert (half["label_fraction"] == 0.5).all()
    assert len(run.downstream()) == len(stored) + len(half)


@pytest.mark.parametrize("kwargs, match", [
    ({"task": "no-such-factor"}, "task"),
    ({"task": "x"}, "continuous"),
    ({"methods": ["svm"]}, "methods"),
    ({"methods": []}, "methods"),
    ({"label_fractions": [0.0]}, "label_fractions"),
    ({"label_fractions": [1.5]}, "label_fractions"),
    ({"splits": ["validation"]}, "split"),
    ({"step": 7}, "step"),
])
def test_evaluate_rejects_bad_arguments(finished_run, kwargs, match):
    from workbench.train.downstream import evaluate

    with pytest.raises(ValueError, match=match):
        evaluate(finished_run, **kwargs)


def test_dense_needs_masks(tmp_path):
    from workbench.train.downstream import evaluate

    run = train({**GMM, "steps": 1}, tmp_path, progress=False)
    with pytest.raises(ValueError, match="masks"):
        evaluate(run, methods=["dense"])


# ------------------------------------------------------------------------------------------ 9 study
STUDY_BASE = {**GMM, "steps": 6, "lr": 1e-2, "batch_size": 32}


def _mtimes(store):
    return {p: p.stat().st_mtime_ns for p in store.root.glob("runs/*/checkpoints/*/model.safetensors")}


def test_study_grid_reuse_failures_and_correlate(tmp_path):
    from scipy.stats import spearmanr

    from workbench.study import Study

    store = RunStore(tmp_path)
    opts = dict(measures=["rankme", "tolerance"], downstream=["linear"], store=store)
    study = Study(STUDY_BASE, vary={"label_noise": [0.0, 0.3]}, **opts)
    table = study.run(progress=False)
    assert study.failures == []
    assert list(table.columns) == [*COLUMNS, "kind", "task", "method", "label_fraction", "label_noise", "seed",
                                   "n_params"]
    assert sorted(table["run"].unique()) == ["label_noise=0.0,seed=0", "label_noise=0.3,seed=0"]
    assert set(table["kind"]) == {"measure", "downstream", "history"}
    assert dict(table.groupby("run")["label_noise"].first()) == {"label_noise=0.0,seed=0": 0.0,
                                                                 "label_noise=0.3,seed=0": 0.3}
    for _, part in table.groupby("run"):
        meas = part[part.kind == "measure"]
        assert set(meas["measure"]) == {"rankme", "tolerance"} and set(meas["layer"]) == {"fc1", "head"}
        down = part[part.kind == "downstream"]
        assert set(down["split"]) == {"test", "ood"} and set(down["method"]) == {"linear"}
    assert len(store.ids()) == 2

    # re-running trains nothing: same runs, checkpoints untouched
    before = _mtimes(store)
    again = Study(STUDY_BASE, vary={"label_noise": [0.0, 0.3]}, **opts).run(progress=False)
    assert _mtimes(store) == before and len(store.ids()) == 2
    cols = ["run", "kind", "layer", "split", "measure"]
    pd.testing.assert_frame_equal(table.sort_values(cols + ["step"]).reset_index(drop=True)[cols + ["value"]],
                                  again.sort_values(cols + ["step"]).reset_index(drop=True)[cols + ["value"]])

    # a grid point that fails while training is reported; the other runs' rows are present
    bad = Study(STUDY_BASE, vary={"objective": ["supervised", "mlm"]}, **opts)
    t_bad = bad.run(progress=False)
    assert [label for label, _ in bad.failures] == ["objective=mlm,seed=0"]
    assert "mlm" in bad.failures[0][1] and "ValueError" in bad.failures[0][1]
    assert set(t_bad["run"]) == {"objective=supervised,seed=0"} and len(t_bad) > 0

    # correlate over 3 runs (two of them reused) = scipy's Spearman of the selected values
    grid3 = Study(STUDY_BASE, vary={"label_noise": [0.0, 0.15, 0.3]}, **opts)
    t3 = grid3.run(progress=False)
    assert len(store.ids()) == 4  # the 2 above + the failed mlm run (registered) + label_noise=0.15
    sel_m = {"kind": "measure", "measure": "rankme", "layer": "fc1"}
    sel_d = {"kind": "downstream", "method": "linear", "split": "test", "measure": "loss"}  # continuous: no ties
    res = grid3.correlate(sel_m, sel_d, n_boot=300)
    x = t3[(t3.kind == "measure") & (t3.measure == "rankme") & (t3.layer == "fc1")].set_index("run")["value"]
    y = t3[(t3.kind == "downstream") & (t3.method == "linear") & (t3.split == "test")
           & (t3.measure == "loss")].set_index("run")["value"]
    assert len(x) == len(y) == 3 and x.nunique() == 3 and y.nunique() == 3
    rho = spearmanr(x.sort_index().to_numpy(), y.sort_index().to_numpy())[0]
    row = res.iloc[0]
    assert row["n_runs"] == 3 and row["value"] == pytest.approx(rho, abs=1e-12)
    assert row["ci_low"] <= row["value"] <= row["ci_high"]
    assert row["ci_low"] >= -1 and row["ci_high"] <= 1
    with pytest.raises(ValueError, match="several rows"):
        grid3.correlate({"kind": "measure", "measure": "rankme"}, sel_d)
    # a quantity that is constant across runs has no rank correlation: a clear error, not NaN
    grid3.table = t3.assign(value=np.where((t3.kind == "measure") & (t3.measure == "rankme"), 5.0, t3["value"]))
    with pytest.raises(ValueError, match=r"same .* for all 3 runs"):
        grid3.correlate(sel_m, sel_d)


def test_study_rejects_bad_grids(tmp_path):
    from workbench.study import Study

    with pytest.raises(ValueError, match="unknown config field 'label_nosie'"):
        Study(STUDY_BASE, vary={"label_nosie": [0.1]}, store=tmp_path)
    with pytest.raises(ValueError, match="measures has unknown 'rank_me'"):
        Study(STUDY_BASE, measures=["rank_me"], store=tmp_path)
    with pytest.raises(ValueError, match="seeds="):
        Study(STUDY_BASE, vary={"seed": [0, 1]}, store=tmp_path)
    with pytest.raises(ValueError, match="label_noise"):  # an invalid grid point fails before training
        Study({**STUDY_BASE, "objective": "simclr", "augment": ("noise",)}, vary={"label_noise": [0.0, 0.2]},
              store=tmp_path)
    assert RunStore(tmp_path).ids() == []


# ---------------------------------------------------------------------------------- 10 bad configs at train time
@pytest.mark.parametrize("changes, match", [
    ({"objective": "mlm"}, r"objective='mlm' does not apply to image data"),
    ({"objective": "clm"}, r"objective='clm' does not apply to image data"),
    ({"objective": "simclr"}, r"augment is empty"),
    ({"recorders": ("align_unif",)}, r"align_unif"),
])
def test_inapplicable_objectives_fail_at_train_time_with_the_reason(tmp_path, changes, match):
    cfg = {**SHAPES, **changes}
    with pytest.raises(ValueError, match=match):
        train(cfg, tmp_path, progress=False)
    run = RunStore(tmp_path).get(RunConfig.from_dict(cfg))
    assert run.status["state"] == "failed" and "ValueError" in run.status["error"]


def test_mae_on_tokens_and_supervised_lm_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="objective='mae' does not apply to tokens"):
        train({**LANG, "objective": "mae"}, tmp_path, progress=False)
    with pytest.raises(ValueError, match="task='lm'"):
        train({**LANG, "model_options": {**LANG["model_options"], "task": "lm"}}, tmp_path, progress=False)

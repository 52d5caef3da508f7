"""Tests for workbench.train.objectives and the representation methods of the model builders.

Loss formulas are checked against straightforward references written here (explicit loops / numpy:
InfoNCE, Barlow Twins, VICReg with ``np.cov``, KL, masked MSE, MLM/CLM cross-entropy over the
positions that must count); every objective must lower its own loss on a tiny problem.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import workbench.data as wd
import workbench.models as wm
from workbench.runs import RunConfig
from workbench.train.objectives import (Batch, barlow_twins_loss, distill_kl, info_nce_loss, make_objective,
                                        mlm_corrupt, patch_mask, representation, vicreg_loss)



pytestmark = pytest.mark.usefixtures("one_thread")

def cfg(**kw):
    return RunConfig(**{"dataset": "test", **kw})


@pytest.fixture(scope="module")
def data():
    return {
        "vectors": wd.load("gaussian-mixture", n_train=128, n_test=4, n_ood=4, dim=12, seed=0),
        "image": wd.load("shapes", n_train=128, n_test=4, n_ood=4, size=8, seed=0),
        "signal": wd.load("mnist1d", n_train=128, n_test=4, seed=0),
        "tokens": wd.load("tiny-language", n_train=128, n_test=4, n_ood=4, max_len=12, max_depth=1, seed=0),
    }


def mlp(ds, hidden=(32,), seed=0):
    torch.manual_seed(seed)
    return wm.build("mlp", input_shape=ds.input_shape, num_classes=ds.num_classes, hidden=hidden)


def lm(ds, causal, seed=0, task="lm"):
    torch.manual_seed(seed)
    extra = {"num_classes": ds.num_classes} if task == "classify" else {}
    return wm.build("transformer", vocab_size=len(ds.vocab), dim=16, depth=1, heads=2, max_len=ds.input_shape[0],
                    causal=causal, task=task, **extra)


def batch_of(ds, idx):
    split = ds["train"]
    x = split.inputs[idx]
    inputs = torch.as_tensor(x, dtype=torch.long if x.dtype.kind == "i" else torch.float32)
    mask = None if split.attention_mask is None else torch.as_tensor(split.attention_mask[idx])
    labels = None if split.labels is None else torch.as_tensor(split.labels[idx], dtype=torch.long)
    return Batch(inputs=inputs, labels=labels, attention_mask=mask, index=np.asarray(idx))


# ----------------------------------------------------------------------------------------------- formulas
def _info_nce_reference(z, groups, tau):
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    m = len(z)
    losses = []
    for i in range(m):
        denom = sum(math.exp(z[i] @ z[a] / tau) for a in range(m) if a != i)
        pos = [p for p in range(m) if p != i and groups[p] == groups[i]]
        if pos:
            losses.append(-np.mean([math.log(math.exp(z[i] @ z[p] / tau) / denom) for p in pos]))
    return float(np.mean(losses))


@pytest.mark.parametrize("views,by_label", [(2, False), (3, False), (2, True)])
def test_info_nce_matches_loop_reference(views, by_label):
    rng = np.random.default_rng(0)
    n, d, tau = 5, 4, 0.3
    z = rng.normal(size=(views * n, d))
    groups = np.tile(np.array([0, 1, 0, 2, 1]) if by_label else np.arange(n), views)
    loss, metrics = info_nce_loss(torch.tensor(z), torch.tensor(groups), tau)
    assert float(loss) == pytest.approx(_info_nce_reference(z, groups, tau), rel=1e-10)
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    cos = zn @ zn.T
    same = (groups[:, None] == groups[None, :]) & ~np.eye(len(z), dtype=bool)
    other = groups[:, None] != groups[None, :]
    assert float(metrics["pos_sim"]) == pytest.approx(cos[same].mean(), rel=1e-10)
    assert float(metrics["neg_sim"]) == pytest.approx(cos[other].mean(), rel=1e-10)


def test_info_nce_golden_two_by_two():
    # two examples, two identical views each, orthogonal examples: anchor sees exp(1/t) vs exp(1/t) + 2 exp(0)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    loss, _ = info_nce_loss(z, torch.tensor([0, 1, 0, 1]), 0.5)
    assert float(loss) == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 2)), rel=1e-12)
    with pytest.raises(ValueError, match="positive"):
        info_nce_loss(z, torch.arange(4), 0.5)


def test_barlow_twins_matches_numpy():
    rng = np.random.default_rng(1)
    n, d, lam = 16, 5, 5e-3
    z1 = rng.normal(size=(n, d)) * 3 + 1
    z2 = z1 + 0.5 * rng.normal(size=(n, d))
    a = (z1 - z1.mean(0)) / np.sqrt(z1.var(0) + 1e-5)
    b = (z2 - z2.mean(0)) / np.sqrt(z2.var(0) + 1e-5)
    c = np.zeros((d, d))
    for i in range(d):
        for j in range(d):
            c[i, j] = sum(a[k, i] * b[k, j] for k in range(n)) / n
    on = sum((1 - c[i, i]) ** 2 for i in range(d))
    off = sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
    loss, metrics = barlow_twins_loss(torch.tensor(z1), torch.tensor(z2), lam)
    assert float(loss) == pytest.approx(on + lam * off, rel=1e-10)
    assert float(metrics["on_diag"]) == pytest.approx(on, rel=1e-10)
    assert float(metrics["off_diag"]) == pytest.approx(off, rel=1e-10)
    # golden: identical, decorrelated (orthogonal +-1 columns) views give C = I up to eps, loss ~ 0
    h = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], float)[:, 1:]
    loss, _ = barlow_twins_loss(torch.tensor(h), torch.tensor(h))
    assert float(loss) == pytest.approx(3 * (1e-5 / (1 + 1e-5)) ** 2, abs=1e-12)


def test_vicreg_matches_numpy():
    rng = np.random.default_rng(2)
    n, d = 12, 4
    z1 = rng.normal(size=(n, d)) * np.array([0.3, 1.0, 2.0, 0.1])
    z2 = z1 + 0.2 * rng.normal(size=(n, d))
    inv = np.mean((z1 - z2) ** 2)
    var = np.mean([max(0.0, 1 - math.sqrt(np.var(z1[:, j], ddof=1) + 1e-4)) for j in range(d)]) / 2 \
        + np.mean([max(0.0, 1 - math.sqrt(np.var(z2[:, j], ddof=1) + 1e-4)) for j in range(d)]) / 2
    off = lambda m: (m ** 2).sum() - (np.diag(m) ** 2).sum()  # noqa: E731
    cov = (off(np.cov(z1, rowvar=False)) + off(np.cov(z2, rowvar=False))) / d
    loss, metrics = vicreg_loss(torch.tensor(z1), torch.tensor(z2))
    assert float(metrics["invariance"]) == pytest.approx(inv, rel=1e-10)
    assert float(metrics["variance"]) == pytest.approx(var, rel=1e-10)
    assert float(metrics["covariance"]) == pytest.approx(cov, rel=1e-10)
    assert float(loss) == pytest.approx(25 * inv + 25 * var + cov, rel=1e-10)
    with pytest.raises(ValueError, match="at least 2 examples"):
        vicreg_loss(torch.ones(1, 3), torch.ones(1, 3))


def test_distill_kl_matches_numpy():
    rng = np.random.default_rng(3)
    s, t = rng.normal(size=(6, 7)), rng.normal(size=(6, 7)) * 2
    for ts, tt in [(1.0, 1.0), (0.1, 0.04)]:
        p = np.exp(t / tt) / np.exp(t / tt).sum(1, keepdims=True)
        q = np.exp(s / ts) / np.exp(s / ts).sum(1, keepdims=True)
        want = np.mean((p * (np.log(p) - np.log(q))).sum(1))
        got = distill_kl(torch.tensor(s), torch.tensor(t), ts, tt)
        assert float(got) == pytest.approx(want, rel=1e-10)
    assert float(distill_kl(torch.tensor(t), torch.tensor(t))) == pytest.approx(0.0, abs=1e-12)


def test_patch_mask_exact_count_and_aligned_blocks():
    torch.manual_seed(0)
    m = patch_mask(20, (12, 10), 4, 0.5)  # grid 3 x 3 (edge cells cropped), round(4.5) = 5 cells
    assert m.shape == (20, 12, 10)
    cells = m[:, ::4, ::4]
    assert bool((cells.flatten(1).sum(1) == 5).all())
    up = cells.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, :12, :10]
    assert torch.equal(m, up)  # constant within each patch
    s = patch_mask(7, (40,), 5, 0.25)
    assert bool((s[:, ::5].sum(1) == 2).all())  # round(0.25 * 8) = 2 segments
    assert bool((patch_mask(3, (4,), 2, 0.01).sum(1) == 2).all())  # at least one patch


# ----------------------------------------------------------------------------------------------- objectives
def test_supcon_equals_simclr_when_every_example_is_its_own_class(data):
    ds = data["vectors"]
    batch = batch_of(ds, np.arange(10))
    batch.labels = torch.arange(10)  # all distinct
    losses = {}
    for name in ("simclr", "supcon"):
        model = mlp(ds)
        torch.manual_seed(5)
        obj = make_objective(cfg(objective=name, augment=("noise", "mask"), projector="mlp", embed_dim=8,
                                 views=3), ds, model)
        torch.manual_seed(6)
        losses[name] = obj(model, batch)[0].item()
    assert losses["supcon"] == losses["simclr"]
    batch.labels = torch.tensor(ds["train"].labels[:10], dtype=torch.long)  # real labels: more positives
    torch.manual_seed(6)
    assert obj(model, batch)[0].item() != losses["supcon"]


def test_joint_embedding_objective_is_the_formula_on_projected_views(data):
    """simclr/barlow/vicreg = the reference formula applied to projector(embed(augment(x))) per view."""
    from workbench.train.augment import make_augment

    ds = data["vectors"]
    batch = batch_of(ds, np.arange(8))
    for name, fn in [("simclr", None), ("barlow", barlow_twins_loss), ("vicreg", vicreg_loss)]:
        model = mlp(ds)
        obj = make_objective(cfg(objective=name, augment=("noise",), projector="linear", embed_dim=6), ds, model)
        torch.manual_seed(11)
        loss = obj(model, batch)[0].item()
        aug = make_augment(("noise",), 0.5, kind="vectors")
        torch.manual_seed(11)
        v1, v2 = aug(batch.inputs), aug(batch.inputs)
        z1, z2 = obj.projector(model.embed(v1)), obj.projector(model.embed(v2))
        if name == "simclr":
            want = _info_nce_reference(torch.cat([z1, z2]).detach().double().numpy(), np.tile(np.arange(8), 2), 0.2)
        else:
            want = fn(z1, z2)[0].item()
        assert float(loss) == pytest.approx(want, rel=1e-5)


def test_mae_loss_counts_masked_entries_only(data):
    ds = data["image"]
    model = mlp(ds)
    obj = make_objective(cfg(objective="mae", mask_ratio=0.5), ds, model)
    assert obj.patch == 1  # 8x8 image: round(8 / 8)
    batch = batch_of(ds, np.arange(6))
    torch.manual_seed(3)
    loss, _ = obj(model, batch)
    torch.manual_seed(3)
    m = patch_mask(6, (8, 8), 1, 0.5)[:, None].expand_as(batch.inputs)
    recon = obj.reconstruct(model, batch.inputs.masked_fill(m, 0.0)).detach().double().numpy()
    x, mm = batch.inputs.double().numpy(), m.numpy()
    errs = [(recon[idx] - x[idx]) ** 2 for idx in zip(*np.nonzero(mm))]
    assert loss.item() == pytest.approx(np.mean(errs), rel=1e-5)
    assert mm.reshape(6, 3, -1).sum(2).tolist() == [[32] * 3] * 6  # half the pixels, every channel
    # ViT: the patch of the model is the masking patch
    vit = wm.build("vit", input_shape=(3, 8, 8), num_classes=6, patch=4, dim=8, depth=1, heads=2)
    assert make_objective(cfg(objective="mae"), ds, vit).patch == 4


def test_mlm_corruption_80_10_10_and_exact_counts():
    torch.manual_seed(0)
    n, t, vocab = 800, 30, 50
    tokens = torch.randint(5, vocab, (n, t))
    lengths = torch.randint(5, t + 1, (n,))
    am = (torch.arange(t)[None, :] < lengths[:, None]).long()
    tokens[:, 0] = 1  # bos (special)
    tokens[am == 0] = 0  # padding
    special = torch.tensor([0, 1, 2, 3, 4])
    replace = torch.arange(5, vocab)
    out, sel = mlm_corrupt(tokens, am, 0.15, 3, replace, special)
    maskable = (am == 1) & (tokens != 1)
    assert not bool((sel & ~maskable).any())  # never padding or special tokens
    want = torch.floor(0.15 * maskable.sum(1).double() + 0.5).long().clamp(min=1)
    assert torch.equal(sel.sum(1), want)
    assert torch.equal(out[~sel], tokens[~sel])  # unselected tokens untouched
    o, tk = out[sel], tokens[sel]
    to_mask = (o == 3).double().mean()
    kept = (o == tk).double().mean()
    random_ = ((o != 3) & (o != tk)).double().mean()
    total = int(sel.sum())  # ~ 2000 selected: sd of a 0.1 share ~ 0.007
    assert total > 1500
    assert abs(float(to_mask) - 0.8) < 0.03
    assert abs(float(kept) - (0.1 + 0.1 / len(replace))) < 0.025
    assert abs(float(random_) - 0.1 * (1 - 1 / len(replace))) < 0.025
    assert bool(torch.isin(o[(o != 3) & (o != tk)], replace).all())
    # no mask token: the 80% share becomes random tokens too
    out2, sel2 = mlm_corrupt(tokens, am, 0.15, None, replace, special)
    assert not bool((out2 == 3).any()) and bool(torch.isin(out2[sel2], replace).all())


def _ce_reference(logits, targets):
    logits = logits.double().numpy()
    return float(np.mean([-(l[y] - math.log(np.exp(l).sum())) for l, y in zip(logits, targets)]))


def test_mlm_loss_counts_masked_positions_only(data):
    ds = data["tokens"]
    model = lm(ds, causal=False)
    obj = make_objective(cfg(objective="mlm", mask_ratio=0.2), ds, model)
    batch = batch_of(ds, np.arange(8))
    torch.manual_seed(4)
    loss, metrics = obj(model, batch)
    torch.manual_seed(4)
    corrupted, sel = mlm_corrupt(batch.inputs, batch.attention_mask, 0.2, 3, obj.replace_ids, obj.special_ids)
    logits = model(corrupted, attention_mask=batch.attention_mask).detach()
    rows = [(i, j) for i in range(8) for j in range(batch.inputs.shape[1]) if sel[i, j]]
    want = _ce_reference(torch.stack([logits[i, j] for i, j in rows]), [int(batch.inputs[i, j]) for i, j in rows])
    assert loss.item() == pytest.approx(want, rel=1e-5)
    assert set(obj.special_ids.tolist()) == {0, 1, 2, 3, 4}
    assert 0 <= float(metrics["accuracy"]) <= 1


def test_clm_ignores_padding(data):
    ds = data["tokens"]
    model = lm(ds, causal=True)
    obj = make_objective(cfg(objective="clm"), ds, model)
    batch = batch_of(ds, np.arange(8))
    am = batch.attention_mask
    assert bool((am == 0).any())  # the batch has padding
    loss, _ = obj(model, batch)
    logits = model(batch.inputs, attention_mask=am).detach()
    pairs = [(i, j) for i in range(8) for j in range(am.shape[1] - 1) if am[i, j] and am[i, j + 1]]
    want = _ce_reference(torch.stack([logits[i, j] for i, j in pairs]), [int(batch.inputs[i, j + 1]) for i, j in pairs])
    assert loss.item() == pytest.approx(want, rel=1e-5)
    noisy = batch.inputs.clone()
    noisy[am == 0] = torch.randint(5, len(ds.vocab), (int((am == 0).sum()),))  # change only padded tokens
    loss2, _ = obj(model, Batch(noisy, batch.labels, am, batch.index))
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-6)


def test_distill_teacher_is_frozen_random_and_saved(data):
    ds = data["vectors"]
    model = mlp(ds)
    torch.manual_seed(1)
    obj = make_objective(cfg(objective="distill"), ds, model)
    assert all(not p.requires_grad for p in obj.teacher.parameters())
    assert not torch.equal(obj.teacher.hidden[0][0].weight, model.hidden[0][0].weight)  # independent init
    assert any(k.startswith("teacher.") for k in obj.state_dict())
    obj.train()
    assert obj.head.training and not obj.teacher.training and not obj.teacher_head.training
    before = {k: v.clone() for k, v in obj.state_dict().items() if k.startswith("teacher")}
    opt = torch.optim.Adam([p for p in [*model.parameters(), *obj.parameters()] if p.requires_grad], lr=1e-2)
    batch = batch_of(ds, np.arange(16))
    for _ in range(3):
        loss, _ = obj(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(before[k], v) for k, v in obj.state_dict().items() if k in before)
    # a fresh objective given this state reproduces the loss (checkpoint/resume)
    torch.manual_seed(99)
    other = make_objective(cfg(objective="distill"), ds, model)
    other.load_state_dict(obj.state_dict())
    assert other(model, batch)[0].item() == obj(model, batch)[0].item()


def test_objectives_draw_from_the_global_rng(data):
    ds = data["image"]
    model = mlp(ds)
    obj = make_objective(cfg(objective="simclr", augment=("crop", "flip", "color")), ds, model)
    batch = batch_of(ds, np.arange(8))
    torch.manual_seed(7)
    a = obj(model, batch)[0].item()
    torch.manual_seed(7)
    b = obj(model, batch)[0].item()
    c = obj(model, batch)[0].item()
    assert a == b and a != c


# ----------------------------------------------------------------------------------------------- errors
def test_make_objective_errors(data):
    img, tok, vec = data["image"], data["tokens"], data["vectors"]
    unlabeled = wd.load("arrays", inputs=np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    cases = [
        (cfg(objective="mlm"), img, mlp(img), "does not apply to image data"),
        (cfg(objective="clm"), vec, mlp(vec), "does not apply to vectors data"),
        (cfg(objective="mae"), tok, lm(tok, False), "does not apply to tokens data"),
        (cfg(objective="mae"), vec, mlp(vec), "does not apply to vectors data"),
        (cfg(objective="simclr", augment=("noise",)), tok, lm(tok, False), "augment"),
        (cfg(objective="simclr"), tok, lm(tok, False), "does not apply to tokens"),
        (cfg(objective="supcon", augment=("noise",)), unlabeled,
         wm.build("mlp", input_shape=(4,), num_classes=2, hidden=(8,)), "needs class labels"),
        (cfg(objective="simclr"), vec, mlp(vec), "augment is empty"),
        (cfg(objective="mae", mask_ratio=0.0), img, mlp(img), "mask_ratio > 0"),
        (cfg(objective="mlm"), tok, lm(tok, causal=True), "needs causal=False"),
        (cfg(objective="clm"), tok, lm(tok, causal=False), "needs causal=True"),
        (cfg(objective="mlm"), tok, lm(tok, False, task="classify"), 'task="lm"|task=\'classify\'|"task": "lm"'),
        (cfg(objective="supervised"), tok, lm(tok, False), "task='lm'"),
        (cfg(objective="simclr", augment=("color",)), data["signal"], mlp(data["signal"]), "color"),
    ]
    for config, ds, model, match in cases:
        with pytest.raises(ValueError, match=match):
            make_objective(config, ds, model)
    assert make_objective(cfg(objective="none"), vec, mlp(vec)) is None


# ----------------------------------------------------------------------------------------------- representations
def test_embed_feeds_the_head_for_every_builder():
    torch.manual_seed(0)
    cases = [(wm.build("mlp", input_shape=(6,), num_classes=3, hidden=(8, 5), dropout=0.3), torch.randn(4, 6)),
             (wm.build("cnn", input_shape=(3, 8, 8), num_classes=3, width=4, depth=2), torch.randn(4, 3, 8, 8)),
             (wm.build("cnn", input_shape=(2, 16), num_classes=3, width=4, depth=2), torch.randn(4, 2, 16)),
             (wm.build("vit", input_shape=(3, 8, 8), num_classes=3, patch=4, dim=8, depth=1, heads=2),
              torch.randn(4, 3, 8, 8)),
             (wm.build("vit", input_shape=(3, 8, 8), num_classes=3, patch=4, dim=8, depth=1, heads=2, pool="mean"),
              torch.randn(4, 3, 8, 8))]
    for model, x in cases:
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x), model.head(model.embed(x)), rtol=0, atol=0)
            assert representation(model, x).shape == (4, model.head.in_features)
    vit = cases[3][0]  # cls pooling = token 0 of the final norm's output (the "norm" probe point)
    acts = {}
    hook = vit.norm.register_forward_hook(lambda m, i, o: acts.__setitem__("norm", o))
    with torch.no_grad():
        e = vit.embed(cases[3][1])
    hook.remove()
    torch.testing.assert_close(e, acts["norm"][:, 0])


@pytest.mark.parametrize("task", ["lm", "classify"])
def test_transformer_hidden_and_pooled(task):
    torch.manual_seed(0)
    model = wm.build("transformer", vocab_size=20, num_classes=3 if task == "classify" else None, dim=8, depth=2,
                     heads=2, max_len=10, task=task).eval()
    tokens = torch.randint(0, 20, (3, 7))
    am = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    with torch.no_grad():
        h = model.hidden(tokens, am)
        pooled = model.pooled(tokens, am)
        assert h.shape == (3, 7, 8)
        for i in range(3):  # mean over the real tokens only
            torch.testing.assert_close(pooled[i], h[i, : int(am[i].sum())].mean(0))
        out = model(tokens, am)
        torch.testing.assert_close(out, model.head(h) if task == "lm" else model.head(pooled), rtol=0, atol=0)
        torch.testing.assert_close(representation(model, tokens, am), pooled, rtol=0, atol=0)
        torch.testing.assert_close(model.pooled(tokens), model.hidden(tokens).mean(1))
    assert next(iter(wm.probe_points(model))) == "embed"  # the token-embedding probe point is unchanged


# ----------------------------------------------------------------------------------------------- training
LOSS_CASES = {  # name: (data kind, config fields, model, learning rate)
    "supervised": ("vectors", dict(), "mlp", 3e-3),
    "simclr": ("image", dict(augment=("crop", "flip", "color"), projector="mlp", embed_dim=16), "mlp", 3e-3),
    "supcon": ("vectors", dict(augment=("noise", "mask"), projector="mlp", embed_dim=16), "mlp", 1e-2),
    "barlow": ("vectors", dict(augment=("noise", "mask"), projector="mlp", embed_dim=16), "mlp", 3e-3),
    "vicreg": ("vectors", dict(augment=("noise", "mask"), projector="mlp", embed_dim=16), "mlp", 3e-3),
    "mae": ("signal", dict(mask_ratio=0.5), "mlp", 3e-3),
    "autoencoder": ("vectors", dict(), "mlp", 3e-3),
    "mlm": ("tokens", dict(mask_ratio=0.15), "lm", 1e-2),
    "clm": ("tokens", dict(), "clm", 3e-3),
    "distill": ("vectors", dict(), "mlp", 3e-3),
}


@pytest.mark.parametrize("name", list(LOSS_CASES))
def test_each_objective_decreases_its_loss(name, data):
    """60 Adam steps on a tiny problem: mean loss of the last 5 steps < 0.92 x that of the first 5.

    (Observed over 3 seeds, the worst ratios are about 0.84 for supcon/mlm/mae, 0.75 for clm, <= 0.7 else.)
    """
    kind, options, arch, lr = LOSS_CASES[name]
    ds = data[kind]
    model = {"mlp": lambda: mlp(ds), "lm": lambda: lm(ds, False), "clm": lambda: lm(ds, True)}[arch]()
    torch.manual_seed(0)
    obj = make_objective(cfg(objective=name, **options), ds, model)
    assert obj.name == name and obj.needs_labels == (name in ("supervised", "supcon"))
    params = [p for p in [*model.parameters(), *obj.parameters()] if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    obj.train()
    losses = []
    for step in range(60):
        torch.manual_seed(step)
        idx = np.random.default_rng(step).choice(len(ds["train"]), 32, replace=False)
        loss, metrics = obj(model, batch_of(ds, idx))
        assert loss.dim() == 0 and torch.isfinite(loss)
        assert all(torch.isfinite(torch.as_tensor(v)) for v in metrics.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.92 * first, (name, first, last)

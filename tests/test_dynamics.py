"""workbench.dynamics: every measure against an independent computation written here (autograd on a model
rebuilt by hand, the exact Hessian from torch.autograd.functional.hessian + numpy eigvalsh, numpy softmax,
numpy arccos, a per-example backward loop, a model with the block deleted), plus the S3 study builder.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench import data as wb_data
from workbench import dynamics, models
from workbench.models import get_module, probe_points
from workbench.results import COLUMNS
from workbench.runs import RunConfig


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lang():
    return wb_data.load("tiny-language", n_train=32, n_test=24, n_ood=0, max_len=12, max_depth=1, seed=0)


def _lm(lang, norm="pre", depth=3, causal=True, seed=0):
    torch.manual_seed(seed)
    return models.build("transformer", vocab_size=len(lang.vocab), dim=16, depth=depth, heads=2, mlp_ratio=2.0,
                        max_len=12, causal=causal, norm=norm).double()


def _clm_loss_by_hand(model, tokens, mask):
    """Next-token cross-entropy over pairs of real tokens, written out here."""
    logits = model(tokens, attention_mask=mask)[:, :-1]
    valid = mask[:, 1:].bool() & mask[:, :-1].bool()
    return F.cross_entropy(logits[valid], tokens[:, 1:][valid])


def _batch(lang, n=24):
    part = lang["test"]
    return torch.as_tensor(part.inputs[:n]), torch.as_tensor(part.attention_mask[:n])


def _capture(model, tokens, mask):
    """Every probe point's raw output, by forward hooks written here."""
    outs = {}
    handles = [get_module(model, path).register_forward_hook(lambda _m, _i, o, name=name: outs.__setitem__(name, o))
               for name, path in probe_points(model).items()]
    with torch.no_grad():
        model(tokens, attention_mask=mask)
    for h in handles:
        h.remove()
    return outs


# --------------------------------------------------------------------------------------------- gradient norms
def test_layer_grad_norms_match_direct_autograd(lang):
    model = _lm(lang, "post")
    tokens, mask = _batch(lang)
    got = dynamics.layer_grad_norms(model, lambda m: _clm_loss_by_hand(m, tokens, mask)).set_index("layer")
    # independent: backward into .grad, then group by module-path prefix of named_parameters
    model.zero_grad()
    _clm_loss_by_hand(model, tokens, mask).backward()
    prefixes = {"embed": "embed.", "layer1": "layers.0.", "layer2": "layers.1.", "layer3": "layers.2."}
    for name, prefix in prefixes.items():
        ref = math.sqrt(sum(float((p.grad ** 2).sum()) for n, p in model.named_parameters() if n.startswith(prefix)))
        assert got.loc[name, "value"] == pytest.approx(ref, rel=1e-10), name
        assert got.loc[name, "layer_index"] == list(probe_points(model)).index(name)
    assert list(got.index) == ["embed", "layer1", "layer2", "layer3"]  # post-LN: no final_norm probe point
    assert set(got["measure"]) == {"grad_norm"}


def test_layer_grad_norms_classifier_and_layer_selection():
    torch.manual_seed(1)
    model = models.build("mlp", input_shape=(5,), num_classes=3, hidden=(7, 6)).double()
    x, y = torch.randn(20, 5, dtype=torch.float64), torch.randint(0, 3, (20,))
    got = dynamics.layer_grad_norms(model, dynamics.cross_entropy_loss(x, y), layers=["fc2", "head"])
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    ref = {"fc2": model.hidden[1][0], "head": model.head}
    assert list(got["layer"]) == ["fc2", "head"]
    for row in got.itertuples():
        lin = ref[row.layer]
        expect = math.sqrt(float((lin.weight.grad ** 2).sum() + (lin.bias.grad ** 2).sum()))
        assert row.value == pytest.approx(expect, rel=1e-10)


def test_grad_norm_history_reads_the_recorder_rows_in_forward_order():
    hist = pd.DataFrame([
        {"run": "r", "step": 2, "measure": "grad_norm", "split": "train_batch", "layer": "embed", "value": 1.0},
        {"run": "r", "step": 2, "measure": "grad_norm", "split": "train_batch", "layer": "layer1", "value": 2.0},
        {"run": "r", "step": 2, "measure": "loss", "split": "train_batch", "layer": np.nan, "value": 9.0},
        {"run": "r", "step": 1, "measure": "grad_norm", "split": "train_batch", "layer": "embed", "value": 3.0},
        {"run": "r", "step": 1, "measure": "grad_norm", "split": "train_batch", "layer": "layer1", "value": 4.0},
    ])
    got = dynamics.grad_norm_history(hist)
    assert list(got.columns) == list(COLUMNS) and set(got["run"]) == {"r"} and set(got["split"]) == {"train_batch"}
    assert got[["step", "layer", "layer_index", "value"]].values.tolist() == [
        [1, "embed", 0, 3.0], [1, "layer1", 1, 4.0], [2, "embed", 0, 1.0], [2, "layer1", 1, 2.0]]
    # a recorded layer_index (the probe point's position) is kept; a history of older versions reads alike
    recorded = dynamics.grad_norm_history(hist.assign(layer_index=hist["layer"].map({"embed": 0, "layer1": 4})))
    assert recorded["layer_index"].tolist() == [0, 4, 0, 4]
    legacy = dynamics.grad_norm_history(hist.rename(columns={"measure": "metric"}).fillna({"layer": ""}))
    pd.testing.assert_frame_equal(legacy, got)
    assert dynamics.grad_norm_history(hist, layers=["layer1"])["value"].tolist() == [4.0, 2.0]
    with pytest.raises(ValueError, match="recorders=\\('grad_norm'"):
        dynamics.grad_norm_history(hist[hist.measure == "loss"])
    with pytest.raises(ValueError, match="no recorded gradient norms"):
        dynamics.grad_norm_history(hist, layers=["layer9"])


# --------------------------------------------------------------------------------------------- depth
def test_angular_distance_known_values():
    x = torch.randn(50, 8, dtype=torch.float64)
    assert dynamics.angular_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    assert dynamics.angular_distance(x, 3.0 * x) == pytest.approx(0.0, abs=1e-12)
    assert dynamics.angular_distance(x, -x) == pytest.approx(1.0, abs=1e-12)
    e = np.eye(4)
    assert dynamics.angular_distance(e[:2], e[2:]) == pytest.approx(0.5, abs=1e-15)  # orthogonal rows
    a, b = np.random.default_rng(0).normal(size=(2, 30, 6))
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert dynamics.angular_distance(a, b) == pytest.approx(np.mean(np.arccos(cos)) / np.pi, rel=1e-12)


def test_output_variance_and_angular_distance_match_numpy_on_real_tokens(lang):
    model = _lm(lang, "pre")
    tokens, mask = _batch(lang)
    assert (mask == 0).any()  # the batch has padding, which must be left out
    outs = _capture(model, tokens, mask)
    keep = mask.bool().numpy()
    real = {k: v.numpy()[keep] for k, v in outs.items()}  # [real tokens, D]
    var = dynamics.output_variance(model, lang["test"].subset(slice(0, 24))).set_index("layer")["value"]
    assert list(var.index) == list(probe_points(model))
    for name, h in real.items():
        assert var[name] == pytest.approx(np.var(h, ddof=1), rel=1e-5), name
    ang = dynamics.layer_angular_distance(model, lang["test"].subset(slice(0, 24)), layers=r"^(embed|layer\d+)$")
    assert list(ang["layer_b"]) == ["embed", "layer1", "layer2"] and list(ang["layer_index_b"]) == [0, 1, 2]
    assert list(ang["layer"]) == ["layer1", "layer2", "layer3"] and list(ang["layer_index"]) == [1, 2, 3]
    for row in ang.itertuples():
        a, b = real[row.layer_b], real[row.layer]
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert row.value == pytest.approx(np.mean(np.arccos(np.clip(cos, -1, 1))) / np.pi, rel=1e-4), row.layer
    last = dynamics.layer_angular_distance(model, lang["test"].subset(slice(0, 24)), layers=["layer1", "layer2"],
                                           position="last")
    idx = keep.sum(1) - 1  # real tokens are a prefix: the last real token sits at length - 1
    a, b = (outs[k].numpy()[np.arange(len(idx)), idx] for k in ("layer1", "layer2"))
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert last["value"].iloc[0] == pytest.approx(np.mean(np.arccos(cos)) / np.pi, rel=1e-4)


# --------------------------------------------------------------------------------------------- layer skip
def test_layer_skip_identity_block_changes_nothing_and_others_match_deleting_the_block(lang):
    model = _lm(lang, "pre", depth=3)
    with torch.no_grad():  # block 2's residual updates are exactly zero: an identity block
        for lin in (model.layers[1].attn.proj, model.layers[1].mlp[2]):
            lin.weight.zero_()
            lin.bias.zero_()
    tokens, mask = _batch(lang)
    loss = lambda m: _clm_loss_by_hand(m, tokens, mask)  # noqa: E731
    got = dynamics.layer_skip_loss(model, loss)
    inc = got[got.measure == "skip_loss_increase"].set_index("layer")["value"]
    assert list(inc.index) == ["layer1", "layer2", "layer3"]
    assert inc["layer2"] == 0.0
    assert abs(inc["layer1"]) > 1e-6 and abs(inc["layer3"]) > 1e-6
    with torch.no_grad():
        full = float(loss(model))
        assert got.loc[got.measure == "full_loss", "value"].item() == pytest.approx(full, rel=1e-12)
        # the full loss is model-level: no layer
        assert got.loc[got.measure == "full_loss", ["layer", "layer_index"]].isna().all(axis=None)
        for i, name in enumerate(["layer1", "layer3"]):
            pruned = copy.deepcopy(model)
            del pruned.layers[0 if i == 0 else 2]  # independent: the same model without the block
            assert inc[name] == pytest.approx(float(loss(pruned)) - full, rel=1e-9, abs=1e-12), name
    assert model.layers[0]._forward_hooks == {}  # hooks removed


def test_layer_skip_post_ln_and_cnn_resblocks():
    torch.manual_seed(0)
    cnn = models.build("cnn", input_shape=(3, 8, 8), num_classes=3, width=4, depth=2, blocks_per_stage=2).double()
    assert dynamics.residual_blocks(cnn) == {"stage1.0": "stages.0.0", "stage1.1": "stages.0.1",
                                             "stage2.0": "stages.1.0", "stage2.1": "stages.1.1"}
    with torch.no_grad():  # stage1.1's residual branch ends in a BatchNorm with gamma = beta = 0: branch == 0
        cnn.stages[0][1].norm2.weight.zero_()
        cnn.stages[0][1].norm2.bias.zero_()
    cnn.eval()
    x, y = torch.randn(10, 3, 8, 8, dtype=torch.float64), torch.randint(0, 3, (10,))
    got = dynamics.layer_skip_loss(cnn, dynamics.cross_entropy_loss(x, y))
    inc = got[got.measure == "skip_loss_increase"].set_index("layer")["value"]
    assert inc["stage1.1"] == pytest.approx(0.0, abs=1e-14)
    with torch.no_grad():
        full = float(F.cross_entropy(cnn(x), y))
        swapped = copy.deepcopy(cnn)
        swapped.stages[1][1] = nn.Identity()  # same shape in and out: skipping == removing it
        assert inc["stage2.1"] == pytest.approx(float(F.cross_entropy(swapped(x), y)) - full, rel=1e-9)
        assert abs(inc["stage2.1"]) > 1e-8
        # stage2.0 downsamples: skipping keeps the projection path relu(norm(conv1x1_stride2(x)))
        proj = copy.deepcopy(cnn)
        block = proj.stages[1][0]
        conv, norm = block.skip
        strided = nn.Conv2d(conv.in_channels, conv.out_channels, 1, stride=2, bias=False).double()
        strided.weight.copy_(conv.weight)
        proj.stages[1][0] = nn.Sequential(strided, norm, nn.ReLU())
        assert inc["stage2.0"] == pytest.approx(float(F.cross_entropy(proj(x), y)) - full, rel=1e-9)


# --------------------------------------------------------------------------------------------- Hessian
def _exact_top_eigenvalue(model, loss_of_output):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(flat):
        chunks, i = {}, 0
        for n, s in zip(names, shapes):
            k = math.prod(s)
            chunks[n] = flat[i:i + k].view(s)
            i += k
        return loss_of_output(torch.func.functional_call(model, chunks, ()))

    h = torch.autograd.functional.hessian(f, flat0).numpy()
    return np.linalg.eigvalsh((h + h.T) / 2)


def test_hessian_top_eigenvalue_matches_the_exact_hessian():
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randint(0, 2, (16,))
    mlp = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()

    class Fixed(nn.Module):  # the MLP on a fixed batch, so functional_call needs no inputs
        def __init__(self):
            super().__init__()
            self.net = mlp

        def forward(self):
            return self.net(x)

    wrapped = Fixed()
    eig = _exact_top_eigenvalue(wrapped, lambda out: F.cross_entropy(out, y))
    got = dynamics.hessian_top_eigenvalue(mlp, dynamics.cross_entropy_loss(x, y), tol=1e-10, max_iter=5000)
    assert bool(got["converged"].item())
    assert got["value"].item() == pytest.approx(eig.max(), rel=1e-6)
    again = dynamics.hessian_top_eigenvalue(mlp, dynamics.cross_entropy_loss(x, y), tol=1e-10, max_iter=5000)
    assert again["value"].item() == got["value"].item()  # seeded start vector: deterministic


def test_hessian_top_eigenvalue_when_the_dominant_eigenvalue_is_negative():
    a = np.diag([-5.0, 1.0, 2.0])  # dominant (largest magnitude) -5, top 2
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    a = torch.as_tensor(q @ a @ q.T)

    class Quadratic(nn.Module):
        def __init__(self):
            super().__init__()
            self.theta = nn.Parameter(torch.ones(3, dtype=torch.float64))

    model = Quadratic()
    got = dynamics.hessian_top_eigenvalue(model, lambda m: 0.5 * m.theta @ a @ m.theta, tol=1e-12, max_iter=2000)
    assert got["value"].item() == pytest.approx(float(np.linalg.eigvalsh(a.numpy()).max()), rel=1e-6)


# --------------------------------------------------------------------------------------------- EL2N / GraNd
@pytest.fixture(scope="module")
def gmm():
    return wb_data.load("gaussian-mixture", n_train=40, n_test=10, n_ood=0, dim=6, latent_dim=3, seed=0)


def _mlps(gmm, n=2):
    out = []
    for s in range(n):
        torch.manual_seed(s)
        out.append(models.build("mlp", input_shape=(6,), num_classes=gmm.num_classes, hidden=(8,)))
    return out


def test_el2n_matches_numpy(gmm):
    mlps = _mlps(gmm)
    x, y = gmm["train"].inputs, gmm["train"].labels
    refs = []
    for m in mlps:
        with torch.no_grad():
            z = m(torch.as_tensor(x, dtype=torch.float32)).double().numpy()
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        refs.append(np.linalg.norm(p - np.eye(gmm.num_classes)[y], axis=1))
    np.testing.assert_allclose(dynamics.el2n(z, y), refs[-1], rtol=1e-12)
    got = dynamics.el2n_scores(mlps, gmm["train"])
    np.testing.assert_allclose(got["value"], np.mean(refs, 0), rtol=1e-5)
    np.testing.assert_allclose(got["std"], np.std(refs, 0, ddof=1), rtol=1e-4, atol=1e-7)
    assert (got["n_models"] == 2).all() and list(got["example"]) == list(range(len(y)))


def test_el2n_and_cross_entropy_refuse_bad_input_naming_it(gmm):
    z = np.random.default_rng(0).normal(size=(6, 3))
    y = np.array([0, 1, 2, 0, 1, 2])
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    ref = np.linalg.norm(p - np.eye(3)[y], axis=1)
    np.testing.assert_allclose(dynamics.el2n(z.astype(object), y), ref, rtol=1e-12)  # numbers as objects
    for bad in (float("nan"), float("inf")):
        zb = z.copy()
        zb[2, 1] = bad
        with pytest.raises(ValueError, match=r"logits contains 1 NaN/Inf value\(s\) \(first rows: \[2\]\)"):
            dynamics.el2n(zb, y)
    for bad in (z.astype(str), "logits", None, np.array([["a", 1.0]], dtype=object)):
        with pytest.raises(TypeError, match=r"^logits must"):
            dynamics.el2n(bad, y[:len(bad)] if isinstance(bad, np.ndarray) else y)
    with pytest.raises(ValueError, match="logits must be"):
        dynamics.el2n(z[:0], y[:0])
    # a diverged model: named, not averaged into NaN scores
    broken = models.build("mlp", input_shape=(6,), num_classes=gmm.num_classes, hidden=(8,))
    with torch.no_grad():
        next(broken.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match=r"models\[1\]'s logits contains"):
        dynamics.el2n_scores([_mlps(gmm, 1)[0], broken], gmm["train"])

    x = torch.randn(4, 6)
    model = nn.Linear(6, 3)
    with torch.no_grad():
        want = F.cross_entropy(model(x), torch.tensor([0, 2, 1, 2]))
    got = dynamics.cross_entropy_loss(x, np.array([0, 2, 1, 2], dtype=object))(model)  # ids as objects
    assert float(got.detach()) == pytest.approx(float(want), rel=1e-6)
    for bad in ("labels", None, np.array(["0", "2", "1", "2"]), np.array([0.5, 1, 2, 0])):
        with pytest.raises(TypeError, match="labels"):
            dynamics.cross_entropy_loss(x, bad)
    with pytest.raises(ValueError, match=r"labels must be class ids 0\.\.C-1 .*got -1"):
        dynamics.cross_entropy_loss(x, [0, -1, 1, 2])
    with pytest.raises(ValueError, match=r"labels must be class ids in 0\.\.2 .*got 3"):
        dynamics.cross_entropy_loss(x, [0, 3, 1, 2])(model)


@pytest.mark.parametrize("method", ["vmap", "loop"])
def test_grand_matches_a_per_example_backward_loop(gmm, method):
    mlps = _mlps(gmm)
    x = torch.as_tensor(gmm["train"].inputs, dtype=torch.float32)
    y = torch.as_tensor(gmm["train"].labels)
    refs = []
    for m in mlps:
        row = []
        for i in range(len(x)):
            m.zero_grad()
            F.cross_entropy(m(x[i:i + 1]), y[i:i + 1]).backward()
            row.append(math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in m.parameters())))
        refs.append(row)
    got = dynamics.grand_scores(mlps, gmm["train"], chunk_size=7, method=method)
    np.testing.assert_allclose(got["value"], np.mean(refs, 0), rtol=1e-5)


def test_grand_on_a_token_classifier_with_padding(lang):
    torch.manual_seed(0)
    model = models.build("transformer", vocab_size=len(lang.vocab), num_classes=2, task="classify", dim=8,
                         depth=1, heads=2, max_len=12)
    part = lang["test"].subset(slice(0, 6))
    tokens, mask, y = (torch.as_tensor(a) for a in (part.inputs, part.attention_mask, part.labels))
    ref = []
    for i in range(len(y)):
        model.zero_grad()
        F.cross_entropy(model(tokens[i:i + 1], attention_mask=mask[i:i + 1]), y[i:i + 1]).backward()
        ref.append(math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in model.parameters())))
    got = dynamics.grand_scores(model, part, method="auto", chunk_size=4)
    np.testing.assert_allclose(got["value"], ref, rtol=1e-4)


# --------------------------------------------------------------------------------------------- runs
TINY_CLM = RunConfig(dataset="tiny-language",
                     dataset_options={"n_train": 32, "n_test": 16, "n_ood": 0, "max_len": 12, "max_depth": 1},
                     model="transformer", model_options={"dim": 8, "depth": 2, "heads": 2}, objective="clm",
                     steps=2, batch_size=16, checkpoints=1, recorders=("grad_norm",))


def test_run_loss_and_over_checkpoints(tmp_path):
    from workbench.train import train

    cfg = TINY_CLM
    run = train(cfg, tmp_path, progress=False)
    ds = wb_data.load(cfg.dataset, **cfg.dataset_options)
    model = run.load_model()
    tokens, mask = torch.as_tensor(ds["test"].inputs[:10]), torch.as_tensor(ds["test"].attention_mask[:10])
    with torch.no_grad():
        assert float(dynamics.run_loss(run, model, n=10)(model)) == pytest.approx(
            float(_clm_loss_by_hand(model, tokens, mask)), rel=1e-6)
    table = dynamics.over_checkpoints(run, lambda m: dynamics.layer_skip_loss(m, dynamics.run_loss(run, m, n=10)))
    assert sorted(table["step"].unique()) == run.checkpoints() == [0, 1, 2]
    assert list(table.columns) == list(COLUMNS) and set(table["run"]) == {run.name}
    hist = dynamics.grad_norm_history(run)
    assert sorted(hist["step"].unique()) == [1, 2] and list(hist["layer"].unique())[:2] == ["embed", "layer1"]

    mlm = cfg.replace(objective="mlm", model_options={"dim": 8, "depth": 2, "heads": 2, "causal": False})
    mrun = train(mlm, tmp_path, progress=False)
    m = mrun.load_model()
    loss = dynamics.run_loss(mrun, m, n=10, seed=3)
    state = torch.random.get_rng_state()
    with torch.no_grad():
        assert float(loss(m)) == float(loss(m))  # the same masks on every call
    assert torch.equal(torch.random.get_rng_state(), state)  # caller's RNG untouched


# --------------------------------------------------------------------------------------------- results schema
def test_every_dynamics_table_is_in_the_results_schema(lang, gmm):
    from workbench.results import check_tidy

    model = _lm(lang, depth=2)
    tokens, mask = _batch(lang, 8)
    loss = lambda m: _clm_loss_by_hand(m, tokens, mask)  # noqa: E731
    mlps = _mlps(gmm)
    order = {name: i for i, name in enumerate(probe_points(model))}
    tables = {"layer_grad_norms": dynamics.layer_grad_norms(model, loss),
              "output_variance": dynamics.output_variance(model, lang["test"].subset(slice(0, 8))),
              "layer_angular_distance": dynamics.layer_angular_distance(model, lang["test"].subset(slice(0, 8)),
                                                                        layers=r"^(embed|layer\d+)$"),
              "layer_skip_loss": dynamics.layer_skip_loss(model, loss),
              "hessian_top_eigenvalue": dynamics.hessian_top_eigenvalue(mlps[0], dynamics.cross_entropy_loss(
                  torch.as_tensor(gmm["train"].inputs[:8]), gmm["train"].labels[:8]), max_iter=500),
              "el2n_scores": dynamics.el2n_scores(mlps, gmm["train"]),
              "grand_scores": dynamics.grand_scores(mlps, gmm["train"].subset(slice(0, 4)))}
    for name, table in tables.items():
        check_tidy(table, name)
        assert list(table.columns[:len(COLUMNS)]) == list(COLUMNS), name
        assert table[["run", "step", "split", "ci_low", "ci_high"]].isna().all(axis=None), name  # bare model
        per_layer = table[table["layer"].notna()]
        assert (per_layer["layer_index"] == per_layer["layer"].map(order)).all(), name
    assert list(tables["el2n_scores"].columns[len(COLUMNS):]) == ["example", "std", "n_models"]
    assert list(tables["hessian_top_eigenvalue"].columns[len(COLUMNS):]) == ["iterations", "converged"]


# --------------------------------------------------------------------------------------------- bad input
def test_bad_input_is_named(lang, gmm):
    model = _lm(lang)
    tokens, mask = _batch(lang)
    loss = lambda m: _clm_loss_by_hand(m, tokens, mask)  # noqa: E731
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        dynamics.layer_grad_norms("model", loss)
    with pytest.raises(TypeError, match="loss must be a callable"):
        dynamics.layer_skip_loss(model, 3.0)
    with pytest.raises(TypeError, match="scalar torch tensor"):
        dynamics.layer_grad_norms(model, lambda m: m(tokens))
    with pytest.raises(ValueError, match="tol must be"):
        dynamics.hessian_top_eigenvalue(model, loss, tol=0)
    with pytest.raises(ValueError, match="max_iter must be an integer >= 1"):
        dynamics.hessian_top_eigenvalue(model, loss, max_iter=0)
    with pytest.raises(ValueError, match="same shape"):
        dynamics.angular_distance(np.ones((3, 2)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="zero norm"):
        dynamics.angular_distance(np.zeros((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="at least two"):
        dynamics.layer_angular_distance(model, lang["test"], layers=["layer1"])
    with pytest.raises(ValueError, match="position="):
        dynamics.layer_angular_distance(model, lang["test"], position="first")
    with pytest.raises(TypeError, match="blocks must be"):
        dynamics.layer_skip_loss(model, loss, blocks="layer1")
    mlp = models.build("mlp", input_shape=(6,), num_classes=gmm.num_classes, hidden=(8, 8))
    with pytest.raises(ValueError, match="no Transformer Block or ResBlock"):
        dynamics.layer_skip_loss(mlp, dynamics.cross_entropy_loss(torch.randn(4, 6), [0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"output has their input's shape|input's shape"):
        dynamics.layer_skip_loss(mlp, dynamics.cross_entropy_loss(torch.randn(4, 6), [0, 1, 0, 1]), blocks=["fc1"])
    with pytest.raises(ValueError, match="labels has 3 entries"):
        dynamics.el2n(np.zeros((4, 2)), [0, 1, 0])
    with pytest.raises(ValueError, match=r"class ids in 0\.\.1"):
        dynamics.el2n(np.zeros((2, 2)), [0, 2])
    with pytest.raises(TypeError, match="models must be a non-empty list"):
        dynamics.el2n_scores([], gmm["train"])
    with pytest.raises(ValueError, match="GraNd needs a classifier"):
        dynamics.grand_scores(model, lang["test"], labels=np.zeros(len(lang["test"]), dtype=int))
    with pytest.raises(ValueError, match="params must be parameters of the model"):
        dynamics.grand_scores(mlp, gmm["train"], params=[nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="method="):
        dynamics.grand_scores(mlp, gmm["train"], method="fast")
    with pytest.raises(ValueError, match="cross_entropy_loss needs classifier logits"):
        dynamics.layer_grad_norms(model, dynamics.cross_entropy_loss(tokens, np.zeros(len(tokens), dtype=int)))


def test_grand_over_a_parameter_subset(gmm):
    model = _mlps(gmm, 1)[0]
    x = torch.as_tensor(gmm["train"].inputs[:9], dtype=torch.float32)
    y = torch.as_tensor(gmm["train"].labels[:9])
    ref = []
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        ref.append(math.sqrt(float((model.head.weight.grad ** 2).sum() + (model.head.bias.grad ** 2).sum())))
    got = dynamics.grand_scores(model, gmm["train"].subset(slice(0, 9)), params=list(model.head.parameters()))
    np.testing.assert_allclose(got["value"], ref, rtol=1e-5)

"""Transfer mechanics (workbench.mechanics, Neyshabur, Sedghi & Zhang 2020) and the public fine-tune.

Known answers: identical endpoints give a flat path and zero barrier; θ(α) is recomputed here from a hand-mixed
state dict; barrier heights of hand-written paths; block shuffles checked against a loop over blocks written here;
criticality of hand-built networks (rewinding to itself: no change; zeroing the head: accuracy = share of class 0,
loss = log 2; re-randomizing the only layer that reads the signal: chance).
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench import data as wb_data
from workbench.mechanics import (RANDOM_INIT, barrier, block_shuffle, default_block_sizes, interpolate,
                                 module_criticality, module_path, path_criticality, shuffle_transfer)
from workbench.models import build
from workbench.results import COLUMNS, tidy
from workbench.train import finetune, train
from workbench.train.downstream import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")

FT = {"steps": 6, "batch_size": 64, "lr": 1e-3, "head_lr": 1e-2}


@pytest.fixture(scope="module")
def shapes():
    return wb_data.load("shapes", n_train=256, n_test=96, n_ood=0, size=16)


def _cnn(seed, norm="batch"):
    torch.manual_seed(seed)
    return build("cnn", input_shape=(3, 16, 16), num_classes=6, width=4, depth=2, norm=norm)


def _logits(net, head, x):
    """Logits of a fine-tuned (net, head), written out: head(net.embed(x)) in eval mode."""
    net.eval()
    with torch.no_grad():
        return head(net.embed(torch.as_tensor(x)))


def _ce_and_acc(logits, y):
    y = torch.as_tensor(y, dtype=torch.long)
    return float(F.cross_entropy(logits.double(), y)), float((logits.argmax(1) == y).double().mean())


# ------------------------------------------------------------------------------------------ finetune
def test_finetune_reproduces_evaluates_finetune_accuracy(tmp_path):
    cfg = dict(dataset="shapes", dataset_options={"n_train": 64, "n_test": 32, "n_ood": 32, "size": 16}, model="cnn",
               model_options={"width": 4, "depth": 2}, steps=3, batch_size=16, checkpoints=1, lr=1e-3)
    run = train(cfg, tmp_path, progress=False)
    table = evaluate(run, methods=["finetune"], finetune={"steps": 4}, seed=3, device="cpu")
    ds = wb_data.load("shapes", **cfg["dataset_options"])
    model = run.load_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net, head = finetune(model, ds, settings={"steps": 4}, seed=3, device="cpu")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model itself is untouched
    assert not net.training and head.out_features == 6
    for split in ("test", "ood"):
        _, acc = _ce_and_acc(_logits(net, head, ds[split].inputs), ds[split].labels)
        assert acc == table[(table.split == split) & (table.measure == "accuracy")]["value"].item()
    # another seed trains another head
    _, head2 = finetune(model, ds, settings={"steps": 4}, seed=4, device="cpu")
    assert not torch.equal(head.weight, head2.weight)


def test_finetune_rejects_bad_arguments(shapes):
    model = _cnn(0)
    with pytest.raises(ValueError, match=r"\bsettings\b.*lr"):
        finetune(model, shapes, settings={"lr": -1.0})
    with pytest.raises(ValueError, match=r"\bsettings\b.*unknown"):
        finetune(model, shapes, settings={"learning_rate": 1e-3})
    with pytest.raises(ValueError, match=r"\bindex\b"):
        finetune(model, shapes, index=[0, 10_000])
    with pytest.raises(TypeError, match=r"\bdataset\b"):
        finetune(model, shapes["train"].inputs)
    with pytest.raises(ValueError, match=r"\bseed\b"):
        finetune(model, shapes, seed=-1)


# ------------------------------------------------------------------------------------------ connectivity
def test_identical_endpoints_give_a_flat_path_and_zero_barrier(shapes):
    net, head = finetune(_cnn(0), shapes, settings=FT, seed=0, device="cpu")  # BatchNorm: recomputed per alpha
    table = interpolate(net, copy.deepcopy(net), shapes, head_a=head, head_b=copy.deepcopy(head),
                        names=("ft", "ft-copy"))
    assert list(table.columns)[:len(COLUMNS)] == list(COLUMNS) and "mix" in table.columns
    assert sorted(set(table["mix"])) == pytest.approx(np.linspace(0, 1, 11).tolist())
    assert set(table["run"]) == {"ft"} and set(table["run_b"]) == {"ft-copy"} and set(table["split"]) == {"test"}
    for measure in ("loss", "accuracy"):
        values = table[table.measure == measure]["value"].to_numpy()
        assert len(values) == 11 and np.ptp(values) <= 1e-6
    for reference in ("linear", "mean"):
        b = barrier(table, reference=reference)
        assert set(b["measure"]) == {"loss_barrier", "error_barrier"}
        assert np.abs(b["value"].to_numpy()).max() <= 1e-6


def _manual_mix(net_a, head_a, net_b, head_b, alpha, template):
    """θ(α) by hand: every floating tensor of the two state dicts mixed, loaded into a copy of ``template``."""
    sa, sb = net_a.state_dict(), net_b.state_dict()
    net = copy.deepcopy(template)
    net.load_state_dict({k: ((1 - alpha) * sa[k] + alpha * sb[k]) if sa[k].is_floating_point() else sa[k]
                         for k in sa})
    head = copy.deepcopy(head_a)
    head.weight.data = (1 - alpha) * head_a.weight.data + alpha * head_b.weight.data
    head.bias.data = (1 - alpha) * head_a.bias.data + alpha * head_b.bias.data
    return net, head


def test_midpoint_loss_matches_a_hand_mixed_state_dict(shapes):
    test = shapes["test"]
    # without BatchNorm: θ(0.5) is the plain average of the weights
    pre = _cnn(1, norm="group")
    (na, ha), (nb, hb) = (finetune(pre, shapes, settings=FT, seed=s, device="cpu") for s in (1, 2))
    table = interpolate(na, nb, test, head_a=ha, head_b=hb, alphas=[0.0, 0.5, 1.0], split="test")
    net, head = _manual_mix(na, ha, nb, hb, 0.5, na)
    loss, acc = _ce_and_acc(_logits(net, head, test.inputs), test.labels)
    got = table[table.mix == 0.5].set_index("measure")["value"]
    assert got["loss"] == pytest.approx(loss, rel=1e-5) and got["accuracy"] == pytest.approx(acc, abs=1e-12)
    for alpha, model, h in ((0.0, na, ha), (1.0, nb, hb)):  # the endpoints are the networks themselves
        end_loss, _ = _ce_and_acc(_logits(model, h, test.inputs), test.labels)
        assert table[(table.mix == alpha) & (table.measure == "loss")]["value"].item() == \
            pytest.approx(end_loss, rel=1e-5)
    # with BatchNorm: mixed weights, then running statistics re-estimated on the training images (one batch)
    pre = _cnn(2)
    (na, ha), (nb, hb) = (finetune(pre, shapes, settings=FT, seed=s, device="cpu") for s in (1, 2))
    table = interpolate(na, nb, shapes, head_a=ha, head_b=hb, alphas=[0.0, 0.5, 1.0])
    net, head = _manual_mix(na, ha, nb, hb, 0.5, na)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(torch.as_tensor(shapes["train"].inputs))
    loss, acc = _ce_and_acc(_logits(net, head, test.inputs), test.labels)
    got = table[table.mix == 0.5].set_index("measure")["value"]
    assert got["loss"] == pytest.approx(loss, rel=1e-5) and got["accuracy"] == pytest.approx(acc, abs=1e-12)
    with pytest.warns(UserWarning, match="BatchNorm"):
        interpolate(na, nb, shapes, head_a=ha, head_b=hb, alphas=[0.0, 1.0], batchnorm="interpolate")


def test_barrier_of_hand_written_paths():
    alphas = [0.0, 1 / 3, 2 / 3, 1.0]
    rows = [{"run": "a", "run_b": "b", "split": "test", "measure": "loss", "mix": a, "value": v}
            for a, v in zip(alphas, [1.0, 3.0, 2.0, 2.0])]
    rows += [{"run": "a", "run_b": "b", "split": "test", "measure": "accuracy", "mix": a, "value": v}
             for a, v in zip(alphas, [0.9, 0.8, 0.3, 0.6])]
    table = tidy(rows)
    lin = barrier(table).set_index("measure")
    # loss: max(0, 3 - (1 + 1/3), 2 - (1 + 2/3), 0) = 5/3 at alpha 1/3
    assert lin.loc["loss_barrier", "value"] == pytest.approx(5 / 3) and lin.loc["loss_barrier", "mix"] == alphas[1]
    # error 0.1, 0.2, 0.7, 0.4: line 0.1 + 0.3 alpha -> excess 0, 0, 0.4, 0 -> 0.4 at alpha 2/3
    assert lin.loc["error_barrier", "value"] == pytest.approx(0.4) and lin.loc["error_barrier", "mix"] == alphas[2]
    mean = barrier(table, reference="mean").set_index("measure")
    assert mean.loc["loss_barrier", "value"] == pytest.approx(3.0 - 1.5)
    assert mean.loc["error_barrier", "value"] == pytest.approx(0.7 - 0.25)
    with pytest.raises(ValueError, match="alpha 0 and 1"):
        barrier(table[table.mix < 1])


def test_interpolate_rejects_bad_arguments(shapes):
    a, b = _cnn(0, norm=None), _cnn(1, norm=None)
    test = shapes["test"]
    with pytest.raises(ValueError, match=r"\balphas\b"):
        interpolate(a, b, test, alphas=[0.5])
    with pytest.raises(ValueError, match=r"\bmetric\b"):
        interpolate(a, b, test, metric="f1")
    with pytest.raises(ValueError, match=r"\bmodel_b\b"):
        interpolate(a, build("cnn", input_shape=(3, 16, 16), num_classes=6, width=8, depth=2, norm=None), test)
    with pytest.raises(ValueError, match=r"\bhead_a\b"):
        interpolate(a, b, test, head_b=nn.Linear(8, 6))
    with pytest.raises(ValueError, match=r"\btrain_data\b"):
        interpolate(_cnn(0), _cnn(1), test)  # BatchNorm, a bare split: nothing to recompute the statistics on
    with pytest.raises(ValueError, match=r"\bbatchnorm\b"):
        interpolate(a, b, test, batchnorm="reset")
    with pytest.raises(ValueError, match=r"\bdata\b"):
        interpolate(a, b, wb_data.Split(inputs=test.inputs))


# ------------------------------------------------------------------------------------------ block shuffle
def _reference_shuffle(img, b, perm):
    """Loop over blocks: output block j (row-major) is input block perm[j]."""
    out = np.empty_like(img)
    gw = img.shape[-1] // b
    for j, src in enumerate(perm):
        (r, c), (rs, cs) = divmod(j, gw), divmod(int(src), gw)
        out[..., r * b:(r + 1) * b, c * b:(c + 1) * b] = img[..., rs * b:(rs + 1) * b, cs * b:(cs + 1) * b]
    return out


def test_block_shuffle_known_answers(shapes):
    x = shapes["train"].inputs[:5]
    same, perm = block_shuffle(x, 16, seed=3)
    assert np.array_equal(same, x) and perm.tolist() == [0]  # one block: the identity
    pix, perm = block_shuffle(x, 1, seed=3)
    assert sorted(perm.tolist()) == list(range(256)) and not np.array_equal(perm, np.arange(256))
    assert np.array_equal(pix.reshape(5, 3, 256), x.reshape(5, 3, 256)[:, :, perm])  # a pixel permutation
    for b, per in ((2, "dataset"), (4, "image"), (8, "dataset")):
        y, perm = block_shuffle(x, b, seed=7, per=per)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert np.array_equal(np.sort(y.reshape(5, -1), 1), np.sort(x.reshape(5, -1), 1))  # same pixel multiset
        perms = np.broadcast_to(perm, (5, (16 // b) ** 2))
        for i in range(5):
            assert np.array_equal(y[i], _reference_shuffle(x[i], b, perms[i]))
            assert np.array_equal(_reference_shuffle(y[i], b, np.argsort(perms[i])), x[i])  # the inverse
        yt, perm_t = block_shuffle(torch.as_tensor(x), b, seed=7, per=per)  # torch in, torch out, same result
        assert isinstance(yt, torch.Tensor) and np.array_equal(yt.numpy(), y) and np.array_equal(perm_t, perm)
    per_image = block_shuffle(x, 4, seed=1, per="image")[1]
    assert per_image.shape == (5, 16) and len({tuple(p) for p in per_image}) > 1
    gray, _ = block_shuffle(x[:, 0], 4, seed=2)  # [N, H, W]: the same moves as a one-channel image
    assert np.array_equal(gray, block_shuffle(x[:, :1], 4, seed=2)[0][:, 0])
    assert default_block_sizes(16, 16) == [1, 2, 4, 8, 16] and default_block_sizes(12, 8) == [1, 2, 4]
    with pytest.raises(ValueError, match=r"\bblock_size\b"):
        block_shuffle(x, 3)
    with pytest.raises(ValueError, match=r"\bblock_size\b"):
        block_shuffle(x, 0)
    with pytest.raises(ValueError, match=r"\bimages\b"):
        block_shuffle(x[0, 0, 0], 1)
    with pytest.raises(ValueError, match=r"\bper\b"):
        block_shuffle(x, 2, per="batch")


def test_shuffle_transfer_matches_finetunes_on_hand_shuffled_data(shapes):
    pre = _cnn(5, norm=None)
    table = shuffle_transfer(pre, shapes, block_sizes=[1, 16], settings=FT, seeds=[2], device="cpu")
    assert set(table["run"]) == {"pretrained", RANDOM_INIT} and set(table["block_size"]) == {1, 16}
    assert set(table["split"]) == {"test"} and set(table["measure"]) == {"accuracy", "loss"}
    assert (table["method"] == "finetune").all() and (table["seed"] == 2).all()
    test = shapes["test"]

    def expect(model, perm):
        ds = wb_data.Dataset("p", "image", {s: wb_data.Split(inputs=np.ascontiguousarray(
            shapes[s].inputs.reshape(len(shapes[s]), 3, 256)[:, :, perm].reshape(-1, 3, 16, 16)),
            labels=shapes[s].labels) for s in ("train", "test")})
        net, head = finetune(model, ds, settings=FT, seed=2, device="cpu")
        return _ce_and_acc(_logits(net, head, ds["test"].inputs), test.labels)

    torch.manual_seed(2)  # the documented random init: the spec rebuilt after torch.manual_seed(seed)
    random = build(**pre.spec)
    pixel_perm = np.random.default_rng([2, 1]).permutation(256)  # documented: default_rng([seed, b])
    for label, model in (("pretrained", pre), (RANDOM_INIT, random)):
        for b, perm in ((16, np.arange(256)), (1, pixel_perm)):
            loss, acc = expect(model, perm)
            got = table[(table.run == label) & (table.block_size == b)].set_index("measure")["value"]
            assert got["accuracy"] == pytest.approx(acc, abs=1e-12), (label, b)
            assert got["loss"] == pytest.approx(loss, rel=1e-5), (label, b)
    with pytest.raises(ValueError, match=r"\bblock_sizes\b"):
        shuffle_transfer(pre, shapes, block_sizes=[3])
    with pytest.raises(ValueError, match=r"\bseeds\b"):
        shuffle_transfer(pre, shapes, seeds=[])
    with pytest.raises(TypeError, match=r"\brun_or_model\b"):
        shuffle_transfer("model", shapes)


# ------------------------------------------------------------------------------------------ criticality
def _signal_net():
    """x = (signal, huge noise); fc1 reads only the signal (relu(x0), relu(-x0)), the head compares the two."""
    net = build("mlp", input_shape=(2,), num_classes=2, hidden=(2,))
    with torch.no_grad():
        fc1 = net.hidden[0][0]
        fc1.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        fc1.bias.zero_()
        net.head.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))  # class 1 iff relu(x0) > relu(-x0)
        net.head.bias.zero_()
    return net


def _signal_data(n=4000):
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(size=n), 1000.0 * rng.normal(size=n)], 1).astype(np.float32)
    return wb_data.Split(inputs=x, labels=(x[:, 0] > 0).astype(np.int64))


def test_module_criticality_known_answers(shapes):
    net, split = _signal_net(), _signal_data()
    y = split.labels
    full = module_criticality(net, None, split, reference=net, mode=["rewind", "reinit"], seed=0)
    assert set(full["layer"]) == {"fc1", "head"} and set(full["method"]) == {"rewind", "reinit"}
    got = full.set_index(["method", "layer", "measure"])["value"]
    # rewinding to the network itself changes nothing
    assert got[("rewind", "fc1", "accuracy_drop")] == 0 and got[("rewind", "head", "accuracy_drop")] == 0
    assert got[("rewind", "fc1", "loss_increase")] == 0
    assert got[("rewind", "fc1", "accuracy")] == 1.0  # the hand-built net is exact: computed from x0 > 0
    assert full.loc[full.layer == "fc1", "layer_index"].eq(0).all()
    # re-randomizing fc1 (the only layer reading the signal; the noise coordinate is 1000x larger): chance
    acc = got[("reinit", "fc1", "accuracy")]
    assert abs(acc - 0.5) < 0.05
    assert got[("reinit", "fc1", "accuracy_drop")] == pytest.approx(1.0 - acc)
    # rewinding the head to a zero head: all logits 0 -> argmax class 0, loss log 2
    zero = _signal_net()
    with torch.no_grad():
        zero.head.weight.zero_()
        zero.head.bias.zero_()
    rew = module_criticality(net, None, split, reference=zero, modules=["head"], mode="rewind")
    r = rew.set_index("measure")["value"]
    assert r["accuracy"] == pytest.approx(float(np.mean(y == 0)), abs=1e-12)
    assert r["loss"] == pytest.approx(math.log(2), rel=1e-12)
    assert r["loss_increase"] == pytest.approx(math.log(2) - got[("rewind", "head", "loss")], rel=1e-9)
    # a backbone with a separate head: modules of the backbone, reinit seeded (same seed, same table)
    ft, head = finetune(_cnn(0), shapes, settings={"steps": 2}, seed=0, device="cpu")
    t1 = module_criticality(ft, head, shapes, modules=["stem", "stage2"], seed=4)
    t2 = module_criticality(ft, head, shapes, modules=["stem", "stage2"], seed=4)
    assert t1.equals(t2) and set(t1["layer"]) == {"stem", "stage2"}
    with pytest.raises(ValueError, match=r"\breference\b"):
        module_criticality(net, None, split, mode="rewind")
    with pytest.raises(ValueError, match=r"\bmodules\b"):
        module_criticality(net, None, split, modules=["fc9"])
    with pytest.raises(ValueError, match=r"\bmode\b"):
        module_criticality(net, None, split, mode="shuffle")
    with pytest.raises(ValueError, match=r"\breference\b"):
        module_criticality(net, None, split, reference=build("mlp", input_shape=(2,), num_classes=2, hidden=(3,)),
                           mode="rewind")


def test_module_path_endpoints_and_distance_by_hand():
    net, split = _signal_net(), _signal_data(400)
    torch.manual_seed(0)
    ref = build("mlp", input_shape=(2,), num_classes=2, hidden=(2,))
    table = module_path(net, None, split, reference=ref, alphas=[0.0, 0.5, 1.0], sigmas=[0.0, 0.01], n_noise=2)
    assert set(table["layer"]) == {"fc1", "head"} and (table["method"] == "path").all()

    def loss_of(fc1_w, fc1_b):
        h = np.maximum(split.inputs.astype(np.float64) @ fc1_w.T + fc1_b, 0)
        logits = h @ net.head.weight.detach().double().numpy().T + net.head.bias.detach().double().numpy()
        logp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
        return -logp[np.arange(len(split)), split.labels].mean(), np.mean(logits.argmax(1) == split.labels)

    w_f, b_f = (t.detach().double().numpy() for t in (net.hidden[0][0].weight, net.hidden[0][0].bias))
    w_r, b_r = (t.detach().double().numpy() for t in (ref.hidden[0][0].weight, ref.hidden[0][0].bias))
    fc1 = table[(table.layer == "fc1") & (table.noise_sd == 0)].set_index(["mix", "measure"])["value"]
    for alpha in (0.0, 0.5, 1.0):
        loss, acc = loss_of((1 - alpha) * w_r + alpha * w_f, (1 - alpha) * b_r + alpha * b_f)
        assert fc1[(alpha, "loss")] == pytest.approx(loss, rel=1e-5) and fc1[(alpha, "accuracy")] == acc
    dist = table[(table.layer == "fc1") & (table.measure == "distance")]["value"].item()
    assert dist == pytest.approx(np.sqrt(((w_f - w_r) ** 2).sum() + ((b_f - b_r) ** 2).sum()), rel=1e-9)
    again = module_path(net, None, split, reference=ref, alphas=[0.0, 0.5, 1.0], sigmas=[0.0, 0.01], n_noise=2)
    assert again.equals(table)  # the noise is seeded
    with pytest.raises(ValueError, match=r"\bsigmas\b"):
        module_path(net, None, split, reference=ref, sigmas=[-1.0])
    with pytest.raises(ValueError, match=r"\balphas\b"):
        module_path(net, None, split, reference=ref, alphas=[1.5])


def test_path_criticality_of_a_hand_written_grid():
    rows = [{"layer": "fc1", "measure": "distance", "value": 3.0}]
    grid = [(1.0, 0.0, 0.1), (1.0, 1.0, 0.4), (0.5, 0.5, 0.3), (0.5, 1.0, 0.9), (0.0, 0.5, 2.0), (0.25, 0.1, 0.2)]
    rows += [{"layer": "fc1", "measure": "loss", "mix": a, "noise_sd": s, "value": v} for a, s, v in grid]
    rows += [{"layer": "fc2", "measure": "distance", "value": 1.0},
             {"layer": "fc2", "measure": "loss", "mix": 1.0, "noise_sd": 0.0, "value": 0.1},
             {"layer": "fc2", "measure": "loss", "mix": 0.0, "noise_sd": 0.0, "value": 0.2}]
    out = path_criticality(tidy(rows), epsilon=0.5).set_index("layer")
    # fc1 admissible: (1, 0) inf, (1, 1) 9, (0.5, 0.5) 9, (0.25, 0.1) 0.0625 * 9 / 0.01 = 56.25 -> 9 (first minimum)
    assert out.loc["fc1", "value"] == pytest.approx(9.0) and out.loc["fc1", "mix"] == 1.0
    assert out.loc["fc2", "value"] == 0.0 and out.loc["fc2", "mix"] == 0.0  # back at its reference: not critical
    only_final = tidy(rows[:1] + [{"layer": "fc1", "measure": "loss", "mix": 1.0, "noise_sd": 0.0, "value": 0.1}])
    assert path_criticality(only_final, epsilon=0.5)["value"].item() == np.inf
    with pytest.raises(ValueError, match=r"\bepsilon\b"):
        path_criticality(tidy(rows), epsilon=0.0)


# ------------------------------------------------------------------------------------------ figures
def test_figures_draw_the_rows_given():
    from workbench.figures import plotted_data
    from workbench.figures import criticality_heatmap, interpolation_curve, shuffle_curve

    path = tidy([{"run": "s1", "run_b": "s2", "split": "test", "measure": m, "mix": a, "value": v}
                 for a, loss, acc in [(0.0, 0.2, 0.9), (0.5, 1.0, 0.5), (1.0, 0.4, 0.8)]
                 for m, v in (("loss", loss), ("accuracy", acc))])
    fig = interpolation_curve(path)
    drawn = plotted_data(fig)
    curve = [t for t in fig.data if t.mode == "lines+markers"]
    assert [list(t.y) for t in curve] == [[0.2, 1.0, 0.4], [0.9, 0.5, 0.8]]
    marks = [t for t in fig.data if t.mode == "lines+text"]
    # loss: chord at 0.5 is 0.3, curve 1.0 -> barrier 0.7; accuracy: chord 0.85, curve 0.5 -> error barrier 0.35
    assert [list(t.y) for t in marks] == [pytest.approx([0.3, 1.0]), pytest.approx([0.85, 0.5])]
    got = drawn[drawn["mark"] == "barrier"].set_index("panel")["value"]
    assert got["loss"] == pytest.approx(0.7) and got["accuracy"] == pytest.approx(0.35)

    rows = [{"run": r, "measure": "accuracy", "split": "test", "value": v, "block_size": b, "seed": s}
            for r, base in (("pretrained", 0.8), ("random-init", 0.5)) for b in (1, 4, 16)
            for s, v in zip((0, 1, 2), (base + 0.01 * b, base, base - 0.02))]
    fig = shuffle_curve(tidy(rows))
    for trace in fig.data:
        sub = [r for r in rows if r["run"] == trace.name]
        for b, y, e in zip(trace.x, trace.y, trace.error_y.array):
            vals = [r["value"] for r in sub if r["block_size"] == b]
            assert y == pytest.approx(np.mean(vals)) and e == pytest.approx(np.std(vals, ddof=1))

    crit = tidy([{"layer": layer, "layer_index": i, "measure": "accuracy_drop", "value": v, "method": m}
                 for m, vals in (("reinit", (0.4, 0.1)), ("rewind", (0.05, 0.0)))
                 for i, (layer, v) in enumerate(zip(("stem", "stage1"), vals))])
    fig = criticality_heatmap(crit)
    assert list(fig.data[0].y) == ["stem", "stage1"] and list(fig.data[0].x) == ["reinit", "rewind"]
    assert np.array_equal(np.asarray(fig.data[0].z, float), [[0.4, 0.05], [0.1, 0.0]])
    with pytest.raises(ValueError, match=r"\bmeasure\b"):
        criticality_heatmap(crit, measure="f1")
    with pytest.raises(ValueError, match=r"\bmeasures\b"):
        interpolation_curve(path, measures="f1")

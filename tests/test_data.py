"""Tests of the built-in dataset sources and adapters against independent computations."""
from __future__ import annotations

import colorsys
import importlib.util
import math
import sys
import types

import numpy as np
import pytest
import torch

import workbench.data as wd
from workbench.data import Dataset, load
from workbench.data.adapters import from_arrays, from_hf_disk, from_torch
from workbench.data.shapes import make_shapes, render_shapes

# ---------------------------------------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------------------------------------

ALL_SHAPES = ("circle", "square", "triangle", "cross", "star", "ring", "ellipse")
# analytic areas in units of scale**2 (scale = circumradius), computed independently of the drawing code
AREA = {
    "circle": math.pi,
    "square": 2.0,
    "triangle": 3 * math.sqrt(3) / 4,
    "cross": 2 * (1.9 * 0.64) - 0.64 ** 2,
    "star": 10 * 0.5 * 1.0 * 0.45 * math.sin(math.pi / 5),
    "ring": math.pi * (1 - 0.55 ** 2),
    "ellipse": math.pi * 0.55,
}


@pytest.fixture(scope="module")
def shapes():
    return make_shapes(n_train=1500, n_test=300, n_ood=600, size=32, seed=3, classes=ALL_SHAPES)


def test_shapes_structure(shapes):
    assert shapes.name == "shapes" and shapes.kind == "image"
    assert list(shapes) == ["train", "test", "ood"]
    assert shapes.class_names == list(ALL_SHAPES)
    for name, n in [("train", 1500), ("test", 300), ("ood", 600)]:
        s = shapes[name]
        assert s.inputs.shape == (n, 3, 32, 32) and s.inputs.dtype == np.float32
        assert s.inputs.min() >= 0 and s.inputs.max() <= 1
        assert s.masks.shape == (n, 32, 32) and s.masks.dtype == np.int64
        assert set(np.unique(s.masks)) <= {0, 1}
        np.testing.assert_array_equal(s.labels, s.factors["shape"])
        assert set(s.factors) == {"shape", "color", "x", "y", "scale", "rotation", "background"}
    for k, info in shapes.factor_info.items():
        assert info["kind"] in ("categorical", "continuous")
        if info["kind"] == "categorical":
            for s in shapes.splits.values():
                assert s.factors[k].dtype == np.int64 and s.factors[k].max() < len(info["values"])
    assert len(shapes.factor_info["color"]["values"]) == 16
    assert shapes.options["seed"] == 3 and shapes.options["classes"] == list(ALL_SHAPES)
    tr = shapes["train"]
    assert len(np.unique(tr.labels)) == len(ALL_SHAPES)
    assert tr.factors["rotation"].min() >= 0 and tr.factors["rotation"].max() < 2 * np.pi
    assert len(make_shapes(n_train=5, n_test=0, n_ood=0).splits) == 1


def test_default_classes_at_least_five():
    ds = load("shapes", n_train=30, n_test=5, n_ood=5)
    assert ds.num_classes >= 5 and ds.input_shape == (3, 32, 32)


def test_mask_equals_pixels_differing_from_background():
    rng = np.random.default_rng(0)
    n = 400
    f = dict(shape=rng.integers(0, 7, n), color=rng.integers(0, 16, n), x=rng.uniform(0.25, 0.75, n),
             y=rng.uniform(0.25, 0.75, n), scale=rng.uniform(0.13, 0.25, n), rotation=rng.uniform(0, 6.28, n),
             background=rng.integers(0, 8, n))
    imgs, masks, bgs = render_shapes(**f, size=24, classes=ALL_SHAPES, rng=np.random.default_rng(1),
                                     return_background=True, chunk=97)
    differs = np.any(imgs != bgs, axis=1)
    np.testing.assert_array_equal(differs, masks.astype(bool))
    assert masks.sum((1, 2)).min() > 0


def test_mask_matches_flat_background_in_dataset(shapes):
    # on flat backgrounds the corner pixel (never covered: objects stay within 0.25 of their centre in
    # [0.25, 0.75]) gives the background colour; exactly the mask pixels differ from it
    for s in (shapes["train"], shapes["test"]):  # ood has only held-out textures
        flat = s.factors["background"] == 0
        assert flat.sum() > 20
        img = s.inputs[flat]
        differs = np.any(img != img[:, :, :1, :1], axis=1)
        np.testing.assert_array_equal(differs, s.masks[flat].astype(bool))


def test_factors_round_trip_from_pixels(shapes):
    s = shapes["train"]
    size = 32
    centres = (np.arange(size) + 0.5) / size
    m = s.masks.astype(float)
    area = m.sum((1, 2))
    cx = (m * centres[None, None, :]).sum((1, 2)) / area
    cy = (m * centres[None, :, None]).sum((1, 2)) / area
    # centroid = position factor (all shapes have their centroid at the centre)
    assert np.max(np.abs(cx - s.factors["x"])) * size < 0.6
    assert np.max(np.abs(cy - s.factors["y"])) * size < 0.6
    # area = analytic area * scale**2 (averaged over a class to beat pixelation)
    for k, name in enumerate(ALL_SHAPES):
        sel = s.labels == k
        ratio = area[sel] / (s.factors["scale"][sel] ** 2 * size ** 2)
        assert abs(ratio.mean() / AREA[name] - 1) < 0.03, name
    # colour of the object pixels = fully saturated HSV hue of the colour code (independent colorsys)
    hues = [k / 8 for k in range(8)] + [(k + 0.5) / 8 for k in range(8)]
    expected = np.array([colorsys.hsv_to_rgb(h, 1.0, 0.95) for h in hues])
    for i in range(0, len(s), 37):
        pix = s.inputs[i][:, s.masks[i].astype(bool)]
        np.testing.assert_allclose(pix, np.repeat(expected[s.factors["color"][i]][:, None], pix.shape[1], 1),
                                   atol=1e-6)


def test_rotation_round_trip_on_ellipses():
    ds = make_shapes(n_train=300, n_test=0, n_ood=0, size=48, seed=1, classes=("ellipse", "circle"))
    s = ds["train"]
    sel = (s.labels == 0) & (s.factors["scale"] > 0.17)
    size = 48
    rows, cols = np.mgrid[0:size, 0:size]
    errs = []
    for i in np.nonzero(sel)[0]:
        r, c = rows[s.masks[i] == 1], cols[s.masks[i] == 1]
        X, Y = c - c.mean(), -(r - r.mean())  # math orientation (y up): CCW on screen is positive
        cov = np.cov(np.stack([X, Y]))
        _w, v = np.linalg.eigh(cov)
        angle = math.atan2(v[1, -1], v[0, -1])  # major axis
        d = (angle - s.factors["rotation"][i]) % math.pi
        errs.append(min(d, math.pi - d))
    assert len(errs) > 50 and np.max(errs) < 0.2


def test_shapes_determinism_and_independent_streams():
    a = make_shapes(n_train=40, n_test=20, n_ood=20, seed=7)
    b = make_shapes(n_train=40, n_test=20, n_ood=20, seed=7)
    c = make_shapes(n_train=40, n_test=20, n_ood=20, seed=8)
    assert a.fingerprint() == b.fingerprint()
    assert not np.array_equal(a["train"].inputs, c["train"].inputs)
    assert not np.array_equal(a["train"].inputs[:20], a["test"].inputs)
    # the test split comes from its own stream: it does not change with n_train
    d = make_shapes(n_train=13, n_test=20, n_ood=20, seed=7)
    np.testing.assert_array_equal(a["test"].inputs, d["test"].inputs)
    np.testing.assert_array_equal(a["ood"].masks, d["ood"].masks)


def _object_hues(split):
    hues = []
    for img, m in zip(split.inputs, split.masks):
        rgb = img[:, m.astype(bool)].mean(1)
        hues.append(colorsys.rgb_to_hsv(*rgb)[0])
    return np.array(hues)


def test_ood_shift_changes_colours_and_backgrounds(shapes):
    tr, ood = shapes["train"], shapes["ood"]
    assert tr.factors["color"].max() < 8 and tr.factors["background"].max() < 4
    assert ood.factors["color"].min() >= 8 and ood.factors["background"].min() >= 4
    # measured from pixels: train hues sit on multiples of 1/8, ood hues halfway between them
    frac = lambda h: np.abs((h * 8) - np.round(h * 8))  # noqa: E731
    assert frac(_object_hues(tr)).max() < 0.02
    assert frac(_object_hues(ood)).min() > 0.48
    # backgrounds differ too: ood textures have far more local contrast than flat/gradient ones
    bg_var = lambda s: np.mean([img[:, m == 0].std() for img, m in zip(s.inputs[:200], s.masks[:200])])  # noqa
    assert bg_var(ood) > 1.2 * bg_var(tr)
    same = make_shapes(n_train=10, n_test=0, n_ood=300, seed=0, ood_shift=0.0)["ood"]
    assert same.factors["color"].max() < 8 and same.factors["background"].max() < 4
    half = make_shapes(n_train=10, n_test=0, n_ood=600, seed=0, ood_shift=0.5)["ood"]
    assert 0.4 < np.mean(half.factors["color"] >= 8) < 0.6
    assert 0.4 < np.mean(half.factors["background"] >= 4) < 0.6
    # factors that are not shifted keep their distribution
    assert abs(ood.factors["scale"].mean() - tr.factors["scale"].mean()) < 0.01


def test_shapes_noise_keeps_masks():
    a = make_shapes(n_train=50, n_test=0, n_ood=0, seed=2)
    b = make_shapes(n_train=50, n_test=0, n_ood=0, seed=2, noise=0.1)
    np.testing.assert_array_equal(a["train"].masks, b["train"].masks)
    np.testing.assert_array_equal(a["train"].factors["color"], b["train"].factors["color"])
    assert 0.03 < np.abs(a["train"].inputs - b["train"].inputs).mean() < 0.1
    assert b["train"].inputs.min() >= 0 and b["train"].inputs.max() <= 1


def test_shapes_at_scale():
    """10 000 images in one call (speed is measured in benchmarks/, not asserted here)."""
    ds = make_shapes(n_train=10_000, n_test=0, n_ood=0, size=32)
    assert len(ds["train"]) == 10_000 and ds["train"].inputs.shape == (10_000, 3, 32, 32)
    assert len(np.unique(ds["train"].labels)) == ds.num_classes


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(n_train=0), ValueError, "n_train"),
    (dict(n_train=2.5), TypeError, "n_train"),
    (dict(classes=("circle", "blob")), ValueError, "blob"),
    (dict(classes=("circle", "circle")), ValueError, "distinct"),
    (dict(classes="circle"), TypeError, "classes"),
    (dict(ood_shift=1.5), ValueError, "ood_shift"),
    (dict(ood_shift=-0.1), ValueError, "ood_shift"),
    (dict(size=4), ValueError, "size"),
    (dict(noise=-1.0), ValueError, "noise"),
    (dict(n_test=-1), ValueError, "n_test"),
])
def test_shapes_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        make_shapes(**{"n_train": 10, "n_test": 2, "n_ood": 2, **kwargs})


def test_load_rejects_unknown_option():
    with pytest.raises(TypeError, match="colour"):
        load("shapes", colour=3)


# ---------------------------------------------------------------------------------------------------------
# mnist1d, digits, gaussian mixture
# ---------------------------------------------------------------------------------------------------------


def test_mnist1d_matches_package_generator_without_touching_global_rng():
    from mnist1d.data import get_dataset_args, make_dataset

    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    ds = load("mnist1d", n_train=800, n_test=200, seed=5)
    assert np.array_equal(np.random.get_state()[1], state), "global numpy RNG must not be touched"
    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = 1000, 0.8, 5
    saved = np.random.get_state()
    try:
        ref = make_dataset(args)
    finally:
        np.random.set_state(saved)
    assert ds.kind == "signal" and ds["train"].inputs.shape == (800, 1, 40)
    assert ds["train"].inputs.dtype == np.float32
    np.testing.assert_allclose(ds["train"].inputs[:, 0], ref["x"], atol=1e-5)
    np.testing.assert_allclose(ds["test"].inputs[:, 0], ref["x_test"], atol=1e-5)
    np.testing.assert_array_equal(ds["train"].labels, ref["y"])
    np.testing.assert_array_equal(ds["train"].labels, ds["train"].factors["digit"])


def test_mnist1d_factors_are_informative():
    ds = load("mnist1d", n_train=1995, n_test=3, seed=0)  # not a multiple of 10
    assert len(ds["train"]) == 1995 and len(ds["test"]) == 3
    f = ds["train"].factors
    assert set(f) == {"digit", "padding", "scale", "translation", "shear"}
    assert f["padding"].min() >= 36 and f["padding"].max() <= 60 and np.all(f["padding"] == np.round(f["padding"]))
    assert f["translation"].min() >= 0 and f["translation"].max() <= 47
    assert f["scale"].min() >= 0.8 and f["scale"].max() <= 1.2
    # shear subtracts a linear trend: the fitted slope of the signal must track the shear factor
    x = ds["train"].inputs[:, 0]
    t = np.linspace(-0.5, 0.5, x.shape[1])
    slope = (x - x.mean(1, keepdims=True)) @ t / (t @ t)
    assert np.corrcoef(slope, f["shear"])[0, 1] < -0.7
    for k in ("padding", "scale", "translation", "shear"):
        assert ds.factor_info[k]["kind"] == "continuous"
    other = load("mnist1d", n_train=1995, n_test=3, seed=1)
    assert not np.array_equal(other["train"].inputs, ds["train"].inputs)
    with pytest.raises(ValueError, match="n_train"):
        load("mnist1d", n_train=0)


def test_digits_stratified_and_complete():
    from sklearn.datasets import load_digits

    ds = load("digits", test_fraction=0.3, seed=1)
    tr, te = ds["train"], ds["test"]
    assert ds.kind == "image" and tr.inputs.shape[1:] == (1, 8, 8) and tr.inputs.dtype == np.float32
    assert len(tr) + len(te) == 1797 and abs(len(te) - 0.3 * 1797) <= 1
    assert tr.inputs.min() == 0 and tr.inputs.max() == 1
    ref = load_digits()
    full = np.concatenate([tr.inputs, te.inputs]).reshape(1797, 64) * 16
    labels = np.concatenate([tr.labels, te.labels])
    key = lambda a, y: sorted(map(tuple, np.column_stack([a, y]).round(4)))  # noqa: E731
    assert key(full, labels) == key(ref.data, ref.target)  # same multiset of (image, label)
    overall = np.bincount(ref.target) / 1797
    assert np.max(np.abs(np.bincount(te.labels, minlength=10) - overall * len(te))) <= 1.5
    assert ds.class_names == [str(i) for i in range(10)]
    assert load("digits", seed=2).fingerprint() != load("digits", seed=1).fingerprint()
    with pytest.raises(ValueError, match="test_fraction"):
        load("digits", test_fraction=1.0)


def test_gaussian_mixture_generative_model_round_trips():
    ds = load("gaussian-mixture", n_train=4000, n_test=2000, n_ood=2000, dim=20, n_classes=3, latent_dim=5,
              separation=2.5, noise=0.5, seed=4)
    o = ds.options
    means, mixing = np.array(o["means"]), np.array(o["mixing"])
    assert means.shape == (3, 5) and mixing.shape == (20, 5)
    np.testing.assert_allclose(mixing.T @ mixing, np.eye(5), atol=1e-10)
    d = np.linalg.norm(means[:, None] - means[None], axis=-1)
    np.testing.assert_allclose(d[~np.eye(3, dtype=bool)], 2.5, rtol=1e-10)
    tr = ds["train"]
    assert ds.kind == "vectors" and tr.inputs.shape == (4000, 20) and tr.inputs.dtype == np.float32
    z = np.stack([tr.factors[f"z{j}"] for j in range(5)], 1).astype(np.float64)
    resid = tr.inputs - z @ mixing.T
    assert abs(resid.std() - 0.5) < 0.02  # observation noise
    for k in range(3):  # latent class means and unit within-class std
        zk = z[tr.labels == k]
        assert np.abs(zk.mean(0) - means[k]).max() < 0.15
        assert abs(zk.std(0).mean() - 1) < 0.06
    # Bayes rule (nearest projected mean) accuracy matches the analytic value for equidistant means
    te = ds["test"]
    proj = te.inputs @ mixing
    pred = np.argmin(((proj[:, None] - means[None]) ** 2).sum(-1), 1)
    acc = (pred == te.labels).mean()
    sigma = math.sqrt(1 + 0.5 ** 2)
    rng = np.random.default_rng(0)  # Monte-Carlo Bayes accuracy from the stored parameters only
    e = rng.standard_normal((200_000, 5)) * sigma
    mc = (np.argmin((((means[0] + e)[:, None] - means[None]) ** 2).sum(-1), 1) == 0).mean()
    assert abs(acc - mc) < 0.03
    # ood: latent offset, larger noise
    ood = ds["ood"]
    zo = np.stack([ood.factors[f"z{j}"] for j in range(5)], 1)
    shift = zo.mean(0) - means[ood.labels].mean(0)
    np.testing.assert_allclose(shift, o["ood_offset"], atol=0.1)
    assert abs(np.linalg.norm(o["ood_offset"]) - 2.5) < 1e-9
    assert abs((ood.inputs - zo @ mixing.T).std() - 1.0) < 0.03
    np.testing.assert_array_equal(tr.labels, tr.factors["class"])


def test_gaussian_mixture_options_and_errors():
    a = load("gaussian-mixture", seed=0, n_train=50, n_test=10, n_ood=0)
    b = load("gaussian-mixture", seed=1, n_train=50, n_test=10, n_ood=0)
    assert "ood" not in a.splits and a.options["means"] != b.options["means"]
    many = load("gaussian-mixture", n_classes=12, latent_dim=3, dim=8, n_train=100)
    m = np.array(many.options["means"])
    d = np.linalg.norm(m[:, None] - m[None], axis=-1)
    assert abs(d[~np.eye(12, dtype=bool)].min() - 3.0) < 1e-9
    with pytest.raises(ValueError, match="latent_dim"):
        load("gaussian-mixture", dim=4, latent_dim=8)
    with pytest.raises(ValueError, match="n_classes"):
        load("gaussian-mixture", n_classes=1)
    with pytest.raises(ValueError, match="separation"):
        load("gaussian-mixture", separation=0)


# ---------------------------------------------------------------------------------------------------------
# tiny language: an independent parser checks grammaticality, agreement and depth
# ---------------------------------------------------------------------------------------------------------

SG_DETS, PL_DETS = {"a", "this", "each", "every"}, {"these", "some", "many", "two"}


class Parser:
    """Recursive descent parser for the documented grammar; number from morphology only."""

    def __init__(self, words, classes):
        self.w, self.c, self.i = words, classes, 0
        self.depth = [None] * len(words)
        self.attractor = False

    def peek(self):
        return self.c[self.i] if self.i < len(self.c) else None

    def take(self, cls, d):
        assert self.peek() == cls, f"expected {cls} at {self.i}: {' '.join(self.w)}"
        self.depth[self.i] = d
        self.i += 1
        return self.w[self.i - 1]

    def noun_number(self, noun):
        return "pl" if noun.endswith("s") else "sg"

    def verb_number(self, verb):
        return "sg" if verb.endswith("s") else "pl"

    def np(self, d):
        det = self.take("det", d)
        while self.peek() == "adj":
            self.take("adj", d)
        noun = self.take("noun", d)
        n = self.noun_number(noun)
        assert det == "the" or (det in SG_DETS and n == "sg") or (det in PL_DETS and n == "pl"), (det, noun)
        self.nouns.append(n)
        if self.peek() == "prep":
            self.take("prep", d + 1)
            self.np(d + 1)
        elif self.peek() == "rel":
            self.take("rel", d + 1)
            if self.peek() in ("iverb", "tverb"):
                self.vp(d + 1, n)
            else:
                n2 = self.np(d + 1)
                verb = self.take("tverb", d + 1)
                assert self.verb_number(verb) == n2, f"object-relative agreement: {' '.join(self.w)}"
        return n

    def vp(self, d, n):
        cls = self.peek()
        verb = self.take(cls, d)
        assert cls in ("iverb", "tverb")
        assert self.verb_number(verb) == n, f"agreement violated at {verb!r}: {' '.join(self.w)}"
        if cls == "tverb":
            self.np(d)

    def sentence(self):
        self.nouns = []
        n = self.np(0)
        between = self.nouns[1:]
        self.vp(0, n)
        assert self.i == len(self.w), "trailing words"
        return n, any(b != n for b in between)


def _check_language_split(ds, split, max_depth_range):
    s = ds[split]
    wc_names = ds.factor_info["word_class"]["values"]
    word_class_of = {}
    for row in range(len(s)):
        L = int(s.attention_mask[row].sum())
        ids = s.inputs[row, :L]
        assert ids[0] == 1 and ids[-1] == 2 and np.all(s.inputs[row, L:] == 0)
        assert np.all(s.attention_mask[row, :L] == 1) and np.all(s.attention_mask[row, L:] == 0)
        for name in ("word_class", "depth", "number"):
            assert np.all(s.factors[name][row, L:] == -1) and np.all(s.factors[name][row, :L] >= 0)
        words = [ds.vocab[t] for t in ids[1:-1]]
        classes = [wc_names[c] for c in s.factors["word_class"][row, 1:L - 1]]
        for t, c in zip(ids[1:-1], classes):
            assert word_class_of.setdefault(int(t), c) == c  # one class per word
        p = Parser(words, classes)
        n, attractor = p.sentence()
        assert s.labels[row] == (0 if n == "sg" else 1)
        assert s.factors["has_attractor"][row] == int(attractor)
        np.testing.assert_array_equal(s.factors["depth"][row, 1:L - 1], p.depth)
        assert s.factors["max_depth"][row] == max(p.depth)
        assert max_depth_range[0] <= max(p.depth) <= max_depth_range[1]
        numbers = ds.factor_info["number"]["values"]
        for w, c, num in zip(words, classes, s.factors["number"][row, 1:L - 1]):
            if c == "noun":
                assert numbers[num] == p.noun_number(w)
            elif c in ("iverb", "tverb"):
                assert numbers[num] == p.verb_number(w)
            elif c in ("prep", "rel"):
                assert numbers[num] == "none"
    return s


def test_tiny_language_grammar_agreement_and_factors():
    ds = load("tiny-language", n_train=1500, n_test=200, n_ood=400, max_len=32, max_depth=3, seed=0)
    assert ds.kind == "tokens" and ds.vocab[:5] == ["<pad>", "<bos>", "<eos>", "<mask>", "<unk>"]
    assert ds.class_names == ["singular", "plural"]
    tr = _check_language_split(ds, "train", (0, 3))
    _check_language_split(ds, "test", (0, 3))
    ood = _check_language_split(ds, "ood", (4, 5))
    assert tr.inputs.shape == (1500, 32) and tr.inputs.dtype == np.int64
    assert ood.inputs.shape[1] == 64
    assert set(np.unique(tr.factors["max_depth"])) == {0, 1, 2, 3}
    assert ood.factors["length"].mean() > tr.factors["length"].mean() + 5
    assert 0.4 < tr.labels.mean() < 0.6
    assert 0.15 < tr.factors["has_attractor"].mean() < 0.6
    np.testing.assert_array_equal(tr.attention_mask, (tr.inputs != 0).astype(np.int64))
    assert not np.isin(tr.inputs, [3, 4]).any()  # <mask>/<unk> never emitted


def test_tiny_language_determinism_and_errors():
    a = load("tiny-language", n_train=100, n_test=20, n_ood=20, seed=3)
    b = load("tiny-language", n_train=100, n_test=20, n_ood=20, seed=3)
    c = load("tiny-language", n_train=100, n_test=20, n_ood=20, seed=4)
    assert a.fingerprint() == b.fingerprint() and a.fingerprint() != c.fingerprint()
    assert load("tiny-language", n_train=50, n_test=0, n_ood=0, max_depth=0)["train"].factors["depth"].max() == 0
    with pytest.raises(ValueError, match="max_len"):
        load("tiny-language", max_len=8, max_depth=3)
    with pytest.raises(ValueError, match="n_train"):
        load("tiny-language", n_train=0)


# ---------------------------------------------------------------------------------------------------------
# templated sentences
# ---------------------------------------------------------------------------------------------------------


def test_sentences_factors_agree_with_text():
    from workbench.data import language as L

    ds = load("sentences", n_train=600, n_test=150, seed=2)
    assert ds.kind == "text" and ds["train"].inputs.dtype == object
    assert ds.class_names == ["past", "present", "future"]
    sg = {s for s, _ in L._SUBJECTS}
    pl = {p for _, p in L._SUBJECTS}
    base = {v[0] for v in L._VERBS}
    third = {v[1] for v in L._VERBS}
    past = {v[2] for v in L._VERBS}
    assert not (past & (base | third))  # no tense-ambiguous verb forms
    pos = set(L._SENT_ADJS[1] + L._SENT_ADVS[1])
    neg = set(L._SENT_ADJS[0] + L._SENT_ADVS[0])
    for split in ds.splits.values():
        f = split.factors
        np.testing.assert_array_equal(split.labels, f["tense"])
        for i, text in enumerate(split.inputs):
            assert isinstance(text, str) and text[0].isupper() and text.endswith(".")
            words = text[:-1].lower().split()
            subj = next(w for w in words if w in sg or w in pl)
            plural = subj in pl
            assert f["subject_number"][i] == int(plural)
            negated = "not" in words
            assert f["negation"][i] == int(negated)
            if "will" in words:
                tense = 2
            elif "did" in words or any(w in past for w in words):
                tense = 0
            else:
                tense = 1
                verb = next(w for w in words if w in {"do", "does"} | base | third)
                if verb in ("do", "does"):
                    assert (verb == "do") == plural
                else:
                    assert (verb in base) == plural, text
            assert f["tense"][i] == tense, text
            npos, nneg = sum(w in pos for w in words), sum(w in neg for w in words)
            assert (npos > 0) != (nneg > 0)
            assert f["sentiment"][i] == int(npos > 0)
            n = len(words)
            assert f["n_words"][i] == n
            assert f["length_bucket"][i] == (0 if n <= 8 else 1 if n <= 11 else 2)
            for w, nxt in zip(words, words[1:]):
                if w == "a":
                    assert nxt[0] not in "aeiou" and nxt != "honest", text
    tr = ds["train"]
    for k, m in [("tense", 3), ("subject_number", 2), ("negation", 2), ("sentiment", 2), ("length_bucket", 3)]:
        counts = np.bincount(tr.factors[k], minlength=m)
        assert counts.min() > len(tr) / m * 0.7, k
    assert len(set(tr.inputs)) > 0.97 * len(tr)
    again = load("sentences", n_train=600, n_test=10, seed=2)
    assert again["train"].inputs.tolist() == tr.inputs.tolist()
    assert again["train"].fingerprint() == tr.fingerprint()
    assert load("sentences", n_train=600, seed=3)["train"].inputs.tolist() != tr.inputs.tolist()


# ---------------------------------------------------------------------------------------------------------
# adapters
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("x, kind", [
    (np.random.rand(6, 3, 4, 4).astype(np.float32), "image"),
    (np.random.rand(6, 2, 10), "signal"),
    (np.random.rand(6, 5), "vectors"),
    (np.random.randint(0, 9, (6, 7)), "tokens"),
    (np.array(["a b", "c", "d", "e", "f", "g"], dtype=object), "text"),
    (torch.rand(6, 5), "vectors"),
])
def test_from_arrays_infers_kind(x, kind):
    ds = from_arrays(x, np.arange(6) % 2)
    assert ds.kind == kind and len(ds["train"]) == 6
    assert ds["train"].inputs.dtype == {"image": np.float32, "signal": np.float32, "vectors": np.float32,
                                        "tokens": np.int64, "text": object}[kind]
    if kind == "tokens":
        assert ds["train"].attention_mask.shape == x.shape


def test_from_arrays_split_keeps_rows_aligned():
    x = np.arange(100, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)
    y = np.array(["cat", "dog"] * 50)
    ds = load("arrays", inputs=torch.from_numpy(x), labels=y, factors={"idx": np.arange(100.0),
                                                                      "colour": np.array(["r", "g"] * 50)},
              test_fraction=0.2, seed=5)
    tr, te = ds["train"], ds["test"]
    assert len(te) == 20 and len(tr) == 80
    assert ds.class_names == ["cat", "dog"]
    for s in (tr, te):
        np.testing.assert_array_equal(s.inputs[:, 0], s.factors["idx"])  # rows stay aligned
        np.testing.assert_array_equal(s.labels, s.inputs[:, 0].astype(int) % 2)
        np.testing.assert_array_equal(s.factors["colour"], 1 - s.inputs[:, 0].astype(int) % 2)  # g=0, r=1
    assert set(tr.inputs[:, 0]).isdisjoint(te.inputs[:, 0])
    assert ds.factor_info["colour"] == {"kind": "categorical", "values": ["g", "r"]}
    assert ds.factor_info["idx"]["kind"] == "continuous"
    again = from_arrays(x, y, test_fraction=0.2, seed=5)
    np.testing.assert_array_equal(again["test"].inputs, te.inputs)
    other = from_arrays(x, y, test_fraction=0.2, seed=6)
    assert not np.array_equal(other["test"].inputs, te.inputs)


def test_from_arrays_separate_test_and_tokens():
    tok = np.array([[5, 6, 0, 0], [7, 8, 9, 0], [5, 5, 5, 5]])
    ds = from_arrays(tok, [0, 1, 0], test_inputs=tok[:2], test_labels=[1, 1], pad_id=0)
    np.testing.assert_array_equal(ds["train"].attention_mask, tok != 0)
    assert ds.kind == "tokens" and len(ds["test"]) == 2
    u8 = np.full((3, 1, 2, 2), 255, np.uint8)
    assert from_arrays(u8)["train"].inputs.max() == 1.0


@pytest.mark.parametrize("call, exc, match", [
    (lambda: from_arrays(np.zeros((5, 3)), np.zeros(4)), ValueError, "inputs has 5.*labels has 4"),
    (lambda: from_arrays(np.array([[1.0, np.nan]])), ValueError, "NaN"),
    (lambda: from_arrays(np.array([[1.0, np.inf]]), kind="vectors"), ValueError, "NaN/Inf"),
    (lambda: from_arrays(np.zeros(5)), ValueError, "kind"),
    (lambda: from_arrays(np.zeros((2, 2, 2, 2, 2))), ValueError, "kind"),
    (lambda: from_arrays(np.zeros((4, 3)), kind="image"), ValueError, "4-D"),
    (lambda: from_arrays(np.full((2, 1, 2, 2), 3.0)), ValueError, r"\[0, 1\]"),
    (lambda: from_arrays(np.zeros((4, 3)), kind="pixels"), ValueError, "kind"),
    (lambda: from_arrays(np.zeros((4, 3)), test_inputs=np.zeros((2, 3)), test_fraction=0.5), ValueError,
     "test_fraction"),
    (lambda: from_arrays(np.zeros((4, 3)), test_fraction=1.5), ValueError, "test_fraction"),
    (lambda: from_arrays(np.zeros((4, 3)), factors={"f": np.zeros(3)}), ValueError, "factors"),
    (lambda: from_arrays(np.zeros((4, 3)), np.array([0.5, 1, 2, 3])), TypeError, "labels"),
    (lambda: from_arrays(np.zeros((4, 3)), [0, 1, 0, 1], test_inputs=np.zeros((2, 3))), ValueError,
     "test_labels"),
    (lambda: from_arrays("abc"), TypeError, "inputs"),
])
def test_from_arrays_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_from_torch_pairs_bare_and_iterable():
    from torch.utils.data import IterableDataset, TensorDataset

    x, y = torch.rand(30, 1, 6, 6), torch.arange(30) % 3
    ds = from_torch(TensorDataset(x, y), test_dataset=TensorDataset(x[:5], y[:5]), max_items=20)
    assert ds.kind == "image" and len(ds["train"]) == 20 and len(ds["test"]) == 5
    np.testing.assert_array_equal(ds["train"].inputs, x[:20].numpy())
    np.testing.assert_array_equal(ds["train"].labels, y[:20].numpy())

    class Bare(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.full((3,), float(i))

    bare = load("torch", dataset=Bare())
    assert bare.kind == "vectors" and bare["train"].labels is None
    np.testing.assert_array_equal(bare["train"].inputs[:, 0], [0, 1, 2, 3])

    class Stream(IterableDataset):
        def __iter__(self):
            for i in range(1000):
                yield np.array([i, i + 1]), i % 2

    st = from_torch(Stream(), max_items=7)
    assert st.kind == "tokens" and len(st["train"]) == 7
    with pytest.raises(TypeError, match="Dataset"):
        from_torch(42)


def test_from_hf_disk_real(tmp_path):
    datasets = pytest.importorskip("datasets")
    d = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": ["a b", "c d", "e"], "label": [0, 1, 0], "w": [1.0, 2.0, 3.0]}),
        "test": datasets.Dataset.from_dict({"text": ["f"], "label": [1], "w": [4.0]})})
    d.save_to_disk(str(tmp_path / "hf"))
    ds = from_hf_disk(str(tmp_path / "hf"))
    assert ds.kind == "text" and len(ds["train"]) == 3 and ds["test"].labels.tolist() == [1]
    np.testing.assert_allclose(ds["train"].factors["w"], [1, 2, 3])


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="datasets is installed")
def test_from_hf_disk_without_datasets_says_how_to_install(tmp_path):
    with pytest.raises(ImportError, match="pip install datasets"):
        from_hf_disk(str(tmp_path))


def test_from_hf_disk_with_stand_in_module(tmp_path, monkeypatch):
    """Exercise the conversion code against a minimal stand-in for the `datasets` API it uses."""

    class FakeDataset:
        def __init__(self, cols, features=None):
            self.cols, self.features = cols, features or {}

        @property
        def column_names(self):
            return list(self.cols)

        def __len__(self):
            return len(next(iter(self.cols.values())))

        def __getitem__(self, col):
            return list(self.cols[col])

    class ClassLabel:
        names = ["neg", "pos"]

    class FakeDict(dict):
        pass

    ids = [[5, 6], [7, 8, 9], [5]]
    saved = FakeDict(train=FakeDataset({"input_ids": ids, "label": [0, 1, 1], "src": ["x", "y", "x"]},
                                       {"label": ClassLabel()}),
                     validation=FakeDataset({"input_ids": [[4]], "label": [0], "src": ["y"]}))
    fake = types.ModuleType("datasets")
    fake.load_from_disk = lambda path: saved
    monkeypatch.setitem(sys.modules, "datasets", fake)
    ds = from_hf_disk(str(tmp_path), splits={"train": "train", "validation": "test"})
    tr = ds["train"]
    assert ds.kind == "tokens" and ds.class_names == ["neg", "pos"] and list(ds) == ["train", "test"]
    np.testing.assert_array_equal(tr.inputs, [[5, 6, 0], [7, 8, 9], [5, 0, 0]])
    np.testing.assert_array_equal(tr.attention_mask, [[1, 1, 0], [1, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(tr.factors["src"], [0, 1, 0])
    with pytest.raises(ValueError, match="input_column"):
        from_hf_disk(str(tmp_path), input_column="pixels")
    with pytest.raises(ValueError, match="available"):
        from_hf_disk(str(tmp_path), splits=["nope"])


# ---------------------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, opts", [
    ("shapes", dict(n_train=20, n_test=5, n_ood=5)),
    ("mnist1d", dict(n_train=50, n_test=10)),
    ("digits", dict()),
    ("gaussian-mixture", dict(n_train=20, n_test=5, n_ood=5)),
    ("tiny-language", dict(n_train=20, n_test=5, n_ood=5)),
    ("sentences", dict(n_train=20, n_test=5)),
    ("arrays", dict(inputs=np.random.rand(8, 3), labels=np.arange(8) % 2)),
])
def test_every_builtin_loads(name, opts):
    ds = load(name, **opts)
    assert isinstance(ds, Dataset) and ds.kind in wd.KINDS
    for split in ds.splits.values():
        for k, v in split.factors.items():
            assert k in ds.factor_info and ds.factor_info[k]["kind"] in ("categorical", "continuous")
            assert len(v) == len(split)
        if ds.kind == "tokens":
            assert split.attention_mask is not None
    repr(ds)

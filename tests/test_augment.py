"""Tests for workbench.train.augment: shapes, determinism, identities, and each op against a direct check
of what it should do to a known input (ramps, impulses, constant and grey images)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workbench.runs import AUGMENTATIONS
from workbench.train.augment import make_augment


pytestmark = pytest.mark.usefixtures("one_thread")

OPS_BY_KIND = {"image": AUGMENTATIONS, "signal": ("crop", "flip", "noise", "blur", "mask"),
               "vectors": ("noise", "mask")}


def _data(kind, n=6, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = {"image": (n, 3, 12, 16), "signal": (n, 2, 40), "signal2d": (n, 40), "vectors": (n, 10)}[kind]
    return torch.rand(shape, generator=g, dtype=dtype)


def _cases():
    for kind, ops in OPS_BY_KIND.items():
        for op in ops:
            yield kind, op
    for op in OPS_BY_KIND["signal"]:
        yield "signal2d", op


CASES = list(_cases())


@pytest.mark.parametrize("kind,op", CASES)
def test_shape_dtype_device_preserved_and_seeded(kind, op):
    k = "signal" if kind == "signal2d" else kind
    for dtype in (torch.float32, torch.float64):
        x = _data(kind, dtype=dtype)
        aug = make_augment([op], 1.0, kind=k)
        torch.manual_seed(3)
        y1 = aug(x)
        torch.manual_seed(3)
        y2 = aug(x)
        assert y1.shape == x.shape and y1.dtype == dtype and y1.device == x.device
        assert torch.isfinite(y1).all()
        torch.testing.assert_close(y1, y2, rtol=0, atol=0)  # same seed -> same output
    torch.manual_seed(4)
    y3 = aug(x)
    if op != "flip":  # a flip can legitimately draw the same decisions for 6 examples
        assert not torch.equal(y1, y3)
    assert not torch.equal(y1, x) or op == "flip"


@pytest.mark.parametrize("kind,op", CASES)
def test_strength_zero_is_identity(kind, op):
    x = _data(kind)
    k = "signal" if kind == "signal2d" else kind
    assert torch.equal(make_augment([op], 0.0, kind=k)(x), x)
    assert torch.equal(make_augment([op], 0.0)(x), x) or kind == "vectors"  # kind inferred
    assert torch.equal(make_augment([], 1.0)(x), x)


def test_full_pipelines_and_inferred_kind():
    torch.manual_seed(0)
    for kind in ("image", "signal", "signal2d"):
        x = _data(kind, n=4)
        ops = OPS_BY_KIND["signal" if kind == "signal2d" else kind]
        y = make_augment(list(reversed(ops)), 0.7)(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
    # order of the names does not matter: the canonical order is applied
    x = _data("image", n=4)
    torch.manual_seed(1)
    a = make_augment(["mask", "crop", "color"], 0.6)(x)
    torch.manual_seed(1)
    b = make_augment(["crop", "color", "mask", "crop"], 0.6)(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_flip_twice_is_identity_and_flips_half_at_full_strength():
    x = _data("image", n=400)
    flip = make_augment(["flip"], 1.0)
    torch.manual_seed(7)
    once = flip(x)
    torch.manual_seed(7)
    twice = flip(once)
    assert torch.equal(twice, x)
    mirrored = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(once, x)])
    unchanged = torch.tensor([torch.equal(o, xi) for o, xi in zip(once, x)])
    assert bool((mirrored ^ unchanged).all())  # each example is either mirrored or untouched
    assert 0.4 < mirrored.float().mean() < 0.6  # p = 0.5 at strength 1 (400 draws: sd 0.025)
    # signals: time reversal, same involution
    s = _data("signal", n=50)
    torch.manual_seed(2)
    r = make_augment("flip", 1.0)(s)
    torch.manual_seed(2)
    assert torch.equal(make_augment("flip", 1.0)(r), s)


def test_noise_statistics():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    scales = torch.tensor([0.5, 1.0, 3.0, 10.0]).repeat_interleave(16)
    x = torch.randn(64, 3, 32, 32, generator=g, dtype=torch.float64) * scales[:, None, None, None] + 2.0
    for s in (0.3, 1.0):
        r = make_augment("noise", s)(x) - x
        per_std = r.flatten(1).std(1)
        want = 0.2 * s * x.flatten(1).std(1, unbiased=False)
        np.testing.assert_allclose(per_std.numpy(), want.numpy(), rtol=0.05)  # 3072 draws per example
        z = r.flatten(1) / want[:, None]
        assert abs(float(z.mean())) < 0.01  # zero mean
        assert abs(float((z ** 4).mean()) - 3.0) < 0.1  # Gaussian kurtosis


def test_crop_is_an_affine_zoom_of_a_ramp():
    """A horizontal ramp stays a ramp (affine in x, constant in y); a crop of relative width w (a zoom by 1/w)
    multiplies its slope per pixel by w, with w^2 >= area_min * ratio_min = 0.08 * 3/4 at strength 1."""
    h = w = 24
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    ramp = xs.expand(50, 1, h, w).clone()
    torch.manual_seed(0)
    out = make_augment("crop", 1.0)(ramp)
    assert torch.allclose(out, out[:, :, :1, :].expand_as(out), atol=1e-9)  # no dependence on y
    row = out[:, 0, 0, :]
    second = row[:, 2:] - 2 * row[:, 1:-1] + row[:, :-2]
    assert second.abs().max() < 1e-9  # affine in x: a resampled sub-window of the ramp
    slope = (row[:, -1] - row[:, 0]) / (xs[-1] - xs[0])
    assert bool((slope <= 1 + 1e-9).all()) and bool((slope >= math.sqrt(0.08 * 3 / 4) - 1e-9).all())
    assert float(slope.std()) > 0.05  # different crops per example
    assert bool((row >= 0).all()) and bool((row <= 1).all())  # the window lies inside the image
    # signals: a time ramp becomes a ramp with slope = window fraction in [1 - 0.5, 1]
    t = ((torch.arange(40, dtype=torch.float64) + 0.5) / 40).expand(30, 1, 40).clone()
    s = make_augment("crop", 1.0)(t)[:, 0]
    assert (s[:, 2:] - 2 * s[:, 1:-1] + s[:, :-2]).abs().max() < 1e-9
    slope = (s[:, -1] - s[:, 0]) / (t[0, 0, -1] - t[0, 0, 0])
    assert bool((slope <= 1 + 1e-9).all()) and bool((slope >= 0.5 - 1e-9).all()) and float(slope.std()) > 0.05


def test_rotate_turns_a_ramp_by_at_most_45_degrees():
    n, size = 40, 33
    c = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    ramp = xx.expand(n, 1, size, size).clone()
    torch.manual_seed(0)
    out = make_augment("rotate", 1.0)(ramp)[:, 0]
    inner = (xx.abs() < 8) & (yy.abs() < 8)  # away from the zero-filled corners
    design = torch.stack([xx[inner], yy[inner]], 1)
    coef = torch.linalg.lstsq(design, out[:, inner].T).solution  # [2, n]: out = a x + b y
    resid = out[:, inner].T - design @ coef
    assert resid.abs().max() < 1e-6  # a rotated ramp is still a plane
    np.testing.assert_allclose(coef.norm(dim=0).numpy(), 1.0, atol=1e-6)  # rotation keeps the gradient norm
    angle = torch.atan2(coef[1].abs(), coef[0])
    assert float(angle.max()) <= math.pi / 4 + 1e-6 and float(angle.max()) > 0.2


def test_blur_of_an_impulse_is_a_normalised_symmetric_gaussian():
    n, length = 30, 64
    x = torch.zeros(n, 1, length, dtype=torch.float64)
    x[:, 0, length // 2] = 1.0
    torch.manual_seed(0)
    y = make_augment("blur", 1.0)(x)[:, 0]
    np.testing.assert_allclose(y.sum(1).numpy(), 1.0, atol=1e-9)  # kernel sums to 1, far from the borders
    t = torch.arange(length, dtype=torch.float64) - length // 2
    torch.testing.assert_close(y[:, length // 2 + 1:length // 2 + 8], y[:, length // 2 - 7:length // 2].flip(1))
    var = (y * t ** 2).sum(1)
    lo, hi = (0.1 * length / 32) ** 2, (2.0 * length / 32) ** 2
    assert bool((var > lo * 0.5).all()) and bool((var < hi * 1.05).all())
    # images: a constant image stays constant (replicate padding, normalised kernel)
    img = torch.full((4, 3, 16, 16), 0.7)
    torch.testing.assert_close(make_augment("blur", 1.0)(img), img)


def test_mask_zeroes_one_rectangle_or_segment_or_some_features():
    torch.manual_seed(0)
    ones = torch.ones(60, 3, 20, 30)
    out = make_augment("mask", 1.0)(ones)
    assert bool((out == out[:, :1]).all())  # same hole in every channel
    hole = out[:, 0] == 0
    for m in hole:
        rows, cols = m.any(1), m.any(0)
        assert torch.equal(m, rows[:, None] & cols[None, :])  # a (border-clipped) rectangle
    frac = hole.flatten(1).float().mean(1)
    assert bool((frac > 0).all()) and float(frac.max()) < 0.33 + 0.1  # area <= 0.33 (+ pixel rounding)
    sig = make_augment("mask", 1.0)(torch.ones(60, 2, 100))
    for m in sig[:, 0] == 0:
        idx = torch.nonzero(m)[:, 0]
        assert len(idx) >= 1 and int(idx[-1] - idx[0]) + 1 == len(idx) <= 34  # one contiguous segment
    vec = make_augment("mask", 1.0, kind="vectors")(torch.ones(2000, 50))
    zero = float((vec == 0).float().mean())
    assert 0.5 * 0.02 < zero < 0.33 and abs(zero - (0.02 + 0.33) / 2) < 0.01  # E[frac] = 0.175


def test_color_keeps_grey_grey_and_is_affine_on_one_channel():
    torch.manual_seed(0)
    g = torch.rand(10, 1, 8, 8)
    grey = g.expand(10, 3, 8, 8).clone()
    out = make_augment("color", 1.0)(grey)
    torch.testing.assert_close(out[:, 0], out[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 0], out[:, 2], atol=1e-5, rtol=0)
    one = make_augment("color", 1.0)(g.double())
    for xi, yi in zip(g.double(), one):  # out = a x + b per example (brightness and contrast only)
        design = torch.stack([xi.flatten(), torch.ones(64, dtype=torch.float64)], 1)
        sol = torch.linalg.lstsq(design, yi.flatten()[:, None]).solution
        assert (design @ sol - yi.flatten()[:, None]).abs().max() < 1e-9
    rgb = torch.rand(10, 3, 8, 8)
    assert not torch.allclose(make_augment("color", 1.0)(rgb), rgb)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown augmentation 'zoom'"):
        make_augment(["crop", "zoom"], 0.5)
    with pytest.raises(TypeError, match="strength"):
        make_augment(["crop"], "strong")
    with pytest.raises(ValueError, match=r"strength must be in \[0, 1\]"):
        make_augment(["crop"], 1.5)
    with pytest.raises(ValueError, match="'color' does not apply to signal"):
        make_augment(["color"], 0.5, kind="signal")
    with pytest.raises(ValueError, match="'rotate' does not apply to signal"):
        make_augment(["rotate"], 0.5)(torch.rand(4, 1, 30))
    with pytest.raises(ValueError, match="'crop' does not apply to vectors"):
        make_augment(["crop"], 0.5, kind="vectors")
    with pytest.raises(ValueError, match="has no augmentations"):
        make_augment(["noise"], 0.5, kind="tokens")
    with pytest.raises(TypeError, match="float inputs"):
        make_augment(["noise"], 0.5)(torch.ones(4, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="expects"):
        make_augment(["noise"], 0.5, kind="image")(torch.rand(4, 10))
    with pytest.raises(ValueError, match="shape"):
        make_augment(["noise"], 0.5)(torch.rand(4, 1, 2, 3, 4))

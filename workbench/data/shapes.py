"""Procedural coloured shapes on textured backgrounds, with ground-truth factors and per-pixel masks.

Every image shows one object drawn from a known generative process, so every property a representation
might encode is known exactly:

``shape``       categorical, the class label (``labels == factors["shape"]``)
``color``       categorical hue of the object (16 values: 8 train hues + 8 held-out hues)
``x``, ``y``    continuous position of the object centre in ``[0, 1]`` (``x`` to the right, ``y`` down)
``scale``       continuous circumradius of the object as a fraction of the image side
``rotation``    continuous rotation in **radians**, ``[0, 2*pi)``, counter-clockwise on screen
``background``  categorical background texture (8 values: 4 train textures + 4 held-out textures)

The object is drawn with hard edges (no anti-aliasing) from exact inside-tests on a grid of pixel
centres, so the mask is exact: ``masks[i, r, c] == 1`` iff pixel ``(r, c)`` is covered by the object,
and with ``noise=0`` exactly those pixels differ in colour from the background image.
"""
from __future__ import annotations

import numbers
from typing import Callable, Sequence

import numpy as np

from .._validation import check_fraction, check_positive_int
from .dataset import Dataset, Split

__all__ = ["make_shapes", "render_shapes", "SHAPES", "COLORS", "BACKGROUNDS", "TRAIN_COLORS", "OOD_COLORS",
           "TRAIN_BACKGROUNDS", "OOD_BACKGROUNDS"]

# ---------------------------------------------------------------------------------------------------------
# Shapes: inside-tests in the object's local frame (u, v), scaled so the circumradius is 1.
# All shapes have their centroid at the origin, so the mask centroid equals (x, y).
# ---------------------------------------------------------------------------------------------------------


def _regular_polygon(n: int, apothem_ratio: float | None = None) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Inside-test of a regular n-gon with circumradius 1 and a vertex pointing up (-v direction)."""
    apothem = np.cos(np.pi / n) if apothem_ratio is None else apothem_ratio
    # Edge normals sit halfway between vertices; vertex k at angle -pi/2 + 2*pi*k/n.
    angles = -np.pi / 2 + np.pi / n + 2 * np.pi * np.arange(n) / n
    normals = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)

    def inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        out = np.ones(u.shape, dtype=bool)
        for nu, nv in normals:
            out &= (u * nu + v * nv) <= apothem
        return out

    return inside


def _circle(u, v):
    return u * u + v * v <= 1.0


def _square(u, v):
    h = np.float32(1 / np.sqrt(2))  # half-side of the square inscribed in the unit circle
    return (np.abs(u) <= h) & (np.abs(v) <= h)


def _cross(u, v):
    au, av = np.abs(u), np.abs(v)
    arm, half_width = np.float32(0.95), np.float32(0.32)
    return ((au <= arm) & (av <= half_width)) | ((av <= arm) & (au <= half_width))


def _star(u, v):
    # five-pointed star, outer radius 1, inner radius 0.45, straight edges between tips and notches
    n, inner = 5, 0.45
    phi = np.mod(np.arctan2(v, u) + np.pi / 2, 2 * np.pi / n)  # angle from the nearest tip, [0, 2pi/n)
    phi = np.abs(phi - np.pi / n)  # 0 at the notch, pi/n at the tip
    rho = np.sqrt(u * u + v * v)
    # edge from the notch (radius `inner`, angle 0) to the tip (radius 1, angle pi/n) in polar form:
    # a point is inside iff it is on the origin side of that straight line.
    a = np.array([inner, 0.0])
    b = np.array([np.cos(np.pi / n), np.sin(np.pi / n)])
    normal = np.array([b[1] - a[1], -(b[0] - a[0])])
    normal /= np.linalg.norm(normal)
    offset = float(normal @ a)
    px, py = rho * np.cos(phi), rho * np.sin(phi)
    return (px * normal[0] + py * normal[1]) <= offset


def _ring(u, v):
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.55 ** 2)


def _ellipse(u, v):
    return u * u + (v / 0.55) ** 2 <= 1.0


def _diamond(u, v):
    return np.abs(u) / 0.6 + np.abs(v) <= 1.0


SHAPES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": _circle,
    "square": _square,
    "triangle": _regular_polygon(3),
    "cross": _cross,
    "star": _star,
    "ring": _ring,
    "hexagon": _regular_polygon(6),
    "pentagon": _regular_polygon(5),
    "ellipse": _ellipse,
    "diamond": _diamond,
}

# ---------------------------------------------------------------------------------------------------------
# Colours: fully saturated hues (max - min channel = 0.95). Train hues sit at multiples of 45 degrees,
# held-out hues halfway between them, so the two palettes are disjoint and interleaved.
# ---------------------------------------------------------------------------------------------------------
TRAIN_COLORS = ["red", "orange", "yellow", "chartreuse", "green", "teal", "blue", "purple"]
OOD_COLORS = ["vermilion", "amber", "lime", "spring", "cyan", "azure", "violet", "magenta"]
COLORS = TRAIN_COLORS + OOD_COLORS
_HUES = np.concatenate([np.arange(8) / 8.0, (np.arange(8) + 0.5) / 8.0])


def _hsv_to_rgb(h: np.ndarray, s: float, v: float) -> np.ndarray:
    h = np.asarray(h, dtype=np.float64)
    k = np.mod(np.array([5.0, 3.0, 1.0])[None, :] + h[:, None] * 6.0, 6.0)
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


PALETTE = _hsv_to_rgb(_HUES, 1.0, 0.95).astype(np.float32)  # [16, 3]

# Backgrounds: every background pixel is a convex mix of two low-saturation tones (each channel within
# +-0.08 of a grey level), so no background pixel can equal a (fully saturated) object colour.
TRAIN_BACKGROUNDS = ["flat", "stripes", "checker", "gradient"]
OOD_BACKGROUNDS = ["noise", "diagonal", "dots", "waves"]
BACKGROUNDS = TRAIN_BACKGROUNDS + OOD_BACKGROUNDS

_POS_RANGE = (0.25, 0.75)
_SCALE_RANGE = (0.13, 0.25)  # circumradius; max extent 0.25 keeps every object fully inside the image


def _background_pattern(code: int, n: int, gx: np.ndarray, gy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mixing weight in [0, 1] between the two background tones, ``[n, H, W]``."""
    name = BACKGROUNDS[code]
    H, W = gx.shape
    if name == "flat":
        return np.zeros((n, H, W), np.float32)
    if name == "noise":
        return rng.random((n, H, W), dtype=np.float32)
    freq = rng.uniform(3.0, 6.0, size=(n, 1, 1)).astype(np.float32)  # periods per image side
    phase = rng.uniform(0, 1, size=(n, 1, 1)).astype(np.float32)
    if name == "stripes":  # horizontal or vertical
        vertical = rng.random((n, 1, 1)) < 0.5
        coord = np.where(vertical, gx[None], gy[None])
        return (np.mod(coord * freq + phase, 1.0) < 0.5).astype(np.float32)
    if name == "checker":
        a = np.floor(gx[None] * freq + phase)
        b = np.floor(gy[None] * freq + phase)
        return np.mod(a + b, 2).astype(np.float32)
    if name == "gradient":
        ang = rng.uniform(0, 2 * np.pi, size=(n, 1, 1)).astype(np.float32)
        t = (gx[None] - 0.5) * np.cos(ang) + (gy[None] - 0.5) * np.sin(ang)
        return np.clip(t / 1.42 + 0.5, 0.0, 1.0).astype(np.float32)
    if name == "diagonal":
        sign = np.where(rng.random((n, 1, 1)) < 0.5, 1.0, -1.0).astype(np.float32)
        return (np.mod((gx[None] + sign * gy[None]) * freq / 1.42 + phase, 1.0) < 0.5).astype(np.float32)
    if name == "dots":
        cx = np.mod(gx[None] * freq + phase, 1.0) - 0.5
        cy = np.mod(gy[None] * freq + phase, 1.0) - 0.5
        return (cx * cx + cy * cy < 0.09).astype(np.float32)
    if name == "waves":
        r = np.sqrt((gx[None] - 0.5) ** 2 + (gy[None] - 0.5) ** 2)
        return (0.5 + 0.5 * np.sin(2 * np.pi * (r * freq * 1.5 + phase))).astype(np.float32)
    raise AssertionError(name)  # pragma: no cover


def _tones(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two low-saturation background tones per image, ``[n, 3]`` each, clearly different in brightness."""
    g1 = rng.uniform(0.15, 0.45, size=(n, 1))
    g2 = g1 + rng.uniform(0.25, 0.4, size=(n, 1))
    swap = rng.random((n, 1)) < 0.5
    g1, g2 = np.where(swap, g2, g1), np.where(swap, g1, g2)
    t1 = g1 + rng.uniform(-0.08, 0.08, size=(n, 3))
    t2 = g2 + rng.uniform(-0.08, 0.08, size=(n, 3))
    return t1.astype(np.float32), t2.astype(np.float32)


def render_shapes(shape: np.ndarray, color: np.ndarray, x: np.ndarray, y: np.ndarray, scale: np.ndarray,
                  rotation: np.ndarray, background: np.ndarray, *, size: int = 32,
                  classes: Sequence[str] = tuple(SHAPES), rng: np.random.Generator | None = None,
                  noise: float = 0.0, chunk: int = 1024, return_background: bool = False):
    """Render images from given factor values (vectorised over a pixel grid, in chunks).

    Parameters
    ----------
    shape : int array [N]
        Index into ``classes``.
    color : int array [N]
        Index into :data:`COLORS` (object hue).
    x, y : float arrays [N]
        Object centre in ``[0, 1]`` image coordinates (``x`` right, ``y`` down).
    scale : float array [N]
        Circumradius as a fraction of the image side.
    rotation : float array [N]
        Rotation in radians, counter-clockwise on screen.
    background : int array [N]
        Index into :data:`BACKGROUNDS`.
    size : int
        Image side in pixels.
    classes : sequence of str
        Shape names the ``shape`` codes refer to (keys of :data:`SHAPES`).
    rng : numpy Generator
        Draws the background textures' tones, phases and frequencies, and the pixel noise.
    noise : float
        Standard deviation of Gaussian pixel noise added after compositing (then clipped to [0, 1]).
    return_background : bool
        Also return the background-only images (same textures, no object, no noise).

    Returns
    -------
    images : float32 [N, 3, size, size] in [0, 1]
    masks : int64 [N, size, size], 1 on object pixels, 0 on background
    backgrounds : float32 [N, 3, size, size], only if ``return_background``
    """
    rng = np.random.default_rng(0) if rng is None else rng
    n = len(shape)
    images = np.empty((n, 3, size, size), np.float32)
    masks = np.empty((n, size, size), np.int64)
    bgs = np.empty((n, 3, size, size), np.float32) if return_background else None
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size
    gx, gy = np.meshgrid(centres, centres)  # gx varies along columns (x), gy along rows (y)
    funcs = [SHAPES[c] for c in classes]
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        m = sl.stop - sl.start
        # local coordinates: rotate the offset by -rotation (screen y points down, so flip for CCW)
        dx = (gx[None] - x[sl, None, None].astype(np.float32)) / scale[sl, None, None].astype(np.float32)
        dy = (gy[None] - y[sl, None, None].astype(np.float32)) / scale[sl, None, None].astype(np.float32)
        c = np.cos(rotation[sl]).astype(np.float32)[:, None, None]
        s = np.sin(rotation[sl]).astype(np.float32)[:, None, None]
        u = c * dx - s * dy
        v = s * dx + c * dy
        inside = np.zeros((m, size, size), dtype=bool)
        shp = shape[sl]
        for code in np.unique(shp):
            idx = np.nonzero(shp == code)[0]
            inside[idx] = funcs[code](u[idx], v[idx])
        # backgrounds
        pattern = np.empty((m, size, size), np.float32)
        bgc = background[sl]
        for code in np.unique(bgc):
            idx = np.nonzero(bgc == code)[0]
            pattern[idx] = _background_pattern(int(code), len(idx), gx, gy, rng)
        t1, t2 = _tones(m, rng)
        bg = t1[:, :, None, None] * (1 - pattern[:, None]) + t2[:, :, None, None] * pattern[:, None]
        if bgs is not None:
            bgs[sl] = bg
        obj = PALETTE[color[sl]][:, :, None, None]
        img = np.where(inside[:, None], obj, bg)
        if noise > 0:
            img = img + rng.normal(0.0, noise, size=img.shape).astype(np.float32)
        images[sl] = np.clip(img, 0.0, 1.0)
        masks[sl] = inside
    return (images, masks, bgs) if return_background else (images, masks)


def _sample_split(n: int, rng: np.random.Generator, n_classes: int, shift: float) -> dict[str, np.ndarray]:
    """Draw factor values; ``shift`` is the probability of using the held-out palette / textures."""
    use_ood_color = rng.random(n) < shift
    use_ood_bg = rng.random(n) < shift
    color = rng.integers(0, 8, n) + 8 * use_ood_color
    background = rng.integers(0, 4, n) + 4 * use_ood_bg
    return {
        "shape": rng.integers(0, n_classes, n).astype(np.int64),
        "color": color.astype(np.int64),
        "x": rng.uniform(*_POS_RANGE, n).astype(np.float32),
        "y": rng.uniform(*_POS_RANGE, n).astype(np.float32),
        "scale": rng.uniform(*_SCALE_RANGE, n).astype(np.float32),
        "rotation": rng.uniform(0.0, 2 * np.pi, n).astype(np.float32),
        "background": background.astype(np.int64),
    }


def make_shapes(n_train: int = 5000, n_test: int = 1000, n_ood: int = 1000, size: int = 32, seed: int = 0,
                ood_shift: float = 1.0,
                classes: Sequence[str] = ("circle", "square", "triangle", "cross", "star", "ring"),
                noise: float = 0.0) -> Dataset:
    """Coloured shapes on textured backgrounds with ground-truth factors and exact object masks.

    Parameters
    ----------
    n_train, n_test, n_ood : int
        Split sizes (``n_train >= 1``; ``n_test``/``n_ood`` may be 0 to leave that split out).
    size : int
        Image side in pixels (>= 8).
    seed : int
        Seed; train, test and ood are drawn from independent child streams of ``SeedSequence(seed)``.
    ood_shift : float in [0, 1]
        Strength of the OOD shift. Each OOD image independently draws its object colour from the 8
        held-out hues (``vermilion .. magenta``, halfway between the train hues) with probability
        ``ood_shift`` and otherwise from the 8 train hues; independently, it draws its background from the
        4 held-out textures (``noise, diagonal, dots, waves``) with probability ``ood_shift``, otherwise
        from the 4 train textures (``flat, stripes, checker, gradient``). ``0`` = same distribution as
        train, ``1`` = disjoint colour palette and disjoint backgrounds. Shape, position, scale and rotation
        are *not* shifted.
    classes : sequence of str
        Shape classes (at least 2, distinct), any of ``circle, square, triangle, cross, star, ring,
        hexagon, pentagon, ellipse, diamond``. The label is the index into ``classes``.
    noise : float >= 0
        Std of Gaussian pixel noise added after drawing (images are clipped to [0, 1]); masks stay exact.

    Returns
    -------
    Dataset
        ``name="shapes"``, ``kind="image"``; inputs float32 ``[N, 3, size, size]`` in ``[0, 1]``.
        Factors (all ``[N]``):

        - ``shape`` (categorical, = labels): index into ``classes``.
        - ``color`` (categorical, 16 values): object hue; codes 0-7 train palette, 8-15 held-out.
        - ``x``, ``y`` (continuous, [0.25, 0.75]): object centre; ``x`` = column / size, ``y`` = row / size.
        - ``scale`` (continuous, [0.13, 0.25]): circumradius as a fraction of the image side.
        - ``rotation`` (continuous, radians in [0, 2*pi)): counter-clockwise rotation on screen. Symmetric
          shapes make it identifiable only modulo their symmetry (circle/ring: not at all; square/cross:
          mod pi/2; triangle: mod 2pi/3; star/pentagon: mod 2pi/5; hexagon: mod pi/3; ellipse/diamond:
          mod pi).
        - ``background`` (categorical, 8 values): texture; codes 0-3 train, 4-7 held-out.

        ``masks`` int64 ``[N, size, size]``: 1 where the object covers the pixel centre, 0 elsewhere.

    Notes
    -----
    Drawing is vectorised over a pixel grid in chunks of 1024 images: 10 000 images at 32x32 take about
    0.4-1.1 s on 2 CPU cores (measured; ``make_shapes(n_train=10_000, n_test=0, n_ood=0)``).
    """
    n_train = check_positive_int(n_train, "n_train")
    n_test = check_positive_int(n_test, "n_test", minimum=0)
    n_ood = check_positive_int(n_ood, "n_ood", minimum=0)
    size = check_positive_int(size, "size", minimum=8)
    ood_shift = check_fraction(ood_shift, "ood_shift")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise TypeError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(noise, numbers.Real) or isinstance(noise, bool) or not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0 (pixel noise std), got {noise!r}")
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise TypeError(f"classes must be a sequence of shape names such as ('circle', 'square'), "
                        f"got {type(classes).__name__}")
    classes = list(classes)
    unknown = [c for c in classes if c not in SHAPES]
    if unknown:
        raise ValueError(f"unknown shape name(s) {unknown} in classes; choose from {list(SHAPES)}")
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise ValueError(f"classes must hold at least 2 distinct shape names, got {classes}")

    streams = np.random.SeedSequence(seed).spawn(3)
    splits: dict[str, Split] = {}
    for name, n, shift, ss in [("train", n_train, 0.0, streams[0]), ("test", n_test, 0.0, streams[1]),
                               ("ood", n_ood, ood_shift, streams[2])]:
        if n == 0:
            continue
        rng = np.random.default_rng(ss)
        f = _sample_split(n, rng, len(classes), shift)
        images, masks = render_shapes(f["shape"], f["color"], f["x"], f["y"], f["scale"], f["rotation"],
                                      f["background"], size=size, classes=classes, rng=rng, noise=float(noise))
        splits[name] = Split(inputs=images, labels=f["shape"].copy(), factors=f, masks=masks)

    factor_info = {
        "shape": {"kind": "categorical", "values": list(classes)},
        "color": {"kind": "categorical", "values": list(COLORS), "train_values": list(TRAIN_COLORS),
                  "ood_values": list(OOD_COLORS)},
        "x": {"kind": "continuous", "range": list(_POS_RANGE), "unit": "fraction of image width"},
        "y": {"kind": "continuous", "range": list(_POS_RANGE), "unit": "fraction of image height (down)"},
        "scale": {"kind": "continuous", "range": list(_SCALE_RANGE), "unit": "circumradius / image side"},
        "rotation": {"kind": "continuous", "range": [0.0, float(2 * np.pi)], "unit": "radians, CCW"},
        "background": {"kind": "categorical", "values": list(BACKGROUNDS),
                       "train_values": list(TRAIN_BACKGROUNDS), "ood_values": list(OOD_BACKGROUNDS)},
    }
    options = dict(n_train=n_train, n_test=n_test, n_ood=n_ood, size=size, seed=seed, ood_shift=ood_shift,
                   classes=list(classes), noise=float(noise), mask_encoding="0 background, 1 object")
    return Dataset(name="shapes", kind="image", splits=splits, class_names=list(classes),
                   factor_info=factor_info, options=options)

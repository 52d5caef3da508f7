"""Data augmentations as batched torch ops (no torchvision), for images, 1-D signals and vectors.

:func:`make_augment` turns a list of names from :data:`AUGMENTATIONS` and a global ``strength`` in
``[0, 1]`` into a callable ``x -> x'`` that draws *independent* random parameters for every example
from torch's global RNG (so ``torch.manual_seed`` makes it reproducible; the trainer reseeds before
each step). Every op is vectorised over the batch: per-example parameters are ``[N]`` tensors and the
work is one ``grid_sample`` / grouped convolution / masked blend, never a Python loop over examples.
Shapes and dtypes are preserved; values are **not clamped** (inputs may be standardised, not in [0, 1]).

Ops are applied in the fixed order of :data:`AUGMENTATIONS` whatever order they were named in; at
``strength == 0`` every op is the identity (exactly: it returns its input unchanged). With ``s`` the
strength:

=======  =============================================================  ==========================================
name     images ``[N, C, H, W]``                                          signals ``[N, C, L]`` / ``[N, L]``
=======  =============================================================  ==========================================
crop     random resized crop (bilinear ``grid_sample``): area fraction    random window (length fraction
         ``U(1 - 0.92 s, 1)``, log aspect ratio ``U(±s log 4/3)``          ``U(1 - 0.5 s, 1)``, random position)
         (SimCLR's ``scale=(0.08, 1)``, ``ratio=(3/4, 4/3)`` at s = 1),     linearly resampled to ``L``: a time
         random position, resampled to ``H x W``                          shift + stretch
flip     horizontal mirror with probability ``0.5 s``                     time reversal with probability ``0.5 s``
color    3 channels: brightness, contrast, saturation factors            error (no colour in a signal)
         ``U(1 ± 0.8 s)`` and a hue rotation of ``U(±0.2 s)`` turns about
         the grey axis (SimCLR's jitter 0.8 s / 0.2 s, applied always,
         not with p = 0.8); other channel counts: brightness + contrast
noise    ``x + sigma_i * eps``, ``sigma_i = 0.2 s * std(x_i)`` (the         same
         example's own std over all entries, so the op is scale-free)
blur     separable Gaussian, ``sigma_i = s * U(0.1, 2.0) * min(H, W) / 32`` 1-D Gaussian, ``sigma_i = s * U(0.1, 2.0)
         pixels (SimCLR's range for 224 px, rescaled), replicate padding   * L / 32`` samples
rotate   rotation by ``U(±45 s)`` degrees about the centre, zeros         error (no rotation of a time axis)
         outside (aspect-corrected for non-square images)
mask     cutout / random erasing (DeVries & Taylor 2017; Zhong et al.     one zeroed segment of length fraction
         2020): one zero-filled rectangle of area fraction                ``s * U(0.02, 0.33)``, random start
         ``s * U(0.02, 0.33)``, log aspect ratio ``U(±s log 3)``, centre
         uniform in the image (clipped at the border)
=======  =============================================================  ==========================================

Vectors ``[N, D]`` (``kind="vectors"``) accept ``noise`` and ``mask`` (each feature zeroed independently
with probability ``s * U(0.02, 0.33)`` drawn per example); the spatial/temporal ops are an error.

``kind`` is inferred from the tensor when not given: 4-D = image, 3-D = signal, 2-D = a one-channel
signal ``[N, L]``; pass ``kind="vectors"`` for feature vectors (the trainer passes the dataset's kind).
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from ..runs import AUGMENTATIONS

__all__ = ["make_augment", "Augment", "AUGMENTATIONS", "KINDS", "crop", "flip", "color", "noise", "blur",
           "rotate", "mask"]

KINDS = ("image", "signal", "vectors")
_ALLOWED = {
    "image": set(AUGMENTATIONS),
    "signal": {"crop", "flip", "noise", "blur", "mask"},
    "vectors": {"noise", "mask"},
}
_WHY_NOT = {
    ("signal", "color"): "a signal has no colour channels",
    ("signal", "rotate"): "a time axis cannot be rotated",
    ("vectors", "crop"): "feature vectors have no spatial/temporal axis to crop",
    ("vectors", "flip"): "feature vectors have no axis to mirror",
    ("vectors", "color"): "feature vectors have no colour channels",
    ("vectors", "blur"): "feature vectors have no neighbourhood to blur over",
    ("vectors", "rotate"): "feature vectors have no plane to rotate",
}


# ----------------------------------------------------------------------------------------------- helpers
def _uniform(n: int, low: float | torch.Tensor, high: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[n]`` draws from U(low, high) with the global torch RNG, on ``like``'s device and dtype."""
    return low + (high - low) * torch.rand(n, device=like.device, dtype=like.dtype)


def _as_signal(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``[N, L]`` -> ``[N, 1, L]`` (and a flag to undo it)."""
    return (x[:, None], True) if x.dim() == 2 else (x, False)


def _per_example(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape an ``[N]`` tensor to broadcast against ``x`` ``[N, ...]``."""
    return v.view(-1, *([1] * (x.dim() - 1)))


def _sample_grid(x: torch.Tensor, theta: torch.Tensor, padding_mode: str) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


# ----------------------------------------------------------------------------------------------- ops
def crop(x: torch.Tensor, strength: float, kind: str = "image") -> torch.Tensor:
    """Random resized crop (images) or random time shift/stretch (signals); see the module table."""
    if strength == 0:
        return x
    n = len(x)
    if kind == "image":
        area = _uniform(n, 1.0 - 0.92 * strength, 1.0, x)
        log_r = _uniform(n, -strength * math.log(4 / 3), strength * math.log(4 / 3), x)
        # half-extents in normalised coordinates ([-1, 1] spans the image): w * h = area, w / h = ratio
        w = torch.sqrt(area * torch.exp(log_r)).clamp(max=1.0)
        h = torch.sqrt(area / torch.exp(log_r)).clamp(max=1.0)
        # centre range keeps every sample point between the outermost pixel centres (no border effects)
        height, width = x.shape[-2:]
        cx = _uniform(n, -(1 - w), 1 - w, x) * (1 - 1 / width)
        cy = _uniform(n, -(1 - h), 1 - h, x) * (1 - 1 / height)
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, cx, h, cy
        return _sample_grid(x, theta, "border")
    sig, squeezed = _as_signal(x)
    w = _uniform(n, 1.0 - 0.5 * strength, 1.0, x)
    c = _uniform(n, -(1 - w), 1 - w, x) * (1 - 1 / sig.shape[-1])
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1] = w, c, 1.0
    out = _sample_grid(sig[:, :, None, :], theta, "border")[:, :, 0, :]
    return out[:, 0] if squeezed else out


def flip(x: torch.Tensor, strength: float, kind: str = "image") -> torch.Tensor:
    """Mirror the last axis (image width / signal time) of each example with probability ``0.5 strength``."""
    if strength == 0:
        return x
    do = torch.rand(len(x), device=x.device) < 0.5 * strength
    return torch.where(_per_example(do, x), x.flip(-1), x)


def color(x: torch.Tensor, strength: float, kind: str = "image") -> torch.Tensor:
    """Brightness / contrast / saturation / hue jitter (3 channels) or brightness / contrast (others)."""
    if strength == 0:
        return x
    n, c = x.shape[:2]
    b = _per_example(_uniform(n, 1 - 0.8 * strength, 1 + 0.8 * strength, x), x)
    ct = _per_example(_uniform(n, 1 - 0.8 * strength, 1 + 0.8 * strength, x), x)
    out = x * b
    if c == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        gray = (out * weights).sum(1, keepdim=True)
        out = (out - gray.mean((2, 3), keepdim=True)) * ct + gray.mean((2, 3), keepdim=True)
        sat = _per_example(_uniform(n, 1 - 0.8 * strength, 1 + 0.8 * strength, x), x)
        gray = (out * weights).sum(1, keepdim=True)
        out = gray + (out - gray) * sat
        # hue: rotate RGB about the grey axis (1, 1, 1)/sqrt(3) by a fraction of a full turn (Rodrigues)
        angle = _uniform(n, -0.2 * strength, 0.2 * strength, x) * 2 * math.pi
        cos, sin = torch.cos(angle), torch.sin(angle)
        k = torch.tensor([[0., -1., 1.], [1., 0., -1.], [-1., 1., 0.]], device=x.device, dtype=x.dtype) / math.sqrt(3)
        eye = torch.eye(3, device=x.device, dtype=x.dtype)
        rot = eye + sin[:, None, None] * k + (1 - cos)[:, None, None] * (k @ k)  # [N, 3, 3]
        out = torch.einsum("nij,njhw->nihw", rot, out)
    else:
        mean = out.mean(dim=tuple(range(1, x.dim())), keepdim=True)
        out = (out - mean) * ct + mean
    return out


def noise(x: torch.Tensor, strength: float, kind: str = "image") -> torch.Tensor:
    """Additive Gaussian noise with per-example std ``0.2 * strength * std(x_i)``."""
    if strength == 0:
        return x
    dims = tuple(range(1, x.dim()))
    scale = 0.2 * strength * x.std(dim=dims, keepdim=True, unbiased=False)
    return x + scale * torch.randn_like(x)


def _gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    k = torch.exp(-0.5 * (t[None, :] / sigma[:, None]) ** 2)
    return k / k.sum(1, keepdim=True)  # [N, 2r+1]


def _blur_last_axis(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve the last axis of ``x`` [N, ..., L] with one symmetric kernel per example, replicate-padded."""
    n, length = x.shape[0], x.shape[-1]
    radius = kernels.shape[1] // 2
    rows = F.pad(x.reshape(n, -1, length), (radius, radius), mode="replicate")  # [N, M, L + 2r]
    windows = rows.unfold(-1, 2 * radius + 1, 1)  # [N, M, L, 2r+1]
    return torch.einsum("nmlk,nk->nml", windows, kernels).reshape(x.shape)


def blur(x: torch.Tensor, strength: float, kind: str = "image") -> torch.Tensor:
    """Gaussian blur with a per-example sigma (separable for images); see the module table."""
    if strength == 0:
        return x
    n = len(x)
    extent = min(x.shape[-2:]) if kind == "image" else x.shape[-1]
    sigma = strength * _uniform(n, 0.1, 2.0, x) * extent / 32
    radius = max(1, min(math.ceil(3 * float(sigma.max())), extent - 1))
    kernels = _gaussian_kernels(sigma, radius)
    if kind == "image":
        out = _blur_last_axis(x, kernels)  # along width
        return _blur_last_axis(out.transpose(-1, -2), kernels).transpose(-1, -2)  # along height
    sig, squeezed = _as_signal(x)
    out = _blur_last_axis(sig, kernels)
    return out[:, 0] if squeezed else out


def rotate(x: torch.Tensor, strength: float, kind: str = "image") -> torch.Tensor:
    """Rotate each image by ``U(-45 strength, 45 strength)`` degrees; zeros fill the corners."""
    if strength == 0:
        return x
    n, _, h, w = x.shape
    angle = _uniform(n, -strength * math.pi / 4, strength * math.pi / 4, x)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * h / w
    theta[:, 1, 0], theta[:, 1, 1] = sin * w / h, cos
    return _sample_grid(x, theta, "zeros")


def mask(x: torch.Tensor, strength: float, kind: str = "image") -> torch.Tensor:
    """Zero one random rectangle (images), one segment (signals) or random features (vectors)."""
    if strength == 0:
        return x
    n = len(x)
    frac = strength * _uniform(n, 0.02, 0.33, x)
    if kind == "vectors":
        drop = torch.rand(x.shape, device=x.device, dtype=x.dtype) < frac[:, None]
        return x.masked_fill(drop, 0.0)
    if kind == "image":
        h, w = x.shape[-2:]
        log_r = _uniform(n, -strength * math.log(3), strength * math.log(3), x)
        rh = torch.sqrt(frac * torch.exp(-log_r)).clamp(max=1.0) * h  # rectangle height / width in pixels
        rw = torch.sqrt(frac * torch.exp(log_r)).clamp(max=1.0) * w
        cy, cx = _uniform(n, 0.0, float(h), x), _uniform(n, 0.0, float(w), x)
        ys = torch.arange(h, device=x.device, dtype=x.dtype) + 0.5
        xs = torch.arange(w, device=x.device, dtype=x.dtype) + 0.5
        inside_y = (ys[None, :] - cy[:, None]).abs() <= rh[:, None] / 2  # [N, H]
        inside_x = (xs[None, :] - cx[:, None]).abs() <= rw[:, None] / 2  # [N, W]
        hole = inside_y[:, None, :, None] & inside_x[:, None, None, :]
        return x.masked_fill(hole, 0.0)
    sig, squeezed = _as_signal(x)
    length = sig.shape[-1]
    seg = frac * length
    start = _uniform(n, 0.0, 1.0, x) * (length - seg)
    ts = torch.arange(length, device=x.device, dtype=x.dtype) + 0.5
    hole = (ts[None, :] >= start[:, None]) & (ts[None, :] < (start + seg)[:, None])
    out = sig.masked_fill(hole[:, None, :], 0.0)
    return out[:, 0] if squeezed else out


_OPS: dict[str, Callable[[torch.Tensor, float, str], torch.Tensor]] = {
    "crop": crop, "flip": flip, "color": color, "noise": noise, "blur": blur, "rotate": rotate, "mask": mask}
assert tuple(_OPS) == AUGMENTATIONS


# ----------------------------------------------------------------------------------------------- factory
def _check_names(names: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        names = (names,)
    if not isinstance(names, Iterable):
        raise TypeError(f"names must be a list of augmentation names from {list(AUGMENTATIONS)}, "
                        f"got {type(names).__name__}")
    names = tuple(names)
    for name in names:
        if not isinstance(name, str) or name not in _OPS:
            raise ValueError(f"unknown augmentation {name!r}; available: {list(AUGMENTATIONS)}")
    return names


def _check_kind_ops(kind: str, names: tuple[str, ...]) -> None:
    for name in names:
        if name not in _ALLOWED[kind]:
            raise ValueError(f"augmentation {name!r} does not apply to {kind} data ({_WHY_NOT[(kind, name)]}); "
                             f"for {kind} use a subset of {sorted(_ALLOWED[kind])}")


class Augment:
    """A batched augmentation pipeline; build it with :func:`make_augment`.

    Calling it on a float tensor ``[N, ...]`` returns a tensor of the same shape, dtype and device.
    """

    def __init__(self, names: tuple[str, ...], strength: float, kind: str | None):
        self.names = tuple(n for n in AUGMENTATIONS if n in names)  # canonical order
        self.strength = strength
        self.kind = kind

    def __repr__(self) -> str:
        return f"Augment({list(self.names)}, strength={self.strength}, kind={self.kind!r})"

    def infer_kind(self, x: torch.Tensor) -> str:
        """``self.kind`` if set, else 4-D = image, 3-D = signal, 2-D = one-channel signal ``[N, L]``."""
        expected = {"image": (4,), "signal": (2, 3), "vectors": (2,)}
        if self.kind is not None:
            if x.dim() not in expected[self.kind]:
                layouts = {"image": "[N, C, H, W]", "signal": "[N, C, L] or [N, L]", "vectors": "[N, D]"}
                raise ValueError(f"x has shape {tuple(x.shape)} but kind={self.kind!r} expects "
                                 f"{layouts[self.kind]}")
            return self.kind
        if x.dim() == 4:
            return "image"
        if x.dim() in (2, 3):
            return "signal"
        raise ValueError(f"x has shape {tuple(x.shape)}; augmentations take images [N, C, H, W], signals "
                         "[N, C, L] / [N, L] or vectors [N, D] (pass kind='vectors')")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"augmentations apply to float inputs (images, signals, vectors), got dtype {x.dtype}; "
                            "token data has no augmentations — leave RunConfig.augment empty")
        if not self.names:
            return x
        kind = self.infer_kind(x)
        _check_kind_ops(kind, self.names)
        if len(x) == 0:
            return x
        for name in self.names:
            x = _OPS[name](x, self.strength, kind)
        return x


def make_augment(names: str | Iterable[str], strength: float = 0.5, kind: str | None = None) -> Augment:
    """Batched augmentation ``x -> x'`` applying ``names`` in the fixed order of :data:`AUGMENTATIONS`.

    Parameters
    ----------
    names : str or list of str
        Subset of :data:`AUGMENTATIONS` (``crop flip color noise blur rotate mask``); order does not
        matter, duplicates are ignored, empty gives the identity.
    strength : float in [0, 1]
        Global magnitude; 0 makes every op the identity (see the module docstring for each op's ranges).
    kind : {"image", "signal", "vectors"}, optional
        Input kind; inferred from each tensor's number of dimensions when omitted (2-D = signal).
        Ops that cannot apply to the kind (``color``/``rotate`` on signals; everything but ``noise``/``mask``
        on vectors) raise ``ValueError`` — here when ``kind`` is given, else on the first call.

    Returns
    -------
    Augment
        Callable on float tensors ``[N, ...]``; draws per-example parameters from torch's global RNG.
    """
    names = _check_names(names)
    if not isinstance(strength, numbers.Real) or isinstance(strength, bool):
        raise TypeError(f"strength must be a number in [0, 1], got {type(strength).__name__}")
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if kind is not None:
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} has no augmentations; augmentations exist for {list(KINDS)} "
                             "(token/text data: leave augment empty)")
        _check_kind_ops(kind, names)
    return Augment(names, float(strength), kind)

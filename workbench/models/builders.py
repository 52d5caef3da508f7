"""Small, readable model builders: ``mlp``, ``cnn``, ``vit`` and ``transformer``.

Each builder is one ``nn.Module`` class that reads top to bottom (nanoGPT style). Every model
carries two plain attributes that the rest of the workbench relies on:

``model.spec``
    ``{"name": <builder name>, "options": {<every option, defaults included, JSON-serialisable>}}``
    so that ``workbench.models.build(**model.spec)`` rebuilds the same architecture.
``model.probe_points``
    ordered ``{display name: module path}`` of the layers whose outputs are worth recording,
    input side first. Every probe module returns one tensor, batch first: ``[N, C, H, W]``,
    ``[N, C, L]`` or ``[N, D]`` for image/signal/vector models, ``[N, T, D]`` for sequence models.

Forward conventions: image, signal and vector models ``forward(x) -> logits [N, num_classes]``;
token models ``forward(tokens, attention_mask=None)``.

Representation methods (what pretraining objectives read): ``MLP``, ``CNN`` and ``ViT`` have
``embed(x) -> [N, D]``, the vector the linear head reads, so ``forward(x) == head(embed(x))``.
``Transformer`` has ``hidden(tokens, attention_mask=None) -> [N, T, D]`` (final hidden states, after
the final LayerNorm when there is one) and ``pooled(tokens, attention_mask=None) -> [N, D]`` (their mean
over real tokens). The Transformer's sequence embedding is called ``pooled`` because ``Transformer.embed``
is its token-embedding module (a probe point and a state-dict prefix, which must keep their names).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice, check_fraction, check_positive_int

__all__ = ["MLP", "CNN", "ViT", "Transformer", "BUILDERS"]


# ----------------------------------------------------------------------------- helpers

def _shape(value: Any, name: str, ndims: Sequence[int] | None = None) -> tuple[int, ...]:
    """Validate an input shape (channels first, no batch dimension) and return it as a tuple."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value),)
    if isinstance(value, torch.Size):
        value = tuple(value)
    if not isinstance(value, (tuple, list)) or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in value):
        hint = " without the batch dimension (e.g. (3, 32, 32) or (1, 40))" if name == "input_shape" else ""
        raise TypeError(f"{name} must be a tuple of positive ints{hint}, got {value!r}")
    shape = tuple(int(v) for v in value)
    if ndims is not None and len(shape) not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} entries, got {shape}")
    return shape


def _check_input(x: torch.Tensor, shape: tuple[int, ...], name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [N, {', '.join(map(str, shape))}], "
                        f"got {type(x).__name__}")
    if tuple(x.shape[1:]) != shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)}, but this model was built for input_shape="
                         f"{shape} (expected [N, {', '.join(map(str, shape))}]); rebuild with the right input_shape")


def _set_spec(model: nn.Module, name: str, options: dict[str, Any]) -> None:
    """Attach ``model.spec`` with JSON-friendly option values (tuples become lists)."""
    model.spec = {"name": name,
                  "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}}


_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


# ----------------------------------------------------------------------------- MLP

class MLP(nn.Module):
    """Multi-layer perceptron on flattened inputs.

    Parameters
    ----------
    input_shape : tuple of int
        Shape of one example without the batch dimension; it is flattened.
    num_classes : int
        Number of output logits.
    hidden : tuple of int, default (256, 256)
        Width of each hidden layer.
    activation : {"relu", "gelu", "tanh", "silu"}
    norm : {None, "layer", "batch"}
        Normalisation between each hidden ``Linear`` and its activation.
    dropout : float
        Dropout probability applied to each hidden output before the next layer.

    Probe points: ``fc1 .. fc{len(hidden)}`` (after the activation, ``[N, width]``) and ``head``
    (logits, ``[N, num_classes]``).
    """

    def __init__(self, input_shape, num_classes, hidden=(256, 256), activation="relu", norm=None, dropout=0.0):
        super().__init__()
        input_shape = _shape(input_shape, "input_shape")
        num_classes = check_positive_int(num_classes, "num_classes")
        hidden = _shape(hidden, "hidden")  # () gives a linear model
        check_choice(activation, _ACTIVATIONS, "activation")
        check_choice(norm, [None, "layer", "batch"], "norm")
        dropout = check_fraction(dropout, "dropout", high=0.99)
        self.input_shape, self.dropout = input_shape, dropout

        widths = [math.prod(input_shape), *hidden]
        self.hidden = nn.ModuleList()
        for d_in, d_out in zip(widths[:-1], widths[1:]):
            normalise = {None: nn.Identity, "layer": nn.LayerNorm, "batch": nn.BatchNorm1d}[norm]
            self.hidden.append(nn.Sequential(nn.Linear(d_in, d_out), normalise(d_out), _ACTIVATIONS[activation]()))
        self.head = nn.Linear(widths[-1], num_classes)

        self.probe_points = {f"fc{i + 1}": f"hidden.{i}" for i in range(len(hidden))} | {"head": "head"}
        _set_spec(self, "mlp", dict(input_shape=input_shape, num_classes=num_classes, hidden=hidden,
                                    activation=activation, norm=norm, dropout=dropout))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the last hidden layer (after dropout), ``[N, hidden[-1]]``; the flattened input if
        ``hidden=()``. ``forward(x) == head(embed(x))``."""
        _check_input(x, self.input_shape)
        x = x.flatten(1)
        for layer in self.hidden:
            x = F.dropout(layer(x), self.dropout, self.training)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


# ----------------------------------------------------------------------------- CNN

def _norm_layer(kind: str | None, channels: int, dims: int) -> nn.Module:
    if kind == "batch":
        return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    return nn.Identity()


class ResBlock(nn.Module):
    """conv3x3 -> norm -> ReLU -> conv3x3 -> norm, (+ shortcut), ReLU. ``dims`` = 1 (signals) or 2 (images).

    When the shape changes, the shortcut is a 1x1 projection of the input subsampled by ``stride`` — the same
    function as a strided 1x1 convolution, computed without oneDNN's strided 1x1 weight-gradient kernel, which
    writes out of bounds for channels-last inputs with 2-7 channels on AVX2 CPUs (torch 2.13) and corrupts
    the heap (tests/test_native_crash.py).
    """

    def __init__(self, c_in, c_out, stride, norm, residual, dims):
        super().__init__()
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        self.conv1 = conv(c_in, c_out, 3, stride, 1, bias=norm is None)
        self.norm1 = _norm_layer(norm, c_out, dims)
        self.conv2 = conv(c_out, c_out, 3, 1, 1, bias=norm is None)
        self.norm2 = _norm_layer(norm, c_out, dims)
        self.residual, self.stride = residual, stride
        self.skip = nn.Identity()
        if residual and (stride != 1 or c_in != c_out):  # 1x1 projection when the shape changes
            self.skip = nn.Sequential(conv(c_in, c_out, 1, bias=False), _norm_layer(norm, c_out, dims))

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """The residual path: ``x`` itself, or its 1x1 projection at the block's output resolution."""
        if self.stride != 1:
            x = x[(..., *[slice(None, None, self.stride)] * (x.dim() - 2))]
        return self.skip(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        if self.residual:
            h = h + self.shortcut(x)
        return F.relu(h)


class CNN(nn.Module):
    """Small ResNet for images ``(C, H, W)`` (Conv2d) or signals ``(C, L)`` (Conv1d).

    Layout: a 3x3 stem conv (``width`` channels, full resolution), then ``depth`` stages of
    ``blocks_per_stage`` residual blocks. Every stage after the first halves the resolution
    (stride 2 in its first block); the width doubles at every even stage, i.e. stage ``s`` has
    ``width * 2 ** (s // 2)`` channels. Then global average pooling and a linear head.
    For a 32x32 image with depth 4: 32x32 (w), 16x16 (2w), 8x8 (2w), 4x4 (4w).

    Parameters
    ----------
    input_shape : tuple of int
        ``(C, H, W)`` or ``(C, L)``.
    num_classes : int
    width : int, default 32
        Channels of the stem and the first stage.
    depth : int, default 4
        Number of stages.
    blocks_per_stage : int, default 1
    norm : {"batch", "group", None}
        GroupNorm uses ``gcd(channels, 8)`` groups.
    residual : bool, default True
        False gives the same network without skip connections (a plain CNN).

    Probe points: ``stem``, ``stage1 .. stage{depth}`` (``[N, C, H, W]`` or ``[N, C, L]``),
    ``pool`` (``[N, C]``), ``head`` (``[N, num_classes]``).
    """

    def __init__(self, input_shape, num_classes, width=32, depth=4, blocks_per_stage=1, norm="batch", residual=True):
        super().__init__()
        input_shape = _shape(input_shape, "input_shape", ndims=(2, 3))
        num_classes = check_positive_int(num_classes, "num_classes")
        width = check_positive_int(width, "width")
        depth = check_positive_int(depth, "depth")
        blocks_per_stage = check_positive_int(blocks_per_stage, "blocks_per_stage")
        check_choice(norm, ["batch", "group", None], "norm")
        if not isinstance(residual, bool):
            raise TypeError(f"residual must be True or False, got {residual!r}")
        self.input_shape = input_shape
        dims = len(input_shape) - 1
        conv = nn.Conv1d if dims == 1 else nn.Conv2d

        self.stem = nn.Sequential(conv(input_shape[0], width, 3, 1, 1, bias=norm is None),
                                  _norm_layer(norm, width, dims), nn.ReLU())
        self.stages = nn.ModuleList()
        c_in = width
        for s in range(1, depth + 1):
            c_out, stride = width * 2 ** (s // 2), (1 if s == 1 else 2)
            blocks = [ResBlock(c_in if b == 0 else c_out, c_out, stride if b == 0 else 1, norm, residual, dims)
                      for b in range(blocks_per_stage)]
            self.stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.pool = nn.Sequential((nn.AdaptiveAvgPool1d if dims == 1 else nn.AdaptiveAvgPool2d)(1), nn.Flatten(1))
        self.head = nn.Linear(c_in, num_classes)

        self.probe_points = ({"stem": "stem"} | {f"stage{s}": f"stages.{s - 1}" for s in range(1, depth + 1)}
                             | {"pool": "pool", "head": "head"})
        _set_spec(self, "cnn", dict(input_shape=input_shape, num_classes=num_classes, width=width, depth=depth,
                                    blocks_per_stage=blocks_per_stage, norm=norm, residual=residual))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled features of the last stage, ``[N, C]`` (the ``pool`` probe point).
        ``forward(x) == head(embed(x))``."""
        _check_input(x, self.input_shape)
        if x.dim() == 4:  # NHWC lets oneDNN/cuDNN pick faster conv kernels (~1.5x per step on a 2-core CPU);
            x = x.contiguous(memory_format=torch.channels_last)  # weights keep the default layout
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


# ----------------------------------------------------------------------------- attention blocks

class SelfAttention(nn.Module):
    """Multi-head self-attention using ``F.scaled_dot_product_attention``."""

    def __init__(self, dim, heads, dropout=0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask=None, is_causal=False):
        N, T, D = x.shape
        q, k, v = self.qkv(x).view(N, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # 3 x [N,H,T,d]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(N, T, D))


class Block(nn.Module):
    """Transformer layer: attention + MLP, each with a residual connection.

    ``placement="pre"``:  x = x + f(LN(x) * ln_scale)   (Pre-LN; ``ln_scale`` < 1 gives LayerNorm Scaling)
    ``placement="post"``: x = LN(x + f(x))              (Post-LN, original Transformer)
    """

    def __init__(self, dim, heads, mlp_ratio, placement="pre", ln_scale=1.0, dropout=0.0):
        super().__init__()
        self.placement, self.ln_scale, self.dropout = placement, ln_scale, dropout
        self.ln1, self.attn = nn.LayerNorm(dim), SelfAttention(dim, heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x, mask=None, is_causal=False):
        drop = lambda h: F.dropout(h, self.dropout, self.training)  # noqa: E731  (residual dropout)
        if self.placement == "post":
            x = self.ln1(x + drop(self.attn(x, mask, is_causal)))
            return self.ln2(x + drop(self.mlp(x)))
        x = x + drop(self.attn(self.ln1(x) * self.ln_scale, mask, is_causal))
        return x + drop(self.mlp(self.ln2(x) * self.ln_scale))


def _init_transformer(module: nn.Module) -> None:
    """GPT-2 style init: N(0, 0.02) weights, zero biases; LayerNorm stays identity (weight 1, bias 0)."""
    if isinstance(module, (nn.Linear, nn.Embedding, nn.Conv2d)):
        nn.init.normal_(module.weight, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)


def _check_heads(dim: int, heads: int) -> None:
    if dim % heads:
        raise ValueError(f"dim={dim} must be divisible by heads={heads}; choose e.g. heads in "
                         f"{[h for h in range(1, min(dim, 16) + 1) if dim % h == 0]}")


# ----------------------------------------------------------------------------- ViT

class PatchEmbed(nn.Module):
    """Image -> [cls, patch tokens] + learned position embedding: ``[N, 1 + n_patches, dim]``."""

    def __init__(self, channels, n_patches, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 1 + n_patches, dim) * 0.02)

    def forward(self, x):
        x = self.proj(x).flatten(2).transpose(1, 2)  # [N, n_patches, dim]
        return torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1) + self.pos


class ViT(nn.Module):
    """Tiny Vision Transformer (Dosovitskiy et al. 2021) with a cls token and Pre-LN blocks.

    Parameters
    ----------
    input_shape : tuple of int
        ``(C, H, W)``; H and W must be divisible by ``patch``.
    num_classes : int
    patch : int, default 4
    dim : int, default 64
    depth : int, default 4
    heads : int, default 4
    mlp_ratio : float, default 2.0
    pool : {"cls", "mean"}
        Classify from the cls token, or from the mean of the patch tokens.

    Probe points: ``patch_embed`` (tokens incl. cls, ``[N, T, dim]``), ``block1 .. block{depth}``,
    ``norm`` (final LayerNorm, ``[N, T, dim]``), ``head`` (``[N, num_classes]``).
    """

    def __init__(self, input_shape, num_classes, patch=4, dim=64, depth=4, heads=4, mlp_ratio=2.0, pool="cls"):
        super().__init__()
        input_shape = _shape(input_shape, "input_shape", ndims=(3,))
        num_classes = check_positive_int(num_classes, "num_classes")
        patch, dim, depth, heads = (check_positive_int(v, n) for v, n in
                                    [(patch, "patch"), (dim, "dim"), (depth, "depth"), (heads, "heads")])
        mlp_ratio = check_fraction(mlp_ratio, "mlp_ratio", low=1e-3, high=64)
        check_choice(pool, ["cls", "mean"], "pool")
        C, H, W = input_shape
        if H % patch or W % patch:
            raise ValueError(f"input_shape {input_shape}: height and width must be divisible by patch={patch}; "
                             f"choose a patch in {[p for p in range(1, min(H, W) + 1) if H % p == 0 and W % p == 0]}")
        _check_heads(dim, heads)
        self.input_shape, self.pool = input_shape, pool

        self.patch_embed = PatchEmbed(C, (H // patch) * (W // patch), patch, dim)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio, "pre") for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.apply(_init_transformer)

        blocks = {f"block{i}": f"blocks.{i - 1}" for i in range(1, depth + 1)}
        self.probe_points = {"patch_embed": "patch_embed"} | blocks | {"norm": "norm", "head": "head"}
        _set_spec(self, "vit", dict(input_shape=input_shape, num_classes=num_classes, patch=patch, dim=dim,
                                    depth=depth, heads=heads, mlp_ratio=mlp_ratio, pool=pool))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled, final-normed token the head reads, ``[N, dim]``: the cls token (``pool="cls"``) or
        the mean of the patch tokens (``pool="mean"``). ``forward(x) == head(embed(x))``."""
        _check_input(x, self.input_shape)
        x = self.patch_embed(x)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x[:, 0] if self.pool == "cls" else x[:, 1:].mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


# ----------------------------------------------------------------------------- token transformer

class TokenEmbed(nn.Module):
    """Token embedding + learned position embedding (+ dropout): ``[N, T] -> [N, T, dim]``."""

    def __init__(self, vocab_size, max_len, dim, dropout):
        super().__init__()
        self.tok, self.pos, self.dropout = nn.Embedding(vocab_size, dim), nn.Embedding(max_len, dim), dropout

    def forward(self, tokens):
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return F.dropout(self.tok(tokens) + self.pos(positions), self.dropout, self.training)


class Transformer(nn.Module):
    """Token Transformer: encoder (``causal=False``, e.g. MLM) or decoder (``causal=True``, CLM).

    Norm placement (``norm``), with ``l = 1 .. depth`` the 1-indexed layer:

    - ``"pre"``: Pre-LN, ``x = x + f(LN(x))`` for attention and MLP, plus a final LayerNorm
      (Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture").
    - ``"post"``: Post-LN, ``x = LN(x + f(x))`` (Vaswani et al. 2017); no final LayerNorm.
    - ``"mix"``: Mix-LN (Li et al. 2024, "Mix-LN: Unleashing the Power of Deeper Layers by Combining
      Pre-LN and Post-LN"): the first ``max(1, depth // 4)`` layers are Post-LN, the rest Pre-LN;
      final LayerNorm if any Pre-LN layer exists.
    - ``"lns"``: LayerNorm Scaling (Sun et al. 2025, "The Curse of Depth in Large Language Models"):
      Pre-LN where every LayerNorm output inside layer ``l`` is multiplied by ``1 / sqrt(l)``;
      the final LayerNorm is not scaled.

    Parameters
    ----------
    vocab_size : int
    num_classes : int or None
        Required for ``task="classify"``; must be None for ``task="lm"``.
    dim, depth, heads : int
        Width, number of layers, attention heads (``dim % heads == 0``).
    mlp_ratio : float, default 4.0
    max_len : int, default 128
        Longest sequence (learned position embeddings).
    causal : bool, default False
    norm : {"pre", "post", "mix", "lns"}
    task : {"lm", "classify"}
        ``"lm"``: per-token logits ``[N, T, vocab_size]``; ``"classify"``: logits ``[N, num_classes]``
        from the mean of the final hidden states over real (unmasked) tokens.
    dropout : float
        Embedding, attention and residual dropout.

    ``forward(tokens, attention_mask=None)``: ``tokens`` LongTensor ``[N, T]``; ``attention_mask``
    ``[N, T]`` with 1 for real tokens and 0 for padding (padded keys are ignored by every query).

    Probe points: ``embed``, ``layer1 .. layer{depth}``, ``final_norm`` (if any), all ``[N, T, dim]``.
    """

    def __init__(self, vocab_size, num_classes=None, dim=64, depth=4, heads=4, mlp_ratio=4.0, max_len=128,
                 causal=False, norm="pre", task="lm", dropout=0.0):
        super().__init__()
        vocab_size, dim, depth, heads, max_len = (check_positive_int(v, n) for v, n in [
            (vocab_size, "vocab_size"), (dim, "dim"), (depth, "depth"), (heads, "heads"), (max_len, "max_len")])
        mlp_ratio = check_fraction(mlp_ratio, "mlp_ratio", low=1e-3, high=64)
        check_choice(norm, ["pre", "post", "mix", "lns"], "norm")
        check_choice(task, ["lm", "classify"], "task")
        if not isinstance(causal, bool):
            raise TypeError(f"causal must be True or False, got {causal!r}")
        if task == "classify":
            num_classes = check_positive_int(num_classes, "num_classes")
        elif num_classes is not None:
            raise ValueError(f"num_classes={num_classes} is only used with task='classify'; "
                             "pass task='classify' or leave num_classes=None for task='lm'")
        dropout = check_fraction(dropout, "dropout", high=0.99)
        _check_heads(dim, heads)
        self.causal, self.task, self.max_len = causal, task, max_len

        n_post = {"pre": 0, "lns": 0, "post": depth, "mix": max(1, depth // 4)}[norm]
        self.embed = TokenEmbed(vocab_size, max_len, dim, dropout)
        self.layers = nn.ModuleList([
            Block(dim, heads, mlp_ratio, "post" if l <= n_post else "pre",
                  ln_scale=1 / math.sqrt(l) if norm == "lns" else 1.0, dropout=dropout)
            for l in range(1, depth + 1)])
        self.final_norm = nn.LayerNorm(dim) if n_post < depth else None
        self.head = nn.Linear(dim, vocab_size if task == "lm" else num_classes)
        self.apply(_init_transformer)

        self.probe_points = {"embed": "embed"} | {f"layer{l}": f"layers.{l - 1}" for l in range(1, depth + 1)}
        if self.final_norm is not None:
            self.probe_points["final_norm"] = "final_norm"
        _set_spec(self, "transformer", dict(vocab_size=vocab_size, num_classes=num_classes, dim=dim, depth=depth,
                                            heads=heads, mlp_ratio=mlp_ratio, max_len=max_len, causal=causal,
                                            norm=norm, task=task, dropout=dropout))

    def hidden(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states ``[N, T, dim]`` (after ``final_norm`` when the model has one): what the
        head reads per token for ``task="lm"``. Padded positions hold finite values that depend on nothing
        but themselves; mask them out downstream."""
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.is_floating_point():
            raise TypeError(f"tokens must be an integer tensor [N, T], got "
                            f"{getattr(tokens, 'dtype', type(tokens).__name__)} {tuple(getattr(tokens, 'shape', ()))}")
        N, T = tokens.shape
        if self.max_len < T:
            raise ValueError(f"tokens has length {T} > max_len={self.max_len}; truncate or rebuild with a larger "
                             "max_len")
        mask, is_causal = None, self.causal
        if attention_mask is not None:
            if tuple(attention_mask.shape) != (N, T):
                raise ValueError(f"attention_mask must have the shape of tokens {(N, T)}, "
                                 f"got {tuple(attention_mask.shape)}")
            keep = attention_mask.to(tokens.device).bool()
            # Query i may attend key j if j is a real token (or j == i, so padded queries never see an
            # all-masked row and produce NaN), and, when causal, j <= i. Bool mask: True = attend.
            eye = torch.eye(T, dtype=torch.bool, device=tokens.device)
            mask = keep[:, None, None, :] | eye
            if self.causal:
                mask = mask & torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()
            is_causal = False

        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x, mask, is_causal)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x

    @staticmethod
    def _mean_over_tokens(x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if attention_mask is None:
            return x.mean(dim=1)
        w = attention_mask.to(x.device).bool().to(x.dtype)[:, :, None]
        return (x * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)

    def pooled(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Sequence embedding ``[N, dim]``: the mean of :meth:`hidden` over real tokens (all tokens when
        ``attention_mask`` is None; an all-padding row gives zeros). For ``task="classify"``,
        ``forward(tokens, mask) == head(pooled(tokens, mask))``."""
        return self._mean_over_tokens(self.hidden(tokens, attention_mask), attention_mask)

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.hidden(tokens, attention_mask)
        if self.task == "lm":
            return self.head(x)
        return self.head(self._mean_over_tokens(x, attention_mask))


BUILDERS: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn": CNN, "vit": ViT, "transformer": Transformer}

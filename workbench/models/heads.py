"""Objective heads (projector, DINO head) and the backbone + head as one model whose probe points continue into
the head.

Joint-embedding objectives (``simclr``, ``supcon``, ``barlow``, ``vicreg``) train a *projector* ``g`` on the
backbone's representation ``h = f(x)`` and apply their loss to ``z = g(h)``; ``distill`` trains a DINO head. The
head is saved with the objective (``objective.safetensors`` in each checkpoint, under the objective's attribute
name: ``projector.*`` or ``head.*``). :class:`WithHead` packs backbone and head into one ``nn.Module`` whose
``forward(x) = head(representation(backbone, x))`` and whose :func:`~workbench.models.probe_points` are the
backbone's (without its classifier ``head``, which the representation does not run) followed by the head's, in
forward order — so :func:`~workbench.activations.extract`, :class:`~workbench.study.Study` and
:func:`~workbench.train.evaluate` read backbone *and* head outputs in one pass. ``Run.load_model(step,
head=True)`` builds it from a checkpoint (:func:`head_from_state`).

Head probe points (``name`` = ``projector`` or ``head``):

- an MLP projector ``Linear → [BN] → act → … → Linear``: ``{name}.fc1 … {name}.fc{depth-1}`` (each hidden
  layer's output after its activation) and ``{name}`` (the output ``z`` the loss reads);
- a linear projector or none (identity): ``{name}`` only;
- the DINO head: ``head.fc1 …`` (its MLP's hidden layers), ``head.mlp`` (the MLP's output, when it has one),
  ``head.bottleneck`` (before the L2 normalisation) and ``head`` (the logits).

>>> import torch
>>> from workbench.models import build, probe_points
>>> from workbench.models.heads import WithHead, make_projector
>>> backbone = build("mlp", input_shape=(8,), num_classes=3, hidden=(16, 16)).eval()
>>> model = WithHead(backbone, make_projector("mlp", 16, 4, depth=2)).eval()
>>> list(probe_points(model))
['fc1', 'fc2', 'projector.fc1', 'projector']
>>> x = torch.randn(5, 8)
>>> torch.allclose(model(x), model.projector(backbone.embed(x)))
True
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .layers import probe_points

__all__ = ["representation", "make_projector", "DinoHead", "WithHead", "HEADS", "DINO_OUT_DIM", "head_from_state"]

#: objective → the attribute (and state-dict prefix) of its trained head; objectives not listed train none
HEADS = {"simclr": "projector", "supcon": "projector", "barlow": "projector", "vicreg": "projector",
         "distill": "head"}
#: output units of the DINO head of ``distill`` (Caron et al. 2021 use 65536; see workbench.train.objectives)
DINO_OUT_DIM = 4096


def _is_token_model(model: nn.Module) -> bool:
    return callable(getattr(type(model), "hidden", None)) and callable(getattr(type(model), "pooled", None))


def representation(model: nn.Module, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The model's representation ``[N, D]``: ``model.pooled(tokens, attention_mask)`` for token
    Transformers (mean of final hidden states over real tokens) and Hugging Face models
    (:class:`~workbench.models.HFModel`: the attention-masked mean of the last hidden state), ``model.embed(x)``
    otherwise (the vector the classification head reads; a :class:`WithHead`'s head output).

    Use this rather than ``model.embed`` for code that must handle every builder: on
    :class:`~workbench.models.Transformer`, ``embed`` is the token-embedding *module*.
    """
    if _is_token_model(model):
        return model.pooled(inputs, attention_mask)
    embed = getattr(model, "embed", None)
    if embed is None or isinstance(embed, nn.Module) or not callable(embed):
        raise TypeError(f"{type(model).__name__} has no representation method (.embed(x) for MLP/CNN/ViT, "
                        ".pooled(tokens, mask) for Transformer); use a workbench builder model")
    return embed(inputs) if attention_mask is None else embed(inputs, attention_mask=attention_mask)


def make_projector(kind: str, in_dim: int, out_dim: int, depth: int = 2, batch_norm: bool = True,
                   activation: type[nn.Module] = nn.ReLU) -> nn.Module:
    """Projection head between representation and loss.

    ``"none"``: identity (output width ``in_dim``). ``"linear"``: one ``Linear(in_dim, out_dim)``.
    ``"mlp"``: ``depth`` linear layers; each but the last is followed by BatchNorm (if ``batch_norm``) and
    the activation; hidden width ``max(in_dim, out_dim)`` (SimCLR's head keeps the backbone width);
    ``depth = 1`` is the linear head.
    """
    if kind not in ("none", "linear", "mlp"):
        raise ValueError(f"projector={kind!r} is not one of ['none', 'linear', 'mlp']")
    if kind == "none":
        return nn.Identity()
    if kind == "linear" or depth <= 1:
        return nn.Linear(in_dim, out_dim)
    hidden = max(in_dim, out_dim)
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(depth - 1):
        layers += [nn.Linear(width, hidden), *([nn.BatchNorm1d(hidden)] if batch_norm else []), activation()]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class _WeightNormLinear(nn.Module):
    """Linear map without bias whose weight rows are L2-normalised at every call (norm fixed to 1)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x):
        return F.linear(x, F.normalize(self.weight, dim=1))


class DinoHead(nn.Module):
    """Projector MLP (GELU, no BN) -> Linear bottleneck -> L2 normalise -> weight-normalised Linear (Caron et al.
    2021, "Emerging properties in self-supervised vision transformers", ICCV)."""

    def __init__(self, in_dim: int, projector: str, depth: int, bottleneck: int, out_dim: int):
        super().__init__()
        self.mlp = make_projector(projector, in_dim, max(in_dim, bottleneck), depth, batch_norm=False,
                                  activation=nn.GELU)
        width = in_dim if projector == "none" else max(in_dim, bottleneck)
        self.bottleneck = nn.Linear(width, bottleneck)
        self.last = _WeightNormLinear(bottleneck, out_dim)

    def forward(self, h):
        return self.last(F.normalize(self.bottleneck(self.mlp(h)), dim=-1))


def _mlp_points(module: nn.Module, prefix: str, display: str) -> dict[str, str]:
    """``{display}.fc{k}`` → the last module of hidden layer ``k`` of a Sequential MLP (the module just before each
    Linear but the first)."""
    if not isinstance(module, nn.Sequential):
        return {}
    children = list(module)
    starts = [j for j, m in enumerate(children) if isinstance(m, nn.Linear)]
    return {f"{display}.fc{k}": f"{prefix}.{j - 1}" for k, j in enumerate(starts[1:], start=1)}


class WithHead(nn.Module):
    """A backbone and an objective's head as one model: ``forward(x) = head(representation(backbone, x))``.

    Parameters
    ----------
    backbone : a workbench model with a representation (``embed`` for MLP/CNN/ViT, ``pooled`` for Transformer).
    head : the head module (a projector from :func:`make_projector` or a :class:`DinoHead`), applied to the
        representation.
    name : its attribute name, ``"projector"`` (joint-embedding objectives) or ``"head"`` (``distill``): the
        objective's state-dict prefix, and the head's probe-point names.

    ``probe_points``: the backbone's (same display names, paths under ``backbone.``) without its classifier
    ``head`` — :func:`representation` does not run it — then the head's (module docstring). ``embed(x)`` is the
    head output (a fine-tuned classifier on a WithHead reads ``z``).

    Examples
    --------
    >>> import torch
    >>> from workbench.models import build
    >>> m = WithHead(build("mlp", input_shape=(4,), num_classes=2, hidden=(6,)), torch.nn.Linear(6, 3))
    >>> m.probe_points
    {'fc1': 'backbone.hidden.0', 'projector': 'projector'}
    >>> tuple(m(torch.zeros(2, 4)).shape)
    (2, 3)
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, name: str = "projector"):
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be a torch.nn.Module (a workbench model), got {type(backbone).__name__}")
        if not isinstance(head, nn.Module):
            raise TypeError(f"head must be a torch.nn.Module (e.g. make_projector('mlp', D, 128)), got "
                            f"{type(head).__name__}")
        if name not in ("projector", "head"):
            raise ValueError(f"name={name!r}: a head is called 'projector' (simclr, supcon, barlow, vicreg) or "
                             "'head' (distill)")
        embed = getattr(backbone, "embed", None)
        if not _is_token_model(backbone) and (embed is None or isinstance(embed, nn.Module) or not callable(embed)):
            raise TypeError(f"backbone {type(backbone).__name__} has no representation method (.embed(x) or "
                            ".pooled(tokens, mask)); use a workbench builder model")
        self.backbone = backbone
        self.head_name = name
        self.add_module(name, head)
        points = {k: f"backbone.{v}" if v else "backbone" for k, v in probe_points(backbone).items() if v != "head"}
        if isinstance(head, DinoHead):
            points |= _mlp_points(head.mlp, f"{name}.mlp", name)
            if not isinstance(head.mlp, nn.Identity):
                points[f"{name}.mlp"] = f"{name}.mlp"
            points |= {f"{name}.bottleneck": f"{name}.bottleneck", name: name}
        else:
            points |= _mlp_points(head, name, name) | {name: name}
        self.probe_points = points
        spec = getattr(backbone, "spec", None)
        self.input_shape = getattr(backbone, "input_shape", None)
        self.spec = None if spec is None else {"backbone": spec, "head": name}

    @property
    def head_module(self) -> nn.Module:
        """The head (``self.projector`` or ``self.head``)."""
        return getattr(self, self.head_name)

    def representation(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The backbone's representation ``h`` (:func:`representation`), before the head."""
        return representation(self.backbone, x, attention_mask)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head_module(self.representation(x, attention_mask))

    def embed(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The head output ``z`` (what :func:`representation` of a WithHead gives)."""
        return self.forward(x, attention_mask)


def head_from_state(objective: str, state: Mapping[str, torch.Tensor] | None, *, projector: str,
                    projector_depth: int, embed_dim: int) -> tuple[str, nn.Module]:
    """The trained head of ``objective`` rebuilt from its objective's state dict: ``(name, head module)``.

    Parameters
    ----------
    objective : a key of :data:`HEADS` (``simclr``, ``supcon``, ``barlow``, ``vicreg``, ``distill``).
    state : the objective's ``state_dict()`` (``objective.safetensors`` of a checkpoint); None or empty for a
        projector ``"none"`` (no parameters).
    projector, projector_depth, embed_dim : the run's :class:`~workbench.runs.RunConfig` fields.

    The head's input width is read from its first weight; the weights load strictly (a shape or key mismatch
    is a ValueError naming the checkpoint's keys).
    """
    if objective not in HEADS:
        raise ValueError(f"head=True: objective={objective!r} trains no projection head (heads exist for "
                         f"{', '.join(HEADS)}); load the backbone with head=False")
    name = HEADS[objective]
    sub = {k[len(name) + 1:]: v for k, v in (state or {}).items() if k.startswith(name + ".")}
    first = {"projector": ("0.weight", "weight"), "head": ("mlp.0.weight", "mlp.weight", "bottleneck.weight")}[name]
    key = next((k for k in first if k in sub), None)
    if key is None and not (name == "projector" and projector == "none"):
        raise ValueError(f"head=True: the checkpoint's objective state has no {name} weights (keys: "
                         f"{sorted(state or {})[:8]}); was it saved by objective={objective!r}?")
    in_dim = int(sub[key].shape[1]) if key is not None else 1
    if name == "projector":
        head = make_projector(projector, in_dim, embed_dim, projector_depth)
    else:
        head = DinoHead(in_dim, projector, projector_depth, embed_dim, DINO_OUT_DIM)
    try:
        head.load_state_dict(sub)
    except RuntimeError as err:
        raise ValueError(f"head=True: the stored {name} weights do not fit projector={projector!r}, "
                         f"projector_depth={projector_depth}, embed_dim={embed_dim}: {str(err).splitlines()[0]}"
                         ) from err
    return name, head

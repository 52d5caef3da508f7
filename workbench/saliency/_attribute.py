"""``attribute(model, inputs, method=...)``: one call shape for every captum attribution method."""
from __future__ import annotations

import numbers
from typing import Any

import torch
from captum.attr import LayerAttribution, NoiseTunnel
from torch import nn

from .._validation import Instance, Interval, Options, check_finite, check_positive_int, declare
from ..models.layers import get_module, select_layers
from . import _forward as fw
from ._examples import ATTRIBUTE_RULES
from ._methods import METHODS, NOISE_TUNNELS, Method
from ._result import Attribution

__all__ = ["attribute"]


def _method(method: Any) -> Method:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method={method!r} is not a known attribution method; valid methods: {sorted(METHODS)} "
                         "(add one with workbench.saliency.register_method)")
    return METHODS[method]


def _layer(model: nn.Module, layer: Any) -> tuple[str, nn.Module]:
    """Module path and module for a probe-point name or module path."""
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a probe-point name or module path (str), got {type(layer).__name__}")
    path = select_layers(model, [layer])[layer]
    return path, get_module(model, path)


def _embedding_layer(model: nn.Module) -> str:
    """Path of the token-embedding module: ``get_input_embeddings()`` (Hugging Face) or the first nn.Embedding."""
    for owner in (model, getattr(model, "model", None)):
        get = getattr(owner, "get_input_embeddings", None)
        emb = get() if callable(get) else None
        if isinstance(emb, nn.Module):
            for name, module in model.named_modules():
                if module is emb:
                    return name
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            return name
    raise ValueError(f"token inputs are attributed on the token-embedding layer, but {type(model).__name__} has no "
                     "nn.Embedding; pass layer=... naming the layer to attribute")


def _token_baselines(model: nn.Module, ids: torch.Tensor, baselines: Any) -> torch.Tensor:
    """Reference token ids: every non-special token replaced by ``baselines`` (default: the pad token id).

    Special tokens ([CLS], [SEP], padding) are kept, so the reference is a sentence of the same length whose
    content is all padding — the usual reference for Integrated Gradients on text.
    """
    if isinstance(baselines, torch.Tensor):
        if baselines.shape != ids.shape or baselines.is_floating_point():
            raise ValueError(f"baselines for token inputs must be token ids of shape {tuple(ids.shape)}, "
                             f"got {baselines.dtype} {tuple(baselines.shape)}")
        return baselines.to(ids.device).long()
    tok = getattr(model, "tokenizer", None)
    special = list(getattr(tok, "all_special_ids", None) or [])
    if baselines is None:
        pad = getattr(tok, "pad_token_id", None)
        baselines = 0 if pad is None else pad
    if not isinstance(baselines, numbers.Integral) or isinstance(baselines, bool):
        raise TypeError(f"baselines for token inputs must be None, a token id or a LongTensor of ids, got "
                        f"{type(baselines).__name__}")
    keep = torch.isin(ids, torch.tensor(special, dtype=torch.long, device=ids.device))
    return torch.where(keep, ids, torch.full_like(ids, int(baselines)))


def _float_baselines(entry: Method, x: torch.Tensor, baselines: Any) -> torch.Tensor | float | None:
    if baselines is None:
        if entry.baselines == "distribution":  # GradientShap needs a tensor: the all-zeros reference
            return torch.zeros_like(x[:1])
        return None
    if entry.baselines == "none":
        raise ValueError(f"method={entry.name!r} takes no baselines; leave baselines=None")
    if isinstance(baselines, numbers.Real) and not isinstance(baselines, bool):
        if entry.baselines == "distribution":
            return torch.full_like(x[:1], float(baselines))
        return float(baselines)
    if not isinstance(baselines, torch.Tensor):
        raise TypeError(f"baselines must be None, a number or a tensor, got {type(baselines).__name__}")
    b = baselines.detach().to(x.device, x.dtype)
    if b.shape[1:] != x.shape[1:] or (entry.baselines == "per_example" and len(b) not in (1, len(x))):
        want = "[M, ...]" if entry.baselines == "distribution" else f"[{len(x)}, ...] or [1, ...]"
        raise ValueError(f"baselines has shape {tuple(b.shape)}; {entry.name} needs {want} with the inputs' "
                         f"per-example shape {tuple(x.shape[1:])}")
    check_finite(b, "baselines")
    return b


def _slice(value: Any, n: int, lo: int, hi: int) -> Any:
    """Rows lo:hi of a per-example tensor (first dimension n > 1); anything else is shared by all chunks."""
    if isinstance(value, torch.Tensor) and value.dim() >= 1 and len(value) == n and n > 1:
        return value[lo:hi]
    return value


@declare(**ATTRIBUTE_RULES, noise_tunnel=Options(*NOISE_TUNNELS, none=True), run=Instance(str, none=True),
         step=Interval(int, 0, none=True))
def attribute(model: nn.Module, inputs: Any, method: str = "integrated_gradients", target: Any = None,
              baselines: Any = None, layer: str | None = None, batch_size: int | None = None, *,
              output: fw.OutputFn | None = None, noise_tunnel: str | None = None, run: str | None = None,
              step: int | None = None, **method_kwargs: Any) -> Attribution:
    """Attribute the model's target score to its inputs (or to a layer) with one of captum's methods.

    Parameters
    ----------
    model : nn.Module
        Evaluated in eval mode (its mode is restored afterwards).
    inputs : tensor, array, token mapping or Split
        ``[N, C, H, W]`` images, ``[N, C, L]`` or ``[N, L]`` signals, ``[N, D]`` features, or token inputs
        (``{"input_ids", "attention_mask"}`` as from ``HFModel.tokenize``, an integer ``[N, T]`` tensor, or
        a token/text ``Split``).
    method : str
        A key of :data:`METHODS`: ``integrated_gradients`` (Sundararajan et al. 2017), ``saliency`` (|grad|,
        Simonyan et al. 2014), ``input_x_gradient`` (Shrikumar et al. 2016), ``gradient_shap`` (Lundberg & Lee
        2017), ``deeplift`` (Shrikumar et al. 2017; rescale rules apply only to nonlinearities that are
        ``nn.Module`` s, functional ``F.relu`` falls back to gradients), ``occlusion`` (Zeiler & Fergus 2014;
        default windows: all channels x 1/8 of each side, stride half a window), ``feature_ablation``
        (default: one feature per pixel/time step), ``grad_cam`` (Selvaraju et al. 2017; needs ``layer=``,
        upsampled bilinearly to the input size unless ``upsample=False``).
    target : None, int or sequence of int
        Class attributed per example: None = the predicted class (argmax of the scores), an int for all, or
        one per example. Must be None when ``output`` returns one score per example.
    baselines : None, number or tensor
        Reference input(s): None = zeros (captum's default; for token inputs every non-special token replaced
        by the pad id); a number; a tensor ``[N, ...]`` / ``[1, ...]`` (``gradient_shap``: ``[M, ...]``,
        a distribution of references).
    layer : str, optional
        Probe-point name (``workbench.models.probe_points(model)``) or module path: attribute to that
        layer's output with the method's layer variant. Token inputs default to the token-embedding layer;
        their attribution per token is the sum over the embedding dimension.
    batch_size : int, optional
        Examples per chunk. None: as many as fit a memory budget given the method's rows per example (e.g.
        ``n_steps``), see :func:`workbench.saliency._forward.auto_batch_size`. On out-of-memory the chunk is
        halved and retried.
    output : callable, optional
        ``output(model_output, **extra_inputs) -> scores [N] or [N, K]`` for models whose output is not
        class scores; see :mod:`workbench.saliency._outputs` (``cosine_to``, ``linear_head``, ``pooled``).
    noise_tunnel : {"smoothgrad", "smoothgrad_sq", "vargrad"}, optional
        Wrap a gradient method in captum's NoiseTunnel (Smilkov et al. 2017); ``nt_samples``, ``stdevs``, ...
        go in ``method_kwargs``.
    run, step : metadata recorded in the result (set by :func:`attribute_checkpoints`).
    **method_kwargs
        Passed to the captum method's ``attribute`` (e.g. ``n_steps``, ``sliding_window_shapes``). Integrated
        Gradients' integration rule (captum's ``method=``) is ``integration=`` here, e.g.
        ``integration="riemann_trapezoid"`` (default Gauss-Legendre).

    Returns
    -------
    Attribution
    """
    fw.check_model(model)
    entry = _method(method)
    output = fw.check_output(output)
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    if noise_tunnel is not None:
        if noise_tunnel not in NOISE_TUNNELS:
            raise ValueError(f"noise_tunnel={noise_tunnel!r} is not one of {list(NOISE_TUNNELS)}")
        if not entry.gradient:
            raise ValueError(f"noise_tunnel wraps gradient methods; {entry.name} is perturbation-based")
    upsample = method_kwargs.pop("upsample", True)
    if "integration" in method_kwargs:  # captum calls IG's integration rule `method`, taken here by the name
        method_kwargs["method"] = method_kwargs.pop("integration")
    batch = fw.as_batch(model, inputs)
    tokens = batch.kind == "tokens"
    if tokens and noise_tunnel is not None:
        raise ValueError("noise_tunnel adds Gaussian noise to the inputs, which is undefined for token ids")

    layer_path = None
    if tokens and layer is None:
        layer_path = _embedding_layer(model)
        module = get_module(model, layer_path)
    elif layer is not None:
        layer_path, module = _layer(model, layer)
    if layer_path is not None and entry.layer is None:
        with_layer = sorted(k for k, m in METHODS.items() if m.layer is not None)
        why = "token inputs are attributed on the embedding layer" if tokens and layer is None else "layer= was given"
        raise ValueError(f"{why}, but method={entry.name!r} has no layer form; use one of {with_layer}")
    if layer_path is None and entry.captum is None:
        raise ValueError(f"method={entry.name!r} attributes to a layer: pass layer=... (a probe point such as "
                         f"the last conv stage; probe points: {list(select_layers(model))})")

    scorer = fw.Scorer(model, output, list(batch.extra))
    options = dict(method_kwargs)
    if entry.defaults is not None:
        options = {**entry.defaults(batch.x, options), **options}
    if tokens:
        base = _token_baselines(model, batch.x, baselines)
    else:
        base = _float_baselines(entry, batch.x, baselines)
    algo = entry.layer(scorer, module) if layer_path is not None else entry.captum(scorer)
    if noise_tunnel is not None:
        algo = NoiseTunnel(algo)
    want_delta = entry.delta and noise_tunnel is None

    with fw.eval_mode(model):
        s = fw.scores(scorer, batch, batch_size)
        targets = fw.resolve_targets(target, s)
        expansion = entry.expansion(options) * (int(options.get("nt_samples", 5)) if noise_tunnel else 1)
        if batch_size is None:
            batch_size = fw.auto_batch_size(scorer, batch, expansion)
        n = len(batch)

        def chunk(lo: int, hi: int):
            x, extra = batch.rows(lo, hi)
            if entry.gradient and not tokens:
                x = x.detach().requires_grad_()  # captum would set it too, with a warning per call
            kw = {k: _slice(v, n, lo, hi) for k, v in options.items()}
            if noise_tunnel is not None:
                kw["nt_type"] = noise_tunnel
            if entry.baselines != "none":
                kw["baselines"] = base if entry.baselines == "distribution" else _slice(base, n, lo, hi)
            if targets is not None:
                kw["target"] = targets[lo:hi].to(x.device)
            if extra:
                kw["additional_forward_args"] = extra
            if want_delta:
                kw["return_convergence_delta"] = True
            res = algo.attribute(x, **kw)
            attr, delta = res if want_delta else (res, None)
            if tokens and attr.dim() == 3:
                attr = attr.sum(-1)  # per-token attribution = sum over the embedding dimension
            if entry.name == "grad_cam" and upsample and batch.kind in ("image", "signal"):
                mode = "bilinear" if batch.kind == "image" else "linear"
                attr = LayerAttribution.interpolate(attr, tuple(batch.x.shape[2:]), interpolate_mode=mode)
            return attr.detach().cpu(), None if delta is None else delta.detach().reshape(-1).cpu()

        parts, used = fw.run_batched(chunk, n, batch_size)

    attr = torch.cat([p[0] for p in parts])
    delta = torch.cat([p[1] for p in parts]) if want_delta else None
    tok = getattr(model, "tokenizer", None)
    token_strings = None
    if tokens and tok is not None and hasattr(tok, "convert_ids_to_tokens"):
        token_strings = [tok.convert_ids_to_tokens(row) for row in batch.x.cpu().tolist()]
    options.update(noise_tunnel=noise_tunnel, batch_size=used)
    if entry.name == "grad_cam":
        options["upsample"] = upsample
    if isinstance(base, torch.Tensor):
        base = base.detach().cpu()
    return Attribution(
        attributions=attr, inputs=batch.x.detach().cpu(), targets=targets, method=entry.name, kind=batch.kind,
        options=options, layer=layer_path, baselines=base,
        extra={k: v.detach().cpu() for k, v in batch.extra.items()}, tokens=token_strings,
        scores=fw.target_scores(s, targets).detach().cpu(), delta=delta, model=type(model).__name__,
        run=run, step=step, output=output)

"""2-D projections of a layer's representation, the scatter that shows them, and the examples behind points.

:func:`project` is the one place a projection is computed (a pure function: array in, tidy frame out);
:func:`embedding_scatter` and :func:`example_grid` only draw what they are given.
"""
from __future__ import annotations

from typing import Any, Collection, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .._validation import Data, Instance, Interval, Options, as_2d_float, check_choice, check_positive_int, declare
from . import _style
from ._builders import _require, _unique, attach_data

__all__ = ["project", "embedding_scatter", "example_grid", "factor_column", "PROJECTIONS", "WEBGL_THRESHOLD"]

PROJECTIONS = ("pca", "umap")
#: the columns :func:`project` itself writes; a factor of the same name is stored as ``factor_<name>``
PROJECTION_COLUMNS = ("index", "x", "y", "z", "label")
#: above this many points :func:`embedding_scatter` draws with WebGL (``go.Scattergl``)
WEBGL_THRESHOLD = 2000
_TITLE = Instance(str, none=True)


def _example_frame() -> pd.DataFrame:
    """A projection of six examples (what :func:`project` returns): a valid :func:`embedding_scatter` input."""
    return pd.DataFrame({"index": np.arange(6), "x": np.linspace(-1.0, 1.0, 6), "y": np.cos(np.arange(6.0)),
                         "label": np.arange(6) % 2})


@declare(x=Data("x"), method=Options(*PROJECTIONS), n_components=Interval(int, 1),
         labels=Data("any", none=True, bad=[np.zeros(Data.N - 1)]), factors=Instance(Mapping, none=True),
         seed=Interval(int, 0, none=True), umap_options=Instance(Mapping, none=True))
def project(x: Any, *, method: str = "pca", n_components: int = 2, labels: Any = None,
            factors: Mapping[str, Any] | None = None, seed: int = 0,
            umap_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Project the ``[N, D]`` representation ``x`` to ``n_components`` dimensions; one row per example.

    method:
      ``"pca"``  — principal-component scores ``(X - mean(X)) V_k`` where ``V_k`` holds the top-``k`` right
                   singular vectors of the centered ``X`` (= top eigenvectors of its covariance); sklearn
                   ``PCA`` in float64, exact solvers only (covariance eigendecomposition when N >= D, full
                   SVD otherwise); component signs follow sklearn's ``svd_flip`` convention.
                   ``frame.attrs["explained_variance_ratio"]``
                   lists each component's share of the total variance.
      ``"umap"`` — UMAP (McInnes, Healy & Melville 2018, umap-learn) with ``random_state=seed`` and
                   ``umap_options`` (e.g. ``n_neighbors``, ``min_dist``); float32, as umap-learn computes.
    labels, factors: per-example values added as columns ``label`` and one column per factor (for colouring);
      a factor named like a projection column (``x``, ``y``, ``z``, ``index``, ``label``) is stored as
      ``factor_<name>`` (:func:`factor_column`), never over the coordinates.

    Returns columns ``index`` (row of ``x``), ``x``, ``y`` (``z`` for a third component), then
    ``label`` and the factors. ``frame.attrs["method"]`` records the method.
    """
    check_choice(method, PROJECTIONS, "method")
    k = check_positive_int(n_components, "n_components")
    if k > 3:
        raise ValueError(f"n_components must be 1, 2 or 3 (it names the columns x, y, z), got {k}")
    x = as_2d_float(x, "x", min_rows=2)
    n, d = x.shape
    if k > min(n, d):
        raise ValueError(f"n_components={k} exceeds min(N, D) = {min(n, d)} of x with shape {x.shape}")
    attrs: dict[str, Any] = {"method": method}
    if method == "pca":
        from sklearn.decomposition import PCA

        # exact either way: eigh of the D x D covariance when N >= D (fast for N >> D), else a full SVD
        pca = PCA(n_components=k, svd_solver="covariance_eigh" if n >= d else "full")
        z = pca.fit_transform(x)
        attrs["explained_variance_ratio"] = [float(v) for v in pca.explained_variance_ratio_]
    else:
        import warnings

        try:
            import umap
        except ImportError:  # pragma: no cover - depends on the environment
            raise ImportError("method='umap' needs umap-learn: pip install umap-learn") from None
        opts = {"n_neighbors": min(15, n - 1), **dict(umap_options or {})}
        with warnings.catch_warnings():  # n_jobs is forced to 1 by random_state; umap warns about it
            warnings.simplefilter("ignore", UserWarning)
            z = umap.UMAP(n_components=k, random_state=seed, **opts).fit_transform(x.astype(np.float32))
        z = np.asarray(z, dtype=np.float64)
    out = pd.DataFrame({"index": np.arange(n)})
    for i, name in enumerate("xyz"[:k]):
        out[name] = z[:, i]
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape[:1] != (n,):
            raise ValueError(f"labels has {len(lab)} entries but x has {n} rows")
        out["label"] = lab
    for name, values in (factors or {}).items():
        v = np.asarray(values)
        if v.shape[:1] != (n,):
            raise ValueError(f"factors[{name!r}] has {len(v)} entries but x has {n} rows")
        column = factor_column(str(name))
        if column in out.columns:
            raise ValueError(f"factors[{name!r}] would be stored as column {column!r}, which another factor already "
                             "holds; rename one of them")
        out[column] = v if v.ndim == 1 else [str(r) for r in v]
    out.attrs.update(attrs)
    return out


@declare(name=Instance(str))
def factor_column(name: str) -> str:
    """The column of :func:`project`'s frame that holds factor ``name``: the name itself, or ``factor_<name>`` when
    the name is one of the projection's own columns (``index``, ``x``, ``y``, ``z``, ``label``; e.g. the ``shapes``
    position factors ``x`` and ``y``), so a factor never overwrites the coordinates.

    >>> factor_column("colour"), factor_column("x")
    ('colour', 'factor_x')
    """
    return f"factor_{name}" if name in PROJECTION_COLUMNS else name


def _is_categorical(s: pd.Series, max_levels: int = 24) -> bool:
    return not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s) or \
        (pd.api.types.is_integer_dtype(s) and s.nunique() <= max_levels)


def _custom(sub: pd.DataFrame, cols: list[str]) -> np.ndarray:
    """Per-point customdata: numeric (fast to serialise) when every column is numeric, else objects."""
    part = sub[cols]
    numeric = all(pd.api.types.is_numeric_dtype(part[c]) for c in cols)
    return part.to_numpy(dtype=np.float64 if numeric else object)


@declare(frame=Data("any", example=_example_frame,
                    bad=[pd.DataFrame({"x": [0.0], "y": [0.0], "label": [0]}), _example_frame().iloc[:0], "frame"]),
         color=Instance(str, none=True), x=Instance(str), y=Instance(str), webgl=Options(True, False, none=True),
         selected=Instance(Collection, none=True), hover=Instance(Collection), title=_TITLE,
         color_map=Instance(Mapping, none=True))
def embedding_scatter(frame: pd.DataFrame, color: str | None = "label", *, x: str = "x", y: str = "y",
                      webgl: bool | None = None, selected: Sequence[int] | None = None, hover: Sequence[str] = (),
                      title: str | None = None, color_map: Mapping[str, str] | None = None) -> go.Figure:
    """Scatter of a projection (:func:`project`), coloured by a column.

    color:    column to colour by; integer columns with few levels, strings and booleans are categorical
              (one trace per value, legend), other numbers get a colour scale. None: one colour.
    webgl:    ``go.Scattergl`` (WebGL); default when there are more than :data:`WEBGL_THRESHOLD` points.
    selected: example ``index`` values drawn highlighted (ringed), e.g. the current selection.
    hover:    extra columns shown on hover.

    Each point carries its example ``index`` as ``customdata[0]``, so a selection maps back to examples
    whatever the trace.
    """
    _require(frame, ["index", x, y] + ([color] if color else []) + list(hover), "embedding_scatter(frame)")
    if frame.empty:
        raise ValueError("embedding_scatter: the frame has no rows")
    use_gl = len(frame) > WEBGL_THRESHOLD if webgl is None else bool(webgl)
    Trace = go.Scattergl if use_gl else go.Scatter
    st = _style.get_style()
    hover = [h for h in hover if h not in ("index", x, y)]
    custom_cols = ["index"] + hover
    tmpl = "example %{customdata[0]}" + "".join(f"<br>{h}: %{{customdata[{i + 1}]}}" for i, h in enumerate(hover))
    fig = go.Figure()
    fig.update_layout(template=_style.TEMPLATE)
    marker_size = 5 if len(frame) > 500 else 7

    if color is not None and _is_categorical(frame[color]):
        levels = _unique(frame[color])
        try:
            levels = sorted(levels)
        except TypeError:
            pass
        cmap = {**_style.color_map(levels), **{str(k): v for k, v in (color_map or {}).items()}}
        for lev in levels:
            sub = frame[frame[color] == lev]
            fig.add_trace(Trace(x=sub[x].to_numpy(float), y=sub[y].to_numpy(float), mode="markers", name=str(lev),
                                marker=dict(color=cmap[str(lev)], size=marker_size, opacity=0.8),
                                customdata=_custom(sub, custom_cols),
                                hovertemplate=f"{color}={lev}<br>{tmpl}<extra></extra>"))
        if color:
            fig.update_layout(legend_title_text=str(color))
    else:
        marker: dict[str, Any] = dict(size=marker_size, opacity=0.8)
        if color is not None:
            marker.update(color=frame[color].to_numpy(float), colorscale=st["heatmap_colorscale"],
                          showscale=True, colorbar=dict(title=dict(text=str(color))))
        else:
            marker.update(color=st["palette"][0])
        fig.add_trace(Trace(x=frame[x].to_numpy(float), y=frame[y].to_numpy(float), mode="markers", name="examples",
                            marker=marker, customdata=_custom(frame, custom_cols),
                            hovertemplate=tmpl + "<extra></extra>", showlegend=False))
    if selected is not None and len(selected):
        sel = frame[frame["index"].isin(list(selected))]
        fig.add_trace(Trace(x=sel[x].to_numpy(float), y=sel[y].to_numpy(float), mode="markers", name="selected",
                            marker=dict(size=marker_size + 6, color="rgba(0,0,0,0)",
                                        line=dict(color=st["font_color"], width=1.5)),
                            customdata=_custom(sel, custom_cols), hoverinfo="skip"))
    method = frame.attrs.get("method")
    names = {"pca": ("PC 1", "PC 2"), "umap": ("UMAP 1", "UMAP 2")}.get(method, (x, y))
    evr = frame.attrs.get("explained_variance_ratio")
    if method == "pca" and evr and len(evr) >= 2:
        names = (f"PC 1 ({100 * evr[0]:.1f} %)", f"PC 2 ({100 * evr[1]:.1f} %)")
    fig.update_xaxes(title_text=names[0], showgrid=False, zeroline=False)
    fig.update_yaxes(title_text=names[1], showgrid=False, zeroline=False)
    fig.update_layout(dragmode="lasso", hovermode="closest")
    if title:
        fig.update_layout(title_text=title)
    return attach_data(fig, frame, "embedding_scatter")


@declare(examples=Data("any", example=lambda: np.random.default_rng(0).random((2, 4, 4)),
                       bad=[np.ones(5), np.ones((0, 4))]),
         titles=Instance(Iterable, none=True), ncols=Interval(int, 1, none=True),
         kind=Options("image", "signal", none=True), title=_TITLE)
def example_grid(examples: Any, titles: Sequence[str] | None = None, *, ncols: int | None = None,
                 kind: str | None = None, title: str | None = None) -> go.Figure:
    """A small grid of examples: images as pixel maps, 1-D signals as line plots.

    examples: ``[K, H, W]`` (grey) / ``[K, 3, H, W]`` / ``[K, H, W, 3]`` images (``[K, 1, H, W]`` is grey),
              or ``[K, L]`` / ``[K, C, L]`` signals (one line per channel).
    kind:     ``"image"`` or ``"signal"``; default guessed from the shape (3-D/4-D image, 2-D signal;
              a ``[K, C, L]`` array with C ≤ 4 and L > 16 is a signal).
    ncols:    panels per row (default ``min(K, 8)``).

    Attached data: one row per drawn value (``example``, ``title``, ``channel``, ``row``, ``col``, ``value``
    for images; ``example``, ``title``, ``channel``, ``t``, ``value`` for signals).
    """
    a = np.asarray(examples, dtype=np.float64)
    if a.ndim < 2 or a.ndim > 4:
        raise ValueError(f"examples must be [K, H, W], [K, C, H, W], [K, H, W, C], [K, L] or [K, C, L]; "
                         f"got shape {a.shape}")
    if len(a) == 0:
        raise ValueError("examples is empty: select at least one example")
    if kind is None:
        kind = "signal" if a.ndim == 2 or (a.ndim == 3 and a.shape[1] <= 4 and a.shape[2] > 16) else "image"
    check_choice(kind, ("image", "signal"), "kind")
    k = len(a)
    titles = [str(t) for t in titles] if titles is not None else [str(i) for i in range(k)]
    if len(titles) != k:
        raise ValueError(f"titles has {len(titles)} entries for {k} examples")
    ncols = min(k, 8) if ncols is None else check_positive_int(ncols, "ncols")
    nrows = -(-k // ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=titles, horizontal_spacing=0.02,
                        vertical_spacing=0.08 if nrows > 1 else 0.02)
    fig.update_layout(template=_style.TEMPLATE, showlegend=False)
    for ann in fig.layout.annotations:
        ann.font.size = 10
    rows = []
    st = _style.get_style()
    for i, ex in enumerate(a):
        r, c = i // ncols + 1, i % ncols + 1
        if kind == "image":
            if ex.ndim == 3 and ex.shape[0] in (1, 3) and ex.shape[-1] not in (1, 3):
                ex = np.moveaxis(ex, 0, -1)  # channels first -> last
            if ex.ndim == 3 and ex.shape[-1] == 1:
                ex = ex[..., 0]
            if ex.ndim == 2:
                fig.add_trace(go.Heatmap(z=ex, colorscale="gray", showscale=False,
                                         hovertemplate="(%{y}, %{x}): %{z:.3g}<extra></extra>"), row=r, col=c)
                channels = ex[..., None]
            elif ex.ndim == 3 and ex.shape[-1] == 3:
                lo, hi = float(ex.min()), float(ex.max())
                rgb = (ex - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(ex)
                fig.add_trace(go.Image(z=rgb.round().astype(np.uint8)), row=r, col=c)
                channels = ex
            else:
                raise ValueError(f"example {i} has shape {ex.shape}: not a grey or RGB image; pass kind='signal' "
                                 "for 1-D signals")
            hh, ww = channels.shape[:2]
            rr, cc, ch = np.meshgrid(np.arange(hh), np.arange(ww), np.arange(channels.shape[2]), indexing="ij")
            rows.append(pd.DataFrame({"example": i, "title": titles[i], "channel": ch.ravel(), "row": rr.ravel(),
                                      "col": cc.ravel(), "value": channels.ravel()}))
        else:
            sig = ex[None] if ex.ndim == 1 else ex
            if sig.ndim != 2:
                raise ValueError(f"example {i} has shape {ex.shape}: a signal is [L] or [C, L]")
            for ch, line in enumerate(sig):
                fig.add_trace(go.Scatter(y=line.tolist(), mode="lines",
                                         line=dict(color=st["palette"][ch % len(st["palette"])], width=1)),
                              row=r, col=c)
                rows.append(pd.DataFrame({"example": i, "title": titles[i], "channel": ch,
                                          "t": np.arange(len(line)), "value": line}))
    if kind == "image":
        fig.update_xaxes(showticklabels=False, showgrid=False, showline=False, ticks="")
        fig.update_yaxes(showticklabels=False, showgrid=False, showline=False, ticks="", autorange="reversed",
                         scaleanchor=None)
        for i in range(1, k + 1):  # square pixels in every panel
            fig.update_yaxes(scaleanchor=f"x{'' if i == 1 else i}", row=(i - 1) // ncols + 1,
                             col=(i - 1) % ncols + 1)
    else:
        fig.update_xaxes(showticklabels=False)
    fig.update_layout(margin=dict(l=10, r=10, b=10))
    if title:
        fig.update_layout(title_text=title)
    _style.panel_margin(fig)  # room above the first row for its titles (and on screen the toolbar's band)
    return attach_data(fig, pd.concat(rows, ignore_index=True), f"example_grid[{kind}]")

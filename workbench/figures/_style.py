"""Paper style: fonts, sizes, column widths, the Okabe–Ito palette, and two plotly templates.

Where the style comes from (first found wins, then deep-merged over the defaults below):

1. the file named by the environment variable ``WORKBENCH_STYLE``;
2. ``assets/paper_style.json`` at the root of a source checkout (the user-editable copy);
3. :data:`DEFAULT_STYLE` in this module.

The defaults live in code so an installed package (which does not ship ``assets/``) renders exactly
like a checkout; a test keeps ``assets/paper_style.json`` identical to :data:`DEFAULT_STYLE`, so
editing one without the other is caught. A user file may be partial: missing keys keep their default.

Two templates are registered in ``plotly.io.templates``:

* ``"workbench"``       — for the notebook: readable on screen (13 px fonts, thicker lines);
* ``"workbench_paper"`` — for export: sizes are in *points* (1 figure unit = 1 pt), single-column
  width 3.5 in = 252 pt, 8 pt text. :func:`workbench.figures._export` switches to it.

Neither is made plotly's global default; the builders ask for ``"workbench"`` explicitly.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import plotly.graph_objects as go
import plotly.io as pio

from .._validation import Instance, declare

__all__ = ["DEFAULT_STYLE", "STYLE_ENV", "POINTS_PER_INCH", "TEMPLATE", "PAPER_TEMPLATE", "asset_path",
           "find_style_file", "load_style", "get_style", "use_style", "register_templates", "palette",
           "color_map", "width_inches", "height_inches", "rgba", "MODEBAR_PX", "has_panel_titles", "panel_margin"]

STYLE_ENV = "WORKBENCH_STYLE"
POINTS_PER_INCH = 72.0
TEMPLATE = "workbench"
#: On screen plotly shows its toolbar (the "modebar": download, zoom, pan, ...) over the top right of a figure while
#: the pointer is on it, 2-25 px from the top (measured in Chromium, tests/test_browser_figures.py). The screen
#: template keeps this band free: the title starts below it, and figures with titles above their panels reserve it
#: in their top margin (:func:`panel_margin`). Exported (paper) figures have no toolbar and no band.
MODEBAR_PX = 30
PAPER_TEMPLATE = "workbench_paper"

#: The style, as code. ``assets/paper_style.json`` must hold the same values (tested).
DEFAULT_STYLE: dict[str, Any] = {
    "_comment": ("workbench paper style. Sizes under 'paper' are points (1/72 in); under 'screen' CSS px. "
                 "Edit this file (or point WORKBENCH_STYLE at a copy) and call "
                 "workbench.figures.use_style() to re-register the templates."),
    "font_family": "Helvetica, Arial, Liberation Sans, DejaVu Sans, sans-serif",
    "font_color": "#222222",
    "axis_color": "#444444",
    "grid_color": "#E8E8E8",
    # Okabe & Ito (2008) colour-blind-safe palette; yellow and black last (weak on white / reserved).
    "palette": ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"],
    "baseline_color": "#8C8C8C",
    "band_opacity": 0.2,
    "heatmap_colorscale": "Viridis",
    "dpi": 300,
    "width_in": {"single": 3.5, "double": 7.16},
    "height_in": {"single": 2.4, "double": 2.8},
    "paper": {
        "font_size": 8, "title_size": 9, "tick_size": 7, "legend_size": 7,
        "line_width": 1.25, "marker_size": 4, "axis_line_width": 0.75, "tick_len": 3,
        "margin": {"l": 36, "r": 6, "t": 8, "b": 30},
    },
    "screen": {
        "font_size": 13, "title_size": 16, "tick_size": 12, "legend_size": 12,
        "line_width": 2.0, "marker_size": 7, "axis_line_width": 1.0, "tick_len": 5,
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
    },
}

_current: dict[str, Any] | None = None


def asset_path() -> Path:
    """Where ``assets/paper_style.json`` is in a source checkout (it may not exist when installed)."""
    return Path(__file__).resolve().parents[2] / "assets" / "paper_style.json"


def find_style_file() -> Path | None:
    """The style file to load: ``$WORKBENCH_STYLE`` if set, else the checkout's asset, else None."""
    env = os.environ.get(STYLE_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"{STYLE_ENV}={env!r} does not name a file; unset it to use the defaults")
        return p
    p = asset_path()
    return p if p.is_file() else None


def _merge(base: dict, over: Mapping) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


@declare(path=Instance(str, os.PathLike, none=True))
def load_style(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Return the style dict: the JSON at ``path`` (or :func:`find_style_file`) merged over the defaults."""
    p = Path(path) if path is not None else find_style_file()
    if p is None:
        return copy.deepcopy(DEFAULT_STYLE)
    try:
        user = json.loads(Path(p).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"style file {p} is not valid JSON: {e}") from None
    if not isinstance(user, dict):
        raise ValueError(f"style file {p} must hold a JSON object, got {type(user).__name__}")
    style = _merge(DEFAULT_STYLE, user)
    if not style["palette"] or not all(isinstance(c, str) for c in style["palette"]):
        raise ValueError(f"style file {p}: 'palette' must be a non-empty list of colour strings")
    return style


@declare()
def get_style() -> dict[str, Any]:
    """The style in use (loaded on first call)."""
    global _current
    if _current is None:
        _current = load_style()
    return _current


@declare(path=Instance(str, os.PathLike, none=True))
def use_style(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Load a style file (or re-read the default one) and re-register both templates with it."""
    global _current
    _current = load_style(path)
    register_templates(_current)
    return _current


def _template(style: Mapping[str, Any], kind: str) -> go.layout.Template:
    s = style[kind]
    axis = dict(
        showline=True, linecolor=style["axis_color"], linewidth=s["axis_line_width"], mirror=False,
        ticks="outside", tickcolor=style["axis_color"], ticklen=s["tick_len"], tickwidth=s["axis_line_width"],
        tickfont=dict(size=s["tick_size"]), title=dict(font=dict(size=s["font_size"]), standoff=4),
        showgrid=True, gridcolor=style["grid_color"], gridwidth=0.5, zeroline=False, automargin=True,
    )
    layout = dict(
        font=dict(family=style["font_family"], size=s["font_size"], color=style["font_color"]),
        # the title hangs from the top of the figure (below the toolbar band on screen); automargin grows the top
        # margin when a long title wraps onto more lines
        title=dict(font=dict(size=s["title_size"]), x=0, xanchor="left", xref="paper", automargin=True,
                   yref="container", y=1, yanchor="top", pad=dict(t=MODEBAR_PX if kind == "screen" else 0)),
        colorway=list(style["palette"]),
        paper_bgcolor="white", plot_bgcolor="white",
        xaxis=dict(axis, showgrid=False), yaxis=axis,
        legend=dict(font=dict(size=s["legend_size"]), bgcolor="rgba(255,255,255,0)", borderwidth=0,
                    tracegroupgap=2, itemwidth=30),
        margin=dict(s["margin"]),
        colorscale=dict(sequential=style["heatmap_colorscale"]),
        annotationdefaults=dict(font=dict(size=s["font_size"])),
        hoverlabel=dict(font=dict(family=style["font_family"])),
        hovermode="closest",
    )
    if kind == "paper":
        w = style["width_in"]["single"] * POINTS_PER_INCH
        h = style["height_in"]["single"] * POINTS_PER_INCH
        layout.update(width=w, height=h, showlegend=True,
                      legend=dict(layout["legend"], orientation="h", x=0, xanchor="left", y=1.0,
                                  yanchor="bottom"))
    data = dict(
        scatter=[go.Scatter(line=dict(width=s["line_width"]), marker=dict(size=s["marker_size"]))],
        heatmap=[go.Heatmap(colorscale=style["heatmap_colorscale"],
                            colorbar=dict(outlinewidth=0, thickness=8 if kind == "paper" else 14,
                                          tickfont=dict(size=s["tick_size"])))],
    )
    return go.layout.Template(layout=layout, data=data)


@declare(style=Instance(Mapping, none=True))
def register_templates(style: Mapping[str, Any] | None = None) -> None:
    """(Re)build ``"workbench"`` and ``"workbench_paper"`` from ``style`` and register them with plotly."""
    style = get_style() if style is None else style
    pio.templates[TEMPLATE] = _template(style, "screen")
    pio.templates[PAPER_TEMPLATE] = _template(style, "paper")


@declare()
def palette() -> list[str]:
    """The colour cycle (Okabe–Ito by default)."""
    return list(get_style()["palette"])


@declare(keys=Instance(Iterable, example=["a", "b"]))
def color_map(keys: Iterable[Any]) -> dict[str, str]:
    """Assign palette colours to ``keys`` in the order given (cycling if there are more keys than colours)."""
    pal = palette()
    out: dict[str, str] = {}
    for k in keys:
        k = str(k)
        if k not in out:
            out[k] = pal[len(out) % len(pal)]
    return out


def width_inches(width: str | float | None) -> float:
    """``"single"``/``"double"``/None (single) or a number of inches -> inches."""
    widths = get_style()["width_in"]
    if width is None:
        return float(widths["single"])
    if isinstance(width, str):
        if width not in widths:
            raise ValueError(f"width must be one of {sorted(widths)} or a number of inches, got {width!r}")
        return float(widths[width])
    w = float(width)
    if not 0.5 <= w <= 40:
        raise ValueError(f"width is in inches and must be between 0.5 and 40, got {width!r}")
    return w


def height_inches(height: float | None, width: str | float | None) -> float:
    """Explicit inches, or the style's height for a named width, or width × single-column aspect."""
    heights = get_style()["height_in"]
    if height is not None:
        h = float(height)
        if not 0.5 <= h <= 40:
            raise ValueError(f"height is in inches and must be between 0.5 and 40, got {height!r}")
        return h
    if width is None or isinstance(width, str):
        return float(heights.get(width or "single", heights["single"]))
    widths = get_style()["width_in"]
    return float(width) * heights["single"] / widths["single"]


def has_panel_titles(fig: go.Figure) -> bool:
    """Whether ``fig`` has titles above its top panels: ``make_subplots(subplot_titles=...)`` writes them as
    annotations anchored at their bottom to the top of the plot area (``yref="paper"``, ``y = 1``)."""
    return any(a.yref == "paper" and a.yanchor == "bottom" and a.showarrow is False and a.y is not None
               and a.y >= 0.99 for a in fig.layout.annotations)


def panel_margin(fig: go.Figure, kind: str = "screen") -> go.Figure:
    """Set the top margin of a figure with titles above its panels; returns ``fig``.

    Annotations, which panel titles are, do not push plotly's margins, so the room is reserved here, from top to
    bottom: on screen the toolbar band (:data:`MODEBAR_PX`), the figure's title if it has one (1.6 × its font
    size), the panel titles (1.5 × the font size) and 4 units of gap. ``kind`` is ``"screen"`` (pixels; the
    builders) or ``"paper"`` (points; :func:`workbench.figures.export`).
    """
    s = get_style()[kind]
    title = fig.layout.title.text if fig.layout.title is not None else None
    top = (MODEBAR_PX if kind == "screen" else 0) + (1.6 * s["title_size"] if title else 0) + 1.5 * s["font_size"] + 4
    fig.update_layout(margin=dict(t=round(top)))
    return fig


def rgba(color: str, alpha: float) -> str:
    """``"#RRGGBB"`` (or ``"rgb(r,g,b)"``) -> ``"rgba(r,g,b,alpha)"`` for translucent bands."""
    c = color.strip()
    if c.startswith("#") and len(c) in (4, 7):
        h = c[1:]
        if len(h) == 3:
            h = "".join(ch * 2 for ch in h)
        r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
        return f"rgba({r},{g},{b},{alpha})"
    if c.startswith("rgb(") and c.endswith(")"):
        return "rgba(" + c[4:-1] + f",{alpha})"
    return c  # named colours: leave opaque rather than guess


register_templates(get_style())

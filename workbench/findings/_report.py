"""A finding's report: the study table, the verdict, the figures, one offline HTML page."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd

from ..runs import atomic_write_text

__all__ = ["verdict_figure", "write_report"]

_COLORS = {"shown": "#1b7837", "not shown": "#b2182b", "inconclusive": "#7f7f7f"}


def verdict_figure(checks: pd.DataFrame, title: str = "Verdict") -> Any:
    """One panel per check: each seed's contrast (dots), their mean with the bootstrap interval (bar), and the
    no-effect line at 0 — what the verdict rule decided from."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n = len(checks)
    fig = make_subplots(rows=n, cols=1, vertical_spacing=0.5 / max(n, 1),
                        subplot_titles=["<br>".join(textwrap.wrap(f"[{r.outcome}] {r.check}", 90))
                                        for r in checks.itertuples()])
    for i, r in enumerate(checks.itertuples(), start=1):
        per_seed = json.loads(r.per_seed) if isinstance(r.per_seed, str) else dict(r.per_seed)
        color = _COLORS.get(r.outcome, "#333")
        fig.add_trace(go.Scatter(x=list(per_seed.values()), y=[1] * len(per_seed), mode="markers",
                                 marker={"size": 9, "color": color, "opacity": 0.6},
                                 text=[f"seed {s}" for s in per_seed], name="per seed", showlegend=i == 1,
                                 hovertemplate="%{text}: %{x:.4g}<extra></extra>"), row=i, col=1)
        fig.add_trace(go.Scatter(x=[r.estimate], y=[0], mode="markers", marker={"size": 12, "color": color,
                                                                                  "symbol": "diamond"},
                                 error_x={"type": "data", "symmetric": False, "array": [r.ci_high - r.estimate],
                                          "arrayminus": [r.estimate - r.ci_low]},
                                 name="mean, 95 % interval", showlegend=i == 1,
                                 hovertemplate=f"{r.estimate:.4g} [{r.ci_low:.4g}, {r.ci_high:.4g}]<extra></extra>"),
                      row=i, col=1)
        fig.add_vline(x=0, line_dash="dash", line_color="#444", row=i, col=1)
        label = f"{r.quantity}: " + (f"({r.b}) − ({r.a})" if r.b else f"{r.a}")
        fig.update_xaxes(title_text="<br>".join(textwrap.wrap(label, 80)), row=i, col=1)
        fig.update_yaxes(visible=False, range=[-0.8, 1.8], row=i, col=1)
    fig.update_layout(title=title, height=230 * n + 80, margin={"t": 110})
    return fig


def write_report(result: Any, out: str | Path, *, static: bool = True) -> Path:
    """Write ``results.csv`` (the study table), ``verdict.csv`` + ``verdict.json``, each figure (``<name>.svg``
    with its plotted data ``<name>.csv`` and spec ``<name>.json``; without ``static`` only the CSV and JSON) and
    ``report.html`` (claim, source, verdict, figures, verdict table) into ``out``; return ``out``."""
    from .. import figures

    finding, verdict, table = result.finding, result.verdict, result.table
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "results.csv", index=False)
    verdict.checks.to_csv(out / "verdict.csv", index=False)
    atomic_write_text(out / "verdict.json", json.dumps(verdict.to_dict(), indent=1))
    figs = {"verdict_by_seed": verdict_figure(verdict.checks, title=f"{finding.id} verdict: {verdict.outcome}")}
    if finding.figures is not None:
        own = finding.figures(table)
        clash = sorted(set(own) & {"results", "verdict", "report", "verdict_by_seed"})
        if clash:
            raise ValueError(f"finding {finding.id}: figure names {clash} would overwrite the report's own files")
        figs |= own
    for name, fig in figs.items():
        if static:
            try:
                figures.export(fig, out / f"{name}.svg")
                continue
            except Exception as err:  # static export needs Chromium; the data and spec are still written
                print(f"static export of {name} skipped ({type(err).__name__}: {err})")
        figures.export(fig, out / f"{name}.csv")  # the plotted data and the spec
    notes = {"verdict_by_seed": f"{finding.claim} ({finding.source}) — predicts: {finding.predicts} — "
                        f"{verdict.outcome.upper()} with seeds {verdict.seeds} in {verdict.wall_s:.0f} s on "
                        f"{verdict.machine}. {finding.notes}".strip()}
    figures.to_html(figs, out / "report.html", title=f"{finding.id} — {finding.name} ({verdict.mode})",
                    table=verdict.checks, table_title="Checks", notes=notes)
    return out

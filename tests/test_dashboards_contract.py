"""The dashboard base contract: every dashboard class exported by ``workbench.dashboards`` subclasses
``Dashboard`` and answers ``select``, ``current_frame``, ``plotted_data`` and ``export`` on a small instance
built from the library's own producers (so the inputs have the layout the library really returns)."""
from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("ipywidgets")
import workbench.dashboards as dashboards
from workbench.activations import Activations
from workbench.dashboards._base import CONTRACT, Dashboard, LiveFigure
from workbench.results import tidy

pytestmark = pytest.mark.usefixtures("one_thread")

LAYERS = ["l1", "l2", "l3"]
TINY = dict(dataset="gaussian-mixture", dataset_options={"n_train": 64, "n_test": 32, "n_ood": 32, "dim": 8},
            model="mlp", model_options={"hidden": [8]}, steps=6, batch_size=16, checkpoints=1, lr=1e-2)


def _acts(seed: int, n: int = 40) -> Activations:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    layers = {name: torch.tensor(rng.normal(size=(n, 4)) + labels[:, None] * (i + 1), dtype=torch.float32)
              for i, name in enumerate(LAYERS)}
    return Activations(layers, labels=labels)


def _layer_dashboard(tmp_path):
    from workbench.spectrum import layer_spectrum_table

    results = pd.concat([layer_spectrum_table(_acts(s), ["rankme", "effective_rank"]).assign(run=run, step=10)
                         for s, run in enumerate(["a", "b"])], ignore_index=True)
    return dashboards.LayerDashboard(results), {"runs": ["a"], "measure": "effective_rank"}


def _probe_dashboard(tmp_path):
    from workbench.probing import linear_probe

    a, b = _acts(0), _acts(1)
    table = linear_probe(a, a.labels, evals={"test": (b, b.labels)}, n_boot=0)
    return dashboards.ProbeDashboard(table), {"split": "test"}


def _similarity_dashboard(tmp_path):
    from workbench.study import cross_run_similarity

    pairs = cross_run_similarity(_acts(0), _acts(1), run_a="a", run_b="b", step=10)
    return dashboards.SimilarityDashboard(pairs), {"step": 10}


def _spectrum_dashboard(tmp_path):
    spectra, measures = dashboards.spectrum_frames({("a", 0): _acts(0), ("a", 10): _acts(1)})
    return dashboards.SpectrumDashboard(spectra, measures), {"layer": "l2", "steps": [0, 10]}


def _embedding_explorer(tmp_path):
    return dashboards.EmbeddingExplorer({"a @ 10": _acts(0)}), {"layer": "l3"}


def _saliency_dashboard(tmp_path):
    torch.manual_seed(0)
    models = {name: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 3 * 3, 2)) for name in ("a", "b")}

    def gradient(model, inputs, method):
        x = inputs.clone().requires_grad_(True)
        model(x)[:, 0].sum().backward()
        return x.grad

    return (dashboards.SaliencyDashboard(models, torch.rand(4, 2, 3, 3), attribute_fn=gradient, methods=["gradient"]),
            {"index": 2, "models": ["b"]})


def _study_dashboard(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for noise in (0.0, 0.2, 0.4):
        run = f"label_noise={noise},seed=0"
        rows += [dict(run=run, step=6, layer=layer, measure="rankme", split="test", value=float(rng.random()),
                      kind="measure", label_noise=noise, seed=0) for layer in LAYERS]
        rows.append(dict(run=run, step=6, layer="l3", measure="accuracy", split="test", value=1 - noise,
                         kind="downstream", method="linear", label_noise=noise, seed=0))
    return dashboards.StudyDashboard(tidy(rows)), {"layer": "l2"}


def _pretraining_lab(tmp_path):
    from workbench.runs import RunStore
    from workbench.train import train

    store = RunStore(tmp_path / "store")
    train(TINY, store, name="tiny", progress=False)
    return dashboards.PretrainingLab(store, TINY), {"run": "tiny"}


FACTORIES = {"LayerDashboard": _layer_dashboard, "ProbeDashboard": _probe_dashboard,
             "SimilarityDashboard": _similarity_dashboard, "SpectrumDashboard": _spectrum_dashboard,
             "EmbeddingExplorer": _embedding_explorer, "SaliencyDashboard": _saliency_dashboard,
             "StudyDashboard": _study_dashboard, "PretrainingLab": _pretraining_lab}

EXPORTED = sorted(name for name in dashboards.__all__
                  if inspect.isclass(getattr(dashboards, name)) and issubclass(getattr(dashboards, name), Dashboard))


def test_every_exported_dashboard_is_covered():
    """A new dashboard must be added here (and so honour the contract); every class with a figure is one."""
    assert sorted(FACTORIES) == EXPORTED
    widgets = [name for name in dashboards.__all__ if inspect.isclass(getattr(dashboards, name))
               and "figure" in getattr(getattr(dashboards, name), "__annotations__", {})]
    assert set(widgets) <= set(EXPORTED)


def test_a_dashboard_without_the_contract_cannot_be_made():
    class Incomplete(Dashboard):
        def _build_figure(self):
            return None

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()


def _descendants(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _descendants(child)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_dashboard_honours_the_base_contract(name, tmp_path):
    dash, choices = FACTORIES[name](tmp_path)
    assert isinstance(dash, Dashboard) and all(callable(getattr(dash, m)) for m in CONTRACT)
    figure = dash.figure
    assert dash.select(**choices) is dash and dash.figure is figure, name  # redrawn in place
    frame = dash.current_frame()
    assert isinstance(frame, pd.DataFrame) and len(frame), name
    shown = dash.plotted_data()
    assert isinstance(shown, pd.DataFrame) and len(shown), name
    written = dash.export(tmp_path / f"{name}.csv")
    assert set(written) == {"csv", "json"} and written["csv"].exists(), name
    assert written["csv"].read_text() == shown.to_csv(index=False), name  # the view written is the view shown
    with pytest.raises(ValueError):
        dash.select(**{next(iter(choices)): "no-such-choice"})
    # every plot it shows is a LiveFigure: its front-end model is ready before plotly's 5 MB module has loaded
    # (a plain FigureWidget whose module took over 2 s to load dropped every later update: test_browser.py)
    import plotly.graph_objects as go

    plots = [w for w in _descendants(dash.widget) if isinstance(w, go.FigureWidget)]
    assert plots and all(isinstance(w, LiveFigure) for w in plots), (name, [type(w).__name__ for w in plots])
    assert all(len(w._esm) < 10_000 and w._plotly_esm == str(go.FigureWidget._esm) for w in plots), name

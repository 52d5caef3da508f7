"""Findings as experiments: the verdict rule against hand computations, the registry, the CLI, a smoke run."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from workbench import findings
from workbench.cli import main
from workbench.findings import Check, Quantity, Verdict
from workbench.results import tidy
from workbench.runs import RunConfig, RunStore


def _table(values: dict[float, list[float]], ci: dict[float, list[float]] | None = None) -> pd.DataFrame:
    """A study-like table: one probe accuracy per (noise, seed) run, optionally with an interval half-width."""
    rows = []
    for noise, per_seed in values.items():
        for seed, v in enumerate(per_seed):
            half = (ci or {}).get(noise, [0.0] * len(per_seed))[seed]
            rows.append({"run": f"noise={noise},seed={seed}", "step": 10, "measure": "accuracy", "split": "ood",
                         "value": v, "ci_low": v - half if half else np.nan, "ci_high": v + half if half else np.nan,
                         "kind": "downstream", "noise": noise, "seed": seed})
    return tidy(rows)


ACC = Quantity({"kind": "downstream", "measure": "accuracy", "split": "ood"})
KEYS = ["noise", "seed"]


def _exact_interval(d: np.ndarray) -> tuple[float, float]:
    """The 2.5 / 97.5 % quantiles of the exact bootstrap distribution of the mean over seeds: every one of the
    n^n equally likely resamples enumerated."""
    means = np.array([d[list(i)].mean() for i in itertools.product(range(len(d)), repeat=len(d))])
    return tuple(np.quantile(means, [0.025, 0.975]))


def test_interval_is_the_bootstrap_over_seeds_of_the_paired_difference():
    t = _table({0.0: [0.90, 0.80, 0.85, 0.95], 0.3: [0.70, 0.75, 0.50, 0.90]})
    row = Check("falls", ACC, a={"noise": 0.0}, b={"noise": 0.3}, expect="decrease").evaluate(t, KEYS)
    d = np.array([0.70 - 0.90, 0.75 - 0.80, 0.50 - 0.85, 0.90 - 0.95])
    assert row["estimate"] == pytest.approx(d.mean())
    low, high = _exact_interval(d)
    assert row["ci_low"] == pytest.approx(low, abs=0.01) and row["ci_high"] == pytest.approx(high, abs=0.01)
    assert json.loads(row["per_seed"]) == pytest.approx(dict(zip(["0", "1", "2", "3"], d)))
    assert row["outcome"] == "shown" and row["n_seeds"] == 4


@pytest.mark.parametrize(("clean", "noisy", "expect", "outcome"), [
    ([0.9, 0.8, 0.85], [0.7, 0.6, 0.75], "decrease", "shown"),
    ([0.9, 0.8, 0.85], [0.7, 0.6, 0.75], "increase", "not shown"),
    ([0.9, 0.8, 0.85], [0.95, 0.6, 0.85], "decrease", "inconclusive"),  # seeds disagree
    ([0.9, 0.8, 0.85], [0.7, 0.6, 0.75], "change", "shown"),
    ([0.9, 0.8, 0.85], [0.95, 0.6, 0.85], "change", "inconclusive"),
    ([0.9, 0.8, 0.85], [0.91, 0.79, 0.86], "no_drop", "shown"),  # within noise of clean
    ([0.9, 0.8, 0.85], [0.7, 0.6, 0.75], "no_drop", "not shown"),  # clearly below
])
def test_outcomes_follow_the_rule(clean, noisy, expect, outcome):
    t = _table({0.0: clean, 0.3: noisy})
    assert Check("c", ACC, a={"noise": 0.0}, b={"noise": 0.3}, expect=expect).evaluate(t, KEYS)["outcome"] == outcome


def test_one_seed_or_two_cannot_decide():
    t = _table({0.0: [0.9, 0.8], 0.3: [0.1, 0.2]})
    row = Check("c", ACC, a={"noise": 0.0}, b={"noise": 0.3}, expect="decrease").evaluate(t, KEYS)
    assert row["outcome"] == "inconclusive" and "at least 3" in row["reason"]


def test_example_level_intervals_widen_the_seed_interval():
    """With an example-level interval of ±0.2 on every accuracy, a 0.05 drop shared by all seeds is no longer
    distinguishable from no effect; without it, it is."""
    values = {0.0: [0.80, 0.81, 0.82], 0.3: [0.75, 0.76, 0.77]}
    check = Check("c", ACC, a={"noise": 0.0}, b={"noise": 0.3}, expect="decrease")
    assert check.evaluate(_table(values), KEYS)["outcome"] == "shown"
    wide = check.evaluate(_table(values, ci={0.0: [0.2] * 3, 0.3: [0.2] * 3}), KEYS)
    assert wide["outcome"] == "inconclusive"
    # the sd used per run is the half-width / 1.96; the contrast's is √2 times that: the interval's half-width is
    # about 1.96 · √2 · (0.2/1.96) / √3 around the mean (normal approximation of the mean of 3 draws)
    assert (wide["ci_high"] - wide["ci_low"]) / 2 == pytest.approx(1.96 * np.sqrt(2) * 0.2 / 1.96 / np.sqrt(3),
                                                                   rel=0.15)
    per_run = ACC.per_run(_table(values, ci={0.0: [0.2] * 3, 0.3: [0.2] * 3}), KEYS)
    np.testing.assert_allclose(per_run["sd"], 0.4 / 3.92)


def test_one_condition_checks_and_reducers():
    rows = [{"run": f"s{s}", "step": 0, "layer": f"layer{i}", "layer_index": i, "measure": "grad_norm",
             "value": 10.0 ** (-0.5 * i + 0.01 * s), "kind": "history", "seed": s} for s in range(3) for i in range(4)]
    t = tidy(rows)
    q = Quantity({"kind": "history"}, step="all", reduce=findings.slope("layer_index", log=True))
    np.testing.assert_allclose(q.per_run(t, ["seed"])["value"], -0.5)
    assert Check("falls", q, a={}, expect="negative").evaluate(t, ["seed"])["outcome"] == "shown"
    assert Check("rises", q, a={}, expect="positive").evaluate(t, ["seed"])["outcome"] == "not shown"


def test_combined_outcome():
    from workbench.findings._base import combine

    assert combine(["shown", "shown"]) == "shown"
    assert combine(["shown", "inconclusive"]) == "inconclusive"
    assert combine(["shown", "not shown", "inconclusive"]) == "not shown"
    assert combine([]) == "inconclusive"


def test_bad_checks_and_selections_are_named():
    with pytest.raises(ValueError, match="expect='up' is not one of"):
        Check("c", ACC, a={}, b={}, expect="up")
    with pytest.raises(ValueError, match="positive/negative for one condition"):
        Check("c", ACC, a={"noise": 0.0}, expect="increase")
    t = _table({0.0: [0.9, 0.8, 0.7]})
    with pytest.raises(ValueError, match="selects column 'task'"):
        Quantity({"task": "x"}).per_run(t, KEYS)
    with pytest.raises(ValueError, match="no rows of the study table match"):
        Quantity({"measure": "loss"}).per_run(t, KEYS)
    with pytest.raises(ValueError, match="selects 2 rows of run"):
        Quantity({"kind": "downstream"}).per_run(pd.concat([t, t.assign(split="test")]), KEYS)
    with pytest.raises(ValueError, match="not a varied column"):
        Check("c", ACC, a={"temperature": 0.1}, expect="positive").evaluate(t, KEYS)


def test_replace_with_a_dotted_key_changes_one_entry_of_a_dict_field():
    base = RunConfig(dataset="shapes", dataset_options={"n_train": 100, "size": 32}, model="cnn",
                     model_options={"width": 16, "depth": 3})
    cfg = base.replace(**{"steps": 7, "model_options.width": 8, "dataset_options.n_train": 50})
    assert (cfg.steps, dict(cfg.model_options), dict(cfg.dataset_options)) == (
        7, {"width": 8, "depth": 3}, {"n_train": 50, "size": 32})
    with pytest.raises(ValueError, match="unknown RunConfig field 'widht'"):
        base.replace(widht=3)
    with pytest.raises(ValueError, match="steps is not a dict-valued field"):
        base.replace(**{"steps.x": 3})


def test_registry_lists_twelve_findings_and_finds_them_by_id_or_name(tmp_path):
    assert list(findings.CATALOG) == [f"S{i}" for i in range(1, 13)]
    assert list(findings.FINDINGS) == list(findings.CATALOG)  # every finding has its experiment
    assert findings.get("s1") is findings.get("label_noise") is findings.FINDINGS["S1"]
    assert findings.get("seed_subspaces") is findings.FINDINGS["S9"]
    with pytest.raises(ValueError, match="unknown finding 'S13'"):
        findings.get("S13")
    for f in findings.FINDINGS.values():
        assert len(f.settings["quick"].seeds) >= 3 and len(f.settings["full"].seeds) >= 3, f.id
        assert f.claim and f.source and f.predicts and f.checks
        # the small settings build a valid grid up front (no training); the full one a valid config
        for mode in ("smoke", "quick"):
            study = f.make_study(mode, store=RunStore(tmp_path))
            assert len(study.configs) == len(f.settings[mode].seeds) * int(np.prod([len(v) for v in f.vary.values()]))
        assert f.base.replace(**f.settings["full"].config).steps > f.base.steps


def test_findings_table_prefers_the_users_latest_verdict(tmp_path, capsys):
    store = RunStore(tmp_path / "store")
    recorded = findings.recorded_verdicts()
    table = findings.findings_table(store)
    assert len(table) == 12 and "no experiment yet" not in set(table.verdict)
    for fid in findings.FINDINGS:
        row = table.set_index("id").loc[fid]
        assert (row["origin"], row["verdict"]) == (("recorded", recorded[fid].outcome) if fid in recorded
                                                   else ("", "not run yet"))
    checks = pd.DataFrame([{"check": "c", "quantity": "q", "a": "x=0", "b": "x=1", "expect": "increase",
                            "n_seeds": 3, "estimate": 0.5, "ci_low": 0.1, "ci_high": 0.9, "per_seed": "{}",
                            "outcome": "shown", "reason": ""}])
    findings.save_verdict(Verdict("S4", "quick", "shown", checks, [0, 1, 2], 12.0, "2099-01-01 00:00 UTC", "here"),
                          store)
    row = findings.findings_table(store).set_index("id").loc["S4"]
    assert (row["origin"], row["verdict"], row["date"]) == ("yours", "shown", "2099-01-01 00:00 UTC")
    assert "+0.5 [+0.1, +0.9] shown" in row["numbers"]
    (store.root / "findings" / "S1-quick.json").write_text("{broken")
    with pytest.warns(UserWarning, match="unreadable verdict file"):
        assert findings.findings_table(store).set_index("id").loc["S1", "origin"] != "yours"
    assert main(["findings", "--store", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") >= 24 and "S12" in out and "your run" in out
    assert store.ids() == []  # listing trains nothing


def test_study_cli_runs_a_finding_and_writes_its_report(tmp_path, capsys):
    """S12 at its smoke size through the CLI: the report, tables and verdict; the verdict's numbers are
    recomputed here by hand from the written results table."""
    store, out = tmp_path / "store", tmp_path / "out"
    assert main(["study", "memorization", "--smoke", "--out", str(out), "--store", str(store), "--no-static"]) == 0
    printed = capsys.readouterr().out
    assert "S12 (smoke, seeds [0, 1]): INCONCLUSIVE" in printed  # two seeds never decide
    assert {"results.csv", "verdict.csv", "verdict.json", "report.html", "clean_vs_flipped.csv",
            "el2n_auroc.csv", "verdict_by_seed.csv"} <= {p.name for p in out.iterdir()}
    table = pd.read_csv(out / "results.csv")
    verdict = pd.read_csv(out / "verdict.csv")
    auroc = table[table.measure == "el2n_auroc"]
    for seed, g in auroc.groupby("seed"):
        g = g.sort_values("step")
        early = g.value.to_numpy()[np.argmin(np.abs(g.step.to_numpy() - 0.1 * g.step.max()))]
        got = json.loads(verdict.set_index("quantity").loc["EL2N AUROC early − late", "per_seed"])[str(seed)]
        assert got == pytest.approx(early - g.value.iloc[-1], abs=1e-6)
    run = RunStore(store).runs()[0]
    from workbench.findings.memorization import el2n_auroc

    scores = run.load_artifact(f"el2n_{run.checkpoints()[-1]:08d}")["scores"]
    flipped = run.load_artifact("label_noise")["flipped"]
    # AUROC by the definition (probability a flipped example outscores a clean one, ties one half)
    pos, neg = scores[flipped], scores[~flipped]
    ref = ((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())
    assert el2n_auroc(run, run.checkpoints()[-1]) == pytest.approx(ref)
    html = (out / "report.html").read_text()
    assert "Under label noise" in html and "Checks" in html
    assert json.loads((out / "verdict.json").read_text())["finding"] == "S12"
    # a smoke verdict is kept but is not evidence: the listing does not show it as the user's verdict
    assert (store / "findings" / "S12-smoke.json").exists()
    assert findings.findings_table(store).set_index("id").loc["S12", "origin"] != "yours"

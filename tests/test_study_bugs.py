"""Regression tests for the study layer's bugs (issue 14) and its subjects: dict-valued and dotted ``vary`` keys,
a failing downstream task keeping the run's other rows (and per-task splits), store names that do not collide
across studies, the ``layers=None`` documentation, every argument checked before training, a picklable job, and
studies over runs already in the store. Each test fails on the study layer before these fixes."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from workbench import spectrum
from workbench.activations import extract
from workbench.data import load
from workbench.models import select_layers
from workbench.results import check_tidy
from workbench.runs import RunConfig, RunStore
from workbench.study import InProcessExecutor, Study, StudyJob, run_job
from workbench.train import train
from workbench.train.downstream import evaluate

pytestmark = [pytest.mark.usefixtures("one_thread")]

DATA = {"n_train": 200, "n_test": 100, "n_ood": 100, "dim": 8}
GMM = {"dataset": "gaussian-mixture", "dataset_options": DATA, "model": "mlp", "model_options": {"hidden": [12]},
       "steps": 5, "lr": 1e-2, "batch_size": 32, "checkpoints": 1}
SHAPES = {"dataset": "shapes", "dataset_options": {"n_train": 64, "n_test": 24, "n_ood": 24, "size": 16},
          "model": "cnn", "model_options": {"width": 8, "depth": 2}, "steps": 2, "batch_size": 16, "lr": 1e-3,
          "checkpoints": 1}
QUICK = {"downstream": [], "measures": ["rankme"], "measure_examples": 50}


def _mtimes(store: RunStore) -> dict:
    return {p: p.stat().st_mtime_ns for p in store.root.glob("runs/*/checkpoints/*/model.safetensors")}


# ------------------------------------------------------------------------------------------ 1 dict-valued vary
def test_dict_valued_vary_fills_its_column_with_the_json_of_each_dict(tmp_path):
    widths = [{"hidden": [8]}, {"activation": "tanh", "hidden": [8]}]
    st = Study(GMM, vary={"model_options": widths}, store=tmp_path, **QUICK)
    table = st.run(progress=False)
    assert st.failures == []
    want = ['{"hidden": [8]}', '{"activation": "tanh", "hidden": [8]}']  # JSON with sorted keys, by hand
    assert table["model_options"].notna().all()
    assert sorted(table["model_options"].unique()) == sorted(want)
    assert sorted(table["run"].unique()) == sorted(f"model_options={w},seed=0" for w in want)
    by_run = table.groupby("run")["model_options"].agg(set)
    assert all(len(v) == 1 for v in by_run)  # one value per run, hashable
    trained = {json.dumps(r.config.model_options, sort_keys=True) for r in st.store.runs()}
    assert trained == set(want)


def test_dotted_vary_key_changes_one_entry_of_a_dict_field(tmp_path):
    st = Study(GMM, vary={"model_options.activation": ["relu", "tanh"]}, store=tmp_path, **QUICK)
    assert {label: cfg.model_options for label, (_, cfg) in st.configs.items()} == {
        "model_options.activation=relu,seed=0": {"hidden": [12], "activation": "relu"},
        "model_options.activation=tanh,seed=0": {"hidden": [12], "activation": "tanh"}}
    table = st.run(progress=False)
    assert st.failures == []
    assert dict(table.groupby("run")["model_options.activation"].first()) == {
        "model_options.activation=relu,seed=0": "relu", "model_options.activation=tanh,seed=0": "tanh"}
    assert "model_options" not in table.columns
    stored = {r.config.model_options["activation"]: r.config.model_options for r in st.store.runs()}
    assert stored["tanh"] == {"hidden": [12], "activation": "tanh"}
    # an unknown entry after the dot is the model's to refuse (at build), not the Study's
    Study(GMM, vary={"model_options.nonsense": [1]}, store=tmp_path, **QUICK)


@pytest.mark.parametrize("vary, error, match", [
    ({"model_optoins.activation": ["relu"]}, ValueError, r"unknown config field 'model_optoins'"),
    ({"lr.value": [0.1]}, ValueError, r"lr is not a dict-valued field"),
    ({"model_options.": [1]}, ValueError, r"names no entry after the dot"),
    ({"model_options": [{"hidden": [8]}], "model_options.activation": ["relu"]}, ValueError, r"both"),
])
def test_bad_dotted_vary_keys(tmp_path, vary, error, match):
    with pytest.raises(error, match=match):
        Study(GMM, vary=vary, store=tmp_path, **QUICK)


# ------------------------------------------------------------------------------------------ 2 a failing task
def test_a_failing_downstream_task_keeps_the_rest_of_the_run(tmp_path):
    """On ``shapes`` the OOD split holds colours the training split lacks: the colour probe fails on it."""
    st = Study(SHAPES, tasks=[None, "color"], measures=["rankme"], measure_examples=24, store=tmp_path)
    with pytest.warns(UserWarning, match=r"run 'seed=0': task color: ValueError: .*never occur in the training"):
        table = st.run(progress=False)
    (label, error), = st.failures
    assert label == "seed=0" and error.startswith("task color: ValueError: ") and "ood" in error
    assert set(table["kind"]) == {"measure", "downstream", "history"}
    down = table[table.kind == "downstream"]
    assert set(down["task"]) == {"label"} and set(down["split"]) == {"test", "ood"}
    assert len(table[table.kind == "history"]) > 0 and len(table[table.kind == "measure"]) > 0


def test_splits_chosen_per_task(tmp_path):
    st = Study(SHAPES, tasks=[None, {"target": "color", "splits": ["test"]}], measures=[], store=tmp_path)
    table = st.run(progress=False)
    assert st.failures == []
    down = table[table.kind == "downstream"]
    assert set(down[down.task == "label"]["split"]) == {"test", "ood"}
    color = down[down.task == "color"]
    assert set(color["split"]) == {"test"}
    run = st.store.runs()[0]
    direct = evaluate(run, "color", splits=["test"])  # the same evaluation asked of evaluate() itself
    got = color.set_index("measure")["value"].sort_index()
    want = direct.set_index("measure")["value"].sort_index()
    pd.testing.assert_series_equal(got, want, check_names=False)


# ------------------------------------------------------------------------------------------ 3 run names
def test_store_names_carry_the_study_name(tmp_path):
    store = RunStore(tmp_path)
    a = Study(GMM, store=store, name="a", downstream=[], measures=["rankme", "cka"], measure_examples=50)
    b = Study({**GMM, "steps": 4}, store=store, name="b", **QUICK)
    ta, tb = a.run(progress=False), b.run(progress=False)
    assert set(ta["run"]) == set(tb["run"]) == {"seed=0"}  # the table keeps the short label
    assert sorted(r.name for r in store.runs()) == ["a/seed=0", "b/seed=0"]
    assert store.get("a/seed=0").config.steps == 5 and store.get("b/seed=0").config.steps == 4
    two = Study(GMM, vary={"lr": [1e-2, 2e-2]}, store=store, name="c", downstream=[], measures=["cka"],
                measure_examples=50)
    two.run(progress=False)  # cross-run measures look the runs up again: their names must stay
    assert {r.name for r in store.runs()} >= {"c/lr=0.01,seed=0", "c/lr=0.02,seed=0"}


def test_a_name_several_runs_share_is_ambiguous(tmp_path):
    store = RunStore(tmp_path)
    ids = sorted(store.create({**GMM, "seed": s}, name="seed=0").id for s in (0, 1))
    with pytest.raises(ValueError, match="ambiguous") as info:
        store.get("seed=0")
    assert all(i in str(info.value) for i in ids)


# ------------------------------------------------------------------------------------------ 4 layers=None
def test_layers_none_measures_every_probe_point_as_documented(tmp_path):
    st = Study(SHAPES, downstream=[], measures=["rankme"], measure_examples=24, store=tmp_path)
    table = st.run(progress=False)
    model = st.store.runs()[0].load_model()
    meas = table[table.kind == "measure"].sort_values("layer_index")
    want = list(select_layers(model, None))
    assert list(meas["layer"]) == want and {"pool", "head"} <= set(want)
    doc = " ".join(Study.__doc__.split())
    layers_doc = doc[doc.index("layers :"):doc.index("store :")]
    assert "select_layers" in layers_doc and "None selects every probe point" in layers_doc
    assert "pool" in layers_doc and "head" in layers_doc and "all but" not in layers_doc


# ------------------------------------------------------------------------------------------ 5 arguments up front
@pytest.mark.parametrize("kwargs, error, match", [
    ({"seeds": []}, ValueError, r"seeds is empty"),
    ({"seeds": ["a"]}, TypeError, r"seeds must hold integers"),
    ({"seeds": 3}, TypeError, r"seeds must be a list"),
    ({"seeds": [0, 0]}, ValueError, r"seeds repeats"),
    ({"steps": "final2"}, ValueError, r"steps='final2': use 'final', 'all' or a list"),
    ({"steps": 5}, TypeError, r"steps=\[5\]"),
    ({"steps": []}, ValueError, r"steps is empty"),
    ({"steps": [1, 7]}, ValueError, r"steps \[7\] are not checkpoints of run 'seed=0'"),
    ({"measure_split": "validation"}, ValueError, r"measure_split='validation' is not a split of the dataset "
                                                 r"'gaussian-mixture'; its splits: \['train', 'test', 'ood'\]"),
    ({"fit_split": "dev", "measures": ["knn_probe"]}, ValueError, r"fit_split='dev' is not a split"),
    ({"measure_split": 3}, TypeError, r"measure_split must be a split name"),
    ({"downstream": ["svm"]}, ValueError, r"downstream has unknown method 'svm'; choose from \['linear'"),
    ({"downstream": "linear"}, TypeError, r"downstream must be a list.*letter by letter"),
    ({"label_fractions": [0]}, ValueError, r"label_fractions must be in \(0, 1\]"),
    ({"label_fractions": [1.5]}, ValueError, r"label_fractions must be in \(0, 1\]"),
    ({"label_fractions": ["half"]}, TypeError, r"label_fractions must hold numbers"),
    ({"vary": {"lr": 0.1}}, TypeError, r"vary\['lr'\] must be a list"),
    ({"vary": {"objective": "simclr"}}, TypeError, r"vary\['objective'\] must be a list.*letter by letter"),
    ({"vary": {"lr": []}}, ValueError, r"vary\['lr'\] is empty"),
    ({"vary": [("lr", [0.1])]}, TypeError, r"vary must be a dict"),
    ({"tasks": "class"}, TypeError, r"tasks must be a list"),
    ({"tasks": [3]}, TypeError, r"each task must be None"),
    ({"tasks": [{"target": "class", "bogus": 1}]}, ValueError, r"unknown key\(s\) \['bogus'\]"),
    ({"tasks": ["colour"]}, ValueError, r"'colour' is not a factor of the dataset 'gaussian-mixture'"),
    ({"tasks": ["z0"]}, ValueError, r"'z0' is a continuous factor"),
    ({"tasks": [{"target": "class", "splits": ["valid"]}]}, ValueError, r"split\(s\) \['valid'\]"),
    ({"tasks": [{"target": "class", "splits": "test"}]}, TypeError, r"'splits' must be a list"),
    ({"tasks": []}, ValueError, r"tasks and label_fractions must not be empty"),
    ({"measures": "rankme"}, TypeError, r"measures must be a list"),
    ({"evaluate_options": {"methods": ["knn"]}}, ValueError, r"evaluate_options has \['methods'\]"),
    ({"measure_examples": 0}, ValueError, r"measure_examples must be >= 1"),
    ({"layers": 3}, TypeError, r"layers must be None"),
    ({"executor": object()}, TypeError, r"executor must have a map"),
    ({"name": ""}, TypeError, r"name must be a non-empty string"),
    ({"dataset": "shapes"}, ValueError, r"dataset= and dataset_options= set the data of subjects"),
])
def test_every_argument_is_checked_before_training(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        Study(GMM, store=tmp_path, **kwargs)
    assert RunStore(tmp_path).ids() == []  # nothing was trained


def test_good_arguments_pass_the_checks(tmp_path):
    st = Study(GMM, vary={"lr": (0.01, 0.02)}, seeds=range(2), steps=[0, 5], tasks=[None, "class"],
               label_fractions=[0.5, 1], downstream=["linear", "knn"], measures=["knn_probe"], fit_split="test",
               measure_split="ood", evaluate_options={"C": 0.5, "splits": ["ood"]}, store=tmp_path)
    assert list(st.configs) == ["lr=0.01,seed=0", "lr=0.01,seed=1", "lr=0.02,seed=0", "lr=0.02,seed=1"]
    assert st.label_fractions == [0.5, 1.0] and st.steps == [0, 5]


# ------------------------------------------------------------------------------------------ 6 picklable job
class RefusingExecutor:
    """Runs each job after a pickle round trip (as a process pool would) and refuses to be pickled itself."""

    def __reduce__(self):
        raise TypeError("the executor was pickled")

    def map(self, fn, jobs):
        for job in jobs:
            fn2, job2 = pickle.loads(pickle.dumps((fn, job)))
            try:
                yield job, fn2(job2)
            except Exception as err:
                yield job, err


class TaggedStudy(Study):
    """A subclass with its own attribute and ``_one``: the job rebuilds it with both."""

    def __init__(self, *args, tag: str, **kwargs):
        self.tag = tag
        super().__init__(*args, **kwargs)

    def _one(self, label):
        return super()._one(label).assign(tag=self.tag)


def test_the_job_is_picklable_and_carries_no_executor(tmp_path):
    executor = RefusingExecutor()
    st = Study(GMM, vary={"lr": [1e-2, 2e-2]}, executor=executor, store=tmp_path, downstream=["linear"],
               measures=["rankme", "cka"], measure_examples=50, name="pickled")
    table = st.run(progress=False)  # the executor pickles every job it is given
    assert st.failures == []
    jobs = st.jobs()
    assert [type(j) for j in jobs] == [StudyJob, StudyJob] and [j.label for j in jobs] == list(st.configs)
    blob = pickle.dumps(jobs[0])
    assert b"RefusingExecutor" not in blob and b"InProcessExecutor" not in blob
    assert len(blob) < 20_000  # small: one config and the study's options
    assert set(table["run"]) == {"lr=0.01,seed=0", "lr=0.02,seed=0"}
    assert set(table["kind"]) == {"measure", "cross_run", "downstream", "history"}
    # the same study in process gives the same table
    again = Study(GMM, vary={"lr": [1e-2, 2e-2]}, store=tmp_path, downstream=["linear"], measures=["rankme", "cka"],
                  measure_examples=50, name="pickled").run(progress=False)
    cols = ["run", "kind", "step", "layer", "layer_b", "split", "measure", "task", "method"]
    sort = [c for c in cols if c in table.columns]
    pd.testing.assert_frame_equal(table.sort_values(sort).reset_index(drop=True),
                                  again.sort_values(sort).reset_index(drop=True))
    # run_job keeps the executor semantics: map(fn, jobs) yields (job, result_or_exception)
    (job, result), = InProcessExecutor().map(run_job, jobs[:1])
    assert job is jobs[0] and result.failures == () and set(result.table["run"]) == {"lr=0.01,seed=0"}

    tagged = TaggedStudy(GMM, tag="t1", executor=executor, store=tmp_path, name="pickled", **QUICK)
    assert set(tagged.run(progress=False)["tag"]) == {"t1"}


# ------------------------------------------------------------------------------------------ 7 subjects
@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("subjects"))
    torch.manual_seed(0)
    a = train({**GMM, "checkpoints": 2, "steps": 6}, store, name="pre/a", progress=False)
    b = train({**GMM, "checkpoints": 2, "steps": 6, "seed": 1}, store, name="pre/b", progress=False)
    return store, a, b


def _rankme(run, step, data, n):
    x = extract(run.load_model(step), data.subset(slice(0, n)))
    return {layer: float(spectrum.rankme(x[layer])) for layer in x.layers}


def test_subjects_are_measured_at_every_checkpoint_without_training(subjects):
    store, a, b = subjects
    before, ids = _mtimes(store), store.ids()
    st = Study(subjects=[a, "pre/b"], steps="all", downstream=["linear"], measures=["rankme", "cka"],
               measure_examples=50, store=store, name="over-subjects")
    table = check_tidy(st.run(progress=False))
    assert st.failures == [] and _mtimes(store) == before and store.ids() == ids
    assert set(table["run"]) == {"pre/a", "pre/b"} and "seed" not in table.columns
    assert len(a.checkpoints()) >= 3
    test = load("gaussian-mixture", **DATA)["test"]
    for run in (a, b):
        meas = table[(table.run == run.name) & (table.kind == "measure") & (table.measure == "rankme")]
        assert sorted(meas["step"].unique()) == run.checkpoints()
        for step in run.checkpoints():
            got = meas[meas.step == step].set_index("layer")["value"]
            want = _rankme(run, step, test, 50)
            assert set(got.index) == set(want)
            for layer, value in want.items():
                assert got[layer] == pytest.approx(value, rel=1e-10)
    cross = table[table.kind == "cross_run"]
    assert set(zip(cross["run"], cross["run_b"])) == {("pre/a", "pre/b")}
    assert set(table[table.kind == "downstream"]["step"]) == set(a.checkpoints())
    assert {r.name for r in store.runs()} == {"pre/a", "pre/b"}  # a subject keeps its name


def test_subjects_on_other_data(subjects):
    store, a, _ = subjects
    other = {**DATA, "seed": 3, "n_test": 60}
    st = Study(subjects=[a.id], dataset="gaussian-mixture", dataset_options=other, downstream=["linear"],
               tasks=[None], measures=["rankme"], measure_examples=60, store=store)
    table = st.run(progress=False)
    assert st.failures == []
    got = table[(table.kind == "measure")].set_index("layer")["value"]
    want = _rankme(a, "final", load("gaussian-mixture", **other)["test"], 60)
    assert got.to_dict() == pytest.approx(want, rel=1e-10)
    down = table[table.kind == "downstream"]
    direct = evaluate(a, {"dataset": "gaussian-mixture", "options": other, "name": "label"})
    assert np.allclose(down.sort_values(["split", "measure"])["value"],
                       direct.sort_values(["split", "measure"])["value"])


def test_bad_subjects(subjects, tmp_path):
    store, a, _ = subjects
    with pytest.raises(ValueError, match=r"either base .* or subjects"):
        Study(GMM, subjects=[a], store=store)
    with pytest.raises(ValueError, match="got neither"):
        Study(store=store)
    with pytest.raises(ValueError, match="vary applies to trained runs"):
        Study(subjects=[a], vary={"lr": [0.1]}, store=store)
    with pytest.raises(ValueError, match="seeds applies to trained runs"):
        Study(subjects=[a], seeds=[0, 1], store=store)
    with pytest.raises(ValueError, match=r"subjects: no run 'pre/zzz'"):
        Study(subjects=["pre/zzz"], store=store)
    with pytest.raises(ValueError, match="given twice"):
        Study(subjects=[a, a.id], store=store)
    with pytest.raises(TypeError, match="subjects must be a list"):
        Study(subjects="pre/a", store=store)
    with pytest.raises(ValueError, match=r"not in the study's store"):
        Study(subjects=[a], store=tmp_path)
    with pytest.raises(ValueError, match=r"steps \[3\] are not checkpoints of run 'pre/a'"):
        Study(subjects=[a], steps=[3], store=store)
    empty = RunStore(tmp_path / "empty")
    run = empty.create(RunConfig.from_dict(GMM), name="untrained")
    with pytest.raises(ValueError, match=r"'untrained' .* has no checkpoints"):
        Study(subjects=[run])

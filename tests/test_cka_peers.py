"""CKA against a peer package (torch-cka 0.21) and against the published demo values.

What torch-cka 0.21 computes (read from its source, ``torch_cka/cka.py``): ``CKA.compare`` runs two models
over paired dataloaders, takes each hooked layer's output flattened to [b, d], forms the *uncentered*
linear Gram ``K = X X^T`` with its diagonal set to 0, and per batch evaluates ``_HSIC(K, L)``, the unbiased
estimator of Song et al. 2012 as written in Nguyen et al. 2021, Eq. 3. It accumulates ``HSIC/num_batches``
for (K, L), (K, K) and (L, L) and returns ``mean HSIC(K, L) / sqrt(mean HSIC(K, K) * mean HSIC(L, L))``:
exactly minibatch CKA (Nguyen et al. 2021, Eq. 2), i.e. our :class:`MinibatchCKA`; with a single batch of
all N examples it is our debiased ``cka_matrix(..., debiased=True)``. Our code centers first (HSIC_u is
unchanged by centering the kernel), so agreement is a real check of the estimator, not of shared code.

How it is fed: torch-cka only accepts models + dataloaders, so each layer stack is wrapped as a model whose
input is the precomputed features of all layers side by side, with one ``nn.Identity`` per layer (hooked by
name). Its accumulator and ``ones`` vector are created with the default dtype, and ``ones(float32) @
K(float64)`` fails, so it is run under ``torch.set_default_dtype(torch.float64)``: then it computes and
accumulates in float64 too.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from workbench.similarity import cka, cka_matrix
from workbench.similarity._cka import MinibatchCKA, minibatch_cka

torch_cka = pytest.importorskip("torch_cka")
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402


class _FeatureStack(torch.nn.Module):
    """A 'model' whose input is [b, sum d] precomputed features; layer i returns its own columns."""

    def __init__(self, widths):
        super().__init__()
        self.widths = list(widths)
        self.layers = torch.nn.ModuleList(torch.nn.Identity() for _ in self.widths)

    def forward(self, x):
        for layer, part in zip(self.layers, torch.split(x, self.widths, dim=1)):
            layer(part)
        return x


def run_torch_cka(layers_a, layers_b, batch_size):
    """torch-cka's CKA matrix [La, Lb] over consecutive batches of ``batch_size`` examples (float64)."""
    xa = torch.as_tensor(np.hstack(list(layers_a.values())))
    xb = torch.as_tensor(np.hstack(list(layers_b.values())))
    model_a = _FeatureStack(v.shape[1] for v in layers_a.values())
    model_b = _FeatureStack(v.shape[1] for v in layers_b.values())
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peer = torch_cka.CKA(model_a, model_b, model1_name="A", model2_name="B",
                                 model1_layers=[f"layers.{i}" for i in range(len(layers_a))],
                                 model2_layers=[f"layers.{i}" for i in range(len(layers_b))])
            peer.compare(DataLoader(TensorDataset(xa), batch_size=batch_size),
                         DataLoader(TensorDataset(xb), batch_size=batch_size))
        out = peer.export()["CKA"]
    finally:
        torch.set_default_dtype(old)
    assert out.dtype == torch.float64
    return out.numpy()


@pytest.fixture(scope="module")
def stacks():
    rng = np.random.default_rng(31)
    n = 96
    z = rng.standard_normal((n, 8))
    a = {f"a{i}": np.tanh(z @ rng.standard_normal((8, w))) + 0.3 * rng.standard_normal((n, w))
         for i, w in enumerate([6, 20, 50])}
    b = {f"b{i}": z[:, :5] @ rng.standard_normal((5, w)) + 0.5 * rng.standard_normal((n, w))
         for i, w in enumerate([4, 40])}
    return a, b


@pytest.mark.parametrize("batch_size", [24, 32])  # widths above and below the batch size
def test_minibatch_matches_torch_cka(stacks, batch_size):
    a, b = stacks
    peer = run_torch_cka(a, b, batch_size)
    n = len(next(iter(a.values())))
    batches = [({k: v[s:s + batch_size] for k, v in a.items()}, {k: v[s:s + batch_size] for k, v in b.items()})
               for s in range(0, n, batch_size)]
    ours = minibatch_cka(batches, output="matrix").to_numpy()
    np.testing.assert_allclose(ours, peer, rtol=1e-6)


def test_single_batch_torch_cka_is_debiased_cka(stacks):
    a, b = stacks
    peer = run_torch_cka(a, b, batch_size=96)
    np.testing.assert_allclose(cka_matrix(a, b, debiased=True, output="matrix").to_numpy(), peer, rtol=1e-6)
    np.testing.assert_allclose(MinibatchCKA().update(a, b).result(output="matrix").to_numpy(), peer, rtol=1e-6)
    # and it is not the biased estimator (which is what cka_matrix returns by default)
    assert np.abs(cka_matrix(a, b, output="matrix").to_numpy() - peer).max() > 1e-3


# ------------------------------------------------------------- published values, through every entry point
@pytest.fixture(scope="module")
def demo_data():
    """Kornblith et al.'s CKA demo notebook (google-research/google-research, representation_similarity)."""
    np.random.seed(1337)
    x = np.random.randn(100, 10)
    y = np.random.randn(100, 10) + x
    return x, y


def test_golden_values_all_entry_points(demo_data):
    x, y = demo_data
    golden = {("linear", False): 0.55761, ("rbf", False): 0.65483, ("linear", True): 0.51346}
    for (kernel, debiased), value in golden.items():
        assert cka(x, y, kernel=kernel, debiased=debiased) == pytest.approx(value, abs=5e-6)
        mat = cka_matrix({"x": x}, {"y": y}, kernel=kernel, debiased=debiased, output="matrix")
        assert mat.iloc[0, 0] == pytest.approx(value, abs=5e-6)
        sym = cka_matrix({"x": x, "y": y}, kernel=kernel, debiased=debiased, output="matrix")
        assert sym.loc["x", "y"] == pytest.approx(value, abs=5e-6)
        bare = cka_matrix(x, y, kernel=kernel, debiased=debiased)  # bare arrays: the one layer "features"
        assert bare[["layer", "layer_b"]].values.tolist() == [["features", "features"]]
        assert bare["value"].iloc[0] == pytest.approx(value, abs=5e-6)
        assert sym.loc["y", "x"] == pytest.approx(value, abs=5e-6)
    # minibatch CKA with one batch of all 100 examples is debiased CKA
    one_batch = MinibatchCKA().update({"x": x}, {"y": y}).result(output="matrix")
    assert one_batch.iloc[0, 0] == pytest.approx(0.51346, abs=5e-6)
    assert run_torch_cka({"x": x}, {"y": y}, batch_size=100)[0, 0] == pytest.approx(0.51346, abs=5e-6)

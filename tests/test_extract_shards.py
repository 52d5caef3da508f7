"""Sharded extraction into one cache (``extract(..., shard=(i, k))``, merged lazily) and the out-of-memory back-off
of extraction's forward passes.

Every value is checked against the layers computed by hand — the modules of an ``nn.Sequential`` applied one
after another to the inputs — not against another call of ``extract``. No test asserts a duration.
"""
from __future__ import annotations

import multiprocessing as mp
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from workbench.activations import extract

GUARD = 120  # seconds: hang guard of the worker processes (never reached when things work)


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 5))


def _inputs(n: int = 23) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, 6)).astype(np.float32)


def _by_hand(net: nn.Sequential, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every probe point of the Sequential (its children "0", "1", "2") by applying the modules in turn."""
    out, h = {}, torch.as_tensor(x)
    with torch.no_grad():
        for name, module in net.named_children():
            h = module(h)
            out[name] = h.numpy().copy()
    return out


class _Rows(nn.Module):
    """Counts the examples the wrapped Sequential sees (forward pre-hook on it), to tell what was computed."""

    def __init__(self, net: nn.Sequential):
        super().__init__()
        self.seen = 0
        net.register_forward_pre_hook(self._count)

    def _count(self, _module, inputs):
        self.seen += len(inputs[0])


def _shard_worker(cache: str, i: int, k: int) -> None:
    torch.set_num_threads(1)
    acts = extract(_net(), _inputs(), cache=cache, shard=(i, k))
    assert acts.meta["rows"] == (i * 23 // k, (i + 1) * 23 // k)


def test_shards_from_processes_merge_to_the_whole(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_shard_worker, args=(str(tmp_path), i, 3), name=f"shard-{i}") for i in range(3)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(GUARD)
            assert p.exitcode == 0, f"{p.name} ended with exit code {p.exitcode}"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    net, x = _net(), _inputs()
    counter = _Rows(net)
    merged = extract(net, x, cache=tmp_path)
    assert counter.seen == 0 and merged.meta["cached"]  # the three blocks, nothing run again
    assert len(list(tmp_path.glob("*.shard-*-of-3.npy"))) == 3 * 3  # 3 layers x 3 blocks
    assert [p.name for p in tmp_path.glob("*.npy") if ".shard-" not in p.name] == []  # merged lazily: no copy
    expected = _by_hand(net, x)
    assert merged.layers == list(expected) and merged.n == 23
    for name, ref in expected.items():
        assert merged.shape(name) == ref.shape
        np.testing.assert_allclose(merged[name].numpy(), ref, rtol=1e-5, atol=1e-6)


def test_one_block_has_its_rows_labels_and_factors(tmp_path):
    from workbench.data import Split

    x = _inputs()
    labels = np.arange(23) % 4
    split = Split(inputs=x, labels=labels, factors={"size": np.arange(23.0)})
    net = _net()
    block = extract(net, split, cache=tmp_path, shard=(1, 4))
    lo, hi = 23 // 4, 2 * 23 // 4
    assert block.meta["rows"] == (lo, hi) and block.meta["shard"] == (1, 4) and block.n == hi - lo
    np.testing.assert_array_equal(block.labels, labels[lo:hi])
    np.testing.assert_array_equal(block.factors["size"], np.arange(23.0)[lo:hi])
    np.testing.assert_allclose(block["2"].numpy(), _by_hand(net, x[lo:hi])["2"], rtol=1e-5, atol=1e-6)
    again = extract(net, split, cache=tmp_path, shard=(1, 4))
    assert again.meta["cached"] and not block.meta["cached"]


def test_interrupted_sharded_extraction_computes_only_the_missing_block(tmp_path):
    net, x = _net(), _inputs()
    extract(net, x, cache=tmp_path, shard=(0, 3))
    extract(net, x, cache=tmp_path, shard=(2, 3))  # block 1 never ran (its worker died)
    counter = _Rows(net)
    merged = extract(net, x, cache=tmp_path)
    assert counter.seen == 23 * 2 // 3 - 23 // 3  # the rows of block 1 only
    assert not merged.meta["cached"]
    for name, ref in _by_hand(net, x).items():
        np.testing.assert_allclose(merged[name].numpy(), ref, rtol=1e-5, atol=1e-6)


def test_a_whole_entry_wins_over_blocks_and_layers_mix(tmp_path):
    net, x = _net(), _inputs()
    extract(net, x, layers=["0"], cache=tmp_path)  # layer "0" whole
    extract(net, x, layers=["2"], cache=tmp_path, shard=(0, 2))
    extract(net, x, layers=["2"], cache=tmp_path, shard=(1, 2))  # layer "2" in blocks
    counter = _Rows(net)
    acts = extract(net, x, layers=["0", "1", "2"], cache=tmp_path)  # layer "1" neither: computed whole
    assert counter.seen == 23
    for name, ref in _by_hand(net, x).items():
        np.testing.assert_allclose(acts[name].numpy(), ref, rtol=1e-5, atol=1e-6)


def test_token_grids_survive_sharding(tmp_path):
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    x = np.random.default_rng(0).normal(size=(10, 3, 5, 7)).astype(np.float32)
    for i in range(2):
        extract(conv, x, pool="tokens", cache=tmp_path, shard=(i, 2))
    merged = extract(conv, x, pool="tokens", cache=tmp_path)
    assert merged.meta["grids"]["0"] == (5, 7)
    with torch.no_grad():
        ref = conv[0](torch.as_tensor(x)).flatten(2).transpose(1, 2).numpy()
    np.testing.assert_allclose(merged["0"].numpy(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shard, error, match", [
    ((3, 3), ValueError, r"shard=\(3, 3\).*0 <= i < k"),
    ((0, 0), ValueError, r"shard=\(0, 0\).*k >= 1"),
    ((0, 24), ValueError, r"24 blocks of 23 examples"),
    ((0.5, 2), TypeError, r"shard must be a pair of integers"),
    ((1, 2, 3), TypeError, r"shard must be a pair of integers"),
    ("0/2", TypeError, r"shard"),
])
def test_bad_shard_is_refused(tmp_path, shard, error, match):
    with pytest.raises(error, match=match):
        extract(_net(), _inputs(), cache=tmp_path, shard=shard)


def test_shard_without_cache_is_refused():
    with pytest.raises(ValueError, match=r"shard=\(i, k\).*pass cache=DIR"):
        extract(_net(), _inputs(), shard=(0, 2))


# ------------------------------------------------------------------------------------ out-of-memory back-off
class _Tight(nn.Module):
    """The Sequential behind a device that holds at most ``limit`` examples per forward pass: larger batches raise
    the error CUDA's allocator raises (``torch.cuda.OutOfMemoryError``; a RuntimeError saying "out of memory" where
    that class is missing)."""

    def __init__(self, net: nn.Sequential, limit: int):
        super().__init__()
        self.net, self.limit, self.sizes = net, limit, []

    def forward(self, x):
        self.sizes.append(len(x))
        if len(x) > self.limit:
            oom = getattr(torch.cuda, "OutOfMemoryError", RuntimeError)
            raise oom("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return self.net(x)


@pytest.mark.parametrize("cached", [False, True])
def test_out_of_memory_halves_the_batch_and_loses_nothing(tmp_path, cached):
    net, x = _net(), _inputs()
    tight = _Tight(net, limit=5)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        acts = extract(tight, x, ["net.0", "net.1", "net.2"], batch_size=16, cache=tmp_path if cached else None)
    assert [str(w.message) for w in record] == ["out of memory with a batch of 16; retrying with 8",
                                                "out of memory with a batch of 8; retrying with 4"]
    assert max(s for s in tight.sizes if s <= 5) == 4  # 16 -> 8 -> 4 fits; the rest at 4
    for name, ref in _by_hand(net, x).items():
        np.testing.assert_allclose(acts[f"net.{name}"].numpy(), ref, rtol=1e-5, atol=1e-6)
    if cached:  # the file written across the retries is intact and complete
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            again = extract(tight, x, ["net.0", "net.1", "net.2"], batch_size=16, cache=tmp_path)
        assert again.meta["cached"]
        np.testing.assert_allclose(again["net.2"].numpy(), _by_hand(net, x)["2"], rtol=1e-5, atol=1e-6)


def test_out_of_memory_with_one_example_is_a_clear_error(tmp_path):
    tight = _Tight(_net(), limit=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(RuntimeError, match="out of memory with a batch of one example; the model does not fit"):
            extract(tight, _inputs(), batch_size=4, cache=tmp_path)
    assert list(tmp_path.glob("*.npy")) == [] and list(tmp_path.glob(".*.tmp")) == []  # nothing half-written


def test_other_runtime_errors_are_not_retried():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0
            self.lin = nn.Linear(6, 2)

        def forward(self, x):
            self.calls += 1
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    model = Broken()
    with pytest.raises(ValueError, match="could not run on data"):
        extract(model, _inputs(), batch_size=16)
    assert model.calls == 1

"""Class-structure measures (neural collapse, CDNV, LiDAR, DSE) against explicit numpy/scipy loops and
closed-form cases (collapsed classes, simplex ETF)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.spectrum import DSEResult, cdnv, dse, lidar, neural_collapse


# ------------------------------------------------------------------------------------- references
def ref_nc(z, y, w=None, b=None):
    """Papyan et al. 2020 statistics written out with loops and np.linalg.pinv."""
    z = np.asarray(z, float)
    classes = np.unique(y)
    c, (n, d) = len(classes), z.shape
    mu_g = z.mean(0)
    mus = np.array([z[y == k].mean(0) for k in classes])
    sw = np.zeros((d, d))
    for i in range(n):
        r = z[i] - mus[np.searchsorted(classes, y[i])]
        sw += np.outer(r, r)
    sw /= n
    sb = sum(np.outer(m - mu_g, m - mu_g) for m in mus) / c
    out = {"nc1": np.trace(sw @ np.linalg.pinv(sb)) / c}

    def geom(v):
        norms = np.linalg.norm(v, axis=1)
        cos = [v[i] @ v[j] / norms[i] / norms[j] for i in range(c) for j in range(c) if i != j]
        return (np.std(norms) / np.mean(norms), np.std(cos), np.mean(np.abs(np.array(cos) + 1 / (c - 1))))

    m = mus - mu_g
    out["nc2_equinorm"], out["nc2_equiangular"], out["nc2_maxangle"] = geom(m)
    if w is not None:
        out["nc2_w_equinorm"], out["nc2_w_equiangular"], out["nc2_w_maxangle"] = geom(w)
        out["nc3"] = np.sum((w / np.linalg.norm(w) - m / np.linalg.norm(m)) ** 2)
        mismatch = 0
        for i in range(n):
            pred = np.argmax(w @ z[i] + (0 if b is None else b))
            ncc = np.argmin([np.linalg.norm(z[i] - mu) for mu in mus])
            mismatch += pred != ncc
        out["nc4"] = mismatch / n
    return out


def ref_cdnv(z, y):
    classes = np.unique(y)
    mus = {k: z[y == k].mean(0) for k in classes}
    var = {k: np.mean(np.sum((z[y == k] - mus[k]) ** 2, axis=1)) for k in classes}
    vals = [(var[a] + var[b]) / (2 * np.sum((mus[a] - mus[b]) ** 2))
            for i, a in enumerate(classes) for b in classes[i + 1:]]
    return float(np.mean(vals))


def ref_lidar(z, g, delta, eps):
    from scipy.linalg import eigh
    ids = np.unique(g)
    mus = np.array([z[g == k].mean(0) for k in ids])
    mu = mus.mean(0)
    sb = sum(np.outer(m - mu, m - mu) for m in mus) / (len(ids) - 1)
    sw = sum(np.outer(z[i] - mus[np.searchsorted(ids, g[i])], z[i] - mus[np.searchsorted(ids, g[i])])
             for i in range(len(z)))
    sw = sw / sum(np.sum(g == k) - 1 for k in ids) + delta * np.eye(z.shape[1])
    lam = np.clip(eigh(sb, sw, eigvals_only=True), 0, None)  # generalized problem Sb v = lam Sw v
    p = lam / lam.sum() + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def simplex_etf(c, d, rng, scale=2.0):
    """Rows: C vectors of equal norm with pairwise cosine -1/(C-1), embedded in R^d."""
    m = np.eye(c) - 1.0 / c
    basis, _ = np.linalg.qr(rng.standard_normal((d, c)))
    return scale * m @ basis.T


# ------------------------------------------------------------------------------- neural collapse
def test_nc_against_reference_loops():
    rng = np.random.default_rng(0)
    c, d, n = 4, 6, 90
    y = rng.integers(0, c, n) * 3 + 1  # label values 1, 4, 7, 10 (not 0..C-1), unbalanced
    z = rng.standard_normal((n, d)) + 2.0 * rng.standard_normal((c, d))[(y - 1) // 3]
    w = rng.standard_normal((c, d))
    b = rng.standard_normal(c)
    got = neural_collapse(z, y, weights=w, bias=b)
    ref = ref_nc(z, y, w, b)
    assert list(got) == ["nc1", "nc2_equinorm", "nc2_equiangular", "nc2_maxangle", "nc2_w_equinorm",
                         "nc2_w_equiangular", "nc2_w_maxangle", "nc3", "nc4"]
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    # logits give the same NC4 as weights + bias
    assert neural_collapse(z, y, logits=z @ w.T + b)["nc4"] == got["nc4"]
    assert set(neural_collapse(z, y)) == {"nc1", "nc2_equinorm", "nc2_equiangular", "nc2_maxangle"}


def test_nc1_collapsed_vs_random():
    rng = np.random.default_rng(1)
    c, d, per = 5, 10, 40
    y = np.repeat(np.arange(c), per)
    means = 3.0 * rng.standard_normal((c, d))
    collapsed = means[y] + 1e-6 * rng.standard_normal((c * per, d))
    assert neural_collapse(collapsed, y)["nc1"] < 1e-9
    random = rng.standard_normal((c * per, d))
    assert neural_collapse(random, y)["nc1"] > 10.0
    # wide features (D > N): the pseudo-inverse only sees the C-1 between-class directions
    wide = rng.standard_normal((30, 200))
    yw = np.repeat(np.arange(3), 10)
    assert neural_collapse(wide, yw)["nc1"] == pytest.approx(ref_nc(wide, yw)["nc1"], rel=1e-8)


def test_nc2_nc3_nc4_zero_for_simplex_etf():
    rng = np.random.default_rng(2)
    c, d = 5, 8
    m = simplex_etf(c, d, rng)
    offsets = 0.3 * rng.standard_normal((c, d))
    z = np.concatenate([m + offsets, m - offsets])  # two samples per class, class means exactly the ETF
    y = np.tile(np.arange(c), 2)
    shift = np.full(d, 7.0)  # NC1-NC3 are translation invariant; the classifier needs a bias to follow
    out = neural_collapse(z + shift, y, weights=0.5 * m, bias=-0.5 * m @ shift)
    for k in ("nc2_equinorm", "nc2_equiangular", "nc2_maxangle", "nc2_w_equinorm", "nc2_w_equiangular",
              "nc2_w_maxangle", "nc3"):
        assert out[k] == pytest.approx(0.0, abs=1e-12), k
    assert out["nc4"] == 0.0
    # a classifier pointing the opposite way disagrees with NCC everywhere and is maximally non-dual
    anti = neural_collapse(z, y, weights=-m)
    assert anti["nc4"] == 1.0 and anti["nc3"] == pytest.approx(4.0)


def test_nc_errors():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((20, 4))
    y = np.repeat([0, 1], 10)
    with pytest.raises(ValueError, match="distinct class"):
        neural_collapse(z, np.zeros(20, int))
    sym = np.concatenate([z[:10], -z[:10]])
    with pytest.raises(ValueError, match="class means coincide"):
        neural_collapse(np.concatenate([sym, sym]), np.repeat([0, 1], 20))
    with pytest.raises(ValueError, match="weights must have shape"):
        neural_collapse(z, y, weights=np.ones((3, 4)))
    with pytest.raises(ValueError, match="logits must have shape"):
        neural_collapse(z, y, logits=np.ones((20, 3)))
    with pytest.raises(ValueError, match="bias given without weights"):
        neural_collapse(z, y, bias=np.zeros(2))
    with pytest.raises(ValueError, match="mismatched"):
        neural_collapse(z, y[:-1])
    with pytest.raises(ValueError, match="NaN/Inf"):
        neural_collapse(np.where(z > 2, np.inf, z), y)
    with pytest.raises(TypeError, match="integer class ids"):
        neural_collapse(z, y.astype(str))


# ------------------------------------------------------------------------------------------ CDNV
def test_cdnv_against_loop():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 6, 150)
    z = rng.standard_normal((150, 7)) + 1.5 * rng.standard_normal((6, 7))[y] + 10.0
    assert cdnv(z, y) == pytest.approx(ref_cdnv(z, y), rel=1e-9)
    assert cdnv(torch.as_tensor(z, dtype=torch.float32), y) == pytest.approx(ref_cdnv(z.astype(np.float32)
                                                                                    .astype(float), y), rel=1e-6)


def test_cdnv_collapsed_and_errors():
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(4), 25)
    means = rng.standard_normal((4, 5))
    assert cdnv(means[y], y) == pytest.approx(0.0, abs=1e-20)
    assert cdnv(means[y] + 1e-3 * rng.standard_normal((100, 5)), y) < 1e-4
    z = rng.standard_normal((100, 5))
    z[y == 1] = z[y == 0] + 0.0  # identical copy: same class mean
    with pytest.raises(ValueError, match="same mean"):
        cdnv(z, y)
    with pytest.raises(ValueError, match="distinct class"):
        cdnv(z, np.ones(100, int))


# ----------------------------------------------------------------------------------------- LiDAR
def test_lidar_against_scipy_generalized_eigh():
    rng = np.random.default_rng(6)
    n, q, d = 30, 4, 8
    g = np.repeat(np.arange(n), q)
    z = rng.standard_normal((n, d))[g] * np.linspace(0.5, 2, d) + 0.3 * rng.standard_normal((n * q, d))
    assert lidar(z, g) == pytest.approx(ref_lidar(z, g, 1e-4, 1e-8), rel=1e-8)
    assert lidar(z, g, delta=0.05, eps=1e-6) == pytest.approx(ref_lidar(z, g, 0.05, 1e-6), rel=1e-8)
    # unequal group sizes, shuffled rows, non-contiguous ids
    perm = rng.permutation(len(z))[:-7]
    assert lidar(z[perm], g[perm] * 5 + 2) == pytest.approx(ref_lidar(z[perm], g[perm] * 5 + 2, 1e-4, 1e-8),
                                                            rel=1e-8)
    # orthogonal invariance (delta I is rotation invariant)
    qm, _ = np.linalg.qr(rng.standard_normal((d, d)))
    assert lidar(z @ qm, g) == pytest.approx(lidar(z, g), rel=1e-8)


def test_lidar_counts_discriminative_directions():
    """Group means spread in 3 equal directions, views jitter isotropically: LiDAR ~ 3 (not D)."""
    rng = np.random.default_rng(7)
    n, q, d = 200, 5, 10
    g = np.repeat(np.arange(n), q)
    means = np.zeros((n, d))
    means[:, :3] = 10.0 * rng.standard_normal((n, 3))
    z = means[g] + rng.standard_normal((n * q, d))
    assert lidar(z, g) == pytest.approx(3.0, abs=0.2)
    from workbench.spectrum import rankme
    assert rankme(z) > 3.5  # the augmentation noise counts for RankMe, not for LiDAR


def test_lidar_errors():
    rng = np.random.default_rng(8)
    z = rng.standard_normal((12, 3))
    with pytest.raises(ValueError, match="at least 2 views"):
        lidar(z, np.arange(12))
    with pytest.raises(ValueError, match="at least 2 views"):
        lidar(z, np.r_[np.repeat(np.arange(5), 2), 5, 6])
    with pytest.raises(ValueError, match="distinct class"):
        lidar(z, np.zeros(12, int))
    sym = np.concatenate([z[:6], -z[:6]])
    with pytest.raises(ValueError, match="group means coincide"):
        lidar(np.concatenate([sym, sym]), np.repeat([0, 1], 12))
    with pytest.raises(ValueError, match="delta"):
        lidar(z, np.repeat(np.arange(6), 2), delta=-1.0)
    with pytest.raises(ValueError, match="singular"):
        lidar(np.repeat(rng.standard_normal((6, 3)), 2, axis=0), np.repeat(np.arange(6), 2), delta=0.0)


# ------------------------------------------------------------------------------------------- DSE
def ref_dse(tok, lab, ipg):
    """Dai et al. 2025 components with given pseudo-classes, written as explicit loops (numpy SVD)."""
    x = tok / np.linalg.norm(tok, axis=-1, keepdims=True)
    b, _t, d = x.shape
    flat = x.reshape(-1, d)
    scale = np.mean(np.linalg.norm(flat - flat.mean(0), axis=1))

    def radius(pts):
        s = np.linalg.svd(pts - pts.mean(0), compute_uv=False)
        return s.sum() / np.sqrt(max(len(pts) - 1, d))

    img = []
    for i in range(b):
        rs = [radius(x[i][lab[i] == k]) for k in np.unique(lab[i]) if np.sum(lab[i] == k) >= 2]
        if rs:
            img.append(np.mean(rs))
    batch, inter = [], []
    for s in range(0, b, ipg):
        pts, lb = x[s:s + ipg].reshape(-1, d), lab[s:s + ipg].reshape(-1)
        cls = np.unique(lb)
        mus = {k: pts[lb == k].mean(0) for k in cls}
        batch += [radius(pts[lb == k]) for k in cls if np.sum(lb == k) >= 2]
        if len(cls) >= 2:
            inter.append(np.mean([min(np.linalg.norm(p - mus[k]) for k in cls if k != l) for p, l in zip(pts, lb)]))
    return np.mean(inter) / scale, np.mean(img) / scale, np.mean(batch) / scale


def blob_tokens(rng, b=12, t=18, d=8, n_blobs=4, noise=0.02):
    """Each image holds tokens from 3 of 4 well separated blobs (every chosen blob at least 6 times)."""
    centers = np.eye(d)[:n_blobs] * 5.0
    lab = np.zeros((b, t), int)
    for i in range(b):
        chosen = rng.choice(n_blobs, 3, replace=False)
        lab[i] = chosen[np.arange(t) % 3]
    tok = centers[lab] + noise * rng.standard_normal((b, t, d)) + 0.5
    return tok, lab


def test_dse_components_against_loops():
    rng = np.random.default_rng(9)
    tok = rng.standard_normal((10, 15, 6)) + 0.8
    lab = rng.integers(0, 4, (10, 15))
    res = dse(tok, lab, images_per_group=4)
    assert isinstance(res, DSEResult) and (res.n_images, res.n_tokens) == (10, 150)
    m_inter, m_img, m_batch = ref_dse(tok, lab, 4)
    assert res.m_inter == pytest.approx(m_inter, rel=1e-9)
    assert res.m_intra_image == pytest.approx(m_img, rel=1e-9)
    assert res.m_intra_batch == pytest.approx(m_batch, rel=1e-9)
    assert res.m_intra == pytest.approx((m_img + m_batch) / 2, rel=1e-12)
    assert res.dse == pytest.approx(res.m_inter - res.m_intra + res.m_dim, rel=1e-12)
    assert res.with_lambda(2.5).dse == pytest.approx(res.m_inter - res.m_intra + 2.5 * res.m_dim, rel=1e-12)
    # [M, D] + image_ids in scrambled order gives the same components
    perm = rng.permutation(150)
    ids = np.repeat(np.arange(10) * 7, 15)
    flat = dse(tok.reshape(150, 6)[perm], lab.reshape(-1)[perm], image_ids=ids[perm], images_per_group=4)
    assert flat.m_inter == pytest.approx(res.m_inter, rel=1e-9)
    assert flat.m_intra == pytest.approx(res.m_intra, rel=1e-9)


def test_dse_m_dim_reference():
    """Tokens constant within an image: M_dim is the normalized RankMe (eps 1e-12) of the image matrix."""
    rng = np.random.default_rng(10)
    v = rng.standard_normal((9, 5))
    tok = np.repeat(v[:, None, :], 4, axis=1)
    res = dse(tok, np.tile([0, 0, 1, 1], (9, 1)), images_per_group=3)
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    s = np.linalg.svd(u, compute_uv=False)
    p = s / s.sum() + 1e-12
    assert res.m_dim == pytest.approx(np.exp(-np.sum(p * np.log(p))) / 5, rel=1e-9)


def test_dse_kmeans_recovers_blobs_and_is_invariant():
    rng = np.random.default_rng(11)
    tok, lab = blob_tokens(rng)
    km = dse(tok, n_clusters=4, n_local_clusters=3, images_per_group=4, seed=3)
    given = dse(tok, lab, images_per_group=4)
    for k in ("m_inter", "m_intra_image", "m_intra_batch"):
        assert getattr(km, k) == pytest.approx(getattr(given, k), rel=1e-9), k
    # reproducible, and invariant to global scale and to rotations of the feature space
    assert dse(tok, n_clusters=4, images_per_group=4, seed=3) == km
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    rot = dse(tok @ q * 3.0, n_clusters=4, images_per_group=4, seed=3)
    for k in ("m_inter", "m_intra_image", "m_intra_batch", "m_dim", "dse"):
        assert getattr(rot, k) == pytest.approx(getattr(km, k), rel=1e-7), k
    # structure vs noise: separated pseudo-classes give higher class relevance than isotropic noise
    noise = dse(rng.standard_normal(tok.shape), n_clusters=4, images_per_group=4)
    assert km.m_inter - km.m_intra > noise.m_inter - noise.m_intra + 1.0
    # default clustering sizes (24 global clusters > 4 blobs) still run
    assert np.isfinite(dse(tok).dse)


def test_dse_torch_and_errors():
    rng = np.random.default_rng(12)
    tok = rng.standard_normal((4, 10, 6))
    t = torch.as_tensor(tok, dtype=torch.float32)
    a, b = dse(t, n_clusters=3), dse(t.double().numpy(), n_clusters=3)
    assert a.dse == pytest.approx(b.dse, rel=1e-12)
    with pytest.raises(ValueError, match="at least 2 images"):
        dse(tok[:1])
    with pytest.raises(ValueError, match="image_ids"):
        dse(tok.reshape(40, 6))
    with pytest.raises(ValueError, match="only for"):
        dse(tok, image_ids=np.zeros(40, int))
    with pytest.raises(ValueError, match="one class per token"):
        dse(tok, np.zeros(39, int))
    zero = tok.copy()
    zero[1, 2] = 0.0
    with pytest.raises(ValueError, match="all-zero token"):
        dse(zero)
    with pytest.raises(ValueError, match="identical"):
        dse(np.ones((3, 5, 4)))
    with pytest.raises(ValueError, match="NaN/Inf"):
        dse(np.where(tok > 2, np.nan, tok))
    with pytest.raises(ValueError, match="single pseudo-class"):
        dse(tok, np.zeros((4, 10), int))
    with pytest.raises(ValueError, match="n_clusters"):
        dse(tok, n_clusters=1)

"""Linear probes: L2-regularised multinomial logistic regression on frozen features, batched over layers.

Model and objective
-------------------
Inputs are standardized with the mean and (population, ``ddof=0``) standard deviation of the
training rows only; a feature whose std is ``<= 1e-10 * |mean|`` (constant, up to rounding) is only
centered (scale 1), as ``sklearn.preprocessing.StandardScaler`` does. With standardized inputs ``x_i``,
weights ``W`` and biases ``b``, the probe minimises::

    J(W, b) = (1/n) sum_i CE(softmax(W^T x_i + b), y_i) + (lambda / 2) ||W||_F^2,   lambda = 1 / (C n)

(the bias is not penalised). For ``K >= 3`` classes ``W`` is [D, K] (one weight vector per class, the
symmetric softmax parameterisation; the minimiser has ``W 1 = 0``, and ``b^T 1 = 0`` fixes the
otherwise free common shift of the biases); for ``K = 2`` it is a single vector with logits
``(0, w^T x + b)``, i.e. ordinary binomial logistic regression.

sklearn correspondence: ``sklearn.linear_model.LogisticRegression(C=C)`` (lbfgs, l2) minimises
``C sum_i CE_i + 1/2 ||W||^2``, which is ``C n`` times ``J``: the same minimiser, hence the same
predictions, for the same ``C``. This holds in the binary case too only because of the single-vector
parameterisation above; with two symmetric vectors the penalty on the logit difference would be halved
(equivalent to sklearn with ``2C``). sklearn's lbfgs minimises this same ``J`` internally and stops at
``max |grad J| <= tol``, so ``tol`` and ``cv_tol`` here are the same numbers as sklearn's ``tol``.

Cross-validation: ``StratifiedKFold(folds, shuffle=True, random_state=seed)`` splits of the training
rows; every fold is standardized with its own training part; ``C`` maximises the mean over folds of the
held-out accuracy, ties broken by the lower mean held-out log-loss; then the probe is refitted on all
training rows with that ``C``.

Batched solver
--------------
Every fit of a call is one *problem* of a batched solver, so the work is a few large matrix products per
iteration instead of hundreds of small fits:

1. the sweep: every layer x ``C`` on each fold's training part (float32 by default, to ``min(cv_tol, rtol *
   lambda)``), every problem started from zero weights and the class-prior biases, like a fresh
   scikit-learn fit. (Folds are deliberately *not* warm-started from an all-rows fit: a fit stopped at a
   gradient tolerance keeps a memory of its start in weakly curved directions, and an all-rows fit has
   seen the fold's held-out rows - it would bias the selection towards weak regularisation.) After a
   float32 sweep every fit is checked in float64 and the ones above their tolerance (float32 cannot
   resolve ``rtol * lambda`` at weak regularisation) are refined in float64. The folds' held-out scores
   select ``C``;
2. the all-rows fit of the selected ``C`` of every layer starts from the mean of that ``C``'s fold fits
   (mapped to the all-rows standardization) and is solved in float64 to ``min(tol, rtol * lambda)``; its
   scores are the reported numbers. (With a fixed ``C`` there are no folds: the sweep holds the all-rows
   fits, which step 2 then polishes.)

Within a batch:

* One product per layer and iteration: the problems of a layer share its feature matrix ``X`` [N, D],
  standardized once with all training rows; fold ``f``'s own standardization is the per-column affine
  map ``x -> a_f x + c_f`` of those columns, folded into the weights (``logits = X (a_f W) + (c_f W +
  b)``), and rows outside the fold's training part get weight 0. So the logits of all problems of a
  layer are one ``X @ [a_f W_p]_p`` ([N, D] x [D, problems x K]) and the gradient is one ``G^T X``.
* Layers of different widths: parameters live in one [problems, D_max + 1, K] tensor (last row = bias);
  a narrower layer's extra rows never enter its products, get zero gradient and stay exactly 0 - the
  same as zero-padded features, whose optimal weights are exactly 0 under the L2 penalty.
* Per-problem L-BFGS (Liu & Nocedal 1989; Nocedal & Wright 2006, Alg. 7.4, memory 10) with a
  per-problem backtracking line search from step 1 that accepts the Armijo condition (``c1 = 1e-4``)
  or, where ``J`` no longer resolves the decrease in floating point, Hager & Zhang's (2005)
  approximate-Wolfe test ``phi'(a) <= 0.8 |phi'(0)|`` with ``phi(a) <= phi(0) + 10 eps |phi(0)|``;
  failed steps are secant-interpolated on ``phi'`` within [0.1, 0.5] of the failed one. Each problem
  stops on its own when ``max |grad J| <= tol`` (every entry of the gradient of ``J`` with respect to
  ``W`` and ``b``) and is removed from the products.
* Preconditioner: the L-BFGS initial inverse Hessian is ``gamma (A_p (x) Sigma + lambda I)^-1`` on ``W``
  and ``gamma A_p^+`` on ``b``, a Kronecker-factored curvature approximation in the spirit of K-FAC
  (Martens & Grosse 2015): ``Sigma`` is the layer's feature correlation matrix and ``A_p`` the
  row-averaged softmax curvature ``mean_i (diag p_i - p_i p_i^T)`` of problem ``p`` (at the class priors
  before the first step, where the approximation is the exact Hessian; then refreshed every iteration
  on a fixed random subsample of 2048 rows); ``gamma = s^T y / y^T M y`` is the usual secant scaling.
  It is applied through one eigendecomposition of ``Sigma`` per layer and of ``A_p`` per problem. The
  preconditioner changes the path to the minimiser, never the minimiser.

Tolerance and precision: a fit is converged at ``max |grad J| <= min(tol_stage, rtol * lambda)`` with
``tol_stage = cv_tol = 1e-4`` (scikit-learn's default tolerance, in the same units) in the sweep and ``tol
= 1e-6`` for the final fits, and ``rtol = 1e-2``. The relative part matters at weak regularisation: ``J``
is then nearly flat in some directions (curvature down to ``lambda``), so a fit stopped at an absolute
gradient tolerance can be far from the minimiser - its weights are a distance up to ``|grad J| / lambda``
away - and stopping early regularises it further: with ``cv_tol`` alone, held-out accuracies at C = 10
and 100 came out too high and selected a weaker C than converged scikit-learn (``tol=1e-8``) on 5 of 7
MiniLM layers (issue 15). With ``rtol * lambda`` the step left is at most ``rtol`` times the gradient's
size in units of ``lambda``, and the selected C and CV scores agree with converged scikit-learn
(``tests/test_probe_convergence.py``). The sweep runs by default in float32 (``cv_precision``) and is
checked and, where needed, refined in float64; float32 resolves ``J`` to about 1e-7 relative, which is why
the line search also accepts on the gradient (approximate Wolfe). ``cv_precision="float64"`` makes the
whole sweep float64 (slower on CPU). The final fits always end in float64.

Device: everything runs on the device of the (first) training layer; the solver synchronises with the
host once per iteration and line-search round, never per problem.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Collection
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .._validation import Flag, Instance, Interval, Options, as_2d_tensor, check_labels, check_positive_int, declare
from ..activations import SINGLE_LAYER, as_layers
from ._common import PROBE_RULES, STD_FLOOR_REL, check_number, encode_eval_labels, standardizer, table
from ._stats import bootstrap_ci

__all__ = ["linear_probe", "DEFAULT_CS"]

DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
"""Default grid of C (sklearn's inverse regularisation strength): ``logspace(-3, 2, 6)``."""

_HISTORY = 10  # L-BFGS memory
_MAX_LINE_SEARCH = 30
_PATIENCE = 10  # iterations in a row without a measurable decrease of J: a fit at the floating-point floor
_ARMIJO_C1 = 1e-4
_CURVATURE_ROWS = 2048  # rows of the subsample that estimates A_p
_CHUNK_ELEMENTS = 1 << 24  # logits elements (N x K x problems) per product, bounds memory


# ------------------------------------------------------------------------------------------- the solver
class _Batch:
    """A batch of logistic-regression problems sharing per-layer feature matrices.

    Problem ``p`` belongs to layer ``layer_of[p]`` and to a *group* ``group_of[p]`` (a layer x row-set
    pair): the group fixes the affine map of the layer's columns (``a``, ``c`` [groups, D_max]) and the
    row weights ``rw`` [groups, N] (``1/n`` on the group's training rows, 0 elsewhere). ``lam`` [P] is
    each problem's ``lambda``; ``eig[layer] = (vectors, values)`` of the layer's correlation matrix.
    """

    def __init__(self, xs: list[torch.Tensor], y: torch.Tensor, n_classes: int, layer_of: np.ndarray,
                 group_of: np.ndarray, a: torch.Tensor, c: torch.Tensor, rw: torch.Tensor, lam: torch.Tensor,
                 eig: list[tuple[torch.Tensor, torch.Tensor]]):
        self.xs, self.y = xs, y
        self.widths = [x.shape[1] for x in xs]
        self.dmax = max(self.widths)
        self.k = 1 if n_classes == 2 else n_classes
        self.layer_of, self.group_of = np.asarray(layer_of), np.asarray(group_of)
        self.dtype, self.device = xs[0].dtype, xs[0].device
        self.a, self.c, self.rw, self.lam = (t.to(self.dtype) for t in (a, c, rw, lam))
        self.eig = eig
        self.group_t = torch.as_tensor(self.group_of, device=self.device)
        self.y1 = y.to(self.dtype)
        n_rows = y.shape[0]
        gen = torch.Generator().manual_seed(0)
        self.sub = torch.randperm(n_rows, generator=gen)[:_CURVATURE_ROWS].sort().values.to(self.device)
        self.curv_val = torch.empty(self.n_problems, self.k, dtype=self.dtype, device=self.device)
        self.curv_vec = torch.empty(self.n_problems, self.k, self.k, dtype=self.dtype, device=self.device)
        # class priors of each problem's training rows -> starting bias and starting curvature
        onehot = F.one_hot(y, max(n_classes, 2)).to(self.dtype)
        prior = (self.rw @ onehot)[self.group_t]  # [P, n_classes]
        everything = torch.arange(self.n_problems, device=self.device)
        if self.k == 1:
            self.bias0 = torch.log(prior[:, 1:] / prior[:, :1])
            self.set_curvature(everything, (prior[:, 0] * prior[:, 1]).view(-1, 1, 1))
        else:
            logp = torch.log(prior)
            self.bias0 = logp - logp.mean(1, keepdim=True)
            self.set_curvature(everything, torch.diag_embed(prior) - prior.unsqueeze(2) * prior.unsqueeze(1))

    @property
    def n_problems(self) -> int:
        return len(self.layer_of)

    def set_curvature(self, pid: torch.Tensor, amat: torch.Tensor) -> None:
        """Store ``A_p`` [q, K', K'] of problems ``pid`` as eigenvalues (floored at 0) and eigenvectors."""
        if pid.numel() == 0:
            return
        if self.k == 1:
            self.curv_val[pid] = amat.view(-1, 1).clamp_min(0)
            self.curv_vec[pid] = 1.0
        else:
            val, vec = torch.linalg.eigh(amat.double())
            self.curv_val[pid] = val.clamp_min(0).to(self.dtype)
            self.curv_vec[pid] = vec.to(self.dtype)

    def _by_layer(self, idx: np.ndarray) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """(layer, positions within ``idx``, problem ids) per layer present in ``idx``, in bounded chunks."""
        layers = self.layer_of[idx]
        per_chunk = max(1, _CHUNK_ELEMENTS // (self.y.shape[0] * self.k))
        for l in np.unique(layers):
            pos_all = np.flatnonzero(layers == l)
            for start in range(0, len(pos_all), per_chunk):
                pos = pos_all[start:start + per_chunk]
                yield int(l), torch.as_tensor(pos, device=self.device), torch.as_tensor(idx[pos], device=self.device)

    def _logits(self, l: int, theta: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Logits [N, K', q] (classes in the middle, so reductions over classes are vectorised)."""
        d = self.widths[l]
        w = theta[:, :d]
        a, c = self.a[groups, :d], self.c[groups, :d]
        q = theta.shape[0]
        w_eff = (a.unsqueeze(2) * w).permute(1, 2, 0).reshape(d, self.k * q)
        b_eff = theta[:, self.dmax] + torch.einsum("qd,qdk->qk", c, w)
        z = torch.addmm(b_eff.T.reshape(1, self.k * q), self.xs[l], w_eff).view(-1, self.k, q)
        return z, w, a, c

    def _ce(self, z: torch.Tensor, rw: torch.Tensor | None = None, curvature: bool = False):
        """Per-row cross-entropy [N, q]; with row weights ``rw`` [N, q] also ``rw * dCE/dz`` [N, K', q] and,
        if asked, the weighted curvature ``sum_i rw_i (diag p_i - p_i p_i^T)`` [q, K', K'] on the subsample.

        Overwrites ``z`` in the multinomial case (callers pass a fresh logits tensor).
        """
        amat = None
        if self.k == 1:
            z1 = z[:, 0]
            y1 = self.y1.unsqueeze(1)
            ce = F.softplus(z1) - y1 * z1
            if rw is None:
                return ce, None, None
            p = torch.sigmoid(z1)
            if curvature:
                ps, ws = p[self.sub], rw[self.sub]
                amat = ((ps * (1 - ps) * ws).sum(0) / ws.sum(0).clamp_min(torch.finfo(p.dtype).tiny)).view(-1, 1, 1)
            return ce, ((p - y1) * rw).unsqueeze(1), amat
        idx = self.y.view(-1, 1, 1).expand(-1, 1, z.shape[2])
        z = z.sub_(z.amax(1, keepdim=True))  # in place: z - max, then exp(z - max)
        zy = torch.gather(z, 1, idx).squeeze(1)
        tot = z.exp_().sum(1)
        ce = torch.log(tot) - zy
        if rw is None:
            return ce, None, None
        if curvature:
            p = (z[self.sub] / tot[self.sub].unsqueeze(1)).permute(2, 0, 1)  # [q, n_sub, K]
            ws = rw[self.sub].T.unsqueeze(2)  # [q, n_sub, 1]
            pw = p * (ws / ws.sum(1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny))
            amat = torch.diag_embed(pw.sum(1)) - pw.transpose(1, 2) @ p
        res = z.mul_((rw / tot).unsqueeze(1))  # rw * softmax, then minus rw at the true class
        res.scatter_add_(1, idx, -rw.unsqueeze(1))
        return ce, res, amat

    def _correct(self, z: torch.Tensor) -> torch.Tensor:
        if self.k == 1:
            return (z[:, 0] > 0) == (self.y1.unsqueeze(1) > 0.5)
        return z.argmax(dim=1) == self.y.unsqueeze(1)

    def value_grad(self, theta: torch.Tensor, idx: np.ndarray, curvature: bool = False):
        """J, grad J and (if asked) A of problems ``idx`` at ``theta`` [len(idx), D_max + 1, K']."""
        f = torch.empty(len(idx), dtype=self.dtype, device=self.device)
        g = torch.zeros_like(theta)
        amats = torch.empty(len(idx), self.k, self.k, dtype=self.dtype, device=self.device) if curvature else None
        for l, pos, pid in self._by_layer(idx):
            th = theta[pos]
            groups = self.group_t[pid]
            z, w, a, c = self._logits(l, th, groups)
            rw = self.rw[groups].T  # [N, q]
            ce, res, amat = self._ce(z, rw, curvature)
            del z
            lam = self.lam[pid]
            f[pos] = (ce * rw).sum(0) + 0.5 * lam * w.square().sum((1, 2))
            q, d = th.shape[0], self.widths[l]
            xtg = (res.reshape(-1, self.k * q).T @ self.xs[l]).view(self.k, q, d).permute(1, 2, 0)
            gsum = res.sum(0).T  # [q, K']
            gw = a.unsqueeze(2) * xtg + c.unsqueeze(2) * gsum.unsqueeze(1) + lam.view(-1, 1, 1) * w
            if self.k > 1:  # stay on W 1 = 0, b^T 1 = 0 (the softmax is blind to a common shift)
                gw = gw - gw.mean(2, keepdim=True)
                gsum = gsum - gsum.mean(1, keepdim=True)
            gl = torch.zeros_like(th)
            gl[:, :d] = gw
            gl[:, self.dmax] = gsum
            g[pos] = gl
            if curvature:
                amats[pos] = amat
        return f, g, amats

    def scores(self, theta: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted accuracy and cross-entropy of every problem; ``weights`` [groups, N] sum to 1 per group."""
        acc = torch.empty(self.n_problems, dtype=torch.float64, device=self.device)
        loss = torch.empty_like(acc)
        for l, pos, pid in self._by_layer(np.arange(self.n_problems)):
            groups = self.group_t[pid]
            z, *_ = self._logits(l, theta[pos], groups)
            correct = self._correct(z)
            ce, _, _ = self._ce(z)
            wt = weights[groups].T.double()
            acc[pos] = (correct.double() * wt).sum(0)
            loss[pos] = (ce.double() * wt).sum(0)
        return acc, loss

    def precondition(self, v: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        """M v with M = (A_p (x) Sigma_layer + lambda I)^-1 on W and A_p^+ on b (module docstring)."""
        out = torch.empty_like(v)
        k = self.k
        for l, pos, pid in self._by_layer(idx):
            d = self.widths[l]
            vec, val = self.eig[l]
            vl = v[pos]
            q = vl.shape[0]
            lam = self.lam[pid]
            av, avec = self.curv_val[pid], self.curv_vec[pid]  # [q, K'], [q, K', K']
            t = (vec.T @ vl[:, :d].permute(1, 0, 2).reshape(d, q * k)).view(d, q, k)
            vb = vl[:, self.dmax]
            if k > 1:
                t = torch.einsum("dqk,qkj->dqj", t, avec)
                vb = torch.einsum("qk,qkj->qj", vb, avec)
            t = t / (val.view(-1, 1, 1) * av.unsqueeze(0) + lam.view(1, -1, 1))
            ok = av > 1e-10 * av.amax(1, keepdim=True)  # A_p^+: the common-shift direction has A = 0
            vb = torch.where(ok, vb / torch.where(ok, av, torch.ones_like(av)), torch.zeros_like(vb))
            if k > 1:
                t = torch.einsum("dqj,qkj->dqk", t, avec)
                vb = torch.einsum("qj,qkj->qk", vb, avec)
            ol = torch.zeros_like(vl)
            ol[:, :d] = (vec @ t.reshape(d, q * k)).view(d, q, k).permute(1, 0, 2)
            ol[:, self.dmax] = vb
            if k > 1:
                ol = ol - ol.mean(2, keepdim=True)
            out[pos] = ol
        return out


def _dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * v).sum((1, 2))


class _History:
    """L-BFGS memory of every problem: its last ``_HISTORY`` pairs (s, y) in a ring of its own."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device):
        n_prob = shape[0]
        self.s = torch.zeros((_HISTORY,) + shape, dtype=dtype, device=device)
        self.y = torch.zeros_like(self.s)
        self.rho = torch.zeros(_HISTORY, n_prob, dtype=dtype, device=device)
        self.gamma = torch.ones(n_prob, dtype=dtype, device=device)
        self.count = torch.zeros(n_prob, dtype=torch.long, device=device)  # pairs stored so far

    def direction(self, g: torch.Tensor, cols: torch.Tensor,
                  precondition: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``-H g`` for problems ``cols`` by the two-loop recursion, ``H0 = gamma M``."""
        q = g.clone()
        count = self.count[cols]
        pairs, alphas = [], []
        for j in range(_HISTORY):  # newest first
            sl = (count - 1 - j) % _HISTORY
            rho = torch.where(count > j, self.rho[sl, cols], torch.zeros_like(self.rho[0, cols]))
            s_j, y_j = self.s[sl, cols], self.y[sl, cols]
            al = rho * _dot(s_j, q)
            q -= al.view(-1, 1, 1) * y_j
            pairs.append((rho, s_j, y_j))
            alphas.append(al)
        r = self.gamma[cols].view(-1, 1, 1) * precondition(q)
        for (rho, s_j, y_j), al in zip(reversed(pairs), reversed(alphas)):
            be = rho * _dot(y_j, r)
            r += (al - be).view(-1, 1, 1) * s_j
        return -r

    def push(self, cols: torch.Tensor, s: torch.Tensor, y: torch.Tensor, keep: torch.Tensor) -> None:
        """Store the pairs of problems ``cols[keep]``."""
        cols = cols[keep]
        if cols.numel() == 0:
            return
        sl = self.count[cols] % _HISTORY
        s, y = s[keep], y[keep]
        self.s[sl, cols] = s
        self.y[sl, cols] = y
        self.rho[sl, cols] = 1.0 / _dot(s, y)
        self.count[cols] += 1


def _lbfgs(batch: _Batch, theta: torch.Tensor, *, tol: float, max_iter: int,
           history: _History | None = None) -> tuple[torch.Tensor, np.ndarray, np.ndarray, _History]:
    """Minimise every problem of ``batch`` from ``theta`` (module docstring).

    Returns (theta, max|grad J| per problem, iterations per problem, L-BFGS memory); ``history`` seeds
    the memory. A problem stops at ``max|grad J| <= tol``, after ``max_iter`` iterations, or when it
    stalls at the floating-point floor: its line search finds no acceptable step, or ``J`` has not
    decreased by more than ``2 eps |J|`` for ``_PATIENCE`` iterations in a row.
    """
    n_prob = batch.n_problems
    dev, dt = batch.device, batch.dtype
    eps = torch.finfo(dt).eps
    f, g, amat = batch.value_grad(theta, np.arange(n_prob), True)
    batch.set_curvature(torch.arange(n_prob, device=dev), amat)
    gmax = g.abs().amax((1, 2))
    tol = torch.as_tensor(tol, dtype=gmax.dtype, device=dev).expand(n_prob)
    hist = _History(tuple(theta.shape), dt, dev) if history is None else history
    iters = np.zeros(n_prob, dtype=np.int64)
    flat = np.zeros(n_prob, dtype=np.int64)  # consecutive iterations without a measurable decrease of J
    active = (gmax > tol).cpu().numpy()
    while active.any():
        act = np.flatnonzero(active)
        act_t = torch.as_tensor(act, device=dev)
        ga, tha, fa = g[act_t], theta[act_t], f[act_t]
        d = hist.direction(ga, act_t, lambda v, act=act: batch.precondition(v, act))
        gd = _dot(ga, d)
        bad = ~(gd < 0)  # not a descent direction (numerically): use the preconditioned gradient
        if bool(bad.any()):
            d = torch.where(bad.view(-1, 1, 1), -batch.precondition(ga, act), d)
            gd = _dot(ga, d)
        # per-problem backtracking line search; only the problems still searching are evaluated
        step = torch.ones(len(act), dtype=dt, device=dev)
        done = torch.zeros(len(act), dtype=torch.bool, device=dev)
        f_new, g_new = fa.clone(), ga.clone()
        a_new = torch.zeros(len(act), batch.k, batch.k, dtype=dt, device=dev)
        pending = np.arange(len(act))
        for _ in range(_MAX_LINE_SEARCH):
            pend_t = torch.as_tensor(pending, device=dev)
            st = step[pend_t]
            ft, gt, at = batch.value_grad(tha[pend_t] + st.view(-1, 1, 1) * d[pend_t], act[pending], True)
            f0, gd0 = fa[pend_t], gd[pend_t]
            dgt = _dot(gt, d[pend_t])
            armijo = ft <= f0 + _ARMIJO_C1 * st * gd0
            approx = (ft <= f0 + 10 * eps * f0.abs()) & (dgt <= 0.8 * gd0.abs())
            ok = armijo | approx
            f_new[pend_t] = torch.where(ok, ft, f_new[pend_t])
            g_new[pend_t] = torch.where(ok.view(-1, 1, 1), gt, g_new[pend_t])
            a_new[pend_t] = at
            done[pend_t] = ok
            secant = torch.where(dgt > gd0, st * gd0 / (gd0 - dgt), 0.5 * st)
            step[pend_t] = torch.where(ok, st, torch.minimum(torch.maximum(secant, 0.1 * st), 0.5 * st))
            pending = pending[~ok.cpu().numpy()]
            if pending.size == 0:
                break
        s = step.view(-1, 1, 1) * d * done.view(-1, 1, 1)
        yv = g_new - ga
        sy, yy = _dot(s, yv), _dot(yv, yv)
        keep = done & (sy > eps * yy) & (yy > 0)
        hist.push(act_t, s, yv, keep)
        batch.set_curvature(act_t[done], a_new[done])
        ymy = _dot(yv, batch.precondition(yv, act))
        upd = keep & (ymy > 0)
        hist.gamma[act_t] = torch.where(upd, sy / torch.where(upd, ymy, torch.ones_like(ymy)), hist.gamma[act_t])
        theta[act_t] = tha + s
        f[act_t], g[act_t] = f_new, g_new
        gm = g_new.abs().amax((1, 2))
        gmax[act_t] = gm
        iters[act] += 1
        status = torch.stack([gm <= tol[act_t], ~done, fa - f_new <= 2 * eps * f_new.abs()]).cpu().numpy()
        flat[act] = np.where(status[2], flat[act] + 1, 0)
        stop = status[0] | status[1] | (iters[act] >= max_iter) | (flat[act] >= _PATIENCE)
        active[act[stop]] = False
    return theta, gmax.cpu().numpy(), iters, hist


# -------------------------------------------------------------------------------------- preparation
def _affine_to_fold(xc: torch.Tensor, mean_g: torch.Tensor, scale_g: torch.Tensor,
                    rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, c) such that ``a * xc + c`` is the layer standardized by the training rows ``rows`` of a fold.

    ``xc`` is the layer standardized with all training rows, ``(x - mean_g) / scale_g``; the fold's raw
    mean and std follow from its columns exactly, and the constant rule is applied in raw units. A column
    constant on the fold's rows but not on all of them (e.g. a unit active on one held-out row only) is
    standardized to the same value on every fold row, but its computed mean and std carry rounding
    (``sd`` of order ``n eps |mu|``, as in ``sklearn.preprocessing.StandardScaler``'s constant-feature test);
    such a column is constant too: dividing by that rounding would blow the column up to ``1e15``.
    """
    sub = xc[rows]
    mu = sub.mean(0)
    sd = (sub - mu).square().mean(0).sqrt()
    raw_mean, raw_std = mean_g + scale_g * mu, scale_g * sd
    rounding = len(sub) * torch.finfo(sub.dtype).eps * mu.abs()
    constant = (raw_std <= STD_FLOOR_REL * raw_mean.abs()) | (sd <= rounding)
    scale = torch.where(constant, torch.ones_like(raw_std), raw_std)
    return scale_g / scale, -scale_g * mu / scale


def _correlation_eig(xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvectors, eigenvalues) of ``xc^T xc / n`` (standardized columns), for the preconditioner."""
    val, vec = torch.linalg.eigh((xc.T @ xc) / xc.shape[0])
    return vec, val.clamp_min(0)


def _stratified_folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


# ------------------------------------------------------------------------------------------- validation
def _interval(values: np.ndarray, n_boot: int, ci_level: float, seed: int) -> tuple[float, float]:
    if n_boot == 0:
        return math.nan, math.nan
    return bootstrap_ci(values, n_boot=n_boot, alpha=1.0 - ci_level, seed=seed)


# ----------------------------------------------------------------------------------------------- public
@declare(**PROBE_RULES, C=Interval(float, 0, closed="neither", none=True), Cs=Instance(Collection, none=True),
         folds=Interval(int, 2), target=Instance(str), max_iter=Interval(int, 1),
         tol=Interval(float, 0, closed="neither"), cv_tol=Interval(float, 0, closed="neither"),
         rtol=Interval(float, 0, closed="neither"), cv_precision=Options("float32", "float64"), return_cv=Flag())
def linear_probe(x: Any, labels: Any, evals: Mapping[str, tuple[Any, Any]] | None = None, *,
                 C: float | None = None, Cs: Sequence[float] = DEFAULT_CS, folds: int = 5, seed: int = 0,
                 target: str = "label", n_boot: int = 1000, ci_level: float = 0.95, max_iter: int = 1000,
                 tol: float = 1e-6, cv_tol: float = 1e-4, rtol: float = 1e-2, cv_precision: str = "float32",
                 return_cv: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Fit an L2-regularised multinomial logistic-regression probe per layer and score it.

    Minimises ``J = (1/n) sum_i CE_i + (lambda/2) ||W||^2`` with ``lambda = 1/(C n_train)`` on inputs
    standardized with training-split statistics (bias unpenalised; binary problems use one weight
    vector). This is exactly the objective of ``sklearn.linear_model.LogisticRegression(C=C)``
    (``C sum_i CE_i + 1/2 ||W||^2``) divided by ``C n_train``, so fits agree with sklearn fitted on the
    same standardized data. All layers x folds x strengths are solved together as batched tensor work
    by a preconditioned L-BFGS with per-problem line search and stopping, on the features' device
    (module docstring).

    Parameters
    ----------
    x : array/tensor [N, D], :class:`~workbench.activations.Activations` or mapping layer name -> [N, D_layer]
        Training representation; layers may differ in width. Tensors stay on their device (all layers are
        moved to the first layer's device).
    labels : array [N] of integer class ids (any integers; at least 2 classes).
    evals : mapping split name -> (X, y), optional
        ``X`` is an array if ``x`` is, or a mapping holding every training layer (extra layers are
        ignored). Every label must occur in ``labels``. The name "train" is reserved.
    C : float, optional
        Fixed inverse regularisation strength (sklearn's ``C``). If omitted, chosen per layer by
        stratified ``folds``-fold cross-validation on the training split from ``Cs``: highest mean
        held-out accuracy over the folds, ties broken by lower mean held-out log-loss. Each fold is
        standardized with its own training part; the split is ``StratifiedKFold(folds, shuffle=True,
        random_state=seed)``.
    Cs : sequence of float
        Grid for the cross-validation; default :data:`DEFAULT_CS` = ``logspace(-3, 2, 6)``.
    folds : int >= 2
        Every class needs at least ``folds`` training examples when ``C`` is not given.
    seed : int
        Seed of the fold assignment and of the bootstrap (the fits themselves are deterministic).
    target : str
        Name of what is probed, written to the ``target`` column.
    n_boot, ci_level : int >= 0, float in (0, 1)
        Percentile-bootstrap interval over the split's examples (:func:`stats.bootstrap_ci` of the
        per-example 0/1 correctness, resp. per-example cross-entropy); ``n_boot=0`` gives NaN bounds.
    max_iter : int
        L-BFGS iteration budget per fit.
    tol : float
        The final fits (float64) stop at ``max |grad J| <= min(tol, rtol * lambda)``; one stopping above 10
        times that triggers a RuntimeWarning.
    cv_tol, cv_precision : float, "float32" | "float64"
        Tolerance and floating-point type of the sweep: its fits stop at ``max |grad J| <= min(cv_tol,
        rtol * lambda)`` (module docstring; float32 fits are checked and refined in float64); a
        cross-validation fit stopping above 10 times that triggers a RuntimeWarning. On CUDA, float32
        assumes TF32 matmuls are off (PyTorch's default).
    rtol : float
        Tolerance relative to ``lambda = 1 / (C n)``, the weakest curvature of ``J``: without it, weakly
        regularised fits stop far from their minimiser and the sweep selects a different C than a
        converged solver (module docstring).
    return_cv : bool
        Also return the cross-validation table (below).

    Returns
    -------
    pandas.DataFrame
        The results schema (:mod:`workbench.results`: ``run, step, layer, layer_index, measure, split,
        value, ci_low, ci_high``; ``run``/``step`` NaN) then ``target, method, C, n_train, n_classes``: for
        each layer, split ("train", then the ``evals`` names) and measure ("accuracy" in [0, 1]; "loss" =
        mean cross-entropy in nats, unpenalised, as ``sklearn.metrics.log_loss``). ``method`` is
        "logistic"; ``C`` is the fixed or selected value; ``layer`` is the mapping key (``layer_index`` its
        position in the mapping), or "features" for array input.
    pandas.DataFrame, only with ``return_cv=True`` (and ``C`` not given)
        One row per layer x C x measure: ``split = "cv"``, ``value`` = mean over folds of the held-out
        fold's accuracy / loss, ``ci_low``/``ci_high`` NaN, then ``target, method, C``, ``fold_sd``
        (population standard deviation over folds), ``selected`` (the C used for the layer), ``n_train``,
        ``n_classes``.

    Raises
    ------
    ValueError
        NaN/Inf, 1-D features, mismatched N, a single class, eval labels absent from training, an eval
        split with a different width or missing layer, fewer examples of a class than ``folds``.
    TypeError
        Non-numeric features or labels, non-mapping ``evals``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1], 50); x = rng.normal(size=(100, 4)) + 6 * np.eye(4)[labels]   # two far-apart blobs
    >>> x_test = rng.normal(size=(100, 4)) + 6 * np.eye(4)[labels]
    >>> flipped = np.r_[1 - labels[:20], labels[20:]]     # 20 of 100 test labels wrong: a perfect probe scores 0.8
    >>> t = linear_probe(x, labels, {"test": (x_test, flipped)}, C=1.0)
    >>> t.query("measure == 'accuracy'").set_index("split").value.to_dict()
    {'train': 1.0, 'test': 0.8}
    """
    folds = check_positive_int(folds, "folds", minimum=2)
    seed = check_positive_int(seed, "seed", minimum=0)
    max_iter = check_positive_int(max_iter, "max_iter")
    n_boot = check_positive_int(n_boot, "n_boot", minimum=0)
    if isinstance(ci_level, bool) or not isinstance(ci_level, (int, float)) or not 0.0 < float(ci_level) < 1.0:
        raise ValueError(f"ci_level must be a number in (0, 1), e.g. 0.95; got {ci_level!r}")
    if not isinstance(target, str) or not target:
        raise TypeError(f"target must be a non-empty string naming what is probed, got {target!r}")
    if cv_precision not in ("float32", "float64"):
        raise ValueError(f"cv_precision must be 'float32' or 'float64', got {cv_precision!r}")
    tol = check_number(tol, "tol", low=0.0, low_open=True)
    cv_tol = check_number(cv_tol, "cv_tol", low=0.0, low_open=True)
    rtol = check_number(rtol, "rtol", low=0.0, low_open=True)
    fixed_c = None if C is None else check_number(C, "C", low=0.0, low_open=True)
    if fixed_c is None:
        if isinstance(Cs, (str, bytes)) or not hasattr(Cs, "__len__") or len(Cs) == 0:
            raise ValueError("Cs must be a non-empty sequence of positive numbers (or pass C)")
        Cs = [check_number(c, f"Cs[{i}]", low=0.0, low_open=True) for i, c in enumerate(Cs)]
    if return_cv and fixed_c is not None:
        raise ValueError("return_cv=True needs C=None (there is no cross-validation when C is fixed)")

    train_layers, is_mapping = as_layers(x, "x")
    y_np = check_labels(labels, "labels", min_classes=2)
    classes, counts = np.unique(y_np, return_counts=True)
    n_classes = len(classes)
    y_idx = np.searchsorted(classes, y_np)
    n = len(y_np)
    if fixed_c is None and counts.min() < folds:
        worst = classes[np.argmin(counts)]
        raise ValueError(f"class {worst} of labels has only {counts.min()} training example(s), fewer than "
                         f"folds={folds} needed for stratified cross-validation of C; lower `folds` (>= 2), pass a "
                         "fixed C, or add examples")

    evals = {} if evals is None else evals
    if not isinstance(evals, Mapping):
        raise TypeError(f"evals must be a mapping split name -> (X, y), got {type(evals).__name__}")
    eval_items: list[tuple[str, Mapping, np.ndarray]] = []
    for split, pair in evals.items():
        if split == "train":
            raise ValueError("evals may not contain a split named 'train' (reserved for the training scores)")
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError(f"evals[{split!r}] must be a pair (X, y)")
        xe, ye = pair
        if isinstance(xe, Mapping) != is_mapping:
            want = "a mapping of layers, like x" if is_mapping else "an array, like x"
            raise TypeError(f"evals[{split!r}] X must be {want}")
        ye_name = f"evals[{split!r}] y"
        ye_idx = encode_eval_labels(check_labels(ye, ye_name, min_classes=1), classes, ye_name)
        xe = xe if is_mapping else {SINGLE_LAYER: xe}
        for layer in train_layers:
            if layer not in xe:
                raise ValueError(f"evals[{split!r}] X has no layer {layer!r}; give every eval split the "
                                 "training layers")
        eval_items.append((split, xe, ye_idx))

    # ---- features: validate; standardize with all training rows (float64); eval splits likewise
    names = list(train_layers)
    device = None
    xc64: list[torch.Tensor] = []
    stats: list[tuple[torch.Tensor, torch.Tensor]] = []
    for layer in names:
        lname = f"x[{layer!r}]" if is_mapping else "x"
        x = as_2d_tensor(train_layers[layer], lname, min_rows=2)
        device = x.device if device is None else device
        x = x.to(device)
        if x.shape[0] != n:
            raise ValueError(f"mismatched number of samples: {lname} has {x.shape[0]} rows, labels has "
                             f"{n}; pass representations and labels of the same examples")
        mean, scale = standardizer(x)
        stats.append((mean, scale))
        xc64.append((x - mean) / scale)
        del x
    eval_x: dict[str, list[torch.Tensor]] = {}
    for split, xe_layers, ye_idx in eval_items:
        eval_x[split] = []
        for i, layer in enumerate(names):
            ename = f"evals[{split!r}] X" + (f"[{layer!r}]" if is_mapping else "")
            xe = as_2d_tensor(xe_layers[layer], ename).to(device)
            if xe.shape[1] != xc64[i].shape[1]:
                raise ValueError(f"{ename} has {xe.shape[1]} features but the training layer has "
                                 f"{xc64[i].shape[1]}; use the same layer/representation for training and "
                                 "evaluation")
            if xe.shape[0] != len(ye_idx):
                raise ValueError(f"mismatched number of samples: {ename} has {xe.shape[0]} rows, its labels "
                                 f"have {len(ye_idx)}")
            eval_x[split].append((xe - stats[i][0]) / stats[i][1])

    n_layers = len(names)
    kout = 1 if n_classes == 2 else n_classes
    dmax = max(x.shape[1] for x in xc64)
    y_t = torch.as_tensor(y_idx, device=device)
    eig64 = [_correlation_eig(x) for x in xc64]
    dt = torch.float32 if cv_precision == "float32" else torch.float64
    xs_dt = [x.to(dt) for x in xc64]
    eig_dt = [(v.to(dt), e.to(dt)) for v, e in eig64]
    grid = Cs if fixed_c is None else [fixed_c]
    n_cs = len(grid)
    warn_msgs = []

    # ---- the sweep: every layer x C on all training rows and, without a fixed C, on every fold's
    # training part; one batch, every problem started from zero weights and the class-prior biases
    n_fit = 1 if fixed_c is not None else folds  # row sets per layer: all rows, or the folds
    n_grp = n_layers * n_fit
    a = torch.ones(n_grp, dmax, dtype=torch.float64, device=device)
    c = torch.zeros_like(a)
    rw = torch.full((n_grp, n), 1.0 / n, dtype=torch.float64, device=device)
    vw = torch.zeros_like(rw)
    n_rows = torch.full((n_grp,), float(n), dtype=torch.float64, device=device)
    fold_idx = _stratified_folds(y_idx, folds, seed) if fixed_c is None else []
    for li in range(n_layers):
        d = xc64[li].shape[1]
        for f, (tr, va) in enumerate(fold_idx):
            gi = li * n_fit + f
            tr_t = torch.as_tensor(tr, device=device)
            a[gi, :d], c[gi, :d] = _affine_to_fold(xc64[li], stats[li][0], stats[li][1], tr_t)
            rw[gi] = 0.0
            rw[gi, tr_t] = 1.0 / len(tr)
            vw[gi, torch.as_tensor(va, device=device)] = 1.0 / len(va)
            n_rows[gi] = len(tr)
    lam = 1.0 / (torch.tensor(grid, dtype=torch.float64, device=device).view(1, -1) * n_rows.view(-1, 1))
    layer_of = np.repeat(np.arange(n_layers), n_fit * n_cs)
    group_of = np.repeat(np.arange(n_grp), n_cs)
    batch = _Batch(xs_dt, y_t, n_classes, layer_of, group_of, a, c, rw, lam.reshape(-1), eig_dt)
    theta = torch.zeros(n_grp * n_cs, dmax + 1, kout, dtype=dt, device=device)
    theta[:, dmax] = batch.bias0
    lam = lam.reshape(-1)
    tol_sweep = torch.clamp(rtol * lam, max=cv_tol)  # per problem: min(cv_tol, rtol * lambda)
    theta, gmax, _, _ = _lbfgs(batch, theta, tol=tol_sweep.to(dt), max_iter=max_iter)
    if dt != torch.float64:
        # ---- check every sweep fit in float64 and refine those float32 left above their tolerance
        # (weak regularisation: rtol * lambda can lie below what float32 resolves)
        del batch
        batch = _Batch(xc64, y_t, n_classes, layer_of, group_of, a, c, rw, lam, eig64)
        theta, gmax, _, _ = _lbfgs(batch, theta.double(), tol=tol_sweep, max_iter=max_iter)
    tol_sweep = tol_sweep.cpu().numpy()

    # ---- model selection by the folds' held-out scores
    cv_rows: list[dict[str, Any]] = []
    best = [0] * n_layers
    if fixed_c is None:
        far = gmax > 10 * tol_sweep
        if far.any():
            warn_msgs.append(f"{int(far.sum())} cross-validation fit(s) stopped with max|grad J| > 10 x "
                             f"min(cv_tol, rtol * lambda)")
        acc, loss = batch.scores(theta, vw)
        acc = acc.cpu().numpy().reshape(n_layers, n_fit, n_cs)
        loss = loss.cpu().numpy().reshape(n_layers, n_fit, n_cs)
        for li, layer in enumerate(names):
            mean_acc, mean_loss = acc[li].mean(0), loss[li].mean(0)
            best[li] = min(range(n_cs), key=lambda k: (-round(float(mean_acc[k]), 12), float(mean_loss[k])))
            for k in range(n_cs):
                for measure, vals in (("accuracy", acc[li, :, k]), ("loss", loss[li, :, k])):
                    cv_rows.append({"layer": layer, "measure": measure, "split": "cv", "value": float(vals.mean()),
                                    "target": target, "method": "logistic", "C": grid[k],
                                    "fold_sd": float(vals.std()), "selected": k == best[li], "n_train": n,
                                    "n_classes": n_classes})
    del batch
    c_used = [grid[k] for k in best]
    if fixed_c is None:
        # the all-rows fit starts from the mean of the selected C's fold fits, mapped to the all-rows
        # standardization (w -> a_f w, b -> b + c_f w), close to its minimiser
        chosen = torch.as_tensor([(li * n_fit + f) * n_cs + best[li] for li in range(n_layers) for f in range(folds)],
                                 device=device)
        th = theta[chosen].double()
        grp = chosen // n_cs
        init = torch.zeros_like(th)
        init[:, :dmax] = a[grp].unsqueeze(2) * th[:, :dmax]
        init[:, dmax] = th[:, dmax] + torch.einsum("qd,qdk->qk", c[grp], th[:, :dmax])
        init = init.view(n_layers, folds, dmax + 1, kout).mean(1)
    else:
        init = theta
    del theta
    ones = torch.ones(n_layers, dmax, dtype=torch.float64, device=device)
    lam_used = torch.tensor([1.0 / (cv * n) for cv in c_used], dtype=torch.float64, device=device)
    rw_all = torch.full((n_layers, n), 1.0 / n, dtype=torch.float64, device=device)

    # ---- the selected all-rows fit of every layer, polished in float64 to min(tol, rtol * lambda)
    final = _Batch(xc64, y_t, n_classes, np.arange(n_layers), np.arange(n_layers), ones, torch.zeros_like(ones),
                   rw_all, lam_used, eig64)
    tol_final = torch.clamp(rtol * lam_used, max=tol)
    theta, gmax, _, _ = _lbfgs(final, init.double(), tol=tol_final, max_iter=max_iter)
    del final
    far = gmax > 10 * tol_final.cpu().numpy()
    if far.any():
        warn_msgs.append(f"{int(far.sum())} final fit(s) stopped with max|grad J| > 10 x min(tol, rtol * lambda)")
    if warn_msgs:
        warnings.warn("L-BFGS did not converge: " + "; ".join(warn_msgs) + ". Raise max_iter or use smaller C "
                      "values", RuntimeWarning, stacklevel=2)

    # ---- scores with bootstrap intervals over the examples of each split
    rows: list[dict[str, Any]] = []
    splits = [("train", xc64, y_idx)] + [(s, eval_x[s], ye) for s, _, ye in eval_items]
    for li, layer in enumerate(names):
        d = xc64[li].shape[1]
        w, b = theta[li, :d], theta[li, dmax]
        for split, xs, ys in splits:
            z = xs[li] @ w + b
            if kout == 1:
                z = torch.cat([torch.zeros_like(z), z], dim=1)
            ys_t = torch.as_tensor(ys, device=device)
            ce = F.cross_entropy(z, ys_t, reduction="none").cpu().numpy()
            correct = (z.argmax(dim=1) == ys_t).double().cpu().numpy()
            for measure, per_example in (("accuracy", correct), ("loss", ce)):
                low, high = _interval(per_example, n_boot, ci_level, seed)
                rows.append({"layer": layer, "measure": measure, "split": split, "value": float(per_example.mean()),
                             "ci_low": low, "ci_high": high, "target": target, "method": "logistic",
                             "C": c_used[li], "n_train": n, "n_classes": n_classes})
    result = table(rows, names)
    if return_cv:
        return result, table(cv_rows, names)
    return result

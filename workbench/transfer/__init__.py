"""Transferability estimators: how well a representation is predicted to transfer to a labelled target task.

* :func:`logme` / :func:`logme_targets` - maximum Bayesian linear-regression evidence (You et al. 2021),
  exact for ``N < D`` and rank-deficient features.
* :func:`leep` - log expected empirical prediction from a source model's probabilities (Nguyen et al. 2020).
* :func:`nce` - negative conditional entropy of target given source labels (Tran et al. 2019).
* :func:`hscore` - H-score (Bao et al. 2019), optionally with Ledoit-Wolf shrinkage (Ibrahim et al. 2022).
* :func:`transrate` - coding-rate difference (Huang et al. 2022).
* :func:`transfer_table` - the feature-based scores for every layer, as a tidy table.

Higher means "predicted to transfer better" for every score; the scales differ and are not comparable
across scores. See each docstring for the formula, its source, its range and its scale behaviour.
"""
from __future__ import annotations

from ._logme import logme, logme_targets
from ._scores import hscore, leep, nce, transrate
from ._table import MEASURES, transfer_table

__all__ = ["logme", "logme_targets", "leep", "nce", "hscore", "transrate", "transfer_table", "MEASURES"]

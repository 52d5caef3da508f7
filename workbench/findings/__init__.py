"""Published findings as self-checking experiments: ``workbench findings`` lists them, ``workbench study ID``
runs one.

Each finding is one module here declaring a :class:`Finding` (claim, source, the grid of pretraining choices,
the downstream tasks and measures, the checks of its verdict, its figures, its smoke / quick / full sizes):

=====  ========================  =======================================================================================
id     module                    pretraining choice → what shows it
=====  ========================  =======================================================================================
S1     ``label_noise``           symmetric label noise → transfer to held-out classes, ID and OOD; spectrum
S2     ``ssl_length_dense``      SSL training length → image-level vs dense probes per checkpoint, DSE's pick
S3     ``norm_placement``        LayerNorm placement → per-layer gradient norms, skip-a-block loss
S4     ``temperature``           InfoNCE temperature → uniformity and tolerance at the projector and backbone
S5     ``projection_head``       projector depth → probes and spectra per layer across backbone and head (colour, shape)
S6     ``invariance``            augmentation set × data fraction → factor probes (colour, shape, x, scale), invariance
S7     ``probe_vs_finetune``     model size → frozen-probe vs fine-tune transfer at two label fractions, rank crossings
S8     ``unlabeled_data``        unlabeled m × labeled n → downstream excess risk vs the Bayes risk, raw-input baseline
S9     ``seed_subspaces``        seed only → same-layer CKA / Procrustes vs one-to-one unit matching across seeds
S10    ``eigenmode_steps``       init scale × SSL objective → embedding eigenvalues every k steps, mode onsets
S11    ``contrastive_collapse``  objective × easy feature × embedding dim → subclass / hard-feature probes, spread
S12    ``memorization``          label noise × training length → clean vs flipped fit over steps, EL2N AUROC
=====  ========================  =======================================================================================

Every finding of ``assets/STUDIES.md`` has its experiment (:data:`CATALOG` lists their claims). The verdict rule
is :mod:`workbench.findings._base`'s docstring (:class:`Check`).

>>> from workbench import findings
>>> findings.get("S12").name, findings.get("memorization").id
('memorization', 'S12')
>>> result = findings.get("S12").run("smoke", store="/tmp/wb-doc-store", progress=False)  # doctest: +SKIP
>>> print(result.verdict)  # doctest: +SKIP
"""
from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import Any

import pandas as pd

from ..runs import RunStore
from ._base import (EXPECT, MODES, OUTCOMES, Check, Finding, Quantity, Result, Setting, Verdict, at_step_fraction,
                    load_verdict, machine, mean_of, save_verdict, slope, verdict_path)
from ._report import verdict_figure, write_report
from .contrastive_collapse import FINDING as S11
from .eigenmode_steps import FINDING as S10
from .invariance import FINDING as S6
from .label_noise import FINDING as S1
from .memorization import FINDING as S12
from .norm_placement import FINDING as S3
from .probe_vs_finetune import FINDING as S7
from .projection_head import FINDING as S5
from .seed_subspaces import FINDING as S9
from .ssl_length_dense import FINDING as S2
from .temperature import FINDING as S4
from .unlabeled_data import FINDING as S8

__all__ = ["Finding", "Setting", "Check", "Quantity", "Verdict", "Result", "MODES", "OUTCOMES", "EXPECT",
           "FINDINGS", "CATALOG", "get", "findings_table", "recorded_verdicts", "run", "write_report",
           "verdict_figure", "slope", "mean_of", "at_step_fraction", "machine", "save_verdict"]

#: the findings with an experiment, by id
FINDINGS: dict[str, Finding] = {f.id: f for f in (S1, S2, S3, S4, S5, S6, S7, S8, S9, S10, S11, S12)}

#: every finding of assets/STUDIES.md: id → (name, claim, source)
CATALOG: dict[str, tuple[str, str, str]] = {f.id: (f.name, f.claim, f.source) for f in FINDINGS.values()}


def get(finding: str) -> Finding:
    """The finding with this id (``"S1"``, case-insensitive) or name (``"label_noise"``)."""
    if not isinstance(finding, str):
        raise TypeError(f"finding must be an id or a name (str), got {type(finding).__name__}")
    key = finding.strip()
    for f in FINDINGS.values():
        if key.upper() == f.id or key.lower() == f.name:
            return f
    raise ValueError(f"unknown finding {finding!r}; give an id or a name: "
                     f"{', '.join(f'{i} ({n})' for i, (n, _, _) in CATALOG.items())}")


def recorded_verdicts() -> dict[str, Verdict]:
    """The quick verdicts recorded in the repository (``workbench/findings/recorded.json``: written by
    ``python benchmarks/bench_findings.py``, with their date, machine and time)."""
    text = importlib.resources.files(__package__).joinpath("recorded.json").read_text()
    return {k: Verdict.from_dict(v) for k, v in json.loads(text).items()}


def findings_table(store: Any = None) -> pd.DataFrame:
    """One row per finding of :data:`CATALOG`: ``id, name, claim, verdict, numbers, origin, mode, seeds, date,
    machine, wall_s``. The verdict is the latest of the user's own runs in ``store`` (``origin="yours"``), else
    the quick verdict recorded in the repository (``"recorded"``). Nothing is trained."""
    store = store if isinstance(store, RunStore) else RunStore(store)
    recorded = recorded_verdicts()
    rows = []
    for fid, (name, claim, _source) in CATALOG.items():
        row: dict[str, Any] = {"id": fid, "name": name, "claim": claim}
        mine = [v for v in (load_verdict(verdict_path(store, fid, m)) for m in MODES) if v is not None]
        mine = [v for v in mine if v.mode != "smoke"] or []
        latest = max(mine, key=lambda v: v.date) if mine else None
        verdict, origin = (latest, "yours") if latest else (recorded.get(fid), "recorded")
        if verdict is None:
            row |= {"verdict": "not run yet", "origin": ""}
        else:
            row |= {"verdict": verdict.outcome, "numbers": verdict.numbers(), "origin": origin, "mode": verdict.mode,
                    "seeds": " ".join(map(str, verdict.seeds)), "date": verdict.date, "machine": verdict.machine,
                    "wall_s": verdict.wall_s}
        rows.append(row)
    cols = ["id", "name", "claim", "verdict", "numbers", "origin", "mode", "seeds", "date", "machine", "wall_s"]
    return pd.DataFrame(rows).reindex(columns=cols)


def run(finding: str, mode: str = "quick", *, out: str | Path | None = None, store: Any = None,
        static: bool = True, progress: bool = True) -> Result:
    """Run finding ``finding`` (id or name) at size ``mode`` and, with ``out``, write its report; the verdict
    is kept in the store for ``workbench findings``. See :meth:`Finding.run`."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {list(MODES)}")
    return get(finding).run(mode, out=out, store=store, static=static, progress=progress)

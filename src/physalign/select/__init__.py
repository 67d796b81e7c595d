"""PhysHPO's automatic data selection: score every candidate of a pool, keep the top fraction, say why the
rest were dropped. A pure library; ``physalign select`` and ``physalign select-pool`` are thin commands over it.

- :mod:`criteria`: motion, sharpness, flicker of one video; the judge's plausibility and text match.
- :mod:`rank`: goodness, weighted score, thresholds, the top fraction and the reasons (:func:`select`).
- :mod:`pool`: a labelled world pool of clean and degraded candidates (:func:`build_pool`).
- :mod:`run`: score a manifest batch by batch and write ``selected.jsonl``, ``scores.jsonl``, ``report.md``.
- :mod:`report`: the report, with precision and recall of the clean candidates on a labelled pool.

    from physalign.select import SelectConfig, build_pool, run
    manifest = build_pool("data/select/pool", n=400, seed=0)
    run(manifest, "runs/select", SelectConfig(keep=0.5), judge=None)
"""

from physalign.select.pool import DEGRADATIONS, build_pool
from physalign.select.rank import CRITERIA, SelectConfig, Selection, select
from physalign.select.run import run, score_pool

__all__ = ["CRITERIA", "DEGRADATIONS", "SelectConfig", "Selection", "build_pool", "run", "score_pool", "select"]

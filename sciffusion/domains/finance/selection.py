"""Do no harm: the network's weight against the statistical base it starts from, chosen on the validation period.

A scenario model is trained on the whitened residuals of a GJR-GARCH-t with a constant-correlation Gaussian copula
(CCC); its zero-initialised network starts as the exact denoiser of N(0, I), so the untrained model *is* the CCC
model. Training can still end slightly worse than that start on the scores users care about (a 20-stock panel
did, by 0.1-1.3%). So after training, the validation period's scenarios are drawn with the network shrunk towards
the base law, ``D_G + w (D - D_G)`` for each ``w`` in :data:`NET_WEIGHTS` (``w = 0`` is CCC exactly; see
:class:`~sciffusion.diffusion.TowardsGaussian`), all with the same seeds (common random numbers: the comparison is
not swamped by Monte-Carlo noise), and scored jointly (:func:`~.joint.joint_scores`). Each origin's loss is its
scores relative to the base's mean score, averaged over the scores; a weight ``w > 0`` is eligible only if its loss
is lower than the base's by a Diebold-Mariano test at level :data:`ALPHA` (Newey-West lag ``H - 1``: H-day paths
from neighbouring origins overlap). The run keeps the eligible ``w`` with the lowest mean score ratio to ``w = 0``
(a tie keeps the smaller weight), or the base when none is eligible: a gain inside the selection's own noise is not
taken (one such gain, 0.15% on validation, was a 2% loss on the test years of a synthetic panel).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ...diffusion import derive_seed
from ...metrics import diebold_mariano
from ...tasks.calibration import as_spec, draw
from ...training.module import DiffusionModule
from ...training.sampling import SamplingSpec
from .joint import joint_scores

NET_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
TIE = 1e-4  # a mean score ratio within this of the best counts as a tie (the smaller weight wins)
ALPHA = 0.05  # a weight > 0 must beat the base by a Diebold-Mariano test at this level


def choose_weight(ratios: dict[float, float], pvalues: dict[float, float] | None = None, tie: float = TIE,
                  alpha: float = ALPHA) -> float:
    """The weight with the lowest mean score ratio among the base (the smallest weight) and the weights that beat
    it significantly (``pvalues[w] < alpha`` with a ratio below the base's; all weights when ``pvalues`` is None);
    among those within ``tie`` of the best, the smallest."""
    base = min(ratios)
    ok = {w: r for w, r in ratios.items()
          if w == base or pvalues is None or (pvalues.get(w, 1.0) < alpha and r < ratios[base])}
    best = min(ok.values())
    return min(w for w, r in ok.items() if r <= best + tie)


def net_weight_selector(cond: np.ndarray, y: np.ndarray, to_returns: Callable[[torch.Tensor, np.ndarray], np.ndarray],
                        sampling: dict[str, Any] | SamplingSpec, seed: int, paths: int = 16,
                        weights: Sequence[float] = NET_WEIGHTS) -> Callable[..., dict[str, Any]]:
    """A ``calibrate(module, sampling=None)`` hook for :func:`~sciffusion.tasks.run_training` that picks
    ``sampling.net_weight``.

    ``cond`` ``(O, C_cond, H)``: the conditions of the validation origins; ``y`` ``(O, H, A)``: their realised log
    returns; ``to_returns(x, rows)`` turns normalised model samples ``(n, A, H)`` drawn for origins ``rows`` into log
    returns ``(n, A, H)``. Returns ``{"sampling": {"net_weight"}, "metrics": {...}}`` with every weight's scores.
    """
    built = as_spec(sampling)
    O, H, A = y.shape

    def select(module: DiffusionModule, sampling: dict[str, Any] | None = None) -> dict[str, Any]:
        if O == 0:
            return {}
        spec = (built if sampling is None else as_spec(sampling)).replace(inflation=None, net_weight=1.0)
        rows = np.repeat(np.arange(O), paths)
        seeds = [derive_seed(seed, "net weight selection", int(o), p) for o in range(O) for p in range(paths)]
        c = torch.from_numpy(np.ascontiguousarray(cond[rows]))
        per: dict[float, dict[str, np.ndarray]] = {}
        for w in weights:
            x = draw(module, (A, H), seeds, spec.replace(net_weight=float(w)), cond=c)
            lr = to_returns(x.cpu(), rows).reshape(O, paths, A, H).transpose(0, 3, 1, 2)   # (O, H, P, A)
            per[float(w)] = joint_scores(lr, y)
        scores = {w: {k: float(np.nanmean(v)) for k, v in p.items()} for w, p in per.items()}
        b = min(scores)
        base = scores[b]
        kinds = [k for k in base if base[k] > 0]
        ratios = {w: float(np.mean([s[k] / base[k] for k in kinds])) for w, s in scores.items()}
        # per-origin loss: each score relative to the base's mean score, averaged over the scores
        loss = {w: np.nanmean([per[w][k] / base[k] for k in kinds], axis=0) for w in per}
        lag = min(H - 1, max(O - 2, 0))
        pvalues = {w: _pvalue(loss[w], loss[b], lag) for w in per if w != b} if O > 2 else {}
        chosen = choose_weight(ratios, pvalues if O > 2 else None)
        return {"sampling": {"net_weight": chosen},
                "metrics": {"net_weight": chosen, "net_weight_selection": {
                    "origins": O, "paths": paths, "mean_score_ratio_to_base": {str(w): r for w, r in ratios.items()},
                    "pvalue_versus_base": {str(w): p for w, p in pvalues.items()}, "alpha": ALPHA,
                    "scores": {str(w): s for w, s in scores.items()},
                    "chosen": "the base (CCC-GJR-t)" if chosen == 0 else f"network at weight {chosen:g}"}}}

    return select


def _pvalue(loss: np.ndarray, base: np.ndarray, lag: int) -> float:
    """Diebold-Mariano p of ``loss`` against ``base``; 1 where the differences are constant (an untrained network
    equals its base: nothing to test)."""
    try:
        return diebold_mariano(loss, base, lag)["pvalue"]
    except ValueError:
        return 1.0

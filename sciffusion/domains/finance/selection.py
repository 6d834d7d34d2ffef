"""Do no harm: the network's weight against the statistical base it starts from, chosen on the validation period.

A scenario model is trained on the whitened residuals of a GJR-GARCH-t with a constant-correlation Gaussian copula
(CCC); its zero-initialised network starts as the exact denoiser of N(0, I), so the untrained model *is* the CCC
model. Training can still end slightly worse than that start on the scores users care about (a 20-stock panel
did, by 0.1-1.3%). So after training, the validation period's scenarios are drawn with the network shrunk towards
the base law, ``D_G + w (D - D_G)`` for each ``w`` in :data:`NET_WEIGHTS` (``w = 0`` is CCC exactly; see
:class:`~sciffusion.diffusion.TowardsGaussian`), all with the same seeds (common random numbers: the comparison is
not swamped by Monte-Carlo noise), and scored jointly (:func:`~.joint.joint_scores`). The run keeps the ``w`` with
the lowest mean score ratio to ``w = 0``; a tie keeps the smaller weight, so a network that does not help is off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ...diffusion import derive_seed
from ...tasks.calibration import draw
from ...training.module import DiffusionModule
from ...training.sampling import SamplingSpec
from .joint import joint_scores

NET_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
TIE = 1e-4  # a mean score ratio within this of the best counts as a tie (the smaller weight wins)


def choose_weight(ratios: dict[float, float], tie: float = TIE) -> float:
    """The weight with the lowest mean score ratio; among those within ``tie`` of it, the smallest."""
    best = min(ratios.values())
    return min(w for w, r in ratios.items() if r <= best + tie)


def net_weight_selector(cond: np.ndarray, y: np.ndarray, to_returns: Callable[[torch.Tensor, np.ndarray], np.ndarray],
                        sampling: dict[str, Any] | SamplingSpec, seed: int, paths: int = 16,
                        weights: Sequence[float] = NET_WEIGHTS) -> Callable[[DiffusionModule], dict[str, Any]]:
    """A ``calibrate(module)`` hook for :func:`~sciffusion.tasks.run_training` that picks ``sampling.net_weight``.

    ``cond`` ``(O, C_cond, H)``: the conditions of the validation origins; ``y`` ``(O, H, A)``: their realised log
    returns; ``to_returns(x, rows)`` turns normalised model samples ``(n, A, H)`` drawn for origins ``rows`` into log
    returns ``(n, A, H)``. Returns ``{"sampling": {"net_weight"}, "metrics": {...}}`` with every weight's scores.
    """
    spec = sampling if isinstance(sampling, SamplingSpec) else SamplingSpec.from_settings(sampling)
    spec = spec.replace(inflation=None, net_weight=1.0)
    O, H, A = y.shape

    def select(module: DiffusionModule) -> dict[str, Any]:
        if O == 0:
            return {}
        rows = np.repeat(np.arange(O), paths)
        seeds = [derive_seed(seed, "net weight selection", int(o), p) for o in range(O) for p in range(paths)]
        c = torch.from_numpy(np.ascontiguousarray(cond[rows]))
        scores: dict[float, dict[str, float]] = {}
        for w in weights:
            x = draw(module, (A, H), seeds, spec.replace(net_weight=float(w)), cond=c)
            lr = to_returns(x.cpu(), rows).reshape(O, paths, A, H).transpose(0, 3, 1, 2)   # (O, H, P, A)
            scores[float(w)] = {k: float(np.nanmean(v)) for k, v in joint_scores(lr, y).items()}
        base = scores[min(scores)]
        ratios = {w: float(np.mean([s[k] / base[k] for k in base if base[k] > 0])) for w, s in scores.items()}
        chosen = choose_weight(ratios)
        return {"sampling": {"net_weight": chosen},
                "metrics": {"net_weight": chosen, "net_weight_selection": {
                    "origins": O, "paths": paths, "mean_score_ratio_to_base": {str(w): r for w, r in ratios.items()},
                    "scores": {str(w): s for w, s in scores.items()},
                    "chosen": "the base (CCC-GJR-t)" if chosen == 0 else f"network at weight {chosen:g}"}}}

    return select

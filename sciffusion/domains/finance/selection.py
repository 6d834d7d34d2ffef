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

The training length is chosen the same way: with EMA snapshots in the run (``trainer.snapshot_every``, 250 steps by
default for scenarios; :mod:`sciffusion.training.snapshots`) every snapshot is a candidate beside the final
weights, at every ``w > 0``, and the test level is divided by the number of snapshots (Bonferroni): the loss can
keep falling after the joint scores stop improving, and an early stop must still beat the base significantly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ...diffusion import derive_seed
from ...metrics import diebold_mariano
from ...tasks.calibration import as_spec, draw
from ...training.module import DiffusionModule
from ...training.sampling import SamplingSpec
from ...training.snapshots import load_snapshot, snapshots_before
from .joint import joint_scores

NET_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
TIE = 1e-4  # a mean score ratio within this of the best counts as a tie (the smaller weight wins)
ALPHA = 0.05  # a weight > 0 must beat the base by a Diebold-Mariano test at this level


def choose_weight(ratios: dict[Any, float], pvalues: dict[Any, float] | None = None, tie: float = TIE,
                  alpha: float = ALPHA) -> Any:
    """The weight with the lowest mean score ratio among the base (the smallest weight) and the weights that beat
    it significantly (``pvalues[w] < alpha`` with a ratio below the base's; all weights when ``pvalues`` is None);
    among those within ``tie`` of the best, the smallest. Keys may be tuples (a weight and a tie-breaker)."""
    base = min(ratios)
    ok = {w: r for w, r in ratios.items()
          if w == base or pvalues is None or (pvalues.get(w, 1.0) < alpha and r < ratios[base])}
    best = min(ok.values())
    return min(w for w, r in ok.items() if r <= best + tie)


def net_weight_selector(cond: np.ndarray, y: np.ndarray, to_returns: Callable[[torch.Tensor, np.ndarray], np.ndarray],
                        sampling: dict[str, Any] | SamplingSpec, seed: int, paths: int = 16,
                        weights: Sequence[float] = NET_WEIGHTS,
                        run_dir: str | os.PathLike | None = None, base: str = "CCC-GJR-t"
                        ) -> Callable[..., dict[str, Any]]:
    """A ``calibrate(module, sampling=None)`` hook for :func:`~sciffusion.tasks.run_training` that picks
    ``sampling.net_weight`` and, when ``run_dir`` holds EMA snapshots (``trainer.snapshot_every``), the training
    length: every snapshot and the final weights are candidates, each at every weight ``w > 0``, and the chosen
    snapshot's EMA weights are loaded into ``module`` (early stopping on the validation score, not on the loss).
    Several candidates are several tests: a candidate must beat the base at ``ALPHA / candidates`` (Bonferroni), so
    more snapshots do not make a gain inside the noise more likely to be taken.

    ``cond`` ``(O, C_cond, H)``: the conditions of the validation origins; ``y`` ``(O, H, A)``: their realised log
    returns; ``to_returns(x, rows)`` turns normalised model samples ``(n, A, H)`` drawn for origins ``rows`` into log
    returns ``(n, A, H)``; ``base``: the base law's name, for ``info``. Returns ``{"sampling": {"net_weight"},
    "metrics": {...}}`` with every candidate's scores.
    """
    built = as_spec(sampling)
    O, H, A = y.shape
    b = min(weights)

    def select(module: DiffusionModule, sampling: dict[str, Any] | None = None) -> dict[str, Any]:
        if O == 0:
            return {}
        spec = (built if sampling is None else as_spec(sampling)).replace(inflation=None, net_weight=1.0)
        rows = np.repeat(np.arange(O), paths)
        seeds = [derive_seed(seed, "net weight selection", int(o), p) for o in range(O) for p in range(paths)]
        c = torch.from_numpy(np.ascontiguousarray(cond[rows]))

        def scores_at(w: float) -> dict[str, np.ndarray]:   # per-origin joint scores, common random numbers
            x = draw(module, (A, H), seeds, spec.replace(net_weight=float(w)), cond=c)
            lr = to_returns(x.cpu(), rows).reshape(O, paths, A, H).transpose(0, 3, 1, 2)   # (O, H, P, A)
            return joint_scores(lr, y)

        final_step = int(module.global_step)
        steps = [*(snapshots_before(run_dir, final_step) if run_dir is not None else []), final_step]
        final = {k: v.detach().clone() for k, v in module.ema.shadow.state_dict().items()}
        per: dict[tuple[float, int], dict[str, np.ndarray]] = {(b, 0): scores_at(b)}   # w = 0: no network at all
        for step in steps:
            module.ema.shadow.load_state_dict(final if step == final_step else load_snapshot(run_dir, step))
            per.update({(float(w), step): scores_at(w) for w in weights if w != b})
        scores = {key: {k: float(np.nanmean(v)) for k, v in p.items()} for key, p in per.items()}
        at_base = scores[(b, 0)]
        kinds = [k for k in at_base if at_base[k] > 0]
        ratios = {key: float(np.mean([s[k] / at_base[k] for k in kinds])) for key, s in scores.items()}
        # per-origin loss: each score relative to the base's mean score, averaged over the scores
        loss = {key: np.nanmean([p[k] / at_base[k] for k in kinds], axis=0) for key, p in per.items()}
        lag = min(H - 1, max(O - 2, 0))
        pvalues = {key: _pvalue(loss[key], loss[(b, 0)], lag) for key in per if key != (b, 0)} if O > 2 else {}
        alpha = ALPHA / len(steps)
        # keys (w, -step): among ties the smaller weight, then the longer training
        chosen_w, neg_step = choose_weight({(w, -s): r for (w, s), r in ratios.items()},
                                           {(w, -s): p for (w, s), p in pvalues.items()} if O > 2 else None,
                                           alpha=alpha)
        step = -neg_step if chosen_w != b else final_step
        module.ema.shadow.load_state_dict(final if step == final_step else load_snapshot(run_dir, step))

        def table(values: dict[tuple[float, int], Any], at: int) -> dict[str, Any]:
            return {str(w): v for (w, s), v in values.items() if s == at or (w == b and s == 0)}
        chosen = (f"the base ({base})" if chosen_w == b else f"network at weight {chosen_w:g}"
                  + ("" if step == final_step else f", EMA weights of step {step} (of {final_step})"))
        return {"sampling": {"net_weight": chosen_w},
                "metrics": {"net_weight": chosen_w, "net_weight_selection": {
                    "origins": O, "paths": paths, "alpha": alpha, "snapshot_step": step,
                    # the final weights' figures, and each snapshot's
                    "mean_score_ratio_to_base": table(ratios, final_step),
                    "pvalue_versus_base": table(pvalues, final_step),
                    "scores": table(scores, final_step),
                    "snapshots": {str(s): {"mean_score_ratio_to_base": table(ratios, s),
                                           "pvalue_versus_base": table(pvalues, s)} for s in steps[:-1]},
                    "chosen": chosen}}}

    return select


def _pvalue(loss: np.ndarray, base: np.ndarray, lag: int) -> float:
    """Diebold-Mariano p of ``loss`` against ``base``; 1 where the differences are constant (an untrained network
    equals its base: nothing to test)."""
    try:
        return diebold_mariano(loss, base, lag)["pvalue"]
    except ValueError:
        return 1.0

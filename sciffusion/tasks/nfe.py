"""NFE-vs-skill reports: the same run scored at several numbers of network calls (and samplers), and the cheapest
setting whose score is within a tolerance of the converged one.

A task supplies ``score(overrides) -> {"score": float, ...}`` (lower is better, e.g. the mean fair CRPS) that samples
with the run's settings plus ``overrides`` (``{"sampler", "steps"}``); :func:`nfe_sweep` calls it for every setting,
times it, and picks. Each setting samples from the same seeds, so the differences between rows are the solver's,
not the noise's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..diffusion import nfe as count_nfe
from ..diffusion import steps_for_nfe
from ..diffusion.samplers import resolve_sampler
from ..training.checkpoint import load_run, save_run
from ..training.sampling import SamplingSpec

TOLERANCE = 0.01  # a setting is converged when its score is within 1% of the score at the largest NFE


def nfe_settings(nfes: Sequence[int], samplers: Sequence[str]) -> list[dict[str, Any]]:
    """``{"sampler", "steps", "nfe"}`` for every sampler and NFE (steps: :func:`~sciffusion.steps_for_nfe`); an NFE
    a sampler cannot spend exactly (Heun's are odd) is rounded to the one it spends."""
    if not nfes:
        raise ValueError("give at least one NFE")
    out = []
    for sampler in samplers:
        resolve_sampler(sampler)  # an unknown sampler fails here, with the valid names
        for n in sorted(set(int(k) for k in nfes)):
            steps = steps_for_nfe(sampler, n)
            out.append({"sampler": sampler, "steps": steps, "nfe": count_nfe(sampler, steps)})
    return out


def nfe_sweep(score: Callable[[dict[str, Any]], dict[str, Any]], settings: Sequence[dict[str, Any]],
              tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Score every setting; return ``{"rows": [...], "converged": row, "chosen": row, "tolerance"}``.

    ``converged`` is the row with the most network calls (the first such); ``chosen`` the cheapest row whose score
    is at most ``(1 + tolerance)`` times the converged score (ties: the better score)."""
    rows = []
    for s in settings:
        t = time.perf_counter()
        found = score({"sampler": s["sampler"], "steps": s["steps"]})
        rows.append({**s, **found, "seconds": time.perf_counter() - t})
    converged = max(rows, key=lambda r: r["nfe"])
    limit = converged["score"] * (1 + tolerance)
    ok = [r for r in rows if r["score"] <= limit]
    chosen = min(ok, key=lambda r: (r["nfe"], r["score"]))
    for r in rows:
        r["relative"] = r["score"] / converged["score"] - 1.0
    return {"rows": rows, "converged": converged, "chosen": chosen, "tolerance": tolerance}


def format_nfe(report: dict[str, Any], what: str = "score") -> str:
    extra = [k for k in report["rows"][0] if k not in ("sampler", "steps", "nfe", "score", "seconds", "relative")]
    lines = [f"{'sampler':<10} {'NFE':>4} {'steps':>5} {what:>10} {'vs converged':>13} {'seconds':>8}"
             + "".join(f" {k:>12}" for k in extra)]
    for r in report["rows"]:
        lines.append(f"{r['sampler']:<10} {r['nfe']:>4} {r['steps']:>5} {r['score']:>10.4f} {r['relative']:>+12.2%} "
                     f"{r['seconds']:>8.1f}" + "".join(f" {r[k]:>12.4f}" for k in extra))
    c, k = report["chosen"], report["converged"]
    lines.append(f"cheapest within {report['tolerance']:.0%} of the converged {what} ({k['sampler']} at {k['nfe']} "
                 f"NFE): {c['sampler']} at {c['nfe']} NFE ({c['steps']} steps)")
    return "\n".join(lines)


def plot_nfe(report: dict[str, Any], path: str | os.PathLike, what: str = "score") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for sampler in dict.fromkeys(r["sampler"] for r in report["rows"]):
        rows = [r for r in report["rows"] if r["sampler"] == sampler]
        ax.plot([r["nfe"] for r in rows], [r["score"] for r in rows], "o-", label=sampler)
    k = report["converged"]["score"]
    ax.axhspan(k, k * (1 + report["tolerance"]), color="0.85", label=f"within {report['tolerance']:.0%}")
    ax.set_xscale("log")
    ax.set_xlabel("network calls (NFE)")
    ax.set_ylabel(what)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def store_sampling(run_dir: str | os.PathLike, chosen: dict[str, Any]) -> None:
    """Make ``chosen``'s sampler and steps the run's default (over EDM's grid; a stored grid is dropped), rewriting
    the run atomically (its manifest last)."""
    run = load_run(run_dir)
    config = dict(run["config"])
    sampling = {k: v for k, v in config.get("sampling", {}).items() if k != "grid"}
    config["sampling"] = {**sampling, "sampler": chosen["sampler"], "steps": int(chosen["steps"])}
    SamplingSpec.from_settings(config["sampling"])  # still a valid spec
    save_run(run_dir, weights=run["weights"], config=config, ema=run["ema"], normalizer=run["normalizer"],
             metadata=run["metadata"], state=run["state"])

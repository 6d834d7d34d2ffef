"""Layer 6, the command line: thin over the Python API. Errors are one line on stderr with exit code 2."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from ._version import __version__
from .training.checkpoint import RunError, load_run


def cmd_info(args: argparse.Namespace) -> int:
    """Print what a run directory holds: task, data variables, grid, steps trained, metrics."""
    run = load_run(args.run)
    cfg, meta, man = run["config"], run["metadata"], run["manifest"]
    n_params = sum(t.numel() for t in run["weights"].values())
    summary = {
        "run": str(pathlib.Path(args.run).resolve()),
        "sciffusion_version": man.get("sciffusion_version"),
        "task": cfg.get("task"),
        "variables": meta.get("variables"),
        "grid": meta.get("grid"),
        "steps_trained": meta.get("steps_trained"),
        "metrics": meta.get("metrics"),
        "parameters": n_params,
        "ema": run["ema"] is not None,
        "normalizer": run["normalizer"] is not None,
        "files": sorted(man["files"]),
    }
    print(json.dumps(summary, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sciffusion", description="Diffusion models for scientific data.")
    p.add_argument("--version", action="version", version=f"sciffusion {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="show what a run directory holds")
    info.add_argument("run", help="run directory")
    info.set_defaults(func=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (RunError, ValueError, FileNotFoundError, PermissionError) as e:
        print(f"sciffusion {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Layer 6, the command line: thin over the Python API, built from the task registry (no per-task code here).

``sciffusion train TASK --data ... --out RUN`` trains; each task's sampling verb (``sciffusion VERB --run RUN ...``)
writes outputs; ``sciffusion info RUN`` describes a run. Every flag sets one config key, so ``--config FILE.yaml``
can set all of them; ``--set KEY=VALUE`` sets any other key and ``--print-config`` shows the resolved config.
Errors are one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import sys
import tempfile
import warnings
import zlib
from typing import Any

from ._version import __version__
from .training.checkpoint import RunError, load_run, require_noise_levels, run_family
from .training.config import dump_yaml, get_key, load_yaml, merge, parse_assignment, set_key

FLAG_PREFIX = "cfg:"  # argparse dests of config flags, so they cannot collide with the CLI's own


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
        "grid": _grid_summary(meta.get("grid")),
        "steps_trained": meta.get("steps_trained"),
        "metrics": meta.get("metrics"),
        "parameters": n_params,
        "ema": run["ema"] is not None,
        "normalizer": run["normalizer"] is not None,
        "task_state": sorted(run["state"]) if run["state"] is not None else [],
        "files": sorted(man["files"]),
        "family": run_family(cfg),
        "sampling": {k: cfg.get("sampling", {}).get(k)
                     for k in ("sampler", "steps", "grid", "inflation", "net_weight")},
    }
    if meta.get("distilled"):  # a few-step student: say what it is and of which run
        summary["distilled"] = meta["distilled"]
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _grid_summary(grid: Any) -> Any:
    """Coordinate lists shortened to their size and range, so ``info`` stays readable."""
    if not isinstance(grid, dict):
        return grid
    return {k: (f"{len(v)} values, {v[0]:g} .. {v[-1]:g}" if isinstance(v, list) and len(v) > 4 else v)
            for k, v in grid.items()}


def resolve_config(base: dict[str, Any], args: argparse.Namespace, required: tuple[str, ...]) -> dict[str, Any]:
    """defaults < ``--config`` YAML < flags < ``--set``; then check the required keys are set."""
    config = merge(base, load_yaml(args.config)) if args.config else base
    for dest, value in vars(args).items():
        if dest.startswith(FLAG_PREFIX):
            set_key(config, dest[len(FLAG_PREFIX):], value)
    for item in args.set or []:
        set_key(config, *parse_assignment(item))
    if not args.print_config:
        for key in required:
            if get_key(config, key) is None:
                flag = next((f for f in args.flags if f.key == key), None)
                raise ValueError(f"missing {flag.name if flag else key} (or {key} in the --config file)")
    return config


def _task_of_run(args: argparse.Namespace) -> Any:
    """For a verb several tasks share: the task of the run given with ``--run`` (read from its config)."""
    run = getattr(args, FLAG_PREFIX + "run", None)
    if run is None:
        raise ValueError("missing --run")
    task = load_run(run)["config"].get("task")
    found = next((t for t in args.task_choices if t.name == task), None)
    if found is None:
        raise ValueError(f"{run} is a {task!r} run; '{args.command}' samples {[t.name for t in args.task_choices]}")
    return found


# Config keys that name files a command writes; every other path-like value is an input.
OUTPUT_KEYS = ("out", "binary", "evaluate.plots")


def _leaves(config: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in config.items():
        out += _leaves(v, prefix + k + ".") if isinstance(v, dict) else [(prefix + k, v)]
    return out


def check_writable(out: str, suffixes: tuple[str, ...] = ()) -> None:
    """Refuse, before any work, an output that cannot be written: for a command that names the files it writes
    (``suffixes``), another suffix or a directory (but a ``.zarr`` store); for every command, a place where nothing
    can be created (``/sys/x.nc``, a read-only folder). The message names the path the user gave."""
    path = pathlib.Path(out)
    if suffixes and not any(out.lower().endswith(s) for s in suffixes):
        raise ValueError(f"cannot write {out}: this command writes {' or '.join(suffixes)} files")
    if suffixes and path.is_dir() and path.suffix != ".zarr":  # a command that writes a file (not a folder of them)
        raise ValueError(f"cannot write {out}: it is a directory")
    folder = path.absolute().parent
    while not folder.exists():  # the writer creates missing folders: probe the nearest one that exists
        folder = folder.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"cannot write {out}: {e.strerror or e} in {folder}") from None


def check_outputs(config: dict[str, Any], kind: str, suffixes: tuple[str, ...] = ()) -> None:
    """Refuse an output that is one of the command's inputs, or (for sampling and evaluation) inside the run
    directory: ``sciffusion forecast --data X.nc --out X.nc`` would overwrite the archive it reads; and (sampling
    and evaluation) an output that cannot be written (:func:`check_writable`; ``suffixes``: the files the command
    writes)."""
    inputs = []
    for key, value in _leaves(config):
        if key in OUTPUT_KEYS:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, str) and v and pathlib.Path(v).exists():
                inputs.append((key, pathlib.Path(v).resolve()))
    for key in OUTPUT_KEYS:
        out = get_key(config, key)
        if not isinstance(out, str) or not out:
            continue
        if key == "out" and kind != "train":
            check_writable(out, suffixes)
        target = pathlib.Path(out).resolve()
        for ikey, path in inputs:
            if target == path or (kind != "train" and ikey == "run" and path in target.parents):
                what = "inside the run directory" if target != path else f"the input given as {ikey}"
                raise ValueError(f"refusing to write {out}: it is {what}; choose another output path")


def set_threads(n: int | None) -> None:
    """``--threads N``: torch's intra-op threads (and its inter-op pool, which can only be set once, before use)."""
    if n is None:
        return
    if n < 1:
        raise ValueError(f"--threads must be >= 1; got {n}")
    import torch

    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # already set, or parallel work has started: keep torch's
        torch.set_num_interop_threads(n)


def cmd_task(args: argparse.Namespace) -> int:
    """``train TASK`` or a task's sampling verb: resolve the config, then hand it to the task."""
    task, kind = args.task_obj or _task_of_run(args), args.func_kind
    # Sampling and evaluation get no defaults for what the run stores: only what the user gives overrides it, and
    # evaluation reads the seed an output was made with from the output (None: not given).
    base = task.default_config() if kind == "train" else merge(
        {k: v for k, v in task.defaults.items() if k not in task.run_settings},
        {"seed": 0 if kind in ("sample", "run") else None, **{k: {} for k in task.run_settings}})
    config = task.check(resolve_config(base, args, getattr(task, f"required_{kind}")))
    runs = config.get("run")
    if isinstance(runs, list):  # --run takes several runs where a task compares them ('evaluate forecast')
        if len(runs) == 1:
            config["run"] = runs[0]
        elif not (kind == "evaluate" and getattr(task, "compares_runs", False)):
            raise ValueError("--run takes one run here; 'evaluate forecast' is the command that compares several")
    check_outputs(config, kind, getattr(task, "out_suffixes", {}).get(kind, ()))
    if args.print_config:
        print(dump_yaml(config), end="")
        return 0
    set_threads(config.get("threads"))
    out = getattr(task, kind)(config)
    print(f"{'trained ' + task.name + ':' if kind == 'train' else 'wrote'} {out}", file=sys.stderr)
    return 0


def _add_config_flags(p: argparse.ArgumentParser, flags: tuple, task: Any, kind: str) -> None:
    p.add_argument("--config", help="YAML file with config keys (flags override it)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="set any config key, e.g. model.lr=1e-4")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    flags = tuple({f.name: f for f in flags}.values())  # a task's flag replaces a common one of the same name
    for f in flags:
        extra = {"const": f.const} if f.nargs == "?" else {}
        p.add_argument(f.name, dest=FLAG_PREFIX + f.key, type=f.type, nargs=f.nargs, default=argparse.SUPPRESS,
                       metavar=f.name.lstrip("-").upper().replace("-", "_"), help=f"{f.help} [{f.key}]", **extra)
    p.set_defaults(func=cmd_task, func_kind=kind, task_obj=task, flags=flags)


def _verb_parsers(sub: Any, tasks: list, common: tuple) -> None:
    """One sampling subcommand per verb; a verb shared by several tasks gets the union of their flags and picks
    the task from the run at call time."""
    by_verb: dict[str, list] = {}
    for t in tasks:
        by_verb.setdefault(t.verb, []).append(t)
    for verb, group in by_verb.items():
        if len(group) == 1:
            t = group[0]
            _add_config_flags(sub.add_parser(verb, help=f"sample a trained {t.name} run: {t.summary}"),
                              common + t.sample_flags, t, "sample")
            continue
        names = ", ".join(t.name for t in group)
        p = sub.add_parser(verb, help=f"sample a trained run of: {names} (the run says which)")
        _add_config_flags(p, common + tuple(f for t in group for f in t.sample_flags), None, "sample")
        p.set_defaults(task_choices=group)


def cmd_distill(args: argparse.Namespace) -> int:
    """``distill --run RUN --out FAST``: train a few-step student of a run on the run's own data and task."""
    import copy

    from .domains import TASKS

    teacher = pathlib.Path(args.run)
    cfg = load_run(teacher)["config"]
    require_noise_levels(cfg, "distillation")  # before any data is read
    task = TASKS.get(cfg.get("task"))
    if task is None:
        raise ValueError(f"{teacher} is a {cfg.get('task')!r} run, which has no training path to distil through")
    out = pathlib.Path(args.out)
    if out.resolve() == teacher.resolve() or teacher.resolve() in out.resolve().parents:
        raise ValueError(f"refusing to write {out}: it is the teacher run; choose another --out")
    config = copy.deepcopy(cfg)
    config["out"] = str(out)
    config["distill"] = {"teacher": str(teacher.resolve()), "steps": args.steps, "substeps": args.substeps}
    trainer = config.setdefault("trainer", {})
    trainer["max_steps"] = args.max_steps or max(100, int(trainer.get("max_steps", 800)) // 2)
    if args.data:
        config["data"]["path"] = args.data[0] if len(args.data) == 1 else args.data
    for a in args.set or []:
        set_key(config, *parse_assignment(a))
    config = task.check(config)
    set_threads(args.threads)
    print(f"distilled {task.name}: {task.train(config)}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .domains import COMMANDS, TASKS  # importing the domains registers every task and command
    from .tasks.base import COMMON_EVALUATE_FLAGS, COMMON_SAMPLE_FLAGS, COMMON_TRAIN_FLAGS, load_plugins

    load_plugins()  # third-party tasks (entry-point group sciffusion.tasks) register themselves

    p = argparse.ArgumentParser(prog="sciffusion", description="Diffusion models for scientific data.")
    p.add_argument("--version", action="version", version=f"sciffusion {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="show what a run directory holds")
    info.add_argument("run", help="run directory")
    info.set_defaults(func=cmd_info)
    train = sub.add_parser("train", help="train a model for a task")
    train_sub = train.add_subparsers(dest="task", required=True)
    evaluate = sub.add_parser("evaluate", help="score a task's outputs against the truth and the baselines")
    evaluate_sub = evaluate.add_subparsers(dest="task", required=True)
    for task in TASKS.values():
        _add_config_flags(train_sub.add_parser(task.name, help=task.summary),
                          COMMON_TRAIN_FLAGS + task.train_flags, task, "train")
        if task.can_evaluate():
            _add_config_flags(evaluate_sub.add_parser(task.name, help=f"score {task.name} outputs"),
                              COMMON_EVALUATE_FLAGS + task.evaluate_flags, task, "evaluate")
    _verb_parsers(sub, list(TASKS.values()), COMMON_SAMPLE_FLAGS)
    for command in COMMANDS.values():  # verbs that train nothing: they read a run of another task
        _add_config_flags(sub.add_parser(command.verb, help=f"{command.summary} (reads a {command.reads_runs_of} run)"),
                          command.flags(), command, "run")
    d = sub.add_parser("distill", help="turn a trained run into a few-step run (step distillation on its own data)")
    d.add_argument("--run", required=True, help="the trained (teacher) run")
    d.add_argument("--out", required=True, help="the distilled run directory to create (or resume)")
    d.add_argument("--steps", type=int, default=4, help="sampling steps of the distilled run (network calls)")
    d.add_argument("--substeps", type=int, default=4, help="teacher solver steps per student step")
    d.add_argument("--max-steps", type=int, help="optimizer steps (default: half the teacher's, at least 100)")
    d.add_argument("--data", nargs="+", help="the training data, if not where the teacher's config says")
    d.add_argument("--threads", type=int, help="CPU threads for torch")
    d.add_argument("--set", action="append", metavar="KEY=VALUE", help="set any config key, e.g. trainer.devices=2")
    d.set_defaults(func=cmd_distill)
    return p


_plain_warning = warnings.formatwarning


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    """sciffusion's own warnings (a gap in time, a dropped column) as one line without the source line."""
    if "sciffusion" in pathlib.PurePath(filename).parts:
        return f"sciffusion: warning: {message}\n"
    return _plain_warning(message, category, filename, lineno, line)


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning
    try:
        parser = build_parser()
    except ImportError as e:  # a task plugin that does not import
        print(f"sciffusion: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyError as e:  # a file (run, table, dataset) without an entry the command needs
        print(f"sciffusion {args.command}: error: missing entry {e} in an input file or the run", file=sys.stderr)
        return 2
    except ImportError as e:  # an optional backend (zarr, nibabel, arch...) that is not installed
        name = getattr(e, "name", None) or str(e)
        print(f"sciffusion {args.command}: error: this input needs the package {name!r}, which is not installed "
              f"(pip install {name})", file=sys.stderr)
        return 2
    except (RunError, ValueError, OSError, EOFError, zlib.error) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, (EOFError, zlib.error)):
            msg = f"an input file is truncated or corrupt ({msg})"
        print(f"sciffusion {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""What a task is, the registry the CLI reads, and the training path every task shares.

A task (generic or from a domain) subclasses :class:`Task`, gives its name, its sampling verb, default config and
command-line flags, and decorates itself with :func:`register`. The CLI builds ``sciffusion train NAME`` and
``sciffusion VERB`` from the registry, with no per-task code of its own.
"""

from __future__ import annotations

import difflib
import pathlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..diffusion import derive_seed, measure_sigma_data
from ..training.config import get_key, merge, parse_value, set_key
from ..training.data import ArrayDataset, DiffusionDataModule
from ..training.distill import DistillConfig, distillation_module
from ..training.fit import TrainedRun, export_run, fit, load_trained
from ..training.module import DiffusionModule
from ..training.sampling import SamplingSpec, fit_grid
from ..training.schema import (
    FAMILY_SAMPLING,
    ConfigError,
    DataConfig,
    Field,
    ModelConfig,
    Schema,
    TrainerConfig,
    add_key,
    check_config,
    dataclass_defaults,
    dataclass_schema,
    infer_schema,
    merge_schema,
    resolve_family,
)


def _without_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _without_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}


def common_schema() -> Schema:
    """The typed sections every task shares (``data`` holds only its common keys; tasks add theirs)."""
    return {
        "task": Field(str), "seed": Field(int | None), "out": Field(Any), "run": Field(Any),
        "threads": Field(int | None),  # CPU threads of torch's intra-op pool (None: torch's default, every core)
        "data": dataclass_schema(DataConfig), "model": dataclass_schema(ModelConfig),
        "trainer": dataclass_schema(TrainerConfig),
        "sampling": dataclass_schema(SamplingSpec),  # the sampling section is the sampling spec itself
        "distill": dataclass_schema(DistillConfig),  # only in a distilled run's config (sciffusion distill)
    }


# The library's defaults, from the typed sections (one place: training/schema.py); None-valued keys (set by the
# task or measured) are left out. A task's ``defaults`` override them.
COMMON_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "data": dataclass_defaults(DataConfig),
    "model": _without_none(dataclass_defaults(ModelConfig)),
    "trainer": dataclass_defaults(TrainerConfig),
    "sampling": _without_none(SamplingSpec().to_dict()),
}


@dataclass(frozen=True)
class Flag:
    """A command-line flag that sets one config key: ``Flag("--variables", "data.variables", "...", nargs="+")``."""

    name: str
    key: str
    help: str
    type: Callable[[str], Any] = parse_value
    nargs: str | int | None = None
    const: Any = None  # with nargs="?": the value of the bare flag (``--store`` alone sets True)


# Two torch jobs with the default threads on 2 shared cores ran 14-28x slower each (OpenMP busy-waiting), not 2x.
THREADS = Flag("--threads", "threads", "CPU threads for torch (default: every core; give each job cores/jobs when "
               "several share the machine)", int)
COMMON_TRAIN_FLAGS = (
    THREADS,
    Flag("--data", "data.path", "input data file"),
    Flag("--out", "out", "run directory to create (or resume)"),
    Flag("--max-steps", "trainer.max_steps", "optimizer steps in total", int),
    Flag("--seed", "seed", "seed of the data order, the noise and the weights", int),
    Flag("--devices", "trainer.devices", "devices: auto, a count, or a list like [0,1]"),
    Flag("--accelerator", "trainer.accelerator", "cpu, gpu or auto"),
    Flag("--strategy", "trainer.strategy", "auto, ddp, ..."),
    Flag("--num-nodes", "trainer.num_nodes", "nodes (multi-node DDP)", int),
    Flag("--batch-size", "data.batch_size", "per-device batch size", int),
    Flag("--family", "model.family", "model family: diffusion (EDM, the default), flow (flow matching: straight "
         "paths, a velocity network) or crps (a one-pass generator trained on the almost-fair CRPS)"),
)
COMMON_EVALUATE_FLAGS = (
    THREADS,
    Flag("--run", "run", "the run that wrote the outputs (its training period fits the baselines); 'evaluate "
         "forecast' takes several, forecasts with each and compares them", nargs="+"),
    Flag("--data", "data.path", "the truth (and the run's training period, for the baselines)"),
    Flag("--truth", "data.path", "same as --data"),
    Flag("--out", "out", "write the score table as JSON here"),
    Flag("--plots", "evaluate.plots", "write PNG figures to this folder"),
    Flag("--seed", "seed", "seed of the stochastic baselines", int),
)
COMMON_SAMPLE_FLAGS = (
    THREADS,
    Flag("--run", "run", "trained run directory"),
    Flag("--out", "out", "output file"),
    Flag("--steps", "sampling.steps", "sampler steps", int),
    Flag("--sampler", "sampling.sampler", "dpmpp_2m, dpmpp_3m, dpmpp_2s, heun, euler, ddim, ddpm"),
    Flag("--seed", "seed", "seed of every draw (each sample's noise is derived from it and the sample's identity)",
         int),
    Flag("--device", "sampling.device", "cpu, cuda or auto"),
)


class Task:
    """Base class of a registered task. Subclasses set the class attributes and implement ``train``/``sample``."""

    name: ClassVar[str]            # sciffusion train NAME
    verb: ClassVar[str]            # sciffusion VERB --run RUN ...
    summary: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    train_flags: ClassVar[tuple[Flag, ...]] = ()
    sample_flags: ClassVar[tuple[Flag, ...]] = ()
    evaluate_flags: ClassVar[tuple[Flag, ...]] = ()  # besides COMMON_EVALUATE_FLAGS
    required_train: ClassVar[tuple[str, ...]] = ("data.path", "out")
    required_sample: ClassVar[tuple[str, ...]] = ("run", "out")
    required_evaluate: ClassVar[tuple[str, ...]] = ()
    shares_verb: ClassVar[bool] = False  # True: other tasks may use the same verb; the run's task picks the one
    compares_runs: ClassVar[bool] = False  # True: its 'evaluate' takes several --run and compares them
    # Config sections a run stores and its sampling verb reads: the verb's config holds only what the user gives
    # there, so None means "the run's value" (a default would silently override the run's setting).
    run_settings: ClassVar[tuple[str, ...]] = ("sampling",)

    def default_config(self) -> dict[str, Any]:
        return merge(merge(COMMON_DEFAULTS, {"task": self.name}), self.defaults)

    def configure(self, settings: dict[str, Any] | None = None, **keys: Any) -> dict[str, Any]:
        """The default config with dotted keys set, as the CLI's flags would: ``configure({"data.path": p,
        "trainer.max_steps": 400}, out="RUN")``. For calling ``train``/``sample`` from Python."""
        config = self.default_config()
        for key, value in {**(settings or {}), **keys}.items():
            set_key(config, key, value)
        return self.check(config)

    def flags(self) -> tuple[Flag, ...]:
        """Every flag of the task's commands (train, sample, evaluate, and the common ones)."""
        return (COMMON_TRAIN_FLAGS + COMMON_SAMPLE_FLAGS + COMMON_EVALUATE_FLAGS + self.train_flags
                + self.sample_flags + self.evaluate_flags)

    def schema(self) -> Schema:
        """The keys the task's configs may hold: the typed common sections, the task's own defaults (typed by
        their values) and every flag's key (typed by the flag)."""
        schema = merge_schema(common_schema(), infer_schema(self.default_config()))
        for f in self.flags():
            one = {int: int, float: float}.get(f.type, Any)
            add_key(schema, f.key, one if f.nargs in (None, "?") else list[one])  # type: ignore[valid-type]
        return schema

    def check(self, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` checked against :meth:`schema` (one-line errors naming the key), numbers coerced."""
        return check_config(config, self.schema())

    def keywords(self, kind: str = "train") -> dict[str, Flag]:
        """The Python API's keywords for one command (``train``, ``sample`` or ``evaluate``): each of its flags with
        the dashes as underscores (``--train-period`` -> ``train_period``); a task's flag overrides a common one."""
        common = {"train": COMMON_TRAIN_FLAGS, "sample": COMMON_SAMPLE_FLAGS, "evaluate": COMMON_EVALUATE_FLAGS}[kind]
        own = {"train": self.train_flags, "sample": self.sample_flags, "evaluate": self.evaluate_flags}[kind]
        return {f.name.lstrip("-").replace("-", "_"): f for f in (*common, *own)}

    def config_from_keywords(self, kind: str, settings: dict[str, Any] | None, options: dict[str, Any]
                             ) -> dict[str, Any]:
        """The checked config of a Python call: defaults < ``settings`` (dotted keys, as ``--set``) < keywords (as
        the flags). An unknown keyword, a wrong type or a missing required value is a one-line error naming it."""
        known = self.keywords(kind)
        keys: dict[str, Any] = dict(settings or {})
        for name, value in options.items():
            flag = known.get(name)
            if flag is None:
                near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
                hint = f"; did you mean {near[0]!r}?" if near else f"; choose from {', '.join(sorted(known))}"
                raise ConfigError(f"{self.name}: unknown keyword {name!r}{hint} (other keys go in settings=)")
            if value is None:
                continue
            many = flag.nargs not in (None, "?")
            if many and isinstance(value, (str, pathlib.PurePath, int, float)):
                value = [value]  # a single file, name or number where the flag takes several
            keys[flag.key] = list(value) if many and isinstance(value, tuple) else value
        config = self.configure(keys)
        for key in getattr(self, f"required_{kind}"):
            if get_key(config, key) is None:
                name = next((n for n, f in known.items() if f.key == key), key)
                raise ConfigError(f"{self.name}: missing {name}")
        return config

    def train_with(self, data: Any, out: str | pathlib.Path, *, settings: dict[str, Any] | None = None,
                   **options: Any) -> TrainedRun:
        """Train from Python, as ``sciffusion train NAME`` does: ``data`` is a path (or several) or an in-memory
        object, ``out`` the run directory (created, or resumed if it holds this run), ``options`` the command's
        flags as keywords (``max_steps=400``), ``settings`` any other dotted key (``{"model.lr": 1e-3}``).
        Returns the trained run, ready to sample."""
        config = self.config_from_keywords("train", settings, {**options, "data": data, "out": out})
        return load_trained(self.train(config), task=self.name)

    def train(self, config: dict[str, Any]) -> pathlib.Path:
        raise NotImplementedError

    def sample(self, config: dict[str, Any]) -> pathlib.Path:
        raise NotImplementedError

    def evaluate(self, config: dict[str, Any]) -> pathlib.Path | str:
        raise NotImplementedError

    @classmethod
    def can_evaluate(cls) -> bool:
        """Whether the task scores its outputs (``sciffusion evaluate NAME``)."""
        return cls.evaluate is not Task.evaluate


TASKS: dict[str, Task] = {}


class Command(Task):
    """A command that trains nothing: ``sciffusion VERB --run RUN ...`` reads a run of another task
    (``reads_runs_of``) and writes a result (``sciffusion score-days`` scores observed days with an imputation run).
    It has the tasks' typed, checked config (defaults, flags, ``--set``, ``--print-config``) but no ``train`` or
    ``evaluate``, and it is registered in :data:`COMMANDS`, not :data:`TASKS`. Subclasses set ``verb``,
    ``summary``, ``reads_runs_of``, ``flags_of_run`` and ``required_run``, and implement :meth:`run`."""

    reads_runs_of: ClassVar[str]  # the task whose runs it reads
    flags_of_run: ClassVar[tuple[Flag, ...]] = ()  # besides COMMON_SAMPLE_FLAGS
    required_run: ClassVar[tuple[str, ...]] = ("run", "out")

    @property
    def name(self) -> str:  # type: ignore[override]  # the verb is the command's only name
        return self.verb

    def flags(self) -> tuple[Flag, ...]:
        return COMMON_SAMPLE_FLAGS + self.flags_of_run

    def run(self, config: dict[str, Any]) -> pathlib.Path | str:
        raise NotImplementedError


COMMANDS: dict[str, Command] = {}


def register_command(cls: type[Command]) -> type[Command]:
    """Class decorator: add a command to :data:`COMMANDS` (its verb must not be a task's verb or another's)."""
    taken = {t.verb for t in TASKS.values()} | set(COMMANDS)
    if cls.verb in taken:
        raise ValueError(f"command {cls.verb!r} clashes with a registered task or command verb")
    COMMANDS[cls.verb] = cls()
    return cls


ENTRY_POINT_GROUP = "sciffusion.tasks"


def load_plugins() -> list[str]:
    """Import the third-party tasks an installed package declares in the ``sciffusion.tasks`` entry-point group
    (``[project.entry-points."sciffusion.tasks"] mytask = "mypkg.tasks"``): importing the module registers its
    tasks with :func:`register`, so they get ``sciffusion train NAME`` and their verb. Returns the loaded names;
    a plugin that fails to import is an error naming it (a half-registered CLI would be worse)."""
    from importlib.metadata import entry_points

    loaded = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:  # any failure inside a third party's module
            raise ImportError(f"the sciffusion.tasks plugin {ep.name!r} ({ep.value}) failed to load: {e}") from e
        loaded.append(ep.name)
    return loaded


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: add a task to the registry. Names must be unique; so must verbs, unless every task using
    the verb sets ``shares_verb`` (``sciffusion generate`` serves arrays and volumes: the run says which)."""
    if cls.verb in COMMANDS:
        raise ValueError(f"task {cls.name!r} (verb {cls.verb!r}) clashes with a registered command")
    for other in TASKS.values():
        shared = cls.shares_verb and other.shares_verb
        if cls.name == other.name or (cls.verb == other.verb and not shared):
            raise ValueError(f"task {cls.name!r} (verb {cls.verb!r}) clashes with registered {other.name!r}")
    TASKS[cls.name] = cls()
    return cls


def data_fingerprint(path: Any) -> list[Any]:
    """What identifies the training data cheaply: each input file's name and size (in-memory data: its type)."""
    items = path if isinstance(path, (list, tuple)) else [path]
    out: list[Any] = []
    for item in items:
        p = pathlib.Path(item) if isinstance(item, (str, pathlib.Path)) else None
        if p is not None and p.is_file():
            out.append([p.name, p.stat().st_size])
        elif p is not None and p.is_dir():
            out.append([p.name, sum(f.stat().st_size for f in p.rglob("*") if f.is_file())])
        else:
            out.append(type(item).__name__ if p is None else str(item))
    return out


def _data_source(data: dict[str, Any]) -> Any:
    """What the training data came from: ``data.path``, else a cohort (its manifest file, pattern or table)."""
    return data.get("path") if data.get("path") is not None else data.get("cohort")


def _sigma_data(dataset: Any) -> float:
    if isinstance(dataset, ArrayDataset):
        return measure_sigma_data(dataset.x, None if dataset.mask is None else dataset.mask)
    items = [dataset[i] for i in range(min(len(dataset), 256))]
    # Where samples carry a loss mask, measure where the loss is (zeros outside it would shrink sigma_data).
    mask = torch.stack([it["mask"] for it in items]) if all("mask" in it for it in items) else None
    return measure_sigma_data(torch.stack([it["x"] for it in items]), mask)


def _fit_grid(module: DiffusionModule, datamodule: DiffusionDataModule, spec: SamplingSpec, seed: int,
              max_items: int = 256) -> dict[str, Any]:
    """``sampling.fit_nfe``: the grid fitted on (up to ``max_items``) validation samples, else training ones."""
    data = datamodule.val if datamodule.val is not None and len(datamodule.val) > 0 else datamodule.train
    items = [data[i] for i in range(min(len(data), max_items))]
    x = torch.stack([it["x"] for it in items])
    cond = torch.stack([it["cond"] for it in items]) if "cond" in items[0] else None
    device = next(module.parameters()).device
    fitted = fit_grid(module.denoiser(), x, spec, cond=cond, seed=derive_seed(seed, "grid fit"), device=device)
    split = "validation" if data is datamodule.val else "training"
    return {"sampling": {"grid": fitted.grid, "steps": fitted.steps},
            "metrics": {"grid_fit": {"nfe": spec.fit_nfe, "sampler": spec.sampler, "samples": len(x),
                                     "split": split, "grid": fitted.grid}}}


def run_training(config: dict[str, Any], datamodule: DiffusionDataModule, net: dict[str, Any],
                 metadata: dict[str, Any] | None = None, state: dict[str, torch.Tensor] | None = None,
                 calibrate: Callable[[DiffusionModule, dict[str, Any]], dict[str, Any]] | None = None) -> pathlib.Path:
    """The one training path: measure ``sigma_data`` on the training split, build the module from
    ``config["model"]`` with the task's network shape ``net`` (dims, channels in/out/cond, periodic axes), fit with
    Lightning (resuming ``config["out"]`` if it holds a checkpoint) and export the run directory with the task's
    ``metadata`` and ``state`` tensors. With ``sampling.fit_nfe`` set, the grid is fitted to the validation split
    first (rank 0, :func:`~sciffusion.training.sampling.fit_grid`) and stored. ``calibrate(module, sampling)`` (rank 0,
    after training; ``sampling``: the settings so far, fitted grid included; it may load a snapshot's EMA weights,
    :mod:`~sciffusion.training.snapshots`, into the module, and those are exported) may return
    ``{"sampling": {...}, "config": {section: {...}}, "metrics": {...}}`` to store in the run's config (settings
    chosen after training) and metadata."""
    model = resolve_family(_without_none(dict(config["model"])))
    if model["family"] in FAMILY_SAMPLING:  # how the family samples (a one-pass generator: one Euler step)
        config = {**config, "sampling": {**config.get("sampling", {}), **FAMILY_SAMPLING[model["family"]]}}
    model["net"] = _without_none({**model["net"], **net})
    model["seed"] = int(config["seed"])
    distilled: dict[str, Any] = {}
    if config.get("distill"):  # a student of a trained run: its network, preconditioning and weights
        module, distilled = distillation_module(model, config["distill"])
        model = distilled["model"]
        config = {**config, "model": model, "distill": distilled["distill"],
                  "sampling": {**config.get("sampling", {}), **distilled["sampling"]}}
    else:
        model["sigma_data"] = model.get("sigma_data") or _sigma_data(datamodule.train)
        module = DiffusionModule(**model)
    t = TrainerConfig(**config["trainer"])
    trainer = fit(module, datamodule, config["out"], max_steps=t.max_steps, accelerator=t.accelerator,
                  devices=t.devices, strategy=t.strategy, num_nodes=t.num_nodes, precision=t.precision,
                  grad_clip=t.grad_clip, checkpoint_every=t.checkpoint_every, val_every=t.val_every,
                  snapshot_every=t.snapshot_every, progress=t.progress, identity={"task": config.get("task"),
                                                 # compiling or not is how a run trains, not what it is
                                                 "model": {k: v for k, v in model.items() if k != "compile"},
                                                 "data": data_fingerprint(_data_source(config["data"])),
                                                 **({"distill": config["distill"]} if distilled else {})})
    metadata = dict(metadata or {})
    if distilled:
        d = distilled["distill"]
        metadata["distilled"] = {**d, "method": "step distillation (one round of progressive distillation, Salimans "
                                 "& Ho 2022) onto an Euler grid", "grid": config["sampling"]["grid"]}
    spec = SamplingSpec.from_settings(config.get("sampling"))
    if spec.fit_nfe is not None and trainer.is_global_zero:
        fitted = _fit_grid(module.eval(), datamodule, spec, int(config["seed"]))
        config = {**config, "sampling": {**config.get("sampling", {}), **fitted["sampling"]}}
        metadata["metrics"] = {**metadata.get("metrics", {}), **fitted["metrics"]}
    if calibrate is not None and trainer.is_global_zero:
        # the hook samples with the settings chosen so far (a fitted grid), not those it was built with
        found = calibrate(module.eval(), config.get("sampling", {}))
        config = {**config, "sampling": {**config.get("sampling", {}), **found.get("sampling", {})}}
        for section, values in found.get("config", {}).items():
            config[section] = {**config.get(section, {}), **values}
        metadata["metrics"] = {**metadata.get("metrics", {}), **found.get("metrics", {})}
    return export_run(config["out"], module, trainer, config, datamodule.normalizer, metadata, state)

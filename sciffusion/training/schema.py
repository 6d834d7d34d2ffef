"""Typed config sections and the one converter that checks a config against them.

A config is a nested dict (defaults < YAML < flags < ``--set``, see :mod:`.config`). Its shape is a *schema*: a
nested dict whose leaves are :class:`Field` (a type and a one-line description). The common sections are
dataclasses below, each field documented where it is defined, as EDM documents its hyperparameters; a task's own
sections are read off its default config (the type of each default value) and its flags. :func:`check_config`
walks a config against a schema and

* refuses an unknown key with a one-line error naming the closest valid key
  (``--set trainer.maxsteps=5`` -> "did you mean trainer.max_steps?");
* refuses a value of the wrong type with the key, the value and the expected type
  (``--set model.lr=abc`` -> "model.lr='abc' is not a float");
* returns the config with numbers coerced to the declared type (an int given for a float field becomes a float).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from ..diffusion.crps import one_pass_grid


class ConfigError(ValueError):
    """A config key that does not exist or a value of the wrong type (one line, names the key)."""


@dataclass(frozen=True)
class Field:
    """A leaf of a schema: the accepted type (a typing expression) and what the key means."""

    type: Any = Any
    help: str = ""
    inferred: bool = False  # read off a default value (None: untyped), so a flag's declared type may refine it


Schema = dict[str, "Schema | Field"]


# ---------------------------------------------------------------------------------------------------------------
# The common sections. Defaults here are the library's; a task's defaults override them (e.g. fewer steps).
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class NetConfig:
    """``model.net``: the U-Net's shape (:class:`~sciffusion.UNet`); dims and channel counts come from the task."""

    # feature channels per level (each halves the grid)
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    num_res_blocks: int = 2  # residual blocks per level
    attention_levels: list[int] = field(default_factory=list)  # levels (0 = full resolution) with self-attention
    head_dim: int = 32  # channels per attention head
    dropout: float = 0.0  # dropout probability inside residual blocks
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (memory for time)
    zero_init: bool = True  # zero the output layer, so an untrained model returns its skip term (the baseline)
    # also feed the (spatially averaged) condition into every block's scale/shift; None = off (multiplicative
    # conditioning, for conditions constant along the axes, such as market scenarios' summaries of the past)
    cond_embedding: bool | None = None
    # one-pass generators (family crps): FGN's way in for the noise, the first N input values as a vector through the
    # embedding of every ResBlock instead of input channels (0: input channels)
    noise_vector: int | None = None
    # Set by the task from the data (given here only to override): spatial rank, channel counts, periodic axes.
    dims: int | None = None  # spatial dimensions of a sample: 1, 2 or 3
    in_channels: int | None = None  # channels of x
    out_channels: int | None = None  # channels of the output (default: in_channels)
    cond_channels: int | None = None  # channels of the condition concatenated to the input
    periodic: list[bool] | None = None  # per spatial axis: wrap around (longitude) instead of zero padding


@dataclass
class ModelConfig:
    """``model``: preconditioning, loss and optimiser (:class:`~sciffusion.DiffusionModule`)."""

    net: NetConfig = field(default_factory=NetConfig)
    # diffusion (EDM), flow (flow matching: sets process, parameterization and weighting to flow) or crps (a one-pass
    # generator trained on the almost-fair CRPS: sets parameterization gen and loss crps); see FAMILIES
    family: Literal["diffusion", "flow", "crps"] = "diffusion"
    loss: Literal["denoising", "crps"] = "denoising"  # what training minimises (crps: CRPSLoss over crps_members)
    crps_members: int = 2  # crps: samples per training example (FGN and AIFS-ENS train with 2 to 4)
    crps_alpha: float = 0.95  # crps: weight of the fair CRPS in the almost-fair CRPS (AIFS-ENS's 0.95)
    # what the network predicts (flow: the velocity; gen: a one-pass generator's correction to its Gaussian base)
    parameterization: Literal["edm", "v", "eps", "x0", "flow", "gen"] = "edm"
    process: str | dict[str, Any] = "edm"  # training sigmas: edm, vp, ve, flow (or a dict with name and options)
    weighting: str = "edm"  # loss weight over sigma: edm, snr, ... (see sciffusion.loss_weight)
    cond_dropout: float = 0.0  # probability of zeroing the condition in training (classifier-free guidance)
    noise_factor: int = 1  # >1: training noise drawn at 1/factor resolution and upsampled (coarse noise)
    lr: float = 2e-4  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_steps: int = 100  # optimizer steps of linear learning-rate warm-up
    ema_half_life: float = 200.0  # half-life of the EMA weights, in optimizer steps
    sigma_data: float | None = None  # data standard deviation in normalised units (None: measured on the data)
    seed: int | None = None  # set from the run's seed; weights, data order and noise all follow it
    compile: bool = False  # train through torch.compile(net): opt-in, compiling takes minutes on a CPU


# What a model family sets in the ``model`` section (over ModelConfig's defaults; a conflicting explicit value is
# refused by resolve_family). diffusion: EDM as configured.
FAMILIES: dict[str, dict[str, str]] = {
    "diffusion": {},
    "flow": {"process": "flow", "parameterization": "flow", "weighting": "flow"},
    "crps": {"parameterization": "gen", "loss": "crps"},
}
# What a family sets in the ``sampling`` section, over anything given: a CRPS-trained generator samples in one
# network pass (one Euler step over the grid [GENERATOR_SIGMA, 0], sciffusion.diffusion.crps). Its spread is
# calibrated as the other families' is, about its zero-noise output G(0) (the spread calibrator's conditional mean:
# for a generator the central member; the calibrator reports how far it is from the ensemble mean): on the main job
# the raw generator is under-dispersed (spread/skill 0.61 at 800 steps) and inflating about G(0) lowered its CRPS.
FAMILY_SAMPLING: dict[str, dict[str, Any]] = {
    "crps": {"sampler": "euler", "grid": one_pass_grid(), "fit_nfe": None, "net_weight": 1.0},
}


def resolve_family(model: dict[str, Any]) -> dict[str, Any]:
    """The ``model`` section (a dict of :class:`ModelConfig` keys) with its ``family`` applied: the keys
    :data:`FAMILIES` sets, where the section leaves them at ModelConfig's default; a value given that contradicts the
    family is a one-line error naming both."""
    out = dict(model)
    family = str(out.get("family") or "diffusion")
    out["family"] = family
    if family not in FAMILIES:
        raise ValueError(f"model.family must be one of {', '.join(FAMILIES)}; got {family!r}")
    defaults = ModelConfig()
    for key, value in FAMILIES[family].items():
        given = out.get(key, getattr(defaults, key))
        name = given.get("name") if isinstance(given, dict) else given
        if name not in (value, getattr(defaults, key)):
            raise ValueError(f"model.family {family} sets model.{key}={value}; the config has {key}={name}")
        if name != value:
            out[key] = value
    return out


@dataclass
class TrainerConfig:
    """``trainer``: what Lightning's Trainer is given (devices, precision, how long)."""

    max_steps: int = 2000  # optimizer steps in total
    accelerator: str = "auto"  # cpu, gpu or auto
    devices: int | str | list[int] = "auto"  # auto, a count, or a list of device indices
    strategy: str = "auto"  # auto, ddp, ddp_spawn, ... (several GPUs or CPU processes)
    num_nodes: int = 1  # nodes of a multi-node DDP job
    precision: str | None = None  # Lightning precision; None: bf16-mixed on GPUs, 32-true elsewhere
    grad_clip: float | None = 1.0  # gradient-norm clip (None: off)
    checkpoint_every: int = 200  # optimizer steps between resumable checkpoints
    val_every: int | None = 200  # optimizer steps between validation passes (None: at the end)
    # optimizer steps between EMA snapshots that a task may choose from on a validation score (None: none kept)
    snapshot_every: int | None = None
    progress: bool = True  # show Lightning's progress bar


@dataclass
class DataConfig:
    """``data``: the keys every task reads; a task adds its own (variables, periods, patch size...)."""

    path: Any = None  # the input: a path, a list of paths, or an in-memory object from the Python API
    val_fraction: float = 0.1  # share of the training samples held out for validation
    batch_size: int = 16  # samples per device and optimizer step
    num_workers: int = 0  # DataLoader worker processes


# ---------------------------------------------------------------------------------------------------------------
# Schemas and the converter
# ---------------------------------------------------------------------------------------------------------------

def dataclass_schema(cls: type) -> Schema:
    """The schema of a dataclass: nested dataclass fields become sections."""
    hints = typing.get_type_hints(cls)
    out: Schema = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        nested = isinstance(tp, type) and dataclasses.is_dataclass(tp)
        out[f.name] = dataclass_schema(tp) if nested else Field(tp)
    return out


def dataclass_defaults(cls: type) -> dict[str, Any]:
    """A dataclass's defaults as the plain nested dict the config files hold."""
    return dataclasses.asdict(cls())


def infer_schema(defaults: Mapping[str, Any]) -> Schema:
    """A schema read off default values: a dict is a section, None accepts anything, a number accepts numbers."""
    out: Schema = {}
    for key, value in defaults.items():
        out[key] = infer_schema(value) if isinstance(value, dict) else Field(_type_of(value), inferred=True)
    return out


def _type_of(value: Any) -> Any:
    if value is None:
        return Any
    if isinstance(value, bool):
        return bool
    if isinstance(value, int):
        return int
    if isinstance(value, float):
        return float
    if isinstance(value, str):
        return str
    if isinstance(value, (list, tuple)):
        kinds = {_type_of(v) for v in value}
        return list[kinds.pop()] if len(kinds) == 1 else list  # type: ignore[misc]  # a type built at run time
    return Any


def merge_schema(base: Schema, extra: Schema) -> Schema:
    """``base`` with ``extra``'s keys added; where both declare a leaf, ``base`` (the typed declaration) wins."""
    out = dict(base)
    for key, value in extra.items():
        have = out.get(key)
        if isinstance(have, dict) and isinstance(value, dict):
            out[key] = merge_schema(have, value)
        elif have is None:
            out[key] = value
    return out


def add_key(schema: Schema, key: str, tp: Any = Any) -> None:
    """Declare the dotted ``key`` (a flag's key that has no default) in ``schema``, keeping a declared type."""
    *parents, last = key.split(".")
    node = schema
    for p in parents:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            return  # a flag whose key sits under a leaf: the leaf's own type decides
        node = child
    have = node.get(last)
    if have is None or (isinstance(have, Field) and have.inferred and have.type is Any):
        node[last] = Field(tp if tp is Any else tp | None)  # a flag's type says more than a default of None


def _keys(schema: Schema, prefix: str = "") -> list[str]:
    out = []
    for k, v in schema.items():
        out.append(prefix + k)
        if isinstance(v, dict):
            out += _keys(v, prefix + k + ".")
    return out


def closest_key(key: str, schema: Schema) -> str | None:
    """The valid dotted key nearest to ``key`` (by spelling), or None."""
    found = difflib.get_close_matches(key, _keys(schema), n=1, cutoff=0.6)
    return found[0] if found else None


def type_name(tp: Any) -> str:
    if tp is Any:
        return "anything"
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


_NO = object()


def coerce(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (ints become floats where floats are declared), or ``_NO`` if it does not fit."""
    if tp is Any:
        return value
    if tp is type(None):
        return None if value is None else _NO
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            out = coerce(value, arg)
            if out is not _NO:
                return out
        return _NO
    if origin is Literal:
        return value if value in typing.get_args(tp) else _NO
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return _NO
        args = typing.get_args(tp)
        items = [coerce(v, args[0]) if args else v for v in value]
        return _NO if any(i is _NO for i in items) else items
    if origin is dict or tp is dict:
        return value if isinstance(value, dict) else _NO
    if tp is bool:
        return value if isinstance(value, bool) else _NO
    if tp is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _NO
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else _NO
    if tp is str:
        return value if isinstance(value, str) else _NO
    return value if isinstance(value, tp) else _NO


def check_config(config: Mapping[str, Any], schema: Schema, prefix: str = "",
                 root: Schema | None = None) -> dict[str, Any]:
    """``config`` checked against ``schema`` (unknown keys and wrong types refused), numbers coerced. ``root`` is
    the whole schema, searched for the suggested key (default: ``schema``)."""
    root = schema if root is None else root
    out: dict[str, Any] = {}
    for key, value in config.items():
        dotted = prefix + key
        spec = schema.get(key)
        if spec is None:
            near = closest_key(dotted, root)
            hint = f"; did you mean {near}?" if near else ""
            raise ConfigError(f"unknown config key {dotted}{hint}")
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {dotted} is a section (keys {', '.join(sorted(spec))}), "
                                  f"not a value; got {value!r}")
            out[key] = check_config(value, spec, dotted + ".", root)
            continue
        fixed = coerce(value, spec.type)
        if fixed is _NO:
            raise ConfigError(f"config key {dotted}={value!r} is not a {type_name(spec.type)}")
        out[key] = fixed
    return out

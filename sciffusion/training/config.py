"""Configs are plain nested dicts: defaults, then a YAML file, then command-line flags, each overriding the last.

Keys are addressed with dots (``trainer.max_steps``); every command-line flag is a shorthand for one key, so
everything a flag sets can also come from the YAML file.
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    """Safe YAML whose floats include ``1e-4`` (YAML 1.1 wants ``1.0e-4``; people write the former)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with ``override`` merged in (nested dicts merged key by key, other values replaced)."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def set_key(config: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted ``key`` (``"model.lr"``) in ``config``, creating intermediate dicts."""
    *parents, last = key.split(".")
    node = config
    for p in parents:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ValueError(f"config key {key!r}: {p!r} holds a value, not a section")
        node = child
    node[last] = value


def get_key(config: dict[str, Any], key: str, default: Any = None) -> Any:
    node: Any = config
    for p in key.split("."):
        if not isinstance(node, dict) or p not in node:
            return default
        node = node[p]
    return node


def parse_value(text: str) -> Any:
    """A command-line value read as YAML: ``3`` -> 3, ``1e-4`` -> 0.0001, ``[sst, t2m]`` -> list, else the string."""
    try:
        value = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and value != text.strip():
        return text
    return text if value is None and text.strip() not in ("null", "~", "") else value


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"model.lr=1e-4"`` -> ``("model.lr", 0.0001)``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set expects KEY=VALUE (e.g. model.lr=1e-4); got {text!r}")
    return key.strip(), parse_value(value)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config file that holds a mapping; one-line errors for a missing or malformed file."""
    try:
        with open(path) as f:
            data = yaml.load(f, Loader=_Loader)
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValueError(f"config file {path} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of keys, not a {type(data).__name__}")
    return data


def dump_yaml(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)

"""Helpers shared by the benchmarks."""

from __future__ import annotations

import platform

import torch


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"

"""Inference spread over processes and machines: which share of the batches this process makes (from the launcher's
``RANK``/``WORLD_SIZE``, as ``torchrun`` and Lightning set them), a barrier between the processes, and the output
written as one file from every process's parts.

Launch a sampling verb under ``torchrun`` (``torchrun --nproc-per-node 4 -m sciffusion.cli -- forecast --run RUN
...``: the ``--`` keeps torchrun from reading ``--run`` as its own ``--run-path``; with ``--nnodes`` and a rendezvous
endpoint, over several machines sharing a file system). Batch ``b`` is made by process
``b mod WORLD_SIZE``; each process writes its batches as parts beside the output, and process 0 joins them in
batch order into the output. Every member's seed comes from its identity, so the file is the single-process file.
"""

from __future__ import annotations

import os
import pathlib
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import xarray as xr

from .outputs import write_in_batches

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world`` processes."""

    rank: int = 0
    world: int = 1

    def mine(self, items: Iterable[T]) -> Iterator[tuple[int, T]]:
        """``(index, item)`` of the items this process makes: every ``world``-th, from its ``rank``."""
        for i, item in enumerate(items):
            if i % self.world == self.rank:
                yield i, item


def current_shard() -> Shard:
    """The launcher's ``RANK``/``WORLD_SIZE`` (torchrun, Lightning, SLURM through them); one process without."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world} do not describe a process of a group")
    return Shard(rank, world)


def barrier(shard: Shard) -> None:
    """Wait for every process of the group (torch.distributed over gloo: only files are exchanged, so a CPU group
    serves GPU runs too). Nothing with one process."""
    if shard.world == 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=shard.rank, world_size=shard.world)
    dist.barrier()


def write_sharded(batches: Iterable[tuple[int, xr.Dataset]], path: str | os.PathLike, dim: str, shard: Shard
                  ) -> pathlib.Path:
    """Write this process's ``(batch number, dataset)`` batches as parts beside ``path``; after every process has,
    process 0 joins the parts in batch order along ``dim`` into ``path`` (streamed, as
    :func:`~sciffusion.tasks.outputs.write_in_batches`) and removes them. With one process it is
    :func:`~sciffusion.tasks.outputs.write_in_batches` itself. Needs zarr for the parts."""
    path = pathlib.Path(path)
    if shard.world == 1:
        return write_in_batches((ds for _, ds in batches), path, dim)
    parts = path.parent / f".{path.name}.parts"
    if shard.rank == 0:  # a killed earlier run may have left parts
        shutil.rmtree(parts, ignore_errors=True)
        parts.mkdir(parents=True)
    barrier(shard)
    for i, ds in batches:
        ds.to_zarr(parts / f"{i:08d}.zarr", mode="w")
    barrier(shard)
    error: BaseException | None = None
    if shard.rank == 0:
        try:
            stores = sorted(parts.glob("*.zarr"))
            if not stores:
                raise ValueError("no process made a batch (no initial time selected?)")
            coder = xr.coders.CFDatetimeCoder(use_cftime=None)
            write_in_batches((xr.open_zarr(s, decode_times=coder) for s in stores), path, dim)
        except BaseException as e:  # the others still pass the last barrier, then process 0 reports it
            error = e
        finally:
            shutil.rmtree(parts, ignore_errors=True)
    barrier(shard)
    if error is not None:
        raise error
    return path

"""Data for the Lightning path: dict-of-tensor datasets and a DataModule whose batch order is a function of the step.

The batch of optimizer step ``k`` depends only on ``(seed, k, rank)``: a resumed run continues with exactly the
batches the uninterrupted run would have seen, and each DDP rank takes its own slice of the same global batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import cast

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..diffusion import derive_seed
from .normalizer import Normalizer


class ArrayDataset(Dataset):
    """Samples ``{"x": x[i], "cond": cond[i], "mask": mask[i]}`` from in-memory tensors (``(N, C, *spatial)``);
    ``weight`` (e.g. latitude weights, shaped to broadcast over one sample) is given with every sample."""

    def __init__(self, x: Tensor, cond: Tensor | None = None, mask: Tensor | None = None,
                 weight: Tensor | None = None) -> None:
        x = torch.as_tensor(x)
        if x.ndim < 3:
            raise ValueError(f"x must be (samples, channels, *spatial); got shape {tuple(x.shape)}")
        for name, t in (("cond", cond), ("mask", mask)):
            if t is not None and len(t) != len(x):
                raise ValueError(f"{name} has {len(t)} samples but x has {len(x)}")
        self.x, self.cond, self.mask, self.weight = x, cond, mask, weight

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        item = {"x": self.x[i]}
        if self.cond is not None:
            item["cond"] = self.cond[i]
        if self.mask is not None:
            item["mask"] = self.mask[i]
        if self.weight is not None:
            item["weight"] = self.weight
        return item


class StepBatchSampler(Sampler[list[int]]):
    """Index batches for optimizer steps ``start .. stop-1`` of one rank.

    Step ``k`` takes the global batch ``k mod E`` of a permutation drawn for epoch ``k // E`` from ``(seed, epoch)``
    (``E`` = global batches per epoch); rank ``r`` of ``world`` takes the ``r``-th ``batch_size`` slice. Datasets
    smaller than one global batch are sampled with replacement from ``(seed, k)``. ``start`` may be a function
    (the trainer's step counter): it is read when iteration begins, so a loop that re-creates its iterator after a
    restore still continues at the right step.
    """

    def __init__(self, n: int, batch_size: int, start: int | Callable[[], int], stop: int, seed: int = 0,
                 rank: int = 0, world: int = 1) -> None:
        if n < 1 or batch_size < 1:
            raise ValueError(f"need at least one sample and batch_size >= 1; got n={n}, batch_size={batch_size}")
        self.n, self.bs, self.stop = n, batch_size, stop
        self._start = start if callable(start) else (lambda: start)
        self.seed, self.rank, self.world = seed, rank, world

    def __len__(self) -> int:
        return max(0, self.stop - self._start())

    def __iter__(self) -> Iterator[list[int]]:
        gbs = self.bs * self.world
        per_epoch = self.n // gbs
        epoch: int | None = None
        perm: Tensor | None = None
        lo = self.rank * self.bs
        for k in range(self._start(), self.stop):
            if per_epoch == 0:
                g = torch.Generator().manual_seed(derive_seed(self.seed, "batch", k))
                yield torch.randint(self.n, (gbs,), generator=g)[lo:lo + self.bs].tolist()
                continue
            e, j = divmod(k, per_epoch)
            if e != epoch:
                epoch, perm = e, torch.randperm(self.n, generator=torch.Generator().manual_seed(
                    derive_seed(self.seed, "epoch", e)))
            assert perm is not None  # drawn at the first step of each epoch
            yield perm[j * gbs + lo:j * gbs + lo + self.bs].tolist()


def dataset_length(ds: Dataset) -> int:
    """``len(ds)``: every dataset here has a length (torch's ``Dataset`` type does not declare one)."""
    return len(cast(Sized, ds))


class DiffusionDataModule(L.LightningDataModule):
    """Training and validation loaders for :class:`~sciffusion.training.DiffusionModule`.

    Args:
        train, val: datasets of dict samples (see :class:`ArrayDataset`); ``val`` may be None.
        batch_size: per-device batch size.
        num_workers: DataLoader worker processes (0 reads in the training process).
        seed: seed of the batch order.
        normalizer: the :class:`Normalizer` the data were normalised with (kept so the run can save it).
    """

    def __init__(self, train: Dataset, val: Dataset | None = None, *, batch_size: int = 16, num_workers: int = 0,
                 seed: int = 0, normalizer: Normalizer | None = None) -> None:
        super().__init__()
        if dataset_length(train) == 0:
            raise ValueError("the training split is empty")
        self.train, self.val = train, val
        self.batch_size, self.num_workers, self.seed, self.normalizer = batch_size, num_workers, seed, normalizer

    @classmethod
    def from_arrays(cls, x: Tensor, cond: Tensor | None = None, mask: Tensor | None = None,
                    weight: Tensor | None = None, *, val_fraction: float = 0.1, normalizer: Normalizer | None = None,
                    log: bool = False, **kwargs) -> DiffusionDataModule:
        """Split ``(N, C, *spatial)`` arrays in order (the last ``val_fraction`` validates: time-ordered data must
        not leak), fit a :class:`Normalizer` on the training part only (unless one is given) and normalise ``x``."""
        x = torch.as_tensor(x, dtype=torch.float32)
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
        n_val = int(round(len(x) * val_fraction))
        n_train = len(x) - n_val
        if n_train < 1:
            raise ValueError(f"no training samples left after holding out {n_val} of {len(x)} for validation")
        normalizer = normalizer or Normalizer.fit(x[:n_train], log=log,
                                                  mask=None if mask is None else mask[:n_train])
        z = normalizer.normalize(x)
        part = lambda t, s: None if t is None else t[s]  # noqa: E731
        tr, va = slice(0, n_train), slice(n_train, len(x))
        train = ArrayDataset(z[tr], part(cond, tr), part(mask, tr), weight)
        val = ArrayDataset(z[va], part(cond, va), part(mask, va), weight) if n_val else None
        return cls(train, val, normalizer=normalizer, **kwargs)

    def train_dataloader(self) -> DataLoader:
        t = self.trainer
        start = (lambda: t.global_step) if t is not None else 0
        n = dataset_length(self.train)
        stop = t.max_steps if t is not None and t.max_steps > 0 else max(1, n // self.batch_size)
        rank, world = (t.global_rank, t.world_size) if t is not None else (0, 1)
        sampler = StepBatchSampler(n, self.batch_size, start, stop, self.seed, rank, world)
        return DataLoader(self.train, batch_sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader | list:
        if self.val is None or dataset_length(self.val) == 0:
            return []
        return DataLoader(self.val, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)

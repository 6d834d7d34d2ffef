"""Per-channel normalisation fitted on the training split only, inverted on every output."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor


def _per_channel(v: Tensor, like: Tensor) -> Tensor:
    """A ``(channels,)`` vector shaped to broadcast over ``(batch, channels, *spatial)`` tensors like ``like``."""
    return v.to(like.device).reshape((1, -1) + (1,) * (like.ndim - 2))


class Normalizer:
    """``z = (f(x) - mean) / std`` per channel, with ``f = log1p`` on channels marked ``log`` (precipitation, prices
    that span decades) and the identity elsewhere. NaN cells stay NaN both ways; statistics ignore them.

    Tensors are ``(batch, channels, *spatial)``; ``mean``/``std`` are ``(channels,)``, float64.
    """

    def __init__(self, mean: Tensor, std: Tensor, log: Sequence[bool] | None = None) -> None:
        mean, std = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(std, dtype=torch.float64)
        if mean.shape != std.shape or mean.ndim != 1:
            raise ValueError(f"mean and std must both be (channels,); got {tuple(mean.shape)} and {tuple(std.shape)}")
        if not torch.isfinite(mean).all() or not (std > 0).all():
            raise ValueError("normaliser statistics must be finite with std > 0 (a channel is constant or all NaN)")
        self.mean, self.std = mean, std
        self.log = tuple(bool(v) for v in (log if log is not None else [False] * len(mean)))
        if len(self.log) != len(mean):
            raise ValueError(f"log needs one flag per channel ({len(mean)}); got {len(self.log)}")

    @property
    def channels(self) -> int:
        return len(self.mean)

    @classmethod
    def fit(cls, data: Tensor | Iterable[Tensor], log: Sequence[bool] | bool = False,
            mask: Tensor | None = None) -> Normalizer:
        """Fit on a ``(N, C, *spatial)`` tensor or an iterable of such batches (streamed: nothing is concatenated).

        ``mask`` (broadcastable to a batch, True = use) leaves cells out, as NaN does.
        """
        batches = [data] if isinstance(data, Tensor) else data
        total: Tensor | None = None
        total_sq: Tensor | None = None
        count: Tensor | None = None
        for x in batches:
            x = torch.as_tensor(x)
            if x.ndim < 2:
                raise ValueError(f"data must be (batch, channels, ...); got shape {tuple(x.shape)}")
            C = x.shape[1]
            flags = [bool(log)] * C if isinstance(log, bool) else list(log)
            x = cls._forward_transform(x.to(torch.float64), flags)
            valid = torch.isfinite(x)
            if mask is not None:
                valid = valid & torch.broadcast_to(mask.to(torch.bool), x.shape)
            xz = torch.where(valid, x, torch.zeros_like(x)).transpose(0, 1).reshape(C, -1)
            v = valid.transpose(0, 1).reshape(C, -1)
            s, s2, n = xz.sum(1), (xz**2).sum(1), v.sum(1).to(torch.float64)
            if total is None or total_sq is None or count is None:
                total, total_sq, count = s, s2, n
            else:
                total, total_sq, count = total + s, total_sq + s2, count + n
        if total is None or total_sq is None or count is None:
            raise ValueError("cannot fit a normaliser on no data")
        if (count < 2).any():
            raise ValueError(f"channel(s) {torch.nonzero(count < 2).flatten().tolist()} have fewer than 2"
                             f" finite values")
        mean = total / count
        std = (total_sq / count - mean**2).clamp_min(0).sqrt() * (count / (count - 1)).sqrt()
        return cls(mean, std, flags)

    @staticmethod
    def _forward_transform(x: Tensor, log: Sequence[bool]) -> Tensor:
        if not any(log):
            return x
        flags = _per_channel(torch.tensor(log), x)
        if (x[torch.broadcast_to(flags, x.shape) & torch.isfinite(x)] <= -1).any():
            raise ValueError("log-transformed channels must be > -1 (log1p)")
        return torch.where(flags, torch.log1p(x.clamp_min(-1 + 1e-12)), x)

    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.ndim < 2 or x.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channels in dim 1; got shape {tuple(x.shape)}")
        return _per_channel(self.mean, x), _per_channel(self.std, x)

    def normalize(self, x: Tensor) -> Tensor:
        mean, std = self._stats(x)
        return ((self._forward_transform(x.to(torch.float64), self.log) - mean) / std).to(x.dtype)

    def denormalize(self, z: Tensor) -> Tensor:
        mean, std = self._stats(z)
        y = z.to(torch.float64) * std + mean
        if any(self.log):
            flags = _per_channel(torch.tensor(self.log), z)
            y = torch.where(flags, torch.expm1(y), y)
        return y.to(z.dtype)

    def scale_only(self, dz: Tensor) -> Tensor:
        """Map a normalised *difference* (e.g. an ensemble spread) to physical units (linear channels only)."""
        _, std = self._stats(dz)
        return (dz.to(torch.float64) * std).to(dz.dtype)

    def state_dict(self) -> dict[str, Tensor]:
        return {"mean": self.mean.clone(), "std": self.std.clone(), "log": torch.tensor(self.log, dtype=torch.bool)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> Normalizer:
        missing = {"mean", "std", "log"} - set(state)
        if missing:
            raise ValueError(f"normaliser state is missing {sorted(missing)}")
        return cls(state["mean"], state["std"], state["log"].tolist())



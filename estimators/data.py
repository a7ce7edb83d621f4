"""``MultimodalDataset``: the in-memory dataset every dataset-level estimator takes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor


class MultimodalDataset:
    """``inputs[name]`` has ``n`` rows per modality, ``labels`` is int ``[n]``, optional ids.

    Tensors stay as given (no copy); ``batches`` and ``subset`` index them lazily.
    """

    def __init__(self, inputs: dict[str, Tensor], labels: Tensor,
                 ids: list[str] | None = None) -> None:
        if not inputs:
            raise ValueError("a dataset needs at least one modality")
        labels = torch.as_tensor(labels)
        if labels.ndim != 1:
            raise ValueError(f"labels must be 1-D [n], got shape {list(labels.shape)}")
        if labels.is_floating_point():
            raise ValueError("labels must be integer class indices")
        n = labels.shape[0]
        for name, x in inputs.items():
            if x.shape[0] != n:
                raise ValueError(f"modality {name!r} has {x.shape[0]} rows but there are "
                                 f"{n} labels; every modality needs one row per label")
        if ids is not None and len(ids) != n:
            raise ValueError(f"{len(ids)} ids for {n} rows")
        self.inputs = dict(inputs)
        self.labels = labels.long()
        self.ids = list(ids) if ids is not None else None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def names(self) -> list[str]:
        return list(self.inputs)

    def batches(self, batch_size: int) -> Iterator[tuple[dict[str, Tensor], Tensor]]:
        """Consecutive ``(inputs, labels)`` chunks of at most ``batch_size`` rows."""
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        for start in range(0, len(self), batch_size):
            stop = start + batch_size
            yield {k: v[start:stop] for k, v in self.inputs.items()}, self.labels[start:stop]

    def subset(self, idx: Sequence[int] | Tensor) -> MultimodalDataset:
        index = torch.as_tensor(idx, dtype=torch.long)
        ids = [self.ids[i] for i in index.tolist()] if self.ids is not None else None
        return MultimodalDataset({k: v[index] for k, v in self.inputs.items()},
                                 self.labels[index], ids)

    def instance(self, i: int) -> dict[str, Tensor]:
        """Row ``i`` as a batch of one."""
        return {k: v[i:i + 1] for k, v in self.inputs.items()}

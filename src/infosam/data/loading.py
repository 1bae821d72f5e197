"""Batches for training: a resumable per-epoch shuffle shared across processes, and the collate function.

The order of an epoch depends only on (seed, epoch), so a resumed run sees the same batches as an uninterrupted
one; each process takes its own share (``DistributedSampler``'s interleaving).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class EpochSampler(DistributedSampler):
    """This process's share of a seeded per-epoch shuffle, optionally skipping the samples already consumed.

    With ``drop_single``, a last batch that would hold one image is dropped (InfoSAM's entropies need two).
    Set :attr:`skip` (samples of this process's share already consumed) before iterating to resume mid-epoch.
    """

    def __init__(
        self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int, batch_size: int, drop_single: bool
    ):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        single = drop_single and self.num_samples % batch_size == 1 and self.num_samples > 1
        self.length = self.num_samples - int(single)
        self.batches = math.ceil(self.length / batch_size)
        """Batches per epoch of this process."""
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.skip, self.length)

    def __len__(self) -> int:
        return max(0, self.length - self.skip)


def collate(samples: list[dict]) -> dict:
    """Stack images (B, 3, S, S), masks (B, 1, S, S) and input sizes (B, 2); keep ids as a list."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]),
        "input_size": torch.stack([torch.as_tensor(s["input_size"]) for s in samples]),
        "id": [s["id"] for s in samples],
    }


def train_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    seed: int,
    num_replicas: int = 1,
    rank: int = 0,
    num_workers: int = 0,
    drop_single: bool = False,
) -> tuple[DataLoader, EpochSampler]:
    """DataLoader over process ``rank``'s share of ``dataset`` and its :class:`EpochSampler` (call
    ``sampler.set_epoch`` and set ``sampler.skip`` before each epoch)."""
    sampler = EpochSampler(
        dataset,
        num_replicas=num_replicas,
        rank=rank,
        seed=seed,
        batch_size=batch_size,
        drop_single=drop_single,
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )
    return loader, sampler

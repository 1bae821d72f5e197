"""Batches for training: a resumable per-epoch shuffle shared across processes, and the collate function.

The order of an epoch depends only on (seed, epoch), so a resumed run sees the same batches as an uninterrupted
one; each process takes its own share (``DistributedSampler``'s interleaving).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter, deque
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class EpochSampler(DistributedSampler):
    """This process's share of a seeded per-epoch shuffle, optionally skipping the samples already consumed.

    With ``drop_single``, a last batch that would hold one image is dropped (InfoSAM's entropies need two).
    Set :attr:`skip` (samples of this process's share already consumed) before iterating to resume mid-epoch.

    Object datasets (instance formats, samples grouped by ``pair.object.image_id``) take two more options:

    * ``objects_per_image`` K: each epoch uses ``min(K, n)`` of an image's ``n`` objects, drawn without
      replacement from a generator seeded by ``(seed, epoch)`` (the same in every process); the seeded shuffle then
      runs over those. The epoch length is ``sum(min(K, n))``, the same every epoch.
    * ``objects_per_batch_image`` M: this process's share is reordered so that a batch holds at most M objects of
      one image: batches are filled in shuffle order, an object whose image already has M in the batch waits for
      the next batch (it keeps its place in the queue). When only such objects are left, the batch takes them
      anyway. Deterministic, so resuming with :attr:`skip` sees the same batches.

    Without them (and always for binary datasets) the order is exactly ``DistributedSampler``'s.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        num_replicas: int,
        rank: int,
        seed: int,
        batch_size: int,
        drop_single: bool,
        objects_per_image: int | None = None,
        objects_per_batch_image: int | None = None,
    ):
        self.images = _object_images(dataset) if (objects_per_image or objects_per_batch_image) else None
        self.per_image = objects_per_image if self.images is not None else None
        self.batch_limit = objects_per_batch_image if self.images is not None else None
        self.batch_size = batch_size
        self.groups: list[list[int]] = []
        if self.images is not None:
            for index, image in enumerate(self.images):
                if index == 0 or image != self.images[index - 1]:
                    self.groups.append([])
                self.groups[-1].append(index)
        source = dataset
        if self.per_image is not None:
            source = _Sized(sum(min(self.per_image, len(g)) for g in self.groups))
        super().__init__(source, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        single = drop_single and self.num_samples % batch_size == 1 and self.num_samples > 1
        self.length = self.num_samples - int(single)
        self.batches = math.ceil(self.length / batch_size)
        """Batches per epoch of this process."""
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        if self.per_image is None and self.batch_limit is None:
            return itertools.islice(super().__iter__(), self.skip, self.length)
        order = list(super().__iter__())
        if self.per_image is not None:
            chosen = self.epoch_objects()
            order = [chosen[i] for i in order]
        if self.batch_limit is not None:
            order = spread_images(order, self.images, self.batch_size, self.batch_limit)
        return itertools.islice(iter(order), self.skip, self.length)

    def epoch_objects(self) -> list[int]:
        """Dataset indices of this epoch's objects (up to ``objects_per_image`` per image), image by image."""
        rng = np.random.default_rng([self.seed, self.epoch, 0x0B1EC7])
        out: list[int] = []
        for group in self.groups:
            if len(group) <= self.per_image:
                out += group
            else:
                out += [group[i] for i in sorted(rng.permutation(len(group))[: self.per_image].tolist())]
        return out


class _Sized:
    """A stand-in dataset of ``n`` samples (what ``DistributedSampler`` needs: a length)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


def _object_images(dataset: Dataset) -> list[str] | None:
    """Image id of each sample of an object dataset (samples of an image are consecutive); None otherwise."""
    pairs = getattr(dataset, "pairs", None)
    if not pairs or any(p.object is None for p in pairs):
        return None
    return [p.object.image_id for p in pairs]


def spread_images(order: list[int], images: list[str], batch_size: int, limit: int) -> list[int]:
    """``order`` rearranged so that each run of ``batch_size`` holds at most ``limit`` samples of one image
    (``images[i]``: the image of sample ``i``), keeping the order otherwise (see :class:`EpochSampler`)."""
    queues: dict[str, deque] = {}
    for position, index in enumerate(order):
        queues.setdefault(images[index], deque()).append((position, index))
    heap = [(q[0][0], image) for image, q in queues.items()]
    heapq.heapify(heap)
    out: list[int] = []
    while heap:
        counts: Counter = Counter()
        held: list[tuple[int, str]] = []
        taken = 0
        while heap and taken < batch_size:
            _, image = heapq.heappop(heap)
            out.append(queues[image].popleft()[1])
            taken += 1
            counts[image] += 1
            if queues[image]:
                entry = (queues[image][0][0], image)
                if counts[image] < limit:
                    heapq.heappush(heap, entry)
                else:
                    held.append(entry)
            if not heap and held and taken < batch_size:  # only over-limit images left: take them anyway
                for entry in held:
                    heapq.heappush(heap, entry)
                held = []
        for entry in held:
            heapq.heappush(heap, entry)
    return out

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
    objects_per_image: int | None = None,
    objects_per_batch_image: int | None = None,
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
        objects_per_image=objects_per_image,
        objects_per_batch_image=objects_per_batch_image,
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

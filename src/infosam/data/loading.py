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

    With ``drop_single``, a last batch that would hold one sample is dropped (InfoSAM's entropies need two): one
    image, or in an object dataset one object, the last of this process's share in that epoch's order (so a
    different one each epoch). Every other sample of the share is yielded once; with several processes the share
    is ``DistributedSampler``'s, padded to equal lengths by repeating samples of the epoch's order.
    Set :attr:`skip` (samples of this process's share already consumed) before iterating to resume mid-epoch;
    ``len()`` counts what is left to yield.

    Object datasets (instance formats, samples grouped by ``pair.object.image_id``) take two more options:

    * ``objects_per_image`` K: each epoch uses ``min(K, n)`` of an image's ``n`` objects, drawn without
      replacement from a generator seeded by ``(seed, epoch)`` (the same in every process); the seeded shuffle then
      runs over those. The epoch length is ``sum(min(K, n))``, the same every epoch.
    * ``objects_per_batch_image`` M: this process's share is reordered so that a batch holds at most M objects of
      one image (:func:`spread_images`): batches are filled in shuffle order, an object whose image already has M
      in the batch waits for the next batch (it keeps its place in the queue), except that a batch first takes
      what the later batches could not hold within M. So every batch, the epoch's last included, keeps within M
      whenever the share's counts allow it; only when they do not (an image with more objects than M per batch
      can place) do some batches hold more. Deterministic, so resuming with :attr:`skip` sees the same batches.

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

    def __len__(self) -> int:
        return max(0, self.length - self.skip)


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
    (``images[i]``: the image of sample ``i``), keeping the order otherwise (see :class:`EpochSampler`).

    Batch by batch: first the batch takes what the later batches could not hold (at most ``limit`` of an image
    each, so k images' samples fit them only up to ``sum(min(size, k * limit))``), one sample at a time from the
    image with the most left; then it fills in ``order``, an image at its limit waiting for the next batch; when
    only such images are left, it takes them anyway. So whenever the epoch's counts allow batches within the
    limit, every batch is within it (the tail included); within a batch the samples keep their order. A
    permutation of ``order``; ``order`` itself when ``limit >= batch_size``."""
    queues: dict[str, deque] = {}
    for position, index in enumerate(order):
        queues.setdefault(images[index], deque()).append((position, index))
    n = len(order)
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    tight = (
        -(-batch_size // limit) - 1
    )  # any k > tight images' samples fit the later batches (k * limit >= size)
    # Lazy heaps: an entry counts while its image's queue still starts at that position (holds that many samples).
    by_order = [(q[0][0], image) for image, q in queues.items()]
    by_count = [(-len(q), q[0][0], image) for image, q in queues.items()]
    heapq.heapify(by_order)
    heapq.heapify(by_count)
    out: list[int] = []
    batch: list[tuple[int, int]] = []  # (position, index) of the batch being filled
    counts: Counter = Counter()  # its samples per image

    def take(image: str) -> None:
        batch.append(queues[image].popleft())
        counts[image] += 1
        if queues[image]:
            heapq.heappush(by_order, (queues[image][0][0], image))
            heapq.heappush(by_count, (-len(queues[image]), queues[image][0][0], image))
        else:
            del queues[image]

    for number, size in enumerate(sizes):
        batch.clear()
        counts.clear()
        full = max(0, n // batch_size - number - 1)  # full batches after this one, then the short last one
        short = n % batch_size if number + 1 < len(sizes) else 0
        room = [
            full * k * limit + min(short, k * limit) for k in range(1, tight + 1)
        ]  # k * limit < batch_size
        largest = _largest(by_count, queues, tight + size) if tight and number + 1 < len(sizes) else []
        while largest:  # the k images with the most left must fit the later batches, for every k <= tight
            left = sorted(((len(queues.get(im, ())), im) for im in largest), reverse=True)
            totals = itertools.accumulate(c for c, _ in left[: len(room)])
            if len(batch) == size or all(t <= cap for t, cap in zip(totals, room, strict=False)):
                break
            givers = [(c, im) for c, im in left if c and counts[im] < limit]
            if not givers:
                break  # the epoch's counts do not allow the limit: the fill below takes what is left
            # the image with the most left (the earliest in ``order`` among equals) gives one sample now
            take(min((im for c, im in givers if c == givers[0][0]), key=lambda im: queues[im][0][0]))
        held: list[tuple[int, str]] = []
        anyway = False
        while len(batch) < size:
            if not by_order:  # only images at their limit left: the batch takes them anyway
                for entry in held:
                    heapq.heappush(by_order, entry)
                held, anyway = [], True
            position, image = heapq.heappop(by_order)
            if image not in queues or queues[image][0][0] != position:
                continue
            if counts[image] >= limit and not anyway:
                held.append((position, image))
                continue
            take(image)
        for entry in held:
            heapq.heappush(by_order, entry)
        out += [index for _, index in sorted(batch)]
    return out


def _largest(by_count: list, queues: dict[str, deque], k: int) -> list[str]:
    """The (up to) ``k`` images with the most samples left, from the lazy heap ``by_count`` (left as it was)."""
    found: dict[str, tuple] = {}
    while by_count and len(found) < k:
        entry = heapq.heappop(by_count)
        left, _, image = entry
        if image in queues and len(queues[image]) == -left and image not in found:
            found[image] = entry  # stale entries and duplicates are dropped here
    for entry in found.values():
        heapq.heappush(by_count, entry)
    return list(found)


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

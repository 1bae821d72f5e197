"""Training and evaluating on objects: a batch of 4 is 4 objects; K objects per image per epoch; at most M objects
of one image per batch; binary formats train exactly as before."""

from __future__ import annotations

import itertools
import json
import math
import random
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DistributedSampler

from infosam.config import ConfigError, DataConfig, load_config
from infosam.data.formats import open_dataset
from infosam.data.loading import collate, spread_images, train_loader
from infosam.data.synthetic import write_synthetic_dataset
from infosam.evaluate import object_summary, read_evaluation, write_evaluation
from infosam.train import train
from instance_data import two_object_coco


def _conv_lora_folder(root: Path) -> Path:
    """A Conv-LoRA CSV folder (train.csv, test.csv) over 5 + 2 synthetic pairs."""
    write_synthetic_dataset(root, 7, domain="target", size=32)
    stems = sorted(p.stem for p in (root / "images").iterdir())
    for name, chunk in (("train.csv", stems[:5]), ("test.csv", stems[5:])):
        rows = "".join(f"images/{s}.png,masks/{s}.png\n" for s in chunk)
        (root / name).write_text("image,label\n" + rows)
    return root


def _reference_batches(dataset, *, batch_size, seed, replicas, rank, epoch, skip, drop_single):
    """What the loader gave before object samples existed: DistributedSampler's share, sliced, stacked."""
    sampler = DistributedSampler(dataset, num_replicas=replicas, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    n = sampler.num_samples - int(
        drop_single and sampler.num_samples % batch_size == 1 and sampler.num_samples > 1
    )
    order = list(itertools.islice(iter(sampler), skip, n))
    return [
        collate([dataset[i] for i in order[k : k + batch_size]]) for k in range(0, len(order), batch_size)
    ]


@pytest.mark.parametrize(("replicas", "skip"), [(1, 0), (1, 2), (2, 0)])
def test_binary_batches_are_bitwise_unchanged(tmp_path, replicas, skip):
    """On a Conv-LoRA folder the loader (even with the object options set, which binary formats ignore) yields
    exactly the batches of the plain DistributedSampler it was before."""
    ds = open_dataset(_conv_lora_folder(tmp_path / "c"), split="train", image_size=32)
    for epoch in range(3):
        for options in ({}, {"objects_per_image": 1, "objects_per_batch_image": 1}):
            loader, sampler = train_loader(
                ds,
                batch_size=2,
                seed=7,
                num_replicas=replicas,
                rank=replicas - 1,
                drop_single=True,
                **options,
            )
            sampler.set_epoch(epoch)
            sampler.skip = skip
            got = list(loader)
            want = _reference_batches(
                ds,
                batch_size=2,
                seed=7,
                replicas=replicas,
                rank=replicas - 1,
                epoch=epoch,
                skip=skip,
                drop_single=True,
            )
            assert len(got) == len(want) > 0
            for g, w in zip(got, want, strict=True):
                assert g["id"] == w["id"]
                for key in ("image", "mask", "input_size"):
                    assert torch.equal(g[key], w[key]), key


def test_binary_training_ignores_the_object_options(tmp_path):
    """Two runs on a Conv-LoRA folder, with and without the object options: bitwise-equal trained weights."""
    data = _conv_lora_folder(tmp_path / "c")
    weights = []
    for name, extra in (("a", []), ("b", ["data.objects_per_image=1", "data.objects_per_batch_image=1"])):
        config = load_config(None, [*_base(data, tmp_path / name), "data.train_split=train.csv", *extra])
        run = train(config, progress=False)
        weights.append(load_file(str(run / "weights/final/peft.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def _base(data: Path, out: Path) -> list[str]:
    return [
        "model.name=tiny",
        "model.image_size=32",
        f"data.path={data}",
        "train.batch_size=4",
        "train.epochs=1",
        "train.cpu=true",
        "cache.enabled=false",
        "eval.last_epochs=1",
        "eval.batch_size=4",
        f"output={out}",
    ]


def test_train_and_evaluate_per_object_on_coco(tmp_path):
    """A tiny COCO file, two objects per image: each batch of 4 is 4 objects, and the test split is scored per
    object with per-image and per-object means."""
    data = tmp_path / "coco"
    two_object_coco(data / "train", n_images=4, size=32)
    two_object_coco(data / "test", n_images=2, size=32)
    config = load_config(None, [*_base(data, tmp_path / "run"), "train.log_samples=true"])
    run = train(config, progress=False)
    seen = (run / "samples-rank0.txt").read_text()
    assert seen.count("#") == 8  # 8 objects (the crowd one skipped), two batches of 4
    evaluation = json.loads((run / "eval/epoch-001.json").read_text())
    rows, summary = evaluation["rows"], evaluation["summary"]
    assert [(r["image"], r["object"]) for r in rows] == [
        ("test/images/im0.png", 1),
        ("test/images/im0.png", 2),
        ("test/images/im1.png", 3),
        ("test/images/im1.png", 4),
    ]
    assert summary["n_objects"] == 4 and summary["n_images"] == 2
    assert summary["per_object"]["IoU"] == pytest.approx(sum(r["IoU"] for r in rows) / 4)


@pytest.mark.parametrize(
    ("kind", "extra", "says"),
    [
        ("coco", ["data.objects_per_image=1"], "(1 object sample(s) per process and epoch from 2 object(s);"),
        ("pairs", ["data.train_split=all"], "(1 image(s);"),
    ],
)
def test_a_training_set_below_one_batch_is_counted_in_its_own_samples(tmp_path, kind, extra, says):
    """InfoSAM needs 2 samples per process: one COCO image with two objects, drawn once per epoch, is one sample
    (the message counts objects, not images); one image/mask pair is one image."""
    data = tmp_path / kind
    if kind == "coco":
        two_object_coco(data / "train", n_images=1, size=32)
    else:
        write_synthetic_dataset(data, 1, domain="target", size=32)
    config = load_config(
        None,
        [*_base(data, tmp_path / "run"), "eval.last_epochs=0", "infosam.enabled=true", *extra],
    )
    with pytest.raises(ValueError, match="too few samples for one batch") as err:
        train(config, progress=False)
    assert says in str(err.value)
    assert "distill.method=infosam needs at least 2 per process" in str(err.value)
    assert not (tmp_path / "run").exists()


def test_object_summary_means_differ_when_images_hold_different_counts(tmp_path):
    rows = [
        {"id": "a#1", "image": "a", "object": 1, "IoU": 1.0, "Dice": 1.0},
        {"id": "a#2", "image": "a", "object": 2, "IoU": 1.0, "Dice": 1.0},
        {"id": "a#3", "image": "a", "object": 3, "IoU": 1.0, "Dice": 1.0},
        {"id": "b#7", "image": "b", "object": 7, "IoU": 0.0, "Dice": 0.5},
    ]
    s = object_summary(rows)
    assert s["per_object"]["IoU"] == pytest.approx(0.75) and s["IoU"] == pytest.approx(0.75)
    assert s["per_image"]["IoU"] == pytest.approx(0.5)  # (mean of a = 1, b = 0) / 2
    assert s["per_image"]["Dice"] == pytest.approx(0.75)
    assert (s["n_images"], s["n_objects"]) == (2, 4)
    write_evaluation(tmp_path, rows, s)
    back, _ = read_evaluation(tmp_path)
    assert back == rows  # keyed by image and object id
    assert (tmp_path / "per_image.csv").read_text().splitlines()[0] == "id,image,object,IoU,Dice"


def _coco_objects(tmp_path, n_images=5):
    return open_dataset(two_object_coco(tmp_path / "c", n_images=n_images, size=32).parent, image_size=32)


def test_objects_per_image_draws_k_per_image_per_epoch(tmp_path):
    ds = _coco_objects(tmp_path)  # 5 images x 2 objects
    images = [p.object.image_id for p in ds.pairs]
    _, sampler = train_loader(ds, batch_size=2, seed=3, objects_per_image=1)
    assert sampler.length == 5
    chosen = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(images[i] for i in order) == sorted(set(images))  # one object of every image
        chosen.append(tuple(sorted(order)))
        assert list(sampler) == order  # deterministic per (seed, epoch)
    assert len(set(chosen)) > 1  # drawn anew per epoch
    _, all_objects = train_loader(ds, batch_size=2, seed=3)
    assert all_objects.length == 10


def test_objects_per_batch_image_keeps_objects_of_one_image_apart(tmp_path):
    ds = _coco_objects(tmp_path)
    images = [p.object.image_id for p in ds.pairs]
    for epoch in range(5):
        _, sampler = train_loader(ds, batch_size=4, seed=epoch, objects_per_batch_image=1)
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(10))
        batches = [order[k : k + 4] for k in range(0, 10, 4)]
        for b in batches[:2]:  # the last batch of 2 may have only one image left
            assert max(Counter(images[i] for i in b).values()) == 1, (epoch, batches)


def test_spread_images_rule():
    images = ["a", "a", "a", "b", "c"]
    # shuffled order a0 a1 a2 b c, batches of 2, at most 1 per image: a0 b | a1 c | a2 (taken anyway)
    assert spread_images([0, 1, 2, 3, 4], images, 2, 1) == [0, 3, 1, 4, 2]
    assert spread_images([0, 1, 2, 3, 4], images, 2, 2) == [0, 1, 2, 3, 4]
    assert spread_images([0, 1, 2, 3, 4], images, 3, 1) == [
        0,
        3,
        4,
        1,
        2,
    ]  # a1, a2 together: nothing else left


@pytest.mark.parametrize(
    ("option", "value"), [("objects_per_image", 0), ("objects_per_batch_image", -1), ("categories", [])]
)
def test_data_options_are_validated(option, value):
    with pytest.raises(ConfigError, match=f"data.{option}"):
        DataConfig(path="x", **{option: value})


class _Objects:
    """A stand-in object dataset: ``counts[i]`` objects of image ``i``, consecutive (all the sampler reads)."""

    def __init__(self, counts):
        self.pairs = [
            SimpleNamespace(object=SimpleNamespace(image_id=f"im{i}"))
            for i, c in enumerate(counts)
            for _ in range(c)
        ]

    def __len__(self) -> int:
        return len(self.pairs)


def _fits(counts, batch_size, limit):
    """Whether ``sum(counts)`` objects can form batches of ``batch_size`` (the last one shorter) with at most
    ``limit`` of one image in each: max-flow = min-cut, the tightest cut taking the k largest images."""
    n = sum(counts)
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    top = sorted(counts, reverse=True)
    return all(sum(top[:k]) <= sum(min(s, k * limit) for s in sizes) for k in range(1, len(top) + 1))


def test_spread_images_keeps_every_batch_within_the_limit_when_the_epoch_allows():
    """The epoch's tail: 5 images x 2 objects in batches of 2 at most 1 per image fit (a cycle of pairs), yet a
    greedy fill in shuffle order can leave both objects of one image for the last batch; the spread must not."""
    images = [f"im{i // 2}" for i in range(10)]
    order = [6, 9, 0, 5, 7, 8, 1, 4, 2, 3]  # greedy: im3 im4 | im0 im2 | im3 im4 | im0 im2 | im1 im1
    spread = spread_images(order, images, 2, 1)
    assert sorted(spread) == list(range(10))
    assert all(images[a] != images[b] for a, b in zip(spread[::2], spread[1::2], strict=True)), spread
    rng = random.Random(0)
    for _ in range(400):
        counts = [rng.randint(1, 4) for _ in range(rng.randint(1, 6))]
        batch_size, limit = rng.randint(2, 5), rng.randint(1, 2)
        images = [f"im{i}" for i, c in enumerate(counts) for _ in range(c)]
        order = rng.sample(range(len(images)), len(images))
        spread = spread_images(order, images, batch_size, limit)
        assert sorted(spread) == sorted(order)  # nothing dropped or repeated
        if _fits(counts, batch_size, limit):
            for k in range(0, len(spread), batch_size):
                batch = Counter(images[i] for i in spread[k : k + batch_size])
                assert max(batch.values()) <= limit, (counts, batch_size, limit, order, spread)
        assert spread_images(order, images, batch_size, batch_size) == order  # no limit: the shuffle as is


@pytest.mark.parametrize("options", [{}, {"objects_per_image": 2, "objects_per_batch_image": 1}])
def test_loader_length_is_the_batches_it_yields(options):
    """len(sampler) and len(loader) count what an epoch yields: the dropped single sample and the skipped ones
    (a resumed epoch) are not counted."""
    ds = _Objects(
        [3, 1, 2, 1]
    )  # 7 objects: batches of 2 leave a single one, dropped for a 2-sample objective
    loader, sampler = train_loader(ds, batch_size=2, seed=1, drop_single=True, **options)
    for skip in (0, 2):
        sampler.set_epoch(1)
        sampler.skip = skip
        order = list(sampler)
        assert len(sampler) == len(order)
        assert len(loader) == math.ceil(len(order) / 2) == sampler.batches - skip // 2

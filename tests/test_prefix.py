"""The student's frozen-prefix cache: segments compose to the encoder, the cut sits before the first trainable
parameter, the cached step gives the uncached losses and gradients, a warm cache skips the frozen stages, and a
stale store is refused."""

from __future__ import annotations

import json

import pytest
import torch

from infosam.cache import TEACHER_KIND, CacheMismatchError, TeacherCache, cache_info, read_manifest
from infosam.config import load_config
from infosam.data.synthetic import write_synthetic_dataset
from infosam.model import build_base, make_student, make_teacher
from infosam.prefix import (
    PREFIX_KIND,
    EncoderSplit,
    StepCaches,
    StudentPrefix,
    encoder_segments,
    open_caches,
    open_prefix_store,
    prefix_fingerprint,
    split_encoder,
)
from infosam.sam.forward import SamOutput
from infosam.step import Trainee
from infosam.train import train
from run_logs import logged_losses

# float16 storage rounds each prefix feature by at most 2^-11 relative. Measured on the tiny_tinyvit LoRA student
# below over 4 seeds (2026-11-29): gradients move by at most 3.1e-4 of their tensor's largest entry, losses by 9e-8
# relative. float32 storage is the uncached maths up to summation order: gradients 5.7e-6, losses exactly equal.
# The bounds leave a margin of 5-10x.
F16_GRAD_TOL, F16_LOSS_RTOL = 2e-3, 1e-6
F32_GRAD_TOL, F32_LOSS_RTOL = 5e-5, 1e-7


def _student(name: str, methods: str, seed: int = 0):
    model = build_base(name, checkpoint=None, seed=seed)
    make_student(model, methods, {})
    return model.train()


@pytest.mark.parametrize(
    ("name", "methods", "last"),
    [
        ("tiny_tinyvit", "lora+decoder", "layers.0.downsample"),
        ("tiny_tinyvit", "adapter+decoder", "layers.2.blocks.0"),
        ("tiny_tinyvit", "decoder", "neck"),
        ("tiny", "adapter+decoder", "blocks.1"),
        ("tiny", "lora+decoder", "pos_embed"),
        ("tiny", "decoder", "neck"),
    ],
)
def test_segments_compose_to_the_encoder_and_the_cut_precedes_the_first_trainable(name, methods, last):
    model = _student(name, methods)
    encoder = model.image_encoder
    split = split_encoder(encoder)
    assert split.last_frozen == last
    assert split.whole == (methods == "decoder")
    frozen = [p for s in split.segments[: split.boundary] for m in s.modules for p in m.parameters()]
    assert frozen and not any(p.requires_grad for p in frozen)
    if not split.whole:
        assert split.segments[split.boundary].trainable()
    x = torch.randn(2, 3, encoder.img_size, encoder.img_size)
    with torch.no_grad():
        assert torch.equal(split.rest(split.prefix(x)), encoder(x))
        assert torch.equal(EncoderSplit(split.segments, 0).rest(x), encoder(x))


def test_unknown_encoder_is_refused():
    with pytest.raises(TypeError, match="ImageEncoderViT and TinyViT"):
        encoder_segments(torch.nn.Linear(2, 2))


def _grads_andlogged_losses(trainee: Trainee, images, masks, prompts, features=None):
    trainee.zero_grad(set_to_none=True)
    terms = trainee(images, masks, prompts, None, features)
    terms["loss"].backward()
    grads = {n: p.grad.clone() for n, p in trainee.named_parameters() if p.grad is not None}
    return {k: v.item() for k, v in terms.items()}, grads


@pytest.mark.parametrize(
    ("dtype", "grad_tol", "loss_rtol"),
    [(torch.float32, F32_GRAD_TOL, F32_LOSS_RTOL), (torch.float16, F16_GRAD_TOL, F16_LOSS_RTOL)],
)
def test_cached_prefix_gives_the_uncached_losses_and_gradients(tmp_path, dtype, grad_tol, loss_rtol):
    torch.manual_seed(0)
    student = _student("tiny_tinyvit", "lora+decoder")
    split = split_encoder(student.image_encoder)
    trainee = Trainee(student, None, split=split)
    images = torch.randn(2, 3, 64, 64)
    masks = (torch.rand(2, 1, 64, 64) > 0.5).float()
    prompts = {"boxes": torch.tensor([[4.0, 4.0, 40.0, 50.0], [10.0, 2.0, 60.0, 30.0]])}
    reference, ref_grads = _grads_andlogged_losses(trainee, images, masks, prompts)

    store = open_prefix_store(tmp_path / "prefix", {"test": 1}, dtype)
    prefix = StudentPrefix(split, store)
    features = prefix.features(images)
    cached, grads = _grads_andlogged_losses(trainee, images, masks, prompts, features)

    assert grads.keys() == ref_grads.keys() and len(grads) > 0
    lora = [n for n in grads if "lora" in n]
    assert lora  # the encoder's trainable part got gradients through the cached features
    # Relative to each tensor's largest entry, floored at 1e-3 of the largest gradient overall (some, like the
    # decoder's key biases, are zero up to rounding: softmax ignores a bias shared by all keys).
    floor = 1e-3 * max(r.abs().max() for r in ref_grads.values())
    for name, g in grads.items():
        scale = torch.maximum(ref_grads[name].abs().max(), floor)
        assert (g - ref_grads[name]).abs().max() / scale <= grad_tol, name
    for key in reference:
        assert cached[key] == pytest.approx(reference[key], rel=loss_rtol, abs=1e-7), key


def test_features_are_computed_once_then_read(tmp_path):
    split = split_encoder(_student("tiny_tinyvit", "lora+decoder").image_encoder)
    store = open_prefix_store(tmp_path / "p", {"test": 1}, torch.float32)
    images = torch.randn(3, 3, 64, 64)
    first = StudentPrefix(split, store).features(images)
    again = StudentPrefix(split, store)
    second = again.features(images)
    assert again.computed == 0 and torch.equal(first, second)
    assert first.shape == (3, 32 * 32, 16)  # stage 0 (64 x 64, 8 channels) downsampled: tokens (B, L, C)
    assert len(store) == 3


def test_a_partial_prefix_cannot_live_in_the_teacher_cache(tmp_path):
    split = split_encoder(_student("tiny_tinyvit", "lora+decoder").image_encoder)
    teacher_cache = TeacherCache(tmp_path / "t", {"test": 1})
    with pytest.raises(ValueError, match="whole-encoder"):
        StudentPrefix(split, teacher_cache, teacher_embeddings=True)
    with pytest.raises(ValueError, match="kind"):  # the flag and the store must agree
        StudentPrefix(split, teacher_cache)


def _caches(tmp_path, student, teacher, **options):
    return open_caches(
        student,
        teacher,
        teacher_dir=tmp_path / "cache",
        prefix_dir=None,
        checkpoint=None,
        precision="no",
        **options,
    )


def test_open_caches_decides_once_whether_the_prefix_is_the_teacher_cache(tmp_path):
    teacher = make_teacher(build_base("tiny_tinyvit", checkpoint=None, seed=0))
    # decoder-only with the teacher's weights: the prefix is the teacher's embeddings, in the teacher cache
    shared = _caches(tmp_path, _student("tiny_tinyvit", "decoder", seed=0), teacher)
    assert shared.prefix.teacher_embeddings and shared.prefix.store is shared.teacher
    assert not (tmp_path / "cache-prefix").exists()
    images = torch.randn(2, 3, 64, 64)
    keys = shared.keys(images)
    output = SamOutput(torch.full((2, 16, 16, 16), 7.0), torch.zeros(2, 1, 16), None, None)
    assert shared.features(images, keys, output) is output.image_embeddings  # the teacher just read them
    # without a teacher forward (plain baseline, evaluation) the same entries are read from the teacher cache
    alone = _caches(tmp_path, _student("tiny_tinyvit", "decoder", seed=0), None, reference=teacher)
    assert alone.teacher is None and alone.prefix.teacher_embeddings
    assert torch.equal(alone.features(images, keys), shared.teacher.get(keys))
    # another encoder (other weights, or a partial prefix): a store of its own beside the teacher cache
    other = _caches(tmp_path, _student("tiny_tinyvit", "decoder", seed=1), teacher)
    lora = _caches(tmp_path / "lora", _student("tiny_tinyvit", "lora+decoder", seed=0), teacher)
    for caches in (other, lora):
        assert not caches.prefix.teacher_embeddings and caches.prefix.store.manifest["kind"] == PREFIX_KIND
    assert lora.prefix.store.directory == tmp_path / "lora" / "cache-prefix"
    assert lora.features(images, keys, output).shape == (
        2,
        32 * 32,
        16,
    )  # its own features, not the teacher's
    # switched off: nothing opened, nothing hashed
    off = _caches(
        tmp_path / "off",
        _student("tiny_tinyvit", "decoder"),
        teacher,
        teacher_cache=False,
        student_prefix=False,
    )
    assert off == StepCaches() and off.keys(images) is None and off.features(images, None, output) is None
    assert not (tmp_path / "off").exists()


def test_prefix_store_is_refused_for_other_weights_or_boundary(tmp_path):
    student = _student("tiny_tinyvit", "lora+decoder", seed=0)
    base = {"spec": "tiny_tinyvit", "precision": "float32"}
    open_prefix_store(
        tmp_path / "p", prefix_fingerprint(base, split_encoder(student.image_encoder)), torch.float16
    )
    other_seed = split_encoder(_student("tiny_tinyvit", "lora+decoder", seed=1).image_encoder)
    with pytest.raises(CacheMismatchError, match="prefix"):
        open_prefix_store(tmp_path / "p", prefix_fingerprint(base, other_seed), torch.float16)
    adapter = split_encoder(_student("tiny_tinyvit", "adapter+decoder", seed=0).image_encoder)
    with pytest.raises(CacheMismatchError, match="prefix"):
        open_prefix_store(tmp_path / "p", prefix_fingerprint(base, adapter), torch.float16)
    with pytest.raises(CacheMismatchError, match="precision"):
        fingerprint = prefix_fingerprint(
            {**base, "precision": "bfloat16"}, split_encoder(student.image_encoder)
        )
        open_prefix_store(tmp_path / "p", fingerprint, torch.float16)


# --------------------------------------------------------------------------------------------- in training


@pytest.fixture
def count_prefix_runs(monkeypatch):
    """Images that went through the student's frozen prefix segments (in the cached path)."""
    calls = []
    original = EncoderSplit.prefix

    def counting(self, images):
        calls.append(images.shape[0])
        return original(self, images)

    monkeypatch.setattr(EncoderSplit, "prefix", counting)
    return calls


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    write_synthetic_dataset(root / "train", 4, domain="target")
    write_synthetic_dataset(root / "test", 2, domain="target", start=100)
    return root


def _base_overrides(tmp_path, data, methods):
    return [
        "model.name=tiny_tinyvit",
        f"peft.methods={methods}",
        f"data.path={data}",
        "train.batch_size=2",
        "train.epochs=2",
        "train.cpu=true",
        "train.log_every_steps=1",
        "eval.last_epochs=0",
        f"cache.dir={tmp_path / 'cache'}",
    ]


def test_training_with_the_prefix_cache_skips_frozen_stages_and_matches(tmp_path, data, count_prefix_runs):
    base = [
        *_base_overrides(tmp_path, data, "lora+decoder"),
        "cache.prefix_dtype=float32",
        "eval.last_epochs=1",
    ]
    # The reference reads the same (float16) teacher cache, so the runs differ by the prefix cache only.
    off = [*base, "cache.enabled=true", "cache.student_prefix=false", f"output={tmp_path / 'plain'}"]
    plain = train(load_config(None, off))
    assert count_prefix_runs == []
    cold = train(load_config(None, [*base, "cache.enabled=true", f"output={tmp_path / 'cold'}"]))
    assert sum(count_prefix_runs) == 4 + 2  # 4 training + 2 test images, once each: the second epoch reads
    count_prefix_runs.clear()
    warm = train(load_config(None, [*base, "cache.enabled=true", f"output={tmp_path / 'warm'}"]))
    assert count_prefix_runs == []  # warm: the frozen stages never run

    info = cache_info(tmp_path / "cache-prefix")
    assert info["kind"] == PREFIX_KIND and info["entries"] == 6
    assert info["fingerprint"]["prefix"]["last_segment"] == "layers.0.downsample"
    assert cache_info(tmp_path / "cache-inputs")["entries"] == 6  # the decoded inputs, cached by default

    reference, cached, rerun = logged_losses(plain), logged_losses(cold), logged_losses(warm)
    assert cached == rerun
    for a, b in zip(reference, cached, strict=True):
        for key in a:
            # measured: total loss within 3e-7 relative, the small relation/distill terms within 4e-7 absolute
            # (summation order, then Adam; float32 storage)
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=2e-6), key
    # evaluation through the cached prefix scores like the plain encoder
    scores = [json.loads((run / "summary.json").read_text())["reported"] for run in (plain, cold, warm)]
    assert scores[1] == scores[2]
    for metric in ("IoU", "Dice"):
        assert scores[1][metric] == pytest.approx(scores[0][metric], abs=1e-4), metric


def test_decoder_only_prefix_is_the_teacher_cache(tmp_path, data, count_prefix_runs):
    base = _base_overrides(tmp_path, data, "decoder")
    train(load_config(None, [*base, "cache.enabled=true", f"output={tmp_path / 'cold'}"]))
    assert count_prefix_runs == []  # the teacher filled the entries the student reads
    assert not (tmp_path / "cache-prefix").exists()
    assert len(TeacherCache(tmp_path / "cache", _teacher_fingerprint(tmp_path))) == 4
    # the plain baseline (no teacher) reads the same entries
    baseline = [*base, "infosam.enabled=false", "cache.enabled=true", f"output={tmp_path / 'baseline'}"]
    train(load_config(None, baseline))
    assert count_prefix_runs == []


def _teacher_fingerprint(tmp_path):
    return read_manifest(tmp_path / "cache")["fingerprint"]


def test_evaluate_run_reads_the_runs_cached_prefix_like_training_did(tmp_path, data, count_prefix_runs):
    from infosam.config import CacheConfig
    from infosam.evaluate import evaluate_run

    base = [*_base_overrides(tmp_path, data, "lora+decoder"), "cache.enabled=true", "eval.last_epochs=1"]
    run = train(load_config(None, [*base, f"output={tmp_path / 'run'}"]))
    logged = json.loads((run / "summary.json").read_text())["reported"]
    count_prefix_runs.clear()
    rows, summary = evaluate_run(run, data, "test", cache=True, device="cpu")
    assert count_prefix_runs == []  # the test images' prefix was stored by training's evaluation
    for metric in ("IoU", "Dice"):
        assert summary[metric] == logged[metric], metric  # the same stored features, the same scores
    _, plain = evaluate_run(run, data, "test", device="cpu")  # the whole encoder, float32
    assert summary["cached_features"] is True and plain["cached_features"] is False
    for metric in ("IoU", "Dice"):
        assert summary[metric] == pytest.approx(plain[metric], abs=1e-3), metric

    # zero-shot SAM: the whole encoder is frozen; its embeddings fill the teacher cache once, then are read
    cache = CacheConfig(enabled=True, dir=str(tmp_path / "zero-shot"))
    _, first = evaluate_run("tiny_tinyvit", data, "test", cache=cache, device="cpu")
    assert sum(count_prefix_runs) == 2
    assert read_manifest(tmp_path / "zero-shot")["kind"] == TEACHER_KIND
    _, second = evaluate_run("tiny_tinyvit", data, "test", cache=cache, device="cpu")
    assert sum(count_prefix_runs) == 2 and second == first
    _, uncached = evaluate_run("tiny_tinyvit", data, "test", device="cpu")
    for metric in ("IoU", "Dice"):
        assert first[metric] == pytest.approx(uncached[metric], abs=1e-3), metric

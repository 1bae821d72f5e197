"""Training with the teacher-embedding cache: a warm cache skips the teacher's encoder entirely, and the losses
match training without the cache within float16 storage rounding."""

from __future__ import annotations

import pytest

import infosam.step as step_module
from infosam.config import load_config
from infosam.data.synthetic import write_synthetic_dataset
from infosam.train import train
from run_logs import logged_losses

# float16 keeps 11 significant bits (relative rounding 2^-11 ~ 4.9e-4) of each embedding value. Measured on this
# tiny run (2026-11-26): the loss terms move by at most 3.8e-4 relative (seg is unchanged: the teacher does not
# enter it). The bound leaves a 5x margin over that.
LOSS_RTOL = 2e-3


@pytest.fixture
def count_teacher_encodes(monkeypatch):
    """Counts the teacher encoder calls of the training step (the student encodes through sam_forward)."""
    calls = []
    original = step_module.encode_images

    def counting(model, images):
        calls.append(images.shape[0])
        return original(model, images)

    monkeypatch.setattr(step_module, "encode_images", counting)
    return calls


def test_warm_cache_skips_teacher_encoder_and_matches_uncachedlogged_losses(tmp_path, count_teacher_encodes):
    data = tmp_path / "data"
    write_synthetic_dataset(data / "train", 4, domain="target")
    write_synthetic_dataset(data / "test", 2, domain="target", start=100)
    base = [
        "model.name=tiny",
        f"data.path={data}",
        "train.batch_size=2",
        "train.epochs=2",
        "train.cpu=true",
        "train.log_every_steps=1",
        "eval.last_epochs=0",
        f"cache.dir={tmp_path / 'cache'}",
    ]

    plain = train(load_config(None, [*base, f"output={tmp_path / 'plain'}"]))
    assert len(count_teacher_encodes) == 4  # 2 epochs x 2 batches, no cache
    count_teacher_encodes.clear()

    cold = train(load_config(None, [*base, "cache.enabled=true", f"output={tmp_path / 'cold'}"]))
    assert len(count_teacher_encodes) == 2  # the first epoch fills the cache, the second only reads
    count_teacher_encodes.clear()

    warm = train(load_config(None, [*base, "cache.enabled=true", f"output={tmp_path / 'warm'}"]))
    assert count_teacher_encodes == []  # a warm cache: no teacher encoder at all

    reference, cached, rerun = logged_losses(plain), logged_losses(cold), logged_losses(warm)
    assert len(reference) == len(cached) == 4
    assert cached == rerun  # the stored values are what every run sees, first use included
    for a, b in zip(reference, cached, strict=True):
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=LOSS_RTOL, abs=1e-6), key


def test_progress_label_says_the_first_cached_epoch_is_slower():
    """Issue 22, item 9: the ETA during the cache-filling epoch was 2-3x too long with nothing saying why."""
    from infosam.config import load_config
    from infosam.train.progress import bar_label

    cached = load_config(None, ["data.path=x", "cache.enabled=true", "train.epochs=3"])
    assert "fills the caches" in bar_label(cached, 0) and "ETA" in bar_label(cached, 0)
    assert bar_label(cached, 1) == "train"
    assert bar_label(load_config(None, ["data.path=x", "train.epochs=3"]), 0) == "train"

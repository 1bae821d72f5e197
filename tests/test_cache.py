"""Teacher cache: hits and misses, refusal of a stale teacher, atomic files, float16 round trip."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from infosam.cache import CacheMismatchError, TeacherCache, clear_cache, teacher_fingerprint
from infosam.sam.build import PIXEL_MEAN, PIXEL_STD
from infosam.sam.specs import get_spec

PREP = {"image_size": 64, "pixel_mean": PIXEL_MEAN, "pixel_std": PIXEL_STD}


def _fingerprint(**overrides):
    return teacher_fingerprint(get_spec("tiny", **overrides), None, PREP)


def _embeddings(b: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 32, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_miss_then_hit_only_when_all_ids_present(tmp_path):
    cache = TeacherCache(tmp_path, _fingerprint())
    ids = ["images/a.jpg", "images/b c.jpg"]
    assert cache.get(ids) is None
    emb = _embeddings(2)
    cache.put(ids, emb)
    got = cache.get(ids)
    assert got.dtype == torch.float32 and got.shape == (2, 32, 8, 8)
    assert torch.equal(got, emb.half().float())
    assert torch.equal(cache.get(ids[::-1]), got.flip(0))
    assert cache.get([ids[0], "images/missing.jpg"]) is None
    assert len(cache) == 2
    # A second handle on the same folder (another epoch, process or run) sees the same files.
    assert torch.equal(TeacherCache(tmp_path, _fingerprint()).get(ids), got)


def test_float16_round_trip_within_half_precision(tmp_path):
    emb = _embeddings(3, seed=1) * 3
    cache = TeacherCache(tmp_path, _fingerprint())
    cache.put(["a", "b", "c"], emb)
    got = cache.get(["a", "b", "c"])
    # Round to nearest: relative error <= 2^-11 for normal numbers, absolute <= 2^-25 below 2^-14.
    assert ((got - emb).abs() <= emb.abs() * 2**-11 + 2**-25).all()
    exact = TeacherCache(tmp_path / "f32", _fingerprint(), dtype=torch.float32)
    exact.put(["a", "b", "c"], emb)
    assert torch.equal(exact.get(["a", "b", "c"]), emb)
    with pytest.raises(ValueError, match="float16's range"):
        cache.put(["big"], torch.full((1, 32, 8, 8), 1e5))


def test_other_teacher_is_refused_and_clear_is_explicit(tmp_path):
    cache = TeacherCache(tmp_path, _fingerprint())
    cache.put(["a"], _embeddings(1))
    with pytest.raises(CacheMismatchError, match=r"spec\.image_size.*clear"):
        TeacherCache(tmp_path, _fingerprint(image_size=72))
    with pytest.raises(CacheMismatchError, match="storage_dtype"):
        TeacherCache(tmp_path, _fingerprint(), dtype=torch.float32)
    assert torch.equal(TeacherCache(tmp_path, _fingerprint()).get(["a"]), cache.get(["a"]))  # left intact
    other = TeacherCache(tmp_path, _fingerprint(image_size=72), clear=True)
    assert other.get(["a"]) is None and len(other) == 0
    (tmp_path / "notes.txt").write_text("not ours")
    assert clear_cache(tmp_path) == 1 and (tmp_path / "notes.txt").exists()


def test_fingerprint_covers_weights_preprocessing_and_dtype(tmp_path, tiny_sam):
    ckpt = tmp_path / "w.pth"
    ckpt.write_bytes(b"weights one")
    base = teacher_fingerprint(get_spec("tiny"), ckpt, PREP)
    assert json.loads(json.dumps(base)) == base
    assert base["weights"]["size"] == 11 and len(base["weights"]["sha256"]) == 64
    ckpt.write_bytes(b"weights two")  # same size, other content
    assert teacher_fingerprint(get_spec("tiny"), ckpt, PREP) != base
    assert (
        teacher_fingerprint(get_spec("tiny"), ckpt, {**PREP, "pixel_std": (1, 1, 1)})["preprocessing"]
        != (base["preprocessing"])
    )
    assert (
        teacher_fingerprint(get_spec("tiny"), None, PREP, dtype=torch.bfloat16)["dtype"] == "torch.bfloat16"
    )
    seeded = [teacher_fingerprint(get_spec("tiny"), None, PREP, model=tiny_sam(seed=s)) for s in (0, 0, 1)]
    assert seeded[0] == seeded[1] != seeded[2]
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        teacher_fingerprint(get_spec("tiny"), tmp_path / "missing.pth", PREP)


def test_files_appear_atomically(tmp_path, monkeypatch):
    cache = TeacherCache(tmp_path, _fingerprint())
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        # Just before the move: the final name is absent and the temporary file is already complete.
        seen.append((os.path.exists(dst), cache.get(["a"]), load_file(src)["image_embeddings"].shape))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    cache.put(["a"], _embeddings(1))
    assert seen == [(False, None, (32, 8, 8))]
    monkeypatch.setattr(os, "replace", real_replace)

    # A writer that dies half-way leaves neither a partial final file nor its temporary file.
    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("infosam.cache.save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        cache.put(["b"], _embeddings(1))
    assert cache.get(["b"]) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["manifest.json", cache.path("a").name])


def test_get_under_bf16_autocast_returns_float32(tmp_path):
    """Training with precision bf16 reads the cache inside autocast; float16 rows must still come back as float32."""
    cache = TeacherCache(tmp_path, _fingerprint())
    x = torch.randn(2, 32, 8, 8)
    cache.put(["a", "b"], x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = cache.get(["a", "b"])
    assert got.dtype == torch.float32
    assert torch.allclose(got, x, rtol=2**-10, atol=1e-7)

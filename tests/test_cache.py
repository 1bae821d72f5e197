"""Content-addressed caches: keys from content, hits and misses, refusal of another fingerprint/precision/folder,
atomic files, clearing only what the manifest owns, float16 round trip."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from infosam.cache import (
    CacheFolderError,
    CacheFolders,
    CacheFormatError,
    CacheMismatchError,
    TeacherCache,
    TensorStore,
    cache_files,
    cache_folders,
    cache_info,
    clear_cache,
    content_keys,
)
from infosam.fingerprint import precision_name, spec_fingerprint, teacher_fingerprint
from infosam.sam.specs import get_spec
from infosam.sam.transforms import MetaSamTransform

PREP = MetaSamTransform(64).fingerprint()


def _fingerprint(precision="no", prep=PREP, **overrides):
    return teacher_fingerprint(get_spec("tiny", **overrides), None, prep, precision=precision)


def _embeddings(b: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 32, 8, 8, generator=torch.Generator().manual_seed(seed))


def _images(b: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_content_keys_follow_bytes_dtype_and_shape():
    x = _images(3)
    keys = content_keys(x)
    assert len(keys) == 3 and len(set(keys)) == 3 and all(len(k) == 64 for k in keys)
    assert content_keys(x.clone()) == keys  # the same content is the same key, whatever the tensor object
    assert content_keys(x[[2, 0]]) == [keys[2], keys[0]]
    y = x.clone()
    y[1, 0, 5, 5] = torch.nextafter(y[1, 0, 5, 5], torch.tensor(1e9))  # one value, one ulp
    assert content_keys(y) == [keys[0], content_keys(y)[1], keys[2]] and content_keys(y)[1] != keys[1]
    assert content_keys(x.double())[0] != keys[0]  # same values, other dtype
    assert content_keys(x.reshape(3, 3, 32, 128))[0] != keys[0]  # same bytes, other shape
    assert content_keys(x.bfloat16())[0] == content_keys(x.bfloat16())[0]  # dtypes NumPy lacks work too


def test_miss_then_hit_only_when_all_keys_present(tmp_path):
    cache = TeacherCache(tmp_path, _fingerprint())
    images = _images(2)
    keys = cache.keys(images)
    assert cache.get(keys) is None
    emb = _embeddings(2)
    cache.put(keys, emb)
    got = cache.get(keys)
    assert got.dtype == torch.float32 and got.shape == (2, 32, 8, 8)
    assert torch.equal(got, emb.half().float())
    assert torch.equal(cache.get(keys[::-1]), got.flip(0))
    assert cache.get([keys[0], cache.keys(_images(1, seed=5))[0]]) is None
    assert len(cache) == 2
    # A second handle on the same folder (another epoch, process or run) sees the same files.
    assert torch.equal(TeacherCache(tmp_path, _fingerprint()).get(keys), got)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        cache.get(["images/a.jpg"])  # a file name is not a key


def test_float16_round_trip_within_half_precision(tmp_path):
    emb = _embeddings(3, seed=1) * 3
    keys = content_keys(_images(3))
    cache = TeacherCache(tmp_path, _fingerprint())
    cache.put(keys, emb)
    got = cache.get(keys)
    # Round to nearest: relative error <= 2^-11 for normal numbers, absolute <= 2^-25 below 2^-14.
    assert ((got - emb).abs() <= emb.abs() * 2**-11 + 2**-25).all()
    exact = TeacherCache(tmp_path / "f32", _fingerprint(), dtype=torch.float32)
    exact.put(keys, emb)
    assert torch.equal(exact.get(keys), emb)
    with pytest.raises(ValueError, match="float16's range"):
        cache.put(keys[:1], torch.full((1, 32, 8, 8), 1e5))


def test_other_teacher_precision_or_preprocessing_is_refused_and_clear_is_explicit(tmp_path):
    keys = content_keys(_images(1))
    cache = TeacherCache(tmp_path, _fingerprint())
    cache.put(keys, _embeddings(1))
    with pytest.raises(CacheMismatchError, match=r"spec\.image_size.*clear"):
        TeacherCache(tmp_path, _fingerprint(image_size=72))
    with pytest.raises(CacheMismatchError, match="storage_dtype"):
        TeacherCache(tmp_path, _fingerprint(), dtype=torch.float32)
    with pytest.raises(CacheMismatchError, match=r"fingerprint\.precision"):
        TeacherCache(tmp_path, _fingerprint(precision="bf16"))
    with pytest.raises(CacheMismatchError, match=r"preprocessing\.interpolation"):
        TeacherCache(tmp_path, _fingerprint(prep={**PREP, "interpolation": "PIL bicubic on uint8 RGB"}))
    assert torch.equal(TeacherCache(tmp_path, _fingerprint()).get(keys), cache.get(keys))  # left intact
    other = TeacherCache(tmp_path, _fingerprint(image_size=72), clear=True)
    assert other.get(keys) is None and len(other) == 0


def test_precision_names():
    assert precision_name("no") == precision_name(None) == precision_name(torch.float32) == "float32"
    assert precision_name("bf16") == precision_name(torch.bfloat16) == "bfloat16"
    assert precision_name("fp16") == "float16"
    with pytest.raises(ValueError, match="no, fp16, bf16"):
        precision_name("fp8")
    assert _fingerprint("bf16")["precision"] == "bfloat16" != _fingerprint()["precision"]


def test_fingerprint_covers_weights_preprocessing_and_precision(tmp_path, tiny_sam):
    ckpt = tmp_path / "w.pth"
    ckpt.write_bytes(b"weights one")
    base = teacher_fingerprint(get_spec("tiny"), ckpt, PREP, precision="no")
    assert json.loads(json.dumps(base)) == base
    assert base["weights"]["size"] == 11 and len(base["weights"]["sha256"]) == 64
    assert base["preprocessing"]["interpolation"] and base["preprocessing"]["version"] >= 1
    ckpt.write_bytes(b"weights two")  # same size, other content
    assert teacher_fingerprint(get_spec("tiny"), ckpt, PREP, precision="no") != base
    other_prep = MetaSamTransform(72).fingerprint()
    assert (
        teacher_fingerprint(get_spec("tiny"), ckpt, other_prep, precision="no")["preprocessing"]
        != (base["preprocessing"])
    )
    seeded = [
        teacher_fingerprint(get_spec("tiny"), None, PREP, precision="no", model=tiny_sam(seed=s))
        for s in (0, 0, 1)
    ]
    assert seeded[0] == seeded[1] != seeded[2]
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        teacher_fingerprint(get_spec("tiny"), tmp_path / "missing.pth", PREP, precision="no")
    with pytest.raises(ValueError, match="preprocessing"):
        teacher_fingerprint(get_spec("tiny"), None, {}, precision="no")


def test_non_empty_folder_without_manifest_is_refused_and_a_file_too(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CacheFolderError, match=r"not empty .*notes\.txt.*cache\.dir"):
        TeacherCache(tmp_path, _fingerprint())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing written
    (tmp_path / "file").write_text("x")
    with pytest.raises(CacheFolderError, match="is a file"):
        TeacherCache(tmp_path / "file", _fingerprint())
    TeacherCache(tmp_path / "new" / "deeper", _fingerprint())  # a missing folder is created
    # A folder that already is this cache may hold the user's own files beside it.
    (tmp_path / "new" / "deeper" / "readme.txt").write_text("mine")
    TeacherCache(tmp_path / "new" / "deeper", _fingerprint())


def test_clear_deletes_only_the_files_the_manifest_owns(tmp_path):
    cache = TeacherCache(tmp_path, _fingerprint())
    keys = content_keys(_images(2))
    cache.put(keys, _embeddings(2))
    # The user's files: a weights file, a text file, and even a file named like an entry that is not ours.
    save_file({"w": torch.ones(2)}, str(tmp_path / "my_trained_weights.safetensors"))
    save_file({"w": torch.ones(2)}, str(tmp_path / ("0" * 64 + ".safetensors")))
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / ".tmp-other-tool").write_text("not ours either")
    owned = {p.name for p in cache_files(tmp_path)}
    assert owned == {cache.path(k).name for k in keys} | {"manifest.json"}
    assert clear_cache(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".tmp-other-tool", "0" * 64 + ".safetensors", "my_trained_weights.safetensors", "notes.txt"]
    )
    with pytest.raises(CacheFolderError, match="not an infosam cache"):
        clear_cache(tmp_path)  # no manifest any more: refused, nothing deleted
    assert len(list(tmp_path.iterdir())) == 4


def test_a_format_1_cache_is_refused_with_a_message_to_delete_it(tmp_path):
    """Caches written before content keys (format 1: files named by a hash of the image id) are no longer read or
    cleared: every way in says which format it is and to delete the folder, and nothing is deleted."""
    (tmp_path / "manifest.json").write_text(
        json.dumps({"format": 1, "fingerprint": {}, "storage_dtype": "float16"})
    )
    save_file(
        {"image_embeddings": torch.zeros(2)}, str(tmp_path / ("a" * 32 + ".safetensors")), {"id": "x.png"}
    )
    for open_it in (
        lambda: TeacherCache(tmp_path, _fingerprint()),
        lambda: TeacherCache(tmp_path, _fingerprint(), clear=True),
        lambda: clear_cache(tmp_path),
        lambda: cache_info(tmp_path),
    ):
        with pytest.raises(CacheFormatError, match=r"format 1.*deleting the folder \(rm -r "):
            open_it()
    assert len(list(tmp_path.iterdir())) == 2


def test_fingerprint_leaves_out_spec_fields_at_their_default():
    """Adding a defaulted field to the spec class keeps every fingerprint (existing caches keep opening); a field
    set away from its default, or a changed field, changes it."""
    spec = get_spec("tiny")
    base = teacher_fingerprint(spec, None, PREP, precision="no")
    assert "sam2_config" not in base["spec"] and base["spec"]["name"] == "tiny"  # at default: left out
    assert base["spec"]["image_size"] == 64  # not the default 1024: kept
    grown = dataclasses.make_dataclass(
        "GrownSpec",
        [("future_option", str, dataclasses.field(default="off"))],
        bases=(type(spec),),
        frozen=True,
    )
    same = grown(**dataclasses.asdict(spec))
    assert teacher_fingerprint(same, None, PREP, precision="no") == base
    changed = teacher_fingerprint(
        grown(**dataclasses.asdict(spec), future_option="on"), None, PREP, precision="no"
    )
    assert changed != base and changed["spec"]["future_option"] == "on"
    assert teacher_fingerprint(dataclasses.replace(spec, window_size=2), None, PREP, precision="no") != base
    assert spec_fingerprint(get_spec("tiny", image_size=1024)).keys() == base["spec"].keys() - {"image_size"}


def test_cache_folders_are_named_once():
    folders = cache_folders("~/c/teacher/")
    assert folders == CacheFolders(
        Path("~/c/teacher").expanduser(),
        Path("~/c/teacher-prefix").expanduser(),
        Path("~/c/teacher-inputs").expanduser(),
    )
    assert cache_folders("t", "p", "") == CacheFolders(Path("t"), Path("p"), Path("t-inputs"))


def test_foreign_and_damaged_entries(tmp_path):
    keys = content_keys(_images(1))
    a = TeacherCache(tmp_path / "a", _fingerprint())
    b = TeacherCache(tmp_path / "b", _fingerprint(precision="bf16"))
    a.put(keys, _embeddings(1))
    os.replace(a.path(keys[0]), b.path(keys[0]))  # an entry copied by hand into another cache
    with pytest.raises(CacheMismatchError, match="does not belong to this cache"):
        b.get(keys)
    b.path(keys[0]).write_bytes(b"\x00" * 10)  # damaged on disk: a miss, recomputed and rewritten
    assert b.get(keys) is None
    b.put(keys, _embeddings(1))
    assert b.get(keys) is not None


def test_tensor_store_holds_several_named_tensors(tmp_path):
    store = TensorStore(tmp_path, "student-prefix", {"blocks": 2}, dtype=torch.float32)
    keys = content_keys(_images(2))
    tensors = {"hidden": torch.randn(2, 4, 4, 8), "size": torch.tensor([[5, 7], [6, 8]])}
    store.put_tensors(keys, tensors)
    got = store.get_tensors(keys)
    assert torch.equal(got["hidden"], tensors["hidden"]) and torch.equal(got["size"], tensors["size"])
    assert got["size"].dtype == torch.int64
    with pytest.raises(CacheMismatchError, match="kind"):
        TensorStore(tmp_path, "preprocessed-input", {"blocks": 2}, dtype=torch.float32)
    with pytest.raises(ValueError, match="B = 2"):
        store.put_tensors(keys, {"hidden": torch.randn(3, 4)})


def test_files_appear_atomically(tmp_path, monkeypatch):
    cache = TeacherCache(tmp_path, _fingerprint())
    key_a, key_b = content_keys(_images(2))
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        # Just before the move: the final name is absent and the temporary file is already complete.
        seen.append((os.path.exists(dst), cache.get([key_a]), load_file(src)["image_embeddings"].shape))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    cache.put([key_a], _embeddings(1))
    assert seen == [(False, None, (32, 8, 8))]
    monkeypatch.setattr(os, "replace", real_replace)

    # A writer that dies half-way leaves neither a partial final file nor its temporary file.
    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("infosam.cache.store.save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        cache.put([key_b], _embeddings(1))
    assert cache.get([key_b]) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["manifest.json", cache.path(key_a).name])


def test_manifest_creation_race_keeps_the_first(tmp_path, monkeypatch):
    """Two processes opening one new folder: the manifest is created once (os.link); the second handle checks it."""
    TeacherCache(tmp_path, _fingerprint())
    manifest = (tmp_path / "manifest.json").read_text()
    # The loser of a race sees the manifest appear between its check and its link.
    monkeypatch.setattr(
        "pathlib.Path.exists", lambda self: False if self.name == "manifest.json" else os.path.exists(self)
    )
    monkeypatch.setattr("pathlib.Path.iterdir", lambda self: iter([]))
    TeacherCache(tmp_path, _fingerprint())  # same fingerprint: accepted
    with pytest.raises(CacheMismatchError, match="just created by another process"):
        TeacherCache(tmp_path, _fingerprint(precision="bf16"))
    assert (tmp_path / "manifest.json").read_text() == manifest


def test_get_under_bf16_autocast_returns_float32(tmp_path):
    """Training with precision bf16 reads the cache inside autocast; float16 rows must still come back as float32."""
    cache = TeacherCache(tmp_path, _fingerprint("bf16"))
    keys = content_keys(_images(2))
    x = torch.randn(2, 32, 8, 8)
    cache.put(keys, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = cache.get(keys)
    assert got.dtype == torch.float32
    assert torch.allclose(got, x, rtol=2**-10, atol=1e-7)

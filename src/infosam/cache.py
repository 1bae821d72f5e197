"""A disk cache of the frozen teacher's image embeddings, so its encoder runs once per image, not once per epoch.

The teacher never changes and training uses no augmentation, so its image embeddings (B, C, h, w) are a pure
function of (teacher weights, architecture, preprocessing, image). Layout of a cache folder::

    manifest.json            {"format": 1, "fingerprint": {...}, "storage_dtype": "float16"}
    <sha256(id)[:32]>.safetensors   one image: tensor "image_embeddings" (C, h, w) + metadata {"id": id}

A folder whose manifest holds another fingerprint (other weights, spec, preprocessing) or storage dtype is refused
with an error (``clear=True`` wipes it explicitly); a stale teacher is never used silently. Every file is written to a
temporary name in the same folder and moved into place with ``os.replace``, so readers (other processes too) see
either no file or a complete one.

float16 storage halves the disk and read cost; its rounding (relative 2^-11) is measured against float32 in
``benchmarks/bench_cache_precision.py`` (effect on the teacher's decoder outputs and on L_r, L_d).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

FORMAT = 1
MANIFEST = "manifest.json"
SUFFIX = ".safetensors"
_KEY = "image_embeddings"
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_FLOAT16_MAX = 65504.0


class CacheMismatchError(ValueError):
    """The cache folder was filled by another teacher (fingerprint or storage dtype differ)."""


class TeacherCache:
    """Per-image teacher embeddings on disk, checked against a fingerprint of the teacher.

    Args:
        directory: the cache folder (created if missing).
        fingerprint: JSON-serialisable description of the teacher, usually :func:`teacher_fingerprint`.
        dtype: storage dtype (float16, bfloat16 or float32); :meth:`get` always returns float32.
        clear: delete the cache files of a folder made for another fingerprint instead of refusing it.
    """

    def __init__(
        self,
        directory: str | Path,
        fingerprint: Mapping[str, Any],
        dtype: torch.dtype = torch.float16,
        *,
        clear=False,
    ) -> None:
        names = {v: k for k, v in _DTYPES.items()}
        if dtype not in names:
            raise ValueError(f"teacher cache dtype must be one of {', '.join(_DTYPES)}, got {dtype}")
        self.directory = Path(directory)
        self.dtype = dtype
        self.manifest = {
            "format": FORMAT,
            "fingerprint": _jsonable(fingerprint),
            "storage_dtype": names[dtype],
        }
        self._open(clear)

    def _open(self, clear: bool) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / MANIFEST
        if path.exists():
            found = json.loads(path.read_text())
            if found == self.manifest:
                return
            if not clear:
                raise CacheMismatchError(
                    f"teacher cache {self.directory} was filled by another teacher or storage dtype "
                    f"(differs in: {', '.join(_differences(found, self.manifest)) or 'format'}); "
                    "use another cache.dir, or clear it (TeacherCache(..., clear=True) / clear_cache(directory))"
                )
            clear_cache(self.directory)
        _atomic_write(
            path, lambda tmp: Path(tmp).write_text(json.dumps(self.manifest, indent=1, sort_keys=True))
        )

    def path(self, image_id: str) -> Path:
        """The file holding ``image_id`` (named by a hash: ids may be paths with any characters)."""
        return self.directory / (hashlib.sha256(image_id.encode()).hexdigest()[:32] + SUFFIX)

    def get(self, ids: Sequence[str]) -> Tensor | None:
        """Embeddings (B, C, h, w) float32 on CPU for ``ids``, or None unless every id is cached."""
        paths = [self.path(i) for i in ids]
        if not paths or not all(p.exists() for p in paths):
            return None
        # Upcast each row before stacking: under CPU bf16 autocast, stacking float16 tensors raises.
        return torch.stack([self._read(p, i).float() for p, i in zip(paths, ids, strict=True)])

    def put(self, ids: Sequence[str], image_embeddings: Tensor) -> None:
        """Store image_embeddings (B, C, h, w), row b under ``ids[b]``; each file appears atomically."""
        if image_embeddings.ndim != 4 or image_embeddings.shape[0] != len(ids):
            raise ValueError(
                f"teacher cache put: expected embeddings (B, C, h, w) with B = {len(ids)} ids, "
                f"got {tuple(image_embeddings.shape)}"
            )
        stored = image_embeddings.detach().to("cpu", self.dtype)
        if self.dtype == torch.float16 and image_embeddings.detach().abs().max() > _FLOAT16_MAX:
            raise ValueError(
                f"teacher cache {self.directory}: embeddings exceed float16's range; use dtype=torch.float32"
            )
        for image_id, row in zip(ids, stored, strict=True):
            tensors = {_KEY: row.contiguous()}
            _atomic_write(
                self.path(image_id), lambda tmp, t=tensors, i=image_id: save_file(t, tmp, {"id": i})
            )

    def _read(self, path: Path, image_id: str) -> Tensor:
        with safe_open(str(path), framework="pt") as f:
            stored_id = f.metadata().get("id")
            if stored_id != image_id:  # a 128-bit hash collision, or a file copied in by hand
                raise CacheMismatchError(
                    f"teacher cache file {path} holds id {stored_id!r}, expected {image_id!r}"
                )
            return f.get_tensor(_KEY)

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*" + SUFFIX))


def cache_info(directory: str | Path) -> dict:
    """What a cache folder holds: ``images`` (count), ``bytes``, ``storage_dtype``, ``fingerprint`` (the manifest's
    description of the teacher).

    Raises:
        NotACacheError: the folder holds no cache manifest.
    """
    directory = Path(directory).expanduser()
    manifest = _read_manifest(directory)
    files = list(directory.glob("*" + SUFFIX))
    return {
        "images": len(files),
        "bytes": sum(f.stat().st_size for f in files),
        "storage_dtype": manifest.get("storage_dtype"),
        "fingerprint": manifest.get("fingerprint", {}),
    }


class NotACacheError(FileNotFoundError):
    """A folder given as a teacher cache holds no cache manifest."""


def _read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    if not path.is_file():
        raise NotACacheError(f"{directory} is not a teacher cache (no {MANIFEST})")
    return json.loads(path.read_text())


def clear_teacher_cache(directory: str | Path) -> int:
    """:func:`clear_cache` on a folder that is a teacher cache (:class:`NotACacheError` otherwise, so that an
    arbitrary folder is never emptied by mistake)."""
    directory = Path(directory).expanduser()
    _read_manifest(directory)
    return clear_cache(directory)


def clear_cache(directory: str | Path) -> int:
    """Delete the cache files (manifest and embeddings, nothing else) in ``directory``; returns how many."""
    directory = Path(directory)
    files = [*directory.glob("*" + SUFFIX), *directory.glob(".tmp-*")]
    if (directory / MANIFEST).exists():
        files.append(directory / MANIFEST)
    for f in files:
        f.unlink(missing_ok=True)
    return len(files)


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's content (~1 s for ViT-B's 375 MB), remembered per (path, size, mtime) in this process."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
        _SHA_MEMO[key] = digest.hexdigest()
    return _SHA_MEMO[key]


def teacher_fingerprint(
    spec: Any,
    checkpoint_path: str | Path | None,
    preprocessing: Mapping[str, Any],
    *,
    dtype: torch.dtype = torch.float32,
    model: nn.Module | None = None,
) -> dict:
    """What determines the teacher's embeddings: architecture, weights, preprocessing and compute dtype.

    Args:
        spec: the :class:`infosam.sam.specs.SamSpec` (all fields, image size included).
        checkpoint_path: the official weights file, hashed by size + sha256 of its content; None for random weights.
        preprocessing: e.g. ``{"image_size": 1024, "pixel_mean": PIXEL_MEAN, "pixel_std": PIXEL_STD}``.
        dtype: the dtype the teacher's encoder computes in.
        model: with no checkpoint, the teacher itself: its state dict is hashed instead (random weights differ by
            seed, and a cache must not mix them).
    """
    weights: dict[str, Any] | None = None
    if checkpoint_path is not None:
        path = Path(checkpoint_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"teacher checkpoint {path} not found (needed to fingerprint the teacher cache)"
            )
        weights = {"file": path.name, "size": path.stat().st_size, "sha256": file_sha256(path)}
    elif model is not None:
        weights = {"state_dict_sha256": _state_dict_sha256(model)}
    spec_fields = dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) else spec
    return _jsonable(
        {"spec": spec_fields, "weights": weights, "preprocessing": dict(preprocessing), "dtype": str(dtype)}
    )


def _state_dict_sha256(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    """Tuples -> lists etc., so a fingerprint compares equal to itself after a JSON round trip."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _differences(a: Mapping, b: Mapping, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out: list[str] = []
    for k in keys:
        if isinstance(a.get(k), Mapping) and isinstance(b.get(k), Mapping):
            out += _differences(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            out.append(prefix + str(k))
    return out


def _atomic_write(path: Path, write: Callable[[str], Any]) -> None:
    """write(tmp) fills a temporary file beside ``path``, which then replaces ``path`` in one step."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared cache folder should stay readable
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""The stores themselves: content keys (:func:`content_keys`), a folder of named tensors per key checked against
its manifest (:class:`TensorStore`), and the teacher's image embeddings (:class:`TeacherCache`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..files import atomic_write, create_exclusive
from .folder import (
    _ENTRY_NAME,
    FORMAT,
    MANIFEST,
    SUFFIX,
    _jsonable,
    check_cache_folder,
    clear_cache,
    entry_files,
    read_manifest,
    store_id,
)

TEACHER_KIND = "teacher-image-embeddings"
_EMBEDDINGS = "image_embeddings"
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_FLOAT16_MAX = 65504.0


class CacheMismatchError(ValueError):
    """The cache folder was filled for another fingerprint, kind or storage dtype, or holds a foreign entry."""


# ------------------------------------------------------------------------------------------------- keys


def content_keys(x: Tensor) -> list[str]:
    """One content key per sample: sha256 over dtype, shape and the raw bytes of ``x[b]``.

    Args:
        x: ``(B, ...)`` any dtype, any device (copied to the CPU to hash).
    Returns:
        ``B`` lowercase hex strings of 64 characters; equal exactly when the samples are bitwise equal.
    """
    if x.dim() < 1:
        raise ValueError(f"content_keys expects a batch (B, ...), got a scalar of shape {tuple(x.shape)}")
    rows = x.detach().to("cpu").contiguous()
    keys = []
    for row in rows:
        digest = hashlib.sha256(f"{row.dtype}{tuple(row.shape)}".encode())
        digest.update(memoryview(row.reshape(-1).view(torch.uint8).numpy()))
        keys.append(digest.hexdigest())
    return keys


# ------------------------------------------------------------------------------------------------- store


class TensorStore:
    """Named tensors per content key in a folder, checked against a manifest (see the module docstring).

    Args:
        directory: the cache folder (created if missing; an existing non-empty folder must be a cache of this kind).
        kind: what the store holds, e.g. ``"teacher-image-embeddings"``; part of the manifest.
        fingerprint: JSON-serialisable description of everything but the key that the entries depend on.
        dtype: storage dtype of floating tensors (float16, bfloat16 or float32); :meth:`get_tensors` returns
            floating tensors as float32, others as stored.
        clear: delete the entries of a folder made for another fingerprint (and its manifest) instead of refusing.
        tensor: the name of the one tensor :meth:`get` and :meth:`put` read and write, for a store that holds one
            tensor per entry (the teacher's embeddings, the student's prefix features); a store of several named
            tensors uses :meth:`get_tensors` / :meth:`put_tensors` (not part of the manifest).
    Raises:
        CacheFolderError: ``directory`` is a file, or a non-empty folder that is not a cache.
        CacheMismatchError: the folder is a cache of another fingerprint/kind/storage dtype and ``clear`` is false.
    """

    def __init__(
        self,
        directory: str | Path,
        kind: str,
        fingerprint: Mapping[str, Any],
        dtype: torch.dtype = torch.float16,
        *,
        clear: bool = False,
        tensor: str | None = None,
    ) -> None:
        names = {v: k for k, v in _DTYPES.items()}
        if dtype not in names:
            raise ValueError(f"cache storage dtype must be one of {', '.join(_DTYPES)}, got {dtype}")
        self.directory = Path(directory)
        self.dtype = dtype
        self.tensor = tensor
        self.manifest = {
            "format": FORMAT,
            "kind": kind,
            "fingerprint": _jsonable(fingerprint),
            "storage_dtype": names[dtype],
        }
        self.store_id = store_id(self.manifest)
        self._open(clear)

    # -- opening

    def _open(self, clear: bool) -> None:
        check_cache_folder(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / MANIFEST
        if path.exists():
            found = read_manifest(self.directory)
            if found == self.manifest:
                return
            if not clear:
                raise CacheMismatchError(
                    f"cache {self.directory} was filled for another {found.get('kind', 'model')} "
                    f"(differs in: {', '.join(_differences(found, self.manifest)) or 'format'}); use another "
                    "cache.dir, or clear it (infosam cache clear DIR, or clear=True)"
                )
            clear_cache(self.directory)
        self._create_manifest(path)

    def _create_manifest(self, path: Path) -> None:
        """Create the manifest unless another process just did; then it must be the same one."""
        text = json.dumps(self.manifest, indent=1, sort_keys=True)
        if not create_exclusive(path, text):  # never replaces a manifest another process wrote
            found = read_manifest(self.directory)
            if found != self.manifest:
                raise CacheMismatchError(
                    f"cache {self.directory} was just created by another process for another "
                    f"{found.get('kind', 'model')} (differs in: {', '.join(_differences(found, self.manifest))})"
                )

    # -- entries

    def keys(self, x: Tensor) -> list[str]:
        """Content keys of the inputs ``x`` (B, ...): :func:`content_keys`."""
        return content_keys(x)

    def path(self, key: str) -> Path:
        """The file of entry ``key`` (a 64-character hex content key)."""
        if not _ENTRY_NAME.match(key + SUFFIX):
            raise ValueError(f"cache key must be 64 lowercase hex characters (a sha256), got {key!r}")
        return self.directory / (key + SUFFIX)

    def get(self, keys: Sequence[str]) -> Tensor | None:
        """The store's one tensor (``tensor``) of ``keys`` stacked to ``(B, ...)`` (floating: float32, on the
        CPU), or None unless every key is present (see :meth:`get_tensors`)."""
        found = self.get_tensors(keys)
        return None if found is None else found[self._tensor_name()]

    def put(self, keys: Sequence[str], values: Tensor) -> None:
        """Store ``values`` ``(B, ...)`` as the store's one tensor (``tensor``), row ``b`` under ``keys[b]``."""
        self.put_tensors(keys, {self._tensor_name(): values})

    def _tensor_name(self) -> str:
        if self.tensor is None:
            raise TypeError(
                f"store {self.directory} holds several named tensors: use get_tensors / put_tensors"
            )
        return self.tensor

    def get_tensors(self, keys: Sequence[str]) -> dict[str, Tensor] | None:
        """The stored tensors of ``keys`` stacked to ``(B, ...)`` (floating ones as float32, on the CPU), or None
        unless every key is present. An unreadable entry (damaged on disk) counts as missing, so it is recomputed
        and rewritten; an entry that belongs to another store raises :class:`CacheMismatchError`."""
        paths = [self.path(k) for k in keys]
        if not paths or not all(p.exists() for p in paths):
            return None
        rows: list[dict[str, Tensor]] = []
        for path, key in zip(paths, keys, strict=True):
            row = self._read(path, key)
            if row is None:
                return None
            rows.append(row)
        names = sorted(rows[0])
        if any(sorted(r) != names for r in rows):
            raise CacheMismatchError(
                f"cache {self.directory}: entries of one batch hold different tensor names"
            )
        # Upcast each row before stacking: under CPU bf16 autocast, stacking float16 tensors raises.
        return {n: torch.stack([_upcast(r[n]) for r in rows]) for n in names}

    def put_tensors(self, keys: Sequence[str], tensors: Mapping[str, Tensor]) -> None:
        """Store ``tensors`` (each ``(B, ...)``), row ``b`` under ``keys[b]``; each file appears atomically."""
        if not tensors:
            raise ValueError("cache put: no tensors given")
        for name, t in tensors.items():
            if t.dim() < 1 or t.shape[0] != len(keys):
                raise ValueError(
                    f"cache put: tensor {name!r} must be (B, ...) with B = {len(keys)} keys, got {tuple(t.shape)}"
                )
        stored = {}
        for name, t in tensors.items():
            t = t.detach()
            if t.is_floating_point():
                if self.dtype == torch.float16 and t.abs().max() > _FLOAT16_MAX:
                    raise ValueError(
                        f"cache {self.directory}: {name} exceeds float16's range; use storage dtype float32"
                    )
                t = t.to(self.dtype)
            stored[name] = t.to("cpu")
        meta_base = {"store": self.store_id}
        for b, key in enumerate(keys):
            row = {name: t[b].contiguous() for name, t in stored.items()}
            meta = {**meta_base, "key": key}
            atomic_write(self.path(key), lambda tmp, r=row, m=meta: save_file(r, str(tmp), m))

    def _read(self, path: Path, key: str) -> dict[str, Tensor] | None:
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("store") != self.store_id or meta.get("key") != key:
                    raise CacheMismatchError(
                        f"cache file {path} does not belong to this cache (store {meta.get('store')!r}, key "
                        f"{meta.get('key')!r}); was it copied in by hand? Clear the cache (infosam cache clear)"
                    )
                return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is no dict)
        except (SafetensorError, OSError, ValueError) as err:
            if isinstance(err, CacheMismatchError):
                raise
            return None

    def __len__(self) -> int:
        return len(entry_files(self.directory))


class TeacherCache(TensorStore):
    """The frozen teacher's image embeddings (B, C, h, w) per preprocessed input image.

    Args:
        directory: the cache folder.
        fingerprint: :func:`~infosam.fingerprint.teacher_fingerprint` of the teacher (spec, weights, preprocessing, precision).
        dtype: storage dtype (float16, bfloat16 or float32); :meth:`get` always returns float32.
        clear: see :class:`TensorStore`.

    Use: ``keys = cache.keys(images)`` on the model inputs (B, 3, S, S), then ``cache.get(keys)`` /
    ``cache.put(keys, embeddings)``.
    """

    def __init__(
        self,
        directory: str | Path,
        fingerprint: Mapping[str, Any],
        dtype: torch.dtype = torch.float16,
        *,
        clear: bool = False,
    ) -> None:
        super().__init__(directory, TEACHER_KIND, fingerprint, dtype, clear=clear, tensor=_EMBEDDINGS)

    def get(self, keys: Sequence[str]) -> Tensor | None:
        """Embeddings (B, C, h, w) float32 on CPU for ``keys``, or None unless every key is cached."""
        return super().get(keys)

    def put(self, keys: Sequence[str], image_embeddings: Tensor) -> None:
        """Store image_embeddings (B, C, h, w), row b under ``keys[b]``."""
        if image_embeddings.ndim != 4 or image_embeddings.shape[0] != len(keys):
            raise ValueError(
                f"teacher cache put: expected embeddings (B, C, h, w) with B = {len(keys)} keys, "
                f"got {tuple(image_embeddings.shape)}"
            )
        super().put(keys, image_embeddings)


# ------------------------------------------------------------------------------------------------- folders


# ------------------------------------------------------------------------------------------------- helpers


def _upcast(t: Tensor) -> Tensor:
    return t.float() if t.is_floating_point() and t.dtype != torch.float64 else t


def _differences(a: Mapping, b: Mapping, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out: list[str] = []
    for k in keys:
        if isinstance(a.get(k), Mapping) and isinstance(b.get(k), Mapping):
            out += _differences(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            out.append(prefix + str(k))
    return out

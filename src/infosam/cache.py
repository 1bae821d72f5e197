"""Content-addressed tensor caches on disk that can never serve stale data.

A :class:`TensorStore` keeps named tensors per *content key* in one folder. The key of an entry is the sha256 of the
exact tensor the cached computation consumed (see :func:`content_keys`), never a file name: a dataset with the same
file names, or an image replaced in place, gives other keys and so a miss, not someone else's entry. Everything else
the entries depend on (model spec, weights, preprocessing transform, compute precision) is the store's fingerprint,
recorded in its manifest; a folder whose manifest holds another fingerprint, kind or storage dtype is refused. Layout::

    manifest.json                  {"format": 2, "kind": ..., "fingerprint": {...}, "storage_dtype": "float16"}
    <sha256 of the input>.safetensors  one entry: its named tensors + metadata {"store": <store id>, "key": <key>}

The store id is a hash of the manifest, so every entry names the manifest it belongs to. :func:`clear_cache` deletes
exactly the files that carry that id (plus this module's own temporary files and the manifest) and nothing else; a
user's file in the folder is left alone whatever its name. A folder that is not empty and has no manifest is refused
as a new cache rather than adopted; a cache of another format (format 1, keyed by image ids, was dropped) is refused
with a message saying to delete it.

The stores of one training run live side by side: :func:`cache_folders` names them (``<cache.dir>``,
``<cache.dir>-prefix``, ``<cache.dir>-inputs`` unless configured). The fingerprints are :mod:`infosam.fingerprint`'s
(re-exported here); which caches a step uses is decided in :func:`infosam.prefix.open_step_caches`.

Every file is written by :mod:`infosam.files` (a temporary name in the same folder, then ``os.replace``; the
manifest with ``create_exclusive``, which never replaces one another process created first), so readers in any process see either
no file or a complete one.

:class:`TeacherCache` is the store of the frozen teacher's image embeddings: keyed by the preprocessed input images
(B, 3, S, S), fingerprinted by :func:`infosam.fingerprint.teacher_fingerprint`. float16 storage halves the disk and read cost; its
rounding (relative 2^-11) is measured against float32 in ``benchmarks/bench_cache_precision.py``.

**Why the key hashes the preprocessed input tensor** (not the decoded image or the file): it is exactly what the
teacher consumed, so the key covers decoding, resizing, normalisation and padding by construction, and a preprocessing
change that a fingerprint forgot still cannot serve stale entries; it needs nothing from the data pipeline (any
dataset, any loader). The cost is hashing 12 MiB per 1024 px image (sha256: about 21 ms on this project's CPU,
measured 2026-11), small next to the teacher encoder it replaces on CPU.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from .files import atomic_write, create_exclusive, is_temporary
from .fingerprint import file_sha256, precision_name, teacher_fingerprint

__all__ = [
    "FORMAT",
    "MANIFEST",
    "SUFFIX",
    "TEACHER_KIND",
    "CacheFolderError",
    "CacheFolders",
    "CacheFormatError",
    "CacheMismatchError",
    "TeacherCache",
    "TensorStore",
    "cache_files",
    "cache_folders",
    "cache_info",
    "check_cache_folder",
    "clear_cache",
    "content_keys",
    "entry_files",
    "file_sha256",  # from infosam.fingerprint, kept importable here
    "precision_name",  # idem
    "read_manifest",
    "store_id",
    "teacher_fingerprint",  # idem
]

FORMAT = 2
MANIFEST = "manifest.json"
SUFFIX = ".safetensors"
_LEGACY_TMP_PREFIX = ".infosam-tmp-"  # what versions before the one writer (files.py) left
TEACHER_KIND = "teacher-image-embeddings"
_EMBEDDINGS = "image_embeddings"
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_FLOAT16_MAX = 65504.0
_ENTRY_NAME = re.compile(r"^[0-9a-f]{64}\.safetensors$")


class CacheMismatchError(ValueError):
    """The cache folder was filled for another fingerprint, kind or storage dtype, or holds a foreign entry."""


class CacheFolderError(ValueError):
    """The folder cannot be (or is not) a cache: a file, or a non-empty folder without a cache manifest."""


class CacheFormatError(CacheFolderError):
    """The folder is a cache of another format than :data:`FORMAT` (e.g. format 1, keyed by image ids): this
    version can neither read nor clear it; the message says to delete the folder."""


class CacheFolders(NamedTuple):
    """The folders of a run's stores (:func:`cache_folders`)."""

    teacher: Path
    """The teacher's image embeddings (``cache.dir``)."""
    prefix: Path
    """The student's frozen encoder prefix (``cache.prefix_dir``, else ``<cache.dir>-prefix``)."""
    inputs: Path
    """The preprocessed inputs (``cache.inputs_dir``, else ``<cache.dir>-inputs``)."""


def cache_folders(
    directory: str | Path, prefix_dir: str | Path | None = None, inputs_dir: str | Path | None = None
) -> CacheFolders:
    """The folders of the teacher, student-prefix and input stores for config ``cache.dir`` = ``directory``
    (``~`` expanded): ``prefix_dir`` / ``inputs_dir`` when set (not None or empty), else siblings named
    ``<directory>-prefix`` and ``<directory>-inputs``."""
    base = str(directory).rstrip("/")
    return CacheFolders(
        Path(base).expanduser(),
        Path(prefix_dir or f"{base}-prefix").expanduser(),
        Path(inputs_dir or f"{base}-inputs").expanduser(),
    )


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


def check_cache_folder(directory: str | Path, option: str = "cache.dir") -> None:
    """Refuse (:class:`CacheFolderError`) a ``directory`` that is a file, or a non-empty folder that is not a cache
    (no manifest); creates nothing, so a start can check its folders before it writes anywhere."""
    directory = Path(directory).expanduser()
    if directory.exists() and not directory.is_dir():
        raise CacheFolderError(f"cache folder {directory} is a file; give a folder ({option})")
    if directory.is_dir() and not (directory / MANIFEST).exists():
        foreign = sorted(p.name for p in directory.iterdir() if not _is_temporary(p.name))
        if foreign:
            raise CacheFolderError(
                f"cache folder {directory} is not empty ({len(foreign)} files, e.g. {foreign[0]!r}) and is "
                f"not an infosam cache (no {MANIFEST}); give an empty or new folder ({option})"
            )


def store_id(manifest: Mapping[str, Any]) -> str:
    """Identity of a cache: sha256 (first 32 hex digits) of its canonical manifest JSON."""
    return hashlib.sha256(json.dumps(_jsonable(manifest), sort_keys=True).encode()).hexdigest()[:32]


def read_manifest(directory: str | Path) -> dict:
    """The manifest of the cache in ``directory``.

    Raises:
        CacheFolderError: no manifest, or an unreadable one (the message names the folder).
        CacheFormatError: a cache of another format (:data:`FORMAT`).
    """
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise CacheFolderError(f"{directory} is not an infosam cache (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CacheFolderError(f"cache manifest {path} is unreadable: {err}") from None
    if not isinstance(manifest, dict):
        raise CacheFolderError(f"cache manifest {path} is not a JSON object")
    if manifest.get("format") != FORMAT:
        raise CacheFormatError(
            f"cache {directory} has format {manifest.get('format')!r}, which this infosam (format {FORMAT}) can "
            f"neither read nor clear; clear it by deleting the folder (rm -r {directory}), or use another cache.dir"
        )
    return manifest


def entry_files(directory: str | Path) -> list[Path]:
    """The files in ``directory`` named like cache entries (not verified: see :func:`cache_files`)."""
    directory = Path(directory)
    return sorted(p for p in directory.iterdir() if _ENTRY_NAME.match(p.name) and p.is_file())


def cache_files(directory: str | Path) -> list[Path]:
    """Every file that belongs to the cache in ``directory``: the entries whose metadata names its manifest (store
    id), this module's temporary files, and the manifest itself (last). Nothing else, whatever its name.

    Raises:
        CacheFolderError: ``directory`` is not a cache (:class:`CacheFormatError`: of another format).
    """
    directory = Path(directory)
    own_id = store_id(read_manifest(directory))
    files = []
    for p in sorted(directory.iterdir()):
        if _is_temporary(p.name) and p.is_file():
            files.append(p)
        elif _ENTRY_NAME.match(p.name) and p.is_file() and _metadata(p).get("store") == own_id:
            files.append(p)
    return [*files, directory / MANIFEST]


def cache_info(directory: str | Path) -> dict:
    """What a cache folder holds: the manifest (``kind``, ``format``, ``storage_dtype``, ``fingerprint``: the
    description of the model that filled it), ``entries`` (count) and ``bytes`` of its entry files.

    Raises:
        CacheFolderError: ``directory`` is not a cache.
    """
    directory = Path(directory).expanduser()
    manifest = read_manifest(directory)
    files = entry_files(directory)
    return {**manifest, "entries": len(files), "bytes": sum(f.stat().st_size for f in files)}


def clear_cache(directory: str | Path) -> int:
    """Delete the files of the cache in ``directory`` (:func:`cache_files`, manifest last); returns how many.

    Raises:
        CacheFolderError: ``directory`` is not a cache (nothing is deleted).
    """
    files = cache_files(directory)
    for f in files:
        f.unlink(missing_ok=True)
    return len(files)


def _metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return {}


# ------------------------------------------------------------------------------------------------- helpers


def _upcast(t: Tensor) -> Tensor:
    return t.float() if t.is_floating_point() and t.dtype != torch.float64 else t


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


def _is_temporary(name: str) -> bool:
    """A writer's temporary entry (:mod:`infosam.files`), or one left by an older version."""
    return is_temporary(name) or name.startswith(_LEGACY_TMP_PREFIX)

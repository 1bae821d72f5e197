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
as a new cache rather than adopted.

Every file is written by :mod:`infosam.files` (a temporary name in the same folder, then ``os.replace``; the
manifest with ``create_exclusive``, which never replaces one another process created first), so readers in any process see either
no file or a complete one.

:class:`TeacherCache` is the store of the frozen teacher's image embeddings: keyed by the preprocessed input images
(B, 3, S, S), fingerprinted by :func:`teacher_fingerprint`. float16 storage halves the disk and read cost; its
rounding (relative 2^-11) is measured against float32 in ``benchmarks/bench_cache_precision.py``.

**Why the key hashes the preprocessed input tensor** (not the decoded image or the file): it is exactly what the
teacher consumed, so the key covers decoding, resizing, normalisation and padding by construction, and a preprocessing
change that a fingerprint forgot still cannot serve stale entries; it needs nothing from the data pipeline (any
dataset, any loader). The cost is hashing 12 MiB per 1024 px image (sha256: about 21 ms on this project's CPU,
measured 2026-11), small next to the teacher encoder it replaces on CPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from .files import atomic_write, create_exclusive, is_temporary

FORMAT = 2
MANIFEST = "manifest.json"
SUFFIX = ".safetensors"
_LEGACY_TMP_PREFIX = ".infosam-tmp-"  # what versions before the one writer (files.py) left
TEACHER_KIND = "teacher-image-embeddings"
_EMBEDDINGS = "image_embeddings"
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_FLOAT16_MAX = 65504.0
_ENTRY_NAME = re.compile(r"^[0-9a-f]{64}\.safetensors$")
_LEGACY_ENTRY_NAME = re.compile(r"^[0-9a-f]{32}\.safetensors$")  # format 1: keyed by the image id
_PRECISIONS = {
    "no": "float32",
    "float32": "float32",
    "fp32": "float32",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
}


class CacheMismatchError(ValueError):
    """The cache folder was filled for another fingerprint, kind or storage dtype, or holds a foreign entry."""


class CacheFolderError(ValueError):
    """The folder cannot be (or is not) a cache: a file, or a non-empty folder without a cache manifest."""


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


def precision_name(precision: str | torch.dtype | None) -> str:
    """The compute dtype name recorded in a fingerprint: ``"no"``/``None``/float32 -> ``"float32"``, ``"bf16"`` ->
    ``"bfloat16"``, ``"fp16"`` -> ``"float16"`` (config names and torch dtypes accepted)."""
    name = "no" if precision is None else str(precision).removeprefix("torch.")
    if name not in _PRECISIONS:
        raise ValueError(
            f"cache precision must be one of no, fp16, bf16 (or a torch dtype), got {precision!r}"
        )
    return _PRECISIONS[name]


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
    ) -> None:
        names = {v: k for k, v in _DTYPES.items()}
        if dtype not in names:
            raise ValueError(f"cache storage dtype must be one of {', '.join(_DTYPES)}, got {dtype}")
        self.directory = Path(directory)
        self.dtype = dtype
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
        fingerprint: :func:`teacher_fingerprint` of the teacher (spec, weights, preprocessing, precision).
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
        super().__init__(directory, TEACHER_KIND, fingerprint, dtype, clear=clear)

    def get(self, keys: Sequence[str]) -> Tensor | None:
        """Embeddings (B, C, h, w) float32 on CPU for ``keys``, or None unless every key is cached."""
        found = self.get_tensors(keys)
        return None if found is None else found[_EMBEDDINGS]

    def put(self, keys: Sequence[str], image_embeddings: Tensor) -> None:
        """Store image_embeddings (B, C, h, w), row b under ``keys[b]``."""
        if image_embeddings.ndim != 4 or image_embeddings.shape[0] != len(keys):
            raise ValueError(
                f"teacher cache put: expected embeddings (B, C, h, w) with B = {len(keys)} keys, "
                f"got {tuple(image_embeddings.shape)}"
            )
        self.put_tensors(keys, {_EMBEDDINGS: image_embeddings})


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
    return manifest


def entry_files(directory: str | Path) -> list[Path]:
    """The files in ``directory`` named like cache entries (not verified: see :func:`cache_files`)."""
    directory = Path(directory)
    legacy = (directory / MANIFEST).is_file() and read_manifest(directory).get("format") == 1
    names = _LEGACY_ENTRY_NAME if legacy else _ENTRY_NAME
    return sorted(p for p in directory.iterdir() if names.match(p.name) and p.is_file())


def cache_files(directory: str | Path) -> list[Path]:
    """Every file that belongs to the cache in ``directory``: the entries whose metadata names its manifest (store
    id), this module's temporary files, and the manifest itself (last). Nothing else, whatever its name.

    Raises:
        CacheFolderError: ``directory`` is not a cache.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest.get("format") == 1:
        pattern, owned = _LEGACY_ENTRY_NAME, _legacy_entry
    else:
        own_id = store_id(manifest)
        pattern, owned = _ENTRY_NAME, lambda meta: meta.get("store") == own_id
    files = []
    for p in sorted(directory.iterdir()):
        if _is_temporary(p.name) and p.is_file():
            files.append(p)
        elif pattern.match(p.name) and p.is_file() and owned(_metadata(p)):
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


def _legacy_entry(meta: Mapping[str, str]) -> bool:
    """A format-1 entry: its only metadata was the image id."""
    return set(meta) == {"id"}


# ------------------------------------------------------------------------------------------------- fingerprints


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
    precision: str | torch.dtype | None,
    model: nn.Module | None = None,
) -> dict:
    """What determines the teacher's embeddings besides the input: architecture, weights, preprocessing, precision.

    Args:
        spec: the :class:`infosam.sam.specs.SamSpec` (all fields, image size included).
        checkpoint_path: the official weights file, hashed by size + sha256 of its content; None for random weights.
        preprocessing: the input transform's own description (family, size, interpolation, normalisation, version),
            e.g. :meth:`infosam.sam.transforms.SamTransform.fingerprint`.
        precision: the autocast precision the teacher's encoder computes under (config ``train.precision``: no,
            fp16, bf16, or a torch dtype); entries computed under bf16 are never served to a float32 run.
        model: with no checkpoint, the teacher itself: its state dict is hashed instead (random weights differ by
            seed, and a cache must not mix them).
    """
    if not isinstance(preprocessing, Mapping) or not preprocessing:
        raise ValueError(
            f"teacher_fingerprint: preprocessing must be a non-empty dict, got {preprocessing!r}"
        )
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
        {
            "spec": spec_fields,
            "weights": weights,
            "preprocessing": dict(preprocessing),
            "precision": precision_name(precision),
        }
    )


def _state_dict_sha256(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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

"""A cache folder as a whole: where a run's stores live (:func:`cache_folders`), whether a folder may be one
(:func:`check_cache_folder`), its manifest and identity, the files that belong to it, and what ``infosam cache``
shows and clears (:func:`cache_info`, :func:`clear_cache`: only the files carrying the folder's store id)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from safetensors import SafetensorError, safe_open

from ..files import is_temporary

FORMAT = 2
MANIFEST = "manifest.json"
SUFFIX = ".safetensors"
_LEGACY_TMP_PREFIX = ".infosam-tmp-"  # what versions before the one writer (files.py) left
_ENTRY_NAME = re.compile(r"^[0-9a-f]{64}\.safetensors$")


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


def _jsonable(value: Any) -> Any:
    """Tuples -> lists etc., so a fingerprint compares equal to itself after a JSON round trip."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _is_temporary(name: str) -> bool:
    """A writer's temporary entry (:mod:`infosam.files`), or one left by an older version."""
    return is_temporary(name) or name.startswith(_LEGACY_TMP_PREFIX)

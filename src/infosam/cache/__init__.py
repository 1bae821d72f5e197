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

Modules: :mod:`.store` (content keys, :class:`TensorStore`, :class:`TeacherCache`) and :mod:`.folder` (a cache
folder as a whole: names, manifest, files, ``infosam cache info`` / ``clear``); their public names are re-exported
here.
"""

from ..fingerprint import file_sha256, precision_name, teacher_fingerprint
from .folder import (
    FORMAT,
    MANIFEST,
    SUFFIX,
    CacheFolderError,
    CacheFolders,
    CacheFormatError,
    cache_files,
    cache_folders,
    cache_info,
    check_cache_folder,
    clear_cache,
    entry_files,
    read_manifest,
    store_id,
)
from .store import TEACHER_KIND, CacheMismatchError, TeacherCache, TensorStore, content_keys

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

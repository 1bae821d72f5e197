"""``infosam cache info|clear DIR``: inspect or explicitly empty a teacher-embedding cache folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import CLIError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="inspect or clear a teacher cache",
        description="Inspect or clear a teacher-embedding cache.",
    )
    sub = parser.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="show which teacher filled the cache and how many images it holds")
    info.add_argument("directory", help="cache folder (train config: cache.dir)")
    info.set_defaults(func=run_info)
    clear = sub.add_parser(
        "clear",
        help="delete the cache's files",
        description="Delete the files a cache's manifest owns (its entries, temporaries and the manifest); every other "
        "file in the folder is left alone.",
    )
    clear.add_argument("directory", help="cache folder (train config: cache.dir)")
    clear.set_defaults(func=run_clear)


def run_info(args: argparse.Namespace) -> int:
    from ..cache import CacheFolderError, cache_info

    try:
        info = cache_info(args.directory)
    except CacheFolderError as err:
        raise CLIError(str(err)) from None
    fp = info.get("fingerprint", {})
    spec = fp.get("spec") or {}
    weights = fp.get("weights") or {}
    precision = fp.get("precision", fp.get("dtype"))
    print(
        f"cache {args.directory} ({info.get('kind', 'teacher image embeddings')}, format {info.get('format')})"
    )
    print(f"  entries: {info['entries']} ({info['bytes'] / 2**20:.1f} MiB)")
    print(f"  storage dtype: {info.get('storage_dtype')}")
    size = spec.get("image_size", _spec_default("image_size"))  # left out of a fingerprint at its default
    print(f"  model: {spec.get('name')} at {size} px, computed in {precision}")
    print(f"  weights: {json.dumps(weights) if weights else 'unknown (random initialisation)'}")
    print(f"  preprocessing: {json.dumps(fp.get('preprocessing'))}")
    return 0


def run_clear(args: argparse.Namespace) -> int:
    from ..cache import CacheFolderError, clear_cache

    directory = Path(args.directory).expanduser()
    try:
        removed = clear_cache(directory)
    except CacheFolderError as err:  # refuse folders that are not caches: nothing is deleted
        raise CLIError(str(err)) from None
    left = sum(1 for _ in directory.iterdir())
    kept = f"; {left} other files left alone" if left else ""
    print(f"removed {removed} cache files from {args.directory}{kept}")
    return 0


def _spec_default(name: str):
    """The default of :class:`~infosam.sam.specs.SamSpec` field ``name`` (what a fingerprint that omits it means)."""
    import dataclasses

    from ..sam.specs import SamSpec

    return next(f.default for f in dataclasses.fields(SamSpec) if f.name == name)
